"""TLS on petcd's client listeners, through real clients over the network.

A throw-away CA, server and client certificates (``tests.tlsfiles``); petcd started with
etcd's flags (``--cert-file``, ``--key-file``, ``--trusted-ca-file``, ``--auto-tls``,
``--tls-min-version`` ...). The real etcdctl (Go, grpc-go) and petcdctl (grpcio) must work
with the client certificate and fail without it or with one the CA did not sign; HTTPS
clients (Python's ``ssl``, HTTP/1.1) reach ``/health``, ``/metrics`` and the JSON gateway
on the same port; the ``grpcio`` client transport serves TLS with the same rules.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import Client, ClientError, TLSConfig
from tests.integration.petcd_proc import (
    ETCDCTL_BIN,
    REPO,
    PetcdProcess,
    etcdctl,
    kv_stub,
    run_petcd,
)
from tests.ports import free_port
from tests.tlsfiles import _cert, make_tls_files

PETCDCTL_BIN = str(REPO / ".venv" / "bin" / "petcdctl")

pytestmark = pytest.mark.skipif(not os.path.exists(ETCDCTL_BIN), reason="etcdctl not installed")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tls_files(tmp_path_factory.mktemp("certs"))


def _credentials(files: dict[str, str], client: str = "client") -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(files["ca"]).read_bytes(),
        private_key=Path(files[f"{client}_key"]).read_bytes(),
        certificate_chain=Path(files[client]).read_bytes(),
    )


def _server_flags(files: dict[str, str]) -> list[str]:
    return ["--cert-file", files["server"], "--key-file", files["server_key"]]


def _start(tmp_path: Path, files: dict[str, str], *extra: str, name: str = "tls") -> PetcdProcess:
    p = PetcdProcess(
        tmp_path / f"{name}.etcd",
        name=name,
        extra_args=[*_server_flags(files), "--trusted-ca-file", files["ca"], *extra],
        credentials=_credentials(files),
    )
    p.start()
    return p


@pytest.fixture
def member(tmp_path: Path, files: dict[str, str]) -> Iterator[PetcdProcess]:
    p = _start(tmp_path, files)
    try:
        yield p
    finally:
        p.stop()


def _ctl(
    binary: str, endpoint: str, *args: str, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, f"--endpoints={endpoint}", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )


def _https(
    url: str, files: dict[str, str], client: str | None = "client", body: bytes | None = None
) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=files["ca"])
    if client is not None:
        ctx.load_cert_chain(files[client], files[f"{client}_key"])
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return r.status, r.read()


def test_etcdctl_and_petcdctl_work_with_a_client_certificate(
    member: PetcdProcess, files: dict[str, str]
) -> None:
    url = f"https://{member.endpoint}"
    certs = ("--cacert", files["ca"], "--cert", files["client"], "--key", files["client_key"])
    put = _ctl(ETCDCTL_BIN, url, *certs, "put", "foo", "Hello, World!")
    assert put.returncode == 0 and put.stdout == "OK\n", put
    got = _ctl(PETCDCTL_BIN, url, *certs, "get", "foo")
    assert got.returncode == 0 and got.stdout == "foo\nHello, World!\n", got
    health = _ctl(ETCDCTL_BIN, url, *certs, "endpoint", "health")
    assert health.returncode == 0 and "is healthy" in health.stderr + health.stdout, health
    # a watch streams over TLS too
    watch = subprocess.Popen(
        [ETCDCTL_BIN, f"--endpoints={url}", *certs, "watch", "w"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        for _ in range(50):  # until the watch is in place, a put at a time
            assert _ctl(ETCDCTL_BIN, url, *certs, "put", "w", "x").returncode == 0
            assert watch.stdout is not None
            os.set_blocking(watch.stdout.fileno(), False)
            line = watch.stdout.readline()
            if line:
                assert line == "PUT\n"
                break
            subprocess.run(["sleep", "0.1"], check=True)
        else:
            pytest.fail("the watch over TLS saw no event")
    finally:
        watch.kill()
        watch.wait()
    # petcd's own client library
    with Client(
        [url],
        tls=TLSConfig(files["ca"], files["client"], files["client_key"]),
        insecure_transport=False,
    ) as c:
        assert c.get(b"foo").kvs[0].value == b"Hello, World!"


@pytest.mark.parametrize("client", [None, "stranger"])
def test_a_missing_or_foreign_client_certificate_is_refused(
    member: PetcdProcess, files: dict[str, str], client: str | None
) -> None:
    url = f"https://{member.endpoint}"
    certs = ["--cacert", files["ca"]]
    if client is not None:
        certs += ["--cert", files[client], "--key", files[f"{client}_key"]]
    for binary in (ETCDCTL_BIN, PETCDCTL_BIN):
        r = _ctl(binary, url, *certs, "--command-timeout=1s", "put", "k", "v")
        assert r.returncode == 1 and "context deadline exceeded" in r.stderr, (binary, r)
    with pytest.raises(ssl.SSLError):
        _https(f"https://{member.endpoint}/health", files, client)
    with member.channel() as ch:  # nothing was written
        assert kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5).count == 0


def test_plain_text_on_the_tls_port_is_refused(member: PetcdProcess) -> None:
    r = etcdctl(member.endpoint, "--command-timeout=1s", "get", "foo")
    assert r.returncode == 1, r
    with socket.create_connection(("127.0.0.1", member.client_port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not s.recv(1024).startswith(b"HTTP/1.1 200"), "answered in plain text"


def test_https_health_metrics_and_gateway_on_the_client_port(
    member: PetcdProcess, files: dict[str, str]
) -> None:
    base = f"https://{member.endpoint}"
    assert _https(f"{base}/health", files) == (200, b'{"health":"true","reason":""}')
    status, metrics = _https(f"{base}/metrics", files)
    assert status == 200 and b"etcd_server_has_leader 1" in metrics
    put = json.dumps({"key": "Z3c=", "value": "djE="}).encode()  # gw = v1
    status, _ = _https(f"{base}/v3/kv/put", files, body=put)
    assert status == 200
    with member.channel() as ch:
        got = kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"gw"), timeout=5)
        assert [kv.value for kv in got.kvs] == [b"v1"]
    # a client offering both (curl, browsers, Go's net/http) is given HTTP/1.1, which is
    # what petcd serves its HTTP endpoints with
    ctx = ssl.create_default_context(cafile=files["ca"])
    ctx.load_cert_chain(files["client"], files["client_key"])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", member.client_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        assert s.selected_alpn_protocol() == "http/1.1"
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'"reason":""}'), answer
    # and a gRPC client offering only h2 gets HTTP/2
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", member.client_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        assert s.selected_alpn_protocol() == "h2"


def test_grpcio_transport_serves_tls_with_the_same_rules(
    tmp_path: Path, files: dict[str, str]
) -> None:
    p = _start(tmp_path, files, "--client-transport", "grpcio")
    try:
        url = f"https://{p.endpoint}"
        certs = ("--cacert", files["ca"], "--cert", files["client"], "--key", files["client_key"])
        assert _ctl(ETCDCTL_BIN, url, *certs, "put", "a", "1").returncode == 0
        got = _ctl(ETCDCTL_BIN, url, *certs, "get", "a", "--print-value-only")
        assert got.stdout == "1\n", got
        bad = _ctl(ETCDCTL_BIN, url, "--cacert", files["ca"], "--command-timeout=1s", "get", "a")
        assert bad.returncode == 1, bad
    finally:
        p.stop()


def test_plain_and_tls_listeners_side_by_side_without_client_auth(
    tmp_path: Path, files: dict[str, str]
) -> None:
    """Without --trusted-ca-file no client certificate is asked for; an http URL next to
    the https one serves plain text (etcd warns that it ignores the certificate there)."""
    tls_port, plain_port, peer_port = free_port(), free_port(), free_port()
    tls_url, plain_url = f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{plain_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    p = PetcdProcess(
        tmp_path / "mixed.etcd",
        name="mixed",
        args=[
            "--name", "mixed", "--data-dir", str(tmp_path / "mixed.etcd"),
            "--listen-client-urls", f"{tls_url},{plain_url}",
            "--advertise-client-urls", tls_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"mixed={peer}",
            *_server_flags(files),
        ],
        client_port=plain_port,
    )  # fmt: skip
    p.start()
    try:
        assert etcdctl(plain_url, "put", "k", "plain").returncode == 0
        r = _ctl(ETCDCTL_BIN, tls_url, "--cacert", files["ca"], "get", "k", "--print-value-only")
        assert r.returncode == 0 and r.stdout == "plain\n", r
        # an untrusted server certificate is refused by the client
        r = _ctl(ETCDCTL_BIN, tls_url, "--command-timeout=1s", "get", "k")
        assert r.returncode == 1, r
        r = _ctl(
            ETCDCTL_BIN,
            tls_url,
            "--insecure-transport=false",
            "--insecure-skip-tls-verify",
            "get",
            "k",
        )
        assert r.returncode == 0, r
        warned = [
            rec
            for rec in p.log_records()
            if str(rec.get("msg", "")).startswith("scheme is http or unix while key and cert")
        ]
        assert [rec["client-url"] for rec in warned] == [plain_url]
    finally:
        p.stop()


def test_auto_tls_makes_a_certificate_and_reuses_it(tmp_path: Path) -> None:
    port, peer_port = free_port(), free_port()
    url, peer = f"https://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    data = tmp_path / "auto.etcd"
    args = [
        "--name", "auto", "--data-dir", str(data),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"auto={peer}", "--auto-tls",
    ]  # fmt: skip
    # etcdctl 3.4 talks TLS without a CA file only with both flags (as against etcd)
    skip_verify = ("--insecure-transport=false", "--insecure-skip-tls-verify")
    p = PetcdProcess(data, name="auto", args=args, client_port=port)
    p.start(wait=False)
    try:
        for _ in range(100):
            r = _ctl(ETCDCTL_BIN, url, *skip_verify, "put", "a", "1")
            if r.returncode == 0:
                break
            assert p.proc is not None and p.proc.poll() is None, p.log_tail()
            subprocess.run(["sleep", "0.2"], check=True)
        else:
            pytest.fail(f"auto TLS member never answered: {r}\n{p.log_tail()}")
        cert = data / "fixtures" / "client" / "cert.pem"
        key = data / "fixtures" / "client" / "key.pem"
        first = cert.read_bytes()
        assert b"BEGIN CERTIFICATE" in first and key.stat().st_mode & 0o077 == 0
        # the certificate is for the listener's address: verifying against it works
        r = _ctl(ETCDCTL_BIN, url, "--cacert", str(cert), "get", "a", "--print-value-only")
        assert r.returncode == 0 and r.stdout == "1\n", r
        p.terminate()
        p.start(wait=False)
        for _ in range(100):
            r = _ctl(ETCDCTL_BIN, url, "--cacert", str(cert), "get", "a", "--print-value-only")
            if r.returncode == 0:
                break
            subprocess.run(["sleep", "0.2"], check=True)
        assert r.stdout == "1\n", r
        assert cert.read_bytes() == first, "the certificate was made again"
    finally:
        p.stop()


def test_https_metrics_listener_needs_the_client_certificate(
    tmp_path: Path, files: dict[str, str]
) -> None:
    mport = free_port()
    p = _start(tmp_path, files, "--listen-metrics-urls", f"https://127.0.0.1:{mport}")
    try:
        status, body = _https(f"https://127.0.0.1:{mport}/metrics", files)
        assert status == 200 and b"etcd_server_has_leader" in body
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _https(f"https://127.0.0.1:{mport}/metrics", files, client=None)
    finally:
        p.stop()


def test_tls_min_version_and_cipher_suites_are_enforced(
    tmp_path: Path, files: dict[str, str]
) -> None:
    p = _start(tmp_path, files, "--tls-min-version", "TLS1.3")
    try:

        def handshake(max_version: ssl.TLSVersion) -> str:
            ctx = ssl.create_default_context(cafile=files["ca"])
            ctx.load_cert_chain(files["client"], files["client_key"])
            ctx.maximum_version = max_version
            with (
                socket.create_connection(("127.0.0.1", p.client_port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
            ):
                return str(s.version())

        assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            handshake(ssl.TLSVersion.TLSv1_2)
    finally:
        p.stop()
    suite = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    p = _start(tmp_path, files, "--tls-max-version", "TLS1.2", "--cipher-suites", suite, name="cs")
    try:

        def cipher(openssl_name: str) -> str:
            ctx = ssl.create_default_context(cafile=files["ca"])
            ctx.load_cert_chain(files["client"], files["client_key"])
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(openssl_name)
            with (
                socket.create_connection(("127.0.0.1", p.client_port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
            ):
                got = s.cipher()
                assert got is not None
                return got[0]

        assert cipher("ECDHE-ECDSA-AES256-GCM-SHA384") == "ECDHE-ECDSA-AES256-GCM-SHA384"
        with pytest.raises(ssl.SSLError):
            cipher("ECDHE-ECDSA-AES128-GCM-SHA256")
    finally:
        p.stop()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--listen-client-urls", "https://127.0.0.1:{port}"],
            "TLS key/cert (--cert-file, --key-file) must be provided for client url "
            "https://127.0.0.1:{port} with HTTPS scheme",
        ),
        (["--cert-file", "{server}"], "KeyFile and CertFile must both be present[key: , cert: "),
        (["--tls-min-version", "TLS1.1"], "unexpected TLS version \"TLS1.1\""),
        (
            ["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
            "min version (TLS1.3) is greater than max version (TLS1.2)",
        ),
        (["--cipher-suites", "TLS_NOPE"], "unexpected TLS cipher suite \"TLS_NOPE\""),
        (
            ["--cipher-suites", "TLS_RSA_WITH_AES_128_CBC_SHA"],
            "'TLS_RSA_WITH_AES_128_CBC_SHA' is not supported by petcd",
        ),
        (
            ["--listen-client-urls", "https://127.0.0.1:{port}",
             "--cert-file", "{missing}", "--key-file", "{server_key}"],
            "cannot read the certificate file (--cert-file)",
        ),
        (
            ["--listen-client-urls", "https://127.0.0.1:{port}",
             "--cert-file", "{server_key}", "--key-file", "{server_key}"],
            "cannot serve client TLS: the certificate file holds no PEM certificate",
        ),
    ],
)  # fmt: skip
def test_bad_tls_configuration_is_refused_with_etcds_message(
    tmp_path: Path, files: dict[str, str], flags: list[str], message: str
) -> None:
    port = free_port()
    subst = {**files, "port": str(port), "missing": str(tmp_path / "nope.pem")}
    args = [f.format(**subst) for f in flags]
    if "--listen-client-urls" in args:
        args += ["--advertise-client-urls", f"http://127.0.0.1:{port}"]
    data = tmp_path / "bad.etcd"
    r = run_petcd("--data-dir", str(data), *args)
    assert r.returncode == 1, r
    errors = [json.loads(line).get("error", "") for line in r.stderr.splitlines()]
    assert any(message.format(**subst) in e for e in errors), r.stderr
    assert not (data / "member").exists(), "a refused start created the data dir"


@pytest.mark.parametrize("crl", ["crl", "crl_der"])
def test_a_revoked_client_certificate_is_refused(
    tmp_path: Path, files: dict[str, str], crl: str
) -> None:
    p = _start(tmp_path, files, "--client-crl-file", files[crl], "--client-cert-auth")
    try:
        url = f"https://{p.endpoint}"
        for client, code in (("client", 0), ("revoked", 1)):
            certs = ("--cacert", files["ca"], "--cert", files[client])
            certs += ("--key", files[f"{client}_key"])
            r = _ctl(ETCDCTL_BIN, url, *certs, "--command-timeout=2s", "put", client, "v")
            assert r.returncode == code, (client, r)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https(f"{url}/health", files, "revoked")
    finally:
        p.stop()


def test_client_library_reports_an_untrusted_server(member: PetcdProcess) -> None:
    with (
        Client([f"https://{member.endpoint}"], command_timeout_s=1, insecure_transport=False) as c,
        pytest.raises(ClientError),
    ):
        c.get(b"foo")


def test_one_self_signed_ca_certificate_as_server_ca_and_client(tmp_path: Path) -> None:
    """etcd's e2e fixture ``CommonName-root.crt``: one self-signed ``CA:TRUE`` certificate as
    ``--cert-file``, ``--trusted-ca-file`` and the client's certificate. Go accepts a CA as the
    end entity; WebPKI refuses it unless petcd lets a trusted certificate itself through. Another
    self-signed CA certificate is still refused."""
    usage = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    paths = {}
    for name in ("own", "other"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("root", key, None, ca=True, usage=usage)
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"] = tmp_path / f"{name}-key.pem"
        paths[f"{name}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    own, own_key = str(paths["own"]), str(paths["own_key"])
    creds = grpc.ssl_channel_credentials(
        root_certificates=paths["own"].read_bytes(),
        private_key=paths["own_key"].read_bytes(),
        certificate_chain=paths["own"].read_bytes(),
    )
    flags = ["--cert-file", own, "--key-file", own_key, "--trusted-ca-file", own]
    p = PetcdProcess(tmp_path / "d", extra_args=[*flags, "--client-cert-auth"], credentials=creds)
    p.start()
    try:
        url = f"https://{p.endpoint}"
        r = _ctl(
            ETCDCTL_BIN, url, "--cacert", own, "--cert", own, "--key", own_key, "put", "k", "v"
        )
        assert r.returncode == 0, r.stderr
        other = ["--cert", str(paths["other"]), "--key", str(paths["other_key"])]
        r = _ctl(ETCDCTL_BIN, url, "--cacert", own, *other, "--command-timeout=1s", "get", "k")
        assert r.returncode == 1 and "context deadline exceeded" in r.stderr, r
    finally:
        p.stop()


def test_client_certificate_hostnames_are_pinned(tmp_path: Path, files: dict[str, str]) -> None:
    """--client-cert-allowed-hostname: the client certificate (SANs 127.0.0.1 and localhost)
    must be valid for one of the names, else the handshake fails."""
    certs = ["--cacert", files["ca"], "--cert", files["client"], "--key", files["client_key"]]
    p = _start(tmp_path, files, "--client-cert-allowed-hostname", "example.com,localhost")
    try:
        r = _ctl(ETCDCTL_BIN, f"https://{p.endpoint}", *certs, "put", "k", "v")
        assert r.returncode == 0, r.stderr
    finally:
        p.stop()
    p = PetcdProcess(
        tmp_path / "refused",
        name="refused",
        extra_args=[*_server_flags(files), "--trusted-ca-file", files["ca"],
                    "--client-cert-allowed-hostname", "example.com"],
        credentials=_credentials(files),  # an https client URL
    )  # fmt: skip
    p.start(wait=False)  # the readiness probe's certificate is refused too
    try:
        deadline = time.monotonic() + 30
        while "ready to serve client requests" not in p.log_tail(100):
            assert time.monotonic() < deadline, p.log_tail()
            time.sleep(0.1)
        r = _ctl(ETCDCTL_BIN, f"https://{p.endpoint}", *certs, "--command-timeout=2s", "get", "k")
        assert r.returncode == 1 and "context deadline exceeded" in r.stderr, r
    finally:
        p.stop()
