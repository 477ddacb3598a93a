"""petcd.lease: the lessor (etcd's lease state machine), sans I/O.

See ``petcd.lease.lessor`` for which calls the server makes at apply time on every member and
which only on the leader, and ``docs/design/lease.md`` for how the server drives it.
"""

from petcd.lease.errors import (
    LeaseDecodeError,
    LeaseError,
    LeaseExistsError,
    LeaseExpiredError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    LessorConfigError,
    NotPrimaryError,
)
from petcd.lease.lessor import Clock, Lessor, LessorConfig
from petcd.lease.store import (
    BucketLeaseStore,
    LeaseBucket,
    LeaseStore,
    MemoryLeaseStore,
    decode_lease_key,
    decode_lease_record,
    encode_lease_key,
    encode_lease_record,
)
from petcd.lease.types import (
    CHECKPOINT_BATCH_MAX,
    DEFAULT_CHECKPOINT_INTERVAL_SECONDS,
    DEFAULT_EXPIRED_RETRY_INTERVAL_SECONDS,
    LEASE_ID_MAX,
    LEASE_REVOKE_RATE_PER_SECOND,
    LESSOR_TICK_SECONDS,
    MAX_LEASE_TTL_SECONDS,
    NO_LEASE,
    REVOKE_LIMIT_PER_TICK,
    LeaseCheckpoint,
    LeaseId,
    LeaseInfo,
    LeaseRecord,
    TimeToLive,
    min_lease_ttl_seconds,
)

__all__ = [
    "CHECKPOINT_BATCH_MAX",
    "DEFAULT_CHECKPOINT_INTERVAL_SECONDS",
    "DEFAULT_EXPIRED_RETRY_INTERVAL_SECONDS",
    "LEASE_ID_MAX",
    "LEASE_REVOKE_RATE_PER_SECOND",
    "LESSOR_TICK_SECONDS",
    "MAX_LEASE_TTL_SECONDS",
    "NO_LEASE",
    "REVOKE_LIMIT_PER_TICK",
    "BucketLeaseStore",
    "Clock",
    "LeaseBucket",
    "LeaseCheckpoint",
    "LeaseDecodeError",
    "LeaseError",
    "LeaseExistsError",
    "LeaseExpiredError",
    "LeaseId",
    "LeaseInfo",
    "LeaseNotFoundError",
    "LeaseRecord",
    "LeaseStore",
    "LeaseTTLTooLargeError",
    "Lessor",
    "LessorConfig",
    "LessorConfigError",
    "MemoryLeaseStore",
    "NotPrimaryError",
    "TimeToLive",
    "decode_lease_key",
    "decode_lease_record",
    "encode_lease_key",
    "encode_lease_record",
    "min_lease_ttl_seconds",
]
