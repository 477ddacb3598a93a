"""The writes' callback forms on the native adapter (``NativeServer.add_unary_submit``,
``KVService.submit_forms``, ``Member.submit``) against a real one-member ``Member``.

Theory of operation
-------------------
petcd's real services and ``RequestGuard`` are registered on a ``NativeServer`` whose front
end is the fake of test_native_adapter.py, in front of a real ``Member`` in a temporary
directory. Every scenario runs twice: with the callback forms (``submit=True``, what petcd
serves with) and with the coroutine methods (``submit=False``, the grpc.aio servicer path);
the client-visible results (message, status code and text, what is sent after a CANCEL)
must be the same. With the forms, a write waiting for raft must have no task. The WAL's
sync is slowed down where a write must still be waiting when the next event comes.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc.interceptors import ERR_LEARNER, ERR_NO_LEADER, RequestGuard
from petcd.grpc.native import NativeServer
from petcd.grpc.services import _add_services
from petcd.mvcc import requests as R
from petcd.server.config import Config, Url
from petcd.server.log import Logger
from petcd.server.member import Member
from tests.unit.grpc.test_native_adapter import (
    CANCEL,
    HALF_CLOSE,
    MESSAGE,
    NEW,
    OK,
    PEER,
    FakeFrontend,
    unary,
)
from tests.unit.server.solo import slow_wal_syncs

PUT = "/etcdserverpb.KV/Put"
TXN = "/etcdserverpb.KV/Txn"
DELETE = "/etcdserverpb.KV/DeleteRange"
MAX_REQUEST_BYTES = 4096
SLOW_SYNC_S = 3.0  # a write waits this long for the WAL where it must stay pending...
ABANDON_S = 1.5  # ...and is abandoned well before, when its call ends

SUBMIT = pytest.mark.parametrize("submit", [True, False], ids=["submit", "coroutine"])


def awaited(member: Member) -> int:
    """Writes that a caller still waits for: queued for raft or proposed, not answered and
    not abandoned (an abandoned one may stay proposed until it is applied)."""
    queued = [fut for _, fut in member._proposals]
    return sum(not fut.done() for fut in [*queued, *member._waiters.values()])


def code(c: grpc.StatusCode) -> int:
    n: int = c.value[0]
    return n


class GuardView:
    """What the RequestGuard sees of the member (its leader, learner state), set by tests."""

    def __init__(self, member: Member) -> None:
        self._member = member
        self.leader_override: int | None = None
        self.learner = False

    @property
    def leader(self) -> int:
        return self._member.leader if self.leader_override is None else self.leader_override

    @property
    def is_learner(self) -> bool:
        return self.learner

    @property
    def auth_enabled(self) -> bool:
        return False


class Env:
    def __init__(self, member: Member, server: NativeServer, fe: FakeFrontend, guard: GuardView):
        self.member = member
        self.server = server
        self.fe = fe
        self.guard = guard

    async def answer(self, call_id: int) -> tuple[Any, int, str]:
        await until_s(lambda: self.fe.status(call_id) is not None)
        [(_, message, status, details)] = self.fe.sent(call_id)
        return message, status, details

    def slow_sync(self, seconds: float) -> Callable[[], None]:
        """Slows the WAL's fdatasyncs while the loop runs on; returns the undo."""
        return slow_wal_syncs(self.member, seconds)


