"""Small durable-file helpers shared by petcd.wal and petcd.snap.

Theory of operation
-------------------
A file only survives a power cut once its data *and* the directory entry naming it are on disk.
The helpers here are the few steps every durable write in petcd takes: write everything
(``os.pwrite`` may write less than asked), ``fsync`` the file, ``rename`` it into place and
``fsync`` the directory. They never swallow an ``OSError``: a failed fsync is fatal to the caller.
"""

from __future__ import annotations

import errno
import os

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
