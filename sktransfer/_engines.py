"""Inference engines: TensorFlow, ONNX Runtime or OpenVINO run the forward pass.

Training is TensorFlow's; inference need not be. On a CPU, ONNX Runtime and
OpenVINO run the same network as TensorFlow's compiled forward pass about
twice as fast, with features that agree to about 1e-5 (measured in
``benchmarks/bench_engines.py``). The network an estimator runs (the cut
backbone with preprocessing and pooling inside, or a fitted classifier) is
converted once with Keras' own ``Model.export(format="onnx")``, kept with the
network's compiled functions in the process, and, when an estimator's
``memory`` names a folder, stored there beside a checksum that is verified
before the file is used.

Engines are optional: ``pip install "sktransfer[fast]"`` installs ONNX
Runtime, ``"sktransfer[openvino]"`` OpenVINO (and ``precision="bfloat16"``).
Nothing here imports them until a network is converted.

``engine="auto"`` runs TensorFlow on a GPU or under a mixed-precision
policy, and otherwise the fastest installed engine: ONNX Runtime, then
OpenVINO, then TensorFlow. A conversion takes seconds, about 1.5 s per
million weights on 2 cores (5 s for EfficientNet-Lite0, 38 s for ResNet50),
which a few hundred images do not repay. So ``"auto"`` first runs
TensorFlow and converts a network once TensorFlow has spent as long on it in
the process as converting it is expected to take: the rent-or-buy rule,
at most about twice the cost of the best choice made in hindsight,
whatever the number of images to come. A network already converted (in the
process, or in ``memory``) is used at once. An engine named explicitly
converts at its first use.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass

import numpy as np

from .exceptions import ConversionError, EngineUnavailableError

ENGINES = ("auto", "tensorflow", "onnxruntime", "openvino")
#: The optional extra that installs each engine (the export needs tf2onnx).
EXTRAS = {"onnxruntime": "fast", "openvino": "openvino"}
_MODULES = {
    "onnxruntime": ("onnxruntime", "tf2onnx", "onnx"),
    "openvino": ("openvino", "tf2onnx", "onnx"),
}
#: Engines ``"auto"`` may choose on a CPU, fastest first (benchmarks/README.md).
_CPU_ORDER = ("onnxruntime", "openvino")
#: Expected seconds of a conversion: a constant and a cost per weight,
#: measured on 2 cores (benchmarks/README.md, "Conversion").
CONVERSION_SECONDS = 1.0
CONVERSION_SECONDS_PER_WEIGHT = 1.5e-6
#: Precisions that are Keras dtype policies: TensorFlow runs those.
TENSORFLOW_PRECISIONS = ("mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class Engine:
    """The engine an estimator's forward pass runs on.

    Attributes
    ----------
    name : {"tensorflow", "onnxruntime", "openvino"}
    precision : str
        ``"bfloat16"`` runs OpenVINO in reduced precision; any other value
        is the network's own (float32 unless a Keras mixed policy).
    on_demand : bool
        Chosen by ``"auto"``: convert only once it pays (see the module doc).
    """

    name: str
    precision: str = "float32"
    on_demand: bool = False


TENSORFLOW = Engine("tensorflow")


def installed(engine: str) -> bool:
    """Whether the packages an engine needs are importable (nothing is imported)."""
    return all(importlib.util.find_spec(module) is not None for module in _MODULES[engine])


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU."""
    from .backbones._tensorflow import tensorflow

    return bool(tensorflow().config.list_physical_devices("GPU"))


def network_precision(precision: str) -> str:
    """The Keras dtype policy the network is built with for ``precision``.

    ``"bfloat16"`` is the engine's reduced precision on a float32 network.
    """
    return "float32" if precision == "bfloat16" else precision


