"""The Lease service of a real petcd process: grant, attach, keep-alive, expiry, revoke."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.integration.petcd_proc import PetcdProcess, etcdctl, kv_stub


def lease_stub(channel: grpc.Channel) -> Any:
    return rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path_factory.mktemp("lease") / "data")
    p.start()
    yield p
    p.stop()


def test_grant_attach_ttl_and_expiry(server: PetcdProcess) -> None:
    with server.channel() as ch:
        leases, kv = lease_stub(ch), kv_stub(ch)
        g = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2))
        assert g.ID != 0 and g.TTL == 2
        kv.Put(rpc_pb2.PutRequest(key=b"l/k", value=b"v", lease=g.ID))
        ttl = leases.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=g.ID, keys=True))
        assert ttl.grantedTTL == 2 and 0 <= ttl.TTL <= 4 and list(ttl.keys) == [b"l/k"]
        listed = leases.LeaseLeases(rpc_pb2.LeaseLeasesRequest())
        assert g.ID in [x.ID for x in listed.leases]
        # The leader revokes it once it expires (2 s TTL + up to 1 s of election extension).
        deadline = time.monotonic() + 15
        while kv.Range(rpc_pb2.RangeRequest(key=b"l/k")).kvs:
            assert time.monotonic() < deadline, "lease never expired"
            time.sleep(0.2)
        gone = leases.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=g.ID))
        assert gone.TTL == -1


def test_keep_alive_revoke_and_errors(server: PetcdProcess) -> None:
    with server.channel() as ch:
        leases, kv = lease_stub(ch), kv_stub(ch)
        g = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60, ID=4242))
        assert g.ID == 4242
        with pytest.raises(grpc.RpcError) as e:
            leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60, ID=4242))
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: lease already exists",
        )
        responses = list(
            leases.LeaseKeepAlive(
                iter([rpc_pb2.LeaseKeepAliveRequest(ID=4242), rpc_pb2.LeaseKeepAliveRequest(ID=7)])
            )
        )
        assert [(r.ID, r.TTL) for r in responses] == [(4242, 60), (7, 0)]
        kv.Put(rpc_pb2.PutRequest(key=b"r/a", value=b"1", lease=4242))
        kv.Put(rpc_pb2.PutRequest(key=b"r/b", value=b"2", lease=4242))
        before = kv.Range(rpc_pb2.RangeRequest(key=b"r/a")).header.revision
        revoked = leases.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=4242))
        assert revoked.header.revision == before + 1  # both keys deleted in one revision
        assert not kv.Range(rpc_pb2.RangeRequest(key=b"r/", range_end=b"r0")).kvs
        with pytest.raises(grpc.RpcError) as e:
            leases.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=4242))
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.NOT_FOUND,
            "etcdserver: requested lease not found",
        )


def test_etcdctl_lease_commands(server: PetcdProcess) -> None:
    out = etcdctl(server.endpoint, "lease", "grant", "100")
    assert out.returncode == 0 and out.stdout.endswith(" granted with TTL(100s)\n"), out.stderr
    lease_id = out.stdout.split()[1]
    assert etcdctl(server.endpoint, "put", "--lease", lease_id, "ek", "v").stdout == "OK\n"
    out = etcdctl(server.endpoint, "lease", "timetolive", lease_id, "--keys")
    assert "attached keys([ek])" in out.stdout
    out = etcdctl(server.endpoint, "lease", "revoke", lease_id)
    assert out.stdout == f"lease {lease_id} revoked\n"
    assert etcdctl(server.endpoint, "get", "ek").stdout == ""


def test_leases_survive_a_restart(tmp_path: Path) -> None:
    p = PetcdProcess(tmp_path / "data")
    p.start()
    try:
        with p.channel() as ch:
            lease_stub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=300, ID=99))
            kv_stub(ch).Put(rpc_pb2.PutRequest(key=b"persist", value=b"v", lease=99))
        p.kill()
        p.start()
        with p.channel() as ch:
            ttl = lease_stub(ch).LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=99, keys=True))
            assert ttl.grantedTTL == 300 and list(ttl.keys) == [b"persist"]
    finally:
        p.stop()