async def until_s(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def run(tmp_path: Path, submit: bool, body: Callable[[Env], Awaitable[None]]) -> str:
    """Runs ``body``; returns the member's log."""
    peer = Url("http", "127.0.0.1", 1)  # never listened on: listen_peer_urls is empty
    cfg = Config(
        name="solo",
        data_dir=str(tmp_path / "solo.etcd"),
        listen_peer_urls=(),
        initial_advertise_peer_urls=(peer,),
        initial_cluster=(("solo", (peer,)),),
        max_request_bytes=MAX_REQUEST_BYTES,
    )
    out = io.StringIO()

    async def main() -> None:
        log = Logger("info", [out])
        member = Member.open(cfg, log)
        await member.start()
        guard = GuardView(member)
        server = NativeServer(
            [("127.0.0.1", 0)],
            max_recv_bytes=1 << 20,
            max_send_bytes=2**31 - 1,
            interceptors=[RequestGuard(guard, 1.0)],
            keepalive_min_time_ms=5000,
            keepalive_interval_ms=7_200_000,
            keepalive_timeout_ms=20_000,
            frontend_class=FakeFrontend,
            log=log,
            submit=submit,
        )
        _add_services(server, member, MAX_REQUEST_BYTES, log)
        fe = server._fe
        assert isinstance(fe, FakeFrontend)
        try:
            await asyncio.wait_for(member.wait_ready(), 10)
            await server.start()
            try:
                await body(Env(member, server, fe, guard))
            finally:
                await server.stop(None)
        finally:
            await member.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
    return out.getvalue()


def put(key: bytes, value: bytes = b"v", **kw: Any) -> Any:
    return rpc_pb2.PutRequest(key=key, value=value, **kw)


def txn_put(*keys: bytes, lease: int = 0) -> Any:
    return rpc_pb2.TxnRequest(
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"t", lease=lease))
            for k in keys
        ]
    )


@SUBMIT
def test_put_txn_delete_answer_with_the_member_s_responses(tmp_path: Path, submit: bool) -> None:
    async def body(env: Env) -> None:
        env.fe.inject(*unary(1, PUT, put(b"a", b"1")))
        message, status, details = await env.answer(1)
        assert (status, details) == (OK, "")
        r = rpc_pb2.PutResponse.FromString(message)
        assert r.header.revision == 2 and r.header.member_id == env.member.id
        env.fe.inject(*unary(2, PUT, put(b"a", b"2", prev_kv=True)))
        message, status, _ = await env.answer(2)
        assert rpc_pb2.PutResponse.FromString(message).prev_kv.value == b"1"
        env.fe.inject(*unary(3, TXN, txn_put(b"b", b"c")))
        message, status, _ = await env.answer(3)
        t = rpc_pb2.TxnResponse.FromString(message)
        assert status == OK and t.succeeded and t.header.revision == 4
        env.fe.inject(*unary(4, DELETE, rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"c")))
        message, status, _ = await env.answer(4)
        assert status == OK and rpc_pb2.DeleteRangeResponse.FromString(message).deleted == 2
        assert not env.server._calls

    run(tmp_path, submit, body)


def raw_unary(call_id: int, method: str, data: bytes) -> tuple[tuple[Any, ...], ...]:
    """``unary``'s events with the message's bytes as given."""
    return (
        (NEW, call_id, method, (("user-agent", "test"),), None, PEER),
        (MESSAGE, call_id, data),
        (HALF_CLOSE, call_id),
    )