def choose(engine: str, precision: str = "float32") -> Engine:
    """The engine for the ``engine`` and ``precision`` parameters.

    Raises
    ------
    EngineUnavailableError
        An engine named explicitly (or ``precision="bfloat16"``) whose extra
        is not installed; the message names the extra.
    ValueError
        An engine that cannot run ``precision``.
    """
    if engine == "auto":
        if precision == "bfloat16":
            return choose("openvino", precision)
        if precision in TENSORFLOW_PRECISIONS or gpu_visible():
            return TENSORFLOW
        for name in _CPU_ORDER:
            if installed(name):
                return Engine(name, precision, on_demand=True)
        return TENSORFLOW
    if engine == "tensorflow":
        if precision == "bfloat16":
            raise ValueError(
                "precision='bfloat16' is run by engine='openvino' (or 'auto'); "
                "with engine='tensorflow' use precision='mixed_bfloat16'."
            )
        return TENSORFLOW
    if engine not in _MODULES:
        raise ValueError(f"engine={engine!r} is not valid; use one of {ENGINES}.")
    if not installed(engine):
        missing = [m for m in _MODULES[engine] if importlib.util.find_spec(m) is None]
        raise EngineUnavailableError(
            f"engine={engine!r} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install the "
            f'extra: pip install "sktransfer[{EXTRAS[engine]}]", or use '
            "engine='auto' (the fastest installed engine) or 'tensorflow'."
        )
    if precision in TENSORFLOW_PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is a Keras mixed-precision policy, run by "
            f"TensorFlow only; with engine={engine!r} use 'float32'"
            + (" or 'bfloat16'." if engine == "openvino" else ".")
        )
    if precision == "bfloat16":
        if engine != "openvino":
            raise ValueError(
                f"precision='bfloat16' is run by engine='openvino', not {engine!r}: "
                "use engine='openvino' (or 'auto'), or precision='float32'."
            )
        _check_bfloat16()
    return Engine(engine, precision)


