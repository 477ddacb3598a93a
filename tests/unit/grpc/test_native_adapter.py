"""``petcd.grpc.native.NativeServer`` against a fake ``petcd._frontend.Frontend``.

The fake has the real module's API (frontend-api.md): events the test injects are handed out
by ``take()`` after a byte on a pipe makes ``fileno()`` readable, and every ``send()`` call is
recorded as one list, so a test sees both what went out and how it was batched. The servicers
are registered through grpc's own generated ``add_*Servicer_to_server`` and
``grpc.*_rpc_method_handler`` helpers, as petcd's services are. What this cannot show (the
bytes on the wire, a real client) is in tests/integration/test_native_transport.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.grpc import native
from petcd.grpc.interceptors import ERR_LEARNER, ERR_NO_LEADER, RequestGuard
from petcd.grpc.native import NativeServer

NEW, MESSAGE, HALF_CLOSE, CANCEL, DRAINED = 0, 1, 2, 3, 4
OK, UNKNOWN, UNIMPLEMENTED, INTERNAL = 0, 2, 12, 13
PEER = "ipv4:127.0.0.1:50000"
STEPS = 200  # loop iterations a scenario may take to settle: a failure, not a hang


class FakeFrontend:
    """``petcd._frontend.Frontend`` as a test double."""

    def __init__(self, listeners: list[tuple[str, int]], **options: Any) -> None:
        self.listeners = listeners
        self.options = options
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._events: list[tuple[Any, ...]] = []
        self.sends: list[list[tuple[Any, ...]]] = []
        self.congested: set[int] = set()  # ids send() reports as over 1 MiB queued
        self.started = False
        self.accepting = True
        self.drained = False
        self.closed = False

    # the API
    def ports(self) -> list[int]:
        return [p or 40000 + i for i, (_, p) in enumerate(self.listeners)]

    def start(self) -> None:
        self.started = True

    def fileno(self) -> int:
        return self._r

    def take(self) -> list[tuple[Any, ...]]:
        events, self._events = self._events, []
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        return events

    def send(self, items: list[tuple[Any, ...]]) -> list[int]:
        assert not self.closed
        self.sends.append(list(items))
        return sorted({item[0] for item in items} & self.congested)

    def stop_accepting(self) -> None:
        self.accepting = False

    def drain(self) -> None:
        self.drained = True

    def close(self) -> None:
        self.closed = True
        os.close(self._r)
        os.close(self._w)

    # for the tests
    def inject(self, *events: tuple[Any, ...]) -> None:
        if not self._events:
            os.write(self._w, b"x")
        self._events.extend(events)

    def sent(self, call_id: int | None = None) -> list[tuple[Any, ...]]:
        return [i for batch in self.sends for i in batch if call_id is None or i[0] == call_id]

    def status(self, call_id: int) -> tuple[int, str] | None:
        for item in self.sent(call_id):
            if len(item) == 4:
                return item[2], item[3]
        return None


def unary(
    call_id: int, method: str, request: Any, metadata: tuple[tuple[str, Any], ...] = ()
) -> tuple[tuple[Any, ...], ...]:
    """The events of a unary call: headers, the message, the half-close."""
    return (
        (NEW, call_id, method, (("user-agent", "test"), *metadata), None, PEER),
        (MESSAGE, call_id, request.SerializeToString()),
        (HALF_CLOSE, call_id),
    )


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(STEPS):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def scenario(
    body: Callable[[NativeServer, FakeFrontend], Awaitable[None]],
    *,
    register: Callable[[NativeServer], None],
    interceptors: tuple[Any, ...] = (),
    eager: bool = True,
) -> None:
    async def run() -> None:
        server = NativeServer(
            [("127.0.0.1", 0)],
            max_recv_bytes=2 << 20,
            max_send_bytes=2**31 - 1,
            interceptors=interceptors,
            keepalive_min_time_ms=5000,
            keepalive_interval_ms=7_200_000,
            keepalive_timeout_ms=20_000,
            frontend_class=FakeFrontend,
            eager=eager,
        )
        register(server)
        fe = server._fe
        assert isinstance(fe, FakeFrontend)
        await server.start()
        try:
            await body(server, fe)
        finally:
            await server.stop(None)
        assert fe.closed and not fe.accepting

    asyncio.run(asyncio.wait_for(run(), 30))


class KV(rpc_pb2_grpc.KVServicer):
    """Range answers at once, Put waits for ``release`` (a write waiting for raft), Txn
    aborts, Compact raises; DeleteRange is the generated base class's."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancelled: list[str] = []
        self.current_tasks: list[asyncio.Task[Any] | None] = []
        self.put_started_in: list[asyncio.Task[Any] | None] = []

    async def Range(self, request: Any, context: Any) -> Any:
        self.current_tasks.append(asyncio.current_task())
        return rpc_pb2.RangeResponse(count=len(request.key))

    async def Put(self, request: Any, context: Any) -> Any:
        self.put_started_in.append(asyncio.current_task())
        try:
            await self.release.wait()
            await asyncio.sleep(0)  # always a real wait, as a write waits for raft
        except asyncio.CancelledError:
            self.cancelled.append("Put")
            raise
        self.current_tasks.append(asyncio.current_task())
        return rpc_pb2.PutResponse(prev_kv={"key": request.key})

    async def Txn(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: nope")

    async def Compact(self, request: Any, context: Any) -> Any:
        raise RuntimeError("boom")


def register_kv(kv: KV) -> Callable[[NativeServer], None]:
    def register(server: NativeServer) -> None:
        rpc_pb2_grpc.add_KVServicer_to_server(kv, server)  # type: ignore[no-untyped-call]

    return register


EAGER = pytest.mark.parametrize("eager", [True, False], ids=["eager", "task-per-call"])


@EAGER
def test_unary_answer_is_the_serialized_response_with_status_ok(eager: bool) -> None:
    kv = KV()

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"abc")))
        await until(lambda: fe.status(1) is not None)
        [(call_id, message, code, details)] = fe.sent(1)
        assert (call_id, code, details) == (1, OK, "")
        assert rpc_pb2.RangeResponse.FromString(message).count == 3
        # stepped in the dispatch callback, an answer that needs no wait costs no task
        [task] = kv.current_tasks
        assert (task is None) == eager

    scenario(body, register=register_kv(kv), eager=eager)


