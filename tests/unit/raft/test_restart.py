# mypy: disable-error-code="arg-type,index,comparison-overlap,union-attr"
"""Restart: a node rebuilt from its storage (hard state, log, snapshot) carries on."""

from __future__ import annotations

from typing import Any

from petcd.raft import HardState, Index, RawNode, Role
from tests.unit.raft.harness import Cluster, Member, log_terms, make_config


def fresh(n: int = 3, **kw: Any) -> Cluster:
    c = Cluster(list(range(1, n + 1)), pre_vote=False, **kw)
    c.stabilize()
    return c


def restart(c: Cluster, id_: int, applied: int) -> Member:
    """Throw away member ``id_``'s in-memory state; rebuild it from its storage."""
    st = c[id_].storage
    c.outbox = [m for m in c.outbox if m.to != id_ and m.from_ != id_]
    return c.add_member(id_, st, applied=applied)


def test_restarted_follower_keeps_term_vote_commit_and_does_not_reapply() -> None:
    c = fresh()
    c.elect(1)
    for d in (b"a", b"b"):
        c.node(1).propose(d)
        c.stabilize()
    old = c.node(2).raft
    hs = HardState(old.term, old.vote, old.raft_log.committed)
    applied = old.raft_log.applied
    m = restart(c, 2, applied)
    r = m.node.raft
    assert HardState(r.term, r.vote, r.raft_log.committed) == hs
    assert r.raft_log.applied == applied and r.role is Role.FOLLOWER
    assert not m.node.has_ready()  # nothing to re-apply
    c.node(1).propose(b"c")
    c.stabilize()
    assert m.applied_data() == [b"c"]
    assert log_terms(c[2]) == log_terms(c[1])


def test_restart_with_applied_behind_commit_redelivers_the_rest() -> None:
    c = fresh()
    c.elect(1)
    for d in (b"a", b"b", b"c"):
        c.node(1).propose(d)
        c.stabilize()
    m = restart(c, 3, applied=5)
    rd = m.node.ready()
    assert [e.data for e in rd.committed_entries] == [b"b", b"c"]
    assert rd.entries == () and rd.messages == ()
    m.node.advance(rd)


def test_restarted_leader_becomes_follower_and_cluster_recovers() -> None:
    c = fresh()
    c.elect(1)
    c.node(1).propose(b"a")
    c.stabilize()
    term = c.node(1).raft.term
    m = restart(c, 1, c.node(1).raft.raft_log.applied)
    assert m.node.raft.role is Role.FOLLOWER and m.node.raft.term == term
    assert m.node.raft.vote == 1  # it must not vote for another candidate in this term
    for _ in range(40):
        c.tick_all()
    ld = c.leader()
    assert ld is not None
    ld.node.propose(b"b")
    c.stabilize()
    assert m.applied_data() == [b"b"]


def test_restart_from_snapshot_and_log() -> None:
    c = fresh()
    c.elect(1)
    for d in (b"a", b"b", b"c"):
        c.node(1).propose(d)
        c.stabilize()
    st = c[2].storage
    r2 = c.node(2).raft
    st.create_snapshot(Index(6), r2.conf_state(), b"snap@6")
    st.compact(Index(6))
    m = restart(c, 2, applied=6)
    r = m.node.raft
    assert r.raft_log.first_index() == 7 and r.raft_log.last_index() == 7
    assert r.raft_log.committed == 7 and r.raft_log.applied == 6
    rd = m.node.ready()
    assert [e.data for e in rd.committed_entries] == [b"c"]
    m.node.advance(rd)
    c.node(1).propose(b"d")
    c.stabilize()
    assert m.applied_data() == [b"d"]


def test_restart_of_single_member_cluster() -> None:
    c = Cluster([1])
    c.stabilize()
    c.elect(1)
    c.node(1).propose(b"a")
    c.stabilize()
    m = restart(c, 1, c.node(1).raft.raft_log.applied)
    assert m.node.raft.role is Role.FOLLOWER
    for _ in range(25):
        c.tick_all()
    assert m.node.raft.role is Role.LEADER
    m.node.propose(b"b")
    c.stabilize()
    assert m.applied_data() == [b"b"]
    st = c[1].storage
    assert [e.data for e in st.entries(Index(2), Index(st.last_index() + 1)) if e.data] == [
        b"a",
        b"b",
    ]


def test_new_raw_node_on_bootstrapped_storage_hands_out_founding_conf_changes() -> None:
    from petcd.raft import EntryType, MemberId, MemoryStorage, confchange
    from tests.unit.raft.harness import make_config

    st = MemoryStorage.bootstrap([MemberId(3), MemberId(1), MemberId(2)], {MemberId(2): b"n2"})
    n = RawNode(make_config(1), st)
    assert n.raft.voters == {1, 2, 3}
    rd = n.ready()
    assert rd.hard_state is None  # the bootstrap hard state is already durable
    ccs = [confchange.decode(e.data) for e in rd.committed_entries]
    assert all(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)
    assert [(cc.node_id, cc.context) for cc in ccs] == [(1, b""), (2, b"n2"), (3, b"")]
    n.advance(rd)
    assert n.status().applied == 3


def test_restart_with_applied_below_snapshot_counts_snapshot_as_applied() -> None:
    c = fresh()
    c.elect(1)
    for d in (b"a", b"b"):
        c.node(1).propose(d)
        c.stabilize()
    st = c[2].storage
    st.create_snapshot(Index(5), c.node(2).raft.conf_state(), b"s")
    st.compact(Index(5))
    m = restart(c, 2, applied=0)
    assert m.node.raft.raft_log.applied == 5
    rd = m.node.ready()
    assert [e.data for e in rd.committed_entries] == [b"b"]


def test_committed_entries_are_paged_by_max_committed_size_per_ready() -> None:
    c = fresh()
    c.elect(1)
    for d in (b"aaaa", b"bbbb", b"cccc"):
        c.node(1).propose(d)
        c.stabilize()
    st = c[3].storage
    c.outbox = [m for m in c.outbox if m.to != 3 and m.from_ != 3]
    m = Member(
        RawNode(make_config(3, max_committed_size_per_ready_bytes=8), st),
        st,
    )
    pages = []
    while m.node.has_ready():
        rd = m.node.ready()
        pages.append([e.data for e in rd.committed_entries if e.data])
        m.node.advance(rd)
    # 3 founding conf changes (small), the empty entry, then 4-byte payloads, 8 bytes a page.
    assert [d for p in pages for d in p][-3:] == [b"aaaa", b"bbbb", b"cccc"]
    assert len(pages) > 1 and all(sum(map(len, p)) <= 8 or len(p) == 1 for p in pages)
    assert m.node.status().applied == c.node(1).raft.raft_log.committed
