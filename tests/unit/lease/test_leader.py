"""The leader half of the lessor: promote/demote, renew, time-to-live and expiry."""

from __future__ import annotations

import pytest

from petcd.lease import (
    REVOKE_LIMIT_PER_TICK,
    LeaseExpiredError,
    LeaseId,
    LeaseNotFoundError,
    NotPrimaryError,
    TimeToLive,
)

from .conftest import FakeClock, MakeLessor

L1, L2, L3 = LeaseId(1), LeaseId(2), LeaseId(3)


def test_follower_never_expires_and_refuses_leader_calls(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 5)
    assert not lessor.is_primary
    clock.advance(1e6)
    assert lessor.expired_leases(10) == []
    assert lessor.due_checkpoints(10) == []
    with pytest.raises(NotPrimaryError):
        lessor.renew(L1)
    with pytest.raises(NotPrimaryError):
        lessor.time_to_live(L1)
    # The "not primary" answer wins over "not found": the leader must decide.
    with pytest.raises(NotPrimaryError):
        lessor.renew(LeaseId(404))


def test_grant_on_the_primary_starts_the_countdown(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor()
    lessor.promote(0.0)
    lessor.grant(L1, 10)
    clock.advance(9.999)
    assert lessor.expired_leases(10) == []
    clock.advance(0.001)
    assert lessor.expired_leases(10) == [L1]  # expiry == now counts as expired, as in etcd


def test_promote_adds_the_extension(make_lessor: MakeLessor, clock: FakeClock) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.grant(L2, 20)
    lessor.promote(1.5)
    assert lessor.remaining_seconds(L1) == 11.5
    assert lessor.remaining_seconds(L2) == 21.5
    clock.advance(11.4)
    assert lessor.expired_leases(10) == []
    clock.advance(0.1)
    assert lessor.expired_leases(10) == [L1]


def test_demote_stops_expiry_and_a_new_promote_restarts_full_countdowns(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.promote(0.0)
    clock.advance(8)
    lessor.demote()
    assert not lessor.is_primary
    assert lessor.remaining_seconds(L1) is None
    clock.advance(100)
    assert lessor.expired_leases(10) == []
    lessor.promote(2.0)
    # No checkpoint was recorded, so the lease gets its whole TTL again (+ the extension).
    assert lessor.remaining_seconds(L1) == 12
    assert lessor.time_to_live(L1).ttl_seconds == 12


def test_renew_restarts_the_countdown_and_returns_the_ttl(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.promote(0.0)
    for _ in range(5):
        clock.advance(9)
        assert lessor.renew(L1) == 10
        assert lessor.expired_leases(10) == []
    clock.advance(10)
    assert lessor.expired_leases(10) == [L1]


def test_renew_errors(make_lessor: MakeLessor, clock: FakeClock) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.promote(0.0)
    with pytest.raises(LeaseNotFoundError):
        lessor.renew(L2)
    clock.advance(10)
    # Expired but not revoked yet: the server waits for the revoke (or for demotion).
    with pytest.raises(LeaseExpiredError):
        lessor.renew(L1)
    assert lessor.expired_leases(10) == [L1]
    with pytest.raises(LeaseExpiredError):
        lessor.renew(L1)  # handing it out for revoking does not revive it
    lessor.revoke(L1)
    with pytest.raises(LeaseNotFoundError) as caught:
        lessor.renew(L1)
    assert not isinstance(caught.value, LeaseExpiredError)


def test_time_to_live_truncates_like_etcd(make_lessor: MakeLessor, clock: FakeClock) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 60)
    lessor.attach(L1, b"b")
    lessor.attach(L1, b"a")
    lessor.promote(0.0)
    clock.advance(0.4)
    assert lessor.time_to_live(L1) == TimeToLive(L1, 59, 60)  # 59.6 s left -> 59
    assert lessor.time_to_live(L1, with_keys=True) == TimeToLive(L1, 59, 60, (b"a", b"b"))
    clock.advance(59.1)
    assert lessor.time_to_live(L1).ttl_seconds == 0  # 0.5 s left
    clock.advance(1.0)
    assert lessor.time_to_live(L1).ttl_seconds == 0  # -0.5 s: truncated toward zero
    clock.advance(1.0)
    assert lessor.time_to_live(L1).ttl_seconds == -1  # expired, revoke still in flight
    with pytest.raises(LeaseNotFoundError):
        lessor.time_to_live(L2)


def test_expired_leases_come_soonest_first_within_the_limit(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor()
    lessor.promote(0.0)
    for i, ttl in enumerate([30, 10, 20, 10, 40], start=1):
        lessor.grant(LeaseId(i), ttl)
    clock.advance(35)
    assert lessor.expired_leases(2) == [LeaseId(2), LeaseId(4)]  # equal expiry: grant order
    assert lessor.expired_leases(2) == [LeaseId(3), LeaseId(1)]
    assert lessor.expired_leases(2) == []
    assert lessor.expired_leases(0) == []


def test_an_unrevoked_expired_lease_is_handed_out_again_after_the_retry_interval(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(expired_retry_interval_seconds=3.0)
    lessor.grant(L1, 10)
    lessor.grant(L2, 10)
    lessor.promote(0.0)
    clock.advance(10)
    assert lessor.expired_leases(10) == [L1, L2]
    clock.advance(2.9)
    assert lessor.expired_leases(10) == []
    lessor.revoke(L2)  # L2's revoke got through, L1's proposal was lost
    clock.advance(0.1)
    assert lessor.expired_leases(10) == [L1]
    clock.advance(3.0)
    assert lessor.expired_leases(10) == [L1]
    lessor.revoke(L1)
    clock.advance(100)
    assert lessor.expired_leases(10) == []


def test_demote_then_promote_forgets_handed_out_leases(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.promote(0.0)
    clock.advance(10)
    assert lessor.expired_leases(10) == [L1]
    lessor.demote()  # the revoke was lost in the leader change
    lessor.promote(1.0)  # leadership came back: the lease has a fresh countdown
    clock.advance(10.9)
    assert lessor.expired_leases(10) == []
    clock.advance(0.1)
    assert lessor.expired_leases(10) == [L1]


def test_revoking_at_the_etcd_rate_bounds_revokes_per_round(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor()
    lessor.promote(0.0)
    for i in range(1, 1201):
        lessor.grant(LeaseId(i), 5)
    clock.advance(5)
    rounds = []
    while True:
        batch = lessor.expired_leases(REVOKE_LIMIT_PER_TICK)
        if not batch:
            break
        rounds.append(batch)
        for lease_id in batch:
            lessor.revoke(lease_id)
    assert [len(r) for r in rounds] == [500, 500, 200]
    assert sorted(i for r in rounds for i in r) == list(range(1, 1201))
    assert len(lessor) == 0


def test_promote_spreads_out_expiries_that_would_pile_up(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    rate = 8  # so 6 expiries per second at most after a promotion
    lessor = make_lessor(revoke_rate_per_second=rate)
    for i in range(1, 21):
        lessor.grant(LeaseId(i), 10)
    lessor.promote(0.0)
    remaining = sorted(lessor.remaining_seconds(LeaseId(i)) or 0.0 for i in range(1, 21))
    # The first 6 keep their expiry, the rest are pushed back by 1/6 s each.
    assert remaining[:6] == [10.0] * 6
    assert remaining[6:] == pytest.approx([10 + n / 6 for n in range(7, 21)])
    # So no second sees more than about 6 expiries.
    for start in range(10, 14):
        in_window = [r for r in remaining if start <= r < start + 1]
        assert len(in_window) <= 7


def test_promote_leaves_spread_out_expiries_alone(
    make_lessor: MakeLessor, clock: FakeClock
) -> None:
    lessor = make_lessor(revoke_rate_per_second=8)
    for i in range(1, 21):
        lessor.grant(LeaseId(i), 10 * i)  # one lease per 10 s: nothing piles up
    lessor.promote(0.5)
    for i in range(1, 21):
        assert lessor.remaining_seconds(LeaseId(i)) == 10 * i + 0.5


def test_leases_are_listed_soonest_expiry_first_on_the_primary(
    make_lessor: MakeLessor,
) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 30)
    lessor.grant(L2, 10)
    lessor.grant(L3, 20)
    assert [i.id for i in lessor.leases()] == [L1, L2, L3]  # follower: by id
    lessor.promote(0.0)
    assert [i.id for i in lessor.leases()] == [L2, L3, L1]
