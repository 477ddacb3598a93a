"""The data the Raft core exchanges with its caller: entries, hard state, messages, snapshots.

Theory of operation
-------------------
These are plain values. The core (``petcd.raft.node``) consumes ``Message`` values through
``step`` and hands back ``Ready`` values; the caller persists ``HardState`` and ``Entry``
values (``petcd.wal``), sends ``Message`` values (``petcd.peer``) and applies committed
``Entry`` values to the state machine (``petcd.server``). Nothing here performs I/O.

The names follow etcd's raftpb (``MsgApp``, ``HardState``, ``ConfState``) so that the code can
be held against etcd's documentation. The numeric values of ``MessageType``, ``EntryType`` and
``ConfChangeType`` equal etcd's raftpb values; they are part of petcd's WAL and peer formats.

Invariants
----------
- ``Index`` 0 and ``Term`` 0 mean "none": the first real entry has index 1 and term >= 1.
- ``MemberId`` 0 means "no member" (``HardState.vote == 0``: no vote cast in this term).
- A ``ConfState``'s voters and learners are disjoint.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

from petcd.fastinit import fast_init

MemberId = NewType("MemberId", int)
Term = NewType("Term", int)
Index = NewType("Index", int)

NONE_ID = MemberId(0)


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    UPDATE_NODE = 2
    ADD_LEARNER_NODE = 3


class MessageType(enum.IntEnum):
    HUP = 0  # local: start an election
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # proposal (local, or forwarded by a follower)
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: a peer could not be reached
    SNAP_STATUS = 11  # local: result of sending a snapshot
    CHECK_QUORUM = 12  # local
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


class Role(enum.Enum):
    FOLLOWER = "StateFollower"
    CANDIDATE = "StateCandidate"
    PRE_CANDIDATE = "StatePreCandidate"
    LEADER = "StateLeader"


@fast_init  # built for every proposal
@dataclass(frozen=True, slots=True)
class Entry:
    term: Term
    index: Index
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: Term = Term(0)
    vote: MemberId = NONE_ID
    commit: Index = Index(0)


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[MemberId] = frozenset()
    learners: frozenset[MemberId] = frozenset()


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change; the payload of an ``EntryType.CONF_CHANGE`` entry.

    ``context`` is opaque to the core (the server puts the member's name and URLs there).
    ``id`` is a caller-chosen request id, opaque to the core.
    """

    type: ConfChangeType
    node_id: MemberId
    context: bytes = b""
    id: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: Index = Index(0)
    term: Term = Term(0)
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot of the state machine at ``metadata.index``; ``data`` is opaque to the core."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: MemberId = NONE_ID
    from_: MemberId = NONE_ID
    term: Term = Term(0)
    log_term: Term = Term(0)
    index: Index = Index(0)
    entries: tuple[Entry, ...] = ()
    commit: Index = Index(0)
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: Index = Index(0)
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """The answer to ``read_index(request_ctx)``: reads are linearizable once applied >= index."""

    index: Index
    request_ctx: bytes


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the caller about; never persisted."""

    leader: MemberId
    role: Role
