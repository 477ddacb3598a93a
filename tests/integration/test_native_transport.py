"""A real petcd started with ``--client-transport native``, used by the real etcdctl 3.4 and
by petcd's own clients: the Rust front end (``petcd._frontend``) plus ``petcd.grpc.native``
must give clients what the grpc.aio server gives them.

Covered: KV (put, get, del, txn), watch (events, a cancel request, a stream the client
drops), leases (grant, keep-alive, time-to-live, revoke), member list, endpoint status, a
snapshot of a few MiB, the two request size limits (the member's ``request is too large`` and
the transport's ``received message larger than max``), etcdctl's lock and elect, ``hasleader``
metadata, a client deadline on a call the server holds (a Lock waiting for its turn), the
statuses of failing writes and deadlines on writes in flight (the writes' callback forms), and
an unknown service. The whole integration and compat suites also run on this transport with
``PETCD_CLIENT_TRANSPORT=native``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from petcd.client import Client
from tests.integration.petcd_proc import ETCDCTL_BIN, PETCD_BIN, PetcdProcess, etcdctl, kv_stub

pytest.importorskip("petcd._frontend", reason="the native front end is not built (make install)")

MAX_REQUEST_BYTES = 64 * 1024
RECV_LIMIT_BYTES = MAX_REQUEST_BYTES + 512 * 1024  # etcd: + grpcOverheadBytes
WAIT_S = 20.0  # generous: 2 cores shared by many test runs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(
        tmp_path_factory.mktemp("native") / "data",
        name="native",
        extra_args=[
            "--client-transport", "native",
            "--max-request-bytes", str(MAX_REQUEST_BYTES),
        ],
    )  # fmt: skip
    p.start()
    try:
        yield p
    finally:
        p.stop()


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return out.stdout


def poll(cond: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_the_server_says_it_serves_on_the_native_transport(server: PetcdProcess) -> None:
    records = server.log_records()
    assert any(r.get("msg") == "ready to serve client requests" for r in records)
    [listeners] = [r for r in records if r.get("msg") == "configuring client listeners"]
    assert listeners["client-transport"] == "native"


def test_etcdctl_put_get_del_txn(server: PetcdProcess) -> None:
    ep = server.endpoint
    assert ok(etcdctl(ep, "put", "n/foo", "Hello, World!")) == "OK\n"
    assert ok(etcdctl(ep, "get", "n/foo")) == "n/foo\nHello, World!\n"
    assert ok(etcdctl(ep, "get", "n/none")) == ""
    for k in ("n/a", "n/b"):
        ok(etcdctl(ep, "put", k, k.upper()))
    assert ok(etcdctl(ep, "get", "n/", "--prefix", "--keys-only")) == "n/a\n\nn/b\n\nn/foo\n\n"
    assert ok(etcdctl(ep, "del", "n/a")) == "1\n"
    txn = subprocess.run(
        [ETCDCTL_BIN, f"--endpoints={ep}", "txn"],
        input='value("n/b") = "N/B"\n\nput n/t yes\n\nput n/t no\n\n',
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )
    assert (txn.returncode, txn.stdout) == (0, "SUCCESS\n\nOK\n"), txn.stderr
    assert ok(etcdctl(ep, "get", "n/t", "--print-value-only")) == "yes\n"
    out = json.loads(ok(etcdctl(ep, "get", "n/t", "-w", "json")))
    assert out["count"] == 1 and out["header"]["revision"] > 0


def test_the_python_client_sync_calls(server: PetcdProcess) -> None:
    with Client([server.endpoint]) as c:
        put = c.put(b"py/k", b"v1")
        assert put.header.revision > 0
        got = c.get(b"py/k")
        assert [(kv.key, kv.value) for kv in got.kvs] == [(b"py/k", b"v1")]
        assert c.delete(b"py/k").deleted == 1
        members = c.member_list().members
        assert [m.name for m in members] == ["native"]
        assert c.status().leader == members[0].ID


def test_watch_events_and_a_cancel_request(server: PetcdProcess) -> None:
    with server.channel() as ch:
        watch: Any = rpc_pb2_grpc.WatchStub(ch)  # type: ignore[no-untyped-call]
        kv = kv_stub(ch)
        requests: list[Any] = [
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w/k"))
        ]
        more = threading.Event()

        def feed() -> Iterator[Any]:
            yield requests[0]
            more.wait(WAIT_S)
            yield rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0))
            time.sleep(WAIT_S)  # the client keeps its side open

        stream = watch.Watch(feed(), timeout=WAIT_S * 2)
        created = next(stream)
        assert created.created and created.watch_id == 0
        for i in range(3):
            kv.Put(rpc_pb2.PutRequest(key=b"w/k", value=b"v%d" % i))
        values: list[bytes] = []
        while len(values) < 3:
            values.extend(ev.kv.value for ev in next(stream).events)
        assert values == [b"v0", b"v1", b"v2"]
        more.set()
        canceled = next(stream)
        assert canceled.canceled and canceled.watch_id == 0
        stream.cancel()


def test_a_dropped_watch_stream_leaves_the_server_serving(server: PetcdProcess) -> None:
    with Client([server.endpoint]) as c:
        for _ in range(5):
            events = c.watch(b"wd/k")
            writer = threading.Timer(0.2, lambda: c.put(b"wd/k", b"x"))
            writer.start()
            first = next(events)
            assert first.events[0].kv.value == b"x"
            events.close()  # cancels the stream (RST_STREAM)
            writer.join()
        assert c.get(b"wd/k").kvs[0].value == b"x"


def test_etcdctl_watch_prints_events(server: PetcdProcess) -> None:
    ctl = subprocess.Popen(
        [ETCDCTL_BIN, f"--endpoints={server.endpoint}", "watch", "cw/k"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        time.sleep(0.5)
        ok(etcdctl(server.endpoint, "put", "cw/k", "one"))
        assert ctl.stdout is not None
        lines = [ctl.stdout.readline() for _ in range(3)]
        assert lines == [b"PUT\n", b"cw/k\n", b"one\n"]
    finally:
        ctl.send_signal(signal.SIGINT)
        ctl.wait(timeout=WAIT_S)


def test_leases_grant_keep_alive_ttl_revoke(server: PetcdProcess) -> None:
    ep = server.endpoint
    out = ok(etcdctl(ep, "lease", "grant", "60"))
    lease_hex = out.split()[1]
    assert out == f"lease {lease_hex} granted with TTL(60s)\n"
    ok(etcdctl(ep, "put", "l/k", "v", f"--lease={lease_hex}"))
    once = ok(etcdctl(ep, "lease", "keep-alive", "--once", lease_hex))
    assert once == f"lease {lease_hex} keepalived with TTL(60)\n"
    ttl = ok(etcdctl(ep, "lease", "timetolive", lease_hex, "--keys"))
    assert f"lease {lease_hex} granted with TTL(60s)" in ttl and "attached keys([l/k])" in ttl
    assert ok(etcdctl(ep, "lease", "revoke", lease_hex)) == f"lease {lease_hex} revoked\n"
    assert ok(etcdctl(ep, "get", "l/k")) == ""
    with Client([ep]) as c:
        lease = c.lease_grant(30)
        renewals = c.lease_keep_alive(lease.ID)
        assert next(renewals).TTL == 30
        renewals.close()
        c.lease_revoke(lease.ID)
        missing = etcdctl(ep, "lease", "keep-alive", "--once", f"{lease.ID:x}")
        assert missing.returncode != 0 and "requested lease not found" in missing.stderr


def test_member_list_and_endpoint_status(server: PetcdProcess) -> None:
    ep = server.endpoint
    line = ok(etcdctl(ep, "member", "list")).strip()
    assert ", started, native, " in line and line.endswith(f"http://{ep}, false")
    [status] = json.loads(ok(etcdctl(ep, "endpoint", "status", "-w", "json")))
    assert status["Endpoint"] == ep
    assert status["Status"]["leader"] == status["Status"]["header"]["member_id"]
    health = etcdctl(ep, "endpoint", "health")  # etcdctl 3.4 prints it on stderr
    assert health.returncode == 0 and health.stderr.startswith(f"{ep} is healthy"), health


def test_snapshot_save_of_a_few_mib(server: PetcdProcess, tmp_path: Path) -> None:
    value = os.urandom(MAX_REQUEST_BYTES // 2).hex()[: MAX_REQUEST_BYTES - 1024]  # ~63 KiB
    with Client([server.endpoint]) as c:
        for i in range(64):  # ~4 MiB of values: over a hundred 32 KiB snapshot chunks
            c.put(b"snap/%03d" % i, value.encode())
    path = tmp_path / "snap.db"
    out = etcdctl(server.endpoint, "snapshot", "save", str(path), timeout_s=60)
    assert out.returncode == 0, out.stderr
    assert path.stat().st_size > 4 * 1024 * 1024
    petcdutl = str(Path(PETCD_BIN).parent / "petcdutl")
    status = subprocess.run(
        [petcdutl, "snapshot", "status", str(path), "-w", "json"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["totalKey"] >= 64


def test_requests_over_the_limits(server: PetcdProcess) -> None:
    ep = server.endpoint
    member = etcdctl(ep, "put", "big/k", "x" * (MAX_REQUEST_BYTES + 1000))
    assert member.returncode != 0
    assert "etcdserver: request is too large" in member.stderr, member.stderr
    size = RECV_LIMIT_BYTES + 100_000
    with server.channel() as ch, pytest.raises(grpc.RpcError) as e:
        kv_stub(ch).Put(rpc_pb2.PutRequest(key=b"big/k", value=b"x" * size), timeout=WAIT_S)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = e.value.details() or ""
    assert details.startswith("grpc: received message larger than max (")
    assert details.endswith(f" vs. {RECV_LIMIT_BYTES})")
    assert ok(etcdctl(ep, "put", "big/after", "ok")) == "OK\n"  # the connection goes on


def test_failing_writes_get_etcd_s_statuses_and_deadlines_end_writes_in_flight(
    server: PetcdProcess,
) -> None:
    # Put, Txn and DeleteRange are served by their callback forms on this transport
    # (NativeServer.add_unary_submit): the same statuses as the coroutine methods.
    def put_op(key: bytes, lease: int = 0) -> Any:
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v", lease=lease))

    not_found = (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    cases: list[tuple[str, Any, tuple[grpc.StatusCode, str]]] = [
        ("Put", rpc_pb2.PutRequest(key=b"we/k", value=b"v", lease=424242), not_found),
        ("Txn", rpc_pb2.TxnRequest(success=[put_op(b"we/k", 424242)]), not_found),
        (
            "Txn",
            rpc_pb2.TxnRequest(success=[put_op(b"we/d"), put_op(b"we/d")]),
            (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
        ),
        (
            "DeleteRange",
            rpc_pb2.DeleteRangeRequest(),
            (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        ),
    ]
    with server.channel() as ch:
        kv = kv_stub(ch)
        for method, request, expected in cases:
            with pytest.raises(grpc.RpcError) as e:
                getattr(kv, method)(request, timeout=WAIT_S)
            assert (e.value.code(), e.value.details()) == expected, method
        # Deadlines that pass before the member sees the writes: the member is stopped
        # (SIGSTOP) while the client sends them, so every one ends in DEADLINE_EXCEEDED; on
        # SIGCONT the member reads writes whose streams the client has already reset, and
        # goes on.
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            calls = [
                kv.Put.future(rpc_pb2.PutRequest(key=b"we/st%d" % i, value=b"v"), timeout=0.3)
                for i in range(20)
            ]
            codes = [c.code() for c in calls]
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * len(calls)
        # Deadlines passing while writes wait for raft (1 ms: some are answered in time on a
        # fast machine, others not, which one is up to timing): each call ends in OK or
        # DEADLINE_EXCEEDED, and the member goes on.
        calls = [
            kv.Put.future(rpc_pb2.PutRequest(key=b"we/dl%d" % i, value=b"v"), timeout=0.001)
            for i in range(50)
        ]
        assert {c.code() for c in calls} <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
        r = kv.Put(rpc_pb2.PutRequest(key=b"we/after", value=b"ok"), timeout=WAIT_S)
        assert r.header.revision > 0
    assert not [r for r in server.log_records() if "unexpected" in str(r.get("msg"))]


def test_etcdctl_lock_and_elect(server: PetcdProcess) -> None:
    ep = server.endpoint
    assert ok(etcdctl(ep, "lock", "nl", "echo", "locked")) == "locked\n"
    ctl = subprocess.Popen(
        [ETCDCTL_BIN, f"--endpoints={ep}", "elect", "ne", "proposal"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        assert ctl.stdout is not None
        assert ctl.stdout.readline().startswith(b"ne/")
        leader = ok(etcdctl(ep, "get", "ne/", "--prefix", "--print-value-only"))
        assert leader == "proposal\n"
    finally:
        ctl.send_signal(signal.SIGINT)
        ctl.wait(timeout=WAIT_S)
    poll(lambda: ok(etcdctl(ep, "get", "ne/", "--prefix", "--keys-only")) == "")


def test_hasleader_metadata_on_a_member_with_a_leader(server: PetcdProcess) -> None:
    with server.channel() as ch:
        kv = kv_stub(ch)
        md = (("hasleader", "true"),)
        kv.Put(rpc_pb2.PutRequest(key=b"hl/k", value=b"v"), metadata=md, timeout=WAIT_S)
        got = kv.Range(rpc_pb2.RangeRequest(key=b"hl/k", serializable=True), metadata=md)
        assert got.kvs[0].value == b"v"


def test_a_client_deadline_on_a_held_call_and_the_server_cleans_up(
    server: PetcdProcess,
) -> None:
    with server.channel() as ch:
        lock: Any = v3lock_pb2_grpc.LockStub(ch)  # type: ignore[no-untyped-call]
        lease: Any = rpc_pb2_grpc.LeaseStub(ch)  # type: ignore[no-untyped-call]
        kv = kv_stub(ch)

        def grant() -> int:
            lease_id: int = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60)).ID
            return lease_id

        def waiters() -> int:
            r = kv.Range(rpc_pb2.RangeRequest(key=b"dl/", range_end=b"dl0", count_only=True))
            count: int = r.count
            return count

        held = lock.Lock(v3lock_pb2.LockRequest(name=b"dl", lease=grant()))
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            lock.Lock(v3lock_pb2.LockRequest(name=b"dl", lease=grant()), timeout=1.0)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < WAIT_S
        poll(lambda: waiters() == 1)  # the abandoned waiter's key is deleted
        lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key))
        assert waiters() == 0


def test_an_unknown_service_gets_grpc_go_s_status(server: PetcdProcess) -> None:
    with server.channel() as ch:
        call = ch.unary_unary(
            "/etcdserverpb.Nope/Nothing",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=WAIT_S)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert e.value.details() == "unknown service etcdserverpb.Nope"


def test_hasleader_on_a_member_that_lost_its_quorum(tmp_path: Path) -> None:
    # tests/integration/test_require_leader.py in full runs on whichever transport
    # PETCD_CLIENT_TRANSPORT names; this is its core on the native one whatever the default.
    from tests.compat.k8s.watch_stream import StreamEnded, WatchStream
    from tests.robustness.cluster import Cluster

    no_leader = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
    md = (("hasleader", "true"),)
    c = Cluster(
        tmp_path,
        "petcd",
        3,
        extra_args=[
            "--client-transport", "native",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
        ],
    )  # fmt: skip
    try:
        c.start()
        endpoint = c.endpoints[0]
        with WatchStream(endpoint, md) as required, grpc.insecure_channel(endpoint) as ch:
            kv = kv_stub(ch)
            serializable = rpc_pb2.RangeRequest(key=b"k", serializable=True)
            kv.Range(serializable, metadata=md, timeout=WAIT_S)
            required.create(b"k", b"")
            c.kill(1)
            c.kill(2)
            with pytest.raises(StreamEnded) as ended:
                required.next(timeout_s=WAIT_S)
            assert (ended.value.code, ended.value.details) == no_leader
            with pytest.raises(grpc.RpcError) as refused:
                kv.Range(serializable, metadata=md, timeout=WAIT_S)
            assert (refused.value.code(), refused.value.details()) == no_leader
            assert kv.Range(serializable, timeout=WAIT_S).header.member_id != 0
    finally:
        c.stop()
