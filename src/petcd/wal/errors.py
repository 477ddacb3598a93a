"""The named errors of petcd.wal.

Theory of operation
-------------------
Every expected failure of the write-ahead log is one of these classes, all subclasses of
``WalError``. ``WalCorruptError`` always names the segment file and the byte offset of the bad
record, so that an operator can look at the damage; petcd never truncates acknowledged data to
get past it. ``WalFatalError`` means a write or an fsync failed: the log may no longer match what
was acknowledged, so the WAL refuses every further call and the member must exit.
"""

from __future__ import annotations


class WalError(Exception):
    """Base class of the write-ahead log's errors."""


class WalNotFoundError(WalError):
    """The directory holds no WAL segment."""


class WalExistsError(WalError):
    """``WAL.create`` was asked to create a WAL where one already exists."""


class WalLockedError(WalError):
    """Another process (or another ``WAL`` object) has the WAL directory open."""


class WalCorruptError(WalError):
    """A record that is not a torn tail failed its checks: acknowledged data is damaged."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"wal: corrupt record in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalSnapshotNotFoundError(WalError):
    """The snapshot the caller restored from has no marker in the WAL."""


class WalSnapshotMismatchError(WalError):
    """The WAL's marker at the snapshot's index has another term."""


class WalEntriesMissingError(WalError):
    """The entries after the requested snapshot are not contiguous (some were released)."""


class WalAppendError(WalError):
    """``save`` was given entries that cannot follow the log (a caller bug)."""


class WalFatalError(WalError):
    """A write or fsync failed earlier; the WAL is unusable and the member must stop."""


class WalClosedError(WalError):
    """The WAL was closed."""
