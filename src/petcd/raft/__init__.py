"""petcd.raft: the Raft consensus core, sans-I/O.

Public names: ``RawNode`` (the core), ``Config``, ``Ready``, ``Status``, ``Storage`` and
``MemoryStorage``, the value types of ``petcd.raft.types``, the errors module ``errors`` and the
conf-change codec ``confchange``. See ``petcd.raft.node`` for the calling protocol.
"""

from petcd.raft import confchange, errors
from petcd.raft.config import Config
from petcd.raft.errors import (
    CompactedError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from petcd.raft.node import RawNode, Ready, Status
from petcd.raft.progress import ProgressState, ProgressStatus
from petcd.raft.storage import MemoryStorage, Storage
from petcd.raft.types import (
    NONE_ID,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    MemberId,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    Term,
)

__all__ = [
    "NONE_ID",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "Index",
    "MemberId",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressStatus",
    "ProposalDroppedError",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "Status",
    "Storage",
    "Term",
    "UnavailableError",
    "confchange",
    "errors",
]
