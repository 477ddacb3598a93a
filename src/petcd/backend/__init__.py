"""petcd.backend: the transactional store under mvcc, lease, auth and membership (LMDB)."""

from petcd.backend.backend import (
    ALARM,
    AUTH,
    AUTH_ROLES,
    AUTH_USERS,
    BUCKETS,
    CLUSTER,
    CONSISTENT_INDEX_KEY,
    KEY,
    LEASE,
    MEMBERS,
    MEMBERS_REMOVED,
    META,
    V2,
    Backend,
    ReadLease,
    read_consistent_index,
)
from petcd.backend.errors import (
    BackendClosedError,
    BackendError,
    DatabaseSpaceExceededError,
    UnknownBucketError,
)

__all__ = [
    "ALARM",
    "AUTH",
    "AUTH_ROLES",
    "AUTH_USERS",
    "BUCKETS",
    "CLUSTER",
    "CONSISTENT_INDEX_KEY",
    "KEY",
    "LEASE",
    "MEMBERS",
    "MEMBERS_REMOVED",
    "META",
    "V2",
    "Backend",
    "BackendClosedError",
    "BackendError",
    "DatabaseSpaceExceededError",
    "ReadLease",
    "UnknownBucketError",
    "read_consistent_index",
]
