"""unix:// and unixs:// URLs: peers and clients on Unix socket files, as etcd.

etcd takes what follows ``unix://`` as the socket file's path: ``unix://localhost:2380`` is the
file ``localhost:2380`` in the member's working directory. These tests run every member in a
temporary directory of its own and check, with real processes: a three-member cluster whose
peers talk over Unix sockets replicates, grows by ``member add`` (the new member joins over
the sockets), and a member killed with SIGKILL comes back although its socket file was left
behind (etcd removes whatever has the socket's name before it listens; SIGTERM removes the
socket file); the real ``etcdctl`` 3.4, ``petcdctl``, ``petcd.client`` and an HTTP client on a
``unix://`` client URL, on both client transports; ``unixs://`` client and peer URLs with TLS,
verified against the URL's host name.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.client import Client
from petcd.client.client import TLSConfig
from petcd.peer.codec import KIND_STREAM, HandshakeStatus
from petcd.server import join
from tests.integration.petcd_proc import ETCDCTL_BIN, REPO, PetcdProcess
from tests.ports import free_port
from tests.tlsfiles import make_tls_files

_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("ETCD_")},
    "PYTHONPATH": str(REPO / "src"),
}


def _is_socket(path: Path) -> bool:
    return path.exists() and stat.S_ISSOCK(path.stat().st_mode)


def _etcdctl(cwd: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real etcdctl 3.4, in ``cwd`` (relative socket paths are resolved there)."""
    return subprocess.run(
        [ETCDCTL_BIN, f"--endpoints={endpoint}", "--dial-timeout=3s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**_ENV, "ETCDCTL_API": "3"},
        cwd=cwd,
        check=False,
    )


def _petcdctl(cwd: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "petcd.ctl.main", f"--endpoints={endpoint}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=_ENV,
        cwd=cwd,
        check=False,
    )


def _member(
    cwd: Path,
    name: str,
    peer_url: str,
    initial: str,
    *,
    state: str = "new",
    extra: tuple[str, ...] = (),
    client_socket: bool = False,
) -> PetcdProcess:
    """A member in ``cwd`` on ``peer_url``, with a TCP client URL (the readiness probe's);
    ``client_socket``: also on the client URL ``unix://<name>.sock``, the only one advertised."""
    client_port = free_port()
    client = advertised = f"http://127.0.0.1:{client_port}"
    if client_socket:
        advertised = f"unix://{name}.sock"
        client = f"{advertised},{client}"
    data = cwd / f"{name}.etcd"
    return PetcdProcess(
        data,
        name=name,
        client_port=client_port,
        cwd=cwd,
        env=_ENV,
        args=[
            "--name", name, "--data-dir", str(data),
            "--listen-client-urls", client, "--advertise-client-urls", advertised,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", "unix-peers",
            *extra,
        ],
    )  # fmt: skip


@contextlib.contextmanager
def _started(members: list[PetcdProcess]) -> Iterator[list[PetcdProcess]]:
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        yield members
    finally:
        for m in members:
            m.stop()


def test_three_members_over_unix_peer_sockets(tmp_path: Path) -> None:
    # As etcd's e2e clusters with BasePeerScheme "unix": unix://localhost:<port> peer URLs.
    ports = {n: free_port() for n in ("a", "b", "c")}
    urls = {n: f"unix://localhost:{p}" for n, p in ports.items()}
    initial = ",".join(f"{n}={u}" for n, u in urls.items())
    files = {n: tmp_path / f"localhost:{p}" for n, p in ports.items()}
    files["a"].write_text("left behind\n")  # not even a socket: etcd removes it all the same
    members = [_member(tmp_path, n, u, initial, client_socket=True) for n, u in urls.items()]
    with _started(members):
        a, b, c = members
        assert all(_is_socket(f) for f in files.values())
        assert _etcdctl(tmp_path, a.endpoint, "put", "k", "v1").stdout == "OK\n"
        for m in members:
            got = _etcdctl(tmp_path, m.endpoint, "get", "k", "--print-value-only")
            assert got.stdout == "v1\n", got.stderr
        out = _etcdctl(tmp_path, b.endpoint, "member", "list")
        assert sorted(line.split(", ")[3] for line in out.stdout.splitlines()) == sorted(
            urls.values()
        ), out.stderr
        # A follower forwards lease keep-alives to the leader's (unix) client URL.
        for m in members:
            out = _etcdctl(tmp_path, m.endpoint, "lease", "grant", "60")
            lease_id = out.stdout.split()[1]
            out = _etcdctl(tmp_path, m.endpoint, "lease", "keep-alive", "--once", lease_id)
            assert out.stdout == f"lease {lease_id} keepalived with TTL(60)\n", out.stderr

        # SIGKILL leaves the socket file: the restarted member removes it and listens again.
        c.kill()
        assert _is_socket(files["c"])
        # c may have led: the put is refused ("no leader") until a and b elect a new leader.
        deadline = time.monotonic() + 20
        while (put := _etcdctl(tmp_path, a.endpoint, "put", "k", "v3")).stdout != "OK\n":
            assert time.monotonic() < deadline, put.stderr
            time.sleep(0.2)
        c.start()
        got = _etcdctl(tmp_path, c.endpoint, "get", "k", "--print-value-only")
        assert got.stdout == "v3\n", got.stderr
        assert not any("address already in use" in r for r in c.log_tail().splitlines())

        # A member added at run time on a unix peer URL joins through the others' sockets.
        d_url = f"unix://localhost:{free_port()}"
        out = _etcdctl(tmp_path, a.endpoint, "member", "add", "d", f"--peer-urls={d_url}")
        assert out.returncode == 0, out.stderr
        d = _member(tmp_path, "d", d_url, f"{initial},d={d_url}", state="existing")
        members.append(d)
        d.start()
        assert _etcdctl(tmp_path, b.endpoint, "put", "k", "v2").stdout == "OK\n"
        got = _etcdctl(tmp_path, d.endpoint, "get", "k", "--print-value-only")
        assert got.stdout == "v2\n", got.stderr

        # SIGTERM: the member removes its socket file, as etcd's listener does when it closes.
        d_file = tmp_path / d_url.removeprefix("unix://")
        assert _is_socket(d_file)
        d.terminate()
        assert not d_file.exists()


def _http_get(socket_path: Path, target: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("localhost", timeout=10)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(socket_path))
    conn.sock = s
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_unix_client_url(tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port, http_port = free_port(), free_port()
    grpc_file, http_file = tmp_path / f"localhost:{port}", tmp_path / "http.sock"
    grpc_file.write_text("stale\n")
    http_file.write_text("stale\n")
    endpoint = f"unix://localhost:{port}"
    peer = f"http://127.0.0.1:{free_port()}"
    tcp = f"http://127.0.0.1:{http_port}"
    member = PetcdProcess(
        tmp_path / "m.etcd",
        name="m",
        client_port=http_port,
        cwd=tmp_path,
        env=_ENV,
        args=[
            "--name", "m", "--data-dir", str(tmp_path / "m.etcd"),
            "--listen-client-urls", f"{endpoint},{tcp}", "--advertise-client-urls", endpoint,
            "--listen-client-http-urls", "unix://http.sock",
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"m={peer}", f"--client-transport={transport}",
        ],
    )  # fmt: skip
    with _started([member]):
        assert _is_socket(grpc_file) and _is_socket(http_file)
        # The real etcdctl 3.4 dials the file localhost:<port> in its working directory.
        assert _etcdctl(tmp_path, endpoint, "put", "k", "v").stdout == "OK\n"
        got = _etcdctl(tmp_path, endpoint, "get", "k")
        assert got.stdout == "k\nv\n", got.stderr
        out = _etcdctl(tmp_path, endpoint, "member", "list")
        assert out.stdout.strip().endswith(f"m, {peer}, {endpoint}, false"), out.stderr
        # petcdctl, and the library (from the same directory), alike.
        got = _petcdctl(tmp_path, endpoint, "get", "k", "--print-value-only")
        assert got.stdout == "v\n", got.stderr
        monkeypatch.chdir(tmp_path)
        with Client([endpoint]) as client:
            assert client.get(b"k").kvs[0].value == b"v"
        with Client([f"unix://{grpc_file}"]) as client:  # unix:///abs/path
            assert client.put(b"k2", b"w").header.revision == 3
        # HTTP on the --listen-client-http-urls socket, and (native) on the gRPC one.
        status, body = _http_get(http_file, "/health")
        assert status == 200 and json.loads(body)["health"] == "true"
        if transport == "native":
            status, body = _http_get(grpc_file, "/version")
            assert status == 200 and json.loads(body)["etcdserver"] == "3.5.17"
        assert member.terminate() == -15
    assert not grpc_file.exists() and not http_file.exists()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("transport", ["native", "grpcio"])
def test_unixs_client_url(tmp_path: Path, tls_files: dict[str, str], transport: str) -> None:
    port, tcp_port = free_port(), free_port()
    endpoint = f"unixs://localhost:{port}"  # the server certificate is for localhost
    peer = f"http://127.0.0.1:{free_port()}"
    tcp = f"http://127.0.0.1:{tcp_port}"
    member = PetcdProcess(
        tmp_path / "m.etcd",
        name="m",
        client_port=tcp_port,
        cwd=tmp_path,
        env=_ENV,
        args=[
            "--name", "m", "--data-dir", str(tmp_path / "m.etcd"),
            "--listen-client-urls", f"{endpoint},{tcp}", "--advertise-client-urls", endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"m={peer}",
            "--cert-file", tls_files["server"], "--key-file", tls_files["server_key"],
            f"--client-transport={transport}",
        ],
    )  # fmt: skip
    with _started([member]):
        ca = f"--cacert={tls_files['ca']}"
        assert _etcdctl(tmp_path, endpoint, ca, "put", "k", "v").stdout == "OK\n"
        got = _etcdctl(tmp_path, endpoint, ca, "get", "k", "--print-value-only")
        assert got.stdout == "v\n", got.stderr
        # Without the CA the server's certificate is not trusted.
        assert _etcdctl(tmp_path, endpoint, "get", "k").returncode != 0
        got = _petcdctl(tmp_path, endpoint, ca, "get", "k", "--print-value-only")
        assert got.stdout == "v\n", got.stderr
        path = tmp_path / f"localhost:{port}"
        with Client([f"unixs://{path}"], tls=TLSConfig(ca_file=tls_files["ca"])) as client:
            # unixs:///abs/localhost:<port>: the name checked is the file's, without the port.
            assert client.get(b"k").kvs[0].value == b"v"


def test_unixs_peers_with_tls(
    tmp_path: Path, tls_files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = {n: free_port() for n in ("a", "b", "c")}
    urls = {n: f"unixs://localhost:{p}" for n, p in ports.items()}  # the peer cert's name
    initial = ",".join(f"{n}={u}" for n, u in urls.items())
    tls = (
        "--peer-cert-file", tls_files["peer"], "--peer-key-file", tls_files["peer_key"],
        "--peer-trusted-ca-file", tls_files["ca"], "--peer-client-cert-auth",
    )  # fmt: skip
    members = [_member(tmp_path, n, u, initial, extra=tls) for n, u in urls.items()]
    with _started(members):
        a, b, c = members
        assert _etcdctl(tmp_path, a.endpoint, "put", "k", "v").stdout == "OK\n"
        for m in (b, c):
            got = _etcdctl(tmp_path, m.endpoint, "get", "k", "--print-value-only")
            assert got.stdout == "v\n", got.stderr

        # The socket speaks TLS: a peer probe with the peer certificate is answered; the same
        # socket under another name fails verification (the URL's host is the server name).
        context = ssl.create_default_context(cafile=tls_files["ca"])
        context.load_cert_chain(tls_files["peer"], tls_files["peer_key"])
        monkeypatch.chdir(tmp_path)
        status, _ = join.probe(urls["a"], 0, 0, 0, 5.0, KIND_STREAM, ssl_context=context)
        assert status == HandshakeStatus.CLUSTER_MISMATCH  # a hello from cluster 0
        os.symlink(f"localhost:{ports['a']}", f"elsewhere:{ports['a']}")
        with pytest.raises(ssl.SSLCertVerificationError):
            join.probe(f"unixs://elsewhere:{ports['a']}", 0, 0, 0, 5.0, ssl_context=context)
        with pytest.raises(OSError):  # plain text on the TLS socket
            join.probe(urls["a"].replace("unixs", "unix"), 0, 0, 0, 5.0)
