# mypy: disable-error-code="arg-type,index,comparison-overlap,union-attr"
"""Membership changes (single-step): voters, learners, promotion, one pending change."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Index,
    MemberId,
    MemoryStorage,
    Message,
    ProposalDroppedError,
    Role,
    Term,
    confchange,
)
from tests.unit.raft.harness import Cluster, M, log_terms

ADD = ConfChangeType.ADD_NODE
REMOVE = ConfChangeType.REMOVE_NODE
LEARNER = ConfChangeType.ADD_LEARNER_NODE


def fresh(n: int = 3, learners: tuple[int, ...] = (), **kw: Any) -> Cluster:
    c = Cluster(list(range(1, n + 1)), learners=learners, pre_vote=False, **kw)
    c.stabilize()
    return c


def voters(c: Cluster, i: int) -> frozenset[MemberId]:
    return c.node(i).raft.voters


def join(c: Cluster, id_: int) -> None:
    """Start a new, empty member (it learns the log and the configuration from the leader)."""
    c.add_member(id_, MemoryStorage())
    c.ids.append(id_)


def test_add_voter_then_new_member_catches_up_and_counts_for_quorum() -> None:
    c = fresh()
    c.elect(1)
    c.add_conf(1, ADD, 4)
    assert voters(c, 1) == {1, 2, 3, 4}
    assert c.node(1).raft.quorum == 3
    join(c, 4)
    c.tick_all(1)  # the probe sent at the conf change was lost; a heartbeat round unpauses
    c.node(1).propose(b"x")
    c.stabilize()
    assert c[4].applied_data() == [b"x"]
    assert voters(c, 4) == {1, 2, 3, 4}  # learned by replaying the conf changes
    assert log_terms(c[4]) == log_terms(c[1])
    # With 2 and 3 down, 1 and 4 are not a quorum of 4.
    c.isolate(2)
    c.isolate(3)
    c.node(1).propose(b"y")
    c.stabilize()
    assert c[1].applied_data() == [b"x"]


def test_leader_probes_a_new_member_at_once() -> None:
    c = fresh()
    c.elect(1)
    c.node(1).propose_conf_change(ConfChange(ADD, MemberId(4)))
    c.deliver(c.take(1))
    c.deliver(c.take(2) + c.take(3))
    c.process(1)  # applies the conf change
    out = [m for m in c.take(1) if m.to == 4]
    last = c.node(1).raft.raft_log.last_index()
    assert [(m.type, m.index, [e.index for e in m.entries]) for m in out] == [
        (M.APP, last - 1, [last])
    ]


def test_remove_voter_shrinks_quorum_and_removed_member_never_campaigns() -> None:
    c = fresh()
    c.elect(1)
    c.add_conf(1, REMOVE, 3)
    assert voters(c, 1) == {1, 2} and voters(c, 3) == {1, 2}
    assert 3 not in c.node(1).raft.prs
    c.isolate(3)
    for _ in range(50):
        c.node(3).tick()
        c.stabilize()
    assert c.node(3).raft.role is Role.FOLLOWER
    assert c[3].readies[-1].messages == () or all(
        m.type not in (M.VOTE, M.PRE_VOTE) for rd in c[3].readies for m in rd.messages
    )
    c.node(1).propose(b"a")
    c.stabilize()
    assert c[2].applied_data() == [b"a"]


def test_member_not_in_config_does_not_campaign() -> None:
    c = fresh()
    c.add_member(9, MemoryStorage())
    for _ in range(40):
        c.node(9).tick()
    assert c.node(9).raft.role is Role.FOLLOWER and c.take(9) == []
    c.node(9).campaign()
    assert c.node(9).raft.role is Role.FOLLOWER and c.take(9) == []


def test_learner_gets_log_but_no_vote_and_never_campaigns() -> None:
    c = fresh(learners=(4,))
    assert c.node(1).raft.learners == {4}
    c.elect(1)
    votes_to_4 = [m for rd in c[1].readies for m in rd.messages if m.to == 4 and m.type == M.VOTE]
    assert votes_to_4 == []
    c.node(1).propose(b"a")
    c.stabilize()
    assert c[4].applied_data() == [b"a"]
    # The learner's ack does not count: with 2 and 3 gone nothing commits.
    c.isolate(2)
    c.isolate(3)
    c.node(1).propose(b"b")
    c.stabilize()
    assert c[1].applied_data() == [b"a"]
    c.heal()
    c.isolate(1)
    for _ in range(60):
        c.node(4).tick()
        c.stabilize()
    assert c.node(4).raft.role is Role.FOLLOWER
    assert not any(m.from_ == 4 and m.type in (M.VOTE, M.PRE_VOTE) for m in c.dropped)


def test_add_learner_by_conf_change_then_promote() -> None:
    c = fresh()
    c.elect(1)
    c.add_conf(1, LEARNER, 4)
    assert c.node(1).raft.learners == {4} and 4 not in voters(c, 1)
    join(c, 4)
    c.tick_all(1)  # the probe sent at the conf change was lost; a heartbeat round unpauses
    c.node(1).propose(b"a")
    c.stabilize()
    assert c[4].applied_data() == [b"a"]
    assert c.node(4).raft.is_learner
    c.add_conf(1, ADD, 4)
    for i in (1, 2, 3, 4):
        assert voters(c, i) == {1, 2, 3, 4} and c.node(i).raft.learners == set()
    assert not c.node(4).raft.is_learner
    assert c.node(4).raft.promotable()


def test_second_conf_change_refused_while_first_pending() -> None:
    c = fresh()
    c.elect(1)
    c.node(1).propose_conf_change(ConfChange(ADD, MemberId(4)))
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose_conf_change(ConfChange(ADD, MemberId(5)))
    # Committed but not yet applied by the leader: still pending.
    c.deliver(c.take(1))
    c.deliver(c.take(2) + c.take(3))
    r1 = c.node(1).raft
    assert r1.raft_log.committed > r1.raft_log.applied
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose_conf_change(ConfChange(ADD, MemberId(5)))
    c.stabilize()
    c.node(1).propose_conf_change(ConfChange(ADD, MemberId(5)))  # now accepted
    c.stabilize()
    assert voters(c, 1) == {1, 2, 3, 4, 5}


def test_normal_proposals_are_accepted_while_conf_change_pending() -> None:
    c = fresh()
    c.elect(1)
    c.node(1).propose_conf_change(ConfChange(ADD, MemberId(4)))
    c.node(1).propose(b"n")
    c.stabilize()
    assert c[2].applied_data() == [b"n"]


def test_removed_leader_steps_down_and_the_rest_elect_a_new_one() -> None:
    c = fresh()
    c.elect(1)
    c.add_conf(1, REMOVE, 1)
    since = len(c[1].readies)
    r1 = c.node(1).raft
    assert r1.role is Role.FOLLOWER and 1 not in r1.voters
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"x")
    for _ in range(40):
        c.tick_all()
        if c.leader() is not None:
            break
    ld = c.leader()
    assert ld is not None and ld.id in (2, 3)
    ld.node.propose(b"after")
    c.stabilize()
    assert c[2].applied_data() == [b"after"] and c[3].applied_data() == [b"after"]
    # 1 never campaigns again.
    assert all(
        m.type not in (M.VOTE, M.PRE_VOTE) for rd in c[1].readies[since:] for m in rd.messages
    )


def test_removed_leader_tells_the_others_the_commit_index_before_stepping_down() -> None:
    # With a window of one message, the ack that commits the removal leaves the other
    # follower's progress paused; only a heartbeat can carry the commit index to it.
    c = fresh(max_inflight_msgs=1)
    c.elect(1)
    c.node(1).propose_conf_change(ConfChange(REMOVE, MemberId(1)))
    c.deliver(c.take(1))
    acks = c.take(2) + c.take(3)
    c.deliver(acks[:1])  # 2's ack commits the removal (1, 2 of 3)
    rd = c.process(1)
    assert [confchange.decode(e.data).type for e in rd.committed_entries] == [REMOVE]
    removal = rd.committed_entries[0].index
    assert c.node(1).raft.role is Role.FOLLOWER
    rd = c.process(1)
    assert rd is not None
    hbs = [(m.type, m.to, m.commit) for m in rd.messages if m.type == M.HEARTBEAT]
    assert hbs == [(M.HEARTBEAT, 2, removal), (M.HEARTBEAT, 3, removal - 1)]


def test_new_leader_with_uncommitted_conf_change_in_log_refuses_another() -> None:
    c = fresh(check_quorum=False)  # no leases: 3 votes for 2 at once
    c.elect(1)
    c.node(1).propose_conf_change(ConfChange(ADD, MemberId(4)))
    # Only 2 gets the entry; 1 dies before committing it.
    out = c.take(1)
    c.deliver([m for m in out if m.to == 2])
    c.take(2)
    c.isolate(1)
    c.node(2).campaign()
    c.deliver(c.take(2))
    c.deliver(c.take(3))
    r2 = c.node(2).raft
    assert r2.role is Role.LEADER
    # The conf change from term 2 is still in the new leader's log, uncommitted: until it is
    # applied, no other change is accepted.
    assert r2.raft_log.applied == 4 and r2.pending_conf_index == 5
    with pytest.raises(ProposalDroppedError):
        c.node(2).propose_conf_change(ConfChange(ADD, MemberId(5)))
    c.stabilize()
    assert voters(c, 2) == {1, 2, 3, 4} and voters(c, 3) == {1, 2, 3, 4}
    # Member 4 never started: 2 and 3 alone are not a quorum of four; 1 must come back.
    c.heal()
    c.node(2).propose_conf_change(ConfChange(REMOVE, MemberId(4)))
    c.tick_all(2)  # a heartbeat round unpauses the probe to 1
    assert voters(c, 2) == {1, 2, 3}
    assert c.node(1).raft.role is Role.FOLLOWER and voters(c, 1) == {1, 2, 3}


def test_member_with_unapplied_conf_change_does_not_campaign() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)  # bootstrap conf changes committed, not applied
    c.node(1).campaign()
    assert c.node(1).raft.role is Role.FOLLOWER
    c.stabilize()
    c.node(1).campaign()
    assert c.node(1).raft.role is Role.CANDIDATE


def test_learner_promoted_during_partition() -> None:
    c = fresh(learners=(4,))
    c.elect(1)
    c.isolate(4)
    c.add_conf(1, ADD, 4)
    assert voters(c, 1) == {1, 2, 3, 4}
    assert c.node(4).raft.is_learner  # it does not know yet
    # The others count it: with 2 gone, 1 and 3 are not a quorum of 4.
    c.isolate(2)
    c.node(1).propose(b"a")
    c.stabilize()
    assert c[1].applied_data() == []
    # 4 comes back: it catches up, learns it is a voter, and its ack commits the entry.
    c.heal()
    c.isolate(2)
    c.node(1).raft.heartbeat_elapsed = 0
    c.tick_all(1)
    c.stabilize()
    assert c.node(4).raft.voters == {1, 2, 3, 4} and not c.node(4).raft.is_learner
    assert c[1].applied_data() == [b"a"]


def test_still_learner_member_answers_votes() -> None:
    # A learner that was promoted without knowing it must still be able to vote, or the new
    # configuration could not elect anyone.
    c = fresh(learners=(4,))
    r4 = c.node(4).raft
    assert r4.is_learner
    m = Message(M.VOTE, 4, 2, Term(r4.term + 1), Term(1), Index(3))
    c.node(4).step(m)
    assert [(x.type, x.reject) for x in c.take(4)] == [(M.VOTE_RESP, False)]


def test_conf_change_entry_encoding_roundtrip_and_conf_state() -> None:
    c = fresh()
    c.elect(1)
    c.node(1).propose_conf_change(ConfChange(ADD, MemberId(7), b"ctx", 42))
    c.stabilize()
    ents = [e for e in c[2].applied if e.index > 3 and e.data]
    assert [confchange.decode(e.data) for e in ents] == [ConfChange(ADD, MemberId(7), b"ctx", 42)]
    assert c.node(2).status().conf_state == ConfState(frozenset({1, 2, 3, 7}))


def test_demote_voter_to_learner() -> None:
    c = fresh()
    c.elect(1)
    c.add_conf(1, LEARNER, 3)
    assert voters(c, 1) == {1, 2} and c.node(1).raft.learners == {3}
    assert c.node(3).raft.is_learner and not c.node(3).raft.promotable()
