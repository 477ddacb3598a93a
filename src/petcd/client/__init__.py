"""petcd.client: Python clients (sync and asyncio) for the etcd v3 API."""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from petcd.client.aio import AsyncClient


def __getattr__(name: str) -> Any:
    # AsyncClient pulls in asyncio and grpc.aio (a third of petcdctl's start-up
    # time); import it only when someone asks for it.
    if name == "AsyncClient":
        from petcd.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
