"""A file format for fitted estimators that runs no code when loaded.

A pickle (``pickle``, ``joblib``) can run any code when it is loaded, so it
is only for files you wrote yourself. :func:`save_model` writes a fitted
estimator as a zip archive of JSON and Keras files instead, and
:func:`load_model` reads it back without unpickling anything and with Keras'
``safe_mode``:

=================  ==========================================================
``metadata.json``  the format and its version, the estimator's class, and the
                   versions of sktransfer, Keras, TensorFlow, scikit-learn and
                   NumPy that wrote it
``params.json``    the parameters (``get_params(deep=False)``)
``attributes.json``  the fitted attributes (``classes_``, ``history_``, ...)
``model.keras``    the fitted network (``model_``), Keras' own format
``backbone.keras`` only when the ``backbone`` parameter is a ``keras.Model``
=================  ==========================================================

Only the estimators of this package are written and read (by a fixed table
of classes, never by importing a name from the file); a file's declared
sizes are checked before anything is read, and a ``Lambda`` layer (Python
bytecode) is refused.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile

import numpy as np

from ._files import open_regular
from ._stages import Stage
from .exceptions import CorruptFileError, ModelVersionWarning, UnsafeFileError

__all__ = ["load_model", "save_model"]

FORMAT = "sktransfer.model"
FORMAT_VERSION = 1
#: JSON members are small; a larger one is refused before it is read.
_MAX_JSON_BYTES = 64 * 2**20
#: Libraries whose (major, minor) version is recorded and compared on load.
_LIBRARIES = {
    "sktransfer": "sktransfer",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "scikit-learn": "sklearn",
    "numpy": "numpy",
}


def _estimator_classes() -> dict:
    from ._classifier import FineTunedCNNClassifier
    from ._extractor import CNNFeatureExtractor

    return {cls.__name__: cls for cls in (FineTunedCNNClassifier, CNNFeatureExtractor)}


def save_model(estimator, path: str | os.PathLike) -> None:
    """Write a fitted estimator to a file that runs no code when loaded.

    Parameters
    ----------
    estimator : FineTunedCNNClassifier or CNNFeatureExtractor
        Fitted. Its parameters must be plain values (a ``keras.Model``
        backbone is saved as a Keras file); a callable ``preprocessing`` or a
        ``RandomState`` cannot be saved this way (a function is code).
    path : str or path-like
        The file to write (``model.sktransfer`` by convention); written to a
        temporary name first, then renamed, so a reader never sees half a file.

    See Also
    --------
    load_model : Read it back.

    Examples
    --------
    >>> import numpy as np, sktransfer, tempfile, os
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> clf = sktransfer.FineTunedCNNClassifier(
    ...     backbone="mobilenet_v2", weights=None, input_size=32, head_epochs=1,
    ...     epochs=0, early_stopping=False, random_state=0,
    ... ).fit(images, ["cat", "dog"] * 4)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.sktransfer")
    >>> sktransfer.save_model(clf, path)
    >>> loaded = sktransfer.load_model(path)
    >>> bool((loaded.predict_proba(images) == clf.predict_proba(images)).all())
    True
    """
    from sklearn.utils.validation import check_is_fitted

    classes = _estimator_classes()
    if type(estimator).__name__ not in classes or not isinstance(
        estimator, classes[type(estimator).__name__]
    ):
        raise TypeError(
            f"save_model writes FineTunedCNNClassifier and CNNFeatureExtractor, not "
            f"{type(estimator).__name__}. Other estimators (a Pipeline, a search) "
            "can be saved with joblib.dump, a pickle: share such files only with "
            "people who trust you, as loading a pickle runs any code it contains."
        )
    check_is_fitted(estimator)
    members: dict[str, bytes] = {}
    params = estimator.get_params(deep=False)
    encoded_params = {}
    for name, value in params.items():
        if name == "backbone" and hasattr(value, "get_layer"):
            from ._serialization import model_to_bytes

            members["backbone.keras"] = model_to_bytes(value)
            encoded_params[name] = {"__keras_model__": "backbone.keras"}
        else:
            encoded_params[name] = _encode(value, f"parameter {name}")
    attributes = {
        name: value
        for name, value in vars(estimator).items()
        if name.endswith("_") and not name.startswith("_") and name != "model_"
    }
    encoded_attributes = {
        name: _encode(value, f"attribute {name}") for name, value in attributes.items()
    }
    if hasattr(estimator, "model_"):
        from ._serialization import model_to_bytes

        members["model.keras"] = model_to_bytes(estimator.model_)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "versions": _versions(),
    }
    path = os.fspath(path)
    temporary = f"{path}.partial"
    try:
        with zipfile.ZipFile(temporary, "w") as archive:
            for name, value in (
                ("metadata.json", metadata),
                ("params.json", encoded_params),
                ("attributes.json", encoded_attributes),
            ):
                archive.writestr(name, json.dumps(value, indent=1), zipfile.ZIP_DEFLATED)
            for name, data in members.items():  # already compressed zips
                archive.writestr(name, data, zipfile.ZIP_STORED)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_model(path: str | os.PathLike):
    """Read an estimator written by :func:`save_model`, running no code from the file.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    estimator : FineTunedCNNClassifier or CNNFeatureExtractor
        Fitted, as it was saved: it predicts the same numbers.

    Raises
    ------
    sktransfer.exceptions.CorruptFileError
        Not a model in this format, damaged, inconsistent, or written by a
        newer format version (the message says which).
    sktransfer.exceptions.UnsafeFileError
        Its network holds Python code (a ``Lambda`` layer).

    Warns
    -----
    sktransfer.exceptions.ModelVersionWarning
        When it was written with other (major.minor) versions of sktransfer,
        Keras, TensorFlow, scikit-learn or NumPy: it loads, but check its
        predictions.

    See Also
    --------
    save_model : Write one.
    """
    path = os.fspath(path)
    display = repr(path)
    try:
        file = open_regular(path)
    except OSError as exc:
        raise CorruptFileError(
            f"Cannot read the model file {display}: {exc.strerror or exc}.", path=path
        ) from None
    with file:
        size = os.fstat(file.fileno()).st_size
        if not zipfile.is_zipfile(file):
            raise CorruptFileError(
                f"{display} is not a model saved by sktransfer.save_model (not a zip "
                "archive)." + (" It looks like a pickle." if looks_like_pickle(path) else ""),
                path=path,
            )
        try:
            with zipfile.ZipFile(file) as archive:
                return _read(archive, size, path, display)
        except (CorruptFileError, UnsafeFileError):
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile and zlib raise anything on damage
            raise CorruptFileError(
                f"{display} is a damaged model file ({type(exc).__name__}: {exc}).", path=path
            ) from None


def looks_like_pickle(path: str) -> bool:
    """Whether a file starts like a pickle (joblib files included)."""
    try:
        with open_regular(path) as file:
            head = file.read(2)
    except OSError:
        return False
    # Protocol 2+ starts with PROTO; joblib's compressed files with zlib/gzip.
    return head[:1] == b"\x80" or head[:1] == b"x" or head == b"\x1f\x8b"


def _read(archive: zipfile.ZipFile, size: int, path: str, display: str):
    def corrupt(message: str) -> CorruptFileError:
        return CorruptFileError(display + message, path=path)

    def decode(value, where: str):
        try:
            return _decode(value)
        except (TypeError, ValueError, KeyError) as exc:
            raise corrupt(f": the {where} is malformed ({exc}).") from None

    def member(name: str, limit: int) -> bytes:
        try:
            info = archive.getinfo(name)
        except KeyError:
            raise corrupt(f" has no {name}: not a complete sktransfer model.") from None
        if info.file_size > limit:
            raise CorruptFileError(
                f"{display}: {name} declares {info.file_size} bytes, more than allowed "
                f"({limit}): refused.",
                path=path,
            )
        with archive.open(info) as handle:
            return handle.read(limit)

    def json_member(name: str):
        try:
            return json.loads(member(name, _MAX_JSON_BYTES))
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, CorruptFileError):
                raise
            raise corrupt(f": {name} is not valid JSON ({exc}).") from None

    metadata = json_member("metadata.json")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CorruptFileError(
            f"{display} is a zip archive but not a model saved by sktransfer.save_model.",
            path=path,
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise CorruptFileError(
            f"{display} is in sktransfer's model format version {version!r}, and this "
            f"sktransfer ({_versions()['sktransfer']}) reads version {FORMAT_VERSION}: "
            + (
                "upgrade sktransfer to load it."
                if isinstance(version, int) and version > FORMAT_VERSION
                else "the file is damaged."
            ),
            path=path,
        )
    _warn_versions(metadata.get("versions"), display)
    classes = _estimator_classes()
    cls = classes.get(metadata.get("estimator"))
    if cls is None:
        raise CorruptFileError(
            f"{display} holds an estimator {metadata.get('estimator')!r}; this format "
            f"holds one of {sorted(classes)}.",
            path=path,
        )
    params = json_member("params.json")
    attributes = json_member("attributes.json")
    if not isinstance(params, dict) or not isinstance(attributes, dict):
        raise corrupt(": parameters or attributes are not JSON objects.")
    expected = set(cls().get_params(deep=False))
    if set(params) != expected:
        raise CorruptFileError(
            f"{display}: the parameters {sorted(set(params) ^ expected)} do not match "
            f"those of {cls.__name__}.",
            path=path,
        )
    from ._serialization import model_from_bytes

    decoded = {}
    for name, value in params.items():
        if isinstance(value, dict) and set(value) == {"__keras_model__"}:
            data = member("backbone.keras", size)
            decoded[name] = model_from_bytes(data, source=f"{display} (backbone.keras)")
        else:
            decoded[name] = decode(value, f"parameter {name}")
    estimator = cls(**decoded)
    try:
        estimator._validate_params()
    except ValueError as exc:
        raise CorruptFileError(f"{display}: invalid parameters ({exc}).", path=path) from None
    for name, value in attributes.items():
        fitted = isinstance(name, str) and name.endswith("_") and name.isidentifier()
        if not fitted or name == "model_":
            raise corrupt(f": {name!r} is not a fitted attribute.")
        setattr(estimator, name, decode(value, f"attribute {name}"))
    if "model.keras" in archive.namelist():
        estimator.model_ = model_from_bytes(
            member("model.keras", size), source=f"{display} (model.keras)"
        )
    _check_consistent(estimator, display, path)
    return estimator


def _check_consistent(estimator, display: str, path: str) -> None:
    """The attributes a prediction relies on, checked against each other."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise CorruptFileError(f"{display} holds no fitted attributes.", path=path) from None
    size = getattr(estimator, "input_size_", None)
    pair = isinstance(size, tuple) and len(size) == 2
    if not (pair and all(isinstance(v, int) and v > 0 for v in size)):
        raise CorruptFileError(
            f"{display}: input_size_={size!r} is not a (height, width) pair.", path=path
        )
    if hasattr(estimator, "classes_"):
        classes = estimator.classes_
        model = getattr(estimator, "model_", None)
        if not isinstance(classes, np.ndarray) or classes.ndim != 1 or model is None:
            raise CorruptFileError(
                f"{display}: classes_ or model_ is missing or malformed.", path=path
            )
        inputs, outputs = tuple(model.inputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])
        if inputs != (*size, 3) or outputs != (len(classes),):
            raise CorruptFileError(
                f"{display}: its network maps {inputs} to {outputs}, which does not fit "
                f"input_size_={size} and {len(classes)} classes.",
                path=path,
            )


