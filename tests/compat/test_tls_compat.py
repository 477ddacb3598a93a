"""The real etcd and petcd side by side over TLS with client certificates.

A throw-away CA, server certificate (for 127.0.0.1) and client certificates
(``tests.tlsfiles``); an etcd and a petcd each started with the same ``--cert-file``,
``--key-file``, ``--client-cert-auth`` and ``--trusted-ca-file`` on an https client URL.
etcdctl and petcdctl must get the same answers from both with ``--cacert/--cert/--key``,
and fail the same way without a client certificate or with one another CA signed.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.compat.harness import normalise, run_ctl
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, PETCDCTL_BIN, ServerProcess
from tests.tlsfiles import make_tls_files


class TLSServer(ServerProcess):
    files: dict[str, str]

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    def command(self) -> list[str]:
        f = self.files
        return [
            *super().command(),
            *("--cert-file", f["server"], "--key-file", f["server_key"]),
            *("--client-cert-auth", "--trusted-ca-file", f["ca"]),
        ]

    def _wait_ready(self) -> None:
        # the plain-text readiness probe cannot talk TLS: ask etcdctl instead
        f = self.files
        for _ in range(300):
            probe = subprocess.run(
                [ETCDCTL_BIN, "--endpoints", self.client_url, "--cacert", f["ca"],
                 "--cert", f["client"], "--key", f["client_key"], "endpoint", "health"],
                capture_output=True,
                check=False,
                timeout=30,
            )  # fmt: skip
            if probe.returncode == 0:
                return
            assert self.proc is not None and self.proc.poll() is None, f"{self.target} exited"
            time.sleep(0.1)
        raise RuntimeError(f"TLS {self.target} not ready")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TLSServer]]:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed")
    base = tmp_path_factory.mktemp("tls")
    files = make_tls_files(base / "certs")
    out: dict[str, TLSServer] = {}
    try:
        for target in ("etcd", "petcd"):
            srv = TLSServer(target, base / target / "data")
            srv.files = files
            srv.start()
            out[target] = srv
        yield out
    finally:
        for srv in out.values():
            srv.stop()


def _certs(files: dict[str, str], client: str | None = "client") -> tuple[str, ...]:
    if client is None:
        return ("--cacert", files["ca"])
    return ("--cacert", files["ca"], "--cert", files[client], "--key", files[f"{client}_key"])


@pytest.mark.parametrize("ctl", [ETCDCTL_BIN, PETCDCTL_BIN], ids=["etcdctl", "petcdctl"])
def test_same_answers_over_tls_with_client_certificates(
    servers: dict[str, TLSServer], ctl: str
) -> None:
    name = os.path.basename(ctl)
    for args in (
        ("put", f"tls/{name}", "v"),
        ("get", f"tls/{name}", "-w", "json"),
        ("get", "tls/", "--prefix", "--keys-only"),
        ("del", f"tls/{name}", "--prev-kv"),
        ("endpoint", "health", "-w", "json"),
        ("endpoint", "status"),
    ):
        results = {}
        for target, srv in servers.items():
            argv = ("--endpoints", srv.client_url, *_certs(srv.files), *args)
            results[target] = run_ctl(ctl, srv, argv, with_endpoint=False)
        ref, tgt = results["etcd"], results["petcd"]
        assert ref.code == tgt.code == 0, (ref, tgt)
        if args[0] == "endpoint":
            continue  # timings, versions and sizes differ
        assert normalise(ref.stdout, servers["etcd"].client_url) == normalise(
            tgt.stdout, servers["petcd"].client_url
        ), (args, ref, tgt)


@pytest.mark.parametrize("client", [None, "stranger"])
def test_same_refusal_without_a_trusted_client_certificate(
    servers: dict[str, TLSServer], client: str | None
) -> None:
    for target, srv in servers.items():
        argv = ("--endpoints", srv.client_url, *_certs(srv.files, client))
        argv += ("--command-timeout=1s", "get", "tls/k")
        for ctl in (ETCDCTL_BIN, PETCDCTL_BIN):
            r = run_ctl(ctl, srv, argv, with_endpoint=False)
            assert r.code == 1, (target, r)
            assert r.stderr.endswith(b"Error: context deadline exceeded\n"), (target, r)


def test_https_health_on_the_client_port(servers: dict[str, TLSServer]) -> None:
    """Both answer /health over HTTPS with the client certificate (etcd 3.4's body lacks
    3.5's "reason") and refuse the handshake without it."""
    for target, srv in servers.items():
        f = srv.files
        ctx = ssl.create_default_context(cafile=f["ca"])
        ctx.load_cert_chain(f["client"], f["client_key"])
        with urllib.request.urlopen(f"{srv.client_url}/health", context=ctx, timeout=10) as r:
            assert r.status == 200 and r.read().startswith(b'{"health":"true"'), target
        bare = ssl.create_default_context(cafile=f["ca"])
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"{srv.client_url}/health", context=bare, timeout=10).read()
