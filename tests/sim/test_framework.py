"""Tests of the simulator itself: the network, the disk, the checker, determinism, liveness.

A simulator that cannot see a violation proves nothing, so every property the checker claims is
fed a hand-made counterexample here and must raise.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from petcd.raft.config import Config
from petcd.raft.node import RawNode
from petcd.raft.storage import MemoryStorage
from petcd.raft.types import (
    Entry,
    EntryType,
    HardState,
    Index,
    MemberId,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    Term,
)
from tests.sim.checker import LivenessViolation, SafetyChecker, SafetyViolation
from tests.sim.cluster import Simulation
from tests.sim.disk import DiskError, SimDisk, SmState
from tests.sim.network import NetworkFaults, SimNetwork

M1, M2, M3 = MemberId(1), MemberId(2), MemberId(3)


def _msg(frm: MemberId, to: MemberId, index: int = 0) -> Message:
    return Message(MessageType.APP, to=to, from_=frm, index=Index(index))


def _e(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(Term(term), Index(index), EntryType.NORMAL, data)


# -- network -------------------------------------------------------------------------------


def test_reliable_network_delivers_everything_once_within_the_delay_bound() -> None:
    net = SimNetwork(random.Random(1), NetworkFaults(delay_ticks_max=3))
    for i in range(200):
        assert net.send(M1, _msg(M1, M2, i), now_tick=0)
    got: list[int] = []
    for tick in range(4):
        got += [m.index for m in net.due(tick)]
    assert sorted(got) == list(range(200))
    assert got != sorted(got), "a delay of up to 3 ticks reorders 200 messages"
    assert net.in_flight == 0


def test_drops_and_duplicates_follow_their_rates() -> None:
    net = SimNetwork(random.Random(2), NetworkFaults(drop_rate=0.3, dup_rate=0.2))
    for i in range(2000):
        net.send(M1, _msg(M1, M2, i), now_tick=0)
    counts = Counter(m.index for m in net.due(0))
    assert 1200 < len(counts) < 1600  # about 70% arrive
    assert 150 < sum(1 for c in counts.values() if c == 2) < 400  # about 20% of them twice
    assert max(counts.values()) == 2


def test_partition_cuts_new_and_in_flight_messages_and_heals() -> None:
    net = SimNetwork(random.Random(3), NetworkFaults(delay_ticks_max=2))
    assert net.send(M1, _msg(M1, M2), now_tick=0)
    net.set_partition([[M1], [M2, M3]])
    assert not net.send(M1, _msg(M1, M3), now_tick=0)
    assert net.send(M2, _msg(M2, M3), now_tick=0)
    arrived = net.due(5)
    assert [(m.from_, m.to) for m in arrived] == [(M2, M3)], "1->2 was cut in flight"
    net.heal()
    assert net.send(M1, _msg(M1, M3), now_tick=5)
    assert len(net.due(7)) == 1


def test_partition_uses_the_sender_not_message_from() -> None:
    # A follower forwards a proposal with the proposer's id in from_.
    net = SimNetwork(random.Random(4))
    net.set_partition([[M1], [M2, M3]])
    forwarded = Message(MessageType.PROP, to=M1, from_=M1)
    assert not net.send(M2, forwarded, now_tick=0)


# -- disk ----------------------------------------------------------------------------------


def test_disk_truncates_a_conflicting_tail_and_refuses_holes() -> None:
    disk = SimDisk()
    disk.persist(None, HardState(Term(1)), [_e(1, 1), _e(2, 1), _e(3, 1)])
    disk.persist(None, None, [_e(2, 2)])
    assert [(e.index, e.term) for e in disk.entries] == [(1, 1), (2, 2)]
    with pytest.raises(DiskError):
        disk.persist(None, None, [_e(4, 2)])
    with pytest.raises(DiskError):
        disk.persist(None, None, [_e(3, 2), _e(5, 2)])


def test_disk_snapshot_replaces_the_log_and_compaction_releases_the_prefix() -> None:
    disk = SimDisk()
    disk.persist(None, None, [_e(i, 1) for i in range(1, 6)])
    sm = SmState()
    for e in disk.entries[:4]:
        sm = sm.apply(e)
    snap = Snapshot(SnapshotMetadata(Index(4), Term(1)), sm.encode())
    disk.compact(snap)
    assert (disk.first_index, disk.last_index) == (5, 5)
    assert disk.term(Index(4)) == 1 and disk.term(Index(3)) is None
    assert SmState.from_snapshot(disk.snapshot) == sm
    received = Snapshot(SnapshotMetadata(Index(9), Term(3)), SmState(Index(9), b"x").encode())
    disk.persist(received, None, [_e(10, 3)])
    assert (disk.first_index, disk.last_index) == (10, 10)


def test_state_machine_digest_depends_on_every_applied_entry() -> None:
    a = SmState().apply(_e(1, 1, b"x")).apply(_e(2, 1, b"y"))
    b = SmState().apply(_e(1, 1, b"x")).apply(_e(2, 1, b"z"))
    c = SmState().apply(_e(1, 2, b"x")).apply(_e(2, 2, b"y"))
    assert len({a.digest, b.digest, c.digest}) == 3
    with pytest.raises(AssertionError):
        a.apply(_e(4, 1))  # a gap


# -- checker: every property fails on a counterexample ---------------------------------------


def test_checker_two_leaders_in_one_term() -> None:
    c = SafetyChecker()
    c.on_leader(M1, Term(2))
    c.on_leader(M1, Term(2))
    c.on_leader(M2, Term(3))
    with pytest.raises(SafetyViolation, match="election safety"):
        c.on_leader(M2, Term(2))


def test_checker_two_votes_in_one_term_and_term_going_back() -> None:
    c = SafetyChecker()
    c.on_hard_state(M1, HardState(Term(2)), HardState(Term(2), M2), Index(0))
    with pytest.raises(SafetyViolation, match="voted for 2 then for 3"):
        c.on_hard_state(M1, HardState(Term(2), M2), HardState(Term(2), M3), Index(0))
    with pytest.raises(SafetyViolation, match="term went back"):
        c.on_hard_state(M1, HardState(Term(3)), HardState(Term(2)), Index(0))
    with pytest.raises(SafetyViolation, match="commit index went back"):
        c.on_hard_state(M1, HardState(Term(3), commit=Index(5)), HardState(Term(3)), Index(9))
    with pytest.raises(SafetyViolation, match="beyond its last log index"):
        c.on_hard_state(M1, HardState(Term(3)), HardState(Term(3), commit=Index(5)), Index(4))


def test_checker_log_matching() -> None:
    c = SafetyChecker()
    c.on_log_entries(M1, Term(0), [_e(1, 1, b"a"), _e(2, 1, b"b")], Index(0))
    c.on_log_entries(M2, Term(1), [_e(2, 1, b"b")], Index(0))
    with pytest.raises(SafetyViolation, match="log matching"):
        c.on_log_entries(M3, Term(1), [_e(2, 1, b"other")], Index(0))
    with pytest.raises(SafetyViolation, match="log matching"):
        # Same (index, term), different predecessor: the logs differ before it.
        c.on_log_entries(M3, Term(0), [_e(2, 1, b"b")], Index(0))
    with pytest.raises(SafetyViolation, match="below the term"):
        c.on_log_entries(M3, Term(3), [_e(5, 2)], Index(0))


def test_checker_committed_entry_never_changes() -> None:
    c = SafetyChecker()
    c.on_committed(M1, _e(1, 1, b"a"), Term(1))
    c.on_committed(M2, _e(1, 1, b"a"), Term(2))
    with pytest.raises(SafetyViolation, match="state machine safety"):
        c.on_committed(M3, _e(1, 2, b"b"), Term(2))
    with pytest.raises(SafetyViolation, match="overwrote committed entry 1"):
        c.on_log_entries(M2, Term(0), [_e(1, 2, b"b")], Index(1))
    with pytest.raises(SafetyViolation, match="snapshot at index 1 term 3"):
        c.on_committed_term(M2, Index(1), Term(3))


def test_checker_leader_completeness() -> None:
    c = SafetyChecker()
    c.on_committed(M1, _e(1, 1), Term(1))
    c.on_committed(M1, _e(2, 2), Term(2))
    c.on_committed(M1, _e(3, 3), Term(3))  # committed in term 3: a leader of 3 may lack it
    assert c.must_have_before_term(Term(3)) == 2
    c.on_new_leader_log(M2, Term(3), Index(2), {Index(2): Term(2)})
    with pytest.raises(SafetyViolation, match="leader completeness"):
        c.on_new_leader_log(M2, Term(4), Index(2), {Index(3): None})
    with pytest.raises(SafetyViolation, match="leader completeness"):
        c.on_new_leader_log(M2, Term(4), Index(5), {Index(3): Term(2)})


def test_checker_applied_sequences() -> None:
    c = SafetyChecker()
    with pytest.raises(SafetyViolation, match="no member has persisted as committed"):
        c.on_apply(M1, _e(1, 1, b"a"), b"d1")
    c.on_committed(M1, _e(1, 1, b"a"), Term(1))
    c.on_apply(M1, _e(1, 1, b"a"), b"d1")
    with pytest.raises(SafetyViolation, match="applied a different sequence"):
        c.on_apply(M2, _e(1, 1, b"a"), b"d2")
    with pytest.raises(SafetyViolation, match="the committed entry is"):
        c.on_apply(M2, _e(1, 1, b"z"), b"d1")


def test_checker_stale_read_index() -> None:
    c = SafetyChecker()
    c.on_read_issued(b"r1", Index(7))
    c.on_read_state(M1, ReadState(Index(7), b"r1"))
    c.on_read_state(M2, ReadState(Index(9), b"r1"))
    with pytest.raises(SafetyViolation, match="linearizable read"):
        c.on_read_state(M1, ReadState(Index(6), b"r1"))
    with pytest.raises(SafetyViolation, match="unknown request"):
        c.on_read_state(M1, ReadState(Index(6), b"never-asked"))


# -- the whole simulator ---------------------------------------------------------------------


def test_a_seed_replays_exactly() -> None:
    a, b = Simulation(11), Simulation(11)
    ra, rb = a.run(), b.run()
    assert ra == rb
    assert list(a.trace) == list(b.trace)
    assert a.checker.digests == b.checker.digests
    assert Simulation(12).run() != ra


def test_a_seed_replays_exactly_in_another_process() -> None:
    # Hash randomisation differs between processes: iteration orders must not depend on it.
    code = (
        "from tests.sim.cluster import Simulation; s = Simulation(5); r = s.run(); "
        "print(r, sorted(s.checker.digests.items()))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outs = set()
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, check=True
        )
        outs.add(out.stdout)
    assert len(outs) == 1


def test_runs_exercise_what_they_claim() -> None:
    """Over a few dozen seeds, every kind of event of the simulation happens."""
    totals: Counter[str] = Counter()
    for seed in range(60):
        r = Simulation(seed).run()
        totals.update(
            {
                "leaders": r.leaders,
                "applied": r.applied,
                "reads": r.reads_answered,
                "crashes": r.crashes,
                "snapshots": r.snapshots_sent,
                "conf changes": r.conf_changes_applied,
            }
        )
    assert all(totals[k] > 0 for k in totals), totals
    assert len(totals) == 6


class _NeverCampaigns(RawNode):
    """A core whose clock never moves: nobody ever campaigns."""

    def tick(self) -> None:
        pass


def test_liveness_violation_when_no_leader_is_ever_elected() -> None:
    def factory(config: Config, storage: MemoryStorage) -> RawNode:
        return _NeverCampaigns(config, storage)

    with pytest.raises(LivenessViolation, match="no proposal committed") as info:
        Simulation(3, raw_node_factory=factory).run()
    assert "pytest tests/sim --seed 3" in str(info.value)


def test_failure_message_names_the_seed_and_the_replay_command() -> None:
    class _TwoLeaders(RawNode):
        def tick(self) -> None:
            super().tick()
            r = self.raft
            if r.id in (1, 2) and r.term == 1 and r.role.name == "FOLLOWER":
                r.become_candidate()
                r.become_leader()

    def factory(config: Config, storage: MemoryStorage) -> RawNode:
        return _TwoLeaders(config, storage)

    with pytest.raises(SafetyViolation) as info:
        Simulation(9, raw_node_factory=factory).run()
    text = str(info.value)
    assert text.startswith("seed 9, tick ")
    assert "replay: .venv/bin/pytest tests/sim --seed 9" in text


def test_one_way_partition_cuts_one_direction_only() -> None:
    net = SimNetwork(random.Random(6))
    net.block(M1, M2)
    assert not net.send(M1, _msg(M1, M2), now_tick=0)
    assert net.send(M2, _msg(M2, M1), now_tick=0)
    assert net.send(M1, _msg(M1, M3), now_tick=0)
    assert net.partitioned
    net.heal()
    assert net.send(M1, _msg(M1, M2), now_tick=0)
