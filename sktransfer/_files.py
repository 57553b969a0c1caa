"""Files the package reads: opened regular only, never blocking; stamped.

A path can name a FIFO, a device or a folder as easily as a file, and
opening a FIFO for reading waits for a writer forever. Every file sktransfer
reads (images, cache shards, fingerprints of file content) is opened here,
and every cache that keys a file by its version (the network cache, the
feature cache's ``fingerprint="metadata"``) keys it by :func:`file_stamp`.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import BinaryIO


class _CappedReader(io.BufferedReader):
    """A buffered file whose ``read(n)`` never asks for more than is left.

    ``read(n)`` allocates ``n`` bytes before reading, and decoders read
    lengths they take from the file: a 2 KB file declaring a 1 GB comment
    made Pillow's GIMP-brush reader allocate 1.2 GB. Capped at the bytes
    left, a read returns what a read at the end of the file returns anyway.
    """

    def __init__(self, raw: io.FileIO, size: int) -> None:
        super().__init__(raw)
        self.size = size

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and n > 0:
            n = min(n, max(self.size - self.tell(), 0))
            if n == 0:
                return b""
        return super().read(n)


def open_regular(path: str) -> BinaryIO:
    """``open(path, "rb")``, refusing anything but a regular file.

    The file is opened without blocking and checked through its descriptor,
    so a FIFO swapped in after a check of the path is refused too. Reads
    are capped at the file's size (see :class:`_CappedReader`).

    Raises
    ------
    OSError
        ``IsADirectoryError`` for a folder, a plain ``OSError`` naming the
        kind of file for a FIFO, socket or device, or the error of ``open``;
        its ``strerror`` says what is wrong without the path.
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "a folder, not a file", path)
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{file_kind(mode)}, not a regular file", path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return _CappedReader(io.FileIO(descriptor, "rb"), os.fstat(descriptor).st_size)
    except BaseException:
        os.close(descriptor)
        raise


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words."""
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def file_stamp(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(absolute path, mtime in ns, size)``: a file's version, without reading it.

    A rewritten file gets a new stamp; a copy elsewhere, or a file touched
    without a change, does too (key by content where that matters).
    """
    path = os.path.abspath(os.fspath(path))
    status = os.stat(path)
    return path, status.st_mtime_ns, status.st_size
