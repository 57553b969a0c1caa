"""Read PyTorch checkpoints into NumPy without importing (or trusting) torch.

``torch.save`` checkpoints are pickles, and unpickling an untrusted pickle can
run arbitrary code.  This module reads state dicts with a restricted
:class:`pickle.Unpickler` whose ``find_class`` resolves only the handful of
globals a state dict needs (``collections.OrderedDict``, the tensor rebuild
functions and the typed storage classes), each mapped to an inert stand-in
defined here.  Any other global (``os.system``, ``builtins.eval``, ...) raises
:class:`UnsafeCheckpointError` before it can be called.

Nothing the file does can change the reader: the stand-ins are made fresh
for every load and refuse the pickle's BUILD/SETSTATE opcode, so a crafted
file cannot, say, turn the ``FloatStorage`` of every later load into int32.
Sizes are checked against the file before anything is allocated: the bytes
of the storages, and of the arrays returned, are each at most
``MAX_EXPANSION`` times the file's size (a state dict's arrays are about the
size of its file; only element-repeating views or compressed storages,
which ``torch.save`` never writes, could exceed that).

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
import math
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from ..exceptions import CorruptFileError, UnsafeFileError

__all__ = ["UnsafeCheckpointError", "load_state_dict"]

#: Bound on the storage bytes, and on the array bytes, per byte of the file.
MAX_EXPANSION = 4

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


class UnsafeCheckpointError(UnsafeFileError, pickle.UnpicklingError):
    """A checkpoint pickle referenced a global outside the allow-list."""


class _Inert:
    """Refuses the pickle's BUILD opcode, which would set attributes on it."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError(
            f"refusing to set the state of {self!r} from checkpoint (BUILD "
            "opcode): a state dict never does this"
        )


class _StorageType(_Inert):
    """Stand-in for a ``torch.<Dtype>Storage`` class: only carries a dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageRef(_Inert):
    """A storage named by a persistent id; its bytes are attached later.

    In the legacy format the storage bytes follow the pickle, so tensors are
    rebuilt lazily once every storage has been read.
    """

    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key: str, dtype: str, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"storage {self.key}"


class _TensorRef(_Inert):
    """Stand-in for a rebuilt tensor: a strided view description of a storage."""

    __slots__ = ("storage", "offset", "size", "stride")

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

    def __repr__(self) -> str:
        return f"tensor of {self.storage!r}"


class _Rebuilder(_Inert):
    """An allowed ``torch._utils`` function, made fresh for each load."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        self.name = name
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __repr__(self) -> str:
        return f"torch._utils.{self.name}"


def _rebuild_tensor(
    storage: _StorageRef, storage_offset: int, size: Any, stride: Any, *_: Any
) -> _TensorRef:
    # Shared by ``_rebuild_tensor`` and ``_rebuild_tensor_v2``: the extra v2
    # arguments (requires_grad, backward_hooks, metadata) don't affect values.
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something not a storage")
    return _TensorRef(
        storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride))
    )


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    # ``nn.Parameter`` wraps a tensor; its values are the tensor's.
    return data


_REBUILDERS: dict[str, Callable[..., Any]] = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor,
    "_rebuild_parameter": _rebuild_parameter,
}


def _allowed_global(module: str, name: str) -> Any:
    """A fresh stand-in for an allowed global, or None.

    Fresh per lookup, so that nothing a file does to it reaches another load
    (the built-in ``OrderedDict`` class itself cannot be modified).
    """
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if module == "torch._utils" and name in _REBUILDERS:
        return _Rebuilder(name, _REBUILDERS[name])
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name, _STORAGE_DTYPES[name])
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals to inert stand-ins."""

    def __init__(
        self, file: IO[bytes], on_storage: Callable[[tuple], _StorageRef] | None
    ) -> None:
        super().__init__(file)
        self._on_storage = on_storage

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_global(module, name)
        if found is None:
            raise UnsafeCheckpointError(
                f"refusing to load global {module}.{name!s} from checkpoint: "
                "only tensors, storages and OrderedDict are allowed"
            )
        return found

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


def _corrupt(path: str, what: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: {what}", path=path)


def _materialize(tensor: _TensorRef, path: str) -> np.ndarray:
    """Return a C-contiguous copy of ``tensor``'s strided view of its storage."""
    data = tensor.storage.data
    assert data is not None
    if any(n < 0 for n in tensor.size) or any(s < 0 for s in tensor.stride):
        raise _corrupt(path, "negative tensor size or stride")
    if len(tensor.size) != len(tensor.stride):
        raise _corrupt(path, "tensor size and stride lengths differ")
    if math.prod(tensor.size) > data.size:
        # A view repeating elements (a stride of 0) could ask for any amount
        # of memory from a few bytes of file.
        raise _corrupt(
            path,
            f"a tensor of shape {tensor.size} has more elements than its storage "
            f"({data.size}); a state dict never repeats elements",
        )
    # ``as_strided`` does no bounds checking, so a crafted file could otherwise
    # make it read memory outside the storage.
    if 0 not in tensor.size:
        steps = zip(tensor.size, tensor.stride, strict=True)
        last = tensor.offset + sum((n - 1) * s for n, s in steps)
        if tensor.offset < 0 or last >= data.size:
            raise _corrupt(path, "tensor view exceeds its storage")
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


