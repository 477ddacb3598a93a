"""CoreDNS's etcd plugin tests, run against etcd 3.4 and against petcd (``make test-long``).

Theory of operation: CoreDNS's ``etcd`` plugin (``github.com/coredns/coredns`` v1.15.0, etcd's
Go client 3.6) serves DNS zones from SkyDNS records kept in etcd (what external-dns writes
for it): a name is a key path, looked up as a prefix range (wildcards, subdomains, several
zones, groups) or as a single key. Its tests (behind the ``etcd`` build tag) put records with
etcd's client, ask the plugin for A, AAAA, SRV, CNAME, TXT, MX, PTR ... answers, compare them
with what they expect and delete the records; a few (setup, TTL parsing) need no server.

They dial ``localhost:2379``, a literal in the test code: the harness runs the server on that
fixed port, holding ``LOCK`` (``flock``) meanwhile so that no other run of it takes the port,
and fails at once if something else already listens there. ``coredns_etcd/`` is a Go module
pinning CoreDNS; the test binary is built once from the module cache and run against a fresh
real etcd 3.4, then a fresh petcd. What must hold: every test that passes against etcd passes
against petcd, except those in ``DIFFERENT`` with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ServerProcess

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

HERE = Path(__file__).resolve().parent
MODULE = HERE / "coredns_etcd"
PACKAGE = "github.com/coredns/coredns/plugin/etcd"
PORT = 2379  # the tests' literal "http://localhost:2379"
LOCK = Path("/tmp/petcd-port-2379.lock")

# Test -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build CoreDNS's tests (go not found)")
    return go


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the test binary, the package's sources)."""
    binary = tmp_path_factory.mktemp("coredns-etcd") / "etcd.test"
    subprocess.run(
        [_go(), "test", "-c", "-tags", "etcd", "-o", str(binary), PACKAGE],
        cwd=MODULE,
        check=True,
        timeout=1800,
    )
    done = subprocess.run(
        [_go(), "list", "-f", "{{.Dir}}", PACKAGE],
        cwd=MODULE,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return binary, Path(done.stdout.strip())


@pytest.fixture
def port_2379() -> Iterator[None]:
    """Port 2379 on loopback, ours while the test runs."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers bind: connections of an earlier run may linger in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", PORT))
            except OSError as exc:
                pytest.fail(f"port {PORT} is taken by another program: {exc}")
        yield


def run_suite(built: tuple[Path, Path], log: Path) -> dict[str, str]:
    """Test -> "pass" / "fail" / "skip" for one run; the whole output goes to ``log``."""
    binary, source = built
    argv = [_go(), "tool", "test2json", "-t", str(binary), "-test.v=test2json"]
    argv += ["-test.timeout", "10m"]
    with open(log, "w") as out:
        subprocess.run(
            argv, cwd=source, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False
        )
    results: dict[str, str] = {}
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        test = event.get("Test")
        if test and "/" not in test and event.get("Action") in ("pass", "fail", "skip"):
            results[test] = event["Action"]
    if not results:
        pytest.fail(f"no results; see {log}")
    return results


def test_coredns_etcd_plugin_passes_on_petcd_where_it_passes_on_etcd(
    built: tuple[Path, Path], port_2379: None, tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="coredns", client_port=PORT)
        try:
            server.start()
            results[kind] = run_suite(built, tmp_path / f"{kind}.json")
        finally:
            server.stop()
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    assert len(passed) >= 8 and "TestLookup" in passed, results["etcd"]
    regressions = sorted(t for t in passed - DIFFERENT.keys() if results["petcd"].get(t) != "pass")
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
