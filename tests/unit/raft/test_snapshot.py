# mypy: disable-error-code="arg-type,index,comparison-overlap,union-attr"
"""Snapshots: compaction, MsgSnap to a lagging follower, reporting, temporary unavailability."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.raft import (
    ConfChangeType,
    Index,
    MemoryStorage,
    Message,
    ProgressState,
    Snapshot,
    SnapshotTemporarilyUnavailableError,
)
from tests.unit.raft.harness import Cluster, M, log_terms


def lagging(**kw: Any) -> Cluster:
    """Leader 1 has committed entries that member 3 missed, then compacted its log."""
    c = Cluster([1, 2, 3], pre_vote=False, **kw)
    c.stabilize()
    c.elect(1)
    c.isolate(3)
    for i in range(5):
        c.node(1).propose(b"v%d" % i)
        c.stabilize()
    r1 = c.node(1).raft
    applied = r1.raft_log.applied
    st = c[1].storage
    st.create_snapshot(applied, r1.conf_state(), b"state@%d" % applied)
    st.compact(applied)
    c.heal()
    return c


def until_snapshot(c: Cluster) -> list[Message]:
    """Exchange messages between leader 1 and member 3 until the leader sends a snapshot;
    return the leader's messages of that round (the snapshot not delivered)."""
    c.node(1).tick()
    for _ in range(10):
        out = c.take(1)
        if any(m.type == M.SNAP for m in out):
            return out
        c.deliver(out)
        c.deliver(c.take(2) + c.take(3))
    raise AssertionError("no snapshot sent")


def test_lagging_follower_gets_snapshot_then_log() -> None:
    c = lagging()
    r1 = c.node(1).raft
    snap_index = c[1].storage.snapshot().metadata.index
    assert snap_index == 9
    # A heartbeat answer shows member 3 is alive and behind: its next entry is compacted.
    out = until_snapshot(c)
    snaps = [m for m in out if m.type == M.SNAP]
    assert [(m.to, m.snapshot.metadata.index, m.snapshot.data) for m in snaps] == [
        (3, 9, b"state@9")
    ]
    assert r1.prs[3].state is ProgressState.SNAPSHOT and r1.prs[3].pending_snapshot == 9
    # Nothing else is sent to a member receiving a snapshot.
    c.node(1).propose(b"after")
    assert [m for m in c.take(1) if m.to == 3] == []
    c.deliver(snaps)
    rd = c.process(3)
    assert rd is not None and rd.snapshot is not None and rd.snapshot.metadata.index == 9
    assert rd.must_sync
    assert [(m.type, m.index) for m in rd.messages] == [(M.APP_RESP, 9)]
    c.outbox = [m for m in c.outbox if m.from_ != 3]
    c.deliver(list(rd.messages))
    assert r1.prs[3].state is ProgressState.REPLICATE
    c.stabilize()
    assert c[3].applied_data() == [b"after"]
    assert log_terms(c[3]) == log_terms(c[1])
    assert c.node(3).raft.raft_log.applied == r1.raft_log.applied


def test_report_snapshot_failure_moves_to_probe_and_pauses() -> None:
    c = lagging()
    r1 = c.node(1).raft
    until_snapshot(c)  # the snapshot is "lost"
    assert r1.prs[3].state is ProgressState.SNAPSHOT
    c.node(1).report_snapshot(3, failed=True)
    pr = r1.prs[3]
    assert pr.state is ProgressState.PROBE and pr.probe_sent and pr.pending_snapshot == 0
    assert c.take(1) == []
    # The next heartbeat answer unpauses it and the leader sends the snapshot again.
    c.tick_all(1)
    assert c[3].storage.snapshot().metadata.index == 9


def test_report_snapshot_success_moves_to_probe_past_snapshot() -> None:
    c = lagging()
    r1 = c.node(1).raft
    until_snapshot(c)
    c.node(1).report_snapshot(3, failed=False)
    pr = r1.prs[3]
    assert pr.state is ProgressState.PROBE and pr.next == 10 and pr.probe_sent


def test_report_snapshot_when_not_sending_one_is_ignored() -> None:
    c = lagging()
    r1 = c.node(1).raft
    before = r1.prs[2].state
    c.node(1).report_snapshot(2, failed=True)
    assert r1.prs[2].state is before


