"""The deterministic Raft simulator: members, faults, clients and checks, from one seed.

Theory of operation
-------------------
``Simulation(seed).run()`` builds a cluster of 3 or 5 founding members, each a ``RawNode`` over a
``MemoryStorage`` with a ``SimDisk`` behind it, connected by a ``SimNetwork``. Every decision
(the parameters of the run, faults, client operations, message delays and order, every member's
election timeouts through ``Config.rand``) is drawn from one ``random.Random(seed)``, and time
is a tick counter, so a seed replays exactly.

A run has two phases:

1. *Chaos* (``SimParams.chaos_ticks`` ticks). Each tick: maybe crash a member (also in the
   middle of handling a Ready), restart crashed ones, change the partition; submit client
   operations (proposals, batches, conf changes adding and removing voters and learners and
   promoting learners, ReadIndex requests, leader transfers); tick every live member (sometimes
   one misses a tick: clock drift); deliver the messages that are due, handling Readys as they
   appear, until the tick is quiet.
2. *Liveness*. The network heals and turns reliable and fast (messages arrive in the tick they
   are sent in), every crashed member restarts. Within
   ``SimParams.liveness_ticks`` ticks a leader must be elected and a proposal must commit,
   otherwise ``LivenessViolation``.

Handling a Ready follows the caller's contract of ``petcd.raft.node``, and a crash can cut it
at any point: persist the snapshot, hard state and entries (to the ``MemoryStorage`` and to the
``SimDisk``: only the latter survives a crash), send the messages, install the snapshot into the
state machine, apply the committed entries (calling ``apply_conf_change`` for conf changes),
record the read states, ``advance``. The state machine is written back to the disk now and then
only (like a backend commit), so a restarted member passes an older ``Config.applied`` and
must be handed the missing entries again. Members take snapshots of their state machine and
compact their logs, so leaders must send snapshots to lagging or new members.

Every observation goes to ``SafetyChecker``, which raises ``SafetyViolation`` at the first
broken property; the exception's message carries the seed, the tick and the replay command, and
``Simulation.trace`` the last events.

A member removed from the configuration is shut down as soon as another member applies its
removal (etcd's peers reject a removed member's streams, and it stops); a member that applies
its own removal stops one election timeout later (etcd's ``stopWithDelay``). Removed ids are
never reused. A ``MsgSnap`` leaves with the sender's current state machine, as etcd's server
builds it (``createMergedSnapshotMessage``).

docs/design/raft-sim.md has the full list of checked properties and how to replay a seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from petcd.raft import confchange
from petcd.raft.config import Config
from petcd.raft.errors import ProposalDroppedError
from petcd.raft.node import RawNode, Ready
from petcd.raft.storage import MemoryStorage
from petcd.raft.types import (
    NONE_ID,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Index,
    MemberId,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMetadata,
    Term,
)
from tests.sim.checker import CoreCrash, LivenessViolation, SafetyChecker, SafetyViolation
from tests.sim.disk import DiskError, SimDisk, SmState
from tests.sim.network import NetworkFaults, SimNetwork

REPLAY = ".venv/bin/pytest tests/sim --seed {seed}"


@dataclass(frozen=True, slots=True)
class SimParams:
    """The shape of one run; ``draw`` picks one from the seed."""

    members: int
    chaos_ticks: int
    liveness_ticks: int
    drop_rate: float
    dup_rate: float
    delay_ticks_max: int
    crash_rate: float  # per tick: chance that a live member (the leader half the time) crashes
    ready_crash_rate: float  # per Ready that persists something: chance of crashing inside it
    new_leader_crash_rate: float  # chance a new leader crashes before its first Ready goes out
    restart_rate: float  # per tick and crashed member: chance that it restarts
    partition_rate: float  # per tick: chance of a new partition
    heal_rate: float  # per tick: chance that the partition heals
    propose_rate: float  # per tick: chance of one more proposal (geometric)
    conf_change_rate: float
    read_rate: float
    transfer_rate: float
    tick_skip_rate: float  # per tick and member: chance it misses the tick
    defer_ready_rate: float  # chance a member handles its Ready later in the tick
    sm_save_rate: float  # per applied batch: chance the state machine is written back
    snapshot_every: int  # take a snapshot once this many entries were applied since the last
    compact_keep: int  # entries kept before the snapshot index for slow followers
    max_members: int
    max_size_per_msg_bytes: int
    max_inflight_msgs: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    # Whether a MsgSnap leaves with the sender's current state (etcd's server) or with the
    # stored snapshot, which may predate the recipient's joining (the core must accept it).
    merge_snapshots: bool = True

    @staticmethod
    def draw(rng: random.Random, chaos_ticks: int = 150) -> SimParams:
        members = rng.choice((3, 3, 5))
        calm = rng.random() < 0.15  # some runs have a nearly perfect network
        election_ticks = rng.choice((4, 6, 10))
        return SimParams(
            members=members,
            chaos_ticks=chaos_ticks,
            liveness_ticks=60 * election_ticks,
            election_ticks=election_ticks,
            drop_rate=0.0 if calm else rng.choice((0.0, 0.02, 0.05, 0.1, 0.2)),
            dup_rate=0.0 if calm else rng.choice((0.0, 0.02, 0.1)),
            delay_ticks_max=rng.choice((0, 1, 2, 4)),
            crash_rate=0.0 if calm else rng.choice((0.0, 0.01, 0.03, 0.06)),
            ready_crash_rate=0.0 if calm else rng.choice((0.0, 0.005, 0.02, 0.05)),
            new_leader_crash_rate=0.0 if calm else rng.choice((0.0, 0.1, 0.3)),
            restart_rate=rng.choice((0.05, 0.2, 0.5, 0.9)),
            partition_rate=0.0 if calm else rng.choice((0.0, 0.01, 0.03)),
            heal_rate=rng.choice((0.03, 0.1, 0.3)),
            propose_rate=rng.choice((0.1, 0.3, 0.6)),
            conf_change_rate=rng.choice((0.0, 0.01, 0.03)),
            read_rate=rng.choice((0.0, 0.1, 0.3)),
            transfer_rate=rng.choice((0.0, 0.005, 0.02)),
            tick_skip_rate=rng.choice((0.0, 0.05)),
            defer_ready_rate=rng.choice((0.0, 0.3, 0.7)),
            sm_save_rate=rng.choice((0.2, 0.6, 1.0)),
            snapshot_every=rng.choice((5, 10, 20, 1000)),
            compact_keep=rng.choice((0, 2, 5)),
            max_members=members + rng.choice((0, 1, 2)),
            max_size_per_msg_bytes=rng.choice((1, 64, 1024 * 1024)),
            max_inflight_msgs=rng.choice((1, 4, 256)),
            # Without pre-vote, candidates collide in the same term far more often.
            pre_vote=rng.random() < 0.7,
            check_quorum=rng.random() < 0.8,
        )


class CrashPoint(enum.Enum):
    """Where, inside the handling of one Ready, a member may crash."""

    BEFORE_PERSIST = "before persisting the Ready"
    DURING_PERSIST = "during the write: a torn tail, no hard state"
    AFTER_PERSIST = "after persisting, before sending"
    AFTER_SEND = "after sending, before applying"
    AFTER_APPLY = "after applying, before advance"


class SimNode:
    """One member: its process (``raw``, ``storage``, ``sm``) and its disk (``disk``)."""

    __slots__ = (
        "disk",
        "id",
        "incarnation",
        "raw",
        "ready_pending",
        "removed",
        "shutdown_at",
        "sm",
        "storage",
        "was_leader",
    )

    def __init__(self, member: MemberId, disk: SimDisk) -> None:
        self.id = member
        self.disk = disk
        self.raw: RawNode | None = None
        self.storage: MemoryStorage | None = None
        self.sm = disk.sm
        self.incarnation = 0
        self.ready_pending = False
        self.removed = False
        self.shutdown_at: int | None = None
        self.was_leader = False

    @property
    def alive(self) -> bool:
        return self.raw is not None


@dataclass(frozen=True, slots=True)
class SimReport:
    seed: int
    params: SimParams
    ticks: int
    leaders: int
    committed: int
    applied: int
    reads_answered: int
    crashes: int
    snapshots_sent: int
    conf_changes_applied: int
    messages_sent: int
    liveness_ticks_used: int


class _Stop(Exception):
    """A crash inside the handling of a Ready: abandon it."""


class Simulation:
    """One seeded run; ``raw_node_factory`` lets a test substitute a (deliberately broken) core."""

    def __init__(
        self,
        seed: int,
        params: SimParams | None = None,
        *,
        raw_node_factory: Callable[[Config, MemoryStorage], RawNode] = RawNode,
        trace_len: int = 300,
        local_checks: bool = True,
        mutation: str | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        if params is None:
            # merge_snapshots alternates by seed instead of being drawn, so that adding it left
            # every other draw, and so every recorded seed, unchanged.
            params = dataclasses.replace(SimParams.draw(self.rng), merge_snapshots=seed % 2 == 0)
        self.params = params
        self.raw_node_factory = raw_node_factory
        # The commit rule and "a message goes out only once what it promises is durable" look
        # at one member's Ready; switched off, only the cluster-wide properties remain (the
        # mutation check measures both).
        self.local_checks = local_checks
        self.mutation = mutation  # only named in the replay command of a failure
        p = self.params
        self.net = SimNetwork(self.rng, NetworkFaults(p.drop_rate, p.dup_rate, p.delay_ticks_max))
        self.checker = SafetyChecker()
        self.now = 0
        self.trace: deque[tuple[int, str]] = deque(maxlen=trace_len)
        self.nodes: dict[MemberId, SimNode] = {}
        self.next_id = MemberId(p.members + 1)
        self.removed: set[MemberId] = set()
        self.conf_latest = ConfState()
        self.conf_latest_index = Index(0)
        self.leader_hint = NONE_ID
        self.proposal_seq = 0
        self.read_seq = 0
        self.crashes = 0
        self.snapshots_sent = 0
        self.conf_changes_applied = 0
        self.liveness_ticks_used = 0
        self.faults_on = True
        self.cc_inflight: tuple[int, int] | None = None  # (ConfChange.id, give up at tick)
        self._conf_at: dict[Index, ConfState] = {}
        founders = [MemberId(i) for i in range(1, p.members + 1)]
        for member in founders:
            storage = MemoryStorage.bootstrap(founders)
            hs, cs = storage.initial_state()
            disk = SimDisk(
                hard_state=hs,
                snapshot=storage.snapshot(),
                entries=storage.entries(storage.first_index(), Index(storage.last_index() + 1)),
                sm=SmState(Index(0), b"", cs),
            )
            self.nodes[member] = SimNode(member, disk)
            self._start(self.nodes[member])
            for e in disk.entries[: hs.commit]:
                # The founding entries are committed by construction (identical everywhere).
                self.checker.on_committed(member, e, hs.term)
        self.conf_latest = ConfState(voters=frozenset(founders))

    # -- running ---------------------------------------------------------------------------

    def run(self) -> SimReport:
        try:
            for _ in range(self.params.chaos_ticks):
                self._chaos_tick()
            self._liveness()
        except (SafetyViolation, LivenessViolation, DiskError) as e:
            raise type(e)(self._failure_text(str(e))) from e
        except Exception as e:  # the core broke its own invariant (an assert) or crashed
            raise CoreCrash(self._failure_text(f"unexpected {type(e).__name__}: {e}")) from e
        return SimReport(
            seed=self.seed,
            params=self.params,
            ticks=self.now,
            leaders=len(self.checker.leaders),
            committed=int(self.checker.commit_max),
            applied=self.checker.applied_entries,
            reads_answered=self.checker.read_states_seen,
            crashes=self.crashes,
            snapshots_sent=self.snapshots_sent,
            conf_changes_applied=self.conf_changes_applied,
            messages_sent=self.net.sent,
            liveness_ticks_used=self.liveness_ticks_used,
        )

    def _failure_text(self, what: str) -> str:
        lines = [
            f"seed {self.seed}, tick {self.now}: {what}",
            f"replay: {REPLAY.format(seed=self.seed)}"
            + (f" --sim-mutation {self.mutation}" if self.mutation else "")
            + ("" if self.local_checks else " --sim-end-to-end"),
            f"params: {self.params}",
            "last events:",
        ]
        lines += [f"  t={t:4d} {text}" for t, text in self.trace]
        return "\n".join(lines)

    def _log(self, text: str) -> None:
        self.trace.append((self.now, text))

    def _chaos_tick(self) -> None:
        self.now += 1
        self._shutdowns()
        self._faults()
        self._client_ops()
        self._tick_all()
        self._deliver()

    def _tick_all(self) -> None:
        for node in list(self.nodes.values()):
            if node.raw is None:
                continue
            if self.params.tick_skip_rate and self.rng.random() < self.params.tick_skip_rate:
                continue
            node.raw.tick()
            self._after_input(node)

    def _deliver(self) -> None:
        for _ in range(100):
            self._flush()
            msgs = self.net.due(self.now)
            if not msgs:
                return
            for m in msgs:
                self._step(m)
        self._flush()

    def _step(self, m: Message) -> None:
        node = self.nodes.get(m.to)
        if node is None or node.raw is None:
            return
        node.raw.step(m)
        self._after_input(node)

    def _after_input(self, node: SimNode) -> None:
        if self.params.defer_ready_rate and self.rng.random() < self.params.defer_ready_rate:
            node.ready_pending = True
        else:
            self._handle_ready(node)

    def _flush(self) -> None:
        for node in list(self.nodes.values()):
            if node.ready_pending:
                node.ready_pending = False
                self._handle_ready(node)

    # -- members: start, crash, restart ----------------------------------------------------

    def _start(self, node: SimNode) -> None:
        """Build the process from the disk only (a start, or a restart after a crash)."""
        disk = node.disk
        sm = disk.sm
        if disk.snapshot.metadata.index > sm.applied:
            # The backend is behind the newest snapshot: restore it from the snapshot.
            sm = SmState.from_snapshot(disk.snapshot)
            disk.save_sm(sm)
        storage = MemoryStorage()
        if not disk.snapshot.is_empty:
            storage.apply_snapshot(disk.snapshot)
        storage.append(disk.entries)
        storage.set_hard_state(disk.hard_state)
        storage.set_conf_state(sm.conf_state)
        p = self.params
        config = Config(
            node.id,
            rand=random.Random(self.rng.getrandbits(64)),
            election_ticks=p.election_ticks,
            heartbeat_ticks=p.heartbeat_ticks,
            applied=sm.applied,
            max_size_per_msg_bytes=p.max_size_per_msg_bytes,
            max_inflight_msgs=p.max_inflight_msgs,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
        )
        node.storage = storage
        node.sm = sm
        node.raw = self.raw_node_factory(config, storage)
        node.incarnation += 1
        node.ready_pending = False
        node.was_leader = False

    def _crash(self, node: SimNode, where: str) -> None:
        self._log(f"crash {node.id} ({where})")
        self.crashes += 1
        node.raw = None
        node.storage = None
        node.ready_pending = False
        if self.leader_hint == node.id:
            self.leader_hint = NONE_ID

    def _remove(self, member: MemberId) -> None:
        """``member`` left the configuration: cut it off, and shut it down for good."""
        if member not in self.removed:
            self.removed.add(member)
            self.net.drop_involving(member)
        node = self.nodes.get(member)
        if node is not None and not node.removed:
            self._log(f"shut down removed member {member}")
            node.removed = True
            node.raw = None
            node.storage = None
            node.ready_pending = False

    def _shutdowns(self) -> None:
        for node in list(self.nodes.values()):
            if node.shutdown_at is not None and node.shutdown_at <= self.now:
                node.shutdown_at = None
                self._remove(node.id)

    def _live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    # -- faults ----------------------------------------------------------------------------

    def _faults(self) -> None:
        p = self.params
        rng = self.rng
        if p.crash_rate and rng.random() < p.crash_rate:
            live = self._live()
            leader = self.nodes.get(self.leader_hint)
            if leader is not None and leader.raw is not None and rng.random() < 0.5:
                self._crash(leader, "leader, between ticks")
            elif live:
                self._crash(rng.choice(live), "between ticks")
        for node in self.nodes.values():
            if node.raw is None and node.id not in self.removed and rng.random() < p.restart_rate:
                self._log(f"restart {node.id}")
                self._start(node)
        if self.net.partitioned and rng.random() < p.heal_rate:
            self._log("heal partition")
            self.net.heal()
        elif p.partition_rate and rng.random() < p.partition_rate:
            members = [m for m in self.nodes if m not in self.removed]
            rng.shuffle(members)
            groups: list[list[MemberId]] = []
            if len(members) < 2:
                return
            if self.leader_hint in members and rng.random() < 0.3:
                groups = [[self.leader_hint]]  # isolate the leader
            elif rng.random() < 0.4:
                groups = [[members[0]]]  # isolate one member
            elif rng.random() < 0.3:
                # One way only: members[0] no longer hears members[1] (a broken route, a full
                # receive buffer); the other direction still works.
                self._log(f"one-way partition {members[1]} -/-> {members[0]}")
                self.net.block(members[1], members[0])
                return
            else:
                cut = rng.randint(1, len(members) - 1)
                groups = [members[:cut], members[cut:]]
            self._log(f"partition {groups}")
            self.net.set_partition(groups)

    # -- clients ---------------------------------------------------------------------------

    def _proposal_target(self) -> SimNode | None:
        hint = self.nodes.get(self.leader_hint)
        if hint is not None and hint.raw is not None and self.rng.random() < 0.7:
            return hint
        live = self._live()
        return self.rng.choice(live) if live else None

    def _client_ops(self) -> None:
        p = self.params
        rng = self.rng
        while rng.random() < p.propose_rate:
            node = self._proposal_target()
            if node is None or node.raw is None:
                break
            try:
                if rng.random() < 0.2:
                    datas = [self._new_data() for _ in range(rng.randint(2, 4))]
                    node.raw.propose_many(datas)
                else:
                    node.raw.propose(self._new_data())
            except ProposalDroppedError:
                pass
            self._after_input(node)
        if p.conf_change_rate and rng.random() < p.conf_change_rate:
            self._conf_change()
        if p.read_rate and rng.random() < p.read_rate:
            live = self._live()
            if live:
                node = rng.choice(live)
                self.read_seq += 1
                ctx = b"read-%d" % self.read_seq
                floor = max(
                    [self.checker.commit_max] + [n.raw.status().commit for n in live if n.raw]
                )
                self.checker.on_read_issued(ctx, Index(floor))
                assert node.raw is not None
                with contextlib.suppress(ProposalDroppedError):  # no leader: clients retry
                    node.raw.read_index(ctx)
                self._after_input(node)
        if p.transfer_rate and rng.random() < p.transfer_rate:
            leader = self.nodes.get(self.leader_hint)
            voters = sorted(self.conf_latest.voters - {self.leader_hint})
            if leader is not None and leader.raw is not None and voters:
                target = rng.choice(voters)
                self._log(f"transfer leadership {leader.id} -> {target}")
                leader.raw.transfer_leader(target)
                self._after_input(leader)

    def _new_data(self) -> bytes:
        self.proposal_seq += 1
        return b"v%d" % self.proposal_seq

    def _conf_change(self) -> None:
        """Propose one membership change, never while the previous one may still apply.

        Choosing from a stale configuration could, say, remove two of three voters one after
        the other, leaving a one-voter configuration whose removed leader alone knew the last
        commit: a real hazard of operating etcd, not a bug of the core.
        """
        if self.cc_inflight is not None and self.now < self.cc_inflight[1]:
            return
        rng = self.rng
        cs = self.conf_latest
        choices: list[tuple[ConfChangeType, MemberId]] = []
        members = len(cs.voters) + len(cs.learners)
        if members < self.params.max_members:
            choices.append((ConfChangeType.ADD_NODE, self.next_id))
            choices.append((ConfChangeType.ADD_LEARNER_NODE, self.next_id))
        for learner in sorted(cs.learners):
            choices.append((ConfChangeType.ADD_NODE, learner))  # promote
            choices.append((ConfChangeType.REMOVE_NODE, learner))
        if len(cs.voters) > 2:
            for voter in sorted(cs.voters):
                choices.append((ConfChangeType.REMOVE_NODE, voter))
        node = self._proposal_target()
        if not choices or node is None or node.raw is None:
            return
        kind, member = rng.choice(choices)
        cc = ConfChange(kind, member, b"", rng.getrandbits(32))
        try:
            node.raw.propose_conf_change(cc)
        except ProposalDroppedError:
            self._after_input(node)
            return
        self._log(f"propose conf change {kind.name} {member} at {node.id}")
        self.cc_inflight = (cc.id, self.now + 10 * self.params.election_ticks)
        if member == self.next_id:
            # A new member starts with an empty disk and learns everything from the leader.
            self.next_id = MemberId(self.next_id + 1)
            self.nodes[member] = SimNode(member, SimDisk())
            self._start(self.nodes[member])
        self._after_input(node)

    # -- the Ready loop --------------------------------------------------------------------

    def _crash_point(self, rd: Ready) -> CrashPoint | None:
        """Crashes favour the Readys that persist something: they are the ones that matter.

        A new leader sometimes crashes right after persisting its first Ready (its empty entry)
        and before sending it: that leaves a higher-term entry on one member only, the setup of
        the Raft paper's Figure 8.
        """
        if not self.faults_on:
            return None
        p = self.params
        if (
            p.new_leader_crash_rate
            and rd.soft_state is not None
            and rd.soft_state.role is Role.LEADER
            and self.rng.random() < p.new_leader_crash_rate
        ):
            return CrashPoint.AFTER_PERSIST
        rate = p.ready_crash_rate
        if not rate:
            return None
        if rd.hard_state is None and not rd.entries and rd.snapshot is None:
            rate /= 10
        if self.rng.random() < rate:
            return self.rng.choice(list(CrashPoint))
        return None

    def _handle_ready(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None or not raw.has_ready():
            return
        rd = raw.ready()
        crash = self._crash_point(rd)
        try:
            if crash is CrashPoint.BEFORE_PERSIST:
                raise _Stop
            if crash is CrashPoint.DURING_PERSIST:
                self._persist(node, self._torn(rd))
                raise _Stop
            self._persist(node, rd)
            if crash is CrashPoint.AFTER_PERSIST:
                raise _Stop
            snap_reports = self._send(node, rd.messages)
            if crash is CrashPoint.AFTER_SEND:
                raise _Stop
            removed_self = self._apply(node, rd)
            if crash is CrashPoint.AFTER_APPLY:
                raise _Stop
        except _Stop:
            assert crash is not None
            self._crash(node, crash.value)
            return
        raw.advance(rd)
        if removed_self and node.shutdown_at is None:
            # Like etcd's stopWithDelay: stay up a while so that the others learn the commit
            # (a leader that removed itself may be the only one that knows it committed).
            node.shutdown_at = self.now + self.params.election_ticks
            self._log(f"member {node.id} applied its own removal; stops at t={node.shutdown_at}")
        for to, failed in snap_reports:
            raw.report_snapshot(to, failed)
        self._maybe_snapshot(node)

    def _torn(self, rd: Ready) -> Ready:
        """What a crash in the middle of the write leaves: like etcd's WAL, which writes the
        snapshot marker, then the entries, then the hard state, a prefix of that survives."""
        keep_snapshot = rd.snapshot is not None and self.rng.random() < 0.5
        keep = self.rng.randint(0, len(rd.entries)) if rd.snapshot is None or keep_snapshot else 0
        return dataclasses.replace(
            rd,
            soft_state=None,
            hard_state=None,
            snapshot=rd.snapshot if keep_snapshot else None,
            entries=rd.entries[:keep],
        )

    def _persist(self, node: SimNode, rd: Ready) -> None:
        disk = node.disk
        storage = node.storage
        assert storage is not None
        old_hs = disk.hard_state
        checker = self.checker
        if rd.snapshot is not None and not rd.snapshot.is_empty:
            meta = rd.snapshot.metadata
            if meta.index <= disk.hard_state.commit and meta.index <= disk.last_index:
                ours = disk.term(meta.index)
                if ours is not None and ours != meta.term:
                    raise SafetyViolation(
                        f"member {node.id} got a snapshot at ({meta.index}, term {meta.term}) "
                        f"that contradicts its committed entry of term {ours}"
                    )
            checker.on_committed_term(node.id, meta.index, meta.term)
            self._log(f"member {node.id} installs snapshot at {meta.index} term {meta.term}")
            disk.persist(rd.snapshot, None, ())
            storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            first = rd.entries[0].index
            prev_term = disk.term(Index(first - 1))
            if prev_term is None:
                raise DiskError(
                    f"member {node.id}: Ready.entries start at {first} but its log holds "
                    f"{disk.first_index}..{disk.last_index}"
                )
            checker.on_log_entries(node.id, prev_term, rd.entries, old_hs.commit)
            disk.persist(None, None, rd.entries)
            storage.append(rd.entries)
            if disk.last_index < old_hs.commit:
                raise SafetyViolation(
                    f"member {node.id} truncated its log to {disk.last_index}, below its commit "
                    f"index {old_hs.commit}"
                )
        if rd.hard_state is not None:
            checker.on_hard_state(node.id, old_hs, rd.hard_state, disk.last_index)
            disk.persist(None, rd.hard_state, ())
            storage.set_hard_state(rd.hard_state)
        hs = disk.hard_state
        if (
            self.local_checks
            and node.was_leader
            and rd.soft_state is None
            and hs.term == old_hs.term
            and hs.commit > old_hs.commit
        ):
            # Still the same leader: it moved its commit index by counting replicas, which
            # only an entry of its own term may do (the Raft paper's Figure 8).
            commit_term = disk.term(hs.commit)
            if commit_term != hs.term:
                raise SafetyViolation(
                    f"commit rule (Figure 8): leader {node.id} of term {hs.term} advanced its "
                    f"commit index to {hs.commit}, an entry of term {commit_term}"
                )
        if hs.commit > old_hs.commit:
            lo = max(old_hs.commit + 1, disk.first_index)
            for i in range(lo, hs.commit + 1):
                e = disk.entry(Index(i))
                assert e is not None
                checker.on_committed(node.id, e, hs.term)
        if rd.soft_state is not None:
            is_leader = rd.soft_state.role is Role.LEADER
            if is_leader and not node.was_leader:
                self._on_new_leader(node)
            node.was_leader = is_leader
            if rd.soft_state.leader != NONE_ID:
                self.leader_hint = rd.soft_state.leader

    def _on_new_leader(self, node: SimNode) -> None:
        disk = node.disk
        term = disk.hard_state.term
        self._log(f"member {node.id} is leader of term {term}")
        self.checker.on_leader(node.id, term)
        need = self.checker.must_have_before_term(term)
        self.checker.on_new_leader_log(node.id, term, disk.last_index, {need: disk.term(need)})

    def _send(self, node: SimNode, messages: Sequence[Message]) -> list[tuple[MemberId, bool]]:
        snap_reports: list[tuple[MemberId, bool]] = []
        for m in messages:
            if m.to == node.id or m.to == NONE_ID:
                raise SafetyViolation(f"member {node.id} produced a misaddressed message {m!r}")
            if m.to in self.removed:
                continue
            if self.local_checks and not m.reject:
                self._check_durable(node, m)
            if m.type == MessageType.SNAP and self.params.merge_snapshots:
                m = self._merged_snapshot(node, m)
            delivered = self.net.send(node.id, m, self.now)
            if m.type == MessageType.SNAP:
                self.snapshots_sent += 1
                snap_reports.append((m.to, not delivered))
        return snap_reports

    def _check_durable(self, node: SimNode, m: Message) -> None:
        """A granted vote or an append acknowledgement may leave only once it is on disk.

        A message of a term older than the member's durable term is let through: the member
        can never vote in that term again, and its entries of that term may already have been
        replaced in the same Ready (see docs/design/raft-sim.md, "Open question").
        """
        hs = node.disk.hard_state
        if m.term < hs.term:
            return
        if m.type == MessageType.VOTE_RESP:
            if (hs.term, hs.vote) != (m.term, m.to):
                raise SafetyViolation(
                    f"member {node.id} sent its vote for {m.to} in term {m.term} while its "
                    f"disk holds term {hs.term}, vote {hs.vote}"
                )
        elif m.type == MessageType.APP_RESP and m.index > node.disk.last_index:
            raise SafetyViolation(
                f"member {node.id} acknowledged entries up to {m.index} while its disk holds "
                f"entries up to {node.disk.last_index}"
            )

    def _merged_snapshot(self, node: SimNode, m: Message) -> Message:
        """Send the state machine as of now, as etcd's server does for every ``MsgSnap``.

        The storage's snapshot may predate the recipient's joining; a snapshot whose
        ``ConfState`` lacks the recipient is ignored by it, so etcd
        (``createMergedSnapshotMessage``) always ships the current applied state instead.
        """
        storage = node.storage
        assert storage is not None and m.snapshot is not None
        sm = node.sm
        if sm.applied <= m.snapshot.metadata.index:
            return m
        meta = SnapshotMetadata(sm.applied, storage.term(sm.applied), sm.conf_state)
        return dataclasses.replace(m, snapshot=Snapshot(meta, sm.encode()))

    def _apply(self, node: SimNode, rd: Ready) -> bool:
        """Apply the Ready to the state machine; True if the member applied its own removal."""
        raw = node.raw
        assert raw is not None
        disk = node.disk
        sm = node.sm
        removed_self = False
        if rd.snapshot is not None and not rd.snapshot.is_empty:
            snap_sm = SmState.from_snapshot(rd.snapshot)
            if snap_sm.applied < sm.applied:
                raise SafetyViolation(
                    f"member {node.id} got a snapshot at {snap_sm.applied} behind its applied "
                    f"index {sm.applied}"
                )
            self.checker.on_digest(node.id, snap_sm.applied, snap_sm.digest)
            sm = snap_sm
            disk.save_sm(sm)
        for e in rd.committed_entries:
            if e.index != sm.applied + 1:
                raise SafetyViolation(
                    f"member {node.id} was handed committed entry {e.index} after applying "
                    f"{sm.applied}"
                )
            if e.index > disk.hard_state.commit:
                raise SafetyViolation(
                    f"member {node.id} was handed entry {e.index} to apply, beyond its durable "
                    f"commit index {disk.hard_state.commit}"
                )
            sm = sm.apply(e)
            self.checker.on_apply(node.id, e, sm.digest)
            if e.type == EntryType.CONF_CHANGE:
                cc = confchange.decode(e.data)
                cs = raw.apply_conf_change(cc)
                sm = sm.with_conf_state(cs)
                self._on_conf_applied(node, e, cc, cs)
                if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == node.id:
                    removed_self = True
        node.sm = sm
        if sm.applied > disk.sm.applied and (
            self.params.sm_save_rate >= 1.0 or self.rng.random() < self.params.sm_save_rate
        ):
            disk.save_sm(sm)
        for rs in rd.read_states:
            self.checker.on_read_state(node.id, rs)
        return removed_self

    def _on_conf_applied(self, node: SimNode, e: Entry, cc: ConfChange, cs: ConfState) -> None:
        # A member that joins later replays the founding entries from an empty configuration,
        # where the founders started with all of them: configurations agree from the last
        # founding entry on.
        known = self._conf_at.setdefault(e.index, cs)
        if e.index >= self.params.members and known != cs:
            raise SafetyViolation(
                f"member {node.id} has configuration {cs} after conf change {e.index}; another "
                f"member had {known}"
            )
        if e.index > self.conf_latest_index:
            self.conf_latest_index = e.index
            self.conf_latest = cs
            self.conf_changes_applied += 1
            self._log(f"conf change {e.index} applied: {cc.type.name} {cc.node_id} -> {cs}")
        if self.cc_inflight is not None and self.cc_inflight[0] == cc.id:
            self.cc_inflight = None
        if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id != node.id:
            # Its peers reject a removed member (etcd's transport), which then stops. A member
            # that applies its own removal stops a little later (see _handle_ready).
            self._remove(cc.node_id)

    def _maybe_snapshot(self, node: SimNode) -> None:
        storage = node.storage
        if storage is None:
            return
        sm = node.sm
        snap_index = storage.snapshot().metadata.index
        if sm.applied - snap_index < self.params.snapshot_every or sm.applied <= 0:
            return
        if sm.applied < storage.first_index():
            return
        snap: Snapshot = storage.create_snapshot(sm.applied, sm.conf_state, sm.encode())
        compact_to = Index(sm.applied - self.params.compact_keep)
        if compact_to >= storage.first_index():
            storage.compact(compact_to)
        node.disk.save_sm(sm)
        node.disk.compact(snap)

    # -- liveness --------------------------------------------------------------------------

    def _liveness(self) -> None:
        self._log("faults stop: network heals and turns reliable, every member restarts")
        self.faults_on = False
        self.net.heal()
        # Raft's liveness needs the broadcast time well below the election timeout: messages
        # now arrive within the tick they are sent in.
        self.net.faults = NetworkFaults(0.0, 0.0, 0)
        for node in self.nodes.values():
            if node.raw is None and node.id not in self.removed:
                self._start(node)
        data = b"liveness-%d" % self.seed
        start = self.now
        # Entries already proposed still have to commit first, one round trip per message when
        # max_size_per_msg_bytes and max_inflight_msgs are small: allow for them.
        backlog = max(n.disk.last_index for n in self.nodes.values()) - self.checker.commit_max
        bound = self.params.liveness_ticks + 3 * backlog
        last_proposal = -(10**9)
        while self.now - start < bound:
            self.now += 1
            self._shutdowns()
            self._tick_all()
            self._deliver()
            if data in self.checker.committed_data:
                self.liveness_ticks_used = self.now - start
                return
            leader = self._current_leader()
            if leader is not None and self.now - last_proposal > 3 * self.params.election_ticks:
                assert leader.raw is not None
                try:
                    leader.raw.propose(data)
                    last_proposal = self.now
                except ProposalDroppedError:
                    pass
                self._after_input(leader)
        leader = self._current_leader()
        raise LivenessViolation(
            f"no proposal committed within {bound} ticks after the faults "
            f"stopped (leader: {leader.id if leader else 'none'}, live members "
            f"{[n.id for n in self._live()]}, configuration {self.conf_latest})"
        )

    def _current_leader(self) -> SimNode | None:
        best: SimNode | None = None
        best_term = Term(-1)
        for node in self._live():
            assert node.raw is not None
            st = node.raw.status()
            if st.role is Role.LEADER and st.term > best_term:
                best, best_term = node, st.term
        return best


def run_seed(seed: int) -> SimReport:
    return Simulation(seed).run()
