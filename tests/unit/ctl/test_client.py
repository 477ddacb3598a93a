"""petcd.client against small in-process gRPC servers (loopback, no etcd).

The servicers below answer just enough of the etcd API to observe what the
client does: which endpoint it uses, which metadata it sends, how it fails
over and how it reports errors.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.client import (
    Client,
    CompactedError,
    DeadlineExceededError,
    EtcdServerError,
    UnavailableError,
)


@dataclass
class State:
    name: str
    tokens_seen: list[str | None] = field(default_factory=list)
    logins: int = 0
    expire_next_token: bool = False


class KV(rpc_pb2_grpc.KVServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def Range(self, request: Any, context: Any) -> Any:
        token = dict(context.invocation_metadata()).get("token")
        self.state.tokens_seen.append(token)
        if self.state.expire_next_token and token is not None:
            self.state.expire_next_token = False
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
        if request.revision == 1:
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                "etcdserver: mvcc: required revision has been compacted",
            )
        return rpc_pb2.RangeResponse(
            header=rpc_pb2.ResponseHeader(member_id=1 if self.state.name == "a" else 2),
            count=len(request.key),
        )


class Auth(rpc_pb2_grpc.AuthServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def Authenticate(self, request: Any, context: Any) -> Any:
        if request.password != "pw":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
            )
        self.state.logins += 1
        return rpc_pb2.AuthenticateResponse(token=f"{request.name}.{self.state.logins}")


@pytest.fixture
def server() -> Iterator[tuple[str, State]]:
    state = State("a")
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc_pb2_grpc.add_KVServicer_to_server(KV(state), srv)  # type: ignore[no-untyped-call]
    rpc_pb2_grpc.add_AuthServicer_to_server(Auth(state), srv)  # type: ignore[no-untyped-call]
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", state
    srv.stop(None)


def _dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_get_reaches_the_server_and_maps_errors(server: tuple[str, State]) -> None:
    endpoint, _ = server
    with Client([f"http://{endpoint}"]) as client:
        assert client.get(b"abc").count == 3
        with pytest.raises(CompactedError) as info:
            client.get(b"k", revision=1)
        assert str(info.value) == "etcdserver: mvcc: required revision has been compacted"


def test_fails_over_to_the_next_endpoint(server: tuple[str, State]) -> None:
    endpoint, _ = server
    with Client([_dead_endpoint(), endpoint], command_timeout_s=5.0) as client:
        assert client.get(b"k").header.member_id == 1
        # the client now sticks to the endpoint that answered
        assert client.endpoints[client._current] == endpoint


def test_only_dead_endpoints_time_out_like_etcdctl() -> None:
    with (
        Client([_dead_endpoint()], command_timeout_s=0.3) as client,
        pytest.raises(DeadlineExceededError) as info,
    ):
        client.get(b"k")
    assert str(info.value) == "context deadline exceeded"
    with (
        Client([_dead_endpoint(), _dead_endpoint()], command_timeout_s=0.3) as client,
        pytest.raises((DeadlineExceededError, UnavailableError)),
    ):
        client.get(b"k")


def test_authenticates_once_and_sends_the_token(server: tuple[str, State]) -> None:
    endpoint, state = server
    with Client([endpoint], username="root", password="pw") as client:
        client.get(b"k")
        client.get(b"k")
    assert state.tokens_seen == ["root.1", "root.1"]
    assert state.logins == 1


def test_renews_an_expired_token_once(server: tuple[str, State]) -> None:
    endpoint, state = server
    with Client([endpoint], username="root", password="pw") as client:
        client.get(b"k")
        state.expire_next_token = True
        client.get(b"k")
    assert state.tokens_seen == ["root.1", "root.1", "root.2"]


def test_bad_password_is_reported_with_etcds_text(server: tuple[str, State]) -> None:
    endpoint, _ = server
    with (
        Client([endpoint], username="root", password="nope") as client,
        pytest.raises(EtcdServerError) as info,
    ):
        client.get(b"k")
    assert str(info.value) == "etcdserver: authentication failed, invalid user ID or password"
