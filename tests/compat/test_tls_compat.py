"""petcdctl and etcdctl against a TLS server (server certificate and client certificates).

A throw-away CA, server certificate (for 127.0.0.1) and client certificate are
made with ``cryptography``; an etcd is started with ``--cert-file``,
``--key-file``, ``--client-cert-auth`` and ``--trusted-ca-file`` on an https
client URL. Both CLIs must succeed with ``--cacert/--cert/--key`` and fail the
same way without the client certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.compat.harness import normalise, run_ctl
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, PETCDCTL_BIN, ServerProcess

pytestmark = pytest.mark.long  # its own etcd with TLS: a few seconds


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = issuer if issuer else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_etcd(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed")
    base = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM

    def key_file(name: str, key: ec.EllipticCurvePrivateKey) -> str:
        data = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return _write(base / name, data)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("petcd test CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        "127.0.0.1", server_key, (ca.subject, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("root", client_key, (ca.subject, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    files = {
        "ca": _write(base / "ca.pem", ca.public_bytes(pem)),
        "server": _write(base / "server.pem", server.public_bytes(pem)),
        "server_key": key_file("server-key.pem", server_key),
        "client": _write(base / "client.pem", client.public_bytes(pem)),
        "client_key": key_file("client-key.pem", client_key),
    }

    class TLSServer(ServerProcess):
        @property
        def client_url(self) -> str:
            return f"https://127.0.0.1:{self.client_port}"

        def command(self) -> list[str]:
            return [
                *super().command(),
                "--cert-file",
                files["server"],
                "--key-file",
                files["server_key"],
                "--client-cert-auth",
                "--trusted-ca-file",
                files["ca"],
            ]

        def _wait_ready(self) -> None:
            # the plain-text readiness probe cannot talk TLS: ask etcdctl instead
            for _ in range(200):
                probe = subprocess.run(
                    [
                        ETCDCTL_BIN,
                        "--endpoints",
                        self.client_url,
                        "--cacert",
                        files["ca"],
                        "--cert",
                        files["client"],
                        "--key",
                        files["client_key"],
                        "endpoint",
                        "health",
                    ],
                    capture_output=True,
                    check=False,
                    timeout=30,
                )
                if probe.returncode == 0:
                    return
                assert self.proc is not None and self.proc.poll() is None, "etcd exited"
                time.sleep(0.1)
            raise RuntimeError("TLS etcd not ready")

    srv = TLSServer("etcd", base / "data")
    srv.start()
    yield srv, files
    srv.stop()


def test_tls_with_client_certificates(tls_etcd: tuple[ServerProcess, dict[str, str]]) -> None:
    server, files = tls_etcd
    url = server.client_url
    good = ("--cacert", files["ca"], "--cert", files["client"], "--key", files["client_key"])
    for args in (
        ("put", "tls/k", "v"),
        ("get", "tls/k", "-w", "json"),
        ("endpoint", "health", "-w", "json"),
        ("endpoint", "status"),
    ):
        ref = run_ctl(ETCDCTL_BIN, server, ("--endpoints", url, *good, *args), with_endpoint=False)
        tgt = run_ctl(PETCDCTL_BIN, server, ("--endpoints", url, *good, *args), with_endpoint=False)
        assert ref.code == tgt.code == 0, (ref, tgt)
        if args[0] == "put":
            continue
        assert normalise(ref.stdout, url) == normalise(tgt.stdout, url) or args[1] == "health"
    # without a client certificate the server refuses the connection: both time out
    bad = ("--endpoints", url, "--cacert", files["ca"], "--command-timeout=1s", "get", "tls/k")
    ref = run_ctl(ETCDCTL_BIN, server, bad, with_endpoint=False)
    tgt = run_ctl(PETCDCTL_BIN, server, bad, with_endpoint=False)
    assert ref.code == tgt.code == 1
    assert tgt.stderr.endswith(b"Error: context deadline exceeded\n")
