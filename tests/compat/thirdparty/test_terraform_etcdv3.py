"""Terraform's etcd v3 state backend tests, run against etcd 3.4 and against petcd
(``make test-long``).

Theory of operation: Terraform (``github.com/hashicorp/terraform`` v1.2.9, the last release
with the ``etcdv3`` backend; etcd's Go client of the 3.4 era, ``go.etcd.io/etcd/clientv3``
on gRPC 1.27) keeps each workspace's state in one key below a prefix. A state is read with a
plain range and written by a transaction that compares the key's mod revision with the one
last read (0: the key must not exist yet) and then puts and reads it back; workspaces are
listed by a keys-only prefix range and deleted by key. A state is locked with the client's
``concurrency`` mutex: a session (a lease granted and kept alive), a waiter key created
under the lease, a range sorted by create revision for the owner and a watch on the key
ahead that waits for its deletion, given up after two seconds; the lock's description is a
key of its own, deleted on unlock, before the session's lease is revoked. The package's
tests (``TestBackend`` runs Terraform's generic backend suite: workspaces, state round
trips, two backends locking the same state, force-unlock; ``TestRemoteClient``,
``TestEtcdv3_stateLock``, ``TestEtcdv3_destroyLock``, ``TestBackend_lockDisabled``) run
when ``$TF_ETCDV3_TEST`` is set, against ``$TF_ETCDV3_ENDPOINTS``.

``terraform_etcdv3/`` is a Go module pinning Terraform (its go.sum holds Terraform's own
sums). The package lives under Terraform's ``internal/`` and Terraform's go.mod pins gRPC
1.27 with a ``replace`` (the old client does not build on a newer one), which only holds in
Terraform's own module: the test binary is built inside Terraform's directory in the module
cache (``-mod=readonly``: its go.sum checks every dependency). It runs against a fresh real
etcd 3.4 on a free port, then a fresh petcd. What must hold: every test that passes against
etcd passes against petcd, except those in ``DIFFERENT`` with the reason, and a listed test
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

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

HERE = Path(__file__).resolve().parent
MODULE = HERE / "terraform_etcdv3"
TERRAFORM = "github.com/hashicorp/terraform"
PACKAGE = "./internal/backend/remote-state/etcdv3"

# Test -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build Terraform's tests (go not found)")
    return go


def _terraform_dir() -> Path:
    """Terraform's sources in the module cache, at the version ``MODULE`` pins."""
    done = subprocess.run(
        [_go(), "mod", "download", "-json", TERRAFORM],
        cwd=MODULE,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return Path(json.loads(done.stdout)["Dir"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the test binary, the package's sources)."""
    binary = tmp_path_factory.mktemp("terraform-etcdv3") / "etcdv3.test"
    terraform = _terraform_dir()
    subprocess.run(
        [_go(), "test", "-c", "-mod=readonly", "-o", str(binary), PACKAGE],
        cwd=terraform,
        check=True,
        timeout=1800,
    )
    return binary, terraform / PACKAGE


def run_suite(built: tuple[Path, Path], endpoint: str, log: Path) -> dict[str, str]:
    """Test -> "pass" / "fail" / "skip" for one run against ``endpoint``; the whole output
    goes to ``log``."""
    binary, source = built
    argv = [_go(), "tool", "test2json", "-t", str(binary), "-test.v=test2json"]
    argv += ["-test.timeout", "10m"]
    env = {**os.environ, "TF_ETCDV3_TEST": "1", "TF_ETCDV3_ENDPOINTS": endpoint}
    with open(log, "w") as out:
        subprocess.run(
            argv,
            cwd=source,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
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
        pytest.fail(f"no results; see {log}")
    return results


def test_terraform_etcdv3_backend_passes_on_petcd_where_it_passes_on_etcd(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="terraform")
        try:
            server.start()
            results[kind] = run_suite(built, server.endpoint, tmp_path / f"{kind}.json")
        finally:
            server.stop()
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    on_petcd = {t for t in passed if results["petcd"].get(t) == "pass"}
    print(f"Terraform etcdv3: {len(passed)} tests pass against etcd 3.4, {len(on_petcd)} on petcd")
    assert {"TestBackend", "TestEtcdv3_stateLock"} <= passed, results["etcd"]  # the suite did run
    regressions = sorted(t for t in passed - DIFFERENT.keys() if results["petcd"].get(t) != "pass")
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
