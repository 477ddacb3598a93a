"""The native front end (``petcd._frontend``) against real grpcio clients over loopback."""

from __future__ import annotations

import queue
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from petcd import _frontend
from petcd._frontend import Frontend

from .conftest import DEFAULTS, Served, echo, raw_unary

Serve = Callable[..., Served]


def test_module_constants() -> None:
    kinds = (_frontend.NEW, _frontend.MESSAGE, _frontend.HALF_CLOSE, _frontend.CANCEL)
    assert (*kinds, _frontend.DRAINED) == (0, 1, 2, 3, 4)


def test_unary_round_trip_and_event_order(serve: Serve) -> None:
    s = serve(echo)
    with s.channel() as ch:
        assert raw_unary(ch)(b"hello", timeout=10) == b"hello"
        assert raw_unary(ch)(b"", timeout=10) == b""
    (new, second) = s.driver.new_calls()
    kinds = [e[0] for e in s.driver.of(new[1])]
    assert kinds == [0, 1, 2]
    assert s.driver.of(new[1])[1][2] == b"hello"
    assert second[1] != new[1]
    assert new[2] == "/test.Echo/Unary"


def test_metadata_timeout_and_peer(serve: Serve) -> None:
    s = serve(echo)
    with s.channel() as ch:
        raw_unary(ch, "/etcdserverpb.KV/Range")(
            b"x",
            timeout=7,
            metadata=[("token", "abc.def"), ("trace-bin", b"\x00\xff\x10"), ("token", "second")],
        )
    (new,) = s.driver.new_calls()
    _, _, method, metadata, timeout, peer = new
    assert method == "/etcdserverpb.KV/Range"
    keys = [k for k, _ in metadata]
    for hidden in ("content-type", "te", "grpc-timeout", "grpc-accept-encoding", ":path"):
        assert hidden not in keys
    assert any(k == "user-agent" and "grpc-python" in v for k, v in metadata)
    assert [(k, v) for k, v in metadata if k in ("token", "trace-bin")] == [
        ("token", "abc.def"),
        ("token", "second"),
        ("trace-bin", b"\x00\xff\x10"),
    ] or [(k, v) for k, v in metadata if k in ("token", "trace-bin")] == [
        ("token", "abc.def"),
        ("trace-bin", b"\x00\xff\x10"),
        ("token", "second"),
    ]
    assert timeout is not None and 6.0 < timeout <= 7.1  # grpc rounds the header up
    assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", peer), peer


def test_repeated_and_ever_new_metadata_values_arrive_intact(serve: Serve) -> None:
    # take() makes the strings and pairs that NEW events repeat once (a bounded cache that
    # is emptied when full): past its bound (512) every value must still be the one sent.
    s = serve(echo)
    n = 1100
    with s.channel() as ch:
        for i in range(n):
            method = f"/test.Echo/M{i % 3}"
            metadata = [("client-api-version", "3.5"), ("token", f"t{i}"), ("k-bin", b"%d" % i)]
            assert raw_unary(ch, method)(b"x", timeout=10, metadata=metadata) == b"x"
    calls = s.driver.new_calls()
    assert len(calls) == n
    for i, (_, _, method, metadata, _, peer) in enumerate(calls):
        assert method == f"/test.Echo/M{i % 3}"
        got = [(k, v) for k, v in metadata if k in ("client-api-version", "token", "k-bin")]
        assert got == [("client-api-version", "3.5"), ("token", f"t{i}"), ("k-bin", b"%d" % i)]
        assert peer == calls[0][5]


def test_no_timeout_is_none(serve: Serve) -> None:
    s = serve(echo)
    with s.channel() as ch:
        raw_unary(ch)(b"x")
    (new,) = s.driver.new_calls()
    assert new[4] is None


