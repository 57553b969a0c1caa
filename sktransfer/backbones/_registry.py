"""The backbone registry: name -> how to build, preprocess and size a network.

The built-in families are listed in :data:`FAMILIES`: each is a module of
this package whose ``specs()`` returns its :class:`BackboneSpec` entries. The
registry is filled from them on the first lookup, not when anything is
imported (which would import Keras). A user's backbone enters through
:func:`register`, and every estimator reads backbones through
:func:`get_spec`.
"""

from __future__ import annotations

import difflib
import importlib
import re
import threading

from ._spec import BackboneSpec

#: The built-in backbone families, in the order they enter the registry.
FAMILIES = ("._keras_applications", "._efficientnet_lite")

#: String values of the estimators' ``preprocessing`` parameter.
PREPROCESSING_MODES = ("auto", "tf", "torch", "caffe")

_registry: dict[str, BackboneSpec] | None = None
_lock = threading.Lock()


def normalize_name(name: str) -> str:
    """Case- and separator-insensitive key: ``"mobilenet_v2" -> "mobilenetv2"``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _entries() -> dict[str, BackboneSpec]:
    """The registry, filled with the built-in families on first use."""
    global _registry
    if _registry is not None:
        return _registry
    with _lock:
        if _registry is None:
            entries = {}
            for family in FAMILIES:
                for spec in importlib.import_module(family, __package__).specs():
                    entries[normalize_name(spec.name)] = spec
            _registry = entries
        return _registry


def register(spec: BackboneSpec) -> None:
    """Add a backbone to the registry (replacing one of the same name).

    Parameters
    ----------
    spec : BackboneSpec
        Its ``builder`` is called as the built-in backbones' are; see
        :class:`BackboneSpec`.
    """
    _entries()[normalize_name(spec.name)] = spec


def names() -> list[str]:
    """Canonical names of every registered backbone, sorted."""
    return sorted((spec.name for spec in _entries().values()), key=str.lower)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone; ValueError with close names if unknown.

    Examples
    --------
    >>> from sktransfer.backbones import get_spec
    >>> get_spec("mobilenet_v2").name
    'MobileNetV2'
    """
    entries = _entries()
    key = normalize_name(name)
    if key in entries:
        return entries[key]
    close = difflib.get_close_matches(key, list(entries), n=5, cutoff=0.6)
    suggestion = (
        "Did you mean " + ", ".join(repr(entries[k].name) for k in close) + "?"
        if close
        else "See sktransfer.backbones.list_backbones() for all names."
    )
    raise ValueError(
        f"Unknown backbone {name!r}. {suggestion} A keras.Model instance or "
        "the path to a saved .keras/.h5 model are accepted too."
    )


def list_backbones() -> list[str]:
    """Names of every registered backbone.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from sktransfer.backbones import list_backbones
    >>> "MobileNetV2" in list_backbones()
    True
    """
    return names()


def native_size(backbone: str) -> tuple[int, int]:
    """(height, width) the backbone's ImageNet weights were trained at.

    Examples
    --------
    >>> from sktransfer.backbones import native_size
    >>> native_size("inception_v3")
    (299, 299)
    """
    return get_spec(backbone).native_size


def preprocess_input(backbone: str):
    """The backbone's own preprocessing: RGB in [0, 255] -> network input.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.backbones import preprocess_input
    >>> float(preprocess_input("mobilenet_v2")(np.full((1, 2, 2, 3), 255.0)).max())
    1.0
    """
    return get_spec(backbone).preprocess_input
