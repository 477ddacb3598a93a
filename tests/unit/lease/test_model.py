"""A stateful property test: the lessor against a plain reference model of etcd's rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from petcd.lease import (
    NO_LEASE,
    LeaseExistsError,
    LeaseExpiredError,
    LeaseId,
    LeaseNotFoundError,
    Lessor,
    LessorConfig,
    MemoryLeaseStore,
    NotPrimaryError,
)

from .conftest import FakeClock

IDS = st.integers(min_value=1, max_value=4).map(LeaseId)
KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"])
RETRY = 3.0
MIN_TTL = 2
INTERVAL = 4.0  # leases with a TTL above 4 s are checkpointed
CONFIG = LessorConfig(
    min_ttl_seconds=MIN_TTL,
    expired_retry_interval_seconds=RETRY,
    checkpoint_enabled=True,
    checkpoint_interval_seconds=INTERVAL,
    checkpoint_persist=True,
)


@dataclass
class ModelLease:
    ttl: int
    keys: set[bytes] = field(default_factory=set)
    expiry: float | None = None
    # When expired_leases last handed it out (None: not since its countdown last started).
    handed_out_at: float | None = None
    remaining: int = 0  # the last applied checkpoint (0: none)
    clear_pending: bool = False  # renewed while checkpointed: a clear must come out


class LessorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.store = MemoryLeaseStore()
        self.lessor = Lessor(self.store, self.clock, CONFIG)
        self.model: dict[LeaseId, ModelLease] = {}
        self.primary = False

    @initialize(lease_ids=st.lists(IDS, max_size=4, unique=True), primary=st.booleans())
    def start(self, lease_ids: list[LeaseId], primary: bool) -> None:
        for lease_id in lease_ids:
            self.grant(lease_id, 2)
        if primary:
            self.promote(0.0)

    def _start(self, lease: ModelLease, extend: float = 0.0) -> None:
        countdown = lease.remaining if lease.remaining > 0 else lease.ttl
        lease.expiry = self.clock.now + extend + countdown
        lease.handed_out_at = None

    @rule(lease_id=IDS, ttl=st.integers(min_value=-1, max_value=8) | st.integers(9, 40))
    def grant(self, lease_id: LeaseId, ttl: int) -> None:
        if lease_id in self.model:
            try:
                self.lessor.grant(lease_id, ttl)
            except LeaseExistsError:
                return
            raise AssertionError("duplicate grant accepted")
        info = self.lessor.grant(lease_id, ttl)
        assert info.ttl_seconds == max(ttl, MIN_TTL)
        lease = self.model[lease_id] = ModelLease(info.ttl_seconds)
        if self.primary:
            self._start(lease)

    @rule(lease_id=IDS)
    def revoke(self, lease_id: LeaseId) -> None:
        lease = self.model.pop(lease_id, None)
        if lease is None:
            try:
                self.lessor.revoke(lease_id)
            except LeaseNotFoundError:
                return
            raise AssertionError("revoke of an unknown lease accepted")
        assert self.lessor.revoke(lease_id) == sorted(lease.keys)

    @rule(lease_id=IDS, key=KEYS)
    def attach(self, lease_id: LeaseId, key: bytes) -> None:
        if lease_id not in self.model:
            try:
                self.lessor.attach(lease_id, key)
            except LeaseNotFoundError:
                return
            raise AssertionError("attach to an unknown lease accepted")
        self.lessor.attach(lease_id, key)
        for lease in self.model.values():
            lease.keys.discard(key)
        self.model[lease_id].keys.add(key)

    @rule(key=KEYS)
    def detach_key(self, key: bytes) -> None:
        owner = next((i for i, le in self.model.items() if key in le.keys), NO_LEASE)
        assert self.lessor.detach_key(key) == owner
        if owner != NO_LEASE:
            self.model[owner].keys.discard(key)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(extend=st.sampled_from([0.0, 1.0]))
    def promote(self, extend: float) -> None:
        self.lessor.promote(extend)
        self.primary = True
        for lease in self.model.values():
            self._start(lease, extend)

    @rule(lead_again=st.booleans())
    def leader_change(self, lead_again: bool) -> None:
        """Leadership is lost; maybe this member wins the next election after a while."""
        self.demote()
        self.advance(1.0)
        if lead_again:
            self.promote(1.0)

    def demote(self) -> None:
        self.lessor.demote()
        self.primary = False
        for lease in self.model.values():
            lease.expiry = None
            lease.handed_out_at = None
            lease.clear_pending = False

    @rule(lease_id=IDS)
    def renew(self, lease_id: LeaseId) -> None:
        lease = self.model.get(lease_id)
        try:
            ttl = self.lessor.renew(lease_id)
        except NotPrimaryError:
            assert not self.primary
            return
        except LeaseExpiredError:
            assert lease is not None and lease.expiry is not None
            assert lease.expiry <= self.clock.now
            return
        except LeaseNotFoundError:
            assert lease is None
            return
        assert self.primary and lease is not None and ttl == lease.ttl
        assert lease.expiry is not None and lease.expiry > self.clock.now
        lease.expiry = self.clock.now + lease.ttl  # the full TTL, checkpoint or not
        lease.handed_out_at = None
        if lease.remaining > 0:
            lease.clear_pending = True

    @rule(limit=st.integers(min_value=0, max_value=5))
    def expired(self, limit: int) -> None:
        now = self.clock.now
        due = {
            i: (le.expiry if le.handed_out_at is None else le.handed_out_at + RETRY)
            for i, le in self.model.items()
            if le.expiry is not None and le.expiry <= now
        }
        eligible = {i: t for i, t in due.items() if t <= now}
        if any(self.model[i].handed_out_at is not None for i in eligible):
            event("an unrevoked lease is due again")
        got = self.lessor.expired_leases(limit)
        assert len(got) == min(limit, len(eligible)), (got, eligible)
        assert set(got) <= set(eligible)
        # Soonest first, and nothing left behind that was due before the last one returned.
        times = [eligible[i] for i in got]
        assert times == sorted(times)
        if got:
            assert all(t >= times[-1] for i, t in eligible.items() if i not in got)
        for i in got:
            self.model[i].handed_out_at = now

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0]))
    def server_tick(self, seconds: float) -> None:
        """The server's loop: time passes, then expired leases are fetched (not revoked)."""
        self.advance(seconds)
        self.expired(3)

    @rule(seconds=st.sampled_from([0.0, 2.0, 4.0]), limit=st.integers(min_value=1, max_value=3))
    def checkpoints(self, seconds: float, limit: int) -> None:
        """Time passes; the leader proposes due checkpoints; they commit and apply at once."""
        self.advance(seconds)
        now = self.clock.now
        clears_before = {i for i, le in self.model.items() if le.clear_pending}
        got = self.lessor.due_checkpoints(limit)
        assert len(got) <= limit
        if not self.primary:
            assert got == []
        for cp in got:
            lease = self.model[cp.id]
            event("checkpoint" if cp.remaining_ttl_seconds else "checkpoint clear")
            if cp.remaining_ttl_seconds == 0:
                assert lease.clear_pending
                lease.clear_pending = False
            else:
                assert lease.expiry is not None and now < lease.expiry
                assert cp.remaining_ttl_seconds == math.ceil(lease.expiry - now)
                assert cp.remaining_ttl_seconds < lease.ttl
            self.lessor.checkpoint(cp.id, cp.remaining_ttl_seconds)
            lease.remaining = cp.remaining_ttl_seconds
        # Clears queued by renewals come out first, up to the limit.
        clears = [cp.id for cp in got if cp.remaining_ttl_seconds == 0]
        if self.primary:
            assert len(clears) == min(limit, len(clears_before))
            assert clears == [cp.id for cp in got[: len(clears)]]

    @rule(lead_again=st.booleans())
    def restart(self, lead_again: bool) -> None:
        """The member restarts: leases from the store, keys re-attached from mvcc."""
        self.lessor = Lessor(self.store, self.clock, CONFIG)
        self.primary = False
        for lease_id, lease in self.model.items():
            lease.expiry = None
            lease.handed_out_at = None
            lease.clear_pending = False
            for key in sorted(lease.keys):
                self.lessor.attach(lease_id, key)
        if lead_again:
            self.promote(1.0)

    @precondition(lambda self: self.primary)
    @rule(lease_id=IDS)
    def time_to_live(self, lease_id: LeaseId) -> None:
        lease = self.model.get(lease_id)
        if lease is None:
            try:
                self.lessor.time_to_live(lease_id)
            except LeaseNotFoundError:
                return
            raise AssertionError("time_to_live of an unknown lease answered")
        assert lease.expiry is not None
        answer = self.lessor.time_to_live(lease_id, with_keys=True)
        assert answer.ttl_seconds == int(lease.expiry - self.clock.now)
        assert answer.granted_ttl_seconds == lease.ttl
        assert answer.keys == tuple(sorted(lease.keys))

    @invariant()
    def same_leases_keys_and_records(self) -> None:
        assert {i.id: i.ttl_seconds for i in self.lessor.leases()} == {
            i: le.ttl for i, le in self.model.items()
        }
        assert {r.id: r.ttl_seconds for r in self.store.records.values()} == {
            i: le.ttl for i, le in self.model.items()
        }
        for info in self.lessor.leases():
            assert info.remaining_ttl_seconds == self.model[info.id].remaining
            assert self.store.records[info.id].remaining_ttl_seconds == info.remaining_ttl_seconds
        for lease_id, lease in self.model.items():
            assert self.lessor.keys(lease_id) == sorted(lease.keys)
            for key in lease.keys:
                assert self.lessor.lease_of(key) == lease_id
        assert self.lessor.is_primary == self.primary


TestLessorModel = LessorMachine.TestCase
TestLessorModel.settings = settings(max_examples=75, stateful_step_count=50, deadline=None)


# 2000 examples of 100 steps: about 60 s of CPU, 270 s of wall time on a 2-core machine at a
# load average of 12. pytest-timeout's default 300 s stopped it mid-example, which Hypothesis
# then reported as a FlakyStrategyDefinition rather than as a timeout.
@pytest.mark.long
@pytest.mark.timeout(900)
def test_lessor_model_long() -> None:
    run_state_machine_as_test(
        LessorMachine,
        settings=settings(max_examples=2000, stateful_step_count=100, deadline=None),
    )
