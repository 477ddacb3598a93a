"""A watch stream opened while auth was off, used after auth was turned on: etcd 3.4 and petcd.

etcd checks every watch a stream creates against the stream's credentials at creation. A
stream opened without a token while auth was off has no user once auth is on: the watches it
creates from then on are refused (created and canceled at once, "user name is empty"), while
the one it created before keeps its events. Both servers get the same calls; what they answer
must be the same.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.servers import ServerProcess, available_targets

TARGETS = [t for t in ("etcd", "petcd") if t in available_targets()]


def _scenario(endpoint: str) -> list[Any]:
    seen: list[Any] = []
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        auth = rpc_pb2_grpc.AuthStub(ch)  # type: ignore[no-untyped-call]
        requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        answers: queue.Queue[Any] = queue.Queue()

        def send() -> Iterator[rpc_pb2.WatchRequest]:
            while (r := requests.get()) is not None:
                yield r

        stream = rpc_pb2_grpc.WatchStub(ch).Watch(send())  # type: ignore[no-untyped-call]

        def receive() -> None:
            try:
                for resp in stream:
                    answers.put(resp)
            except grpc.RpcError as e:
                answers.put(e.code())

        threading.Thread(target=receive, daemon=True).start()

        def create(key: bytes) -> None:
            requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key)))

        def next_answer(timeout_s: float = 5.0) -> Any:
            try:
                r = answers.get(timeout=timeout_s)
            except queue.Empty:
                return "nothing"
            if not isinstance(r, rpc_pb2.WatchResponse):
                return r
            return (
                r.created,
                r.canceled,
                r.cancel_reason,
                r.watch_id,
                [e.kv.key for e in r.events],
            )

        try:
            create(b"a")
            seen.append(next_answer())
            auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="root"), timeout=10)
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="pw"), timeout=10)
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
            auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)
            token = auth.Authenticate(
                rpc_pb2.AuthenticateRequest(name="root", password="pw"), timeout=10
            ).token
            root = [("token", token)]
            kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), metadata=root, timeout=10)
            seen.append(next_answer())  # the watch made before auth keeps its events
            create(b"b")
            seen.append(next_answer())  # refused: the stream has no user
            kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"1"), metadata=root, timeout=10)
            seen.append(next_answer(timeout_s=1.0))  # no event: there is no watch on b
        finally:
            requests.put(None)
    return seen


@pytest.mark.parametrize("target", TARGETS)
def test_watches_created_after_auth_on_need_a_user(target: str, tmp_path: Path) -> None:
    server = ServerProcess(target, tmp_path / "data")
    server.start()
    try:
        seen = _scenario(server.endpoint)
    finally:
        server.stop()
    assert seen == [
        (True, False, "", 0, []),
        (False, False, "", 0, [b"a"]),
        (
            True,
            True,
            "rpc error: code = InvalidArgument desc = etcdserver: user name is empty",
            -1,
            [],
        ),
        "nothing",
    ]
