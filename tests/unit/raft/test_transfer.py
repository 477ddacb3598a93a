# mypy: disable-error-code="arg-type,index,comparison-overlap,union-attr"
"""Leader transfer: catch the target up, TIMEOUT_NOW, campaign at once; drop proposals; abort."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.raft import ConfChange, ConfChangeType, MemberId, ProposalDroppedError, Role
from tests.unit.raft.harness import Cluster, M


def fresh(n: int = 3, **kw: Any) -> Cluster:
    c = Cluster(list(range(1, n + 1)), **kw)
    c.stabilize()
    return c


def test_transfer_to_up_to_date_follower_sends_timeout_now_at_once() -> None:
    c = fresh()  # pre_vote and check_quorum on: the transfer must bypass both
    c.elect(1)
    term = c.node(1).raft.term
    c.node(1).transfer_leader(MemberId(2))
    out = c.take(1)
    assert [(m.type, m.to, m.term) for m in out] == [(M.TIMEOUT_NOW, 2, term)]
    c.deliver(out)
    r2 = c.node(2).raft
    assert r2.role is Role.CANDIDATE and r2.term == term + 1  # no pre-vote round
    votes = c.take(2)
    assert [(m.type, m.to, m.context) for m in votes] == [
        (M.VOTE, 1, b"CampaignTransfer"),
        (M.VOTE, 3, b"CampaignTransfer"),
    ]
    # Member 3 heard from leader 1 just now (a lease), yet grants: this is a transfer.
    c.deliver(votes[1:])
    assert [(m.type, m.reject) for m in c.take(3)] == [(M.VOTE_RESP, False)]
    c.deliver(votes[:1])
    c.stabilize()
    assert r2.role is Role.LEADER
    assert c.node(1).raft.role is Role.FOLLOWER and c.node(1).raft.lead == 2


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    c = fresh()
    c.elect(1)
    c.isolate(3)
    c.node(1).propose(b"a")
    c.stabilize()
    c.heal()
    r1 = c.node(1).raft
    assert r1.prs[3].match < r1.raft_log.last_index()
    c.node(1).transfer_leader(MemberId(3))
    assert r1.lead_transferee == 3
    first = c.take(1)
    assert all(m.type != M.TIMEOUT_NOW for m in first)
    c.deliver(first)
    c.stabilize()
    sent = [m.type for rd in c[1].readies for m in rd.messages if m.to == 3]
    assert M.TIMEOUT_NOW in sent
    assert c.node(3).raft.role is Role.LEADER
    assert c[3].applied_data() == [b"a"]


def test_proposals_dropped_during_transfer_and_transfer_aborted_after_election_timeout() -> None:
    c = fresh()
    c.elect(1)
    c.isolate(2)
    c.node(1).propose(b"x")
    c.stabilize()
    r1 = c.node(1).raft
    c.node(1).transfer_leader(MemberId(2))
    assert r1.lead_transferee == 2
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"dropped")
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose_many([b"d1", b"d2"])
    for _ in range(9):
        c.node(1).tick()
        c.stabilize()
    assert r1.lead_transferee == 2
    c.node(1).tick()
    c.stabilize()
    assert r1.lead_transferee == 0 and r1.role is Role.LEADER
    c.node(1).propose(b"y")
    c.stabilize()
    assert c[3].applied_data() == [b"x", b"y"]


def test_transfer_requested_on_follower_is_forwarded_to_leader() -> None:
    c = fresh()
    c.elect(1)
    c.node(3).transfer_leader(MemberId(3))
    (fwd,) = c.take(3)
    assert (fwd.type, fwd.to, fwd.from_) == (M.TRANSFER_LEADER, 1, 3)
    c.deliver([fwd])
    c.stabilize()
    assert c.node(3).raft.role is Role.LEADER


def test_transfer_to_self_or_learner_is_ignored() -> None:
    c = Cluster([1, 2, 3], learners=[4])
    c.stabilize()
    c.elect(1)
    c.node(1).transfer_leader(MemberId(1))
    c.node(1).transfer_leader(MemberId(4))
    assert c.node(1).raft.lead_transferee == 0
    assert c.take(1) == []


def test_second_transfer_to_other_target_replaces_the_first() -> None:
    c = fresh()
    c.elect(1)
    c.isolate(2)
    c.node(1).transfer_leader(MemberId(2))
    c.stabilize()
    c.heal()
    c.node(1).transfer_leader(MemberId(3))
    c.stabilize()
    assert c.node(3).raft.role is Role.LEADER


def test_removing_transfer_target_aborts_transfer() -> None:
    c = fresh()
    c.elect(1)
    c.add_conf(1, ConfChangeType.ADD_NODE, 4)  # 4 never starts, so it can never catch up
    r1 = c.node(1).raft
    c.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, MemberId(4)))
    c.node(1).transfer_leader(MemberId(4))
    assert r1.lead_transferee == 4
    c.stabilize()
    assert 4 not in r1.voters
    assert r1.lead_transferee == 0 and r1.role is Role.LEADER
    c.node(1).propose(b"ok")
