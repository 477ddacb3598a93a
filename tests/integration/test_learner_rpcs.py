"""What a learner serves, over the network: etcd's isRPCSupportedForLearner.

A learner (a member added with ``member add --learner``, not yet promoted) answers only
Maintenance.Status, serializable KV.Range and (etcd >= 3.5) the Maintenance.Snapshot stream;
every other RPC, unary or stream, of every service fails with ``UNAVAILABLE`` ``etcdserver:
rpc not supported for learner``, as etcd's interceptors answer. Once promoted, the same member
serves everything. Checked with the real etcdctl (exit codes and messages as etcd 3.4's, see
tests/compat/test_learner_compat.py for the side-by-side run) and with raw gRPC calls.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.v3electionpb import v3election_pb2, v3election_pb2_grpc
from petcd.api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from petcd.grpc.interceptors import PEER_HASHKV
from tests.integration.petcd_proc import PetcdProcess, etcdctl
from tests.ports import free_port

TOKEN = "itest-learner-rpcs"
LEARNER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")
NOT_SUPPORTED = "Error: etcdserver: rpc not supported for learner\n"


def _ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def _wait(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def learner(tmp_path: Path) -> Iterator[tuple[PetcdProcess, PetcdProcess, str]]:
    """A one-member cluster (a) and a learner (b) that caught up with it; b's id in hex."""
    a = PetcdProcess(tmp_path / "a" / "data", name="a")
    a.extra_args = ["--initial-cluster-token", TOKEN]
    b_port = free_port()
    b_peer = f"http://127.0.0.1:{b_port}"
    b = PetcdProcess(tmp_path / "b" / "data", name="b", peer_port=b_port)
    try:
        a.start()
        assert _ok(etcdctl(a.endpoint, "put", "foo", "bar")) == "OK\n"
        out = _ok(etcdctl(a.endpoint, "member", "add", "b", f"--peer-urls={b_peer}", "--learner"))
        found = re.search(r"Member +([0-9a-f]+) added", out)
        assert found, out
        b.extra_args = [
            "--initial-cluster", f"a=http://127.0.0.1:{a.peer_port},b={b_peer}",
            "--initial-cluster-state", "existing",
            "--initial-cluster-token", TOKEN,
        ]  # fmt: skip
        b.start()
        _wait(
            lambda: etcdctl(b.endpoint, "get", "foo", "--consistency=s").stdout == "foo\nbar\n",
            "the learner to catch up",
        )
        yield a, b, found.group(1)
    finally:
        b.stop()
        a.stop()


def _user_lines(text: str) -> str:
    """etcdctl's stderr without its client's JSON log lines (retry warnings)."""
    return "".join(line for line in text.splitlines(True) if not line.startswith('{"level"'))


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str] | str:
    try:
        result = call()
        if hasattr(result, "__next__"):  # a server stream: its first message
            next(result)
        return "ok"
    except grpc.RpcError as e:
        return e.code(), e.details()


