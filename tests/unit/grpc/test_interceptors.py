"""etcd's per-request checks (``petcd.grpc.interceptors``): learners and ``hasleader``.

The guard is driven directly (a continuation that hands back a handler, behaviours called with
a fake context) and, for what only a real server shows (the status on the wire, a stream ended
while grpc runs it), through a grpc.aio server on loopback with grpc's own client stub. The
monitor's clock is a queue of ticks the test feeds: no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.grpc.interceptors import (
    ERR_LEARNER,
    ERR_NO_LEADER,
    PEER_HASHKV,
    LeaderMonitor,
    RequestGuard,
)
from tests.unit.grpc.test_election_lock import Aborted, FakeContext, settle

REQUIRE_LEADER = (("hasleader", "true"),)
READ_TIMEOUT_S = 10.0  # a failure, not a hang


class FakeMember:
    def __init__(self, leader: int = 1, is_learner: bool = False) -> None:
        self.leader = leader
        self.is_learner = is_learner
        self.auth_enabled = False


class Ticks:
    """The monitor's clock: each ``tick()`` lets one ``sleep`` return."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, _seconds: float) -> None:
        await self._q.get()

    async def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self._q.put_nowait(None)
            await settle()


class Details:
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.method = method
        self.invocation_metadata = (("user-agent", "test"), *metadata)


async def _range(request: Any, context: Any) -> Any:
    return rpc_pb2.RangeResponse(count=7)


async def _watch(request_iterator: Any, context: Any) -> None:
    await context.write(rpc_pb2.WatchResponse(created=True))
    await asyncio.Event().wait()  # until cancelled


UNARY = grpc.unary_unary_rpc_method_handler(_range)
STREAM = grpc.stream_stream_rpc_method_handler(_watch)
SERVER_STREAM = grpc.unary_stream_rpc_method_handler(_watch)


def intercept(guard: RequestGuard, handler: Any, details: Details) -> Any:
    async def continuation(_details: Any) -> Any:
        return handler

    return asyncio.run(guard.intercept_service(continuation, details))


async def outcome(behavior: Callable[[Any, Any], Awaitable[Any]], request: Any) -> Any:
    try:
        return await behavior(request, FakeContext())
    except Aborted as e:
        return e.args


def test_fast_path_hands_back_the_same_handler() -> None:
    guard = RequestGuard(FakeMember(), 1.0)
    assert intercept(guard, UNARY, Details("/etcdserverpb.KV/Put")) is UNARY
    assert intercept(guard, STREAM, Details("/etcdserverpb.Watch/Watch")) is STREAM
    # hasleader on a unary call with a leader: nothing to add either.
    assert intercept(guard, UNARY, Details("/etcdserverpb.KV/Put", REQUIRE_LEADER)) is UNARY
    # only the value "true" requires a leader, as etcd
    off = Details("/etcdserverpb.Watch/Watch", (("hasleader", "false"),))
    assert intercept(guard, STREAM, off) is STREAM
    assert intercept(guard, None, Details("/etcdserverpb.KV/Nope")) is None


def test_no_leader_refuses_calls_that_require_one() -> None:
    member = FakeMember(leader=0)
    guard = RequestGuard(member, 1.0)
    h = intercept(guard, UNARY, Details("/etcdserverpb.KV/Range", REQUIRE_LEADER))
    got = asyncio.run(outcome(h.unary_unary, rpc_pb2.RangeRequest(serializable=True)))
    assert got == ERR_NO_LEADER
    h = intercept(guard, STREAM, Details("/etcdserverpb.Watch/Watch", REQUIRE_LEADER))
    assert h.request_streaming and h.response_streaming
    assert asyncio.run(outcome(h.stream_stream, iter(()))) == ERR_NO_LEADER
    # without the metadata the handler serves as usual
    assert intercept(guard, UNARY, Details("/etcdserverpb.KV/Range")) is UNARY


