"""Vitess's etcd topology server tests, run against etcd 3.4 and against petcd
(``make test-long``).

Theory of operation: Vitess keeps its cluster topology (keyspaces, shards, tablets, serving
graphs, VSchemas, routing rules) in etcd through ``vitess.io/vitess/go/vt/topo/etcd2topo``,
with etcd's Go client 3.6: files created and updated by transactions on a key's version and
mod revision, reads at a past revision, directory listings sorted keys-only ranges, locks
made of a lease kept alive and a key that waits, through a watch from a revision, for the
last key below it (``WithLastRev`` and ``WithMaxModRev``), elections ordered by mod revision,
watches of one key and of a prefix that restart from a revision. The package's tests
(``TestEtcd2Topo`` runs Vitess's generic topology suite, ``go/vt/topo/test``; the others a
TLS server with client certificates, a cell whose etcd is killed under ``vtctldclient
GetTablets``, calls on a closed connection, watch versions) start the server themselves: the
``etcd`` first on ``PATH``, with etcd's flags in Go's single-dash spelling, on ports counted
from ``$VTPORTSTART`` (eight of them), each with a data directory of its own.

``vitess_topo/`` is a Go module pinning ``vitess.io/vitess``; the test binary and the
``vtctldclient`` it runs are built once from the module cache, and the tests run twice: with
the real etcd 3.4 first on ``PATH``, then with petcd. What must hold: every test that passes
against etcd passes against petcd, except those in ``DIFFERENT`` with the reason, and a
listed test still differs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, PETCD_BIN
from tests.ports import free_port

pytestmark = [pytest.mark.long, pytest.mark.timeout(3600)]

HERE = Path(__file__).resolve().parent
MODULE = HERE / "vitess_topo"
PACKAGE = "vitess.io/vitess/go/vt/topo/etcd2topo"
VTCTLDCLIENT = "vitess.io/vitess/go/cmd/vtctldclient"
PORTS_USED = 8  # testfiles.GoVtTopoEtcd2topo*Port: VTPORTSTART .. VTPORTSTART+7
E2E_PORTS = range(20000, 21000)  # etcd's e2e framework's fixed ports (tests/ports.py)

# Test -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build Vitess's tests (go not found)")
    return go


def _package_dir() -> Path:
    done = subprocess.run(
        [_go(), "list", "-f", "{{.Dir}}", PACKAGE],
        cwd=MODULE,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"test": the test binary, "dir": the package's sources, "path-etcd" / "path-petcd":
    each side's PATH dir holding its ``etcd`` and ``vtctldclient``}."""
    base = tmp_path_factory.mktemp("vitess-topo")
    paths = {"test": base / "etcd2topo.test"}
    subprocess.run(
        [_go(), "test", "-c", "-o", str(paths["test"]), PACKAGE],
        cwd=MODULE,
        check=True,
        timeout=1800,
    )
    vtctldclient = base / "vtctldclient"
    subprocess.run(
        [_go(), "build", "-o", str(vtctldclient), VTCTLDCLIENT],
        cwd=MODULE,
        check=True,
        timeout=1800,
    )
    paths["dir"] = _package_dir()
    for kind, binary in (("etcd", ETCD_BIN), ("petcd", PETCD_BIN)):
        paths[f"path-{kind}"] = base / f"path-{kind}"
        paths[f"path-{kind}"].mkdir()
        (paths[f"path-{kind}"] / "etcd").symlink_to(binary)
        (paths[f"path-{kind}"] / "vtctldclient").symlink_to(vtctldclient)
    return paths


def _free_port_block(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now."""
    for _ in range(200):
        start = free_port()
        ports = range(start, start + count)
        if any(p in E2E_PORTS for p in ports):
            continue
        free = True
        for port in ports[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return start
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def run_suite(built: dict[str, Path], kind: str, log: Path) -> dict[str, str]:
    """Test -> "pass" / "fail" / "skip": one run of the package's tests with ``kind``'s
    ``etcd`` first on ``PATH``; the whole output goes to ``log``."""
    argv = [_go(), "tool", "test2json", "-t", str(built["test"])]
    argv += ["-test.v=test2json", "-test.timeout", "20m"]
    env = {
        **os.environ,
        "VTPORTSTART": str(_free_port_block(PORTS_USED)),
        "PATH": f"{built[f'path-{kind}']}:{os.environ.get('PATH', '')}",
        # petcd runs in the package's directory: a relative PYTHONPATH (PYTHONPATH=src) must
        # still name this checkout's sources.
        "PYTHONPATH": os.pathsep.join(
            os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
        ),
    }
    with open(log, "w") as out:
        subprocess.run(
            argv,
            cwd=built["dir"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1500,
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
            results[test] = event["Action"]
    if not results:
        pytest.fail(f"no results against {kind}; see {log}")
    return results


def test_vitess_topo_passes_on_petcd_where_it_passes_on_etcd(
    built: dict[str, Path], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    results = {
        kind: run_suite(built, kind, tmp_path / f"{kind}.json") for kind in ("etcd", "petcd")
    }
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    on_petcd = {t for t in passed if results["petcd"].get(t) == "pass"}
    print(f"Vitess etcd2topo: {len(passed)} tests pass against etcd 3.4, {len(on_petcd)} on petcd")
    assert len(passed) >= 5, results["etcd"]  # the suite did run
    regressions = sorted(t for t in passed - DIFFERENT.keys() if results["petcd"].get(t) != "pass")
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