def test_a_learner_serves_only_status_serializable_range_and_snapshot(
    learner: tuple[PetcdProcess, PetcdProcess, str],
) -> None:
    a, b, b_id = learner
    with grpc.insecure_channel(b.endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        lease = rpc_pb2_grpc.LeaseStub(ch)  # type: ignore[no-untyped-call]
        watch = rpc_pb2_grpc.WatchStub(ch)  # type: ignore[no-untyped-call]
        cluster = rpc_pb2_grpc.ClusterStub(ch)  # type: ignore[no-untyped-call]
        maint = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
        election = v3election_pb2_grpc.ElectionStub(ch)  # type: ignore[no-untyped-call]
        lock = v3lock_pb2_grpc.LockStub(ch)  # type: ignore[no-untyped-call]
        t = 5.0
        status = maint.Status(rpc_pb2.StatusRequest(), timeout=t)
        assert status.isLearner and status.leader != 0, status
        got = kv.Range(rpc_pb2.RangeRequest(key=b"foo", serializable=True), timeout=t)
        assert [kv.value for kv in got.kvs] == [b"bar"], got
        # hasleader is satisfied: the learner knows the leader.
        got = kv.Range(
            rpc_pb2.RangeRequest(key=b"foo", serializable=True),
            metadata=(("hasleader", "true"),),
            timeout=t,
        )
        assert got.count == 1, got
        calls: dict[str, Callable[[], Any]] = {
            "Range": lambda: kv.Range(rpc_pb2.RangeRequest(key=b"foo"), timeout=t),
            "Put": lambda: kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=t),
            "DeleteRange": lambda: kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k"), timeout=t),
            "Txn": lambda: kv.Txn(rpc_pb2.TxnRequest(), timeout=t),
            "Compact": lambda: kv.Compact(rpc_pb2.CompactionRequest(revision=1), timeout=t),
            "LeaseGrant": lambda: lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10), timeout=t),
            "LeaseLeases": lambda: lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=t),
            "LeaseKeepAlive": lambda: lease.LeaseKeepAlive(
                iter([rpc_pb2.LeaseKeepAliveRequest(ID=1)]), timeout=t
            ),
            "Watch": lambda: watch.Watch(
                iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))]),
                timeout=t,
            ),
            "MemberList": lambda: cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=t),
            "Alarm": lambda: maint.Alarm(rpc_pb2.AlarmRequest(), timeout=t),
            "Hash": lambda: maint.Hash(rpc_pb2.HashRequest(), timeout=t),
            "HashKV": lambda: maint.HashKV(rpc_pb2.HashKVRequest(), timeout=t),
            "Defragment": lambda: maint.Defragment(rpc_pb2.DefragmentRequest(), timeout=t),
            "Election.Leader": lambda: election.Leader(
                v3election_pb2.LeaderRequest(name=b"e"), timeout=t
            ),
            "Lock.Lock": lambda: lock.Lock(v3lock_pb2.LockRequest(name=b"l"), timeout=t),
        }
        refused = {name: _code(call) for name, call in calls.items()}
        assert refused == dict.fromkeys(calls, LEARNER), refused
        # A peer's corruption check (petcd.grpc.peer_hash) still gets the learner's hash.
        got = maint.HashKV(rpc_pb2.HashKVRequest(), metadata=(PEER_HASHKV,), timeout=t)
        assert got.header.member_id == int(b_id, 16), got
        # etcd >= 3.5 lets a learner stream a snapshot (3.4 refused it).
        chunks = list(maint.Snapshot(rpc_pb2.SnapshotRequest(), timeout=30))
        assert chunks and chunks[-1].remaining_bytes == 0, len(chunks)

    # The real etcdctl: what a user sees (etcd 3.4's texts and exit codes).
    for args in (("put", "x", "y"), ("del", "foo"), ("compaction", "1")):
        out = etcdctl(b.endpoint, *args)
        got_ = (out.returncode, out.stdout, _user_lines(out.stderr))
        assert got_ == (1, "", NOT_SUPPORTED), (args, out)
    out = etcdctl(b.endpoint, "defrag")
    assert (out.returncode, out.stdout, _user_lines(out.stderr)) == (
        1,
        "",
        f"Failed to defragment etcd member[{b.endpoint}] "
        "(etcdserver: rpc not supported for learner)\n",
    ), out
    assert _ok(etcdctl(b.endpoint, "get", "foo", "--consistency=s")) == "foo\nbar\n"
    row = _ok(etcdctl(b.endpoint, "endpoint", "status")).strip().split(", ")
    assert row[0] == b.endpoint and row[1] == b_id and row[5] == "true", row  # IS LEARNER

    # Promoted, the same member serves everything, without a restart.
    _wait(lambda: etcdctl(a.endpoint, "member", "promote", b_id).returncode == 0, "the promotion")
    _wait(
        lambda: etcdctl(b.endpoint, "put", "x", "y").returncode == 0,
        "the promoted member to serve a put",
    )
    assert _ok(etcdctl(b.endpoint, "get", "x", "--print-value-only")) == "y\n"
    assert "isLearner" not in _ok(etcdctl(b.endpoint, "member", "list", "-w", "json"))
