"""Read PyTorch checkpoints into NumPy without importing (or trusting) torch.

``torch.save`` checkpoints are pickles, and unpickling an untrusted pickle can
run arbitrary code.  This module reads state dicts with a restricted
:class:`pickle.Unpickler` whose ``find_class`` resolves only the handful of
globals a state dict needs (``collections.OrderedDict``, the tensor rebuild
functions and the typed storage classes), each mapped to an inert stand-in
defined here.  Any other global (``os.system``, ``builtins.eval``, ...) raises
:class:`UnsafeCheckpointError` before it can be called.

Two on-disk layouts are supported:

* **legacy** (``torch.save(..., _use_new_zipfile_serialization=False)`` and
  every file written before torch 1.6): a sequence of pickles -- magic number,
  protocol version, system info, the object (tensors are persistent ids that
  name storages), the list of storage keys -- followed, for each key in that
  order, by an 8-byte element count and the raw bytes of the storage.
* **zip** (torch >= 1.6 default): ``<prefix>/data.pkl`` holds the object and
  ``<prefix>/data/<key>`` the raw bytes of each storage.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

__all__ = ["UnsafeCheckpointError", "load_state_dict"]

# ``torch.serialization.MAGIC_NUMBER`` and ``PROTOCOL_VERSION``: the first two
# pickles of every legacy checkpoint.
_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# Typed storage class name -> element dtype (byte order applied later).
# bfloat16 has no NumPy dtype, so BFloat16Storage is deliberately absent.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickle referenced a global outside the allow-list."""


class _StorageType:
    """Stand-in for a ``torch.<Dtype>Storage`` class: only carries a dtype."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageRef:
    """A storage named by a persistent id; its bytes are attached later.

    In the legacy format the storage bytes follow the pickle, so tensors are
    rebuilt lazily once every storage has been read.
    """

    def __init__(self, key: str, dtype: str, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """Stand-in for a rebuilt tensor: a strided view description of a storage."""

    def __init__(
        self,
        storage: _StorageRef,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor(
    storage: _StorageRef, storage_offset: int, size: Any, stride: Any, *_: Any
) -> _TensorRef:
    # Shared by ``_rebuild_tensor`` and ``_rebuild_tensor_v2``: the extra v2
    # arguments (requires_grad, backward_hooks, metadata) don't affect values.
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    # ``nn.Parameter`` wraps a tensor; its values are the tensor's.
    return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{
        ("torch", name): _StorageType(name, dtype)
        for name, dtype in _STORAGE_DTYPES.items()
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals to inert stand-ins."""

    def __init__(
        self, file: IO[bytes], on_storage: Callable[[tuple], _StorageRef] | None
    ) -> None:
        super().__init__(file)
        self._on_storage = on_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load global {module}.{name!s} from checkpoint: "
                "only tensors, storages and OrderedDict are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        # ``('storage', storage_type, key, location, numel[, view_metadata])``;
        # anything else (e.g. ``('module', ...)`` for pickled nn.Modules with
        # their source) is not a state dict and is refused.
        if (
            self._on_storage is None
            or not isinstance(pid, tuple)
            or len(pid) not in (5, 6)
            or pid[0] not in ("storage", b"storage")
        ):
            raise UnsafeCheckpointError(f"unsupported persistent id {pid!r}")
        return self._on_storage(pid)


class _StorageTable:
    """Collects storages by key while unpickling (one ``_StorageRef`` per key)."""

    def __init__(self) -> None:
        self.storages: dict[str, _StorageRef] = {}

    def __call__(self, pid: tuple) -> _StorageRef:
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if numel < 0:
            raise pickle.UnpicklingError(f"storage {key} has negative size")
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"unsupported storage type {storage_type!r}")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:
            # Legacy storage views share bytes with a root storage; no
            # checkpoint we read uses them, so fail loudly rather than guess.
            raise pickle.UnpicklingError("storage views are not supported")
        ref = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if ref.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"storage {key} used with two dtypes")
        return ref


def _materialize(tensor: _TensorRef, path: str) -> np.ndarray:
    """Return a C-contiguous copy of ``tensor``'s strided view of its storage."""
    data = tensor.storage.data
    assert data is not None
    if any(n < 0 for n in tensor.size) or any(s < 0 for s in tensor.stride):
        raise ValueError(f"{path}: negative tensor size or stride")
    if len(tensor.size) != len(tensor.stride):
        raise ValueError(f"{path}: tensor size and stride lengths differ")
    # ``as_strided`` does no bounds checking, so a crafted file could otherwise
    # make it read memory outside the storage.
    if 0 not in tensor.size:
        steps = zip(tensor.size, tensor.stride, strict=True)
        last = tensor.offset + sum((n - 1) * s for n, s in steps)
        if tensor.offset < 0 or last >= data.size:
            raise ValueError(f"{path}: tensor view exceeds its storage")
        base = data[tensor.offset :]
    else:
        base = data[:0]
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=tensor.size, strides=tuple(s * item for s in tensor.stride)
    )
    # A copy (not a view of the file's bytes), in native byte order so that
    # downstream code (Keras/TF) gets ordinary, writeable arrays.
    return np.array(view, dtype=view.dtype.newbyteorder("="), order="C", copy=True)


