"""The lessor: leases, their attached keys, and (on the leader) their expiry.

Theory of operation
-------------------
A lease is an id, a granted TTL and a set of attached keys. The lessor has two halves, and
the server must drive each from the right place:

Replicated half -- called while a committed raft entry is applied, on every member, in log
order. It must give the same result everywhere, so it never reads the clock to decide
anything: ``grant``, ``revoke``, ``checkpoint``, ``attach``, ``detach``, ``detach_key``, and
the readers ``lease_exists``, ``lookup``, ``leases``, ``keys``, ``lease_of``. The lessor
satisfies ``petcd.mvcc``'s ``LeaseHook`` (``lease_exists``, ``attach``, ``detach``), so mvcc
keeps the attachments up to date itself as puts and deletes are applied. It persists through
``LeaseStore`` (see ``petcd.lease.store``), inside the apply transaction.

Leader half -- only meaningful on the primary lessor (the raft leader's): ``promote`` /
``demote`` follow leadership, ``renew`` (keep-alive) and ``time_to_live`` read and move
expiries, ``expired_leases`` and ``due_checkpoints`` produce work that the server *proposes*
through raft (``LeaseRevoke`` and ``LeaseCheckpoint`` requests). Expiries are volatile: they
live only in the primary's memory and are rebuilt by ``promote`` from the TTLs (or the
checkpointed remaining TTLs) when a member becomes leader. Time comes from the injected
``clock`` (monotonic seconds); nothing here sleeps or schedules.

    member state      lease.expiry            renew / time_to_live   expired_leases
    --------------    ---------------------   --------------------   --------------
    not primary       None ("forever")        NotPrimaryError        []
    primary           now + remaining (+ext)  allowed                due leases

Checkpoints (etcd's ``--experimental-enable-lease-checkpoint``): without them, a leader
change restarts every lease's countdown at its full TTL, so a long lease can live up to
about twice its TTL. With them, the primary periodically (``checkpoint_interval_seconds``)
hands out the rounded-up remaining TTL of each lease whose TTL is longer than the interval;
applying the checkpoint records it on every member, and the next ``promote`` starts the
countdown from it. A renew clears it again (a checkpoint of 0), so a lease costs at most two
raft entries per interval.

What it never does: I/O other than through its ``LeaseStore``, threads, sleeps, global
randomness. It is not thread-safe: the server calls it from one thread at a time (if applies
run in a worker thread, leader-side calls must be serialised with them).

Invariants
----------
- ``_key_lease[k] == id``  iff  ``k in _leases[id].keys``.
- Not primary => every expiry is None and both schedules are empty.
- At most one live entry per lease in each schedule (expiry, checkpoint); superseded heap
  entries are recognised by their sequence number and skipped.
- The replicated state (ids, TTLs, remaining TTLs, keys, store records) never depends on the
  clock or on whether this member is primary.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from petcd.lease.errors import (
    LeaseExistsError,
    LeaseExpiredError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    LessorConfigError,
    NotPrimaryError,
)
from petcd.lease.store import LeaseStore
from petcd.lease.types import (
    DEFAULT_CHECKPOINT_INTERVAL_SECONDS,
    DEFAULT_EXPIRED_RETRY_INTERVAL_SECONDS,
    LEASE_ID_MAX,
    LEASE_REVOKE_RATE_PER_SECOND,
    MAX_LEASE_TTL_SECONDS,
    NO_LEASE,
    LeaseCheckpoint,
    LeaseId,
    LeaseInfo,
    LeaseRecord,
    TimeToLive,
)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LessorConfig:
    """The lessor's settings (etcd's ``LessorConfig`` and the lease flags).

    - ``min_ttl_seconds``: see ``min_lease_ttl_seconds``; 2 with etcd's default timings.
    - ``checkpoint_enabled``: ``--experimental-enable-lease-checkpoint``.
    - ``checkpoint_interval_seconds``: ``--experimental-lease-checkpoint-interval`` (5 min).
    - ``checkpoint_persist``: ``--experimental-enable-lease-checkpoint-persist``: applied
      checkpoints are also written to the store, so they survive a restart.
    - ``expired_retry_interval_seconds``: an expired lease handed out by ``expired_leases``
      is handed out again after this long if its revoke has not been applied (etcd uses the
      request timeout: 5 s + 2 election timeouts; 3 s by default in the lessor itself).
    - ``revoke_rate_per_second``: etcd's leaseRevokeRate, used by ``promote`` to spread out
      expiries that would pile up; the server's ``limit`` to ``expired_leases`` enforces it.
    """

    min_ttl_seconds: int = 2
    checkpoint_enabled: bool = False
    checkpoint_interval_seconds: float = DEFAULT_CHECKPOINT_INTERVAL_SECONDS
    checkpoint_persist: bool = False
    expired_retry_interval_seconds: float = DEFAULT_EXPIRED_RETRY_INTERVAL_SECONDS
    revoke_rate_per_second: int = LEASE_REVOKE_RATE_PER_SECOND

    def __post_init__(self) -> None:
        if not 1 <= self.min_ttl_seconds <= MAX_LEASE_TTL_SECONDS:
            raise LessorConfigError(f"min_ttl_seconds out of range: {self.min_ttl_seconds}")
        if not self.checkpoint_interval_seconds > 0:
            raise LessorConfigError(
                f"checkpoint_interval_seconds must be > 0: {self.checkpoint_interval_seconds}"
            )
        if not self.expired_retry_interval_seconds > 0:
            raise LessorConfigError(
                f"expired_retry_interval_seconds must be > 0: {self.expired_retry_interval_seconds}"
            )
        if self.revoke_rate_per_second < 4:
            raise LessorConfigError(
                f"revoke_rate_per_second must be >= 4: {self.revoke_rate_per_second}"
            )


class _Lease:
    __slots__ = ("expiry", "id", "keys", "remaining_ttl_seconds", "ttl_seconds")

    def __init__(self, lease_id: LeaseId, ttl_seconds: int, remaining_ttl_seconds: int) -> None:
        self.id = lease_id
        self.ttl_seconds = ttl_seconds
        # 0: not checkpointed, the whole TTL applies.
        self.remaining_ttl_seconds = remaining_ttl_seconds
        # Monotonic seconds; None ("forever") whenever this lessor is not primary.
        self.expiry: float | None = None
        self.keys: set[bytes] = set()

    def countdown_seconds(self) -> int:
        """What a (re)started countdown starts from: etcd's ``Lease.RemainingTTL``."""
        return self.remaining_ttl_seconds if self.remaining_ttl_seconds > 0 else self.ttl_seconds

    def record(self) -> LeaseRecord:
        return LeaseRecord(self.id, self.ttl_seconds, self.remaining_ttl_seconds)

    def info(self) -> LeaseInfo:
        return LeaseInfo(self.id, self.ttl_seconds, self.remaining_ttl_seconds)