@pytest.mark.parametrize(
    ("method", "handler", "request_", "expected"),
    [
        ("/etcdserverpb.Maintenance/Status", UNARY, rpc_pb2.StatusRequest(), "served"),
        ("/etcdserverpb.KV/Range", UNARY, rpc_pb2.RangeRequest(serializable=True), "served"),
        ("/etcdserverpb.KV/Range", UNARY, rpc_pb2.RangeRequest(), ERR_LEARNER),
        ("/etcdserverpb.KV/Put", UNARY, rpc_pb2.PutRequest(), ERR_LEARNER),
        ("/etcdserverpb.Cluster/MemberList", UNARY, rpc_pb2.MemberListRequest(), ERR_LEARNER),
        ("/etcdserverpb.Maintenance/Alarm", UNARY, rpc_pb2.AlarmRequest(), ERR_LEARNER),
        ("/v3lockpb.Lock/Lock", UNARY, None, ERR_LEARNER),
        ("/etcdserverpb.Watch/Watch", STREAM, None, ERR_LEARNER),
        ("/etcdserverpb.Lease/LeaseKeepAlive", STREAM, None, ERR_LEARNER),
        ("/v3electionpb.Election/Observe", SERVER_STREAM, None, ERR_LEARNER),
    ],
)
def test_what_a_learner_serves(method: str, handler: Any, request_: Any, expected: Any) -> None:
    guard = RequestGuard(FakeMember(is_learner=True), 1.0)
    h = intercept(guard, handler, Details(method))
    if expected == "served":
        got = asyncio.run(outcome(h.unary_unary, request_))
        assert got == rpc_pb2.RangeResponse(count=7)
        return
    behavior = h.unary_unary or h.stream_stream or h.unary_stream
    assert asyncio.run(outcome(behavior, request_)) == expected


def test_a_learner_may_stream_a_snapshot() -> None:
    guard = RequestGuard(FakeMember(is_learner=True), 1.0)
    assert intercept(guard, SERVER_STREAM, Details("/etcdserverpb.Maintenance/Snapshot")) is (
        SERVER_STREAM
    )


def test_a_learner_answers_hashkv_to_its_peers_only() -> None:
    guard = RequestGuard(FakeMember(is_learner=True), 1.0)
    method = "/etcdserverpb.Maintenance/HashKV"
    assert intercept(guard, UNARY, Details(method, (PEER_HASHKV,))) is UNARY
    h = intercept(guard, UNARY, Details(method))
    assert asyncio.run(outcome(h.unary_unary, rpc_pb2.HashKVRequest())) == ERR_LEARNER


def test_the_learner_check_comes_before_the_leader_check() -> None:
    guard = RequestGuard(FakeMember(leader=0, is_learner=True), 1.0)
    h = intercept(guard, UNARY, Details("/etcdserverpb.KV/Range", REQUIRE_LEADER))
    assert asyncio.run(outcome(h.unary_unary, rpc_pb2.RangeRequest())) == ERR_LEARNER
    got = asyncio.run(outcome(h.unary_unary, rpc_pb2.RangeRequest(serializable=True)))
    assert got == ERR_NO_LEADER
    h = intercept(guard, UNARY, Details("/etcdserverpb.KV/Put", REQUIRE_LEADER))
    assert asyncio.run(outcome(h.unary_unary, rpc_pb2.PutRequest())) == ERR_LEARNER


async def _start(monitor: LeaderMonitor, behavior: Any = _watch) -> tuple[Any, FakeContext]:
    handler = monitor.guard(grpc.stream_stream_rpc_method_handler(behavior))
    ctx = FakeContext()
    task = asyncio.create_task(handler.stream_stream(iter(()), ctx))
    await settle()
    return task, ctx


def test_monitor_ends_streams_after_three_leaderless_samples_in_a_row() -> None:
    async def scenario() -> None:
        member, ticks = FakeMember(), Ticks()
        monitor = LeaderMonitor(member, 1.0, sleep=ticks.sleep)
        task, ctx = await _start(monitor)
        assert ctx.written == [rpc_pb2.WatchResponse(created=True)]
        assert monitor.open_streams == 1 and monitor.running
        await ticks.tick(5)  # a leader: nothing happens
        member.leader = 0
        await ticks.tick(2)
        member.leader = 1  # back before the third sample: the count starts again
        await ticks.tick()
        member.leader = 0
        await ticks.tick(2)
        assert not task.done()
        await ticks.tick()
        with pytest.raises(Aborted) as ended:
            await task
        assert ended.value.args == ERR_NO_LEADER
        assert monitor.open_streams == 0 and not monitor.running

    asyncio.run(scenario())


def test_a_stream_cancelled_by_its_client_stays_cancelled_and_is_forgotten() -> None:
    async def scenario() -> None:
        ticks = Ticks()
        monitor = LeaderMonitor(FakeMember(), 1.0, sleep=ticks.sleep)
        first, _ = await _start(monitor)
        second, _ = await _start(monitor)
        assert monitor.open_streams == 2
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert monitor.open_streams == 1 and monitor.running
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second
        assert monitor.open_streams == 0 and not monitor.running

    asyncio.run(scenario())


