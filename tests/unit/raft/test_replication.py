# mypy: disable-error-code="arg-type,index,comparison-overlap"
"""Log replication: progress states, conflict back-off, flow control, commit rule."""

from __future__ import annotations

from typing import Any

from petcd.raft import Index, Message, ProgressState, Role, Term
from tests.unit.raft.harness import Cluster, M, custom, log_terms


def fresh(n: int = 3, **kw: Any) -> Cluster:
    c = Cluster(list(range(1, n + 1)), **kw)
    c.stabilize()
    return c


def test_new_leader_probes_then_replicates() -> None:
    c = fresh(pre_vote=False)
    c.node(1).campaign()
    c.deliver(c.take(1))
    c.deliver(c.take(2) + c.take(3))
    r1 = c.node(1).raft
    assert r1.role is Role.LEADER
    assert r1.prs[2].state is ProgressState.PROBE
    apps = c.take(1)
    # The probe carries the new leader's empty entry (index 4, term 2) after (3, term 1).
    assert [
        (m.type, m.to, m.index, m.log_term, [(e.index, e.term) for e in m.entries], m.commit)
        for m in apps
    ] == [
        (M.APP, 2, 3, 1, [(4, 2)], 3),
        (M.APP, 3, 3, 1, [(4, 2)], 3),
    ]
    assert r1.prs[2].probe_sent
    # While the probe is unanswered, a proposal sends nothing more to that follower.
    c.node(1).propose(b"p")
    assert c.take(1) == []
    c.deliver(apps[:1])
    resp = c.take(2)
    assert [(m.type, m.index, m.reject) for m in resp] == [(M.APP_RESP, 4, False)]
    c.deliver(resp)
    assert r1.prs[2].state is ProgressState.REPLICATE and r1.prs[2].match == 4
    assert r1.raft_log.committed == 4  # entry 4 is on 1 and 2: a quorum, and of this term
    out = c.take(1)
    assert [(m.type, m.to, m.index, [e.data for e in m.entries], m.commit) for m in out] == [
        (M.APP, 2, 4, [b"p"], 4)
    ]


def test_follower_with_conflicting_longer_log_converges_with_one_rejection() -> None:
    c = custom(
        {
            1: [1, 1, 4, 4, 5, 5],
            2: [1, 1, 2, 2, 2, 3, 3, 3, 3],
            3: [1, 1, 4, 4, 5, 5],
        },
        pre_vote=False,
    )
    c.node(1).campaign()
    c.stabilize()
    r1 = c.node(1).raft
    assert r1.role is Role.LEADER and r1.term == 6
    rejects = [m for rd in c[2].readies for m in rd.messages if m.type == M.APP_RESP and m.reject]
    # Follower 2 rejected the probe at (7, term 5) and hinted its index 7 has term 3;
    # the leader skipped straight to index 3, the last index whose term is <= 3.
    assert [(m.index, m.reject_hint, m.log_term) for m in rejects] == [(7, 7, 3)]
    assert log_terms(c[2]) == [1, 1, 4, 4, 5, 5, 6]
    assert log_terms(c[2]) == log_terms(c[1])
    assert c.node(2).raft.raft_log.committed == 8


def test_follower_rejects_append_and_hint_points_before_its_gap() -> None:
    c = custom({1: [1, 2, 2], 2: [1], 3: [1, 2, 2]}, pre_vote=False)
    r2 = c.node(2).raft
    c.node(2).step(Message(M.APP, 2, 1, Term(3), Term(2), Index(4), commit=Index(1)))
    (resp,) = c.take(2)
    assert (resp.type, resp.reject, resp.index, resp.reject_hint, resp.log_term) == (
        M.APP_RESP,
        True,
        4,
        2,
        1,
    )
    assert r2.lead == 1