@EAGER
def test_a_unary_handler_that_waits_runs_in_a_task_and_answers_later(eager: bool) -> None:
    kv = KV()

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest(key=b"k")))
        await settle()
        assert fe.sent(1) == []
        kv.release.set()
        await until(lambda: fe.status(1) is not None)
        [(_, message, code, _details)] = fe.sent(1)
        assert code == OK and rpc_pb2.PutResponse.FromString(message).prev_kv.key == b"k"
        assert kv.current_tasks[0] is not None  # after its first wait, a handler has a task

    scenario(body, register=register_kv(kv), eager=eager)


def test_a_now_form_answers_without_the_handler_or_leaves_the_call_to_it() -> None:
    """``add_unary_now``: the form's answer goes out as the handler's would (serialized,
    OK) and the handler never runs; None, or an exception, leaves the call to the handler."""
    kv = KV()
    asked: list[bytes] = []

    def now(request: Any) -> Any:
        asked.append(request.key)
        if request.key == b"now":
            return rpc_pb2.RangeResponse(count=99)
        if request.key == b"boom":
            raise RuntimeError("the handler meets this too")
        return None

    def register(server: NativeServer) -> None:
        register_kv(kv)(server)
        server.add_unary_now(kv.Range, now)

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        for i, key in enumerate([b"now", b"later", b"boom"], 1):
            fe.inject(*unary(i, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=key)))
        await until(lambda: all(fe.status(i) is not None for i in (1, 2, 3)))
        counts = [rpc_pb2.RangeResponse.FromString(fe.sent(i)[0][1]).count for i in (1, 2, 3)]
        assert counts == [99, 5, 4]  # the handler answers len(key)
        assert all(fe.status(i) == (OK, "") for i in (1, 2, 3))
        assert asked == [b"now", b"later", b"boom"]
        assert len(kv.current_tasks) == 2  # the handler ran for "later" and "boom" only
        assert not server._calls

    scenario(body, register=register)