def test_a_generator_handler_is_written_and_a_finished_stream_forgotten() -> None:
    async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
        for i in range(3):
            yield rpc_pb2.WatchResponse(watch_id=i)

    async def scenario() -> None:
        monitor = LeaderMonitor(FakeMember(), 1.0, sleep=Ticks().sleep)
        task, ctx = await _start(monitor, gen)
        assert task.done() and task.result() is None
        assert [m.watch_id for m in ctx.written] == [0, 1, 2]
        assert monitor.open_streams == 0 and not monitor.running

    asyncio.run(scenario())


class _KV(rpc_pb2_grpc.KVServicer):
    async def Range(self, request: Any, context: Any) -> Any:
        return rpc_pb2.RangeResponse(count=3)


class _Watch(rpc_pb2_grpc.WatchServicer):
    async def Watch(self, request_iterator: Any, context: Any) -> None:
        async for _ in request_iterator:
            await context.write(rpc_pb2.WatchResponse(created=True))


def test_over_grpc_a_stream_that_requires_a_leader_ends_with_no_leader() -> None:
    async def scenario() -> None:
        member, ticks = FakeMember(), Ticks()
        guard = RequestGuard(member, 1.0, sleep=ticks.sleep)
        server = grpc.aio.server(interceptors=[guard])
        rpc_pb2_grpc.add_KVServicer_to_server(_KV(), server)  # type: ignore[no-untyped-call]
        rpc_pb2_grpc.add_WatchServicer_to_server(_Watch(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
                watch = rpc_pb2_grpc.WatchStub(ch)  # type: ignore[no-untyped-call]
                required = watch.Watch(metadata=REQUIRE_LEADER)
                plain = watch.Watch()
                for call in (required, plain):
                    await call.write(rpc_pb2.WatchRequest())
                    assert (await asyncio.wait_for(call.read(), READ_TIMEOUT_S)).created
                assert guard.monitor.open_streams == 1
                member.leader = 0
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await kv.Range(rpc_pb2.RangeRequest(), metadata=REQUIRE_LEADER)
                assert (refused.value.code(), refused.value.details()) == ERR_NO_LEADER
                assert (await kv.Range(rpc_pb2.RangeRequest())).count == 3
                await ticks.tick(3)
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await asyncio.wait_for(required.read(), READ_TIMEOUT_S)
                assert (ended.value.code(), ended.value.details()) == ERR_NO_LEADER
                # the stream without the metadata is still served
                await plain.write(rpc_pb2.WatchRequest())
                assert (await asyncio.wait_for(plain.read(), READ_TIMEOUT_S)).created
                plain.cancel()
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_client_requests_are_counted_by_type_and_client_version_as_etcd() -> None:
    member = FakeMember()
    registry = CollectorRegistry()
    guard = RequestGuard(member, 1.0, registry=registry)
    v35 = (("client-api-version", "3.5"),)
    intercept(guard, UNARY, Details("/etcdserverpb.KV/Put", v35))
    intercept(guard, UNARY, Details("/etcdserverpb.KV/Range", v35))
    intercept(guard, STREAM, Details("/etcdserverpb.Watch/Watch", v35))
    intercept(guard, UNARY, Details("/etcdserverpb.KV/Range"))
    member.leader = 0  # refused for want of a leader: still counted
    intercept(guard, STREAM, Details("/etcdserverpb.Watch/Watch", (*v35, *REQUIRE_LEADER)))
    member.is_learner = True  # refused on a learner: not counted
    intercept(guard, UNARY, Details("/etcdserverpb.KV/Put", v35))
    h = intercept(guard, UNARY, Details("/etcdserverpb.KV/Range", v35))
    assert asyncio.run(outcome(h.unary_unary, rpc_pb2.RangeRequest())) == ERR_LEARNER
    assert asyncio.run(outcome(h.unary_unary, rpc_pb2.RangeRequest(serializable=True))) == (
        rpc_pb2.RangeResponse(count=7)
    )
    intercept(guard, UNARY, Details("/etcdserverpb.Maintenance/Status"))
    lines = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("etcd_server_client_requests_total")
    ]
    assert sorted(lines) == [
        'etcd_server_client_requests_total{client_api_version="3.5",type="stream"} 2.0',
        'etcd_server_client_requests_total{client_api_version="3.5",type="unary"} 3.0',
        'etcd_server_client_requests_total{client_api_version="unknown",type="unary"} 2.0',
    ], lines
