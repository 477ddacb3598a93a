"""Dapr's state store conformance tests for its etcd components, run against etcd 3.4 and
against petcd (``make test-long``).

Theory of operation: Dapr's ``state.etcd`` component (``github.com/dapr/components-contrib``
v1.18.0, etcd's Go client 3.6; versions ``v1`` and ``v2``, which differ in how values are
encoded) keeps applications' and actors' state in etcd under a key prefix: ETags are mod
revisions compared in transactions, TTLs are leases granted per write, first-write-wins is a
transaction on a key's absence, and a multi-operation transaction (actor state) is one etcd
transaction of nested transactions (``OpTxn``), each with its own ETag comparison, up to 128
of them. Dapr's conformance suite for state stores (``tests/conformance``, build tag
``conftests``; ``TestStateConformance/etcd.v1`` and ``/etcd.v2``) checks what every store must
do: get, set, delete, bulk get, set and delete, ETags right and wrong, first write, TTLs
expiring, transactions, key listing.

The components' configuration (``tests/config/state/etcd/*/statestore.yaml``) names the
endpoint ``localhost:12379``; the test reads it from ``../config/state`` relative to its
working directory. The harness runs it in a small tree: the package's files linked, a copy of
``tests/config`` with that endpoint replaced by a free loopback port. ``dapr_state/`` is a Go
module pinning components-contrib (with the replace directives of its own go.mod, which a
dependency's do not carry); the test binary is built once from the module cache and run
against a fresh real etcd 3.4, then a fresh petcd. Every subtest that passes against etcd
must pass against petcd, except those in ``DIFFERENT`` with the reason, and a listed one
still differs.
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
MODULE = HERE / "dapr_state"
PACKAGE = "github.com/dapr/components-contrib/tests/conformance"
ENDPOINT = "localhost:12379"  # in tests/config/state/etcd/*/statestore.yaml
RUN = "^TestStateConformance$/^etcd\\.v[12]$"

# Test ("TestStateConformance/etcd.v1/...") -> why it fails against petcd but passes against
# etcd.
DIFFERENT: dict[str, str] = {}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build Dapr's tests (go not found)")
    return go


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(the test binary, the working directory it runs in, the port its config names)."""
    base = tmp_path_factory.mktemp("dapr-state")
    binary = base / "conformance.test"
    subprocess.run(
        [_go(), "test", "-c", "-tags", "conftests", "-o", str(binary), PACKAGE],
        cwd=MODULE,
        check=True,
        timeout=3000,
    )
    done = subprocess.run(
        [_go(), "list", "-f", "{{.Dir}}", PACKAGE],
        cwd=MODULE,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    source = Path(done.stdout.strip())
    work = base / "tree" / "conformance"
    work.mkdir(parents=True)
    for entry in source.iterdir():
        (work / entry.name).symlink_to(entry)
    config = base / "tree" / "config"
    shutil.copytree(source.parent / "config", config)
    port = free_port()
    for path in (config / "state" / "etcd").rglob("*.yaml"):
        path.chmod(0o644)
        text = path.read_text()
        assert ENDPOINT in text, path
        path.write_text(text.replace(ENDPOINT, f"127.0.0.1:{port}"))
    return binary, work, port


def run_suite(built: tuple[Path, Path, int], log: Path) -> dict[str, str]:
    """(Sub)test -> "pass" / "fail" / "skip" for one run; the whole output goes to ``log``."""
    binary, work, _ = built
    argv = [_go(), "tool", "test2json", "-t", str(binary), "-test.v=test2json"]
    argv += ["-test.timeout", "20m", "-test.run", RUN]
    with open(log, "w") as out:
        subprocess.run(
            argv, cwd=work, stdout=out, stderr=subprocess.STDOUT, timeout=1500, check=False
        )
    results: dict[str, str] = {}
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        test = event.get("Test")
        if test and event.get("Action") in ("pass", "fail", "skip"):
            results[test] = event["Action"]
    if not results:
        pytest.fail(f"no results; see {log}")
    return results


def test_dapr_state_conformance_passes_on_petcd_where_it_passes_on_etcd(
    built: tuple[Path, Path, int], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="dapr", client_port=built[2])
        try:
            server.start()
            results[kind] = run_suite(built, tmp_path / f"{kind}.json")
        finally:
            server.stop()
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    on_petcd = {t for t in passed if results["petcd"].get(t) == "pass"}
    print(f"Dapr state conformance: {len(passed)} pass against etcd 3.4, {len(on_petcd)} on petcd")
    assert {
        "TestStateConformance/etcd.v1",
        "TestStateConformance/etcd.v2",
    } <= passed, results["etcd"]
    regressions = sorted(passed - on_petcd - DIFFERENT.keys())
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
