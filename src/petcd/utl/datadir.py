"""The on-disk layout of a member's data dir, as ``petcd`` (and etcd) lay it out.

Theory of operation: the server (``petcd.server.member``) keeps everything under
``<data-dir>/member``::

    <data-dir>/member/wal/       WAL segments (or --wal-dir)
    <data-dir>/member/snap/      snapshot files  <term>-<index>.snap
    <data-dir>/member/snap/db    the backend (LMDB)

This module names those paths for the offline tool and takes the lock that tells a stopped
member from a running one. A running member holds an exclusive ``flock`` on its WAL directory
for its whole life (``petcd.wal``); LMDB's own lock file is shared by design and cannot say
"nobody else has this open". So an offline command that rewrites the backend first takes that
same WAL lock without blocking: if it cannot, a member is running and the command refuses;
if it can, it keeps the lock until it is done, so no member can start in the middle.

A member whose WAL lives elsewhere (``--wal-dir``) holds no lock here, so LMDB's reader table
is checked too: a live process other than this one with a read transaction on the backend
is a running member (stale slots of dead processes are ignored). It is a second net, not the
first: a member between two reads may have no slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass

import lmdb

from petcd.utl.errors import DataDirInUseError, DataDirInvalidError


@dataclass(frozen=True, slots=True)
class DataDir:
    """The paths of one member's data dir."""

    path: str
    wal_dir_override: str = ""

    @property
    def member_dir(self) -> str:
        return os.path.join(self.path, "member")

    @property
    def wal_dir(self) -> str:
        return self.wal_dir_override or os.path.join(self.member_dir, "wal")

    @property
    def snap_dir(self) -> str:
        return os.path.join(self.member_dir, "snap")

    @property
    def backend_path(self) -> str:
        return os.path.join(self.snap_dir, "db")


def backend_file(data_dir: str) -> str:
    """The backend file of ``data_dir``; DataDirInvalidError if there is none."""
    path = DataDir(data_dir).backend_path
    if not os.path.isfile(path):
        raise DataDirInvalidError(
            f"{data_dir!s} is not a petcd data dir: {path} does not exist "
            "(give the directory passed to petcd --data-dir)"
        )
    return path


def live_reader_pids(backend_path: str) -> set[int]:
    """Pids of other live processes with a read transaction on the backend (LMDB's table)."""
    try:
        env = lmdb.open(backend_path, subdir=False, readonly=True, lock=True, max_dbs=16)
    except lmdb.Error:
        return set()  # no usable lock file: nobody can be registered in it
    try:
        table = env.readers()
    finally:
        env.close()
    pids: set[int] = set()
    for line in table.splitlines()[1:]:  # "pid thread txnid" header, then one slot a line
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        pid = int(fields[0])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass  # alive, another user's
        pids.add(pid)
    return pids


def _check_readers(dd: DataDir) -> None:
    if not os.path.isfile(dd.backend_path):
        return
    pids = live_reader_pids(dd.backend_path)
    if pids:
        raise DataDirInUseError(
            f"data dir {dd.path} is in use by a running petcd member (process "
            f"{', '.join(map(str, sorted(pids)))} has {dd.backend_path} open); stop the member "
            "first, or defragment it online with `petcdctl defrag`"
        )


@contextlib.contextmanager
def member_lock(dd: DataDir) -> Iterator[None]:
    """Hold the WAL directory lock of a stopped member; DataDirInUseError if it is running."""
    if not os.path.isdir(dd.wal_dir):
        # No WAL here (never started, or --wal-dir elsewhere): the backend's readers decide.
        _check_readers(dd)
        yield
        return
    fd = os.open(dd.wal_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUseError(
                f"data dir {dd.path} is in use by a running petcd member (it holds the lock "
                f"on {dd.wal_dir}); stop the member first, or defragment it online with "
                "`petcdctl defrag`"
            ) from None
        _check_readers(dd)
        yield
    finally:
        os.close(fd)
