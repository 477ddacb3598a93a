"""The generated stubs talk to a real etcd, and real etcdctl sees what they wrote.

This is the end-to-end proof that the .proto files are wire-compatible: every
service is exercised against etcd itself, and values cross between our stubs
and etcdctl in both directions.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.v3electionpb import v3election_pb2, v3election_pb2_grpc
from petcd.api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess

pytestmark = pytest.mark.compat
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed (make etcd)")
    server = ServerProcess("etcd", Path(tmp_path_factory.mktemp("interop")) / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(etcd: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(etcd.endpoint) as ch:
        yield ch


def etcdctl(etcd: ServerProcess, *args: str) -> str:
    proc = subprocess.run(
        [ETCDCTL_BIN, "--endpoints", etcd.endpoint, *args],
        capture_output=True,
        check=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")},
    )
    return proc.stdout.decode()


def test_kv_both_directions(etcd: ServerProcess, channel: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
    etcdctl(etcd, "put", "from-etcdctl", "v1")
    got = kv.Range(rpc_pb2.RangeRequest(key=b"from-etcdctl"), timeout=TIMEOUT_S)
    assert [(x.key, x.value, x.version) for x in got.kvs] == [(b"from-etcdctl", b"v1", 1)]
    assert got.header.revision == got.kvs[0].mod_revision

    put = kv.Put(rpc_pb2.PutRequest(key=b"from-stub", value=b"\x00bin"), timeout=TIMEOUT_S)
    out = json.loads(etcdctl(etcd, "get", "from-stub", "-w", "json"))
    assert out["kvs"][0]["value"] == "AGJpbg=="
    assert out["kvs"][0]["mod_revision"] == put.header.revision
    assert out["header"]["cluster_id"] == put.header.cluster_id

    txn = kv.Txn(
        rpc_pb2.TxnRequest(
            compare=[
                rpc_pb2.Compare(
                    key=b"from-stub",
                    target=rpc_pb2.Compare.VALUE,
                    result=rpc_pb2.Compare.EQUAL,
                    value=b"\x00bin",
                )
            ],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"t", value=b"ok"))],
        ),
        timeout=TIMEOUT_S,
    )
    assert txn.succeeded and txn.responses[0].WhichOneof("response") == "response_put"
    assert etcdctl(etcd, "get", "t", "--print-value-only") == "ok\n"

    deleted = kv.DeleteRange(
        rpc_pb2.DeleteRangeRequest(key=b"from", range_end=b"froz", prev_kv=True), timeout=TIMEOUT_S
    )
    assert deleted.deleted == 2 and len(deleted.prev_kvs) == 2
    with pytest.raises(grpc.RpcError) as info:
        kv.Range(rpc_pb2.RangeRequest(key=b"t", revision=10**6), timeout=TIMEOUT_S)
    assert info.value.details() == "etcdserver: mvcc: required revision is a future revision"


def test_watch_stream_sees_etcdctl_writes(etcd: ServerProcess, channel: grpc.Channel) -> None:
    watch = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
    create = rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(key=b"w/", range_end=b"w0", prev_kv=True)
    )
    stream = watch.Watch(iter([create]), timeout=TIMEOUT_S)
    created = next(stream)
    assert created.created
    etcdctl(etcd, "put", "w/a", "1")
    event = next(stream).events[0]
    assert (event.type, event.kv.key, event.kv.value) == (0, b"w/a", b"1")
    stream.cancel()


def test_lease_maintenance_cluster_auth(etcd: ServerProcess, channel: grpc.Channel) -> None:
    lease = rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]
    granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=TIMEOUT_S)
    assert f"{granted.ID:016x}" in etcdctl(etcd, "lease", "list")
    ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), timeout=TIMEOUT_S)
    assert ttl.grantedTTL == 60
    maintenance = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
    status = maintenance.Status(rpc_pb2.StatusRequest(), timeout=TIMEOUT_S)
    assert status.leader == status.header.member_id and status.version.startswith("3.")
    hashkv = maintenance.HashKV(rpc_pb2.HashKVRequest(), timeout=TIMEOUT_S)
    assert hashkv.hash != 0
    cluster = rpc_pb2_grpc.ClusterStub(channel)  # type: ignore[no-untyped-call]
    members = cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=TIMEOUT_S)
    assert members.members[0].clientURLs == [etcd.client_url]
    auth = rpc_pb2_grpc.AuthStub(channel)  # type: ignore[no-untyped-call]
    assert auth.RoleList(rpc_pb2.AuthRoleListRequest(), timeout=TIMEOUT_S).roles == []


def test_lock_and_election_services(etcd: ServerProcess, channel: grpc.Channel) -> None:
    lease = rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]
    lease_id = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=TIMEOUT_S).ID
    lock = v3lock_pb2_grpc.LockStub(channel)  # type: ignore[no-untyped-call]
    held = lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=lease_id), timeout=TIMEOUT_S)
    assert held.key.startswith(b"L/")
    lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key), timeout=TIMEOUT_S)
    election = v3election_pb2_grpc.ElectionStub(channel)  # type: ignore[no-untyped-call]
    won = election.Campaign(
        v3election_pb2.CampaignRequest(name=b"E", lease=lease_id, value=b"me"), timeout=TIMEOUT_S
    )
    leader = election.Leader(v3election_pb2.LeaderRequest(name=b"E"), timeout=TIMEOUT_S)
    assert (leader.kv.key, leader.kv.value) == (won.leader.key, b"me")
    election.Resign(v3election_pb2.ResignRequest(leader=won.leader), timeout=TIMEOUT_S)
