"""Built networks, shared in-process, and their compiled feature functions.

Building a backbone and reading its weights costs seconds; a grid search
clones the extractor dozens of times. So networks are built lazily and kept
in a small process-wide LRU cache keyed by what defines them (backbone,
weights, input size, precision), and each network keeps the compiled
feature functions of the cut points and poolings asked of it. Estimators
hold only plain parameters and names, never Keras objects.

The forward pass is one ``tf.function`` per (cut, pooling): preprocessing,
the truncated network in inference mode and pooling run as one graph
(optionally XLA-compiled) over float32 batches of a fixed image size, on
the GPU when TensorFlow sees one.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from . import _pooling
from ._files import file_stamp
from ._lru import LRUCache
from .backbones._blocks import Block, find_blocks
from .backbones._build import (
    build_headless,
    check_model,
    check_weights,
    is_model,
    model_at_input_size,
    normalize_input_size,
)
from .backbones._registry import get_spec, normalize_name
from .backbones._tensorflow import tensorflow

#: At most this many built backbones stay cached per process; the least
#: recently used is dropped first (a ResNet50 holds about 100 MB of weights).
MAX_CACHED_NETWORKS = 4
_MAX_FUNCTIONS_PER_NETWORK = 16

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

_lock = threading.RLock()
_cache = LRUCache(MAX_CACHED_NETWORKS)
#: Networks built in this process (a Dask worker should build each once).
builds = 0


@dataclass(eq=False)
class Network:
    """A built backbone at a concrete input size, ready to be cut.

    Attributes
    ----------
    model : keras.Model
    name : str
        Short name used in feature names (``"mobilenetv2"``).
    spec_name : str or None
        The registered backbone's name; None for a user's model.
    input_size : tuple of int
    blocks : list of Block
    """

    model: object
    name: str
    spec_name: str | None
    input_size: tuple[int, int]
    blocks: list[Block]
    stable_key: str | None = None
    functions: LRUCache = field(
        default_factory=lambda: LRUCache(_MAX_FUNCTIONS_PER_NETWORK)
    )
    #: Deepest layer of every cut asked of this network's features (see
    #: :meth:`record_cut_depth`).
    _cut_depths: set = field(default_factory=set, init=False, repr=False)

    def record_cut_depth(self, depth: int) -> int:
        """Record that features were asked down to layer position ``depth``.

        Returns how many different depths were asked of this network in the
        process so far: from two on, a grid over ``layer`` is under way (see
        :func:`sktransfer._features.eager_parts`).
        """
        with _lock:
            self._cut_depths.add(depth)
            return len(self._cut_depths)

    def layer_shape(self, layer_name: str) -> tuple[int, int, int] | None:
        for block in self.blocks:
            if block.name == layer_name:
                return block.height, block.width, block.channels
        try:
            output = self.model.get_layer(layer_name).output
        except (ValueError, AttributeError):
            return None
        shape = getattr(output, "shape", ())
        if len(shape) != 4 or any(d is None for d in shape[1:]):
            return None
        return tuple(int(d) for d in shape[1:])

    def resolve_layers(self, layer, parameter: str = "layer") -> list[str]:
        """Layer names for ``layer`` (block index, layer name, or a list)."""
        items = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not items:
            raise ValueError(f"{parameter}=[] is empty; give at least one layer.")
        names = []
        for item in items:
            if isinstance(item, Integral) and not isinstance(item, bool):
                names.append(self._block_at(int(item), parameter))
            elif isinstance(item, str):
                if self.layer_shape(item) is None:
                    raise ValueError(
                        f"{parameter}={item!r}: {self.name} has no layer of that "
                        "name with a spatial (batch, h, w, c) output. Its blocks are "
                        f"{self._block_list()}; any layer of model.summary() "
                        "with a 4-D output works too."
                    )
                names.append(item)
            else:
                raise ValueError(
                    f"{parameter}={item!r} is not valid: use a block index (int), "
                    "a Keras layer name (str), or a list of these."
                )
        return names

    def _block_at(self, index: int, parameter: str) -> str:
        n = len(self.blocks)
        if not -n <= index < n:
            raise ValueError(
                f"{parameter}={index} is out of range: {self.name} has {n} blocks, "
                f"so valid indices are {-n} to {n - 1} ({self._block_list()})."
            )
        return self.blocks[index].name

    def _block_list(self) -> str:
        return ", ".join(
            f"{i}: {b.name!r} ({b.height}x{b.width}x{b.channels})"
            for i, b in enumerate(self.blocks)
        )

    def feature_function(self, parts, preprocessing, jit_compile, engine=None):
        """The cached compiled feature function of ``parts``.

        ``parts`` is a list of (layer name, pooling) pairs; the function
        returns their pooled features concatenated in that order. It is a
        :class:`FeatureFunction` for TensorFlow (``engine`` None), else an
        :class:`~sktransfer._engines.EngineFunction` converted from it,
        keyed by the network's current weights (a user's model trained in
        place is converted again) and named on disk by them, the
        preprocessing and the parts.
        """
        key = (tuple(parts), preprocessing_key(preprocessing), jit_compile)
        converted = engine is not None and engine.name != "tensorflow"
        if converted:
            weights_key = self.cache_key()
            key += (engine, weights_key)
        with _lock:
            function = self.functions.get(key)
            if function is not None:
                return function
            if not converted:
                function = FeatureFunction(
                    self, parts, self._preprocess(preprocessing), jit_compile
                )
            else:
                from ._engines import EngineFunction
                from ._fingerprint import text_key

                forward = self.feature_function(parts, preprocessing, jit_compile)
                export_key = (
                    text_key("onnx", weights_key, preprocessing, tuple(parts))
                    if isinstance(preprocessing, str) or preprocessing is None
                    else None  # a callable has no identity across processes
                )
                function = EngineFunction(
                    forward,
                    forward.keras_model,
                    engine,
                    self.input_size,
                    forward.truncated.count_params(),
                    export_key,
                )
            self.functions.put(key, function)
            return function

    def cache_key(self) -> str:
        """A key of everything that defines this network's outputs.

        Stable across processes (it names the disk cache); for a user's
        in-memory model it hashes the current weights, so a model trained
        in place gets new keys.
        """
        if self.stable_key is not None:
            return self.stable_key
        from ._fingerprint import model_weights_key

        return model_weights_key(self.model)

    def _preprocess(self, preprocessing):
        from .backbones._preprocess import resolve_preprocessing

        return resolve_preprocessing(self.spec_name, preprocessing)


def preprocessing_key(preprocessing):
    """A hashable cache key for the ``preprocessing`` parameter (a callable by id)."""
    return preprocessing if isinstance(preprocessing, str) or preprocessing is None else id(
        preprocessing
    )


class FeatureFunction:
    """Preprocess, run the truncated network and pool, as one compiled call.

    ``parts`` are (layer name, pooling) pairs: one pass gives the pooled
    features of several cut points (and poolings) at once, concatenated.
    """

    def __init__(self, network: Network, parts, preprocess, jit_compile):
        tf = tensorflow()
        import keras

        model = network.model
        self.layers = list(dict.fromkeys(layer for layer, _ in parts))
        outputs = [model.get_layer(name).output for name in self.layers]
        self.truncated = keras.Model(model.inputs, outputs, name=f"{network.name}_cut")
        self._preprocess = preprocess
        self._parts = [(self.layers.index(layer), pooling) for layer, pooling in parts]
        height, width = self._input_size = network.input_size
        self._call = tf.function(
            self._forward,
            input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
            jit_compile=bool(jit_compile),
        )

    def _forward(self, x):
        tf = tensorflow()
        if self._preprocess is not None:
            x = self._preprocess(x)
        outputs = self.truncated(x, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        outputs = [tf.cast(out, tf.float32) for out in outputs]
        pooled = [_pooling.pool(outputs[i], pooling) for i, pooling in self._parts]
        return pooled[0] if len(pooled) == 1 else tf.concat(pooled, axis=-1)

    def keras_model(self):
        """This forward pass as a built ``keras.Model``, for an engine's export."""
        import keras

        forward = self._forward

        class Forward(keras.Model):
            def __init__(self, truncated):
                super().__init__(name=truncated.name)
                self.truncated = truncated  # tracked: its weights are exported

            def call(self, x):
                return forward(x)

        model = Forward(self.truncated)
        model(np.zeros((1, *self._input_size, 3), dtype=np.float32))
        return model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Features (k, n_features) float32 of a (k, h, w, 3) float32 batch.

        An image's features are the same floats in any batch, which is what
        lets cached rows equal recomputed ones; TensorFlow's CPU kernels take
        another path for a batch of one (other last bits, measured), so a
        single image is run as a batch of two.
        """
        if len(batch) == 1:
            return self._call(np.concatenate([batch, batch])).numpy()[:1]
        return self._call(batch).numpy()


def _is_saved_model_path(backbone) -> bool:
    return isinstance(backbone, os.PathLike) or (
        isinstance(backbone, str) and backbone.lower().endswith((".keras", ".h5"))
    )


def network_of(estimator) -> Network:
    """The built network of an estimator's backbone parameters.

    ``backbone``, ``weights``, ``input_size`` and ``precision`` define it
    (see :func:`load_network`): built once per process, shared by clones.
    """
    from ._engines import network_precision

    return load_network(
        estimator.backbone,
        estimator.weights,
        normalize_input_size(estimator.input_size),
        network_precision(estimator.precision),
    )


def load_network(backbone, weights, input_size, precision="float32") -> Network:
    """The cached :class:`Network` for these parameters, built on first use.

    Parameters
    ----------
    backbone : str, keras.Model or path
    weights : "imagenet", None or path
    input_size : tuple of int or None
        None means the backbone's native size (or a model's own input size).
    precision : {"float32", "mixed_float16", "mixed_bfloat16"}
    """
    check_model(backbone)
    if _is_saved_model_path(backbone) and not os.path.isfile(backbone):
        raise FileNotFoundError(
            f"backbone={os.fspath(backbone)!r}: no such model file. Give a "
            "registered name (see sktransfer.backbones.list_backbones()), a "
            "keras.Model, or the path to a saved .keras/.h5 model."
        )
    check_weights(weights)
    key = _network_key(backbone, weights, input_size, precision)
    with _lock:
        entry = _cache.get(key)
        if entry is not None and (entry[0] is None or entry[0]() is backbone):
            return entry[1]
        network = _build_network(backbone, weights, input_size, precision)
        global builds
        builds += 1
        if not is_model(backbone):
            network.stable_key = _stable_key(key, network.input_size)
        # A user's model is keyed by identity; the weak reference lets a
        # recycled id() be detected instead of serving another model's network.
        ref = weakref.ref(backbone) if is_model(backbone) else None
        _cache.put(key, (ref, network))
        return network


def clear_cache() -> None:
    """Drop every cached network (frees their memory)."""
    with _lock:
        _cache.clear()


def _network_key(backbone, weights, input_size, precision) -> tuple:
    if is_model(backbone):
        backbone_key = ("model", id(backbone))
    elif _is_saved_model_path(backbone):
        backbone_key = ("file", *file_stamp(backbone))
    else:
        backbone_key = ("name", normalize_name(backbone))
    weights_key = (
        file_stamp(weights)
        if weights is not None and weights != "imagenet"
        else weights
    )
    return (backbone_key, weights_key, input_size, precision)


def _stable_key(key: tuple, input_size) -> str:
    import keras

    from ._version import __version__
    from ._fingerprint import text_key

    # The versions are part of it: a disk cache must not outlive a change
    # of the code that computes features.
    return text_key("network", __version__, keras.__version__, key, input_size)


def _build_network(backbone, weights, input_size, precision) -> Network:
    tensorflow()
    import keras

    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(precision)
    try:
        if is_model(backbone) or _is_saved_model_path(backbone):
            return _user_network(backbone, weights, input_size)
        return _registry_network(backbone, weights, input_size)
    finally:
        keras.config.set_dtype_policy(previous)


def _registry_network(name: str, weights, input_size) -> Network:
    spec = get_spec(name)
    size = input_size or spec.native_size
    model = build_headless(spec, size, weights)
    return Network(
        model=model,
        name=normalize_name(spec.name),
        spec_name=spec.name,
        input_size=size,
        blocks=find_blocks(model),
    )


def _user_network(backbone, weights, input_size) -> Network:
    import keras

    from ._serialization import load_keras_file

    if is_model(backbone):
        model = backbone
    else:
        model = load_keras_file(os.fspath(backbone), display=f"backbone={os.fspath(backbone)!r}")
    model, size = model_at_input_size(model, input_size)
    if weights is not None and weights != "imagenet":
        if model is backbone:
            # Load into a copy: the user's model must not be modified.
            model = keras.models.clone_model(backbone)
        model.load_weights(os.fspath(weights))
    return Network(
        model=model,
        name=normalize_name(model.name) or "model",
        spec_name=None,
        input_size=size,
        blocks=find_blocks(model),
    )