def _collect(obj: Any, path: str, storages: dict[str, _StorageRef], limit: int) -> dict:
    """Turn the unpickled mapping of name -> tensor into name -> ndarray.

    ``limit`` bounds the bytes of all the arrays together, checked before
    any is copied.
    """
    if not isinstance(obj, dict):
        raise _corrupt(path, f"checkpoint is a {type(obj).__name__}, not a dict")
    missing = [s.key for s in storages.values() if s.data is None]
    if missing:
        raise _corrupt(path, f"storages without data: {missing[:5]}")
    tensors = {str(name): value for name, value in obj.items() if isinstance(value, _TensorRef)}
    total = sum(
        math.prod(t.size) * np.dtype(t.storage.dtype).itemsize for t in tensors.values()
    )
    if total > limit:
        raise _corrupt(
            path,
            f"its tensors take {total} bytes, more than {MAX_EXPANSION} times the "
            "file's size: not a state dict (shared views of one storage?)",
        )
    return {name: _materialize(value, path) for name, value in tensors.items()}


def _read_exact(f: IO[bytes], n: int, path: str) -> bytes:
    # Checked before reading: read(n) allocates n bytes up front.
    left = os.fstat(f.fileno()).st_size - f.tell()
    if n > left:
        raise _corrupt(
            path,
            f"truncated checkpoint (a storage declares {n} bytes, {max(left, 0)} "
            "are left in the file)",
        )
    data = f.read(n)
    if len(data) != n:
        raise _corrupt(path, "truncated checkpoint (storage data cut short)")
    return data


class _BoundedReader:
    """The unpickler's view of a file: no read beyond the bytes left in it.

    An opcode declares the length of the bytes or string that follow, and
    the pickle module allocates that length before reading (a 5-byte file
    could ask for gigabytes). Offering only ``read`` and ``readline`` makes
    it ask first; this refuses what the file cannot hold.
    """

    def __init__(self, file: IO[bytes], left: int, path: str) -> None:
        self.file = file
        self.left = left
        self.path = path

    def read(self, size: int = -1) -> bytes:
        if size > self.left:
            raise _corrupt(
                self.path,
                f"the pickle declares {size} bytes where {self.left} are left in the file",
            )
        data = self.file.read(self.left if size < 0 else size)
        self.left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        line = self.file.readline(self.left if size < 0 else min(size, self.left))
        self.left -= len(line)
        return line


def _check_memo(f: IO[bytes], left: int, path: str) -> None:
    """Refuse memo indices a pickler could not have written, without running anything.

    The unpickler grows its memo to twice the largest index it is given: a
    866-byte file asking for index 2**30 took 2.7 GB. A pickler numbers its
    memo entries in order, so an index is never more than the opcodes before it.
    """
    start = f.tell()
    for count, (opcode, argument, _) in enumerate(
        pickletools.genops(_BoundedReader(f, left, path))
    ):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(argument) > count:
            raise _corrupt(path, f"the pickle stores memo entry {argument} after {count} opcodes")
    f.seek(start)


def _unpickle(f: IO[bytes], path: str, table: _StorageTable | None, what: str) -> Any:
    """Load one restricted pickle; any failure but a refusal is a CorruptFileError."""
    try:
        if isinstance(f, io.BytesIO):
            left = len(f.getbuffer()) - f.tell()
        else:
            left = os.fstat(f.fileno()).st_size - f.tell()
        _check_memo(f, left, path)
        return _RestrictedUnpickler(_BoundedReader(f, left, path), table).load()
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path}: {exc}", path=path) from None
    except CorruptFileError:
        raise
    except Exception as exc:  # malformed pickles raise nearly anything
        raise _corrupt(path, f"{what} ({type(exc).__name__}: {exc})") from None


