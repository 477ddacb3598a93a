"""The values the lessor hands to and takes from its caller: ids, records, checkpoints.

Theory of operation
-------------------
Plain immutable values and etcd's constants. ``LeaseRecord`` is what is persisted per lease
(etcd's ``leasepb.Lease``: id, TTL, remaining TTL); ``LeaseCheckpoint`` is one element of a
``LeaseCheckpointRequest`` the leader proposes through raft; ``TimeToLive`` is the answer to
``LeaseTimeToLive``; ``LeaseInfo`` is a read-only view of one lease. Nothing here does I/O.

Invariants
----------
- ``LeaseId`` 0 (``NO_LEASE``) is "no lease": a key without a lease; never a granted lease.
- A granted lease has ``min_ttl_seconds <= ttl_seconds <= MAX_LEASE_TTL_SECONDS``.
- ``remaining_ttl_seconds == 0`` means "not checkpointed": the full TTL applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

LeaseId = NewType("LeaseId", int)

NO_LEASE = LeaseId(0)

# etcd's lease.MaxLeaseTTL: a larger TTL is refused with "too large lease TTL".
MAX_LEASE_TTL_SECONDS = 9_000_000_000

# etcd's lessor drives its leader-side work from a loop every 500 ms, handing out at most
# leaseRevokeRate / 2 expired leases per round (so at most 1000 revokes a second), and lease
# checkpoints in batches of at most 1000 per raft entry.
LESSOR_TICK_SECONDS = 0.5
LEASE_REVOKE_RATE_PER_SECOND = 1000
REVOKE_LIMIT_PER_TICK = LEASE_REVOKE_RATE_PER_SECOND // 2
CHECKPOINT_BATCH_MAX = 1000

# etcd's defaults: --experimental-lease-checkpoint-interval and the interval after which an
# expired lease handed out for revoking is handed out again if its revoke did not happen.
DEFAULT_CHECKPOINT_INTERVAL_SECONDS = 300.0
DEFAULT_EXPIRED_RETRY_INTERVAL_SECONDS = 3.0

# Lease ids the server picks are non-negative int64 values, as etcd's (id & (1<<63 - 1)).
LEASE_ID_MAX = (1 << 63) - 1


def min_lease_ttl_seconds(election_ticks: int, heartbeat_ms: int) -> int:
    """etcd's minimum lease TTL: ``ceil(((3 * election_ticks) // 2) * heartbeat / 1 s)``.

    A lease granted (or recovered) with a shorter TTL gets this one: it must outlive a leader
    election, or every leader change would expire it. With etcd's defaults (heartbeat 100 ms,
    election 1000 ms, so 10 election ticks) this is 2 seconds.
    """
    assert election_ticks > 0 and heartbeat_ms > 0
    min_ttl_ms = ((3 * election_ticks) // 2) * heartbeat_ms
    return -(-min_ttl_ms // 1000)


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The persisted form of one lease (etcd's ``leasepb.Lease``)."""

    id: LeaseId
    ttl_seconds: int
    remaining_ttl_seconds: int = 0


@dataclass(frozen=True, slots=True)
class LeaseCheckpoint:
    """One checkpoint to propose through raft (etcd's ``LeaseCheckpoint``)."""

    id: LeaseId
    remaining_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A read-only view of one lease, the same on every member."""

    id: LeaseId
    ttl_seconds: int
    remaining_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class TimeToLive:
    """The answer to ``LeaseTimeToLive`` on the primary.

    ``ttl_seconds`` is the time left, truncated toward zero as etcd's ``int64(d.Seconds())``
    does (it may be 0 or negative for an expired lease whose revoke is still in flight);
    ``granted_ttl_seconds`` is the TTL the lease was granted with; ``keys`` are the attached
    keys in byte order (empty unless asked for).
    """

    id: LeaseId
    ttl_seconds: int
    granted_ttl_seconds: int
    keys: tuple[bytes, ...] = ()
