"""petcd.wal — the write-ahead log of Raft entries, hard states and snapshot markers.

The format, the recovery rules and the durability contract are specified in
docs/enhancements/0001-wal-format.md. Typical use by the server::

    if wal.exists(dirpath):
        log, state = wal.WAL.open(dirpath, snapshot_metadata_or_None)
    else:
        log = wal.WAL.create(dirpath, metadata)
    log.save(hard_state, entries)     # cheap, buffered (event loop)
    log.sync()                        # one pwrite + one fdatasync (worker thread)
    log.save_snapshot(meta); log.sync(); log.release_to(meta.index)
"""

from petcd.wal.errors import (
    WalAppendError,
    WalClosedError,
    WalCorruptError,
    WalEntriesMissingError,
    WalError,
    WalExistsError,
    WalFatalError,
    WalLockedError,
    WalNotFoundError,
    WalSnapshotMismatchError,
    WalSnapshotNotFoundError,
)
from petcd.wal.wal import (
    DEFAULT_SEGMENT_SIZE_BYTES,
    WAL,
    WalState,
    exists,
    read_all,
    segment_name,
    snapshot_markers,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE_BYTES",
    "WAL",
    "WalAppendError",
    "WalClosedError",
    "WalCorruptError",
    "WalEntriesMissingError",
    "WalError",
    "WalExistsError",
    "WalFatalError",
    "WalLockedError",
    "WalNotFoundError",
    "WalSnapshotMismatchError",
    "WalSnapshotNotFoundError",
    "WalState",
    "exists",
    "read_all",
    "segment_name",
    "snapshot_markers",
]