def _load_legacy(f: IO[bytes], path: str) -> dict[str, np.ndarray]:
    """Read a pre-zip ``torch.save`` stream (see the module docstring)."""
    not_torch = "not a PyTorch checkpoint (bad or truncated magic number)"
    magic = _unpickle(f, path, None, not_torch)
    if magic != _MAGIC_NUMBER or isinstance(magic, bool):
        raise _corrupt(path, not_torch)
    version = _unpickle(f, path, None, "truncated checkpoint header")
    if version != _PROTOCOL_VERSION:
        raise _corrupt(path, f"unsupported legacy protocol version {version!r}")
    sys_info = _unpickle(f, path, None, "truncated checkpoint header")
    # Storages are written in the writer's native byte order.
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    order = "<" if little else ">"
    table = _StorageTable()
    obj = _unpickle(f, path, table, "corrupt or truncated checkpoint")
    keys = _unpickle(f, path, None, "corrupt or truncated checkpoint")
    if not isinstance(keys, list):
        raise _corrupt(path, "corrupt checkpoint (no storage key list)")
    for key in keys:
        ref = table.storages.get(str(key))
        if ref is None:
            raise _corrupt(path, f"data for unknown storage {key!r}")
        if ref.data is not None:
            raise _corrupt(path, f"data for storage {key!r} given twice")
        dtype = np.dtype(ref.dtype).newbyteorder(order)
        (numel,) = struct.unpack(order + "q", _read_exact(f, 8, path))
        if numel != ref.numel:
            raise _corrupt(
                path, f"storage {key} has {numel} elements, its tensors expect {ref.numel}"
            )
        ref.data = np.frombuffer(_read_exact(f, numel * dtype.itemsize, path), dtype)
    return _collect(obj, path, table.storages, MAX_EXPANSION * os.fstat(f.fileno()).st_size)


def _read_member(zf: zipfile.ZipFile, name: str, size: int, path: str) -> bytes:
    """The first ``size`` bytes of a member, never decompressing more."""
    try:
        with zf.open(name) as member:
            return member.read(size)
    except KeyError:
        raise _corrupt(path, f"missing {name}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _corrupt(path, f"damaged member {name} ({exc})") from None


def _load_zip(zf: zipfile.ZipFile, path: str) -> dict[str, np.ndarray]:
    """Read a torch >= 1.6 zip checkpoint: ``<prefix>/data.pkl`` + storages."""
    pkl = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
    if pkl is None:
        raise _corrupt(path, "zip file without data.pkl is not a checkpoint")
    prefix = pkl[: -len("data.pkl")]
    limit = MAX_EXPANSION * os.path.getsize(path)
    order = "<"
    if prefix + "byteorder" in zf.namelist():
        byteorder = _read_member(zf, prefix + "byteorder", 16, path).strip()
        order = "<" if byteorder == b"little" else ">"
    table = _StorageTable()
    pickled = _read_member(zf, pkl, limit + 1, path)
    if len(pickled) > limit:
        raise _corrupt(path, f"{pkl} inflates beyond {MAX_EXPANSION} times the file's size")
    obj = _unpickle(io.BytesIO(pickled), path, table, "corrupt checkpoint")
    total = 0
    for ref in table.storages.values():
        dtype = np.dtype(ref.dtype).newbyteorder(order)
        nbytes = ref.numel * dtype.itemsize
        total += nbytes
        if total > limit:
            raise _corrupt(
                path,
                f"its storages declare {total} bytes or more, over {MAX_EXPANSION} "
                "times the file's size",
            )
        raw = _read_member(zf, f"{prefix}data/{ref.key}", nbytes, path)
        if len(raw) < nbytes:
            raise _corrupt(path, f"storage {ref.key} is truncated")
        ref.data = np.frombuffer(raw, dtype, count=ref.numel)
    return _collect(obj, path, table.storages, limit)


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
        global is never imported or called), or sets the state of an object
        (BUILD).
    sktransfer.exceptions.CorruptFileError
        A ``ValueError``: if the file is not a checkpoint, is truncated or
        corrupt, or declares more data than ``MAX_EXPANSION`` times its size;
        the message names ``path``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _corrupt(path, "not a regular file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return _load_zip(zf, path)
        with open(path, "rb") as f:
            return _load_legacy(f, path)
    except (CorruptFileError, UnsafeCheckpointError):
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and struct raise anything on damage
        raise _corrupt(path, f"damaged checkpoint ({type(exc).__name__}: {exc})") from None
