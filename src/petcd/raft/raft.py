"""The Raft state machine: roles, elections, replication, ReadIndex, membership, transfer.

Theory of operation
-------------------
``Raft`` is a pure state machine. Every input is a ``Message`` given to ``step`` (ticks become
local ``HUP``/``BEAT``/``CHECK_QUORUM`` messages); every output is appended to ``msgs`` (to be
sent once the state they depend on is durable), to the log's unstable part (to persist), or to
``read_states``. ``petcd.raft.node.RawNode`` wraps it with the Ready/advance protocol. It never
performs I/O, reads a clock or uses randomness other than ``Config.rand``.

Roles (``Role``) and transitions::

    FOLLOWER --election timeout, pre_vote--> PRE_CANDIDATE --quorum of pre-votes--> CANDIDATE
    FOLLOWER --election timeout, no pre_vote / TIMEOUT_NOW--> CANDIDATE --quorum--> LEADER
    any --message with a higher term (outside a vote lease)--> FOLLOWER
    LEADER --check_quorum fails / removed from the config--> FOLLOWER

Rules kept here, with the paper's or etcd's name:
- Votes: at most one per term, to a candidate whose log is at least as up to date; the vote is
  set in ``vote`` before the response is queued, so it is in the same Ready's hard state.
- Pre-vote: a pre-candidate asks at ``term + 1`` without raising its own term; a partitioned
  member that rejoins cannot disrupt the cluster with a higher term.
- Lease (check_quorum): a member that heard from a leader within the election timeout ignores
  votes and pre-votes with higher terms, unless the campaign is a leader transfer.
- Commit: only an entry of the leader's current term commits by counting (Figure 8); a new
  leader appends an empty entry at once so that it can commit.
- ReadIndex: the leader records its commit index, confirms it is still leader with a heartbeat
  round carrying the request context, then answers. Before it has committed an entry of its
  term, requests are queued. A single-voter cluster answers at once.
- Membership: one pending conf change at a time (``pending_conf_index > applied`` refuses the
  next); the caller applies committed conf changes with ``apply_conf_change``.
- Transfer: the leader brings the target up to date, sends ``TIMEOUT_NOW``, and drops proposals
  until the transfer ends or an election timeout passes.

Invariants
----------
- ``vote`` is 0 or a member voted for in ``term``; ``lead`` is 0 or a member leading ``term``.
- A leader's own ``Progress.match`` is its last index.
- ``randomized_election_timeout`` is in ``[election_timeout, 2 * election_timeout)``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from petcd.raft import confchange
from petcd.raft.config import Config
from petcd.raft.errors import (
    CompactedError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from petcd.raft.log import RaftLog
from petcd.raft.progress import Progress, ProgressState
from petcd.raft.storage import Storage
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
    SoftState,
    Term,
)

CAMPAIGN_TRANSFER = b"CampaignTransfer"

_MT = MessageType


class CampaignType(enum.Enum):
    PRE_ELECTION = "CampaignPreElection"
    ELECTION = "CampaignElection"
    TRANSFER = "CampaignTransfer"


class VoteResult(enum.Enum):
    PENDING = 0
    LOST = 1
    WON = 2


def vote_resp_type(t: MessageType) -> MessageType:
    if t == _MT.VOTE:
        return _MT.VOTE_RESP
    if t == _MT.PRE_VOTE:
        return _MT.PRE_VOTE_RESP
    raise AssertionError(f"not a vote message: {t!r}")


class _ReadIndexStatus:
    __slots__ = ("acks", "index", "req")

    def __init__(self, req: Message, index: Index) -> None:
        self.req = req
        self.index = index
        self.acks: set[MemberId] = set()


class ReadOnly:
    """Read-index requests waiting for a heartbeat quorum, in arrival order."""

    __slots__ = ("pending", "queue")

    def __init__(self) -> None:
        self.pending: dict[bytes, _ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: Index, m: Message) -> None:
        ctx = m.entries[0].data
        if ctx in self.pending:
            return
        self.pending[ctx] = _ReadIndexStatus(m, index)
        self.queue.append(ctx)

    def recv_ack(self, id_: MemberId, ctx: bytes) -> set[MemberId] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(id_)
        return rs.acks

    def advance(self, ctx: bytes) -> list[_ReadIndexStatus]:
        """Release every request up to and including ``ctx`` (a later heartbeat confirms all
        earlier requests too)."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        released = self.queue[: i + 1]
        del self.queue[: i + 1]
        return [self.pending.pop(c) for c in released]

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""


