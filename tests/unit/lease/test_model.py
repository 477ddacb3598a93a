"""A stateful property test: the lessor against a plain reference model of etcd's rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
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


@dataclass
class ModelLease:
    ttl: int
    keys: set[bytes] = field(default_factory=set)
    expiry: float | None = None
    # When expired_leases last handed it out (None: not since its countdown last started).
    handed_out_at: float | None = None


class LessorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.store = MemoryLeaseStore()
        self.lessor = Lessor(
            self.store,
            self.clock,
            LessorConfig(min_ttl_seconds=MIN_TTL, expired_retry_interval_seconds=RETRY),
        )
        self.model: dict[LeaseId, ModelLease] = {}
        self.primary = False

    @initialize(lease_ids=st.lists(IDS, max_size=4, unique=True), primary=st.booleans())
    def start(self, lease_ids: list[LeaseId], primary: bool) -> None:
        for lease_id in lease_ids:
            self.grant(lease_id, 2)
        if primary:
            self.promote(0.0)

    def _start(self, lease: ModelLease, extend: float = 0.0) -> None:
        lease.expiry = self.clock.now + extend + lease.ttl
        lease.handed_out_at = None

    @rule(lease_id=IDS, ttl=st.integers(min_value=-1, max_value=8))
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

    @rule()
    def demote(self) -> None:
        self.lessor.demote()
        self.primary = False
        for lease in self.model.values():
            lease.expiry = None
            lease.handed_out_at = None

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
        self._start(lease)

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
        for lease_id, lease in self.model.items():
            assert self.lessor.keys(lease_id) == sorted(lease.keys)
            for key in lease.keys:
                assert self.lessor.lease_of(key) == lease_id
        assert self.lessor.is_primary == self.primary


TestLessorModel = LessorMachine.TestCase
TestLessorModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
