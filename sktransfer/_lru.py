"""A bounded, thread-safe mapping that drops the least recently used entries.

The package keeps several caches of this kind: built networks, each
network's compiled feature functions, the in-memory feature rows (bounded in
bytes), the classifier's trainers. They all share this one class.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["LRUCache"]


class LRUCache:
    """A mapping holding at most ``maxsize``, least recently used dropped first.

    Parameters
    ----------
    maxsize : int
        The most the entries may weigh together. Each entry weighs 1 unless
        ``getsizeof`` is given, so ``maxsize`` is a number of entries by
        default and, with ``getsizeof=lambda row: row.nbytes``, a number of
        bytes. 0 (or less) keeps nothing.
    getsizeof : callable, default=None
        ``getsizeof(value)`` is the weight of an entry; None weighs each as 1.

    Attributes
    ----------
    currsize : int
        What the entries weigh together now.

    Notes
    -----
    Every method holds the cache's own lock, so threads can share one cache.
    A caller that must check and fill a cache as one step (build a value
    only once when several threads ask for it) holds a lock of its own around
    both calls.

    Examples
    --------
    >>> from sktransfer._lru import LRUCache
    >>> cache = LRUCache(2)
    >>> cache.put("a", 1)
    >>> cache.put("b", 2)
    >>> cache.get("a")  # "a" is now the most recently used
    1
    >>> cache.put("c", 3)  # so "b" is dropped
    >>> cache.get("b") is None, len(cache)
    (True, 2)
    """

    def __init__(self, maxsize: int, *, getsizeof: Callable[[Any], int] | None = None):
        self._maxsize = maxsize
        self._getsizeof = getsizeof
        self._entries: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self.currsize = 0
        self._lock = threading.Lock()

    @property
    def maxsize(self) -> int:
        """The bound; setting a smaller one drops entries at once."""
        return self._maxsize

    @maxsize.setter
    def maxsize(self, maxsize: int) -> None:
        with self._lock:
            self._maxsize = maxsize
            self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list:
        """The values, least recently used first (their order is not changed)."""
        with self._lock:
            return list(self._entries.values())

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value of ``key``, now the most recently used; ``default`` if absent."""
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key`` as the most recently used entry.

        Entries are then dropped, least recently used first, until the cache
        weighs at most ``maxsize`` (a value heavier than that is not kept).
        """
        size = 1 if self._getsizeof is None else self._getsizeof(value)
        with self._lock:
            self._remove(key)
            self._entries[key] = value
            self._sizes[key] = size
            self.currsize += size
            self._evict()

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove ``key`` and return its value; ``default`` if absent."""
        with self._lock:
            return self._remove(key, default)

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self.currsize = 0

    def _remove(self, key, default=None):
        if key not in self._entries:
            return default
        self.currsize -= self._sizes.pop(key)
        return self._entries.pop(key)

    def _evict(self) -> None:
        while self._entries and self.currsize > self._maxsize:
            key = next(iter(self._entries))
            self._remove(key)