def _versions() -> dict:
    import importlib.metadata

    found = {}
    for name in _LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    if found["sktransfer"] is None:
        from ._version import __version__

        found["sktransfer"] = __version__
    return found


def _warn_versions(saved, display: str) -> None:
    if not isinstance(saved, dict):
        raise CorruptFileError(f"{display}: its metadata has no library versions.")
    current = _versions()

    def release(version) -> tuple:
        return tuple(str(version).split(".")[:2])

    differ = [
        f"{name} {saved.get(name)} (here {current[name]})"
        for name in _LIBRARIES
        if release(saved.get(name)) != release(current[name])
    ]
    if differ:
        warnings.warn(
            f"{display} was saved with other versions: {', '.join(differ)}. It is "
            "loaded, but its predictions may differ; check them, or save it again "
            "with these versions.",
            ModelVersionWarning,
            stacklevel=4,
        )


def _encode(value, where: str):
    """A JSON value for a parameter or attribute; ValueError for what cannot be one."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Stage):
        return {"__stage__": _encode(value.to_dict(), where)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    if isinstance(value, np.ndarray) and (
        value.dtype.kind in "biufU"
        or (
            value.dtype.kind == "O"
            and all(isinstance(v, (str, int, float, bool)) for v in value.ravel())
        )
    ):
        return {"__ndarray__": [_encode(v, where) for v in value.ravel().tolist()],
                "dtype": value.dtype.str, "shape": list(value.shape)}
    if hasattr(value, "location") and hasattr(value, "cache"):  # a joblib.Memory
        return None if value.location is None else os.fspath(value.location)
    kind = "a function (code)" if callable(value) else f"a {type(value).__name__}"
    raise ValueError(
        f"The {where} is {kind}, which sktransfer's safe format cannot hold. Use a "
        "plain value (a name, a number, a path), or save with joblib.dump: a pickle, "
        "which runs code when loaded, to share only with people who trust you."
    )


def _decode(value):
    """The value :func:`_encode` wrote; ValueError or TypeError for anything else."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tuple__"}:
        return tuple(_decode(v) for v in value["__tuple__"])
    if set(value) == {"__stage__"}:
        fields = _decode(value["__stage__"])
        if not isinstance(fields, dict) or set(fields) != set(Stage.__dataclass_fields__):
            raise ValueError("a training stage with unknown or missing fields")
        return Stage(**fields)  # checks each field's type and range
    if set(value) == {"__dict__"}:
        return {_hashable(_decode(k)): _decode(v) for k, v in value["__dict__"]}
    if set(value) == {"__ndarray__", "dtype", "shape"}:
        dtype = np.dtype(value["dtype"])
        if dtype.kind not in "biufUO":
            raise TypeError(f"an array of dtype {dtype}")
        flat = [_decode(v) for v in value["__ndarray__"]]
        array = np.empty(len(flat), dtype=dtype)
        array[:] = flat
        return array.reshape(value["shape"])
    raise ValueError(f"an unknown object {sorted(value)[:3]}")


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def check_model_file(path: str) -> str:
    """What kind of model file ``path`` is: ``"safe"``, ``"pickle"`` or ``"other"``."""
    try:
        with open_regular(path) as file:
            # By its first bytes: zipfile.is_zipfile looks for a zip's end
            # record near the end of the file, and a pickled classifier ends
            # with its Keras network, itself a zip.
            if file.read(4) == b"PK\x03\x04":
                file.seek(0)
                with zipfile.ZipFile(file) as archive:
                    return "safe" if "metadata.json" in archive.namelist() else "other"
    except (OSError, zipfile.BadZipFile):
        return "other"
    return "pickle" if looks_like_pickle(path) else "other"

