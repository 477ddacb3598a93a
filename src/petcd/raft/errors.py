"""The named outcomes of the Raft core and of its storage.

Theory of operation
-------------------
Expected outcomes that a caller handles are exceptions defined here; broken invariants are
``AssertionError`` (a bug: crash). ``CompactedError``, ``UnavailableError`` and
``SnapshotTemporarilyUnavailableError`` are the storage contract (``petcd.raft.storage``): the
core catches them and falls back (to sending a snapshot, or to trying later).
``ProposalDroppedError`` tells the proposer that its proposal was not appended anywhere and will
never commit, so it may retry at once.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error the Raft core raises on purpose."""


class ConfigError(RaftError, ValueError):
    """A ``Config`` value is invalid."""


class StorageError(RaftError):
    """Base class of the storage contract's errors."""


class CompactedError(StorageError):
    """The requested index is older than the storage's first index (compacted away)."""


class UnavailableError(StorageError):
    """The requested index is newer than the storage's last index."""


class SnapshotOutOfDateError(StorageError):
    """A snapshot older than the storage's current snapshot was offered."""


class SnapshotTemporarilyUnavailableError(StorageError):
    """The storage is preparing a snapshot; the core will ask again later."""


class ProposalDroppedError(RaftError):
    """The proposal was not accepted: no leader, a leader transfer in progress, the uncommitted
    size limit reached, a conf change already pending, or this member is not in the config."""


class StepLocalMsgError(RaftError):
    """A local-only message type (``HUP``, ``BEAT``, ...) arrived through ``RawNode.step``."""
