"""The replicated half of the lessor: what every member does when an entry is applied."""

from __future__ import annotations

import random

import pytest

from petcd.lease import (
    MAX_LEASE_TTL_SECONDS,
    NO_LEASE,
    LeaseExistsError,
    LeaseId,
    LeaseInfo,
    LeaseNotFoundError,
    LeaseRecord,
    LeaseTTLTooLargeError,
    Lessor,
    LessorConfig,
    MemoryLeaseStore,
)

from .conftest import FakeClock, MakeLessor

L1, L2, L3 = LeaseId(1), LeaseId(2), LeaseId(3)


def test_grant_persists_and_raises_short_ttls_to_the_minimum(
    make_lessor: MakeLessor, store: MemoryLeaseStore
) -> None:
    lessor = make_lessor(min_ttl_seconds=5)
    assert lessor.grant(L1, 3) == LeaseInfo(L1, 5, 0)
    assert lessor.grant(L2, 60) == LeaseInfo(L2, 60, 0)
    assert lessor.grant(L3, -10) == LeaseInfo(L3, 5, 0)
    assert store.records == {
        L1: LeaseRecord(L1, 5, 0),
        L2: LeaseRecord(L2, 60, 0),
        L3: LeaseRecord(L3, 5, 0),
    }
    assert lessor.lookup(L2) == LeaseInfo(L2, 60, 0)
    assert lessor.lookup(LeaseId(99)) is None
    assert len(lessor) == 3 and L1 in lessor and LeaseId(99) not in lessor


def test_grant_errors_change_nothing(make_lessor: MakeLessor, store: MemoryLeaseStore) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    with pytest.raises(LeaseNotFoundError):
        lessor.grant(NO_LEASE, 10)
    with pytest.raises(LeaseTTLTooLargeError):
        lessor.grant(L2, MAX_LEASE_TTL_SECONDS + 1)
    with pytest.raises(LeaseExistsError):
        lessor.grant(L1, 20)
    # The TTL check comes before the existence check, as in etcd.
    with pytest.raises(LeaseTTLTooLargeError):
        lessor.grant(L1, MAX_LEASE_TTL_SECONDS + 1)
    assert lessor.grant(L2, MAX_LEASE_TTL_SECONDS).ttl_seconds == MAX_LEASE_TTL_SECONDS
    assert lessor.lookup(L1) == LeaseInfo(L1, 10, 0)
    assert set(store.records) == {L1, L2}


def test_revoke_returns_sorted_keys_and_forgets_everything(
    make_lessor: MakeLessor, store: MemoryLeaseStore
) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.grant(L2, 10)
    for key in (b"zeta", b"alpha", b"mid", b"\x00first"):
        lessor.attach(L1, key)
    lessor.attach(L2, b"other")
    assert lessor.revoke(L1) == [b"\x00first", b"alpha", b"mid", b"zeta"]
    assert lessor.lookup(L1) is None
    assert L1 not in store.records
    assert lessor.lease_of(b"alpha") == NO_LEASE
    # mvcc detaching the deleted keys afterwards is harmless.
    assert lessor.detach_key(b"alpha") == NO_LEASE
    lessor.detach(L1, b"zeta")
    assert lessor.keys(L2) == [b"other"]
    with pytest.raises(LeaseNotFoundError):
        lessor.revoke(L1)
    with pytest.raises(LeaseNotFoundError):
        lessor.keys(L1)


def test_attach_moves_a_key_between_leases(make_lessor: MakeLessor) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.grant(L2, 10)
    lessor.attach(L1, b"k")
    lessor.attach(L1, b"k")  # the same put twice: still one attachment
    assert lessor.keys(L1) == [b"k"] and lessor.lease_of(b"k") == L1
    lessor.attach(L2, b"k")  # put again with another lease
    assert lessor.keys(L1) == [] and lessor.keys(L2) == [b"k"]
    assert lessor.lease_of(b"k") == L2
    assert lessor.revoke(L1) == []  # revoking the old lease must not delete the key
    assert lessor.lease_of(b"k") == L2


def test_attach_to_an_unknown_lease_fails(make_lessor: MakeLessor) -> None:
    lessor = make_lessor()
    with pytest.raises(LeaseNotFoundError):
        lessor.attach(L1, b"k")
    assert lessor.lease_of(b"k") == NO_LEASE
    assert not lessor.lease_exists(L1)
    lessor.grant(L1, 10)
    assert lessor.lease_exists(L1)


def test_detach(make_lessor: MakeLessor) -> None:
    lessor = make_lessor()
    lessor.grant(L1, 10)
    lessor.grant(L2, 10)
    lessor.attach(L1, b"a")
    lessor.attach(L1, b"b")
    lessor.detach(L2, b"a")  # not attached to L2: nothing happens
    assert lessor.keys(L1) == [b"a", b"b"]
    lessor.detach(L1, b"a")
    assert lessor.keys(L1) == [b"b"] and lessor.lease_of(b"a") == NO_LEASE
    lessor.detach(L3, b"b")  # unknown (revoked) lease: a no-op, as etcd's mvcc treats it
    assert lessor.keys(L1) == [b"b"]
    assert lessor.detach_key(b"b") == L1
    assert lessor.keys(L1) == []
    assert lessor.detach_key(b"never-attached") == NO_LEASE