def test_writes_go_to_the_native_decoder_and_what_it_leaves_to_protobuf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Put, Txn and DeleteRange in protobuf's own encoding reach the member without protobuf
    (the forms' protobuf path is not called); an encoding only protobuf reads (the key
    twice: the last one wins) is answered as protobuf reads it."""
    pytest.importorskip("petcd._frontend")
    from petcd.grpc.services import KVService

    through_protobuf: list[str] = []
    for name in ("_submit_put", "_submit_txn", "_submit_delete_range"):
        real = getattr(KVService, name)

        def spy(self: Any, request: Any, _real: Any = real, _name: str = name) -> Any:
            through_protobuf.append(_name)
            return _real(self, request)

        monkeypatch.setattr(KVService, name, spy)

    async def body(env: Env) -> None:
        env.fe.inject(*unary(1, PUT, put(b"a", b"1")))
        env.fe.inject(*unary(2, TXN, txn_put(b"b", b"c")))
        env.fe.inject(*unary(3, DELETE, rpc_pb2.DeleteRangeRequest(key=b"c")))
        for i in (1, 2, 3):
            _, status, details = await env.answer(i)
            assert (status, details) == (OK, "")
        assert through_protobuf == []
        # PutRequest{key: "x", key: "y", value: "2"}: protobuf keeps the last key
        env.fe.inject(*raw_unary(4, PUT, b"\x0a\x01x\x0a\x01y\x12\x012"))
        _, status, _ = await env.answer(4)
        assert status == OK
        assert through_protobuf == ["_submit_put"]
        resp = await env.member.range(R.RangeRequest(b"a", b"z"))
        assert [(kv.key, kv.value) for kv in resp.kvs] == [(b"a", b"1"), (b"b", b"t"), (b"y", b"2")]

    run(tmp_path, True, body)


def test_a_write_waiting_for_raft_has_a_future_and_no_task(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        undo = env.slow_sync(0.3)
        env.fe.inject(*unary(1, PUT, put(b"a")))
        await until_s(lambda: 1 in env.server._calls and env.server._calls[1].future is not None)
        call = env.server._calls[1]
        assert call.task is None
        assert awaited(env.member) == 1
        undo()
        _, status, _ = await env.answer(1)
        assert status == OK
        await until_s(lambda: awaited(env.member) == 0)

    run(tmp_path, True, body)


@SUBMIT
def test_failed_writes_get_etcd_s_codes_and_texts(tmp_path: Path, submit: bool) -> None:
    lease_not_found = (code(grpc.StatusCode.NOT_FOUND), "etcdserver: requested lease not found")
    too_large = (code(grpc.StatusCode.INVALID_ARGUMENT), "etcdserver: request is too large")
    invalid = code(grpc.StatusCode.INVALID_ARGUMENT)

    async def body(env: Env) -> None:
        cases: list[tuple[str, Any, tuple[int, str]]] = [
            # raised when applied (the future fails)
            (PUT, put(b"k", lease=12345), lease_not_found),
            (TXN, txn_put(b"k", lease=12345), lease_not_found),
            # raised before raft (the future fails when the proposal is encoded)
            (PUT, put(b"k", b"x" * (MAX_REQUEST_BYTES + 1)), too_large),
            # raised by the validation (submit raises at once)
            (PUT, put(b""), (invalid, "etcdserver: key is not provided")),
            (TXN, txn_put(b"d", b"d"), (invalid, "etcdserver: duplicate key given in txn request")),
            (
                TXN,
                txn_put(*(b"m%d" % i for i in range(129))),
                (invalid, "etcdserver: too many operations in txn request"),
            ),
            (DELETE, rpc_pb2.DeleteRangeRequest(), (invalid, "etcdserver: key is not provided")),
        ]
        for i, (method, request, _) in enumerate(cases, 1):
            env.fe.inject(*unary(i, method, request))
        for i, (method, _, expected) in enumerate(cases, 1):
            message, status, details = await env.answer(i)
            assert (message, status, details) == (None, *expected), method
        assert not env.server._calls

    log = run(tmp_path, submit, body)
    assert "unexpected error in gRPC handler" not in log


@SUBMIT
def test_an_unexpected_error_is_unknown_with_its_text_and_logged(
    tmp_path: Path, submit: bool
) -> None:
    async def body(env: Env) -> None:
        def broken(*args: Any) -> Any:
            raise RuntimeError("boom")

        async def broken_put(*args: Any) -> Any:
            raise RuntimeError("boom")

        env.member.submit = broken  # type: ignore[method-assign]
        env.member.put = broken_put  # type: ignore[method-assign]
        env.fe.inject(*unary(1, PUT, put(b"a")))
        assert await env.answer(1) == (None, code(grpc.StatusCode.UNKNOWN), "boom")

    log = run(tmp_path, submit, body)
    assert "unexpected error in gRPC handler" in log and "RuntimeError('boom')" in log


@SUBMIT
def test_the_request_timeout_is_etcd_s_request_timed_out(tmp_path: Path, submit: bool) -> None:
    async def body(env: Env) -> None:
        undo = env.slow_sync(0.8)
        env.member.request_timeout_s = 0.2
        try:
            env.fe.inject(*unary(1, PUT, put(b"a")))
            expected = (None, code(grpc.StatusCode.UNAVAILABLE), "etcdserver: request timed out")
            assert await env.answer(1) == expected
        finally:
            undo()

    run(tmp_path, submit, body)


@SUBMIT
def test_hasleader_without_a_leader_and_a_learner_refuse_writes(
    tmp_path: Path, submit: bool
) -> None:
    async def body(env: Env) -> None:
        env.guard.leader_override = 0
        env.fe.inject(*unary(1, PUT, put(b"a"), (("hasleader", "true"),)))
        no_leader = (None, code(ERR_NO_LEADER[0]), ERR_NO_LEADER[1])
        assert await env.answer(1) == no_leader
        env.fe.inject(*unary(2, TXN, txn_put(b"a"), (("hasleader", "true"),)))
        assert await env.answer(2) == no_leader
        # without the metadata the member (which has a leader) takes the write
        env.fe.inject(*unary(3, PUT, put(b"a")))
        assert (await env.answer(3))[1] == OK
        env.guard.leader_override = None
        env.guard.learner = True
        env.fe.inject(*unary(4, PUT, put(b"b")))
        env.fe.inject(*unary(5, DELETE, rpc_pb2.DeleteRangeRequest(key=b"a")))
        learner = (None, code(ERR_LEARNER[0]), ERR_LEARNER[1])
        assert await env.answer(4) == learner
        assert await env.answer(5) == learner
        assert env.member.kv.current_revision == 2  # only call 3 wrote

    run(tmp_path, submit, body)


@SUBMIT
def test_a_cancel_during_a_write_sends_nothing_and_releases_the_call(
    tmp_path: Path, submit: bool
) -> None:
    # CANCEL: the client reset the stream or its deadline passed (the front end has then
    # answered DEADLINE_EXCEEDED itself).
    async def body(env: Env) -> None:
        undo = env.slow_sync(SLOW_SYNC_S)
        env.fe.inject(*unary(1, PUT, put(b"a", b"1")))
        await until_s(lambda: awaited(env.member) == 1)
        env.fe.inject((CANCEL, 1))
        # The request is abandoned at once (its future cancelled), not when raft is done.
        await until_s(lambda: not env.server._calls and awaited(env.member) == 0, ABANDON_S)
        # In the same batch as the request: never started, or abandoned at once.
        env.fe.inject(*unary(2, PUT, put(b"b", b"2")), (CANCEL, 2))
        await until_s(lambda: not env.server._calls and awaited(env.member) == 0, ABANDON_S)
        undo()
        env.fe.inject(*unary(3, PUT, put(b"c", b"3")))
        _, status, _ = await env.answer(3)
        assert status == OK
        await asyncio.sleep(0.1)
        assert env.fe.sent(1) == [] and env.fe.sent(2) == []
        assert not env.member._waiters and awaited(env.member) == 0

    run(tmp_path, submit, body)


@SUBMIT
def test_stopping_the_server_with_a_write_in_flight(tmp_path: Path, submit: bool) -> None:
    async def body(env: Env) -> None:
        undo = env.slow_sync(SLOW_SYNC_S)
        env.fe.inject(*unary(1, PUT, put(b"a")))
        await until_s(lambda: awaited(env.member) == 1)
        await env.server.stop(None)
        await until_s(lambda: awaited(env.member) == 0, ABANDON_S)  # abandoned, not answered
        undo()
        assert env.fe.sent(1) == [] and not env.server._calls

    run(tmp_path, submit, body)


@SUBMIT
def test_many_concurrent_writes_each_get_their_own_answer(tmp_path: Path, submit: bool) -> None:
    async def body(env: Env) -> None:
        n = 200
        events: list[tuple[Any, ...]] = []
        for i in range(1, n + 1):
            events += [
                (NEW, i, PUT, (("user-agent", "test"),), None, PEER),
                (MESSAGE, i, put(b"k%03d" % i, b"v%d" % i).SerializeToString()),
                (HALF_CLOSE, i),
            ]
        env.fe.inject(*events)
        await until_s(lambda: all(env.fe.status(i) is not None for i in range(1, n + 1)))
        revisions = set()
        for i in range(1, n + 1):
            message, status, _ = await env.answer(i)
            assert status == OK
            revisions.add(rpc_pb2.PutResponse.FromString(message).header.revision)
        assert revisions == set(range(2, n + 2))
        assert awaited(env.member) == 0 and not env.server._calls

    run(tmp_path, submit, body)


RANGE = "/etcdserverpb.KV/Range"


async def answers_as_member_ranges(env: Env, call_id: int, req: Any) -> None:
    """Range ``req`` as call ``call_id`` is answered with protobuf's encoding of the member's
    own answer."""
    from petcd.grpc import convert

    env.fe.inject(*unary(call_id, RANGE, req))
    message, status, details = await env.answer(call_id)
    assert (status, details) == (OK, "")
    expected = convert.range_response_pb(
        await env.member.range(convert.range_request(req))
    ).SerializeToString()
    assert message == expected, req


@pytest.mark.parametrize("native", [True, False], ids=["native-encoder", "protobuf"])
def test_range_answers_protobuf_s_bytes_of_the_member_s_response(
    tmp_path: Path, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Range's handler answers bytes (add_kv_service): a plain Range's stored records are
    # encoded by petcd._frontend.range_response, anything else through protobuf; either way
    # the bytes must be protobuf's own encoding of the member's answer.
    if not native:
        monkeypatch.setattr("petcd.grpc.services._native_range_encoder", lambda: None)

    async def body(env: Env) -> None:
        for i, (k, v) in enumerate([(b"a", b"1"), (b"b", b"x" * 300), (b"c", b""), (b"a", b"2")]):
            env.fe.inject(*unary(100 + i, PUT, put(k, v, lease=0)))
            assert (await env.answer(100 + i))[1] == OK
        if native:  # the plain single-key Ranges go through Member.range_one_now
            one_keys: list[bytes] = []
            range_one_now = env.member.range_one_now

            def counted(key: bytes, serializable: bool) -> Any:
                one_keys.append(key)
                return range_one_now(key, serializable)

            env.member.range_one_now = counted  # type: ignore[method-assign]
        long_key = b"k" * 200  # a two-byte length
        env.fe.inject(*unary(99, PUT, put(long_key, b"long")))
        assert (await env.answer(99))[1] == OK
        requests = [
            rpc_pb2.RangeRequest(key=b"a"),  # one key
            rpc_pb2.RangeRequest(key=b"zz"),  # absent
            rpc_pb2.RangeRequest(key=b"a", serializable=True),
            rpc_pb2.RangeRequest(key=long_key, serializable=True),
            rpc_pb2.RangeRequest(key=b"a", limit=1),  # one key with an option
            rpc_pb2.RangeRequest(key=b"a", serializable=True, keys_only=True),
            rpc_pb2.RangeRequest(key=b"a", range_end=b"\x00", limit=2),  # a page, more
            rpc_pb2.RangeRequest(key=b"a", range_end=b"c", revision=3),  # an older revision
            rpc_pb2.RangeRequest(key=b"a", range_end=b"\x00", sort_order=2),  # not plain
            rpc_pb2.RangeRequest(key=b"a", range_end=b"\x00", keys_only=True),  # not plain
            rpc_pb2.RangeRequest(key=b"a", range_end=b"\x00", count_only=True),  # not plain
        ]
        for n, req in enumerate(requests, 1):
            await answers_as_member_ranges(env, n, req)
        if native:
            assert one_keys == [b"a", b"zz", b"a", long_key]
        env.fe.inject(*unary(50, RANGE, rpc_pb2.RangeRequest(key=b"a", revision=99)))
        _, status, details = await env.answer(50)
        assert (status, details) == (
            code(grpc.StatusCode.OUT_OF_RANGE),
            "etcdserver: mvcc: required revision is a future revision",
        )

    run(tmp_path, True, body)


def test_large_records_reach_the_encoder_as_views_into_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Range of large values on disk hands the native encoder memoryviews into LMDB's map
    (``Backend.get_many_pinned``): the loop copies none of them; a big answer is encoded in
    a range thread, a small one at once, and either way the lease ends with the encoding."""
    from petcd._frontend import range_response

    seen: list[tuple[str, list[str]]] = []

    def recording(*args: Any) -> bytes:
        seen.append((threading.current_thread().name, [type(r).__name__ for r in args[4]]))
        return range_response(*args)

    monkeypatch.setattr("petcd.grpc.services._native_range_encoder", lambda: recording)
    # Scaled down to the test's request size limit (4 KiB).
    monkeypatch.setattr("petcd.backend.backend.PINNED_VALUE_MIN_BYTES", 1000)
    monkeypatch.setattr("petcd.grpc.services.BIG_RANGE_BYTES", 8000)

    async def body(env: Env) -> None:
        for i in range(3):  # 3 x 3,000 bytes on disk: past BIG_RANGE_BYTES
            env.fe.inject(*unary(100 + i, PUT, put(b"big/%d" % i, bytes([65 + i]) * 3000)))
            assert (await env.answer(100 + i))[1] == OK
        for i in range(2):  # 2 x 1,500 bytes on disk
            env.fe.inject(*unary(200 + i, PUT, put(b"mid/%d" % i, bytes([97 + i]) * 1500)))
            assert (await env.answer(200 + i))[1] == OK
        backend = env.member._backend
        backend.commit()
        env.fe.inject(*unary(300, PUT, put(b"big/3", b"in the batch, not on disk")))
        assert (await env.answer(300))[1] == OK
        requests = [
            rpc_pb2.RangeRequest(key=b"big/", range_end=b"big0"),
            rpc_pb2.RangeRequest(key=b"mid/", range_end=b"mid0"),
        ]
        seen.clear()  # the puts' answers (a header alone) came from the encoder too
        for n, req in enumerate(requests, 1):
            await answers_as_member_ranges(env, n, req)
            assert backend._leases == 0
        [(big_thread, big_types), (mid_thread, mid_types)] = seen
        assert big_thread.startswith("petcd-range") and mid_thread == "MainThread"
        assert big_types == ["memoryview"] * 3 + ["bytes"]
        assert mid_types == ["memoryview"] * 2

    run(tmp_path, True, body)


