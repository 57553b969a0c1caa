"""Keras models as bytes and files, loaded without running code from them.

Uses Keras' own ``.keras`` format (architecture + weights in one zip), not a
pickle of Keras internals and not a side file next to the pickle. Every
Keras file sktransfer reads (a saved classifier's network, a ``backbone``
path) is loaded here with ``safe_mode=True``: a ``Lambda`` layer holding
Python bytecode is refused before Keras sees it, and any failure is an error
of sktransfer's own naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

from ._files import open_regular
from .exceptions import CorruptFileError, UnsafeFileError

#: The first bytes of an HDF5 file (``.h5`` models).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: A ``.keras`` file's members may hold at most this many times its size.
_MAX_EXPANSION = 4


def model_to_bytes(model) -> bytes:
    """Serialize a Keras model to the bytes of a ``.keras`` file."""
    import keras

    # A fresh functional model over the same layers carries no optimizer: only
    # what inference needs is saved (Adam's slots would double the size).
    inference = keras.Model(model.inputs, model.outputs, name=model.name)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        inference.save(path)
        with open(path, "rb") as handle:
            return handle.read()


def model_from_bytes(data: bytes, *, source: str = "the pickle"):
    """The Keras model saved by :func:`model_to_bytes`, loaded safely.

    ``source`` says where the bytes come from, for error messages.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as handle:
            handle.write(data)
        return load_keras_file(path, display=source)


def load_keras_file(path: str, *, custom_objects=None, display: str | None = None):
    """A Keras model from a ``.keras`` or ``.h5`` file, with ``safe_mode=True``.

    Parameters
    ----------
    path : str
    custom_objects : dict, optional
        Passed to ``keras.saving.load_model``.
    display : str, optional
        How messages name the file (default: ``path``).

    Raises
    ------
    CorruptFileError
        The file is not a Keras model, or Keras could not load it.
    UnsafeFileError
        Loading it would run Python code (a ``Lambda`` layer's bytecode).
    """
    display = display or repr(path)
    with open_regular(path) as file:
        head = file.read(len(_HDF5_SIGNATURE))
        is_zip = zipfile.is_zipfile(file)
    if not is_zip and head != _HDF5_SIGNATURE:
        raise CorruptFileError(
            f"{display} is not a Keras model file: a .keras model is a zip archive "
            f"and an .h5 model an HDF5 file, and this file is neither (it starts "
            f"with {head!r}).",
            path=path,
        )
    if is_zip:
        _check_keras_archive(path, display)
    from . import _layers  # noqa: F401  (registers sktransfer's layers)
    from .backbones._tensorflow import tensorflow

    tensorflow()
    import keras

    # Keras reads a .keras file by its name, an .h5 file by its content.
    suffix = ".keras" if is_zip else ".h5"
    with tempfile.TemporaryDirectory() as folder:
        if not path.lower().endswith(suffix):
            link = os.path.join(folder, "model" + suffix)
            os.symlink(os.path.abspath(path), link)
            path = link
        try:
            return keras.saving.load_model(
                path, compile=False, safe_mode=True, custom_objects=custom_objects
            )
        except Exception as exc:  # noqa: BLE001 - Keras raises nearly anything on bad files
            if "safe_mode" in str(exc):
                raise UnsafeFileError(
                    f"{display} asks to run Python code (Keras refused it in safe "
                    f"mode: {exc})",
                    path=path,
                ) from None
            raise CorruptFileError(
                f"{display} could not be loaded as a Keras model "
                f"({type(exc).__name__}: {exc}).",
                path=path,
            ) from None


def _check_keras_archive(path: str, display: str) -> None:
    """Refuse a ``.keras`` zip that inflates, or whose config holds bytecode."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
            if declared > _MAX_EXPANSION * os.path.getsize(path) + 2**20:
                raise CorruptFileError(
                    f"{display} declares {declared} bytes of content, more than "
                    f"{_MAX_EXPANSION} times its size: refused (a zip bomb?).",
                    path=path,
                )
            config = json.loads(archive.read("config.json"))
    except (KeyError, zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, CorruptFileError):
            raise
        raise CorruptFileError(
            f"{display} is not a valid .keras archive ({type(exc).__name__}: {exc}).",
            path=path,
        ) from None
    lambdas = list(_find_bytecode(config))
    if lambdas:
        raise UnsafeFileError(
            f"{display} holds Python bytecode (in {lambdas[0]}, e.g. a Lambda "
            "layer's function): loading it would run that code, so it is refused. "
            "Save models whose layers are Keras' own or registered custom layers.",
            path=path,
        )


def _find_bytecode(config, where: str = "the model"):
    """Names of the places in a Keras config that hold a serialized lambda."""
    if isinstance(config, dict):
        if config.get("class_name") == "__lambda__":
            yield where
        inner = config.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        here = f"layer {name!r}" if isinstance(name, str) else where
        for value in config.values():
            yield from _find_bytecode(value, here)
    elif isinstance(config, list):
        for value in config:
            yield from _find_bytecode(value, where)