@functools.cache
def _cpu_capabilities() -> tuple[str, ...]:
    import openvino

    return tuple(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _check_bfloat16() -> None:
    capabilities = _cpu_capabilities()
    if "BF16" not in capabilities:
        raise ValueError(
            "precision='bfloat16' needs a CPU with bfloat16 instructions (AVX-512 "
            f"BF16 or AMX); this one offers {sorted(capabilities)}. Use "
            "precision='float32'."
        )


def key_suffix(engine: Engine) -> tuple:
    """What an engine adds to the feature cache's keys.

    Engines in float32 agree with TensorFlow to about 1e-5 (tested to
    1e-4), so they share its cached rows; reduced precision changes the
    features, so it has keys of its own.
    """
    return ("bfloat16",) if engine.precision == "bfloat16" else ()


class EngineFunction:
    """A batch function that runs a Keras model on an engine.

    Called as the TensorFlow function it replaces: (k, h, w, 3) float32
    pixels -> (k, n) float32. Converts at the first call (an explicit
    engine), or (``engine.on_demand``) once the TensorFlow function has run
    for as long as the conversion is expected to take; until then, and for
    good if ``"auto"`` cannot convert the model, the TensorFlow function runs.

    Parameters
    ----------
    tensorflow_function : callable
        The TensorFlow forward pass of the same model.
    model : callable
        Returns the ``keras.Model`` to export (built only when converting).
    engine : Engine
    input_size : tuple of int
    n_weights : int
        The model's number of weights, which the conversion time follows.
    key : str or None
        Names the converted model in a ``memory`` folder (see
        :meth:`add_folder`); None keeps it in the process only.
    """

    def __init__(
        self, tensorflow_function, model, engine: Engine, input_size, n_weights, key=None
    ):
        self.tensorflow_function = tensorflow_function
        self._model = model
        self.engine = engine
        self._input_size = tuple(input_size)
        self._key = key
        self._folders: list[str] = []
        self._looked: set[str] = set()  # folders already searched for the model
        self._run = None
        self._onnx: bytes | None = None
        # Rent paid so far (seconds TensorFlow ran), and the price of buying.
        # None until the first call, whose time is mostly tracing, a cost
        # paid once that a conversion would not have saved.
        self._rent = None
        self._price = CONVERSION_SECONDS + CONVERSION_SECONDS_PER_WEIGHT * n_weights
        self._given_up = False
        self._lock = threading.Lock()

    @property
    def converted(self) -> bool:
        """Whether the engine (not TensorFlow) runs the batches now."""
        return self._run is not None

    def add_folder(self, folder: str) -> None:
        """Also keep the converted model in ``folder`` (an estimator's ``memory``)."""
        if self._key is None:
            return
        with self._lock:
            if folder in self._folders:
                return
            self._folders.append(folder)
            if self._onnx is not None:
                _store(folder, self._key, self._onnx)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        run = self._run if self._run is not None else self._choose()
        if run is not self.tensorflow_function:
            return run(batch)
        start = time.perf_counter()
        out = run(batch)
        if self._rent is None:
            self._rent = 0.0
        else:
            self._rent += time.perf_counter() - start
        return out

    def _choose(self):
        with self._lock:
            if self._run is not None:
                return self._run
            if self._given_up:
                return self.tensorflow_function
            onnx = self._stored()
            if onnx is None and self.engine.on_demand and (self._rent or 0.0) < self._price:
                return self.tensorflow_function
            try:
                if onnx is None:
                    onnx = export_onnx(self._model(), self._input_size)
                    for folder in self._folders:
                        _store(folder, self._key, onnx)
                self._run = compile_onnx(onnx, self.engine)
            except ConversionError as exc:
                if not self.engine.on_demand:
                    raise
                warnings.warn(
                    f"{exc} TensorFlow runs it instead.", UserWarning, stacklevel=4
                )
                self._given_up = True
                return self.tensorflow_function
            if self._key is not None:
                self._onnx = onnx  # for folders added later
            self._model = None  # the Keras model is not needed any more
            return self._run

    def _stored(self) -> bytes | None:
        """A verified model from a folder not searched before, or None.

        Each folder is searched once: a missing or rejected file is not
        read (nor warned about) again at every batch until the rent is paid.
        """
        for folder in self._folders:
            if folder in self._looked:
                continue
            self._looked.add(folder)
            onnx = _load(folder, self._key)
            if onnx is not None:
                return onnx
        return None


def export_onnx(model, input_size) -> bytes:
    """The ONNX bytes of ``model`` for float32 (batch, h, w, 3) input."""
    from .backbones._tensorflow import tensorflow

    tf = tensorflow()
    height, width = input_size
    signature = [tf.TensorSpec((None, height, width, 3), tf.float32)]
    with tempfile.TemporaryDirectory() as folder, _quiet():
        path = os.path.join(folder, "model.onnx")
        try:
            model.export(path, format="onnx", verbose=False, input_signature=signature)
        except Exception as exc:  # noqa: BLE001 - any op tf2onnx cannot convert
            raise ConversionError(
                f"The network {getattr(model, 'name', '')!r} could not be converted "
                f"to ONNX ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
            ) from exc
        with open(path, "rb") as file:
            return file.read()


@contextlib.contextmanager
def _quiet():
    """Silence tf2onnx: its log lines and deprecation notices are not the user's.

    A failure still reaches the user, as a :class:`ConversionError`.
    """
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def compile_onnx(onnx: bytes, engine: Engine):
    """A batch function running the ONNX model ``onnx`` on ``engine``."""
    try:
        if engine.name == "onnxruntime":
            return _onnxruntime_function(onnx)
        return _openvino_function(onnx, engine.precision)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's own errors, reworded
        raise ConversionError(
            f"engine={engine.name!r} could not load the converted network "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
        ) from exc


def _onnxruntime_function(onnx: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Idle threads sleep instead of spinning: on a machine whose cores are
    # shared (other processes, Dask or joblib workers) spinning threads
    # steal the cores the work needs (measured: 82 vs 100 img/s for
    # EfficientNet-Lite0 beside two other busy processes on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        onnx, options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def run(batch):
        return session.run(None, {name: np.ascontiguousarray(batch, np.float32)})[0]

    return run


def _openvino_function(onnx: bytes, precision: str):
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(
        core.read_model(onnx),
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
        },
    )

    def run(batch):
        # An infer request serves one call at a time; Dask threads share
        # this function, so each call makes its own (cheap).
        request = compiled.create_infer_request()
        return np.array(request.infer({0: np.ascontiguousarray(batch, np.float32)})[0])

    return run


# The disk store: <memory>/sktransfer-engines-v1/<key>.onnx, beside
# <key>.onnx.blake2b, the digest of the file's bytes. The folder is shared
# and may hold damaged or replaced files: a model is used only if its bytes
# match the digest, else it is converted again and rewritten.
_FOLDER = "sktransfer-engines-v1"


def _paths(folder: str, key: str) -> tuple[str, str]:
    model = os.path.join(folder, _FOLDER, f"{key}.onnx")
    return model, model + ".blake2b"


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def _load(folder: str, key: str) -> bytes | None:
    model_path, digest_path = _paths(folder, key)
    try:
        with open(model_path, "rb") as file:
            onnx = file.read()
        with open(digest_path, encoding="ascii") as file:
            digest = file.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if _digest(onnx) != digest:
        warnings.warn(
            f"The converted network {model_path!r} does not match its checksum "
            "(damaged or replaced); it is ignored and converted again.",
            UserWarning,
            stacklevel=5,
        )
        return None
    return onnx


def _store(folder: str, key: str, onnx: bytes) -> None:
    """Write the model, then its digest, each under a temporary name first.

    A reader that finds the model before its digest (or a digest of another
    writer's identical bytes) sees a mismatch or the same bytes, never a
    wrong model. A folder that cannot be written only costs a conversion.
    """
    model_path, digest_path = _paths(folder, key)
    for path, data in ((model_path, onnx), (digest_path, _digest(onnx).encode())):
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            return
