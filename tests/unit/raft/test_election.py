# mypy: disable-error-code="arg-type,index,comparison-overlap"
"""Elections: randomized timeouts, pre-vote, votes persisted before sent, leases, check-quorum."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.raft import HardState, MemberId, Message, MessageType, Role, Term
from tests.unit.raft.harness import Cluster, M

# A bootstrapped 3-member cluster: log 1..3 at term 1 (the founding conf changes), commit 3.


def fresh(n: int = 3, **kw: Any) -> Cluster:
    c = Cluster(list(range(1, n + 1)), **kw)
    c.stabilize()  # apply the bootstrap conf changes
    return c


def test_randomized_election_timeout_is_in_range_and_fires_exactly_then() -> None:
    seen = set()
    for seed in range(40):
        c = fresh(seed=seed)
        r = c.node(1).raft
        timeout = r.randomized_election_timeout
        assert 10 <= timeout < 20
        seen.add(timeout)
        for _ in range(timeout - 1):
            c.node(1).tick()
        assert r.role is Role.FOLLOWER
        c.node(1).tick()
        assert r.role is Role.PRE_CANDIDATE
    assert len(seen) > 5  # really randomized


def test_pre_vote_then_vote_with_exact_messages_and_vote_persisted_before_sent() -> None:
    c = fresh()
    c.node(1).campaign()
    r1 = c.node(1).raft
    assert r1.role is Role.PRE_CANDIDATE and r1.term == 1  # pre-vote raises no term
    msgs = c.take(1)
    assert [(m.type, m.to, m.term, m.log_term, m.index) for m in msgs] == [
        (M.PRE_VOTE, 2, 2, 1, 3),
        (M.PRE_VOTE, 3, 2, 1, 3),
    ]
    c.deliver(msgs[:1])
    r2 = c.node(2).raft
    assert r2.term == 1 and r2.vote == 0  # granting a pre-vote changes nothing
    resp = c.take(2)
    assert [(m.type, m.to, m.term, m.reject) for m in resp] == [(M.PRE_VOTE_RESP, 1, 2, False)]
    assert c[2].readies[-1].hard_state is None

    c.deliver(resp)
    assert r1.role is Role.CANDIDATE and r1.term == 2 and r1.vote == 1
    rd = c.process(1)
    assert rd is not None
    assert rd.hard_state == HardState(Term(2), r1.id, r1.raft_log.committed)
    assert rd.must_sync
    votes = [m for m in c.take(1)] + [m for m in rd.messages]
    c.outbox = [m for m in c.outbox if m.from_ != 1]
    assert [(m.type, m.to, m.term, m.log_term, m.index) for m in rd.messages] == [
        (M.VOTE, 2, 2, 1, 3),
        (M.VOTE, 3, 2, 1, 3),
    ]
    c.deliver(list(rd.messages[:1]))
    rd2 = c.process(2)
    assert rd2 is not None
    # The vote is in the hard state of the very Ready whose messages carry the response.
    assert rd2.hard_state is not None and rd2.hard_state.vote == 1 and rd2.hard_state.term == 2
    assert rd2.must_sync
    assert [(m.type, m.to, m.term, m.reject) for m in rd2.messages] == [(M.VOTE_RESP, 1, 2, False)]
    c.outbox = [m for m in c.outbox if m.from_ != 2]
    c.deliver(list(rd2.messages))
    assert r1.role is Role.LEADER and r1.lead == 1
    # A new leader appends an empty entry of its term at once.
    last = r1.raft_log.last_index()
    assert last == 4 and r1.raft_log.term(last) == 2
    assert r1.raft_log.slice(last, last + 1, None)[0].data == b""
    del votes


def test_without_pre_vote_campaign_raises_term_at_once() -> None:
    c = fresh(pre_vote=False)
    c.node(1).campaign()
    r1 = c.node(1).raft
    assert r1.role is Role.CANDIDATE and r1.term == 2 and r1.vote == 1
    assert [(m.type, m.to, m.term) for m in c.take(1)] == [(M.VOTE, 2, 2), (M.VOTE, 3, 2)]


def test_vote_refused_to_candidate_with_stale_log_and_only_one_vote_per_term() -> None:
    c = fresh(pre_vote=False)
    c.elect(1)
    c.node(1).propose(b"a")
    c.stabilize()
    # Member 3 misses an entry, then members 2 and 3 campaign with their logs.
    c.isolate(3)
    c.node(1).propose(b"b")
    c.stabilize()
    c.heal()
    r3 = c.node(3).raft
    assert r3.raft_log.last_index() < c.node(2).raft.raft_log.last_index()
    # 2 has heard from the leader recently, so it would ignore any campaign: drop its lease.
    c.node(2).raft.lead = MemberId(0)
    c.node(3).campaign()
    msgs = c.take(3)
    to2 = [m for m in msgs if m.to == 2]
    c.deliver(to2)
    resp = c.take(2)
    assert [(m.type, m.to, m.reject) for m in resp] == [(M.VOTE_RESP, 3, True)]
    # 2 voted for nobody in this term, 3 was refused: a second candidate at the same term.
    r2 = c.node(2).raft
    assert r2.vote == 0
    dup = Message(M.VOTE, 2, 1, r2.term, r2.raft_log.last_term(), r2.raft_log.last_index())
    c.node(2).step(dup)
    assert [(m.type, m.reject) for m in c.take(2)] == [(M.VOTE_RESP, False)]
    assert r2.vote == 1
    other = Message(M.VOTE, 2, 3, r2.term, Term(99), 99)
    c.node(2).step(other)
    assert [(m.type, m.reject) for m in c.take(2)] == [(M.VOTE_RESP, True)]
    # The same vote again (a duplicate) is granted again, idempotently.
    c.node(2).step(dup)
    assert [(m.type, m.reject) for m in c.take(2)] == [(M.VOTE_RESP, False)]


def test_partitioned_member_rejoining_does_not_disrupt_with_pre_vote() -> None:
    c = fresh()
    c.elect(1)
    leader_term = c.node(1).raft.term
    c.isolate(3)
    for _ in range(60):
        c.tick_all()
    r3 = c.node(3).raft
    # It kept pre-campaigning without ever raising its term.
    assert r3.term == leader_term
    assert r3.role is Role.PRE_CANDIDATE
    c.heal()
    for _ in range(30):
        c.tick_all()
    assert c.node(1).raft.role is Role.LEADER
    assert c.node(1).raft.term == leader_term
    assert r3.role is Role.FOLLOWER and r3.lead == 1


def test_partitioned_member_without_pre_vote_disrupts_leader() -> None:
    # The contrast: without pre-vote the rejoining member's higher term deposes the leader.
    c = fresh(pre_vote=False, check_quorum=False)
    c.elect(1)
    term = c.node(1).raft.term
    c.isolate(3)
    for _ in range(25):
        c.tick_all()
    assert c.node(3).raft.term > term
    c.heal()
    for _ in range(25):
        c.tick_all()
    assert c.node(1).raft.term > term


def test_check_quorum_leader_steps_down_without_quorum() -> None:
    c = fresh()
    c.elect(1)
    r1 = c.node(1).raft
    c.isolate(1)
    # Within one election timeout the leader cannot tell; after two it must step down.
    for _ in range(9):
        c.node(1).tick()
    assert r1.role is Role.LEADER
    for _ in range(11):
        c.node(1).tick()
        c.stabilize()
    assert r1.role is Role.FOLLOWER and r1.lead == 0


def test_check_quorum_leader_keeps_leading_with_quorum() -> None:
    c = fresh()
    c.elect(1)
    c.isolate(3)
    for _ in range(50):
        c.tick_all()
    assert c.node(1).raft.role is Role.LEADER


def test_lease_follower_ignores_higher_term_vote_and_prevote() -> None:
    c = fresh()
    c.elect(1)
    r2 = c.node(2).raft
    term = r2.term
    for t in (M.VOTE, M.PRE_VOTE):
        m = Message(t, 2, 3, Term(term + 5), Term(99), 99)
        c.node(2).step(m)
        assert c.take(2) == []
        assert r2.term == term and r2.lead == 1


def test_lease_expires_after_election_timeout() -> None:
    c = fresh()
    c.elect(1)
    c.isolate(1)
    r2 = c.node(2).raft
    term = r2.term
    for _ in range(10):
        c.node(2).tick()
    c.take(2)
    m = Message(M.VOTE, 2, 3, Term(term + 1), Term(99), 99)
    c.node(2).step(m)
    assert [(x.type, x.reject) for x in c.take(2)] == [(M.VOTE_RESP, False)]
    assert r2.term == term + 1 and r2.vote == 3


def test_lease_is_bypassed_by_transfer_campaign() -> None:
    c = fresh()
    c.elect(1)
    r2 = c.node(2).raft
    term = r2.term
    m = Message(
        M.VOTE,
        2,
        3,
        Term(term + 1),
        Term(99),
        99,
        context=b"CampaignTransfer",
    )
    c.node(2).step(m)
    assert [(x.type, x.reject) for x in c.take(2)] == [(M.VOTE_RESP, False)]
    assert r2.term == term + 1


def test_stale_term_messages_answered_or_ignored() -> None:
    c = fresh()
    c.elect(1)
    r2 = c.node(2).raft
    old = Term(r2.term - 1)
    # A stale leader's heartbeat gets an answer with our term, so that it steps down.
    c.node(2).step(Message(M.HEARTBEAT, 2, 3, old))
    assert [(m.type, m.to, m.term) for m in c.take(2)] == [(M.APP_RESP, 3, r2.term)]
    c.node(2).step(Message(M.PRE_VOTE, 2, 3, old))
    assert [(m.type, m.term, m.reject) for m in c.take(2)] == [(M.PRE_VOTE_RESP, r2.term, True)]
    c.node(2).step(Message(M.VOTE, 2, 3, old))
    c.node(2).step(Message(M.APP_RESP, 2, 3, old))
    assert c.take(2) == []
    assert r2.lead == 1


def test_stale_leader_steps_down_on_higher_term_response() -> None:
    c = fresh()
    c.elect(1)
    c.isolate(1)
    for _ in range(30):
        for i in (2, 3):
            c.node(i).tick()
        c.stabilize()
    new = c.leader() if c.node(1).raft.role is not Role.LEADER else None
    assert c.node(2).raft.role is Role.LEADER or c.node(3).raft.role is Role.LEADER
    del new
    c.heal()
    c.node(1).tick()  # a heartbeat from the old leader, answered with the higher term
    c.stabilize()
    assert c.node(1).raft.role is Role.FOLLOWER
    assert c.node(1).raft.term == max(c.node(2).raft.term, c.node(3).raft.term)


def test_single_member_elects_itself_and_commits() -> None:
    c = fresh(1)
    c.node(1).campaign()
    c.stabilize()
    assert c.node(1).raft.role is Role.LEADER
    c.node(1).propose(b"a")
    rd = c.process(1)
    assert rd is not None
    assert [e.data for e in rd.entries] == [b"a"]
    assert [e.data for e in rd.committed_entries] == [b"a"]


def test_candidate_loses_on_quorum_of_rejections() -> None:
    c = fresh(pre_vote=False)
    c.node(1).campaign()
    c.take(1)
    r1 = c.node(1).raft
    for frm in (2, 3):
        c.node(1).step(Message(M.VOTE_RESP, 1, frm, r1.term, reject=True))
    assert r1.role is Role.FOLLOWER


def test_candidate_becomes_follower_on_append_from_leader_of_same_term() -> None:
    c = fresh(pre_vote=False)
    c.node(1).campaign()
    r1 = c.node(1).raft
    c.node(1).step(Message(M.HEARTBEAT, 1, 2, r1.term))
    assert r1.role is Role.FOLLOWER and r1.lead == 2


@pytest.mark.parametrize("pre_vote", [True, False])
def test_many_seeds_always_elect_exactly_one_leader(pre_vote: bool) -> None:
    for seed in range(15):
        c = fresh(5, seed=seed, pre_vote=pre_vote)
        for _ in range(60):
            c.tick_all()
            if c.leader() is not None:
                break
        ld = c.leader()
        assert ld is not None
        terms = {m.node.raft.term for m in c.members.values()}
        assert terms == {ld.node.raft.term}
        assert all(m.node.raft.lead == ld.id for m in c.members.values())


def test_hup_message_type_is_local_only() -> None:
    from petcd.raft.errors import StepLocalMsgError

    c = fresh()
    with pytest.raises(StepLocalMsgError):
        c.node(1).step(Message(MessageType.HUP))
