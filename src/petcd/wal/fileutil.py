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

import contextlib
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


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    libc.syscall.restype = ctypes.c_long
    return libc


def _bind_sync_file_range(libc: ctypes.CDLL | None) -> Callable[[int, int, int, int], int] | None:
    fn = getattr(libc, "sync_file_range", None) if libc is not None else None
    if fn is None:
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_libc = _load_libc() if sys.platform == "linux" else None
_sync_file_range = _bind_sync_file_range(_libc)
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + nbytes)`` back to the disk, without
    waiting (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so that a later ``fdatasync`` finds
    the data write under way. Only a hint: it makes nothing durable, its failure is ignored
    (the ``fdatasync`` that must follow reports write errors), and it is a no-op where
    ``sync_file_range`` does not exist."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


class _Iocb(ctypes.Structure):
    """Linux AIO's ``struct iocb`` (<linux/aio_abi.h>, little-endian x86-64/arm64 layout)."""

    _fields_ = (
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    )


class _IoEvent(ctypes.Structure):
    """Linux AIO's ``struct io_event``."""

    _fields_ = (
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    )


# Syscall numbers: <asm/unistd_64.h> on x86-64, the generic table on arm64.
_AIO_SYSCALLS = {
    "x86_64": (206, 207, 208, 209),  # io_setup, io_destroy, io_getevents, io_submit
    "aarch64": (0, 1, 4, 2),
}
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1
_AIO_MAX = 8  # fdatasyncs in flight at most (the WAL has one)


class AsyncFdatasync:
    """fdatasync without a thread: Linux AIO's ``IOCB_CMD_FDSYNC`` runs it in the kernel and
    signals its completion on an eventfd that an event loop watches.

    Why: a worker thread that makes the fdatasync needs the GIL to start and again to report
    back; while the event loop thread runs Python (applying, taking requests in) each of those
    waits up to the interpreter's switch interval (5 ms). Here the loop thread submits (one
    ``io_submit``, about 12 µs) and learns of the completion from its own poll.

    ``open()`` returns None where the kernel or a seccomp filter refuses Linux AIO; callers
    then use a thread. Not thread-safe: one thread submits and reaps.
    """

    def __init__(
        self, syscall: Callable[..., int], ctx: int, efd: int, nr: tuple[int, int, int, int]
    ) -> None:
        self._syscall = syscall
        self._ctx = ctypes.c_ulong(ctx)
        self._efd = efd
        _, self._sys_destroy, self._sys_getevents, self._sys_submit = nr  # io_setup: in open()
        self._iocb = _Iocb(aio_lio_opcode=_IOCB_CMD_FDSYNC, aio_flags=_IOCB_FLAG_RESFD)
        self._iocb.aio_resfd = efd
        self._iocbs = (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(self._iocb))
        self._events = (_IoEvent * _AIO_MAX)()
        self._in_flight = 0

    @classmethod
    def open(cls) -> AsyncFdatasync | None:
        nr = _AIO_SYSCALLS.get(os.uname().machine) if sys.platform == "linux" else None
        if nr is None or _libc is None:
            return None
        ctx = ctypes.c_ulong(0)
        if _libc.syscall(nr[0], _AIO_MAX, ctypes.byref(ctx)) != 0:
            return None  # ENOSYS, EPERM (seccomp), EAGAIN (fs.aio-max-nr reached)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return cls(_libc.syscall, ctx.value, efd, nr)

    def fileno(self) -> int:
        """The eventfd: readable once a submitted fdatasync completed (then call ``reap``)."""
        return self._efd

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, fd: int) -> None:
        """Start ``fdatasync(fd)``; its result comes from ``reap``. Raises OSError if the
        kernel refuses the submission (nothing was started then)."""
        if self._in_flight >= _AIO_MAX:
            raise OSError(errno.EAGAIN, "too many fdatasyncs in flight")
        self._iocb.aio_fildes = fd
        if self._syscall(self._sys_submit, self._ctx, 1, self._iocbs) != 1:
            err = ctypes.get_errno()
            raise OSError(err, f"io_submit(IOCB_CMD_FDSYNC): {os.strerror(err)}")
        self._in_flight += 1

    def reap(self) -> list[int]:
        """The results of the fdatasyncs that completed, in completion order: 0, or a negative
        errno. Never blocks."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        n = self._syscall(self._sys_getevents, self._ctx, 0, _AIO_MAX, self._events, None)
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_getevents: {os.strerror(err)}")
        self._in_flight -= n
        return [self._events[i].res for i in range(n)]

    def close(self) -> None:
        """Release the context; waits for fdatasyncs still in flight (io_destroy does)."""
        if self._ctx.value:
            self._syscall(self._sys_destroy, self._ctx)
            self._ctx = ctypes.c_ulong(0)
            os.close(self._efd)
