"""``defrag --data-dir``: offline defragmentation of a stopped member's backend.

Theory of operation: the member's WAL lock is taken first (``datadir.member_lock``): a running
member holds it, and then nothing is touched and the error says how to defragment online.
With the lock held (so no member can start meanwhile) the backend is opened and rewritten
compactly by ``Backend.defrag`` (an LMDB compacting copy, fsync, rename over the file). The
caller gets the sizes before and after, to report them as etcd's backend logs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from petcd.backend import Backend
from petcd.snap import bbolt
from petcd.utl.datadir import DataDir, backend_file, member_lock
from petcd.utl.errors import EtcdFileError, SnapshotCorruptError


@dataclass(frozen=True, slots=True)
class DefragSizes:
    """File size and bytes in use of the backend, before or after."""

    size_bytes: int
    in_use_bytes: int


@dataclass(frozen=True, slots=True)
class DefragResult:
    path: str
    before: DefragSizes
    after: DefragSizes
    took_s: float


def defrag_data_dir(
    data_dir: str,
    *,
    wal_dir: str = "",
    on_start: Callable[[str, DefragSizes], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> DefragResult:
    """Defragment the backend of the stopped member in ``data_dir``."""
    dd = DataDir(data_dir, wal_dir)
    path = backend_file(data_dir)
    if bbolt.sniff(path):
        raise EtcdFileError(path)  # before LMDB leaves a lock file beside etcd's db
    with member_lock(dd):
        try:
            backend = Backend(path)
        except lmdb.Error as e:
            raise SnapshotCorruptError(f"cannot open {path}: {e}") from None
        try:
            before = DefragSizes(backend.size_bytes(), backend.size_in_use_bytes())
            if on_start is not None:
                on_start(path, before)
            started = clock()
            backend.defrag()
            took = clock() - started
            after = DefragSizes(backend.size_bytes(), backend.size_in_use_bytes())
        finally:
            backend.close()
    return DefragResult(path, before, after, took)
