# mypy: disable-error-code="arg-type,index,comparison-overlap"
"""ReadIndex: heartbeat-confirmed reads, queued until the first commit of the term."""

from __future__ import annotations

from typing import Any

from petcd.raft import Message, ReadState, Role, Term
from tests.unit.raft.harness import Cluster, M


def fresh(n: int = 3, **kw: Any) -> Cluster:
    c = Cluster(list(range(1, n + 1)), **kw)
    c.stabilize()
    return c


def test_leader_confirms_with_heartbeat_round_before_answering() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    commit = c.node(1).raft.raft_log.committed
    c.node(1).read_index(b"ctx1")
    out = c.take(1)
    assert [(m.type, m.to, m.context, m.commit) for m in out] == [
        (M.HEARTBEAT, 2, b"ctx1", commit),
        (M.HEARTBEAT, 3, b"ctx1", commit),
    ]
    assert c[1].read_states == []
    c.deliver(out[:1])
    resp = c.take(2)
    assert [(m.type, m.context) for m in resp] == [(M.HEARTBEAT_RESP, b"ctx1")]
    c.deliver(resp)
    rd = c.process(1)
    assert rd is not None
    assert rd.read_states == (ReadState(commit, b"ctx1"),)
    # The late answer from 3 releases nothing more.
    c.deliver(out[1:])
    c.deliver(c.take(3))
    assert c.process(1) is None or c[1].readies[-1].read_states == ()


def test_read_not_answered_without_quorum() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    c.isolate(1)
    c.node(1).read_index(b"r")
    c.stabilize()
    assert c[1].read_states == []


def test_later_heartbeat_ack_releases_all_earlier_reads() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    c.isolate(1)
    c.node(1).read_index(b"a")
    c.node(1).read_index(b"b")
    c.stabilize()
    c.heal()
    c.outbox.clear()
    c.node(1).raft.bcast_heartbeat()  # carries the latest context, "b"
    c.stabilize()
    commit = c.node(1).raft.raft_log.committed
    assert c[1].read_states == [ReadState(commit, b"a"), ReadState(commit, b"b")]


def test_new_leader_queues_reads_until_entry_of_its_term_commits() -> None:
    c = fresh(pre_vote=False)
    c.node(1).campaign()
    c.deliver(c.take(1))
    c.deliver(c.take(2) + c.take(3))
    r1 = c.node(1).raft
    assert r1.role is Role.LEADER and r1.raft_log.committed == 3
    c.node(1).read_index(b"early")
    apps = c.take(1)
    assert all(m.type == M.APP for m in apps)  # no heartbeat yet: the read waits
    assert r1.pending_read_index_messages
    c.deliver(apps)
    c.deliver(c.take(2) + c.take(3))
    assert r1.raft_log.committed == 4
    out = c.take(1)
    hbs = [m for m in out if m.type == M.HEARTBEAT]
    assert [(m.to, m.context) for m in hbs] == [(2, b"early"), (3, b"early")]
    c.deliver(out)
    c.stabilize()
    assert c[1].read_states == [ReadState(4, b"early")]


def test_single_voter_answers_at_once() -> None:
    c = fresh(1)
    c.elect(1)
    c.node(1).read_index(b"x")
    rd = c.process(1)
    commit = c.node(1).raft.raft_log.committed
    assert rd is not None and rd.read_states == (ReadState(commit, b"x"),)
    assert rd.messages == ()


def test_follower_read_index_is_forwarded_and_answered() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    c.node(2).read_index(b"f")
    (fwd,) = c.take(2)
    assert (fwd.type, fwd.to, fwd.from_, fwd.term, fwd.entries[0].data) == (
        M.READ_INDEX,
        1,
        2,
        0,
        b"f",
    )
    c.deliver([fwd])
    c.stabilize()
    commit = c.node(1).raft.raft_log.committed
    resp = [m for rd in c[1].readies for m in rd.messages if m.type == M.READ_INDEX_RESP]
    assert [(m.to, m.index, m.entries[0].data) for m in resp] == [(2, commit, b"f")]
    assert c[2].read_states == [ReadState(commit, b"f")]
    assert c[1].read_states == []


def test_read_index_without_leader_is_dropped() -> None:
    import pytest

    from petcd.raft import ProposalDroppedError

    c = fresh(pre_vote=False)
    with pytest.raises(ProposalDroppedError):
        c.node(2).read_index(b"x")


def test_heartbeat_response_from_stale_term_does_not_ack_reads() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    r1 = c.node(1).raft
    c.node(1).read_index(b"q")
    c.take(1)
    c.outbox.clear()
    for frm in (2, 3):
        c.node(1).step(Message(M.HEARTBEAT_RESP, 1, frm, Term(r1.term - 1), context=b"q"))
    c.process(1)
    assert c[1].read_states == []