def test_a_now_form_is_not_used_without_submit_forms() -> None:
    kv = KV()

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        server._submit = False  # as NativeServer(submit=False) was built
        server.add_unary_now(kv.Range, lambda request: rpc_pb2.RangeResponse(count=99))
        fe.inject(*unary(1, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"abc")))
        await until(lambda: fe.status(1) is not None)
        assert rpc_pb2.RangeResponse.FromString(fe.sent(1)[0][1]).count == 3

    scenario(body, register=register_kv(kv))


@EAGER
def test_abort_sends_its_code_and_details_and_no_message(eager: bool) -> None:
    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/Txn", rpc_pb2.TxnRequest()))
        await until(lambda: fe.status(1) is not None)
        assert fe.sent(1) == [
            (1, None, grpc.StatusCode.FAILED_PRECONDITION.value[0], "etcdserver: nope")
        ]

    scenario(body, register=register_kv(KV()), eager=eager)


def test_an_unimplemented_method_of_a_generated_servicer_answers_as_grpc_aio_does() -> None:
    # The generated base class sets UNIMPLEMENTED and raises NotImplementedError; grpc.aio
    # keeps the code and sends its "Unexpected ..." text (checked against grpcio 1.85).
    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/DeleteRange", rpc_pb2.DeleteRangeRequest()))
        await until(lambda: fe.status(1) is not None)
        assert fe.sent(1) == [
            (
                1,
                None,
                UNIMPLEMENTED,
                "Unexpected <class 'NotImplementedError'>: Method not implemented!",
            )
        ]

    scenario(body, register=register_kv(KV()))


def test_unknown_services_and_methods_get_grpc_go_texts() -> None:
    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(
            *unary(1, "/etcdserverpb.Auth/AuthEnable", rpc_pb2.AuthEnableRequest()),
            *unary(2, "/etcdserverpb.KV/Nope", rpc_pb2.RangeRequest()),
            *unary(3, "nonsense", rpc_pb2.RangeRequest()),
        )
        await until(lambda: fe.status(3) is not None)
        assert fe.status(1) == (UNIMPLEMENTED, "unknown service etcdserverpb.Auth")
        assert fe.status(2) == (UNIMPLEMENTED, "unknown method Nope for service etcdserverpb.KV")
        assert fe.status(3) == (UNIMPLEMENTED, 'malformed method name: "nonsense"')
        assert all(item[1] is None for item in fe.sent())  # trailers only

    scenario(body, register=register_kv(KV()))


@EAGER
def test_a_handler_exception_is_unknown_with_grpc_aio_text(eager: bool) -> None:
    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/Compact", rpc_pb2.CompactionRequest()))
        await until(lambda: fe.status(1) is not None)
        assert fe.sent(1) == [(1, None, UNKNOWN, "Unexpected <class 'RuntimeError'>: boom")]

    scenario(body, register=register_kv(KV()), eager=eager)


def test_an_undecodable_request_is_unknown() -> None:
    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(
            (NEW, 1, "/etcdserverpb.KV/Range", (), None, PEER),
            (MESSAGE, 1, b"\xff\xff\xff"),
            (HALF_CLOSE, 1),
        )
        await until(lambda: fe.status(1) is not None)
        code, details = fe.status(1) or (None, "")
        assert code == UNKNOWN
        assert details.startswith("Unexpected <class 'google.protobuf.message.DecodeError'>")

    scenario(body, register=register_kv(KV()))