def test_trailers_only_error_details_exact(serve: Serve) -> None:
    details = "nön-ASCII 100% sûr: ✓ \n end"

    def fail(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return (
            [(ev[1], None, grpc.StatusCode.FAILED_PRECONDITION.value[0], details)]
            if (ev[0] == 2)
            else []
        )

    s = serve(fail)
    with s.channel() as ch, pytest.raises(grpc.RpcError) as err:
        raw_unary(ch)(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == details


def test_error_without_details(serve: Serve) -> None:
    s = serve(lambda ev: [(ev[1], None, 5, "")] if ev[0] == 2 else [])
    with s.channel() as ch, pytest.raises(grpc.RpcError) as err:
        raw_unary(ch)(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not err.value.details()


def test_message_then_ok_and_message_then_error(serve: Serve) -> None:
    def reply(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if ev[0] != 1:
            return []
        if ev[2] == b"ok":
            return [(ev[1], b"response"), (ev[1], None, 0, "")]
        return [(ev[1], b"partial", 13, "after a message")]

    s = serve(reply)
    with s.channel() as ch:
        assert raw_unary(ch)(b"ok", timeout=10) == b"response"
        stream = ch.unary_stream("/t.S/S", request_serializer=None, response_deserializer=None)
        got = []
        with pytest.raises(grpc.RpcError) as err:
            for m in stream(b"bad", timeout=10):
                got.append(m)
        assert got == [b"partial"]
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == "after a message"


def test_server_streaming_many_messages(serve: Serve) -> None:
    n = 5000

    def stream(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if ev[0] != 2:
            return []
        items: list[tuple[Any, ...]] = [(ev[1], b"m%d" % i) for i in range(n)]
        return [*items, (ev[1], None, 0, "")]

    s = serve(stream)
    with s.channel() as ch:
        call = ch.unary_stream("/t.S/S", request_serializer=None, response_deserializer=None)
        got = list(call(b"go", timeout=30))
    assert got == [b"m%d" % i for i in range(n)]


def test_bidi_streaming_ping_pong(serve: Serve) -> None:
    def bidi(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if ev[0] == 1:
            return [(ev[1], b"re:" + ev[2])]
        if ev[0] == 2:
            return [(ev[1], None, 0, "")]
        return []

    s = serve(bidi)
    requests: queue.Queue[bytes | None] = queue.Queue()

    def gen() -> Iterator[bytes]:
        while (r := requests.get()) is not None:
            yield r

    with s.channel() as ch:
        call = ch.stream_stream("/t.S/B", request_serializer=None, response_deserializer=None)
        responses = call(gen(), timeout=30)
        for i in range(50):
            requests.put(b"%d" % i)
            assert next(responses) == b"re:%d" % i
        requests.put(None)
        assert list(responses) == []
        assert responses.code() == grpc.StatusCode.OK
    (new,) = s.driver.new_calls()
    kinds = [e[0] for e in s.driver.of(new[1])]
    assert kinds == [0] + [1] * 50 + [2]


def test_client_streaming_half_close(serve: Serve) -> None:
    def count(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return [(ev[1], b"%d" % len(s.driver.of(ev[1])), 0, "")] if ev[0] == 2 else []

    s = serve(count)
    with s.channel() as ch:
        call = ch.stream_unary("/t.S/C", request_serializer=None, response_deserializer=None)
        # NEW + 3 MESSAGE events are recorded before HALF_CLOSE is handled (the driver
        # records a batch before handling it): the reply counts the events seen so far.
        reply = call(iter([b"a", b"bb", b"ccc"]), timeout=10)
    (new,) = s.driver.new_calls()
    evs = s.driver.wait_for(lambda evs: any(e[0] == 2 for e in evs))
    mine = [e for e in evs if e[1] == new[1]]
    assert [e[0] for e in mine] == [0, 1, 1, 1, 2]
    assert [e[2] for e in mine if e[0] == 1] == [b"a", b"bb", b"ccc"]
    assert int(reply) == 5


def test_client_cancel_gives_cancel(serve: Serve) -> None:
    s = serve()  # never answers
    with s.channel() as ch:
        fut = raw_unary(ch).future(b"x", timeout=30)
        s.driver.wait_for(lambda evs: any(e[0] == 2 for e in evs))
        (new,) = s.driver.new_calls()
        fut.cancel()
        s.driver.wait_for(lambda evs: (3, new[1]) in evs)
        # Anything sent afterwards is ignored.
        assert s.fe.send([(new[1], b"late", 0, "")]) == []


def test_deadline_exceeded(serve: Serve) -> None:
    s = serve()  # never answers
    with s.channel() as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            raw_unary(ch)(b"x", timeout=0.5)
        # The client's own timer and the front end's (tests/unit/native/test_wire.py shows
        # that one alone) fire together: either way the status is DEADLINE_EXCEEDED.
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 5
        (new,) = s.driver.new_calls()
        s.driver.wait_for(lambda evs: (3, new[1]) in evs)


def test_request_over_max_recv_bytes(serve: Serve) -> None:
    s = serve(echo, max_recv_bytes=1000)
    with s.channel() as ch:
        assert raw_unary(ch)(b"a" * 1000, timeout=10) == b"a" * 1000
        with pytest.raises(grpc.RpcError) as err:
            raw_unary(ch)(b"a" * 2000, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == "grpc: received message larger than max (2000 vs. 1000)"
    s.driver.wait_for(lambda evs: any(e[0] == 3 for e in evs))
    news = s.driver.new_calls()
    assert len(news) == 2
    assert (3, news[1][1]) in s.driver.events
    assert [e[0] for e in s.driver.of(news[1][1])] == [0, 3]


def test_response_over_max_send_bytes(serve: Serve) -> None:
    s = serve(lambda ev: [(ev[1], b"b" * 200)] if ev[0] == 2 else [], max_send_bytes=100)
    with s.channel() as ch, pytest.raises(grpc.RpcError) as err:
        raw_unary(ch)(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == "grpc: trying to send message larger than max (200 vs. 100)"
    (new,) = s.driver.new_calls()
    s.driver.wait_for(lambda evs: (3, new[1]) in evs)


def test_large_request_and_response(serve: Serve) -> None:
    big_req = bytes(range(256)) * (6 * 1024)  # 1.5 MiB
    big_resp = b"\x07" * (4 * 1024 * 1024)

    def reply(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if ev[0] != 1:
            return []
        assert ev[2] == big_req
        return [(ev[1], big_resp, 0, "")]

    s = serve(reply)
    with s.channel() as ch:
        for _ in range(2):
            assert raw_unary(ch)(big_req, timeout=30) == big_resp


def _server_stream(s: Served, ch: grpc.Channel) -> tuple[Iterator[bytes], int]:
    """A server-streaming call from ``ch`` once its request is in: (its answers, call id)."""
    call = ch.unary_stream("/t.S/S", request_serializer=None, response_deserializer=None)
    responses = call(b"go", timeout=60)
    evs = s.driver.wait_for(lambda evs: any(e[0] == 2 for e in evs))
    (new,) = [e for e in evs if e[0] == 0]
    return responses, new[1]


def test_backpressure_over_1mib_then_drained(serve: Serve) -> None:
    s = serve()
    chunk = b"z" * 65536
    n = 48  # 3 MiB
    # No BDP probing: the client's window stays small until the application reads.
    with s.channel(**{"grpc.http2.bdp_probe": 0}) as ch:
        responses, cid = _server_stream(s, ch)
        over = s.fe.send([(cid, chunk) for _ in range(n)])
        assert over == [cid]
        time.sleep(0.5)
        assert (4, cid) not in s.driver.of(cid)  # the client has not read: still queued
        got = [next(responses) for _ in range(n)]
        s.driver.wait_for(lambda evs: (4, cid) in evs)
        assert got == [chunk] * n
        assert s.fe.send([(cid, None, 0, "")]) == []
        assert list(responses) == []


def test_large_messages_are_sent_from_the_bytes_object_itself(serve: Serve) -> None:
    """A message of 64 KiB or more is not copied on the event loop's thread: the front end
    holds the bytes object until the message is out, then lets it go (the reference is
    released on the next call into the front end)."""
    s = serve()
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB, over the client's first windows
    small = b"s" * 1000
    alone = sys.getrefcount(big), sys.getrefcount(small)
    with s.channel(**{"grpc.http2.bdp_probe": 0}) as ch:
        responses, cid = _server_stream(s, ch)
        s.fe.send([(cid, small), (cid, big)])
        time.sleep(0.3)  # the client reads nothing yet: most of big is still queued
        assert sys.getrefcount(small) == alone[1]  # copied
        assert sys.getrefcount(big) == alone[0] + 1  # held, not copied
        assert next(responses) == small
        assert next(responses) == big
        assert s.fe.send([(cid, None, 0, "")]) == []
        assert list(responses) == []
    deadline = time.monotonic() + 10
    while sys.getrefcount(big) != alone[0]:
        assert time.monotonic() < deadline, "the front end kept the message"
        s.fe.send([])  # a call into the front end releases what its threads let go
        time.sleep(0.05)


def test_bind_failure_names_the_address() -> None:
    first = Frontend([("127.0.0.1", 0)], **DEFAULTS)
    try:
        port = first.ports()[0]
        with pytest.raises(OSError) as err:
            Frontend([("127.0.0.1", port)], **DEFAULTS)
        assert str(err.value).endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")
        assert err.value.errno is not None
    finally:
        first.close()


def test_ports_with_port_zero_and_names() -> None:
    fe = Frontend([("127.0.0.1", 0), ("localhost", 0)], **DEFAULTS)
    try:
        ports = fe.ports()
        assert len(ports) == 2 and all(p > 0 for p in ports) and ports[0] != ports[1]
    finally:
        fe.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_listener_and_peer() -> None:
    fe = Frontend([("::1", 0), ("::", 0)], **DEFAULTS)
    try:
        fe.start()
        ports = fe.ports()
        seen: list[tuple[Any, ...]] = []
        for target in (f"[::1]:{ports[0]}", f"127.0.0.1:{ports[1]}"):  # "::" is dual-stack
            with grpc.insecure_channel(target) as ch:
                fut = raw_unary(ch).future(b"x", timeout=10)
                new: list[Any] = []
                while not new:
                    assert select.select([fe.fileno()], [], [], 10)[0]
                    new = [e for e in fe.take() if e[0] == 0]
                fe.send([(new[0][1], b"y", 0, "")])
                assert fut.result(timeout=10) == b"y"
                seen.append(new[0])
        assert re.fullmatch(r"ipv6:\[::1\]:\d+", seen[0][5]), seen[0][5]
        assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", seen[1][5]), seen[1][5]
    finally:
        fe.close()


def test_eventfd_readable_only_with_events() -> None:
    fe = Frontend([("127.0.0.1", 0)], **DEFAULTS)
    try:
        fe.start()
        fd = fe.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        assert fe.take() == []
        with grpc.insecure_channel(f"127.0.0.1:{fe.ports()[0]}") as ch:
            fut = raw_unary(ch).future(b"x", timeout=10)
            assert select.select([fd], [], [], 10)[0] == [fd]
            events: list[tuple[Any, ...]] = []
            while not any(e[0] == 2 for e in events):
                assert select.select([fd], [], [], 10)[0] == [fd]
                events += fe.take()
            assert select.select([fd], [], [], 0)[0] == []
            fe.send([(events[0][1], b"y", 0, "")])
            assert fut.result(timeout=10) == b"y"
    finally:
        fe.close()


def test_close_ends_calls_and_port_is_reusable() -> None:
    fe = Frontend([("127.0.0.1", 0)], **DEFAULTS)
    port = fe.ports()[0]
    fe.start()
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        fut = raw_unary(ch).future(b"x", timeout=30)
        events: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + 10
        while not any(e[0] == 2 for e in events):
            assert time.monotonic() < deadline
            select.select([fe.fileno()], [], [], 1)
            events += fe.take()
        t0 = time.monotonic()
        fe.close()
        assert time.monotonic() - t0 < 3
        fe.close()  # idempotent
        with pytest.raises(grpc.RpcError) as err:
            fut.result(timeout=10)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert (3, events[0][1]) in fe.take()
        with pytest.raises(ValueError):
            fe.start()
    finally:
        ch.close()
    again = Frontend([("127.0.0.1", port)], **DEFAULTS)
    again.close()


def test_stop_accepting_keeps_open_connections(serve: Serve) -> None:
    s = serve(echo)
    with s.channel() as ch:
        assert raw_unary(ch)(b"1", timeout=10) == b"1"
        s.fe.stop_accepting()  # returns once the listener is closed
        assert raw_unary(ch)(b"2", timeout=10) == b"2"
        with socket.socket() as sock:
            sock.settimeout(5)
            with pytest.raises(OSError):
                sock.connect(("127.0.0.1", s.port))


def test_200_concurrent_calls_one_channel(serve: Serve) -> None:
    s = serve(echo)
    with s.channel() as ch:
        call = raw_unary(ch)
        futures = [call.future(b"req-%d" % i, timeout=30) for i in range(200)]
        assert [f.result() for f in futures] == [b"req-%d" % i for i in range(200)]
    assert len(s.driver.new_calls()) == 200
    # Batching: far fewer wake-ups than events.
    assert s.driver.wakeups < len(s.driver.events)


def test_many_channels_in_threads(serve: Serve) -> None:
    s = serve(echo)

    def client(i: int) -> list[bytes]:
        with s.channel() as ch:
            return [raw_unary(ch)(b"%d-%d" % (i, j), timeout=30) for j in range(20)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    assert results == [[b"%d-%d" % (i, j) for j in range(20)] for i in range(8)]


def test_send_rejects_malformed_items(serve: Serve) -> None:
    s = serve()
    with pytest.raises(TypeError):
        s.fe.send([(1,)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        s.fe.send([(1, "text")])  # type: ignore[list-item]
    assert s.fe.send([(123456, b"unknown call")]) == []


def test_threads_2() -> None:
    fe = Frontend([("127.0.0.1", 0)], **DEFAULTS, threads=2)
    fe.start()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if select.select([fe.fileno()], [], [], 0.05)[0]:
                events: list[Any] = fe.take()
                fe.send([(e[1], e[2], 0, "") for e in events if e[0] == 1])

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{fe.ports()[0]}") as ch:
            futures = [raw_unary(ch).future(b"%d" % i, timeout=30) for i in range(100)]
            assert [f.result() for f in futures] == [b"%d" % i for i in range(100)]
    finally:
        stop.set()
        t.join(5)
        fe.close()
