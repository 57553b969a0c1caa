"""The feature cache: each image goes through the network once.

The forward pass is the whole cost of transfer learning, and a grid search
asks for the features of the same images again and again (every fold,
every candidate, the refit). So pooled features are cached per image:

* **in memory**, shared by every estimator and clone in the process, least
  recently used rows dropped beyond a limit (default 1 GiB; set it with
  :func:`set_max_bytes` or the ``SKTRANSFER_CACHE_MB`` environment variable);
* **on disk**, when an estimator's ``memory`` names a folder (or a
  ``joblib.Memory``), so features survive the process and are shared by
  joblib and Dask workers. Writers never overwrite: each batch is a new
  shard file moved into place atomically, so concurrent workers are safe.

A row is keyed by the image's content fingerprint and by everything that
changes features (backbone, weights, input size, preprocessing, precision,
XLA, cut layer, pooling), see :mod:`sktransfer._fingerprint`. Not by the
inference engine: the float32 engines agree to about 1e-5 and share rows;
``precision="bfloat16"`` is keyed apart. Rows are
stored per (layer, pooling) part, so ``layer=[-1, -2]`` reuses the rows of
``layer=-1`` and ``"avgmax"`` those of ``"avg"`` and ``"max"``. Features
from the cache are the very floats the network produced when they were
first computed. They are not always the floats a new pass would give: the
network's kernels (oneDNN on the CPU, cuDNN on a GPU) may sum in another
order for another batch around the image, so the features of one image
computed in two different batches can differ in the last bits (measured:
up to 6e-6, relative 1e-6). The cache makes repeated calls consistent: an
image's row, once cached, is served whatever the batch of later calls.

What the disk cache trusts
--------------------------
Its folder, and so everyone who can write to it: use a folder only you (or
the workers of your own jobs) can write. Each shard carries a BLAKE2b
checksum of its keys and features, checked whenever it is read, and its
declared sizes are checked against the file before anything is allocated:
a damaged, truncated or inflated shard, a shard from another version, or
anything that is not a regular file (a FIFO, a device, a folder named
``*.npz``) is skipped with a warning and its rows are recomputed. A
checksum catches damage, not forgery: whoever can write the folder can write
a shard with a valid checksum and wrong features. A world-writable cache
folder is warned about.

Examples
--------
>>> from sktransfer import cache
>>> sorted(cache.info())
['bytes', 'hits', 'max_bytes', 'misses', 'rows']
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import uuid
import warnings
import zipfile

import numpy as np

from ._files import open_regular
from ._lru import LRUCache
from .exceptions import CorruptFileError

__all__ = ["clear", "info", "set_max_bytes"]

# v2: shards carry a checksum; v1 shards (without one) are not read.
_SHARD_VERSION = "v2"
#: A shard's arrays: member name -> (dtype, meaning).
_SHARD_MEMBERS = {"keys": np.uint8, "features": np.float32, "checksum": np.uint8}
_KEY_SIZE = 16
#: Python's own cost of a cached row (array object, key, dict entry), counted
#: against the limit with the row's bytes.
_ROW_OVERHEAD = 256


def _default_max_bytes() -> int:
    megabytes = os.environ.get("SKTRANSFER_CACHE_MB", "1024")
    try:
        return int(float(megabytes) * 2**20)
    except ValueError:
        raise ValueError(
            f"SKTRANSFER_CACHE_MB={megabytes!r} is not a number of megabytes."
        ) from None


class _MemoryCache:
    """Feature rows keyed by (part key, image key), least recently used evicted."""

    def __init__(self, max_bytes: int):
        self.rows = LRUCache(max_bytes, getsizeof=_row_bytes)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @property
    def max_bytes(self) -> int:
        return self.rows.maxsize

    def get(self, part: str, keys: list) -> list:
        found = [None if key is None else self.rows.get((part, key)) for key in keys]
        hit = sum(row is not None for row in found)
        with self._lock:
            self.hits += hit
            self.misses += len(found) - hit
        return found

    def put(self, part: str, keys: list, rows) -> None:
        if self.max_bytes <= 0:
            return
        for key, row in zip(keys, rows):
            row = np.array(row, dtype=np.float32)  # own copy, not a view
            row.flags.writeable = False
            self.rows.put((part, key), row)

    def clear(self) -> None:
        self.rows.clear()
        with self._lock:
            self.hits = self.misses = 0


def _row_bytes(row: np.ndarray) -> int:
    return row.nbytes + _ROW_OVERHEAD


class _DiskCache:
    """Feature rows in shard files under ``root/sktransfer-features-v1/<part>/``.

    Each shard (``<uuid>.npz``: the image keys and their rows) is written to
    a temporary name and renamed into place, so readers never see a partial
    file and concurrent writers never clash; rows computed twice by two
    workers are the same floats, so duplicates are harmless. The index of a
    part (image key -> shard, row) is read once and refreshed from the shard
    names when keys are missing.
    """

    def __init__(self, root: str):
        self.root = os.path.join(root, f"sktransfer-features-{_SHARD_VERSION}")
        self._index: dict = {}  # part -> {image key: (shard path, row)}
        self._shards: dict = {}  # part -> set of shard names read
        self._lock = threading.Lock()
        self.write_failed = False
        self.permissions_checked = False

    def _folder(self, part: str) -> str:
        return os.path.join(self.root, part)

    def _refresh(self, part: str) -> None:
        folder = self._folder(part)
        index = self._index.setdefault(part, {})
        seen = self._shards.setdefault(part, set())
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        self._check_permissions()
        for entry in entries:
            if not entry.name.endswith(".npz") or entry.name in seen:
                continue
            seen.add(entry.name)
            try:
                keys = read_shard(entry.path, features=False)["keys"]
            except CorruptFileError as exc:
                _ignored(exc)
                continue  # ignored for good, its rows recomputed
            for row, key in enumerate(keys):
                index[key.tobytes()] = (entry.path, row)

    def _check_permissions(self) -> None:
        if self.permissions_checked:
            return
        self.permissions_checked = True
        with contextlib.suppress(OSError):
            if os.stat(self.root).st_mode & stat.S_IWOTH:
                warnings.warn(
                    f"The feature cache folder {self.root!r} can be written by any "
                    "user, and its features are served as they are found: use a "
                    "folder only you can write.",
                    UserWarning,
                    stacklevel=5,
                )

    def get(self, part: str, keys: list) -> list:
        with self._lock:
            index = self._index.get(part)
            if index is None or any(k is not None and k not in index for k in keys):
                self._refresh(part)
                index = self._index[part]
            where = [None if k is None else index.get(k) for k in keys]
        found: list = [None] * len(keys)
        by_shard: dict = {}
        for position, location in enumerate(where):
            if location is not None:
                by_shard.setdefault(location[0], []).append((position, location[1]))
        for path, wanted in by_shard.items():
            try:
                shard = read_shard(path)
            except CorruptFileError as exc:  # deleted or damaged since indexed
                _ignored(exc)
                self._forget(part, path)
                continue
            for position, row in wanted:
                # The index came from an earlier read of the file: serve a
                # row only if the file still holds that key there.
                if row < len(shard["keys"]) and shard["keys"][row].tobytes() == keys[position]:
                    found[position] = shard["features"][row]
        return found

    def _forget(self, part: str, path: str) -> None:
        """Drop a shard that can no longer be read from the index."""
        with self._lock:
            index = self._index.get(part, {})
            for key in [k for k, (p, _) in index.items() if p == path]:
                del index[key]

    def put(
        self, part: str, keys: list, rows: np.ndarray, *, kept_in_memory: bool = False
    ) -> None:
        """Write rows as a new shard; a failure warns once and loses nothing else.

        The cache is an optimisation: a full or read-only folder must not
        throw away the pass that computed the rows. ``kept_in_memory`` says
        whether the rows are also in the in-memory cache (for the warning).
        """
        if not keys:
            return
        folder = self._folder(part)
        name = f"{uuid.uuid4().hex}.npz"
        temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        features = np.ascontiguousarray(rows, dtype=np.float32)
        try:
            os.makedirs(folder, exist_ok=True)
            with open(temporary, "wb") as file:
                np.savez(
                    file, keys=key_array, features=features,
                    checksum=_checksum(key_array, features),
                )
                file.flush()
                os.fsync(file.fileno())  # complete on disk before it gets its name
            os.replace(temporary, os.path.join(folder, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if not self.write_failed:
                self.write_failed = True
                kept = ", and kept in memory" if kept_in_memory else ""
                warnings.warn(
                    f"Features could not be written to the disk cache {self.root!r} "
                    f"({exc}); they are still returned{kept}, but will be computed "
                    "again by the next call.",
                    UserWarning,
                    stacklevel=2,
                )


def _checksum(keys: np.ndarray, features: np.ndarray) -> np.ndarray:
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"{keys.shape}|{features.shape}|".encode())
    hasher.update(keys.tobytes())
    hasher.update(features.tobytes())
    return np.frombuffer(hasher.digest(), dtype=np.uint8)


def _ignored(error: CorruptFileError) -> None:
    warnings.warn(
        f"Ignored a feature cache shard: {error} Its rows are computed again.",
        UserWarning,
        stacklevel=6,
    )


def read_shard(path: str, *, features: bool = True) -> dict:
    """The arrays of a shard, checked; CorruptFileError for anything else.

    Only a regular file is opened (without blocking: a FIFO put in its
    place after the folder was listed is refused, not waited on), only
    uncompressed members are read, and each array's header is checked
    against the member's size before the array is allocated, so memory is
    bounded by the file's size. ``features=False`` reads the keys only and
    skips the checksum (for indexing; rows are verified when served).
    """

    def damaged(reason: str) -> CorruptFileError:
        return CorruptFileError(f"{path!r} {reason}.", path=path)

    try:
        opened = open_regular(path)
    except OSError as exc:
        raise damaged(f"cannot be read: {exc.strerror or exc}") from None
    with opened as file:
        status = os.fstat(file.fileno())
        try:
            with zipfile.ZipFile(file) as archive:
                wanted = ("keys", "features", "checksum") if features else ("keys",)
                arrays = {
                    name: _read_member(archive, name, status.st_size, damaged)
                    for name in wanted
                }
        except CorruptFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile and .npy headers raise anything
            raise damaged(f"is not a readable shard ({type(exc).__name__}: {exc})") from None
    keys = arrays["keys"]
    if keys.ndim != 2 or keys.shape[1] != _KEY_SIZE:
        raise damaged(f"has keys of shape {keys.shape}, not (n, {_KEY_SIZE})")
    if features:
        rows = arrays["features"]
        if rows.ndim != 2 or rows.shape[0] != keys.shape[0]:
            raise damaged(
                f"has {keys.shape[0]} keys but features of shape {rows.shape}"
            )
        if arrays["checksum"].tobytes() != _checksum(keys, rows).tobytes():
            raise damaged("does not match its checksum (damaged or edited)")
    return arrays


def _read_member(archive, name: str, file_size: int, damaged) -> np.ndarray:
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise damaged(f"has no {name!r} array") from None
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > file_size:
        raise damaged(f"has a compressed or inflated {name!r} array")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise damaged(f"has an {name!r} array of .npy version {version}")
        if dtype != np.dtype(_SHARD_MEMBERS[name]) or fortran:
            raise damaged(f"has an {name!r} array of dtype {dtype}")
        count = int(np.prod(shape, dtype=object)) if shape else 1
        nbytes = count * dtype.itemsize
        if nbytes != info.file_size - member.tell():
            raise damaged(
                f"declares an {name!r} array of shape {shape} that does not match "
                "its size in the file"
            )
        return np.frombuffer(member.read(nbytes), dtype=dtype).reshape(shape)


_memory = _MemoryCache(_default_max_bytes())
_disks: dict = {}
_disks_lock = threading.Lock()


def memory_location(memory) -> str | None:
    """The absolute folder of an estimator's ``memory`` parameter, or None."""
    if memory is None:
        return None
    location = getattr(memory, "location", memory)  # a joblib.Memory
    if location is None:  # joblib.Memory(None) caches nothing
        return None
    return os.path.abspath(os.path.expanduser(os.fspath(location)))