def test_a_unary_call_half_closed_without_its_message_ends_with_internal() -> None:
    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/etcdserverpb.KV/Range", (), None, PEER), (HALF_CLOSE, 1))
        await until(lambda: fe.status(1) is not None)
        assert fe.status(1) == (INTERNAL, native._NO_REQUEST)

    scenario(body, register=register_kv(KV()))


class FakeMember:
    def __init__(self, leader: int = 1, is_learner: bool = False) -> None:
        self.leader = leader
        self.is_learner = is_learner
        self.auth_enabled = False


def test_request_guard_refuses_on_a_learner_and_without_a_leader() -> None:
    member = FakeMember()
    guard = RequestGuard(member, 1.0)

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        member.is_learner = True
        fe.inject(*unary(1, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest()))
        fe.inject(
            *unary(2, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"ab", serializable=True))
        )
        await until(lambda: fe.status(2) is not None)
        assert fe.status(1) == (ERR_LEARNER[0].value[0], ERR_LEARNER[1])
        assert fe.status(2) == (OK, "")
        # The guard's answer depends on the member's state when each call starts.
        member.is_learner = False
        member.leader = 0
        hasleader = (("hasleader", "true"),)
        fe.inject(*unary(3, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(), hasleader))
        fe.inject(*unary(4, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest()))
        await until(lambda: fe.status(4) is not None)
        assert fe.status(3) == (ERR_NO_LEADER[0].value[0], ERR_NO_LEADER[1])
        assert fe.status(4) == (OK, "")
        member.leader = 1
        fe.inject(*unary(5, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(), hasleader))
        await until(lambda: fe.status(5) is not None)
        assert fe.status(5) == (OK, "")

    scenario(body, register=register_kv(KV()), interceptors=(guard,))


class SlowInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that really awaits: the look-up finishes in a task."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        await asyncio.sleep(0)
        return await continuation(details)


def test_an_interceptor_that_awaits_still_gets_the_message_to_the_handler() -> None:
    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"abcd")))
        await until(lambda: fe.status(1) is not None)
        [(_, message, code, _d)] = fe.sent(1)
        assert code == OK and rpc_pb2.RangeResponse.FromString(message).count == 4

    scenario(body, register=register_kv(KV()), interceptors=(SlowInterceptor(),))


# --- streams -----------------------------------------------------------------------------------


def bytes_codec() -> dict[str, Any]:
    return {"request_deserializer": None, "response_serializer": None}


def register_methods(methods: dict[str, Any]) -> Callable[[NativeServer], None]:
    def register(server: NativeServer) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.S", methods),))

    return register


def test_stream_stream_async_generator_answers_each_request_until_half_close() -> None:
    async def echo(requests: Any, context: Any) -> AsyncIterator[bytes]:
        async for r in requests:
            yield b"echo:" + r
        yield b"bye"

    methods = {"Echo": grpc.stream_stream_rpc_method_handler(echo, **bytes_codec())}

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/test.S/Echo", (), None, PEER), (MESSAGE, 1, b"a"))
        await until(lambda: len(fe.sent(1)) == 1)
        fe.inject((MESSAGE, 1, b"b"), (MESSAGE, 1, b"c"))
        await until(lambda: len(fe.sent(1)) == 3)
        assert fe.status(1) is None  # the stream stays open
        fe.inject((HALF_CLOSE, 1))
        await until(lambda: fe.status(1) is not None)
        assert fe.sent(1) == [
            (1, b"echo:a"),
            (1, b"echo:b"),
            (1, b"echo:c"),
            (1, b"bye"),
            (1, None, OK, ""),
        ]

    scenario(body, register=register_methods(methods))


