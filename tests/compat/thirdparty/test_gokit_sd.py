"""Go kit's etcd service-discovery tests, run against etcd 3.4 and against petcd
(``make test-long``).

Theory of operation: Go kit (``github.com/go-kit/kit`` v0.13.0) registers service instances
in etcd and has clients discover them. ``sd/etcdv3`` (etcd's Go client 3.5.0) registers an
instance as a key under a lease with a TTL kept alive by the client's keep-alive stream, or
without one, deregisters it by deleting the key (and revoking the lease), and discovers
instances with a prefix range followed by a prefix watch that re-reads the prefix on each
event. ``sd/etcd`` does the same through etcd's v2 API (``go.etcd.io/etcd/client/v2``: keys
set and deleted over HTTP, a recursive ``wait`` watch on the service's directory), which
etcd 3.4 and petcd serve with ``--enable-v2``. Their integration tests (build tag
``flaky_integration``: register, see the instance appear through the instancer and the
endpointer, deregister and see it go; a registration under a TTL; a registrar alone) run
against ``$ETCD_ADDR``; the packages' other tests use fakes and need no server.

``gokit_sd/`` is a Go module pinning Go kit; each package's test binary is built once from
the module cache and run, one package after another, against a fresh real etcd 3.4 on a
free port, then a fresh petcd. What must hold: every test that passes against etcd passes
against petcd, except those in ``DIFFERENT`` with the reason, and a listed test still
differs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ServerProcess

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

HERE = Path(__file__).resolve().parent
MODULE = HERE / "gokit_sd"
GOKIT = "github.com/go-kit/kit"
PACKAGES = ("sd/etcd", "sd/etcdv3")
TAGS = "flaky_integration"

# Test ("package/TestName") -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


@dataclass
class V2ServerProcess(ServerProcess):
    """A server that also serves etcd's v2 API (``sd/etcd`` speaks it)."""

    def command(self) -> list[str]:
        return [*super().command(), "--enable-v2"]


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build Go kit's tests (go not found)")
    return go


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Package -> (its test binary, its sources)."""
    base = tmp_path_factory.mktemp("gokit-sd")
    packages = {}
    for package in PACKAGES:
        binary = base / (package.replace("/", "_") + ".test")
        subprocess.run(
            [_go(), "test", "-c", "-tags", TAGS, "-o", str(binary), f"{GOKIT}/{package}"],
            cwd=MODULE,
            check=True,
            timeout=1800,
        )
        done = subprocess.run(
            [_go(), "list", "-f", "{{.Dir}}", f"{GOKIT}/{package}"],
            cwd=MODULE,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        packages[package] = (binary, Path(done.stdout.strip()))
    return packages


def run_suites(
    built: dict[str, tuple[Path, Path]], client_url: str, log_dir: Path
) -> dict[str, str]:
    """Test ("package/TestName") -> "pass" / "fail" / "skip" for one run of every package against
    ``client_url``; each package's output goes to a log in ``log_dir``."""
    results: dict[str, str] = {}
    for package, (binary, source) in built.items():
        log = log_dir / (package.replace("/", "_") + ".json")
        argv = [_go(), "tool", "test2json", "-t", str(binary), "-test.v=test2json"]
        argv += ["-test.timeout", "5m"]
        with open(log, "w") as out:
            subprocess.run(
                argv,
                cwd=source,
                env={**os.environ, "ETCD_ADDR": client_url},
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        found = 0
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            test = event.get("Test")
            if test and "/" not in test and event.get("Action") in ("pass", "fail", "skip"):
                results[f"{package}/{test}"] = event["Action"]
                found += 1
        if not found:
            pytest.fail(f"no results for {package}; see {log}")
    return results


def test_gokit_sd_passes_on_petcd_where_it_passes_on_etcd(
    built: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    results = {}
    for kind in ("etcd", "petcd"):
        server = V2ServerProcess(kind, tmp_path / kind / "data", name="gokit")
        log_dir = tmp_path / f"{kind}-logs"
        log_dir.mkdir()
        try:
            server.start()
            results[kind] = run_suites(built, server.client_url, log_dir)
        finally:
            server.stop()
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    on_petcd = {t for t in passed if results["petcd"].get(t) == "pass"}
    print(f"Go kit sd: {len(passed)} tests pass against etcd 3.4, {len(on_petcd)} on petcd")
    integration = {
        "sd/etcd/TestIntegration",
        "sd/etcdv3/TestIntegration",
        "sd/etcdv3/TestIntegrationTTL",
        "sd/etcdv3/TestIntegrationRegistrarOnly",
    }
    assert integration <= passed, results["etcd"]  # the integration tests did run
    regressions = sorted(t for t in passed - DIFFERENT.keys() if results["petcd"].get(t) != "pass")
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
