"""petcd.client's error mapping and key helpers (used by petcdctl for its messages)."""

from __future__ import annotations

import grpc
import pytest

from petcd.client import (
    CompactedError,
    DeadlineExceededError,
    EtcdServerError,
    FutureRevisionError,
    LeaseNotFoundError,
    UnavailableError,
    normalize_endpoint,
    prefix_range_end,
)
from petcd.client.errors import from_rpc_error


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> None: ...
    def trailing_metadata(self) -> None: ...
    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None: ...
    def cancel(self) -> None: ...
    def add_callback(self, callback: object) -> None: ...


@pytest.mark.parametrize(
    ("code", "details", "kind", "text"),
    [
        (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
            CompactedError,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
            FutureRevisionError,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            grpc.StatusCode.NOT_FOUND,
            "etcdserver: requested lease not found",
            LeaseNotFoundError,
            "etcdserver: requested lease not found",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "connection refused",
            UnavailableError,
            "rpc error: code = Unavailable desc = connection refused",
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            "something",
            EtcdServerError,
            "rpc error: code = FailedPrecondition desc = something",
        ),
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "Deadline Exceeded",
            DeadlineExceededError,
            "context deadline exceeded",
        ),
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "etcdserver: request timed out",
            EtcdServerError,
            "etcdserver: request timed out",
        ),
    ],
)
def test_grpc_errors_map_to_etcd_client_errors(
    code: grpc.StatusCode, details: str, kind: type, text: str
) -> None:
    error = from_rpc_error(FakeRpcError(code, details))
    assert type(error) is kind
    assert str(error) == text


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"abc") == b"abd"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\x00"
    assert prefix_range_end(b"") == b"\x00"


def test_normalize_endpoint() -> None:
    assert normalize_endpoint("http://127.0.0.1:2379") == ("127.0.0.1:2379", False)
    assert normalize_endpoint("https://h:1/") == ("h:1", True)
    assert normalize_endpoint("h:1") == ("h:1", False)
