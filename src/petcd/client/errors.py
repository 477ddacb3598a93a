"""Errors raised by :mod:`petcd.client`.

Theory of operation: every failed call raises a :class:`ClientError`. A failure
reported by the server is an :class:`EtcdServerError` carrying the gRPC status
code and etcd's exact message (``etcdserver: mvcc: required revision has been
compacted``); well-known messages get their own subclass so that callers can
catch them by type. A call that ran out of time on the client side is a
:class:`DeadlineExceededError`. ``str(error)`` is the text etcd's Go client (and
so etcdctl) prints for the same failure: the bare etcd message when the server
sent an ``etcdserver:`` error, ``context deadline exceeded`` for a client-side
timeout, and ``rpc error: code = <Code> desc = <message>`` otherwise.
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """Base class of every error raised by the client."""


class DeadlineExceededError(ClientError):
    """The call did not complete within the client's timeout."""

    def __str__(self) -> str:
        return "context deadline exceeded"


def _code_name(code: grpc.StatusCode) -> str:
    # grpc-go spells codes in CamelCase (``FailedPrecondition``), Python in
    # UPPER_SNAKE (``FAILED_PRECONDITION``).
    return "".join(part.capitalize() for part in code.name.split("_"))


class EtcdServerError(ClientError):
    """An error status returned by the server."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        if self.message.startswith("etcdserver: "):
            return self.message
        return f"rpc error: code = {_code_name(self.code)} desc = {self.message}"


class CompactedError(EtcdServerError):
    """The requested revision has been compacted."""


class FutureRevisionError(EtcdServerError):
    """The requested revision is newer than the store's current revision."""


class LeaseNotFoundError(EtcdServerError):
    """The lease does not exist (or has expired)."""


class PermissionDeniedError(EtcdServerError):
    """Authentication is enabled and the user may not do this."""


class UnavailableError(EtcdServerError):
    """No endpoint could serve the call (connection refused, no leader, ...)."""


_BY_MESSAGE: dict[str, type[EtcdServerError]] = {
    "etcdserver: mvcc: required revision has been compacted": CompactedError,
    "etcdserver: mvcc: required revision is a future revision": FutureRevisionError,
    "etcdserver: requested lease not found": LeaseNotFoundError,
    "etcdserver: permission denied": PermissionDeniedError,
}


def from_rpc_error(error: grpc.RpcError) -> ClientError:
    """Translate a grpc error into the matching :class:`ClientError`."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (error.details() if isinstance(error, grpc.Call) else None) or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not message.startswith("etcdserver: "):
        return DeadlineExceededError()
    cls = _BY_MESSAGE.get(message)
    if cls is None:
        cls = UnavailableError if code == grpc.StatusCode.UNAVAILABLE else EtcdServerError
    return cls(code, message)