def test_checkpoint_records_remaining_ttl_without_persisting_by_default(
    make_lessor: MakeLessor, store: MemoryLeaseStore
) -> None:
    lessor = make_lessor(checkpoint_enabled=True)
    lessor.grant(L1, 600)
    lessor.checkpoint(L1, 250)
    assert lessor.lookup(L1) == LeaseInfo(L1, 600, 250)
    assert store.records[L1] == LeaseRecord(L1, 600, 0)
    lessor.checkpoint(LeaseId(404), 10)  # revoked meanwhile: ignored, as in etcd
    assert lessor.lookup(LeaseId(404)) is None


def test_checkpoint_persist_writes_the_remaining_ttl(
    make_lessor: MakeLessor, store: MemoryLeaseStore
) -> None:
    lessor = make_lessor(checkpoint_enabled=True, checkpoint_persist=True)
    lessor.grant(L1, 600)
    lessor.checkpoint(L1, 250)
    assert store.records[L1] == LeaseRecord(L1, 600, 250)
    lessor.checkpoint(L1, 0)
    assert store.records[L1] == LeaseRecord(L1, 600, 0)


def test_restart_rebuilds_leases_from_the_store(clock: FakeClock) -> None:
    store = MemoryLeaseStore(
        [LeaseRecord(L1, 60, 0), LeaseRecord(L2, 1, 0), LeaseRecord(L3, 900, 400)]
    )
    lessor = Lessor(store, clock, LessorConfig(min_ttl_seconds=2))
    assert lessor.leases() == [
        LeaseInfo(L1, 60, 0),
        LeaseInfo(L2, 2, 0),  # raised to the minimum, as etcd's recovery does
        LeaseInfo(L3, 900, 400),
    ]
    # Keys are not persisted by the lessor: the server re-attaches them from mvcc.
    assert lessor.keys(L1) == []
    # Until promoted, nothing counts down.
    assert lessor.remaining_seconds(L1) is None
    clock.advance(10_000)
    assert lessor.expired_leases(100) == []
    # On promotion each countdown starts again from the TTL, or from the checkpoint.
    lessor.promote(0.0)
    assert lessor.remaining_seconds(L1) == 60
    assert lessor.remaining_seconds(L2) == 2
    assert lessor.remaining_seconds(L3) == 400


def test_restart_after_grants_and_revokes_sees_the_same_leases(
    clock: FakeClock, store: MemoryLeaseStore
) -> None:
    first = Lessor(store, clock)
    for i in range(1, 6):
        first.grant(LeaseId(i), 10 * i)
    first.revoke(LeaseId(3))
    second = Lessor(store, clock)
    assert second.leases() == first.leases()


def test_pick_lease_id_is_seeded_positive_and_free(make_lessor: MakeLessor) -> None:
    lessor = make_lessor()
    a = lessor.pick_lease_id(random.Random(7))
    assert a == lessor.pick_lease_id(random.Random(7))
    assert 0 < a < 1 << 63
    lessor.grant(a, 10)
    # With the same seed the first draw is now taken, so another id comes out.
    b = lessor.pick_lease_id(random.Random(7))
    assert b != a and 0 < b < 1 << 63


def test_pick_lease_id_skips_zero() -> None:
    class ZeroFirst(random.Random):
        def __init__(self) -> None:
            super().__init__(1)
            self.draws = [0, 0, 42]

        def getrandbits(self, k: int, /) -> int:
            return self.draws.pop(0) if self.draws else super().getrandbits(k)

    lessor = Lessor(MemoryLeaseStore(), FakeClock())
    assert lessor.pick_lease_id(ZeroFirst()) == 42


def test_replicated_state_is_the_same_on_leader_and_follower() -> None:
    """The same applied entries give the same state whatever the clock and the role."""
    rng = random.Random(2024)
    ops = [
        (
            rng.randrange(5),
            LeaseId(rng.randrange(1, 30)),
            b"k%d" % rng.randrange(50),
            rng.randrange(-5, 1000),
        )
        for _ in range(2000)
    ]
    cfg = LessorConfig(checkpoint_enabled=True, checkpoint_persist=True)
    leader_store, follower_store = MemoryLeaseStore(), MemoryLeaseStore()
    leader_clock, follower_clock = FakeClock(5.0), FakeClock(123456.0)
    leader = Lessor(leader_store, leader_clock, cfg)
    follower = Lessor(follower_store, follower_clock, cfg)
    leader.promote(1.0)
    for lessor, clk, seed in ((leader, leader_clock, 1), (follower, follower_clock, 2)):
        tick = random.Random(seed)
        for op, lease_id, key, number in ops:
            clk.advance(tick.random())
            try:
                if op == 0:
                    lessor.grant(lease_id, number)
                elif op == 1:
                    lessor.revoke(lease_id)
                elif op == 2:
                    lessor.attach(lease_id, key)
                elif op == 3:
                    lessor.detach_key(key)
                else:
                    lessor.checkpoint(lease_id, number)
            except (LeaseNotFoundError, LeaseExistsError):
                pass
    assert len(follower) > 5
    assert sorted(leader.leases(), key=lambda i: i.id) == follower.leases()
    assert leader_store.records == follower_store.records
    for info in follower.leases():
        assert leader.keys(info.id) == follower.keys(info.id)
