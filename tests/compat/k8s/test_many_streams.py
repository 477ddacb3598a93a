"""Many watch streams on one connection, as an apiserver opens one per resource type.

Theory of operation: one gRPC channel (one HTTP/2 connection) carries
``STREAMS`` Watch calls, each with one watcher on the same prefix and the
``hasleader`` metadata. One put must reach every stream. The same put runs on
the reference and on the target, which keeps their revisions equal.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.servers import ServerProcess

STREAMS = 150
TIMEOUT_S = 30.0


def _fan_out(endpoint: str) -> tuple[int, list[tuple[int, int]]]:
    done = threading.Event()
    responses: queue.Queue[Any] = queue.Queue()
    with grpc.insecure_channel(endpoint) as channel:
        stub = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]

        def requests() -> Iterator[Any]:
            yield rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(key=b"/k8s/fan/", range_end=b"/k8s/fan0")
            )
            done.wait(TIMEOUT_S)

        def read(call: Any, i: int) -> None:
            try:
                for resp in call:
                    responses.put((i, resp))
            except grpc.RpcError as exc:
                responses.put((i, exc))

        calls = [stub.Watch(requests(), metadata=(("hasleader", "true"),)) for _ in range(STREAMS)]
        readers = [
            threading.Thread(target=read, args=(call, i), daemon=True)
            for i, call in enumerate(calls)
        ]
        for reader in readers:
            reader.start()
        try:
            created = 0
            while created < STREAMS:
                i, resp = responses.get(timeout=TIMEOUT_S)
                assert not isinstance(resp, grpc.RpcError), (i, resp)
                assert resp.created, resp
                created += 1
            kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
            revision = kv.Put(rpc_pb2.PutRequest(key=b"/k8s/fan/x", value=b"v")).header.revision
            events: list[tuple[int, int]] = []
            while len(events) < STREAMS:
                i, resp = responses.get(timeout=TIMEOUT_S)
                assert not isinstance(resp, grpc.RpcError), (i, resp)
                events += [(i, ev.kv.mod_revision) for ev in resp.events]
        finally:
            done.set()
            for call in calls:
                call.cancel()
    return revision, sorted(events)


def test_one_put_reaches_every_watch_stream_of_a_connection(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    ref = _fan_out(servers[0].endpoint)
    tgt = _fan_out(servers[1].endpoint)
    assert ref[1] == [(i, ref[0]) for i in range(STREAMS)]
    assert tgt == ref