def test_unary_stream_with_context_write_then_status() -> None:
    async def three(request: bytes, context: Any) -> None:
        for i in range(3):
            await context.write(request + str(i).encode())

    methods = {"Three": grpc.unary_stream_rpc_method_handler(three, **bytes_codec())}

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/test.S/Three", (), None, PEER), (MESSAGE, 1, b"x"), (HALF_CLOSE, 1))
        await until(lambda: fe.status(1) is not None)
        assert fe.sent(1) == [(1, b"x0"), (1, b"x1"), (1, b"x2"), (1, None, OK, "")]

    scenario(body, register=register_methods(methods))


def test_stream_unary_reads_every_request_then_answers_once() -> None:
    async def total(requests: Any, context: Any) -> bytes:
        n = 0
        async for r in requests:
            n += int(r)
        return str(n).encode()

    async def by_read(requests: Any, context: Any) -> bytes:
        got = []
        while (r := await context.read()) is not grpc.aio.EOF:
            got.append(r)
        return b",".join(got)

    methods = {
        "Sum": grpc.stream_unary_rpc_method_handler(total, **bytes_codec()),
        "Join": grpc.stream_unary_rpc_method_handler(by_read, **bytes_codec()),
    }

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/test.S/Sum", (), None, PEER), (MESSAGE, 1, b"2"))
        fe.inject((NEW, 2, "/test.S/Join", (), None, PEER), (MESSAGE, 2, b"p"))
        await settle()
        fe.inject((MESSAGE, 1, b"40"), (HALF_CLOSE, 1), (MESSAGE, 2, b"q"), (HALF_CLOSE, 2))
        await until(lambda: fe.status(1) is not None and fe.status(2) is not None)
        assert fe.sent(1) == [(1, b"42", OK, "")]
        assert fe.sent(2) == [(2, b"p,q", OK, "")]

    scenario(body, register=register_methods(methods))


def test_cancel_cancels_the_handler_and_nothing_is_sent_after() -> None:
    seen: list[str] = []

    async def forever(requests: Any, context: Any) -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("closed")

    methods = {"Forever": grpc.stream_stream_rpc_method_handler(forever, **bytes_codec())}
    kv = KV()

    def register(server: NativeServer) -> None:
        register_methods(methods)(server)
        register_kv(kv)(server)

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/test.S/Forever", (), None, PEER))
        await until(lambda: len(fe.sent(1)) == 1)
        # a unary call waiting (for raft) is cancelled too
        fe.inject(*unary(2, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest()))
        await settle()
        fe.inject((CANCEL, 1), (CANCEL, 2))
        await until(lambda: seen == ["cancelled", "closed"] and kv.cancelled == ["Put"])
        kv.release.set()
        await settle()
        assert fe.sent(1) == [(1, b"first")]
        assert fe.sent(2) == []
        assert server._calls == {}
        # events for a call that is over are ignored
        fe.inject((MESSAGE, 1, b"late"), (HALF_CLOSE, 1), (DRAINED, 1))
        await settle()
        assert fe.sent(1) == [(1, b"first")]

    scenario(body, register=register)


def test_time_remaining_counts_down_from_the_grpc_timeout() -> None:
    remaining: list[float | None] = []

    async def probe(request: bytes, context: Any) -> bytes:
        remaining.append(context.time_remaining())
        assert context.peer() == PEER
        assert ("x-key", "v") in context.invocation_metadata()
        return b""

    methods = {"Probe": grpc.unary_unary_rpc_method_handler(probe, **bytes_codec())}

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        md = (("x-key", "v"),)
        fe.inject((NEW, 1, "/test.S/Probe", md, 5.0, PEER), (MESSAGE, 1, b""), (HALF_CLOSE, 1))
        fe.inject((NEW, 2, "/test.S/Probe", md, None, PEER), (MESSAGE, 2, b""), (HALF_CLOSE, 2))
        await until(lambda: fe.status(2) is not None)
        assert fe.status(1) == (OK, "") and fe.status(2) == (OK, "")
        first, second = remaining
        assert first is not None and 3.0 < first <= 5.0
        assert second is None

    scenario(body, register=register_methods(methods))


