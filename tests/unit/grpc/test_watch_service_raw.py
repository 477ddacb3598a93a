"""The Watch service writing pre-serialized responses: same stream as with protobuf messages.

Runs the service over the in-process member of ``test_election_lock`` (a real WatchableStore,
writes applied at once), once with messages and once with bytes (``raw``), and once through a
real grpc.aio server registered by ``add_watch_service`` with grpc's own client stub.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.mvccpb import kv_pb2
from petcd.grpc.watch import WatchService, add_watch_service
from petcd.mvcc.requests import DeleteRangeRequest, PutRequest
from tests.unit.grpc.test_election_lock import FakeContext, StoreMember, settle


def create(key: bytes, *, prev_kv: bool = False, range_end: bytes = b"") -> Any:
    return rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(key=key, range_end=range_end, prev_kv=prev_kv)
    )


async def requests(q: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        yield await q.get()


async def drive(member: StoreMember, raw: bool) -> list[Any]:
    """Three watchers (one with prev_kv, one on a range), then writes; the parsed stream."""
    service = WatchService(member)
    service.raw = raw
    ctx = FakeContext()
    q: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(service.Watch(requests(q), ctx))
    await q.put(create(b"k"))
    await q.put(create(b"k", prev_kv=True))
    await q.put(create(b"a", range_end=b"z"))
    await settle()
    await member.put(PutRequest(key=b"k", value=b"v1" * 100))
    await member.put(PutRequest(key=b"k", value=b"v2"))
    await member.delete_range(DeleteRangeRequest(key=b"k"))
    await settle()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if raw:  # add_watch_service registers no serializer: every response must be bytes
        assert all(isinstance(m, bytes) for m in ctx.written)
    else:
        assert not any(isinstance(m, bytes) for m in ctx.written)
    return [rpc_pb2.WatchResponse.FromString(m) if isinstance(m, bytes) else m for m in ctx.written]


def test_raw_stream_equals_message_stream(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = StoreMember(tmp_path / "a"), StoreMember(tmp_path / "b")
    try:
        msgs = asyncio.run(drive(a, raw=False))
        raws = asyncio.run(drive(b, raw=True))
    finally:
        a.backend.close()
        b.backend.close()

    # Watchers of one key are fed in set order (by address), so compare per revision.
    def by_revision(stream: list[Any]) -> list[Any]:
        return sorted(stream, key=lambda m: (m.header.revision, m.SerializeToString()))

    assert by_revision(raws) == by_revision(msgs)
    assert [m.created for m in raws[:3]] == [True, True, True]
    events = [m for m in raws if m.events]
    assert len(events) == 9  # 3 watchers x 3 writes
    with_prev = by_revision([m for m in events if m.watch_id == 1])
    assert [e.prev_kv.value for e in with_prev[1].events] == [b"v1" * 100]
    assert [e.type for e in with_prev[2].events] == [kv_pb2.Event.DELETE]
    assert {m.header.revision for m in events} == {2, 3, 4}


def test_add_watch_service_serves_grpc_clients(tmp_path: Path) -> None:
    member = StoreMember(tmp_path)

    async def main() -> list[Any]:
        server = grpc.aio.server()
        add_watch_service(WatchService(member), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
                q: asyncio.Queue[Any] = asyncio.Queue()
                call = stub.Watch(requests(q))
                await q.put(create(b"k"))
                await q.put(create(b"k", prev_kv=True))
                got = [await call.read(), await call.read()]
                await member.put(PutRequest(key=b"k", value=b"x" * 300))
                got += [await call.read(), await call.read()]
                call.cancel()
                return got
        finally:
            await server.stop(None)

    try:
        got = asyncio.run(main())
    finally:
        member.backend.close()
    assert [(m.watch_id, m.created) for m in got[:2]] == [(0, True), (1, True)]
    assert sorted(m.watch_id for m in got[2:]) == [0, 1]
    for m in got[2:]:
        assert m.header.revision == 2
        assert [(e.kv.key, e.kv.value) for e in m.events] == [(b"k", b"x" * 300)]
