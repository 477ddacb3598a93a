"""``RawNode``: the Raft core's public face, with the Ready/advance protocol.

Theory of operation
-------------------
The caller drives a ``RawNode`` from one thread (the server's event loop, a test, the
simulator). Inputs: ``tick``, ``step`` (messages from peers), ``propose``/``propose_many``,
``propose_conf_change``, ``read_index``, ``transfer_leader``, ``campaign``, the
``report_*`` calls. Outputs come out of ``ready()`` and must be handled in this order::

    rd = node.ready()
    persist rd.snapshot, rd.hard_state, rd.entries   (fsync when rd.must_sync)
    send rd.messages                                 (only after they are durable)
    apply rd.committed_entries in order              (apply_conf_change for conf changes)
    node.advance(rd)

A non-empty ``rd.snapshot`` replaces the state machine: install it before applying
``rd.committed_entries`` (which then follow the snapshot's index). ``rd.entries`` may start
below the last persisted index: they replace the conflicting tail (``MemoryStorage.append``
does that). A proposal or read request may raise ``ProposalDroppedError``; it then never
commits (retry it later).

``ready()`` hands out every change since the previous ``ready()``; ``advance(rd)`` records that
``rd`` was handled (entries stable, entries applied). Calls alternate strictly: ``ready``,
``advance``, ``ready``, ... Inputs may arrive between them.

Nothing here performs I/O; the only randomness is ``Config.rand``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from petcd.raft import confchange
from petcd.raft.config import Config
from petcd.raft.errors import ProposalDroppedError, StepLocalMsgError
from petcd.raft.progress import ProgressStatus
from petcd.raft.raft import Raft
from petcd.raft.storage import Storage
from petcd.raft.types import (
    NONE_ID,
    ConfChange,
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
    SoftState,
    Term,
)

_LOCAL_TYPES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)
_RESPONSE_TYPES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.PRE_VOTE_RESP,
    }
)


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the caller must do, in order: persist, send, apply; then ``advance``."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    id: MemberId
    term: Term
    vote: MemberId
    commit: Index
    applied: Index
    lead: MemberId
    role: Role
    conf_state: ConfState
    progress: Mapping[MemberId, ProgressStatus] = field(default_factory=dict)
    lead_transferee: MemberId = NONE_ID

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)


class RawNode:
    """One member's Raft core. See the module docstring for the calling protocol."""

    __slots__ = ("_awaiting_advance", "_max_committed_bytes", "_prev_hard", "_prev_soft", "raft")

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        self._max_committed_bytes = config.max_committed_size_per_ready_bytes or None
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._awaiting_advance = False

    # -- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of logical time has passed."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round when ``pre_vote`` is on).

        Ignored by a leader, by a member that is not a voter, and while committed conf changes
        are not yet applied (so right after ``MemoryStorage.bootstrap``, apply the first
        Ready's committed entries before campaigning).
        """
        self.raft.step(Message(MessageType.HUP, from_=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose one normal entry; raises ``ProposalDroppedError`` when refused."""
        self.propose_many((data,))

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Propose several normal entries as one batch (one append, one message per peer)."""
        if not datas:
            return
        r = self.raft
        if r.role is Role.LEADER:
            if r.id not in r.prs:
                raise ProposalDroppedError("this member was removed from the configuration")
            if r.lead_transferee != NONE_ID:
                raise ProposalDroppedError(
                    f"leadership is being transferred to {r.lead_transferee}"
                )
            if not r.append_data(datas):
                raise ProposalDroppedError("too many uncommitted entry bytes")
            r.bcast_append()
            return
        ents = tuple(Entry(Term(0), Index(0), EntryType.NORMAL, d) for d in datas)
        r.step(Message(MessageType.PROP, from_=r.id, entries=ents))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; refused while another one is pending."""
        e = Entry(Term(0), Index(0), EntryType.CONF_CHANGE, confchange.encode(cc))
        self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=(e,)))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change (the caller calls this while applying its entry)."""
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Process a message from a peer.

        Local-only message types raise ``StepLocalMsgError``. A response from a member that is
        not in the configuration (one just removed, say) is stale and ignored. A proposal or
        read request forwarded by a peer that cannot be handled here is dropped silently (its
        sender times out and retries).
        """
        if m.type in _LOCAL_TYPES:
            raise StepLocalMsgError(f"{m.type.name} is a local message")
        if m.type in _RESPONSE_TYPES and m.from_ not in self.raft.prs:
            return
        try:
            self.raft.step(m)
        except ProposalDroppedError:
            if m.type not in (MessageType.PROP, MessageType.READ_INDEX):
                raise

    def read_index(self, request_ctx: bytes) -> None:
        """Ask for a linearizable read point; the answer is a ``ReadState`` with the same
        ``request_ctx`` in a later ``Ready``. The context should be unique per request."""
        self.raft.step(
            Message(
                MessageType.READ_INDEX,
                from_=self.raft.id,
                entries=(Entry(Term(0), Index(0), EntryType.NORMAL, request_ctx),),
            )
        )

    def transfer_leader(self, target: MemberId) -> None:
        """Ask the leader to hand leadership to ``target``."""
        r = self.raft
        r.step(Message(MessageType.TRANSFER_LEADER, to=r.lead, from_=target))

    def report_unreachable(self, id: MemberId) -> None:
        """The transport failed to send to ``id``: stop streaming to it, probe instead."""
        self.raft.step(Message(MessageType.UNREACHABLE, from_=id))

    def report_snapshot(self, id: MemberId, failed: bool) -> None:
        """The result of sending a snapshot to ``id``."""
        self.raft.step(Message(MessageType.SNAP_STATUS, from_=id, reject=failed))

    # -- outputs -----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if r.msgs or r.read_states:
            return True
        u = r.raft_log.unstable
        if u.entries or u.snapshot is not None:
            return True
        if r.lead != self._prev_soft.leader or r.role is not self._prev_soft.role:
            return True
        hs = self._prev_hard
        if r.term != hs.term or r.vote != hs.vote or r.raft_log.committed != hs.commit:
            return True
        return r.raft_log.has_next_committed_ents()

    def ready(self) -> Ready:
        assert not self._awaiting_advance, "ready() called twice without advance()"
        r = self.raft
        log = r.raft_log
        u = log.unstable
        ss: SoftState | None = None
        if r.lead != self._prev_soft.leader or r.role is not self._prev_soft.role:
            ss = r.soft_state()
            self._prev_soft = ss
        hs: HardState | None = None
        prev = self._prev_hard
        must_sync = bool(u.entries)
        if r.term != prev.term or r.vote != prev.vote or log.committed != prev.commit:
            hs = r.hard_state()
            must_sync = must_sync or hs.term != prev.term or hs.vote != prev.vote
            self._prev_hard = hs
        rd = Ready(
            ss,
            hs,
            tuple(u.entries),
            u.snapshot,
            tuple(log.next_committed_ents(self._max_committed_bytes)),
            tuple(r.msgs),
            tuple(r.read_states),
            must_sync or u.snapshot is not None,
        )
        r.msgs = []
        r.read_states = []
        self._awaiting_advance = True
        return rd

    def advance(self, rd: Ready) -> None:
        """``rd`` was handled: its entries and snapshot are durable, its committed entries
        applied."""
        assert self._awaiting_advance, "advance() without ready()"
        self._awaiting_advance = False
        r = self.raft
        log = r.raft_log
        if rd.snapshot is not None:
            log.applied_to(max(log.applied, rd.snapshot.metadata.index))
            log.stable_snap_to(rd.snapshot.metadata.index)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
            if r.role is Role.LEADER:
                r.reduce_uncommitted_size(rd.committed_entries)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)

    def status(self) -> Status:
        r = self.raft
        progress: dict[MemberId, ProgressStatus] = {}
        if r.role is Role.LEADER:
            for id_, pr in r.prs.items():
                progress[id_] = ProgressStatus(
                    pr.match,
                    pr.next,
                    pr.state,
                    pr.is_learner,
                    pr.recent_active,
                    pr.pending_snapshot,
                    pr.inflights.count(),
                )
        return Status(
            r.id,
            r.term,
            r.vote,
            r.raft_log.committed,
            r.raft_log.applied,
            r.lead,
            r.role,
            r.conf_state(),
            progress,
            r.lead_transferee,
        )
