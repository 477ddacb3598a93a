"""petcd.client: Python clients (sync and asyncio) for the etcd v3 API."""

from petcd.client.aio import AsyncClient
from petcd.client.client import Client, TLSConfig, normalize_endpoint
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
from petcd.client.requests import prefix_range_end

__all__ = [
    "AsyncClient",
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