class _Schedule:
    """A min-heap of (time, lease) with at most one live entry per lease.

    Replacing or cancelling an entry leaves the old heap item in place; it is skipped when it
    reaches the top because its sequence number is no longer the lease's current one.
    """

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, LeaseId]] = []
        self._live: dict[LeaseId, int] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def set(self, lease_id: LeaseId, at: float) -> None:
        self._seq += 1
        self._live[lease_id] = self._seq
        heapq.heappush(self._heap, (at, self._seq, lease_id))
        # Stale items are dropped lazily; compact if they come to dominate the heap.
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
            self._heap = [it for it in self._heap if self._live.get(it[2]) == it[1]]
            heapq.heapify(self._heap)

    def cancel(self, lease_id: LeaseId) -> None:
        self._live.pop(lease_id, None)

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()

    def peek(self) -> tuple[float, LeaseId] | None:
        heap = self._heap
        while heap:
            at, seq, lease_id = heap[0]
            if self._live.get(lease_id) == seq:
                return at, lease_id
            heapq.heappop(heap)
        return None

    def pop(self) -> None:
        _at, seq, lease_id = heapq.heappop(self._heap)
        assert self._live.get(lease_id) == seq, "pop() must follow a successful peek()"
        del self._live[lease_id]


class Lessor:
    """etcd's lessor, sans I/O. See the module docstring for which calls run where."""

    def __init__(self, store: LeaseStore, clock: Clock, config: LessorConfig | None = None) -> None:
        self._store = store
        self._clock = clock
        self._config = config if config is not None else LessorConfig()
        self._leases: dict[LeaseId, _Lease] = {}
        self._key_lease: dict[bytes, LeaseId] = {}
        self._primary = False
        self._expiries = _Schedule()
        self._checkpoints = _Schedule()
        # Leases renewed while they carried a checkpoint: a checkpoint of 0 must be proposed.
        self._pending_clears: dict[LeaseId, None] = {}
        self._recover()

    def _recover(self) -> None:
        # Keys are not persisted here: the server re-attaches them from mvcc after this.
        for record in self._store.iter_leases():
            assert record.id != NO_LEASE and record.id not in self._leases, record
            ttl = max(record.ttl_seconds, self._config.min_ttl_seconds)
            self._leases[record.id] = _Lease(record.id, ttl, max(record.remaining_ttl_seconds, 0))

    @property
    def config(self) -> LessorConfig:
        return self._config

    # ------------------------------------------------------------------ replicated half

    def grant(self, lease_id: LeaseId, ttl_seconds: int) -> LeaseInfo:
        """Apply a ``LeaseGrant``; returns the lease as granted (TTL raised to the minimum).

        Raises ``LeaseNotFoundError`` for id 0 (the server must have chosen an id before
        proposing, see ``pick_lease_id``), ``LeaseTTLTooLargeError``, ``LeaseExistsError``.
        """
        if lease_id == NO_LEASE:
            raise LeaseNotFoundError(lease_id)
        if ttl_seconds > MAX_LEASE_TTL_SECONDS:
            raise LeaseTTLTooLargeError(ttl_seconds)
        if lease_id in self._leases:
            raise LeaseExistsError(lease_id)
        lease = _Lease(lease_id, max(ttl_seconds, self._config.min_ttl_seconds), 0)
        self._leases[lease_id] = lease
        self._store.put_lease(lease.record())
        if self._primary:
            now = self._clock()
            self._start_countdown(lease, now, 0.0)
            self._schedule_checkpoint(lease, now)
        return lease.info()

    def revoke(self, lease_id: LeaseId) -> list[bytes]:
        """Apply a ``LeaseRevoke``: forget the lease; returns its keys in byte order.

        The caller deletes those keys through mvcc, in the same backend transaction, in one
        revision, in that order (so every member computes the same hash). Their attachments
        are already gone when this returns, so mvcc's ``detach`` on them is a no-op.
        """
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            raise LeaseNotFoundError(lease_id)
        for key in lease.keys:
            del self._key_lease[key]
        self._expiries.cancel(lease_id)
        self._checkpoints.cancel(lease_id)
        self._pending_clears.pop(lease_id, None)
        self._store.delete_lease(lease_id)
        return sorted(lease.keys)

    def checkpoint(self, lease_id: LeaseId, remaining_ttl_seconds: int) -> None:
        """Apply one ``LeaseCheckpoint``: record the remaining TTL (0 clears it).

        Unknown leases are ignored, as in etcd: the lease may have been revoked between the
        leader producing the checkpoint and its commit.
        """
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        lease.remaining_ttl_seconds = max(remaining_ttl_seconds, 0)
        if self._config.checkpoint_persist:
            self._store.put_lease(lease.record())
        if self._primary:
            self._schedule_checkpoint(lease, self._clock())

    def attach(self, lease_id: int, key: bytes) -> None:
        """A put of ``key`` with ``lease_id`` was applied; a previous lease of the key lets go.

        Also used at start to re-attach every leased key found in mvcc. (Ids are typed ``int``
        here so that the lessor satisfies mvcc's ``LeaseHook`` as it is.)
        """
        lease = self._leases.get(LeaseId(lease_id))
        if lease is None:
            raise LeaseNotFoundError(lease_id)
        old = self._key_lease.get(key)
        if old is not None and old != lease.id:
            self._leases[old].keys.discard(key)
        lease.keys.add(key)
        self._key_lease[key] = lease.id

    def detach(self, lease_id: int, key: bytes) -> None:
        """``key`` (deleted or overwritten) no longer belongs to ``lease_id``.

        A no-op if it did not, or if the lease is gone: after ``revoke`` mvcc deletes the
        lease's keys and detaches them from the revoked lease (etcd's ``Detach`` returns
        ErrLeaseNotFound there, which its mvcc only logs).
        """
        if self._key_lease.get(key) == lease_id:
            self._leases[LeaseId(lease_id)].keys.discard(key)
            del self._key_lease[key]

    def detach_key(self, key: bytes) -> LeaseId:
        """``key`` was deleted, or put without a lease: drop its attachment, whatever it is.

        Returns the lease it was attached to, or ``NO_LEASE``.
        """
        lease_id = self._key_lease.pop(key, NO_LEASE)
        if lease_id != NO_LEASE:
            self._leases[lease_id].keys.discard(key)
        return lease_id

    def lease_exists(self, lease_id: int) -> bool:
        """For mvcc's check before a put with a lease (``LeaseHook``)."""
        return lease_id in self._leases

    def lookup(self, lease_id: LeaseId) -> LeaseInfo | None:
        lease = self._leases.get(lease_id)
        return None if lease is None else lease.info()

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def leases(self) -> list[LeaseInfo]:
        """Every lease (``LeaseLeases``), soonest expiry first on the primary, then by id."""
        inf = math.inf
        ordered = sorted(
            self._leases.values(),
            key=lambda le: (inf if le.expiry is None else le.expiry, le.id),
        )
        return [lease.info() for lease in ordered]

    def keys(self, lease_id: LeaseId) -> list[bytes]:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError(lease_id)
        return sorted(lease.keys)

    def lease_of(self, key: bytes) -> LeaseId:
        """The lease ``key`` is attached to, or ``NO_LEASE`` (etcd's ``GetLease``)."""
        return self._key_lease.get(key, NO_LEASE)

    def pick_lease_id(self, rng: random.Random) -> LeaseId:
        """A random id in [1, 2**63 - 1] not in use now, for a ``LeaseGrant`` with ID 0.

        Called by the leader at propose time, never at apply time: the chosen id travels in the
        proposal. A grant that collides anyway (another grant with the same id committed first)
        fails at apply with ``LeaseExistsError``; the server may pick again and retry.
        """
        while True:
            lease_id = LeaseId(rng.getrandbits(63))
            if lease_id != NO_LEASE and lease_id not in self._leases:
                assert lease_id <= LEASE_ID_MAX
                return lease_id

    # ------------------------------------------------------------------ leader half

    @property
    def is_primary(self) -> bool:
        return self._primary

    def promote(self, extend_seconds: float) -> None:
        """This member leads and has applied its term's first (empty) entry.

        Every lease's countdown restarts: expiry = now + remaining TTL + ``extend_seconds``
        (etcd passes the election timeout). If that would make more than 3/4 of the revoke rate
        expire within one second, the later ones are pushed back so that revokes do not pile
        up (etcd's pile-up spreading).
        """
        assert extend_seconds >= 0
        self._primary = True
        now = self._clock()
        for lease in self._leases.values():
            self._start_countdown(lease, now, extend_seconds)
            self._schedule_checkpoint(lease, now)
        rate = self._config.revoke_rate_per_second
        if len(self._leases) < rate:
            return
        ordered = sorted(self._leases.values(), key=self._expiry_key)
        base_window = self._remaining(ordered[0], now)
        next_window = base_window + 1.0
        expires = 0
        target_per_second = (3 * rate) // 4
        for lease in ordered:
            remaining = self._remaining(lease, now)
            if remaining > next_window:
                base_window = remaining
                next_window = base_window + 1.0
                expires = 1
                continue
            expires += 1
            if expires <= target_per_second:
                continue
            # The n-th lease over the target waits n/target seconds past the window's start,
            # less how far into the window it already was.
            delay_seconds = expires / target_per_second - (remaining - base_window)
            next_window = base_window + delay_seconds
            self._start_countdown(lease, now, delay_seconds + extend_seconds)
            self._schedule_checkpoint(lease, now)

    def demote(self) -> None:
        """This member no longer leads: nothing expires here any more."""
        self._primary = False
        for lease in self._leases.values():
            lease.expiry = None
        self._expiries.clear()
        self._checkpoints.clear()
        self._pending_clears.clear()

    def renew(self, lease_id: LeaseId) -> int:
        """A keep-alive: restart the lease's countdown at its full TTL; returns the TTL.

        Raises ``NotPrimaryError`` (forward to the leader), ``LeaseNotFoundError``, or
        ``LeaseExpiredError`` if the lease expired and its revoke is not applied yet. If the
        lease carried a checkpoint, a clearing checkpoint (remaining 0) is queued: it comes
        first out of the next ``due_checkpoints`` call.
        """
        if not self._primary:
            raise NotPrimaryError()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError(lease_id)
        now = self._clock()
        assert lease.expiry is not None
        if lease.expiry <= now:
            raise LeaseExpiredError(lease_id)
        if self._config.checkpoint_enabled and lease.remaining_ttl_seconds > 0:
            self._pending_clears[lease_id] = None
        # The full TTL, not a stale checkpoint: the client is told it has ttl_seconds.
        lease.expiry = now + lease.ttl_seconds
        self._expiries.set(lease_id, lease.expiry)
        return lease.ttl_seconds

    def time_to_live(self, lease_id: LeaseId, *, with_keys: bool = False) -> TimeToLive:
        """``LeaseTimeToLive`` on the primary (a follower forwards it: ``NotPrimaryError``)."""
        if not self._primary:
            raise NotPrimaryError()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError(lease_id)
        remaining = self._remaining(lease, self._clock())
        return TimeToLive(
            id=lease_id,
            ttl_seconds=int(remaining),  # truncation toward zero, as Go's int64(float64)
            granted_ttl_seconds=lease.ttl_seconds,
            keys=tuple(sorted(lease.keys)) if with_keys else (),
        )

    def remaining_seconds(self, lease_id: LeaseId) -> float | None:
        """The exact time left on the primary (None when not primary); for metrics and tests."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError(lease_id)
        if lease.expiry is None:
            return None
        return lease.expiry - self._clock()

    def expired_leases(self, limit: int) -> list[LeaseId]:
        """Up to ``limit`` leases whose expiry has passed, soonest first, to revoke.

        The server proposes a ``LeaseRevoke`` for each. A lease handed out is not handed out
        again for ``expired_retry_interval_seconds``; if its revoke has not been applied by
        then (lost proposal, leader change), it is handed out again. Call it every
        ``LESSOR_TICK_SECONDS`` with ``REVOKE_LIMIT_PER_TICK`` to revoke at etcd's rate.
        """
        assert limit >= 0
        if not self._primary:
            return []
        now = self._clock()
        retry_at = now + self._config.expired_retry_interval_seconds
        expired: list[LeaseId] = []
        while len(expired) < limit:
            head = self._expiries.peek()
            if head is None or head[0] > now:
                break
            lease_id = head[1]
            lease = self._leases[lease_id]  # revoke cancels the entry, so the lease exists
            self._expiries.set(lease_id, retry_at)
            assert lease.expiry is not None and lease.expiry <= now
            expired.append(lease_id)
        return expired

    def due_checkpoints(self, limit: int) -> list[LeaseCheckpoint]:
        """Up to ``limit`` checkpoints to propose (one ``LeaseCheckpointRequest``).

        First the clears queued by ``renew``, then leases whose checkpoint time has come and
        whose rounded-up remaining TTL is below their TTL. Empty unless checkpointing is on
        and this lessor is primary. Use ``CHECKPOINT_BATCH_MAX`` as the limit per entry.
        """
        assert limit >= 0
        if not (self._primary and self._config.checkpoint_enabled):
            return []
        out: list[LeaseCheckpoint] = []
        while self._pending_clears and len(out) < limit:
            lease_id = next(iter(self._pending_clears))
            del self._pending_clears[lease_id]
            out.append(LeaseCheckpoint(lease_id, 0))
        now = self._clock()
        while len(out) < limit:
            head = self._checkpoints.peek()
            if head is None or head[0] > now:
                break
            lease_id = head[1]
            self._checkpoints.pop()
            lease = self._leases[lease_id]
            assert lease.expiry is not None
            if now >= lease.expiry:
                continue  # expired: its revoke is what matters now
            remaining_ttl = math.ceil(lease.expiry - now)
            if remaining_ttl >= lease.ttl_seconds:
                # Just renewed: nothing worth recording, look again one interval later.
                self._schedule_checkpoint(lease, now)
                continue
            out.append(LeaseCheckpoint(lease_id, remaining_ttl))
        return out

    def has_pending_checkpoints(self) -> bool:
        """True if ``due_checkpoints`` would return clears right now (after a renew)."""
        return bool(self._pending_clears) and self._primary

    # ------------------------------------------------------------------ internals

    def _start_countdown(self, lease: _Lease, now: float, extend_seconds: float) -> None:
        lease.expiry = now + extend_seconds + lease.countdown_seconds()
        self._expiries.set(lease.id, lease.expiry)

    def _schedule_checkpoint(self, lease: _Lease, now: float) -> None:
        interval = self._config.checkpoint_interval_seconds
        # etcd compares against int64(interval.Seconds()).
        if self._config.checkpoint_enabled and lease.countdown_seconds() > int(interval):
            self._checkpoints.set(lease.id, now + interval)

    @staticmethod
    def _expiry_key(lease: _Lease) -> tuple[float, int]:
        return (math.inf if lease.expiry is None else lease.expiry, lease.id)

    @staticmethod
    def _remaining(lease: _Lease, now: float) -> float:
        assert lease.expiry is not None
        return lease.expiry - now
