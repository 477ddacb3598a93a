"""Lease checkpoints: the leader records remaining TTLs through raft so leader changes do not
extend long leases."""

from __future__ import annotations

from petcd.lease import (
    CHECKPOINT_BATCH_MAX,
    LeaseCheckpoint,
    LeaseId,
    LeaseInfo,
    Lessor,
    LessorConfig,
    MemoryLeaseStore,
)

from .conftest import FakeClock, MakeLessor

L1, L2 = LeaseId(1), LeaseId(2)


def apply(lessors: list[Lessor], checkpoints: list[LeaseCheckpoint]) -> None:
    """What the server does when the proposed LeaseCheckpointRequest commits."""
    for lessor in lessors:
        for cp in checkpoints:
            lessor.checkpoint(cp.id, cp.remaining_ttl_seconds)


def test_without_checkpointing_nothing_is_produced(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(checkpoint_interval_seconds=60.0)
    lessor.grant(L1, 600)
    lessor.promote(0.0)
    clock.advance(120)
    assert lessor.due_checkpoints(10) == []


def test_leader_checkpoints_long_leases_every_interval(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    lessor.grant(L1, 600)
    lessor.grant(L2, 60)  # not longer than the interval: never checkpointed, as in etcd
    lessor.promote(0.0)
    clock.advance(59.9)
    assert lessor.due_checkpoints(10) == []
    clock.advance(0.4)  # 60.3 s elapsed, 539.7 s left -> rounded up
    cps = lessor.due_checkpoints(10)
    assert cps == [LeaseCheckpoint(L1, 540)]
    assert lessor.due_checkpoints(10) == []  # handed out once
    apply([lessor], cps)
    assert lessor.lookup(L1) == LeaseInfo(L1, 600, 540)
    clock.advance(60)  # applying it scheduled the next one
    assert lessor.due_checkpoints(10) == [LeaseCheckpoint(L1, 480)]


def test_a_new_leader_starts_from_the_checkpoint_not_the_full_ttl(clock: FakeClock) -> None:
    cfg = LessorConfig(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    old = Lessor(MemoryLeaseStore(), clock, cfg)
    new = Lessor(MemoryLeaseStore(), clock, cfg)
    for lessor in (old, new):
        lessor.grant(L1, 600)
    old.promote(0.0)
    clock.advance(200)
    cps = old.due_checkpoints(10)
    assert cps == [LeaseCheckpoint(L1, 400)]
    apply([old, new], cps)
    clock.advance(30)
    old.demote()
    new.promote(1.0)
    # 401 s, not 601 s: the 200 s already spent are not given back; at most the time since
    # the last checkpoint (30 s here, one interval at worst) is.
    assert new.remaining_seconds(L1) == 401


def test_renew_clears_the_checkpoint_through_raft(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    lessor.grant(L1, 600)
    lessor.promote(0.0)
    clock.advance(100)
    apply([lessor], lessor.due_checkpoints(10))
    assert lessor.lookup(L1) == LeaseInfo(L1, 600, 500)
    assert not lessor.has_pending_checkpoints()
    assert lessor.renew(L1) == 600
    assert lessor.remaining_seconds(L1) == 600  # the full TTL, whatever the checkpoint
    assert lessor.has_pending_checkpoints()
    assert lessor.due_checkpoints(10) == [LeaseCheckpoint(L1, 0)]
    assert not lessor.has_pending_checkpoints()
    apply([lessor], [LeaseCheckpoint(L1, 0)])
    assert lessor.lookup(L1) == LeaseInfo(L1, 600, 0)
    # Renewing a lease without a checkpoint costs no raft entry.
    lessor.renew(L1)
    assert lessor.due_checkpoints(10) == []


def test_at_most_two_entries_per_interval_for_a_constantly_renewed_lease(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    lessor.grant(L1, 600)
    lessor.promote(0.0)
    produced: list[tuple[int, LeaseCheckpoint]] = []
    for second in range(1, 601):  # poll every second, renew every 5 s, for 10 minutes
        clock.advance(1.0)
        cps = lessor.due_checkpoints(10)
        apply([lessor], cps)
        produced.extend((second, cp) for cp in cps)
        if second % 5 == 0:
            lessor.renew(L1)
    values = [cp.remaining_ttl_seconds for _, cp in produced]
    assert any(v > 0 for v in values) and 0 in values
    assert all(v == 0 or 595 <= v < 600 for v in values)
    for window_start in range(0, 600, 60):
        in_window = [s for s, _ in produced if window_start < s <= window_start + 60]
        assert len(in_window) <= 2


def test_checkpoints_skip_expired_and_revoked_leases(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=10.0)
    lessor.grant(L1, 11)
    lessor.grant(L2, 20)
    lessor.promote(0.0)
    lessor.revoke(L2)
    clock.advance(11)  # L1 expired exactly at its checkpoint time
    assert lessor.due_checkpoints(10) == []


def test_checkpoint_batches_are_bounded(make_lessor: MakeLessor, clock: FakeClock) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    count = CHECKPOINT_BATCH_MAX + 234
    for i in range(1, count + 1):
        lessor.grant(LeaseId(i), 3600)
    lessor.promote(0.0)
    clock.advance(61)
    first = lessor.due_checkpoints(CHECKPOINT_BATCH_MAX)
    second = lessor.due_checkpoints(CHECKPOINT_BATCH_MAX)
    assert len(first) == CHECKPOINT_BATCH_MAX
    assert len(second) == 234
    assert lessor.due_checkpoints(CHECKPOINT_BATCH_MAX) == []
    assert {cp.id for cp in first + second} == set(range(1, count + 1))
    # 3539 s left for most; promote pushed some back as 1234 leases would expire together.
    assert all(3539 <= cp.remaining_ttl_seconds < 3600 for cp in first + second)


def test_follower_applies_checkpoints_but_schedules_nothing(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    lessor.grant(L1, 600)
    lessor.checkpoint(L1, 300)
    clock.advance(1000)
    assert lessor.due_checkpoints(10) == []
    assert lessor.lookup(L1) == LeaseInfo(L1, 600, 300)


def test_persisted_checkpoints_survive_a_restart(clock: FakeClock) -> None:
    store = MemoryLeaseStore()
    cfg = LessorConfig(
        checkpoint_enabled=True, checkpoint_interval_seconds=60.0, checkpoint_persist=True
    )
    before = Lessor(store, clock, cfg)
    before.grant(L1, 600)
    before.promote(0.0)
    clock.advance(300)
    apply([before], before.due_checkpoints(10))
    after = Lessor(store, clock, cfg)
    after.promote(0.0)
    assert after.remaining_seconds(L1) == 300


def test_unpersisted_checkpoints_are_lost_on_restart(clock: FakeClock) -> None:
    store = MemoryLeaseStore()
    cfg = LessorConfig(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    before = Lessor(store, clock, cfg)
    before.grant(L1, 600)
    before.promote(0.0)
    clock.advance(300)
    apply([before], before.due_checkpoints(10))
    after = Lessor(store, clock, cfg)
    after.promote(0.0)
    assert after.remaining_seconds(L1) == 600


def test_a_pending_clear_survives_a_new_promotion(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    # Found by the model test: promote used to drop clears queued by renew, leaving the stale
    # checkpoint in place for the next leader change.
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    lessor.grant(L1, 600)
    lessor.promote(0.0)
    clock.advance(100)
    apply([lessor], lessor.due_checkpoints(10))
    lessor.renew(L1)
    lessor.promote(0.0)  # e.g. re-elected before the clear was proposed
    assert lessor.due_checkpoints(10) == [LeaseCheckpoint(L1, 0)]


def test_demote_drops_pending_clears(make_lessor: MakeLessor, clock: FakeClock) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_interval_seconds=60.0)
    lessor.grant(L1, 600)
    lessor.promote(0.0)
    clock.advance(100)
    apply([lessor], lessor.due_checkpoints(10))
    lessor.renew(L1)
    lessor.demote()  # a follower proposes nothing; the new leader renews and clears itself
    assert not lessor.has_pending_checkpoints()
    lessor.promote(0.0)
    assert lessor.due_checkpoints(10) == []


def run_cluster_with_leader_changes(checkpoint_enabled: bool) -> float | None:
    """Three members, leadership rotating every 90 s, one 600 s lease never renewed.

    The server loop is simulated: every second the leader polls checkpoints and expiries;
    whatever it proposes is applied on all members at once. Returns the time (since the
    grant) at which the lease was revoked, or None if it was still alive after an hour.
    """
    clock = FakeClock(0.0)
    cfg = LessorConfig(checkpoint_enabled=checkpoint_enabled, checkpoint_interval_seconds=60.0)
    members = [Lessor(MemoryLeaseStore(), clock, cfg) for _ in range(3)]
    leader = 0
    members[leader].promote(1.0)
    for m in members:
        m.grant(L1, 600)
    for second in range(1, 3601):
        clock.advance(1.0)
        if second % 90 == 0:
            members[leader].demote()
            leader = (leader + 1) % 3
            members[leader].promote(1.0)  # etcd extends by the election timeout
        apply(members, members[leader].due_checkpoints(CHECKPOINT_BATCH_MAX))
        for lease_id in members[leader].expired_leases(500):
            for m in members:
                m.revoke(lease_id)
            return clock.now
    return None


def test_checkpoints_bound_a_lease_lifetime_across_leader_changes() -> None:
    # Without checkpoints every new leader restarts the countdown at the full TTL.
    assert run_cluster_with_leader_changes(checkpoint_enabled=False) is None
    # With them each leader checkpoints 60 s into its 90 s term, so each change gives back
    # at most the 30 s since that checkpoint plus the 1 s extension: 600 s of countdown take
    # about 10 terms of which 60 s count, i.e. roughly 900 s, and never "forever".
    revoked_at = run_cluster_with_leader_changes(checkpoint_enabled=True)
    assert revoked_at is not None
    assert 600 <= revoked_at <= 600 * 90 / 60 + 2 * 90
