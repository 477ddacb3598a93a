# mypy: disable-error-code="arg-type,index,comparison-overlap,union-attr"
"""The Ready/advance protocol: what each Ready holds, must_sync, soft state, Status."""

from __future__ import annotations

import pytest

from petcd.raft import ProgressState, Role, SoftState
from tests.unit.raft.harness import Cluster


def test_soft_state_only_when_changed_and_commit_only_change_needs_no_sync() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    c.stabilize()
    c.node(1).campaign()
    rd = c.process(1)
    assert rd.soft_state == SoftState(0, Role.CANDIDATE)
    c.deliver()
    c.process_all()
    c.deliver()
    rd = c.process(1)
    assert rd.soft_state == SoftState(1, Role.LEADER)
    c.stabilize()
    # Follower 2 learns a new commit index only: a hard state without must_sync.
    c.node(1).propose(b"x")
    c.deliver(c.take(1))
    c.deliver(c.take(2) + c.take(3))
    c.deliver(c.take(1))
    rd = c.process(2)
    assert rd.soft_state is None
    assert rd.hard_state is not None and rd.entries == () and not rd.must_sync
    assert [e.data for e in rd.committed_entries] == [b"x"]


def test_ready_twice_without_advance_is_a_bug() -> None:
    c = Cluster([1])
    n = c.node(1)
    n.ready()
    with pytest.raises(AssertionError):
        n.ready()


def test_has_ready_false_when_idle_and_entries_handed_out_once() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    c.stabilize()
    c.elect(1)
    assert not c.node(2).has_ready()
    c.node(1).propose(b"y")
    rd = c.process(1)
    assert [e.data for e in rd.entries] == [b"y"]
    c.node(1).propose(b"z")
    rd = c.process(1)
    assert [e.data for e in rd.entries] == [b"z"]


def test_status_reports_progress_on_leader_only() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    c.stabilize()
    c.elect(1)
    c.node(1).propose(b"a")
    c.stabilize()
    st = c.node(1).status()
    assert (st.id, st.role, st.lead, st.commit, st.applied) == (1, Role.LEADER, 1, 5, 5)
    assert st.hard_state.term == st.term == 2
    assert {i: (p.match, p.next, p.state) for i, p in st.progress.items()} == {
        1: (5, 6, ProgressState.REPLICATE),
        2: (5, 6, ProgressState.REPLICATE),
        3: (5, 6, ProgressState.REPLICATE),
    }
    assert c.node(2).status().progress == {}
    assert c.node(2).status().conf_state.voters == {1, 2, 3}