def test_inflight_window_limits_messages_in_flight() -> None:
    c = fresh(max_inflight_msgs=2, pre_vote=False)
    c.elect(1)
    r1 = c.node(1).raft
    assert r1.prs[2].state is ProgressState.REPLICATE
    c.isolate(2)
    for i in range(5):
        c.node(1).propose(bytes([i]))
    out = c.take(1)
    to2 = [m for m in out if m.to == 2]
    assert len(to2) == 2 and r1.prs[2].inflights.full()
    assert len([m for m in out if m.to == 3]) == 2
    # An acknowledgement frees the window; the next message carries everything outstanding.
    c.node(1).step(Message(M.APP_RESP, 1, 2, r1.term, index=to2[0].entries[-1].index))
    (nxt,) = [m for m in c.take(1) if m.to == 2]
    assert [e.data for e in nxt.entries] == [b"\x02", b"\x03", b"\x04"]


def test_heartbeat_response_frees_one_inflight_slot_when_full() -> None:
    c = fresh(max_inflight_msgs=1, pre_vote=False)
    c.elect(1)
    r1 = c.node(1).raft
    c.node(1).propose(b"a")
    c.node(1).propose(b"b")
    out = [m for m in c.take(1) if m.to == 2]
    assert [[e.data for e in m.entries] for m in out] == [[b"a"]]
    c.node(1).step(Message(M.HEARTBEAT_RESP, 1, 2, r1.term))
    out = [m for m in c.take(1) if m.to == 2]
    assert [[e.data for e in m.entries] for m in out] == [[b"b"]]


def test_max_message_size_splits_appends() -> None:
    c = fresh(max_size_per_msg_bytes=10, pre_vote=False)
    c.elect(1)
    c.node(1).propose_many([b"aaaaaa", b"bbbbbb", b"cccccc"])
    all_out = c.take(1)
    out = [m for m in all_out if m.to == 2]
    assert [[e.data for e in m.entries] for m in out] == [[b"aaaaaa"]]
    c.deliver(all_out)
    c.stabilize()
    assert c[2].applied_data() == [b"aaaaaa", b"bbbbbb", b"cccccc"]
    sizes = [len(m.entries) for rd in c[1].readies for m in rd.messages if m.type == M.APP]
    assert max(sizes) == 1


def test_an_entry_over_the_size_limit_is_still_sent_alone() -> None:
    c = fresh(max_size_per_msg_bytes=4, pre_vote=False)
    c.elect(1)
    c.node(1).propose(b"0123456789")
    out = [m for m in c.take(1) if m.to == 2]
    assert [[e.data for e in m.entries] for m in out] == [[b"0123456789"]]


def test_figure_8_entry_of_old_term_is_not_committed_by_counting() -> None:
    # Member 1 has an entry of term 2 at index 2 (replicated to member 2 only) and becomes
    # leader of term 4; member 5 holds a different entry (term 3) at index 2.
    c = custom({1: [2], 2: [2], 3: [], 4: [], 5: [3]}, pre_vote=False)
    for i in (1, 2, 3, 4, 5):
        c.node(i).raft.term = Term(3)
    r1 = c.node(1).raft
    c.node(1).campaign()
    for frm in (2, 3):
        c.node(1).step(Message(M.VOTE_RESP, 1, frm, Term(4)))
    assert r1.role is Role.LEADER and r1.term == 4
    assert log_terms(c[1]) == [2, 4]
    c.take(1)
    # Members 2 and 3 acknowledge index 2 (the term-2 entry): it is now on a majority
    # (1, 2, 3) but of an older term, so it must not commit.
    for frm in (2, 3):
        c.node(1).step(Message(M.APP_RESP, 1, frm, Term(4), index=Index(2)))
    assert r1.raft_log.committed == 1
    # Once the leader's own term-4 entry is on a majority, both commit.
    for frm in (2, 3):
        c.node(1).step(Message(M.APP_RESP, 1, frm, Term(4), index=Index(3)))
    assert r1.raft_log.committed == 3


def test_figure_8_full_run_overwrites_uncommitted_entry_of_other_leader() -> None:
    c = custom({1: [2], 2: [2], 3: [], 4: [], 5: [3]}, pre_vote=False)
    for i in (1, 2, 3, 4, 5):
        c.node(i).raft.term = Term(3)
    c.node(1).campaign()
    c.stabilize()
    assert c.node(1).raft.role is Role.LEADER
    for i in (1, 2, 3, 4, 5):
        assert log_terms(c[i]) == [2, 4]
        assert c.node(i).raft.raft_log.committed == 3