class Raft:
    def __init__(self, config: Config, storage: Storage) -> None:
        self.id = config.id
        self.config = config
        self.rand = config.rand
        self.raft_log = RaftLog(storage)
        hs, cs = storage.initial_state()

        self.term = Term(0)
        self.vote = NONE_ID
        self.lead = NONE_ID
        self.role = Role.FOLLOWER
        self.is_learner = False
        self.max_msg_size = config.max_size_per_msg_bytes
        self.max_inflight = config.max_inflight_msgs
        self.max_uncommitted_size = config.max_uncommitted_entries_bytes
        self.uncommitted_size = 0
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.disable_proposal_forwarding = config.disable_proposal_forwarding
        self.heartbeat_timeout = config.heartbeat_ticks
        self.election_timeout = config.election_ticks
        self.randomized_election_timeout = config.election_ticks
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.lead_transferee = NONE_ID
        self.pending_conf_index = Index(0)
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.votes: dict[MemberId, bool] = {}

        self.voters: frozenset[MemberId] = frozenset()
        self.learners: frozenset[MemberId] = frozenset()
        self.prs: dict[MemberId, Progress] = {}
        self.peers: tuple[MemberId, ...] = ()  # every member but self, ascending
        self.quorum = 1
        self._set_config(cs)

        if hs != HardState():
            self._load_state(hs)
        if config.applied > self.raft_log.applied:
            # Entries up to a snapshot are applied by definition; only later ones count.
            self.raft_log.applied_to(config.applied)
        self.become_follower(self.term, NONE_ID)

    # -- state helpers -----------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.raft_log.committed)

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def _load_state(self, hs: HardState) -> None:
        log = self.raft_log
        assert log.committed <= hs.commit <= log.last_index() or hs.commit < log.committed, (
            f"hard state commit {hs.commit} out of range [{log.committed}, {log.last_index()}]"
        )
        log.committed = Index(max(log.committed, hs.commit))
        self.term = hs.term
        self.vote = hs.vote

    def _set_config(self, cs: ConfState) -> None:
        """Adopt ``cs``: keep known progress, create new ones, drop removed members."""
        assert not (cs.voters & cs.learners), "voters and learners must be disjoint"
        self.voters = frozenset(cs.voters)
        self.learners = frozenset(cs.learners)
        last = self.raft_log.last_index()
        prs: dict[MemberId, Progress] = {}
        for id_ in sorted(self.voters | self.learners):
            pr = self.prs.get(id_)
            if pr is None:
                # next = last (not last + 1): the first probe then carries the last entry, so a
                # leader contacts a new member at once instead of at the next heartbeat.
                pr = Progress(Index(0), Index(max(last, 1)), self.max_inflight, False)
                # A member just added counts as active, so check_quorum does not act at once.
                pr.recent_active = True
            pr.is_learner = id_ in self.learners
            prs[id_] = pr
        self.prs = prs
        self.peers = tuple(i for i in prs if i != self.id)
        self.quorum = len(self.voters) // 2 + 1
        pr = prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner

    def promotable(self) -> bool:
        """Whether this member may campaign: a voter with no snapshot waiting to be applied."""
        return self.id in self.voters and not self.raft_log.has_pending_snapshot()

    def _reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rand.randrange(
            self.election_timeout
        )

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _reset(self, term: Term) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE_ID
        self.lead = NONE_ID
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE_ID
        self.votes = {}
        last = self.raft_log.last_index()
        for id_, pr in self.prs.items():
            fresh = Progress(Index(0), Index(last + 1), self.max_inflight, pr.is_learner)
            if id_ == self.id:
                fresh.match = last
            self.prs[id_] = fresh
        self.pending_conf_index = Index(0)
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []

    # -- role transitions --------------------------------------------------------------------

    def become_follower(self, term: Term, lead: MemberId) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_candidate(self) -> None:
        assert self.role is not Role.LEADER, "invalid transition [leader -> candidate]"
        self._reset(Term(self.term + 1))
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_pre_candidate(self) -> None:
        assert self.role is not Role.LEADER, "invalid transition [leader -> pre-candidate]"
        # Neither the term nor the vote changes: a pre-election disturbs nobody.
        self.votes = {}
        self.lead = NONE_ID
        self.role = Role.PRE_CANDIDATE

    def become_leader(self) -> None:
        assert self.role is not Role.FOLLOWER, "invalid transition [follower -> leader]"
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.prs[self.id].become_replicate()
        self.prs[self.id].recent_active = True
        # Conf changes in the uncommitted tail might be pending; be conservative.
        self.pending_conf_index = self.raft_log.last_index()
        ok = self._append_entries([Entry(self.term, Index(0))], count_size=False)
        assert ok, "the empty entry of a new leader cannot be refused"

    # -- ticks -------------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(_MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(_MT.CHECK_QUORUM, from_=self.id))
            if self.role is Role.LEADER and self.lead_transferee != NONE_ID:
                self.lead_transferee = NONE_ID
        if self.role is not Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(_MT.BEAT, from_=self.id))

    # -- sending -----------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def send_append(self, to: MemberId, send_if_empty: bool = True) -> bool:
        """Send ``to`` the entries it lacks (or a snapshot); whether a message was sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.raft_log
        prev_index = Index(pr.next - 1)
        try:
            prev_term = log.term(prev_index)
            ents = log.entries(pr.next, self.max_msg_size)
        except (CompactedError, UnavailableError):
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                _MT.APP,
                to,
                self.id,
                self.term,
                prev_term,
                prev_index,
                tuple(ents),
                log.committed,
            )
        )
        if pr.state is ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.next = Index(last + 1)
                pr.inflights.add(last)
        elif pr.state is ProgressState.PROBE:
            # Any append in probe state is a probe: wait for its answer before the next.
            pr.probe_sent = True
        else:
            raise AssertionError(f"sending an append to {to} in state {pr.state}")
        return True

    def _send_snapshot(self, to: MemberId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        assert not snap.is_empty, "need a non-empty snapshot"
        pr.become_snapshot(snap.metadata.index)
        self._send(Message(_MT.SNAP, to, self.id, self.term, snapshot=snap))
        return True

    def _send_heartbeat(self, to: MemberId, ctx: bytes) -> None:
        # Never tell a follower a commit index beyond what it has: it could not apply it.
        commit = min(self.prs[to].match, self.raft_log.committed)
        self._send(Message(_MT.HEARTBEAT, to, self.id, self.term, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for id_ in self.peers:
            self.send_append(id_)

    def bcast_heartbeat(self) -> None:
        ctx = self.read_only.last_pending_request_ctx()
        for id_ in self.peers:
            self._send_heartbeat(id_, ctx)

    def _send_timeout_now(self, to: MemberId) -> None:
        self._send(Message(_MT.TIMEOUT_NOW, to, self.id, self.term))

    # -- log ---------------------------------------------------------------------------------

    def _append_entries(self, ents: list[Entry], count_size: bool = True) -> bool:
        """Append proposals (terms and indexes are assigned here); False when refused by the
        uncommitted size limit."""
        log = self.raft_log
        li = log.last_index()
        term = self.term
        ents = [Entry(term, Index(li + 1 + i), e.type, e.data) for i, e in enumerate(ents)]
        if (
            count_size
            and self.max_uncommitted_size > 0
            and not self._increase_uncommitted_size(sum(len(e.data) for e in ents))
        ):
            return False
        li = log.append(ents)
        self.prs[self.id].maybe_update(li)
        self._maybe_commit()
        return True

    def append_data(self, datas: Sequence[bytes]) -> bool:
        """The leader's fast path for local normal proposals: one Entry construction each."""
        log = self.raft_log
        base = log.last_index() + 1
        term = self.term
        normal = EntryType.NORMAL
        ents = [Entry(term, Index(base + i), normal, d) for i, d in enumerate(datas)]
        if self.max_uncommitted_size > 0 and not self._increase_uncommitted_size(
            sum(len(d) for d in datas)
        ):
            return False
        li = log.append(ents)
        self.prs[self.id].maybe_update(li)
        self._maybe_commit()
        return True

    def _increase_uncommitted_size(self, size: int) -> bool:
        """etcd's increaseUncommittedSize: count ``size`` more bytes of uncommitted proposals,
        or refuse them (False) past ``max_uncommitted_size``; an empty proposal, or any while
        nothing is uncommitted, is always let in (so one large proposal cannot stall)."""
        if (
            self.uncommitted_size > 0
            and size > 0
            and self.uncommitted_size + size > self.max_uncommitted_size
        ):
            return False
        self.uncommitted_size += size
        return True

    def reduce_uncommitted_size(self, ents: Sequence[Entry]) -> None:
        if self.uncommitted_size == 0:
            return
        size = sum(len(e.data) for e in ents)
        self.uncommitted_size = max(0, self.uncommitted_size - size)

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum of voters has; release read requests that
        waited for the first commit of this term."""
        if self.quorum == 1:
            if self.id not in self.voters:
                return False
            mci = self.prs[self.id].match
        else:
            prs = self.prs
            matches = sorted((prs[v].match for v in self.voters), reverse=True)
            mci = matches[self.quorum - 1]
        if not self.voters:
            return False
        if self.raft_log.maybe_commit(mci, self.term):
            if self.pending_read_index_messages and self._committed_entry_in_current_term():
                pending = self.pending_read_index_messages
                self.pending_read_index_messages = []
                for m in pending:
                    self._send_read_index_response(m)
            return True
        return False

    def _committed_entry_in_current_term(self) -> bool:
        log = self.raft_log
        return log.zero_term_on_compacted(log.committed) == self.term

    # -- elections ---------------------------------------------------------------------------

    def _has_unapplied_conf_changes(self) -> bool:
        log = self.raft_log
        if log.applied >= log.committed:
            return False
        lo = Index(max(log.applied + 1, log.first_index()))
        ents = log.slice(lo, Index(log.committed + 1), None)
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def _hup(self, t: CampaignType) -> None:
        if self.role is Role.LEADER:
            return
        if not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            # The configuration we would campaign under may be about to change.
            return
        self._campaign(t)

    def _campaign(self, t: CampaignType) -> None:
        if t is CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = _MT.PRE_VOTE
            term = Term(self.term + 1)
        else:
            self.become_candidate()
            vote_msg = _MT.VOTE
            term = self.term
        if self._poll(self.id, vote_resp_type(vote_msg), True) is VoteResult.WON:
            # A single-voter cluster wins at once.
            if t is CampaignType.PRE_ELECTION:
                self._campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        log = self.raft_log
        last_index = log.last_index()
        last_term = log.last_term()
        ctx = CAMPAIGN_TRANSFER if t is CampaignType.TRANSFER else b""
        for id_ in sorted(self.voters):
            if id_ == self.id:
                continue
            self._send(Message(vote_msg, id_, self.id, term, last_term, last_index, context=ctx))

    def _poll(self, id_: MemberId, t: MessageType, granted: bool) -> VoteResult:
        if id_ not in self.votes:
            self.votes[id_] = granted
        yes = no = 0
        for v in self.voters:
            r = self.votes.get(v)
            if r is True:
                yes += 1
            elif r is False:
                no += 1
        if yes >= self.quorum:
            return VoteResult.WON
        if len(self.voters) - no < self.quorum:
            return VoteResult.LOST
        return VoteResult.PENDING

    # -- step --------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message. Raises ``ProposalDroppedError`` for a refused ``PROP``."""
        t = m.type
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if t == _MT.VOTE or t == _MT.PRE_VOTE:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE_ID
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # We heard from a leader recently: this candidate cannot win anyway and
                    # must not make us abandon it.
                    return
            if t == _MT.PRE_VOTE:
                pass  # never change our term for a pre-vote
            elif t == _MT.PRE_VOTE_RESP and not m.reject:
                pass  # the term is raised when the pre-election is won
            elif t == _MT.APP or t == _MT.HEARTBEAT or t == _MT.SNAP:
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE_ID)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (t == _MT.HEARTBEAT or t == _MT.APP):
                # A stale leader (say, one that was partitioned) learns of the newer term from
                # this answer and steps down; without it, it could keep disrupting us.
                self._send(Message(_MT.APP_RESP, m.from_, self.id, self.term))
            elif t == _MT.PRE_VOTE:
                self._send(Message(_MT.PRE_VOTE_RESP, m.from_, self.id, self.term, reject=True))
            return

        if t == _MT.HUP:
            self._hup(CampaignType.PRE_ELECTION if self.pre_vote else CampaignType.ELECTION)
        elif t == _MT.VOTE or t == _MT.PRE_VOTE:
            can_vote = (
                self.vote == m.from_
                or (self.vote == NONE_ID and self.lead == NONE_ID)
                or (t == _MT.PRE_VOTE and m.term > self.term)
            )
            if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
                # The response carries the candidate's term: for a pre-vote our term is lower,
                # and the pre-candidate must count it.
                self._send(Message(vote_resp_type(t), m.from_, self.id, m.term))
                if t == _MT.VOTE:
                    self.election_elapsed = 0
                    self.vote = m.from_
            else:
                self._send(Message(vote_resp_type(t), m.from_, self.id, self.term, reject=True))
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == _MT.BEAT:
            self.bcast_heartbeat()
            return
        if t == _MT.CHECK_QUORUM:
            active = sum(1 for v in self.voters if v == self.id or self.prs[v].recent_active)
            if active < self.quorum:
                self.become_follower(self.term, NONE_ID)
            for id_, other in self.prs.items():
                if id_ != self.id:
                    other.recent_active = False
            return
        if t == _MT.PROP:
            self._leader_propose(m)
            return
        if t == _MT.READ_INDEX:
            if len(self.voters) == 1 and self.id in self.voters:
                self._respond_read_index(m, self.raft_log.committed)
                return
            if not self._committed_entry_in_current_term():
                # Our commit index may be behind the previous leader's until an entry of our
                # term commits; answer then.
                self.pending_read_index_messages.append(m)
                return
            self._send_read_index_response(m)
            return

        pr = self.prs.get(m.from_)
        if pr is None:
            return
        if t == _MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == _MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.raft_log.last_index():
                self.send_append(m.from_)
            if not m.context:
                return
            acks = self.read_only.recv_ack(m.from_, m.context)
            if acks is None or len(acks & self.voters) < self.quorum:
                return
            for rs in self.read_only.advance(m.context):
                self._respond_read_index(rs.req, rs.index)
        elif t == _MT.SNAP_STATUS:
            if pr.state is not ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = Index(0)
            pr.become_probe()
            # Wait for a heartbeat answer before probing: the snapshot may still be applying.
            pr.probe_sent = True
        elif t == _MT.UNREACHABLE:
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
        elif t == _MT.TRANSFER_LEADER:
            self._handle_transfer_leader(m, pr)

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise AssertionError("stepped an empty proposal")
        if self.id not in self.prs:
            raise ProposalDroppedError("this member was removed from the configuration")
        if self.lead_transferee != NONE_ID:
            raise ProposalDroppedError(f"leadership is being transferred to {self.lead_transferee}")
        li = self.raft_log.last_index()
        conf_index = Index(0)
        for i, e in enumerate(m.entries):
            if e.type == EntryType.CONF_CHANGE:
                if self.pending_conf_index > self.raft_log.applied or conf_index:
                    raise ProposalDroppedError(
                        "a conf change is already pending (uncommitted or unapplied)"
                    )
                conf_index = Index(li + i + 1)
        if not self._append_entries(list(m.entries)):
            raise ProposalDroppedError("too many uncommitted entry bytes")
        if conf_index:
            self.pending_conf_index = conf_index
        self.bcast_append()

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        log = self.raft_log
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.from_)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= log.first_index():
                # The follower has caught up past the snapshot; the log can take over.
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self.bcast_append()
        elif old_paused:
            self.send_append(m.from_)
        # Drain what the window allows (several messages when max_size_per_msg limits them).
        while self.send_append(m.from_, send_if_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == log.last_index():
            self._send_timeout_now(m.from_)

    def _handle_transfer_leader(self, m: Message, pr: Progress) -> None:
        target = m.from_
        if pr.is_learner:
            return
        if self.lead_transferee != NONE_ID:
            if self.lead_transferee == target:
                return
            self.lead_transferee = NONE_ID
        if target == self.id:
            return
        # The transfer must finish within an election timeout.
        self.election_elapsed = 0
        self.lead_transferee = target
        if pr.match == self.raft_log.last_index():
            self._send_timeout_now(target)
        else:
            self.send_append(target)

    def _send_read_index_response(self, m: Message) -> None:
        committed = self.raft_log.committed
        self.read_only.add_request(committed, m)
        self.read_only.recv_ack(self.id, m.entries[0].data)
        self.bcast_heartbeat()

    def _respond_read_index(self, req: Message, index: Index) -> None:
        if req.from_ == NONE_ID or req.from_ == self.id:
            self.read_states.append(ReadState(index, req.entries[0].data))
        else:
            self._send(
                Message(
                    _MT.READ_INDEX_RESP,
                    req.from_,
                    self.id,
                    self.term,
                    index=index,
                    entries=req.entries,
                )
            )

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = _MT.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else _MT.VOTE_RESP
        if t == _MT.PROP:
            raise ProposalDroppedError("no leader (election in progress)")
        if t == _MT.APP:
            self.become_follower(m.term, m.from_)
            self._handle_append(m)
        elif t == _MT.HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif t == _MT.SNAP:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self._poll(m.from_, t, not m.reject)
            if res is VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(CampaignType.ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res is VoteResult.LOST:
                self.become_follower(self.term, NONE_ID)
        elif t == _MT.READ_INDEX:
            raise ProposalDroppedError("no leader to serve a read index")

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == _MT.PROP:
            if self.lead == NONE_ID:
                raise ProposalDroppedError("no leader")
            if self.disable_proposal_forwarding:
                raise ProposalDroppedError("proposal forwarding is disabled")
            self._send(dataclasses.replace(m, to=self.lead))
        elif t == _MT.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append(m)
        elif t == _MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif t == _MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t == _MT.TRANSFER_LEADER:
            if self.lead == NONE_ID:
                return
            self._send(dataclasses.replace(m, to=self.lead))
        elif t == _MT.TIMEOUT_NOW:
            # Leadership transfer: campaign at once, skipping pre-vote and leases.
            self._hup(CampaignType.TRANSFER)
        elif t == _MT.READ_INDEX:
            if self.lead == NONE_ID:
                raise ProposalDroppedError("no leader to serve a read index")
            self._send(dataclasses.replace(m, to=self.lead))
        elif t == _MT.READ_INDEX_RESP:
            if len(m.entries) != 1:
                return
            self.read_states.append(ReadState(m.index, m.entries[0].data))

    # -- follower handlers -------------------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        log = self.raft_log
        if m.index < log.committed:
            self._send(Message(_MT.APP_RESP, m.from_, self.id, self.term, index=log.committed))
            return
        lastnewi = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if lastnewi is not None:
            self._send(Message(_MT.APP_RESP, m.from_, self.id, self.term, index=lastnewi))
            return
        # Tell the leader where our log may match: the largest index <= min(m.index, last)
        # whose term is <= m.log_term, so it can skip a whole term per round trip.
        hint_index = Index(min(m.index, log.last_index()))
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(
                _MT.APP_RESP,
                m.from_,
                self.id,
                self.term,
                hint_term,
                m.index,
                reject=True,
                reject_hint=hint_index,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self._send(Message(_MT.HEARTBEAT_RESP, m.from_, self.id, self.term, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None, "SNAP message without a snapshot"
        log = self.raft_log
        if self._restore(m.snapshot):
            self._send(Message(_MT.APP_RESP, m.from_, self.id, self.term, index=log.last_index()))
        else:
            self._send(Message(_MT.APP_RESP, m.from_, self.id, self.term, index=log.committed))

    def _restore(self, s: Snapshot) -> bool:
        """Install ``s`` unless we already have its entries; whether it was installed."""
        md = s.metadata
        log = self.raft_log
        if md.index <= log.committed:
            return False
        if self.role is not Role.FOLLOWER:
            # Only a leader of this term sends snapshots; we cannot be a candidate for it.
            self.become_follower(Term(self.term + 1), NONE_ID)
            return False
        # The snapshot's configuration may lack us: a leader sends its newest snapshot, which
        # can predate our addition. It is still the committed state at its index, and the log
        # after it adds us (only members in the leader's configuration get snapshots). etcd
        # ignores such snapshots and relies on its server to merge one at send time; accepting
        # it keeps a member from waiting forever when the caller sends a stored snapshot.
        cs = md.conf_state
        if log.match_term(md.index, md.term):
            # We have the snapshot's last entry: fast-forward the commit index instead.
            log.commit_to(md.index)
            return False
        log.restore(s)
        self.prs = {}
        self._set_config(cs)
        last = log.last_index()
        for id_, pr in self.prs.items():
            pr.match = last if id_ == self.id else Index(0)
            pr.next = Index(last + 1)
        return True

    # -- membership --------------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        voters = set(self.voters)
        learners = set(self.learners)
        nid = cc.node_id
        if cc.type is ConfChangeType.ADD_NODE:
            learners.discard(nid)
            voters.add(nid)
        elif cc.type is ConfChangeType.ADD_LEARNER_NODE:
            voters.discard(nid)
            learners.add(nid)
        elif cc.type is ConfChangeType.REMOVE_NODE:
            voters.discard(nid)
            learners.discard(nid)
        # UPDATE_NODE changes nothing the core knows about.
        cs = ConfState(frozenset(voters), frozenset(learners))
        self._set_config(cs)

        if self.role is not Role.LEADER:
            return cs
        if self.id not in self.voters:
            # Removed (or demoted): a leader that does not count for the quorum steps down.
            # First tell every remaining member the commit index, regardless of flow control:
            # a member that does not know the change committed keeps the old configuration,
            # where it may need this (soon shut down) member's vote and could never win.
            for id_ in self.peers:
                self._send_heartbeat(id_, b"")
            self.become_follower(self.term, NONE_ID)
            return cs
        if not self.voters:
            return cs
        if self._maybe_commit():
            self.bcast_append()
        else:
            for id_ in self.peers:
                self.send_append(id_, send_if_empty=False)
        if self.lead_transferee != NONE_ID and self.lead_transferee not in self.voters:
            self.lead_transferee = NONE_ID
        return cs


def decode_conf_change(e: Entry) -> ConfChange:
    assert e.type == EntryType.CONF_CHANGE, f"entry {e.index} is not a conf change"
    return confchange.decode(e.data)
