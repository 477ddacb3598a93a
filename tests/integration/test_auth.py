"""Authentication and role-based access control, through real clients over the network.

Users, roles and permissions made with the real etcdctl (3.4) and checked with it and with
raw gRPC calls (exact status codes and messages); simple tokens used on other members than the
one that issued them; JWTs that outlive a restart; the common name of a client certificate as
the user; auth state kept across kill -9.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.grpc.interceptors import PEER_HASHKV
from tests.integration.petcd_proc import (
    ETCDCTL_BIN,
    REPO,
    PetcdProcess,
    etcdctl,
    kv_stub,
    run_petcd,
)
from tests.tlsfiles import make_tls_files

PETCDCTL_BIN = str(REPO / ".venv" / "bin" / "petcdctl")

pytestmark = pytest.mark.skipif(not os.path.exists(ETCDCTL_BIN), reason="etcdctl not installed")


def ok(endpoint: str, *args: str) -> str:
    out = etcdctl(endpoint, *args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def refused(endpoint: str, *args: str) -> str:
    out = etcdctl(endpoint, *args)
    assert out.returncode != 0, (args, out.stdout)
    return out.stderr


def authenticate(channel: grpc.Channel, name: str, password: str) -> tuple[tuple[str, str], ...]:
    stub = rpc_pb2_grpc.AuthStub(channel)  # type: ignore[no-untyped-call]
    token = stub.Authenticate(rpc_pb2.AuthenticateRequest(name=name, password=password)).token
    return (("token", token),)


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("the call succeeded")


def set_up_users(endpoint: str) -> None:
    ok(endpoint, "put", "secret", "s3")
    ok(endpoint, "put", "app/config", "c1")
    ok(endpoint, "user", "add", "root:rootpw")
    ok(endpoint, "user", "add", "alice:alicepw")
    ok(endpoint, "role", "add", "reader")
    ok(endpoint, "role", "grant-permission", "reader", "read", "secret")
    ok(endpoint, "role", "grant-permission", "reader", "readwrite", "app/", "--prefix")
    ok(endpoint, "user", "grant-role", "alice", "reader")
    ok(endpoint, "auth", "enable")


@pytest.fixture
def member(tmp_path: Path) -> Iterator[PetcdProcess]:
    m = PetcdProcess(tmp_path / "data", extra_args=["--bcrypt-cost", "4"])
    m.start()
    try:
        yield m
    finally:
        m.stop()


def test_permissions_through_etcdctl_and_grpc(member: PetcdProcess) -> None:
    ep = member.endpoint
    set_up_users(ep)
    assert "etcdserver: user name is empty" in refused(ep, "get", "secret")
    assert "authentication failed" in refused(ep, "get", "secret", "--user", "alice:nope")
    assert ok(ep, "get", "secret", "--user", "alice:alicepw") == "secret\ns3\n"
    assert "permission denied" in refused(ep, "put", "secret", "x", "--user", "alice:alicepw")
    ok(ep, "put", "app/x", "1", "--user", "alice:alicepw")
    assert ok(ep, "get", "app/", "--prefix", "--keys-only", "--user", "alice:alicepw").split() == [
        "app/config",
        "app/x",
    ]
    assert "permission denied" in refused(ep, "get", "", "--prefix", "--user", "alice:alicepw")
    assert "permission denied" in refused(ep, "del", "app/", "--from-key", "--user=alice:alicepw")
    ok(ep, "put", "other", "o", "--user", "root:rootpw")
    # What alice may see of auth itself: herself and her role, nothing else.
    assert "Roles: reader" in ok(ep, "user", "get", "alice", "--user", "alice:alicepw")
    assert "permission denied" in refused(ep, "user", "get", "root", "--user", "alice:alicepw")
    assert "KV Read" in ok(ep, "role", "get", "reader", "--user", "alice:alicepw")
    assert "permission denied" in refused(ep, "user", "list", "--user", "alice:alicepw")
    assert "permission denied" in refused(ep, "defrag", "--user", "alice:alicepw")
    assert ok(ep, "user", "list", "--user", "root:rootpw").split() == ["alice", "root"]
    assert "invalid auth management" in refused(ep, "user", "delete", "root", "--user=root:rootpw")

    with member.channel() as ch:
        alice = authenticate(ch, "alice", "alicepw")
        root = authenticate(ch, "root", "rootpw")
        kv = kv_stub(ch)
        assert kv.Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=alice).kvs[0].value == b"s3"
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=b"other", target=rpc_pb2.Compare.VERSION, version=1)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"app/y"))],
        )
        assert status_of(lambda: kv.Txn(txn, metadata=alice)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "etcdserver: permission denied",
        )
        assert kv.Txn(txn, metadata=root).succeeded
        # A watch on a range alice may not read is cancelled at creation, the reason the
        # text of a Go gRPC status error as etcd 3.5.17's watch server writes it.
        watch = rpc_pb2_grpc.WatchStub(ch)  # type: ignore[no-untyped-call]
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"other"))
        stream = watch.Watch(iter([create]), metadata=alice)
        first = next(stream)
        stream.cancel()
        assert (first.created, first.canceled, first.cancel_reason) == (
            True,
            True,
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
        )
        # Revoking a lease deletes its keys: a write on each of them is needed.
        lease = rpc_pb2_grpc.LeaseStub(ch)  # type: ignore[no-untyped-call]
        lease_id = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600), metadata=root).ID
        kv.Put(rpc_pb2.PutRequest(key=b"secret", value=b"s4", lease=lease_id), metadata=root)
        revoke = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        assert status_of(lambda: lease.LeaseRevoke(revoke, metadata=alice))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        # A new password ends the tokens of the user.
        auth = rpc_pb2_grpc.AuthStub(ch)  # type: ignore[no-untyped-call]
        auth.UserChangePassword(
            rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="new"), metadata=root
        )
        assert status_of(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=alice)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "etcdserver: invalid auth token",
        )
        assert status_of(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"secret"))) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: user name is empty",
        )
        status = auth.AuthStatus(rpc_pb2.AuthStatusRequest(), metadata=root)
        assert status.enabled and status.authRevision > 0

    # Kept across kill -9: still on, same users, and simple tokens do not survive.
    member.kill()
    member.start()
    assert "user name is empty" in refused(ep, "get", "secret")
    assert ok(ep, "get", "secret", "--print-value-only", "--user", "alice:new") == "s4\n"
    ok(ep, "auth", "disable", "--user", "root:rootpw")
    assert ok(ep, "get", "other", "--print-value-only") == "o\n"


def _cluster(base: Path, extra: list[str]) -> list[PetcdProcess]:
    members = [PetcdProcess(base / f"m{i}", name=f"m{i}") for i in range(3)]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        m.extra_args = ["--initial-cluster", initial, "--initial-cluster-token", "auth-3", *extra]
    for m in members:
        m.start(wait=False)
    for m in members:
        m.wait_ready()
    return members


def test_simple_tokens_and_revocations_reach_every_member(tmp_path: Path) -> None:
    members = _cluster(tmp_path, ["--bcrypt-cost", "4"])
    try:
        set_up_users(members[0].endpoint)
        channels = [m.channel() for m in members]
        alice = authenticate(channels[0], "alice", "alicepw")
        root = authenticate(channels[1], "root", "rootpw")
        for ch in channels:  # a token issued by one member works on all of them
            got = kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=alice)
            assert got.kvs[0].value == b"s3"
        auth = rpc_pb2_grpc.AuthStub(channels[1])  # type: ignore[no-untyped-call]
        auth.RoleRevokePermission(
            rpc_pb2.AuthRoleRevokePermissionRequest(role="reader", key=b"secret"), metadata=root
        )
        # Linearizable reads see the revocation on every member at once.
        for ch in channels:
            code, message = status_of(
                lambda ch=ch: kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=alice)
            )
            assert (code, message) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "etcdserver: permission denied",
            )
        for ch in channels:
            ch.close()
    finally:
        for m in members:
            m.stop()


def test_jwt_tokens_outlive_a_restart(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = tmp_path / "jwt.key", tmp_path / "jwt.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    option = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"
    m = PetcdProcess(tmp_path / "data", extra_args=["--auth-token", option, "--bcrypt-cost=4"])
    m.start()
    try:
        set_up_users(m.endpoint)
        with m.channel() as ch:
            alice = authenticate(ch, "alice", "alicepw")
            assert alice[0][1].count(".") == 2  # header.claims.signature
        m.kill()
        m.start()
        with m.channel() as ch:
            got = kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=alice)
            assert got.kvs[0].value == b"s3"
            tampered = (("token", alice[0][1][:-4] + "AAAA"),)
            assert status_of(
                lambda: kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"secret"), metadata=tampered)
            ) == (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
    finally:
        m.stop()


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_client_certificate_common_name_is_the_user(tmp_path: Path, transport: str) -> None:
    files = make_tls_files(tmp_path / "certs")  # the client certificate's CN is "root"
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(files["ca"]).read_bytes(),
        private_key=Path(files["client_key"]).read_bytes(),
        certificate_chain=Path(files["client"]).read_bytes(),
    )
    flags = [
        "--cert-file", files["server"], "--key-file", files["server_key"],
        "--trusted-ca-file", files["ca"], "--client-cert-auth", "--bcrypt-cost", "4",
        "--client-transport", transport,
    ]  # fmt: skip
    m = PetcdProcess(tmp_path / "data", extra_args=flags, credentials=creds)
    m.start()
    tls = ["--cacert", files["ca"], "--cert", files["client"], "--key", files["client_key"]]
    try:
        ep = m.endpoint
        ok(ep, *tls, "user", "add", "root", "--no-password")
        ok(ep, *tls, "user", "grant-role", "root", "root")
        ok(ep, *tls, "user", "add", "bob:bobpw")
        ok(ep, *tls, "auth", "enable")
        # No token: the certificate's common name is the user, here root.
        ok(ep, *tls, "put", "k", "v")
        assert ok(ep, *tls, "user", "list").split() == ["bob", "root"]
        # A token wins over the certificate: bob may not write.
        assert "permission denied" in refused(ep, *tls, "put", "k", "w", "--user", "bob:bobpw")
        # A user without a password cannot log in with one.
        assert "authentication failed" in refused(ep, *tls, "get", "k", "--user", "root:x")
    finally:
        m.stop()


def test_bad_auth_flags_are_refused(tmp_path: Path) -> None:
    out = run_petcd("--data-dir", str(tmp_path / "d"), "--auth-token", "jwt,sign-method=RS256")
    assert out.returncode != 0
    assert "missing key data" in out.stderr
    out = run_petcd("--data-dir", str(tmp_path / "d"), "--bcrypt-cost", "3")
    assert out.returncode != 0 and "bcrypt-cost" in out.stderr


def test_petcdctl_against_auth(member: PetcdProcess) -> None:
    set_up_users(member.endpoint)
    out = subprocess.run(
        [PETCDCTL_BIN, f"--endpoints={member.endpoint}", "--user", "alice:alicepw", "get",
         "secret", "--print-value-only"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert (out.returncode, out.stdout) == (0, "s3\n"), out.stderr


def _post(endpoint: str, path: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    request = urllib.request.Request(
        f"http://{endpoint}{path}", data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_json_gateway_and_metrics(member: PetcdProcess) -> None:
    set_up_users(member.endpoint)
    ep = member.endpoint
    key = base64.b64encode(b"secret").decode()
    status, body = _post(ep, "/v3/kv/range", {"key": key})
    assert (status, body["message"]) == (400, "etcdserver: user name is empty")
    status, body = _post(ep, "/v3/auth/authenticate", {"name": "alice", "password": "alicepw"})
    assert status == 200
    token = body["token"]
    status, body = _post(ep, "/v3/kv/range", {"key": key}, token)
    assert status == 200 and base64.b64decode(body["kvs"][0]["value"]) == b"s3"
    status, body = _post(ep, "/v3/kv/put", {"key": key, "value": key}, token)
    assert (status, body["message"]) == (403, "etcdserver: permission denied")
    status, body = _post(ep, "/v3/auth/user/list", {}, token)
    assert (status, body["message"]) == (403, "etcdserver: permission denied")
    status, root = _post(ep, "/v3/auth/authenticate", {"name": "root", "password": "rootpw"})
    status, body = _post(ep, "/v3/auth/user/list", {}, root["token"])
    assert (status, body["users"]) == (200, ["alice", "root"])
    with urllib.request.urlopen(f"http://{ep}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    revision = [ln for ln in metrics.splitlines() if ln.startswith("etcd_debugging_auth_revision")]
    assert revision and float(revision[0].split()[-1]) > 0


def test_checked_writes_still_meet_the_nospace_alarm(member: PetcdProcess) -> None:
    set_up_users(member.endpoint)
    with member.channel() as ch:
        root = authenticate(ch, "root", "rootpw")
        status = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest())  # type: ignore[no-untyped-call]
        rpc_pb2_grpc.MaintenanceStub(ch).Alarm(  # type: ignore[no-untyped-call]
            rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE,
                memberID=status.header.member_id,
                alarm=rpc_pb2.NOSPACE,
            ),
            metadata=root,
        )
        put = rpc_pb2.PutRequest(key=b"app/z", value=b"v")
        assert status_of(lambda: kv_stub(ch).Put(put, metadata=root)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
        )


def test_peers_hashkv_needs_no_credentials(member: PetcdProcess) -> None:
    """The corruption checks ask the peers' HashKV without a token (etcd asks over its peer
    listener); a client's HashKV still needs root."""
    set_up_users(member.endpoint)
    with member.channel() as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
        assert status_of(lambda: stub.HashKV(rpc_pb2.HashKVRequest())) == (
            grpc.StatusCode.UNKNOWN,  # etcd's authMaintenanceServer: the auth store's error
            "auth: user name is empty",
        )
        peer = stub.HashKV(rpc_pb2.HashKVRequest(), metadata=(PEER_HASHKV,))
        root = stub.HashKV(rpc_pb2.HashKVRequest(), metadata=authenticate(ch, "root", "rootpw"))
        assert peer.hash == root.hash != 0
