"""petcd.client: a Python client for the etcd v3 API (KV, Maintenance, Cluster)."""

from petcd.client.client import Client, TLSConfig, normalize_endpoint, prefix_range_end
from petcd.client.errors import (
    ClientError,
    CompactedError,
    DeadlineExceededError,
    EtcdServerError,
    FutureRevisionError,
    LeaseNotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

__all__ = [
    "Client",
    "ClientError",
    "CompactedError",
    "DeadlineExceededError",
    "EtcdServerError",
    "FutureRevisionError",
    "LeaseNotFoundError",
    "PermissionDeniedError",
    "TLSConfig",
    "UnavailableError",
    "normalize_endpoint",
    "prefix_range_end",
]
