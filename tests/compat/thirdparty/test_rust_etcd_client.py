"""The Rust client etcd-client's own test suite, against etcd 3.4 and petcd (make test-long).

Theory of operation: the crate's source release on crates.io (0.14.1, checked against its
SHA-256) ships its integration tests (``tests/client.rs``, ``tests/namespace.rs``: KV, txn,
watch, leases, lock, election, users and roles, maintenance, cluster calls through tonic). They
dial ``localhost:2379``; the unpacked copy is pointed at a free loopback port instead (one
literal replaced), built once with cargo (its build script compiles etcd's .proto files with
protoc: grpcio-tools' protoc, through a small wrapper), and run twice, one test at a time, each
time against a fresh single member on that port: the real etcd, then petcd. What must hold:
every test passing against etcd passes against petcd, except those in ``DIFFERENT`` with the
reason. The tests the crate marks ``#[ignore]`` (they need a root user, or add members to the
cluster) are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ServerProcess
from tests.compat.thirdparty import rustcrate
from tests.ports import free_port

pytestmark = [pytest.mark.long, pytest.mark.timeout(3600)]

CRATE_VERSION = "0.14.1"
CRATE_SHA256 = "fc0452bcc559431b16f472b7ab86e2f9ccd5f3c2da3795afbd6b773665e047fe"
TEST_TARGETS = ("client", "namespace")

DIFFERENT: dict[str, str] = {}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict[str, str]]:
    """(the unpacked crate with its tests built, the port they dial, cargo's environment)."""
    base = tmp_path_factory.mktemp("etcd-client")
    source = rustcrate.unpack(base, "etcd-client", CRATE_VERSION, CRATE_SHA256)
    port = free_port()
    for name in ("testing.rs", "client.rs"):
        path = source / "tests" / name
        text = path.read_text()
        assert '"localhost:2379"' in text or name == "client.rs", name
        path.write_text(text.replace('"localhost:2379"', f'"127.0.0.1:{port}"'))
    env = {**os.environ, "PROTOC": str(rustcrate.protoc_wrapper(base))}
    argv = [rustcrate.cargo(), "test", "--no-run", "--quiet"]
    for target in TEST_TARGETS:
        argv += ["--test", target]
    subprocess.run(argv, cwd=source, env=env, check=True, timeout=2400)
    return source, port, env


def run_suite(source: Path, env: dict[str, str]) -> dict[str, str]:
    """Test name -> "ok" / "FAILED" / "ignored" for each test of the crate's targets."""
    outcomes: dict[str, str] = {}
    for target in TEST_TARGETS:
        done = subprocess.run(
            [rustcrate.cargo(), "test", "--test", target, "--", "--test-threads=1"],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        found = re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", done.stdout, re.M)
        assert found, done.stdout[-3000:] + done.stderr[-3000:]
        outcomes.update((f"{target}::{name}", outcome) for name, outcome in found)
    return outcomes


def test_etcd_client_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, int, dict[str, str]], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    source, port, env = suite
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="rust", client_port=port)
        try:
            server.start()
            results[kind] = run_suite(source, env)
        finally:
            server.stop()
    passed_on_etcd = {t for t, outcome in results["etcd"].items() if outcome == "ok"}
    assert len(passed_on_etcd) >= 20, results["etcd"]
    regressions = sorted(
        t for t in passed_on_etcd - set(DIFFERENT) if results["petcd"].get(t) != "ok"
    )
    assert regressions == [], {t: results["petcd"].get(t) for t in regressions}
    for t in DIFFERENT:  # still different: else the entry is out of date
        assert results["petcd"].get(t) != "ok", t