def test_a_one_key_range_that_must_wait_is_answered_by_the_handler(tmp_path: Path) -> None:
    """A one-key linearizable Range is answered at once (``range_one_now``) only when the
    member may read without waiting; otherwise Range's coroutine waits (``range_one``) and
    answers the same bytes. A serializable one never waits."""

    async def body(env: Env) -> None:
        env.fe.inject(*unary(1, PUT, put(b"a", b"1")))
        assert (await env.answer(1))[1] == OK
        member = env.member
        assert member._reads_now()
        waited: list[bytes] = []
        range_one = member.range_one

        async def counted(key: bytes, serializable: bool) -> Any:
            waited.append(key)
            return await range_one(key, serializable)

        member.range_one = counted  # type: ignore[method-assign]
        env.fe.inject(*unary(2, RANGE, rpc_pb2.RangeRequest(key=b"a")))
        at_once = await env.answer(2)
        assert waited == []
        member._reads_now = lambda: False  # type: ignore[method-assign]
        env.fe.inject(*unary(3, RANGE, rpc_pb2.RangeRequest(key=b"a")))
        env.fe.inject(*unary(4, RANGE, rpc_pb2.RangeRequest(key=b"a", serializable=True)))
        assert await env.answer(3) == at_once
        assert waited == [b"a"]
        assert await env.answer(4) == at_once
        assert waited == [b"a"]
        assert rpc_pb2.RangeResponse.FromString(at_once[0]).kvs[0].value == b"1"

    run(tmp_path, True, body)


def test_a_batch_s_answers_are_sent_before_the_member_moves_on(tmp_path: Path) -> None:
    """The member's answers listener sends a batch's answers as soon as they are resolved and
    durable: whenever its Ready loop goes on after an apply (``_after_apply``), the front end
    has had an answer for every put applied, without waiting for the event loop to turn."""

    async def body(env: Env) -> None:
        member = env.member
        after_apply = member._after_apply
        checks: list[tuple[int, int]] = []  # (puts applied, answers sent)

        async def noting_after_apply() -> None:
            sent = sum(1 for batch in env.fe.sends for item in batch if item[2] == OK)
            checks.append((member.kv.current_revision - 1, sent))
            await after_apply()

        member._after_apply = noting_after_apply  # type: ignore[method-assign]
        ids = range(1, 31)
        for i in ids:
            env.fe.inject(*unary(i, PUT, put(b"k%d" % i)))
        for i in ids:
            _, status, _ = await env.answer(i)
            assert status == OK
        assert checks, "the member applied nothing"
        assert all(applied == sent for applied, sent in checks), checks

    run(tmp_path, True, body)
