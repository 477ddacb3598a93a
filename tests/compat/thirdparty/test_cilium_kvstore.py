"""Cilium's kvstore tests, run against etcd 3.4 and against petcd (``make test-long``).

Theory of operation: Cilium (``github.com/cilium/cilium`` v1.20.2, etcd's Go client 3.6)
keeps identities, endpoints, services and node records in etcd for cluster mesh and its
kvstore identity mode. ``pkg/kvstore`` is its etcd client: distributed locks (etcd's
``concurrency`` mutex under a session) and the operations that hold one (``GetIfLocked``,
``UpdateIfLocked``, ``CreateOnlyIfLocked`` ...: transactions that compare the lock key's
existence), leases it manages itself (many keys per lease, a lease replaced when it expires
or is revoked, prefixes released), paginated lists, lists then watches from the list's
revision, a client-side rate limiter, user and role management. ``pkg/kvstore/store``
syncs shared stores through it, ``pkg/kvstore/allocator`` allocates identities with it
(master keys, per-node slave keys, garbage collection); ``pkg/kvstore/allocator/doublewrite``
writes identities to etcd and to Kubernetes CRDs at once, ``pkg/identity/cache`` allocates
security identities through it, ``pkg/clustermesh/common`` connects to remote clusters'
etcds from their config files. Their integration tests run when
``$INTEGRATION_TESTS`` is set, against the address ``kvstore.etcdDummyAddress`` (set at link
time, ``-X``: a free loopback port picked when the test binaries are built).

``cilium_kvstore/`` is a Go module pinning Cilium; the test binaries are built once from the
module cache and run, one package after another, against a fresh real etcd 3.4 on that port,
then a fresh petcd. What must hold: every test that passes against etcd passes against petcd,
except those in ``DIFFERENT`` with the reason, and a listed test still differs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ServerProcess
from tests.ports import free_port

pytestmark = [pytest.mark.long, pytest.mark.timeout(3600)]

HERE = Path(__file__).resolve().parent
MODULE = HERE / "cilium_kvstore"
CILIUM = "github.com/cilium/cilium"
PACKAGES = (
    "pkg/kvstore",
    "pkg/kvstore/store",
    "pkg/kvstore/allocator",
    "pkg/kvstore/allocator/doublewrite",
    "pkg/identity/cache",
    "pkg/clustermesh/common",
)

# Test ("package/TestName") -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build Cilium's tests (go not found)")
    return go


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, tuple[Path, Path]], int]:
    """({package: (its test binary, its sources)}, the client port the binaries dial)."""
    base = tmp_path_factory.mktemp("cilium-kvstore")
    port = free_port()
    ldflags = f"-X {CILIUM}/pkg/kvstore.etcdDummyAddress=http://127.0.0.1:{port}"
    binaries = {}
    for package in PACKAGES:
        binary = base / (package.replace("/", "_") + ".test")
        subprocess.run(
            [_go(), "test", "-c", "-o", str(binary), "-ldflags", ldflags, f"{CILIUM}/{package}"],
            cwd=MODULE,
            check=True,
            timeout=1800,
        )
        done = subprocess.run(
            [_go(), "list", "-f", "{{.Dir}}", f"{CILIUM}/{package}"],
            cwd=MODULE,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        binaries[package] = (binary, Path(done.stdout.strip()))
    return binaries, port


def run_package(binary: Path, source: Path, package: str, log: Path) -> dict[str, str]:
    """Test ("package/TestName") -> "pass" / "fail" / "skip" for one run of a test binary;
    its whole output goes to ``log``."""
    argv = [_go(), "tool", "test2json", "-t", str(binary), "-test.v=test2json"]
    argv += ["-test.timeout", "15m"]
    with open(log, "w") as out:
        subprocess.run(
            argv,
            cwd=source,
            env={**os.environ, "INTEGRATION_TESTS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1200,
            check=False,
        )
    results: dict[str, str] = {}
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        test = event.get("Test")
        if test and "/" not in test and event.get("Action") in ("pass", "fail", "skip"):
            results[f"{package}/{test}"] = event["Action"]
    if not results:
        pytest.fail(f"no results from {package}; see {log}")
    return results


def test_cilium_kvstore_passes_on_petcd_where_it_passes_on_etcd(
    built: tuple[dict[str, tuple[Path, Path]], int], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    binaries, port = built
    results: dict[str, dict[str, str]] = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="cilium", client_port=port)
        results[kind] = {}
        try:
            server.start()
            for package, (binary, source) in binaries.items():
                log = tmp_path / f"{kind}-{package.replace('/', '_')}.json"
                results[kind].update(run_package(binary, source, package, log))
        finally:
            server.stop()
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    on_petcd = {t for t in passed if results["petcd"].get(t) == "pass"}
    print(f"Cilium kvstore: {len(passed)} tests pass against etcd 3.4, {len(on_petcd)} on petcd")
    # The integration tests did run (they skip themselves without $INTEGRATION_TESTS).
    assert len(passed) >= 50 and "pkg/kvstore/TestLock" in passed, results["etcd"]
    regressions = sorted(passed - on_petcd - DIFFERENT.keys())
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