def test_a_write_to_a_congested_call_waits_for_drained() -> None:
    wrote: list[int] = []

    async def burst(request: bytes, context: Any) -> None:
        for i in range(3):
            await context.write(b"m%d" % i)
            wrote.append(i)
            await asyncio.sleep(0)  # let the batch go out

    methods = {"Burst": grpc.unary_stream_rpc_method_handler(burst, **bytes_codec())}

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.congested.add(1)
        fe.inject((NEW, 1, "/test.S/Burst", (), None, PEER), (MESSAGE, 1, b""), (HALF_CLOSE, 1))
        await until(lambda: len(fe.sent(1)) == 1)
        await settle()
        assert fe.sent(1) == [(1, b"m0")]  # send() said: over 1 MiB queued; m1 must wait
        assert wrote == [0]
        fe.congested.clear()
        fe.inject((DRAINED, 1))
        await until(lambda: fe.status(1) is not None)
        assert fe.sent(1) == [(1, b"m0"), (1, b"m1"), (1, b"m2"), (1, None, OK, "")]

    scenario(body, register=register_methods(methods))


def test_a_writer_that_never_waits_is_flushed_in_bounded_batches() -> None:
    chunk = b"z" * (64 * 1024)

    async def flood(request: bytes, context: Any) -> None:
        for _ in range(64):  # 4 MiB without any await that suspends on its own
            await context.write(chunk)

    methods = {"Flood": grpc.unary_stream_rpc_method_handler(flood, **bytes_codec())}

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/test.S/Flood", (), None, PEER), (MESSAGE, 1, b""), (HALF_CLOSE, 1))
        await until(lambda: fe.status(1) is not None)
        assert len(fe.sent(1)) == 65
        assert len(fe.sends) >= 4
        assert max(sum(len(i[1] or b"") for i in batch) for batch in fe.sends) <= (1 << 20) + len(
            chunk
        )

    scenario(body, register=register_methods(methods))


@EAGER
def test_the_answers_of_one_loop_iteration_go_out_in_one_send(eager: bool) -> None:
    kv = KV()

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        events = []
        for i in range(1, 51):
            events.extend(unary(i, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"k")))
        fe.inject(*events)
        await until(lambda: fe.status(50) is not None)
        assert len(fe.sends) == 1 and len(fe.sends[0]) == 50
        # writes released together are answered together as well
        events = []
        for i in range(51, 71):
            events.extend(unary(i, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest(key=b"k")))
        fe.inject(*events)
        await settle()
        kv.release.set()
        await until(lambda: fe.status(70) is not None)
        assert len(fe.sends) == 2 and len(fe.sends[1]) == 20

    scenario(body, register=register_kv(kv), eager=eager)


def test_stop_lets_calls_finish_within_grace_then_cancels_the_rest() -> None:
    kv = KV()
    ended: list[str] = []

    async def forever(requests: Any, context: Any) -> None:
        context.add_done_callback(lambda ctx: ended.append("stream"))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    methods = {"Forever": grpc.stream_stream_rpc_method_handler(forever, **bytes_codec())}

    def register(server: NativeServer) -> None:
        register_methods(methods)(server)
        register_kv(kv)(server)

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/test.S/Forever", (), None, PEER))
        fe.inject(*unary(2, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest(key=b"k")))
        await settle()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, kv.release.set)  # the Put completes within the grace period
        t0 = loop.time()
        await server.stop(0.5)
        assert 0.4 < loop.time() - t0 < 5.0  # waited the whole grace for the stream
        assert fe.status(2) == (OK, "")
        assert ended == ["cancelled", "stream"]
        assert fe.status(1) is None  # the front end's close() ends it
        assert fe.closed and not fe.accepting and fe.drained  # GOAWAY before the grace

    scenario(body, register=register)


