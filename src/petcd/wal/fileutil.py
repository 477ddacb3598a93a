"""Small durable-file helpers shared by petcd.wal and petcd.snap.

Theory of operation
-------------------
A file only survives a power cut once its data *and* the directory entry naming it are on disk.
The helpers here are the few steps every durable write in petcd takes: write everything
(``os.pwrite`` may write less than asked), ``fsync`` the file, ``rename`` it into place and
``fsync`` the directory. They never swallow an ``OSError``: a failed fsync is fatal to the caller.
(``start_writeback`` is a hint, not a step of durability: see there.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from typing import cast

StrPath = str | os.PathLike[str]


def fsync_dir(path: StrPath) -> None:
    """Make the directory's entries (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (looping over short writes)."""
    with memoryview(data) as mv:
        done = 0
        total = len(mv)
        while done < total:
            n = os.pwrite(fd, mv[done:], offset + done)
            if n <= 0:
                raise OSError(errno.EIO, "pwrite wrote nothing")
            done += n


def preallocate(fd: int, size_bytes: int) -> None:
    """Reserve ``size_bytes`` for the file; a no-op where the file system cannot do it."""
    try:
        os.posix_fallocate(fd, 0, size_bytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_sync_file_range = _load_sync_file_range() if sys.platform == "linux" else None
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + nbytes)`` back to the disk, without
    waiting (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so that a later ``fdatasync`` finds
    the data write under way. Only a hint: it makes nothing durable, its failure is ignored
    (the ``fdatasync`` that must follow reports write errors), and it is a no-op where
    ``sync_file_range`` does not exist."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)
