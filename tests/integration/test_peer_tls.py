"""Peer TLS: members replicating over https peer URLs with certificates.

Three petcd processes with etcd's ``--peer-cert-file``, ``--peer-key-file``,
``--peer-trusted-ca-file`` and ``--peer-client-cert-auth`` on https peer URLs (clients stay on
plain http): a write through one member is read through every other, a fourth member joins
with ``member add`` and ``--initial-cluster-state existing`` over TLS, and the peer listener
refuses a connection without a certificate or with one another CA signed.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.peer.codec import KIND_STREAM, REPLY_HEADER_BYTES, Hello, encode_hello
from petcd.raft.types import MemberId
from tests.integration.petcd_proc import PetcdProcess, etcdctl, run_petcd
from tests.ports import free_port
from tests.tlsfiles import make_tls_files


def _member(
    base: Path,
    name: str,
    files: dict[str, str] | None,
    peer_port: int,
    initial: str,
    state: str = "new",
    extra: tuple[str, ...] = (),
) -> PetcdProcess:
    """A member on an https peer URL: with ``files``' peer certificate and CA (client
    certificates required), or with ``--peer-auto-tls`` when ``files`` is None."""
    client_port = free_port()
    client, peer = f"http://127.0.0.1:{client_port}", f"https://127.0.0.1:{peer_port}"
    data = base / name / "data"
    return PetcdProcess(
        data,
        name=name,
        client_port=client_port,
        peer_port=peer_port,
        args=[
            "--name", name, "--data-dir", str(data),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", "peer-tls",
            *(
                ["--peer-auto-tls"] if files is None else
                ["--peer-cert-file", files["peer"], "--peer-key-file", files["peer_key"],
                 "--peer-trusted-ca-file", files["ca"], "--peer-client-cert-auth"]
            ),
            *extra,
        ],
    )  # fmt: skip


@contextlib.contextmanager
def _cluster(tmp_path: Path, files: dict[str, str] | None) -> Iterator[list[PetcdProcess]]:
    """Three members on https peer URLs (``_member``), started; stopped by pid after."""
    ports = {n: free_port() for n in ("a", "b", "c")}
    initial = ",".join(f"{n}=https://127.0.0.1:{p}" for n, p in ports.items())
    members = [_member(tmp_path, n, files, p, initial) for n, p in ports.items()]
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        yield members
    finally:
        for m in members:
            m.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[PetcdProcess], dict[str, str]]]:
    files = make_tls_files(tmp_path / "certs")
    with _cluster(tmp_path, files) as members:
        yield members, files


def test_members_replicate_and_a_member_joins_over_peer_tls(
    cluster: tuple[list[PetcdProcess], dict[str, str]], tmp_path: Path
) -> None:
    members, files = cluster
    listed = etcdctl(members[0].endpoint, "member", "list").stdout
    assert listed.count("https://127.0.0.1:") == 3, listed
    for i, m in enumerate(members):
        assert etcdctl(m.endpoint, "put", f"k{i}", f"v{i}").stdout == "OK\n"
    for m in members:
        for i in range(3):
            assert etcdctl(m.endpoint, "get", f"k{i}", "--print-value-only").stdout == f"v{i}\n"
    # a fourth member, added and then started: it learns its id through a TLS handshake
    port = free_port()
    added = etcdctl(
        members[0].endpoint, "member", "add", "d", f"--peer-urls=https://127.0.0.1:{port}"
    )
    assert added.returncode == 0, added
    line = next(x for x in added.stdout.splitlines() if x.startswith("ETCD_INITIAL_CLUSTER="))
    initial = line.split("=", 1)[1].strip('"')
    d = _member(tmp_path, "d", files, port, initial, state="existing")
    try:
        d.start()
        got = etcdctl(d.endpoint, "get", "k2", "--print-value-only", "--consistency=s")
        assert got.stdout == "v2\n", got
        assert etcdctl(d.endpoint, "put", "from-d", "x").stdout == "OK\n"
        assert etcdctl(members[1].endpoint, "get", "from-d", "--print-value-only").stdout == "x\n"
    finally:
        d.stop()


@pytest.mark.parametrize("client", [None, "peer_stranger"])
def test_the_peer_listener_refuses_untrusted_members(
    cluster: tuple[list[PetcdProcess], dict[str, str]], client: str | None
) -> None:
    members, files = cluster
    ctx = ssl.create_default_context(cafile=files["ca"])
    if client is not None:
        ctx.load_cert_chain(files[client], files[f"{client}_key"])
    hello = encode_hello(Hello(KIND_STREAM, 0, MemberId(0), MemberId(0)))
    with (
        socket.create_connection(("127.0.0.1", members[0].peer_port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        # a listener that took the connection answers a hello (here: cluster mismatch);
        # TLS 1.3 reports a refused client certificate at the first read instead
        s.sendall(hello)
        if not s.recv(REPLY_HEADER_BYTES):
            raise ConnectionError("closed")
    # the members still talk to each other
    assert etcdctl(members[0].endpoint, "put", "still", "ok").stdout == "OK\n"


def test_peer_auto_tls_members_replicate(tmp_path: Path) -> None:
    with _cluster(tmp_path, None) as members:
        assert etcdctl(members[0].endpoint, "put", "auto", "tls").stdout == "OK\n"
        for m in members:
            got = etcdctl(m.endpoint, "get", "auto", "--print-value-only")
            assert got.stdout == "tls\n", got
        for m in members:
            fixtures = m.data_dir / "fixtures" / "peer"
            assert (fixtures / "cert.pem").exists() and (fixtures / "key.pem").exists()


def test_https_peer_url_without_a_peer_certificate_is_refused(tmp_path: Path) -> None:
    port = free_port()
    r = run_petcd(
        "--data-dir", str(tmp_path / "x"),
        "--listen-peer-urls", f"https://127.0.0.1:{port}",
        "--initial-advertise-peer-urls", f"https://127.0.0.1:{port}",
        "--initial-cluster", f"default=https://127.0.0.1:{port}",
    )  # fmt: skip
    assert r.returncode == 1
    assert (
        f"cannot listen on TLS for 127.0.0.1:{port}: KeyFile and CertFile are not presented"
        in r.stderr
    ), r.stderr


def test_peer_certificate_names_are_pinned(tmp_path: Path) -> None:
    """--peer-cert-allowed-hostname / --peer-cert-allowed-cn, both ways: a and b want a
    certificate valid for localhost (the peer certificate's SANs are 127.0.0.1 and localhost)
    and form a quorum; c wants the common name "other" and refuses everyone, so it never
    joins them."""
    files = make_tls_files(tmp_path / "certs")
    ports = {n: free_port() for n in ("a", "b", "c")}
    initial = ",".join(f"{n}=https://127.0.0.1:{p}" for n, p in ports.items())
    pins = {
        "a": ("--peer-cert-allowed-hostname", "example.com,localhost"),
        "b": ("--peer-cert-allowed-hostname", "localhost"),
        "c": ("--peer-cert-allowed-cn", "other,another"),
    }
    members = {n: _member(tmp_path, n, files, p, initial, extra=pins[n]) for n, p in ports.items()}
    try:
        for m in members.values():
            m.start(wait=False)
        members["a"].wait_ready()
        members["b"].wait_ready()
        assert etcdctl(members["a"].endpoint, "put", "k", "v").returncode == 0
        got = etcdctl(members["b"].endpoint, "get", "k", "--print-value-only")
        assert got.stdout == "v\n"
        c = members["c"]
        deadline = time.monotonic() + 10
        while "client certificate authentication failed" not in c.log_tail(400):
            assert time.monotonic() < deadline, c.log_tail()
            time.sleep(0.1)
        assert etcdctl(c.endpoint, "get", "k", "--command-timeout=1s").returncode != 0
        # c told a why it refused a's connection; a logs the text etcd's dialer logs then.
        a = members["a"]
        while "remote error: tls: bad certificate" not in a.log_tail(400):
            assert time.monotonic() < deadline, a.log_tail()
            time.sleep(0.1)
    finally:
        for m in members.values():
            m.stop()


def test_peer_cns_and_hostnames_are_exclusive(tmp_path: Path) -> None:
    out = run_petcd(
        "--data-dir", str(tmp_path / "d"),
        "--peer-cert-allowed-cn", "a,b", "--peer-cert-allowed-hostname", "h",
    )  # fmt: skip
    assert out.returncode != 0
    assert r"mutually exclusive (cns=[\"a\" \"b\"], hostnames=[\"h\"])" in out.stderr
