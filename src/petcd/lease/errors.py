"""Named errors of the lessor (``petcd.lease``).

Theory of operation
-------------------
Expected outcomes of lessor calls are exceptions named here. ``petcd.grpc`` is the only place
that turns them into gRPC statuses; each class documents the etcd error it stands for (status
code and message), so that the mapping is mechanical. Invariant violations are assertions,
never one of these.

Two of them are *not* meant for clients: ``NotPrimaryError`` and ``LeaseExpiredError`` tell the
server to do something else (forward to the leader, wait for the revoke), exactly as etcd's
``lease.ErrNotPrimary`` and its wait on ``revokec`` do.
"""

from __future__ import annotations


class LeaseError(Exception):
    """Base class of every expected error raised by ``petcd.lease``."""


class LeaseNotFoundError(LeaseError):
    """etcd: ``etcdserver: requested lease not found`` (NOT_FOUND).

    Raised for an unknown lease id, and for lease id 0 on grant (etcd's ``NoLease``).
    """

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} not found")
        self.lease_id = lease_id


class LeaseExistsError(LeaseError):
    """etcd: ``etcdserver: lease already exists`` (FAILED_PRECONDITION)."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} already exists")
        self.lease_id = lease_id


class LeaseTTLTooLargeError(LeaseError):
    """etcd: ``etcdserver: too large lease TTL`` (OUT_OF_RANGE); the TTL exceeds MaxLeaseTTL."""

    def __init__(self, ttl_seconds: int) -> None:
        super().__init__(f"lease TTL {ttl_seconds} s is too large")
        self.ttl_seconds = ttl_seconds


class NotPrimaryError(LeaseError):
    """etcd's internal ``lease.ErrNotPrimary`` ("not a primary lessor").

    Leader-only calls (renew, time-to-live) on a lessor that is not promoted. etcd never shows
    this to a client: the server forwards the request to the leader (and retries while the
    leadership settles); petcd's server must do the same.
    """

    def __init__(self) -> None:
        super().__init__("not a primary lessor")


class LeaseExpiredError(LeaseNotFoundError):
    """Renew of a lease whose expiry has passed but whose revoke is not applied yet.

    etcd's ``Renew`` then waits: when the revoke is applied it answers ``ErrLeaseNotFound``;
    if this member is demoted first it answers ``ErrNotPrimary`` (the client retries on the new
    leader). A server that does not wait may treat it as ``LeaseNotFoundError`` (its base
    class), which is what the client ends up seeing in the common case.
    """


class LeaseDecodeError(LeaseError):
    """A persisted lease record cannot be decoded: the data directory is corrupt (fatal)."""


class LessorConfigError(LeaseError, ValueError):
    """A ``LessorConfig`` value is out of range."""