def test_duplicate_append_and_stale_responses_are_harmless() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    r1 = c.node(1).raft
    c.node(1).propose(b"a")
    (app,) = [m for m in c.take(1) if m.to == 2]
    c.deliver([app, app])
    resps = c.take(2)
    assert [(m.type, m.index) for m in resps] == [(M.APP_RESP, 5), (M.APP_RESP, 5)]
    assert log_terms(c[2])[-1] == 2 and c.node(2).raft.raft_log.last_index() == 5
    c.deliver(resps[:1])
    first = c.take(1)
    c.deliver(resps[1:])
    assert c.take(1) == []  # the duplicate ack changes nothing and sends nothing
    assert r1.prs[2].match == 5
    # A stale rejection (for an index already matched) is ignored too.
    c.node(1).step(Message(M.APP_RESP, 1, 2, r1.term, index=Index(3), reject=True))
    assert c.take(1) == [] and r1.prs[2].state is ProgressState.REPLICATE
    del first


def test_append_below_commit_is_answered_with_commit_index() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    c.node(1).propose(b"a")
    c.stabilize()
    r2 = c.node(2).raft
    committed = r2.raft_log.committed
    c.node(2).step(Message(M.APP, 2, 1, r2.term, Term(1), Index(1), commit=Index(1)))
    assert [(m.type, m.index, m.reject) for m in c.take(2)] == [(M.APP_RESP, committed, False)]


def test_unreachable_moves_replicate_to_probe() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    r1 = c.node(1).raft
    assert r1.prs[2].state is ProgressState.REPLICATE
    c.node(1).report_unreachable(2)
    assert r1.prs[2].state is ProgressState.PROBE


def test_proposal_on_follower_is_forwarded_and_without_leader_dropped() -> None:
    import pytest

    from petcd.raft import ProposalDroppedError

    c = fresh(pre_vote=False)
    with pytest.raises(ProposalDroppedError):
        c.node(2).propose(b"x")
    c.elect(1)
    c.node(2).propose(b"x")
    (fwd,) = c.take(2)
    assert (fwd.type, fwd.to, fwd.term, [e.data for e in fwd.entries]) == (M.PROP, 1, 0, [b"x"])
    c.deliver([fwd])
    c.stabilize()
    assert c[3].applied_data() == [b"x"]


def test_uncommitted_size_limit_drops_proposals() -> None:
    import pytest

    from petcd.raft import ProposalDroppedError

    c = fresh(pre_vote=False, max_uncommitted_entries_bytes=10)
    c.elect(1)
    c.isolate(1)
    c.node(1).propose(b"12345678")
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"12345")
    c.heal()
    c.stabilize()
    c.node(1).raft.heartbeat_elapsed = 0
    c.tick_all(2)
    c.stabilize()
    assert c[2].applied_data() == [b"12345678"]
    c.node(1).propose(b"12345")  # the limit is released once entries commit and apply
    c.stabilize()
    assert c[2].applied_data() == [b"12345678", b"12345"]


def test_follower_disable_forwarding_drops() -> None:
    import pytest

    from petcd.raft import ProposalDroppedError

    c = fresh(pre_vote=False, disable_proposal_forwarding=True)
    c.elect(1)
    with pytest.raises(ProposalDroppedError):
        c.node(2).propose(b"x")


def test_leader_commit_reaches_followers_by_heartbeat() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    c.node(1).propose(b"a")
    c.deliver(c.take(1))
    c.deliver(c.take(2))  # the leader commits on 2's ack; 3's ack is pending
    r1 = c.node(1).raft
    assert r1.raft_log.committed == 5
    assert c.node(3).raft.raft_log.committed == 4
    c.take(1)
    c.outbox.clear()
    c.node(1).tick()
    hb = [m for m in c.take(1) if m.to == 3]
    assert [(m.type, m.commit) for m in hb] == [(M.HEARTBEAT, 4)]  # min(match, commit)
