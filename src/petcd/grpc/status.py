"""The one place that maps petcd's named errors to gRPC status codes and etcd's messages.

Theory of operation
-------------------
Clients (etcdctl, clientv3, Kubernetes) match on etcd's exact status code and message text, as
listed in etcd's ``api/v3rpc/rpctypes``. Lower layers raise named exceptions
(``petcd.mvcc.errors``, ``petcd.server.errors``, ``petcd.backend.errors``,
``petcd.lease.errors``, ``petcd.auth.errors``); ``status_for`` turns one into the
``(StatusCode, message)`` etcd would send. An exception that is not an expected error is a
bug: it maps to ``UNKNOWN`` with its text, and the service logs it.
"""

from __future__ import annotations

import grpc

from petcd.auth.errors import AuthError
from petcd.backend.errors import DatabaseSpaceExceededError
from petcd.lease import errors as lease_errors
from petcd.mvcc.errors import MvccError
from petcd.server import errors as server_errors

ERR_NO_SPACE = "etcdserver: mvcc: database space exceeded"

_SERVER: dict[type[Exception], tuple[grpc.StatusCode, str]] = {
    server_errors.NoLeaderError: (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"),
    server_errors.LeaderChangedError: (grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed"),
    server_errors.RequestTimeoutError: (
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: request timed out",
    ),
    server_errors.StoppedError: (grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped"),
    server_errors.BadLeaderTransfereeError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: bad leader transferee",
    ),
    server_errors.LeaderTransferTimeoutError: (
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: request timed out, leader transfer took too long",
    ),
    server_errors.NotLeaderError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: not leader",
    ),
    server_errors.RequestTooLargeError: (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: request is too large",
    ),
    server_errors.NoSpaceError: (grpc.StatusCode.RESOURCE_EXHAUSTED, ERR_NO_SPACE),
    server_errors.CorruptError: (grpc.StatusCode.DATA_LOSS, "etcdserver: corrupt cluster"),
}

_LEASE: dict[type[Exception], tuple[grpc.StatusCode, str]] = {
    lease_errors.LeaseNotFoundError: (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    ),
    lease_errors.LeaseExistsError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: lease already exists",
    ),
    lease_errors.LeaseTTLTooLargeError: (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: too large lease TTL",
    ),
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """etcd's gRPC status code and message for ``exc``."""
    if isinstance(exc, MvccError | AuthError):
        return getattr(grpc.StatusCode, exc.grpc_code), exc.message
    if isinstance(exc, DatabaseSpaceExceededError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, ERR_NO_SPACE
    for table in (_SERVER, _LEASE):
        for cls in type(exc).__mro__:
            found = table.get(cls)
            if found is not None:
                return found
    return grpc.StatusCode.UNKNOWN, str(exc) or type(exc).__name__


def is_expected(exc: BaseException) -> bool:
    """True for the named errors of the lower layers (not a bug)."""
    return isinstance(
        exc,
        MvccError
        | AuthError
        | DatabaseSpaceExceededError
        | server_errors.RequestError
        | lease_errors.LeaseError,
    )
