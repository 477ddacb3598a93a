"""``petcd grpc-proxy start``, etcd's L7 gRPC proxy, with the real etcdctl (3.4) through it.

One petcd member; proxies on free loopback ports in front of it (the first one with a dead
endpoint listed first, so that every call must fail over). Through the proxy: put, get, txn,
watch, lease keep-alive and time-to-live, lock, elect, member list (answered by the proxy),
snapshot save, and auth with a user (the token is passed through). ``--namespace`` hides a
prefix; ``--resolver-prefix`` registers the proxy in the cluster with a lease, in etcd's
format; ``--metrics-addr`` serves /health and relays the member's /metrics;
``--endpoints-auto-sync-interval`` replaces the endpoints with the members' URLs; TLS on the
listener and to the cluster (a client certificate without a Common Name; one with a Common
Name is refused with etcd's text). A three-member cluster: writes and a watch through the
proxy carry on when a member dies.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.petcd_proc import PETCD_BIN, PetcdProcess, etcdctl
from tests.ports import free_port
from tests.robustness.cluster import Cluster
from tests.tlsfiles import make_tls_files

READY_TIMEOUT_S = 20.0
pytestmark = pytest.mark.timeout(120)


class Proxy:
    """One ``petcd grpc-proxy start`` process, its log in a file; stopped by pid."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        argv = [PETCD_BIN, "grpc-proxy", "start", f"--listen-addr={self.address}", *args]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.wait_log("started gRPC proxy")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def records(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_log(self, msg: str) -> dict[str, object]:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for rec in self.records():
                if rec.get("msg") == msg:
                    return rec
            assert self.proc.poll() is None, self.log_path.read_text()
            time.sleep(0.05)
        raise AssertionError(f"no {msg!r} line:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    m = PetcdProcess(tmp_path_factory.mktemp("proxy-member") / "data")
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def proxy(member: PetcdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    dead = f"127.0.0.1:{free_port()}"
    p = Proxy(
        tmp_path_factory.mktemp("proxy") / "proxy.log",
        f"--endpoints={dead},{member.endpoint}",
        f"--advertise-client-url=proxy.example:{free_port()}",
    )
    try:
        yield p
    finally:
        p.stop()


def ctl(endpoint: str, *args: str, stdin: str | None = None) -> str:
    if stdin is None:
        done = etcdctl(endpoint, *args)
    else:
        done = subprocess.run(
            ["/usr/bin/etcdctl", f"--endpoints={endpoint}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "ETCDCTL_API": "3"},
            check=False,
        )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kv_txn_and_leases_through_the_proxy(proxy: Proxy, member: PetcdProcess) -> None:
    assert ctl(proxy.address, "put", "k1", "v1") == "OK\n"
    assert ctl(member.endpoint, "get", "k1") == "k1\nv1\n"
    assert ctl(proxy.address, "get", "k1") == "k1\nv1\n"
    txn = 'value("k1") = "v1"\n\nput k2 v2\n\nput k2 other\n\n'
    assert ctl(proxy.address, "txn", stdin=txn) == "SUCCESS\n\nOK\n"
    assert ctl(proxy.address, "get", "k", "--prefix", "--print-value-only") == "v1\nv2\n"
    lease = ctl(proxy.address, "lease", "grant", "60").split()[1]
    ctl(proxy.address, "put", "leased", "x", f"--lease={lease}")
    assert "attached keys([leased])" in ctl(proxy.address, "lease", "timetolive", lease, "--keys")
    with subprocess.Popen(
        ["/usr/bin/etcdctl", f"--endpoints={proxy.address}", "lease", "keep-alive", lease],
        stdout=subprocess.PIPE,
        text=True,
    ) as keeper:
        assert keeper.stdout is not None
        line = keeper.stdout.readline()
        keeper.kill()
    assert line == f"lease {lease} keepalived with TTL(60)\n"
    # an upstream error comes back with the member's message
    done = etcdctl(proxy.address, "lease", "revoke", "1234abcd")
    assert done.returncode != 0
    assert "etcdserver: requested lease not found" in done.stderr


def _revision(endpoint: str) -> int:
    return int(json.loads(ctl(endpoint, "get", "nothing", "-w", "json"))["header"]["revision"])


def test_watch_through_the_proxy(proxy: Proxy) -> None:
    # from the next revision: the put below is seen whenever the watch is set up
    rev = _revision(proxy.address) + 1
    with subprocess.Popen(
        [
            "/usr/bin/etcdctl",
            f"--endpoints={proxy.address}",
            "watch",
            "w",
            "--prefix",
            f"--rev={rev}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as watcher:
        assert watcher.stdout is not None
        try:
            ctl(proxy.address, "put", "w1", "a")
            got = [watcher.stdout.readline() for _ in range(3)]
        finally:
            watcher.kill()
    assert got == ["PUT\n", "w1\n", "a\n"]


def test_lock_elect_member_list_snapshot(proxy: Proxy, tmp_path: Path) -> None:
    out = ctl(proxy.address, "lock", "mylock", "echo", "held")
    assert out == "held\n"
    with subprocess.Popen(
        ["/usr/bin/etcdctl", f"--endpoints={proxy.address}", "elect", "el", "p1"],
        stdout=subprocess.PIPE,
        text=True,
    ) as elect:
        assert elect.stdout is not None
        name = elect.stdout.readline()
        elect.kill()
    assert name.startswith("el/")
    # MemberList is the proxy's own answer: itself, at its advertise URL, named after the host
    advertise = next(a for a in proxy.proc.args if str(a).startswith("--advertise"))
    url = str(advertise).split("=", 1)[1]
    assert ctl(proxy.address, "member", "list") == (
        f"0, started, {socket.gethostname()}, , {url}, false\n"
    )
    path = tmp_path / "snap.db"
    assert "Snapshot saved at" in ctl(proxy.address, "snapshot", "save", str(path))
    assert path.stat().st_size > 0


def test_auth_token_is_passed_through(proxy: Proxy, member: PetcdProcess) -> None:
    ctl(proxy.address, "user", "add", "root:rootpw")
    ctl(proxy.address, "user", "add", "alice:alicepw")
    ctl(proxy.address, "role", "add", "r")
    ctl(proxy.address, "role", "grant-permission", "r", "readwrite", "alice/", "--prefix")
    ctl(proxy.address, "user", "grant-role", "alice", "r")
    ctl(proxy.address, "auth", "enable")
    try:
        assert ctl(proxy.address, "--user=alice:alicepw", "put", "alice/x", "1") == "OK\n"
        denied = etcdctl(proxy.address, "--user=alice:alicepw", "put", "bob", "1")
        assert "etcdserver: permission denied" in denied.stderr
        anonymous = etcdctl(proxy.address, "get", "alice/x")
        assert "etcdserver: user name is empty" in anonymous.stderr
    finally:
        ctl(proxy.address, "--user=root:rootpw", "auth", "disable")


def test_namespace(member: PetcdProcess, tmp_path: Path) -> None:
    p = Proxy(tmp_path / "ns.log", f"--endpoints={member.endpoint}", "--namespace=ns/")
    try:
        ctl(p.address, "put", "a", "1")
        ctl(p.address, "put", "b", "2", "--lease=0")
        assert ctl(member.endpoint, "get", "ns/a", "--print-value-only") == "1\n"
        assert ctl(p.address, "get", "", "--prefix", "--keys-only") == "a\n\nb\n\n"
        assert ctl(p.address, "get", "a", "--from-key", "--keys-only") == "a\n\nb\n\n"
        txn = 'value("a") = "1"\n\nput c 3\n\n\n'
        assert ctl(p.address, "txn", stdin=txn) == "SUCCESS\n\nOK\n"
        assert ctl(member.endpoint, "get", "ns/c", "--print-value-only") == "3\n"
        out = ctl(p.address, "del", "", "--prefix", "--prev-kv")
        assert out.splitlines()[1:] == ["a", "1", "b", "2", "c", "3"]
    finally:
        p.stop()


def test_resolver_registration_and_health(member: PetcdProcess, tmp_path: Path) -> None:
    advertise = f"127.0.0.1:{free_port()}"
    metrics = f"http://127.0.0.1:{free_port()}"
    p = Proxy(
        tmp_path / "reg.log",
        f"--endpoints={member.endpoint}",
        "--resolver-prefix=/reg",
        "--resolver-ttl=5",
        f"--advertise-client-url={advertise}",
        f"--metrics-addr={metrics}",
    )
    try:
        rec = p.wait_log("registered session with lease")
        assert rec["addr"] == advertise and rec["lease-ttl"] == 5
        out = ctl(member.endpoint, "get", f"/reg/{advertise}", "-w", "json")
        kv = json.loads(out)["kvs"][0]
        value = json.loads(base64.b64decode(kv["value"]))
        assert value == {
            "Op": 0,
            "Addr": advertise,
            "Metadata": json.dumps({"name": socket.gethostname()}, separators=(",", ":")),
        }
        assert kv["lease"] != 0
        deadline = time.monotonic() + 10
        while advertise not in ctl(p.address, "member", "list"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with urllib.request.urlopen(f"{metrics}/health", timeout=5) as r:
            assert json.loads(r.read()) == {"health": "true", "reason": ""}
        with urllib.request.urlopen(f"{metrics}/metrics", timeout=5) as r:
            assert b"etcd_server_has_leader 1" in r.read()  # the member's, relayed
    finally:
        p.stop()


def test_tls_listener_and_common_name_refusal(member: PetcdProcess, tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    p = Proxy(
        tmp_path / "tls.log",
        f"--endpoints={member.endpoint}",
        f"--cert-file={files['server']}",
        f"--key-file={files['server_key']}",
    )
    try:
        assert ctl(p.address, f"--cacert={files['ca']}", "put", "t", "1") == "OK\n"
        plain = etcdctl(p.address, "get", "t", "--dial-timeout=1s", "--command-timeout=2s")
        assert plain.returncode != 0
    finally:
        p.stop()
    done = subprocess.run(
        [
            PETCD_BIN,
            "grpc-proxy",
            "start",
            f"--listen-addr=127.0.0.1:{free_port()}",
            f"--cert={files['client']}",
            f"--key={files['client_key']}",
            f"--cacert={files['ca']}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert f"cert has non empty Common Name (root): {files['client']}\n" in done.stderr


def test_endpoints_auto_sync(member: PetcdProcess, tmp_path: Path) -> None:
    # the member advertises http://127.0.0.1:<port>; the proxy is given localhost:<port>
    given = f"localhost:{member.client_port}"
    p = Proxy(tmp_path / "sync.log", f"--endpoints={given}", "--endpoints-auto-sync-interval=200ms")
    try:
        rec = p.wait_log("set etcd endpoints by autoSync")
        assert rec["endpoints"] == [f"http://127.0.0.1:{member.client_port}"]
        assert ctl(p.address, "put", "synced", "1") == "OK\n"
    finally:
        p.stop()


def _pki(directory: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate whose subject has no
    Common Name (etcd's proxy refuses any other), as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from tests.tlsfiles import _cert

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("proxy test CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        "127.0.0.1", server_key, (ca.subject, ca_key), usage=(ExtendedKeyUsageOID.SERVER_AUTH,)
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    client = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "proxy")]))
        .issuer_name(ca.subject)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out: dict[str, str] = {}
    for name, data in (
        ("ca", ca.public_bytes(serialization.Encoding.PEM)),
        ("server", server.public_bytes(serialization.Encoding.PEM)),
        ("client", client.public_bytes(serialization.Encoding.PEM)),
    ):
        (directory / f"{name}.pem").write_bytes(data)
        out[name] = str(directory / f"{name}.pem")
    for name, key in (("server_key", server_key), ("client_key", client_key)):
        (directory / f"{name}.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        out[name] = str(directory / f"{name}.pem")
    return out


def test_tls_to_the_cluster_with_a_client_certificate(tmp_path: Path) -> None:
    import grpc

    pki = _pki(tmp_path / "pki")
    creds = grpc.ssl_channel_credentials(
        Path(pki["ca"]).read_bytes(),
        Path(pki["client_key"]).read_bytes(),
        Path(pki["client"]).read_bytes(),
    )
    m = PetcdProcess(
        tmp_path / "tls-member" / "data",
        name="tlsm",
        extra_args=[
            f"--cert-file={pki['server']}",
            f"--key-file={pki['server_key']}",
            f"--trusted-ca-file={pki['ca']}",
        ],
        credentials=creds,
    )
    m.start()
    try:
        p = Proxy(
            tmp_path / "tls-up.log",
            f"--endpoints={m.endpoint}",
            f"--cacert={pki['ca']}",
            f"--cert={pki['client']}",
            f"--key={pki['client_key']}",
        )
        try:
            assert ctl(p.address, "put", "secure", "1") == "OK\n"
            assert ctl(p.address, "get", "secure", "--print-value-only") == "1\n"
        finally:
            p.stop()
    finally:
        m.stop()


def test_failover_when_a_member_dies(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", size=3)
    try:
        cluster.start()
        # Behind the proxy: the two followers, so that killing one changes no leader (a
        # leader's death would fail a write with "leader changed", proxy or not).
        leader = cluster.leader_index()
        assert leader is not None
        first, second = (i for i in range(3) if i != leader)
        m0, m1 = cluster.members[first].endpoint, cluster.members[second].endpoint
        p = Proxy(tmp_path / "failover.log", f"--endpoints={m0},{m1}")
        try:
            rev = _revision(p.address) + 1
            watch = subprocess.Popen(
                [
                    "/usr/bin/etcdctl",
                    f"--endpoints={p.address}",
                    "watch",
                    "f",
                    "--prefix",
                    f"--rev={rev}",
                ],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "ETCDCTL_API": "3"},
            )
            try:
                assert ctl(p.address, "put", "f0", "x") == "OK\n"
                assert watch.stdout is not None
                assert [watch.stdout.readline() for _ in range(3)] == ["PUT\n", "f0\n", "x\n"]
                cluster.kill(first)
                for i in range(1, 5):  # round robin: the dead member's turn comes every other call
                    assert ctl(p.address, "put", f"f{i}", "x") == "OK\n"
                got = ctl(p.address, "get", "f", "--prefix", "--keys-only").split()
                assert got == ["f0", "f1", "f2", "f3", "f4"]
                # the watch, whichever member it was on, sees every later event (etcdctl
                # resumes it through the proxy when its member died)
                lines = [watch.stdout.readline() for _ in range(12)]
                assert lines[1::3] == ["f1\n", "f2\n", "f3\n", "f4\n"]
            finally:
                watch.kill()
                watch.wait(timeout=10)
        finally:
            p.stop()
    finally:
        cluster.stop()