def disk_cache(memory) -> _DiskCache | None:
    """The process-wide disk cache of an estimator's ``memory`` parameter."""
    root = memory_location(memory)
    if root is None:
        return None
    with _disks_lock:
        if root not in _disks:
            _disks[root] = _DiskCache(root)
        return _disks[root]


def check_memory(memory, parameter: str = "memory") -> None:
    """ValueError unless ``memory`` is None, a folder path or a joblib.Memory."""
    if memory is None:
        return
    location = getattr(memory, "location", memory)
    if location is None:
        return
    if not isinstance(location, (str, os.PathLike)):
        raise ValueError(
            f"{parameter}={memory!r} is not valid; use None, a folder path or a "
            "joblib.Memory."
        )
    location = os.path.expanduser(os.fspath(location))
    if not location.strip():
        raise ValueError(
            f"{parameter}={location!r} is an empty path; use None for no disk "
            "cache, or name a folder (use '.' for the working directory)."
        )
    if os.path.exists(location) and not os.path.isdir(location):
        raise ValueError(f"{parameter}={location!r} is a file, not a folder.")


def memory_cache() -> _MemoryCache:
    return _memory


def info() -> dict:
    """Size and hit counts of the in-memory feature cache.

    Returns
    -------
    info : dict
        ``rows`` cached (one per image and (layer, pooling) part), their
        ``bytes`` (with Python's overhead), the ``max_bytes`` limit, and the
        ``hits``/``misses`` of row lookups since the last :func:`clear`.
    """
    return {
        "rows": len(_memory.rows),
        "bytes": _memory.rows.currsize,
        "max_bytes": _memory.max_bytes,
        "hits": _memory.hits,
        "misses": _memory.misses,
    }


def clear() -> None:
    """Empty the in-memory feature cache (disk caches are left as they are)."""
    _memory.clear()
    with _disks_lock:
        _disks.clear()


def set_max_bytes(max_bytes: int) -> None:
    """Bound the in-memory feature cache; 0 turns it off.

    Parameters
    ----------
    max_bytes : int
        Rows beyond it are dropped, least recently used first.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
        raise ValueError(f"max_bytes={max_bytes!r} must be an int >= 0.")
    _memory.rows.maxsize = int(max_bytes)
