"""A real petcd process served to the real etcdctl and to a gRPC client: KV, errors, Status."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.server.ids import cluster_id, member_id
from tests.integration.petcd_proc import PetcdProcess, etcdctl, kv_stub, maintenance_stub

QUOTA_BYTES = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    base = tmp_path_factory.mktemp("kv")
    p = PetcdProcess(
        base / "data",
        extra_args=[
            "--max-txn-ops",
            "4",
            "--max-request-bytes",
            "4096",
            "--quota-backend-bytes",
            str(QUOTA_BYTES),
        ],
    )
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def kv(server: PetcdProcess) -> Iterator[Any]:
    with server.channel() as ch:
        yield kv_stub(ch)


def _code_and_message(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return exc.code(), exc.details()


def test_etcdctl_put_get(server: PetcdProcess) -> None:
    out = etcdctl(server.endpoint, "put", "foo", "Hello, World!")
    assert (out.returncode, out.stdout) == (0, "OK\n"), out.stderr
    out = etcdctl(server.endpoint, "get", "foo")
    assert (out.returncode, out.stdout) == (0, "foo\nHello, World!\n"), out.stderr
    out = etcdctl(server.endpoint, "get", "nope")
    assert (out.returncode, out.stdout) == (0, "")


def test_etcdctl_prefix_and_delete(server: PetcdProcess) -> None:
    for k in ("p/a", "p/b", "p/c"):
        assert etcdctl(server.endpoint, "put", k, k.upper()).returncode == 0
    out = etcdctl(server.endpoint, "get", "p/", "--prefix", "--keys-only")
    assert out.stdout.split() == ["p/a", "p/b", "p/c"]
    out = etcdctl(server.endpoint, "del", "p/b")
    assert out.stdout == "1\n"
    out = etcdctl(server.endpoint, "get", "p/", "--prefix", "-w", "json")
    assert '"count":2' in out.stdout


def test_grpc_headers_and_revisions(server: PetcdProcess, kv: Any) -> None:
    r1 = kv.Put(rpc_pb2.PutRequest(key=b"h/1", value=b"one"))
    r2 = kv.Put(rpc_pb2.PutRequest(key=b"h/1", value=b"two", prev_kv=True))
    assert r2.header.revision == r1.header.revision + 1
    assert r2.prev_kv.value == b"one"
    mid = member_id([f"http://127.0.0.1:{server.peer_port}"], "petcd-itest")
    assert r2.header.member_id == mid
    assert r2.header.cluster_id == cluster_id([mid])
    assert r2.header.raft_term >= 2
    got = kv.Range(rpc_pb2.RangeRequest(key=b"h/1"))
    assert got.header.revision == r2.header.revision
    assert [(x.key, x.value, x.create_revision, x.mod_revision) for x in got.kvs] == [
        (b"h/1", b"two", r1.header.revision, r2.header.revision)
    ]
    old = kv.Range(rpc_pb2.RangeRequest(key=b"h/1", revision=r1.header.revision))
    assert old.kvs[0].value == b"one"
    ser = kv.Range(rpc_pb2.RangeRequest(key=b"h/1", serializable=True))
    assert ser.kvs[0].value == b"two"


def test_version_counts_puts(kv: Any) -> None:
    for v in (b"1", b"2", b"3"):
        kv.Put(rpc_pb2.PutRequest(key=b"ver", value=v))
    assert kv.Range(rpc_pb2.RangeRequest(key=b"ver")).kvs[0].version == 3


def test_txn(kv: Any) -> None:
    kv.Put(rpc_pb2.PutRequest(key=b"t/k", value=b"v1"))
    cmp = rpc_pb2.Compare(
        key=b"t/k", target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL, value=b"v1"
    )
    txn = rpc_pb2.TxnRequest(
        compare=[cmp],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"t/k", value=b"v2")),
            rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"t/k")),
        ],
        failure=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"t/other", value=b"x"))],
    )
    resp = kv.Txn(txn)
    assert resp.succeeded
    assert resp.responses[1].response_range.kvs[0].value == b"v2"
    resp = kv.Txn(txn)
    assert not resp.succeeded
    assert kv.Range(rpc_pb2.RangeRequest(key=b"t/other")).kvs[0].value == b"x"


def test_compaction_and_revision_errors(kv: Any) -> None:
    first = kv.Put(rpc_pb2.PutRequest(key=b"c/k", value=b"1")).header.revision
    last = kv.Put(rpc_pb2.PutRequest(key=b"c/k", value=b"2")).header.revision
    kv.Compact(rpc_pb2.CompactionRequest(revision=last, physical=True))
    with pytest.raises(grpc.RpcError) as e:
        kv.Range(rpc_pb2.RangeRequest(key=b"c/k", revision=first))
    assert _code_and_message(e.value) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
    with pytest.raises(grpc.RpcError) as e:
        kv.Compact(rpc_pb2.CompactionRequest(revision=last))
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.RpcError) as e:
        kv.Range(rpc_pb2.RangeRequest(key=b"c/k", revision=last + 1000))
    assert _code_and_message(e.value) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision is a future revision",
    )
    assert kv.Range(rpc_pb2.RangeRequest(key=b"c/k")).kvs[0].value == b"2"


def _put_op(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (
            lambda kv: kv.Put(rpc_pb2.PutRequest(key=b"", value=b"v")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: key is not provided",
        ),
        (
            lambda kv: kv.Range(rpc_pb2.RangeRequest(key=b"")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: key is not provided",
        ),
        (
            lambda kv: kv.Txn(rpc_pb2.TxnRequest(success=[_put_op(b"k%d" % i) for i in range(5)])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request",
        ),
        (
            lambda kv: kv.Txn(rpc_pb2.TxnRequest(success=[_put_op(b"d"), _put_op(b"d")])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            lambda kv: kv.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * 5000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: request is too large",
        ),
        (
            lambda kv: kv.Put(rpc_pb2.PutRequest(key=b"missing-key", ignore_value=True)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: key not found",
        ),
    ],
    ids=["put-empty-key", "range-empty-key", "too-many-ops", "dup-key", "too-large", "ign-val"],
)
def test_errors_match_etcd(kv: Any, call: object, code: grpc.StatusCode, message: str) -> None:
    before = kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0")).header.revision
    with pytest.raises(grpc.RpcError) as e:
        call(kv)  # type: ignore[operator]
    assert _code_and_message(e.value) == (code, message)
    after = kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0")).header.revision
    assert after == before  # nothing changed


def test_message_over_grpc_limit_is_refused(kv: Any) -> None:
    # --max-request-bytes 4096 + etcd's 512 KiB gRPC overhead: bigger messages never arrive.
    with pytest.raises(grpc.RpcError) as e:
        kv.Put(rpc_pb2.PutRequest(key=b"huge", value=b"x" * (600 * 1024)))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_status(server: PetcdProcess) -> None:
    with server.channel() as ch:
        st = maintenance_stub(ch).Status(rpc_pb2.StatusRequest())
    assert st.version.startswith("3.5.")
    assert st.leader == st.header.member_id
    assert st.raftIndex >= st.raftAppliedIndex > 0
    assert st.raftTerm == st.header.raft_term
    assert st.dbSize > 0
    out = etcdctl(server.endpoint, "endpoint", "status")
    assert out.returncode == 0 and "3.5." in out.stdout, out.stderr


def test_many_concurrent_writes_all_land(kv: Any) -> None:
    futures = [
        kv.Put.future(rpc_pb2.PutRequest(key=b"conc/%03d" % i, value=b"v")) for i in range(200)
    ]
    revs = sorted(f.result().header.revision for f in futures)
    assert len(set(revs)) == 200  # one revision each
    got = kv.Range(rpc_pb2.RangeRequest(key=b"conc/", range_end=b"conc0", count_only=True))
    assert got.count == 200


def test_put_with_unknown_lease_is_refused(kv: Any) -> None:
    with pytest.raises(grpc.RpcError) as e:
        kv.Put(rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=1234))
    assert _code_and_message(e.value) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )


def test_member_list_hash_kv_and_alarms(server: PetcdProcess) -> None:
    out = etcdctl(server.endpoint, "member", "list")
    assert out.returncode == 0, out.stderr
    mid = member_id([f"http://127.0.0.1:{server.peer_port}"], "petcd-itest")
    assert out.stdout == (
        f"{mid:x}, started, itest, http://127.0.0.1:{server.peer_port}, "
        f"http://127.0.0.1:{server.client_port}, false\n"
    )
    with server.channel() as ch:
        m = maintenance_stub(ch)
        h1 = m.HashKV(rpc_pb2.HashKVRequest())
        h2 = m.HashKV(rpc_pb2.HashKVRequest(revision=h1.header.revision))
        assert h1.hash == h2.hash and h1.hash_revision == h1.header.revision
        assert not m.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)).alarms
    assert etcdctl(server.endpoint, "endpoint", "health").returncode == 0


def test_zz_quota_backend_bytes(server: PetcdProcess, kv: Any) -> None:
    # Runs last in this module: it fills the backend up to --quota-backend-bytes.
    value = b"q" * 3500
    code = None
    for batch in range(QUOTA_BYTES // (3500 * 50) + 20):
        futures = [
            kv.Put.future(rpc_pb2.PutRequest(key=b"quota/%d/%d" % (batch, i), value=value))
            for i in range(50)
        ]
        for f in futures:
            try:
                f.result()
            except grpc.RpcError as e:
                code = _code_and_message(e)
        if code is not None:
            break
    assert code == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "etcdserver: mvcc: database space exceeded",
    )
    # The NOSPACE alarm is raised: every put fails now, reads and deletes still work.
    deadline = time.monotonic() + 15  # the alarm is raised through raft, just after the refusal
    while "alarm:NOSPACE" not in etcdctl(server.endpoint, "alarm", "list").stdout:
        assert time.monotonic() < deadline, "NOSPACE alarm never raised"
        time.sleep(0.1)
    with pytest.raises(grpc.RpcError) as refused:
        kv.Put(rpc_pb2.PutRequest(key=b"tiny", value=b"1"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # /health reports the alarm unless told to leave it out (etcd 3.5's ?exclude=)
    base = f"http://{server.endpoint}/health"
    for query, status, reason in (("", 503, "ALARM NOSPACE"), ("?exclude=NOSPACE", 200, "")):
        try:
            with urllib.request.urlopen(base + query, timeout=10) as r:
                got = (r.status, json.loads(r.read())["reason"])
        except urllib.error.HTTPError as e:
            got = (e.code, json.loads(e.read())["reason"])
        assert got == (status, reason), query
    assert kv.Range(rpc_pb2.RangeRequest(key=b"quota/0/0")).kvs[0].value == value
    deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"quota/", range_end=b"quota0"))
    # etcd's recovery: compact, defragment, disarm.
    kv.Compact(rpc_pb2.CompactionRequest(revision=deleted.header.revision, physical=True))
    assert etcdctl(server.endpoint, "defrag").returncode == 0
    out = etcdctl(server.endpoint, "alarm", "disarm")
    assert "alarm:NOSPACE" in out.stdout, out.stderr
    assert etcdctl(server.endpoint, "alarm", "list").stdout == ""
    kv.Put(rpc_pb2.PutRequest(key=b"tiny", value=b"1"))
