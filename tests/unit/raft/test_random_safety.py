# mypy: disable-error-code="arg-type,index,comparison-overlap,union-attr"
"""Randomized runs checking Raft's safety properties (a quick guard; tests/sim goes further).

Each seed runs a cluster over a lossy, duplicating, reordering network with partitions,
restarts (from storage), proposals, reads, membership changes and transfers, then checks:
- election safety: at most one leader per term;
- state machine safety: every member applied the same entry at each index;
- leader completeness: entries applied anywhere are in every later leader's log.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from petcd.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Index,
    MemberId,
    ProposalDroppedError,
    Role,
)
from tests.unit.raft.harness import Cluster


def run(seed: int, steps: int, n: int = 5) -> Cluster:
    rng = random.Random(seed)
    c = Cluster(
        list(range(1, n + 1)),
        seed=seed,
        pre_vote=rng.random() < 0.7,
        check_quorum=rng.random() < 0.7,
        max_inflight_msgs=rng.choice([1, 4, 256]),
        max_size_per_msg_bytes=rng.choice([8, 1 << 20]),
    )
    c.stabilize()
    leaders: dict[int, int] = {}
    applied_at: dict[int, Entry] = {}
    counter = 0
    for _ in range(steps):
        x = rng.random()
        ids_ = list(c.members)
        if x < 0.3:
            for m in c.members.values():
                m.node.tick()
        elif x < 0.45:
            i = rng.choice(ids_)
            counter += 1
            with contextlib.suppress(ProposalDroppedError):
                c.node(i).propose(b"v%d" % counter)
        elif x < 0.5:
            i = rng.choice(ids_)
            with contextlib.suppress(ProposalDroppedError):
                c.node(i).read_index(b"r%d" % rng.randrange(1 << 30))
        elif x < 0.53:
            c.heal()
            if rng.random() < 0.7:
                c.isolate(rng.choice(ids_))
        elif x < 0.55:
            # Crash and restart from storage (what was handed out in Ready is durable).
            i = rng.choice(ids_)
            old = c[i]
            c.outbox = [m for m in c.outbox if m.to != i]
            new = c.add_member(i, old.storage, applied=old.node.raft.raft_log.applied)
            new.applied = old.applied
        elif x < 0.57:
            i = rng.choice(ids_)
            r = c.node(i).raft
            if r.role is Role.LEADER:
                target = rng.choice(ids_)
                cc_type = rng.choice(
                    [ConfChangeType.ADD_LEARNER_NODE, ConfChangeType.ADD_NODE]
                    if target not in r.voters
                    else [ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE]
                )
                if len(r.voters) > 3 or cc_type is ConfChangeType.ADD_NODE:
                    with contextlib.suppress(ProposalDroppedError):
                        c.node(i).propose_conf_change(ConfChange(cc_type, MemberId(target)))
        elif x < 0.58:
            i = rng.choice(ids_)
            c.node(i).transfer_leader(MemberId(rng.choice(ids_)))
        elif x < 0.59:
            # Compact a member's log up to what it applied.
            i = rng.choice(ids_)
            r = c.node(i).raft
            st = c[i].storage
            a = r.raft_log.applied
            if a > st.snapshot().metadata.index and a >= st.first_index():
                st.create_snapshot(a, r.conf_state(), b"state@%d" % a)
                st.compact(a)
        else:
            # Process a random member, then deliver a random subset, maybe duplicated,
            # in random order.
            c.process(rng.choice(ids_))
            if c.outbox:
                rng.shuffle(c.outbox)
                k = rng.randrange(len(c.outbox) + 1)
                batch, c.outbox = c.outbox[:k], c.outbox[k:]
                batch = [m for m in batch if rng.random() > 0.1]
                batch += [m for m in batch if rng.random() < 0.05]
                c.deliver(batch)
        for m in c.members.values():
            r = m.node.raft
            if r.role is Role.LEADER:
                prev = leaders.setdefault(r.term, r.id)
                assert prev == r.id, f"seed {seed}: two leaders in term {r.term}"
            for e in m.applied:
                first = applied_at.setdefault(e.index, e)
                assert first == e, f"seed {seed}: index {e.index} applied differently"
    # Leader completeness for whoever leads at the end.
    c.heal()
    for _ in range(60):
        c.tick_all()
    ld = c.leader()
    if ld is not None:
        log = ld.node.raft.raft_log
        for idx, e in applied_at.items():
            if idx >= log.first_index():
                got = log.slice(Index(idx), Index(idx + 1), None)[0]
                assert got == e, f"seed {seed}: leader lacks applied entry {idx}"
    c.stats = (len(leaders), len(applied_at))  # type: ignore[attr-defined]
    return c


@pytest.mark.parametrize("seed", range(12))
def test_random_runs_keep_safety(seed: int) -> None:
    run(seed, 1500)


def test_random_runs_make_progress() -> None:
    c = run(1234, 1500)
    assert max(len(m.applied_data()) for m in c.members.values()) > 0
    assert any(e.type == EntryType.NORMAL for m in c.members.values() for e in m.applied)


@pytest.mark.long
@pytest.mark.parametrize("seed", range(12, 300))
def test_random_runs_keep_safety_long(seed: int) -> None:
    run(seed, 4000)