class FlakySnapshotStorage(MemoryStorage):
    __slots__ = ("unavailable",)

    def __init__(self) -> None:
        super().__init__()
        self.unavailable = True

    def snapshot(self) -> Snapshot:
        if self.unavailable:
            raise SnapshotTemporarilyUnavailableError("being built")
        return super().snapshot()


def test_snapshot_temporarily_unavailable_is_retried_later() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    flaky = FlakySnapshotStorage()
    src = c[1].storage
    flaky.append(src.entries(Index(1), Index(src.last_index() + 1)))
    flaky.set_hard_state(src.hard_state)
    flaky.set_conf_state(src.initial_state()[1])
    c.add_member(1, flaky)
    c.stabilize()
    c.elect(1)
    c.isolate(3)
    for i in range(3):
        c.node(1).propose(b"v%d" % i)
        c.stabilize()
    r1 = c.node(1).raft
    a = r1.raft_log.applied
    flaky.create_snapshot(a, r1.conf_state(), b"s")
    flaky.compact(a)
    c.heal()
    c.tick_all(3)
    assert not any(m.type == M.SNAP for rd in c[1].readies for m in rd.messages)
    assert r1.prs[3].state is ProgressState.PROBE
    assert r1.prs[3].match < a
    flaky.unavailable = False
    c.tick_all(1)
    assert c[3].storage.snapshot().metadata.index == a
    c.stabilize()
    assert log_terms(c[3]) == log_terms(c[1])


def test_follower_ignores_snapshot_older_than_its_commit() -> None:
    c = lagging()
    r2 = c.node(2).raft
    old = c[1].storage.snapshot()
    assert old.metadata.index <= r2.raft_log.committed
    c.node(2).step(Message(M.SNAP, 2, 1, r2.term, snapshot=old))
    rd = c.process(2)
    assert rd is not None and rd.snapshot is None
    assert [(m.type, m.index) for m in rd.messages] == [(M.APP_RESP, r2.raft_log.committed)]


def test_snapshot_matching_our_log_only_fast_forwards_commit() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    c.stabilize()
    c.elect(1)
    c.node(1).propose(b"a")
    c.deliver(c.take(1))
    r2 = c.node(2).raft
    assert r2.raft_log.last_index() == 5 and r2.raft_log.committed == 4
    r1 = c.node(1).raft
    c.take(2)
    st = c[1].storage
    c.process(1)
    r1.raft_log.committed = Index(5)  # as if committed by 3's ack
    snap = st.create_snapshot(Index(5), r1.conf_state(), b"")
    c.node(2).step(Message(M.SNAP, 2, 1, r1.term, snapshot=snap))
    assert r2.raft_log.committed == 5
    rd = c.process(2)
    assert rd is not None and rd.snapshot is None


def test_new_member_accepts_snapshot_taken_before_it_joined() -> None:
    # The leader's snapshot predates member 4's addition, so its configuration lacks 4. The
    # snapshot is still the committed state at its index; 4 installs it and then learns of
    # its own addition from the log after it.
    c = Cluster([1, 2, 3], pre_vote=False)
    c.stabilize()
    c.elect(1)
    c.node(1).propose(b"a")
    c.stabilize()
    r1 = c.node(1).raft
    applied = r1.raft_log.applied
    c[1].storage.create_snapshot(applied, r1.conf_state(), b"state")
    c[1].storage.compact(applied)
    c.add_conf(1, ConfChangeType.ADD_NODE, 4)
    c.add_member(4, MemoryStorage())
    c.node(1).propose(b"b")
    for _ in range(5):
        c.tick_all()
    r4 = c.node(4).raft
    assert c[4].storage.snapshot().metadata.index == applied
    assert r4.voters == {1, 2, 3, 4} and r4.promotable()
    assert c[4].applied_data() == [b"b"]
    assert log_terms(c[4]) == log_terms(c[1])


def test_memory_storage_compaction_errors() -> None:
    from petcd.raft import CompactedError
    from petcd.raft.errors import SnapshotOutOfDateError

    c = lagging()
    st = c[1].storage
    with pytest.raises(CompactedError):
        st.compact(Index(3))
    with pytest.raises(CompactedError):
        st.entries(Index(9), Index(10))
    with pytest.raises(SnapshotOutOfDateError):
        st.create_snapshot(Index(9), c.node(1).raft.conf_state(), b"")