def _collect(obj: Any, path: str, storages: dict[str, _StorageRef]) -> dict:
    """Turn the unpickled mapping of name -> tensor into name -> ndarray."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: checkpoint is a {type(obj).__name__}, not a dict")
    missing = [s.key for s in storages.values() if s.data is None]
    if missing:
        raise ValueError(f"{path}: storages without data: {missing[:5]}")
    return {
        str(name): _materialize(value, path)
        for name, value in obj.items()
        if isinstance(value, _TensorRef)
    }


def _read_exact(f: IO[bytes], n: int, path: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: truncated checkpoint (storage data cut short)")
    return data


def _unpickle(f: IO[bytes], path: str, table: _StorageTable | None, what: str) -> Any:
    """Load one restricted pickle; any failure but a refusal is a ValueError."""
    try:
        return _RestrictedUnpickler(f, table).load()
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # malformed pickles raise nearly anything
        raise ValueError(f"{path}: {what} ({type(exc).__name__}: {exc})") from None


def _load_legacy(f: IO[bytes], path: str) -> dict[str, np.ndarray]:
    """Read a pre-zip ``torch.save`` stream (see the module docstring)."""
    not_torch = "not a PyTorch checkpoint (bad or truncated magic number)"
    magic = _unpickle(f, path, None, not_torch)
    if magic != _MAGIC_NUMBER or isinstance(magic, bool):
        raise ValueError(f"{path}: {not_torch}")
    version = _unpickle(f, path, None, "truncated checkpoint header")
    if version != _PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy protocol version {version!r}")
    sys_info = _unpickle(f, path, None, "truncated checkpoint header")
    # Storages are written in the writer's native byte order.
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    order = "<" if little else ">"
    table = _StorageTable()
    obj = _unpickle(f, path, table, "corrupt or truncated checkpoint")
    keys = _unpickle(f, path, None, "corrupt or truncated checkpoint")
    if not isinstance(keys, list):
        raise ValueError(f"{path}: corrupt checkpoint (no storage key list)")
    for key in keys:
        ref = table.storages.get(str(key))
        if ref is None:
            raise ValueError(f"{path}: data for unknown storage {key!r}")
        dtype = np.dtype(ref.dtype).newbyteorder(order)
        (numel,) = struct.unpack(order + "q", _read_exact(f, 8, path))
        if numel != ref.numel:
            raise ValueError(
                f"{path}: storage {key} has {numel} elements, "
                f"its tensors expect {ref.numel}"
            )
        ref.data = np.frombuffer(_read_exact(f, numel * dtype.itemsize, path), dtype)
    return _collect(obj, path, table.storages)


def _load_zip(zf: zipfile.ZipFile, path: str) -> dict[str, np.ndarray]:
    """Read a torch >= 1.6 zip checkpoint: ``<prefix>/data.pkl`` + storages."""
    pkl = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
    if pkl is None:
        raise ValueError(f"{path}: zip file without data.pkl is not a checkpoint")
    prefix = pkl[: -len("data.pkl")]
    order = "<"
    if prefix + "byteorder" in zf.namelist():
        order = "<" if zf.read(prefix + "byteorder").strip() == b"little" else ">"
    table = _StorageTable()
    obj = _unpickle(io.BytesIO(zf.read(pkl)), path, table, "corrupt checkpoint")
    for ref in table.storages.values():
        dtype = np.dtype(ref.dtype).newbyteorder(order)
        try:
            raw = zf.read(f"{prefix}data/{ref.key}")
        except KeyError:
            raise ValueError(f"{path}: missing storage {ref.key}") from None
        if len(raw) < ref.numel * dtype.itemsize:
            raise ValueError(f"{path}: storage {ref.key} is truncated")
        ref.data = np.frombuffer(raw, dtype, count=ref.numel)
    return _collect(obj, path, table.storages)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load a PyTorch state dict as NumPy arrays, without torch and safely.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save(model.state_dict(), path)``, in either
        the legacy (pre-1.6) or the zip format.

    Returns
    -------
    dict of str to numpy.ndarray
        Parameter and buffer names, in file order, mapped to C-contiguous
        arrays with the tensors' shapes (float32 for ``FloatStorage``, int64
        for ``LongStorage``, and so on). Non-tensor entries are dropped.

    Raises
    ------
    UnsafeCheckpointError
        If the pickle references any global outside the allow-list (such a
        global is never imported or called).
    ValueError
        If the file is not a checkpoint, or is truncated or corrupt; the
        message names ``path``.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return _load_zip(zf, path)
    with open(path, "rb") as f:
        return _load_legacy(f, path)