def test_done_callbacks_and_done_for_a_unary_call() -> None:
    seen: list[Any] = []

    async def handler(request: bytes, context: Any) -> bytes:
        context.add_done_callback(lambda ctx: seen.append(ctx.done()))
        assert not context.done() and not context.cancelled()
        return b"r"

    methods = {"H": grpc.unary_unary_rpc_method_handler(handler, **bytes_codec())}

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject((NEW, 1, "/test.S/H", (), None, PEER), (MESSAGE, 1, b""), (HALF_CLOSE, 1))
        await until(lambda: fe.status(1) is not None)
        assert seen == [True]

    scenario(body, register=register_methods(methods))


def test_a_missing_native_module_names_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake_import(name: str, *a: Any) -> Any:
        if name == "petcd._frontend":
            raise ImportError("No module named 'petcd._frontend'")
        return real(name, *a)

    monkeypatch.setattr(native.importlib, "import_module", fake_import)
    with pytest.raises(native.NativeTransportUnavailable) as e:
        native.load_frontend_class()
    assert "run `make install` (needs Rust/cargo)" in str(e.value)
    assert "--client-transport=grpcio" in str(e.value)


class Recorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, name: str, log: list[str], refuse: bool = False) -> None:
        self.name, self.log, self.refuse = name, log, refuse

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.log.append(f"{self.name}:{details.method}")
        handler = await continuation(details)
        return None if self.refuse else handler


def test_interceptors_run_in_order_for_every_call() -> None:
    log: list[str] = []
    chain = (Recorder("a", log), Recorder("b", log), Recorder("c", log, refuse=True))

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest()))
        fe.inject(*unary(2, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest()))
        await until(lambda: fe.status(2) is not None)
        assert log == [f"{n}:/etcdserverpb.KV/{m}" for m in ("Range", "Put") for n in "abc"]
        # an interceptor that hands back no handler: grpc's unknown-method answer
        assert fe.status(1) == (UNIMPLEMENTED, "unknown method Range for service etcdserverpb.KV")

    scenario(body, register=register_kv(KV()), interceptors=chain)


def test_a_method_whose_calls_keep_waiting_goes_back_to_a_task_per_call() -> None:
    kv = KV()
    kv.release.set()

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        for i in range(1, 11):
            fe.inject(*unary(i, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest(key=b"k")))
            await until(lambda i=i: fe.status(i) is not None)  # type: ignore[misc]
        stepped = [t is None for t in kv.put_started_in]
        # the first calls are stepped in the dispatcher, the later ones start in a task
        assert stepped[0] and not stepped[-1], stepped
        assert all(fe.status(i) == (OK, "") for i in range(1, 11))
        # a method that answers at once keeps being stepped
        kv.current_tasks.clear()
        for i in range(11, 21):
            fe.inject(*unary(i, "/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"k")))
        await until(lambda: fe.status(20) is not None)
        assert kv.current_tasks == [None] * 10

    scenario(body, register=register_kv(kv))


@EAGER
def test_a_cancel_in_the_same_batch_as_the_request_reaches_the_waiting_handler(
    eager: bool,
) -> None:
    # Stepped, the handler waits and gets its task, and the CANCEL right behind the request
    # cancels that task before it ever ran: the handler must still see CancelledError (its
    # clean-up runs: a Lock deletes its waiter key). Either way the call is forgotten.
    kv = KV()

    async def body(server: NativeServer, fe: FakeFrontend) -> None:
        fe.inject(*unary(1, "/etcdserverpb.KV/Put", rpc_pb2.PutRequest()), (CANCEL, 1))
        await until(lambda: server._calls == {})
        await settle()
        # stepped: the handler started and saw the cancel; with a plain task it never started
        assert len(kv.put_started_in) == int(eager)
        assert kv.cancelled == ["Put"] * int(eager)
        kv.release.set()
        await settle()
        assert fe.sent(1) == []

    scenario(body, register=register_kv(kv), eager=eager)
