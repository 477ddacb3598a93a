"""Terraform's etcd state backends' tests, run against etcd 3.4 and against petcd
(``make test-long``).

Theory of operation: Terraform (``github.com/hashicorp/terraform`` v1.2.9, the last release
with its etcd backends) keeps each workspace's state in etcd. The ``etcdv3`` backend (etcd's
Go client of the 3.4 era, ``go.etcd.io/etcd/clientv3`` on gRPC 1.27, older than any other
suite's) keeps a state in one key below a prefix: read with a plain range, written by a
transaction that compares the key's mod revision with the one last read (0: the key must not
exist yet) and then puts it and reads it back; workspaces are listed by a keys-only prefix
range and deleted by key. A state is locked with the client's ``concurrency`` mutex: a
session (a lease granted and kept alive), a waiter key created under the lease, a range
sorted by create revision for the owner and a watch on the key ahead that waits for its
deletion, given up after two seconds; the lock's description is a key of its own, deleted on
unlock, before the session's lease is revoked. Its tests (``TestBackend`` runs Terraform's
generic backend suite: workspaces, state round trips, two backends locking the same state,
force-unlock; ``TestRemoteClient``, ``TestEtcdv3_stateLock``, ``TestEtcdv3_destroyLock``,
``TestBackend_lockDisabled``) run when ``$TF_ETCDV3_TEST`` is set, against
``$TF_ETCDV3_ENDPOINTS``. The older ``etcdv2`` backend speaks etcd's v2 API
(``github.com/coreos/etcd/client``: a quorum get, a set and a delete of one key over HTTP, the
v2 "key not found" error); its test runs against ``$ETCD_ENDPOINT``, so both servers start
with ``--enable-v2``.

``terraform_etcd/`` is a Go module pinning Terraform (its go.sum holds Terraform's own sums).
The packages live under Terraform's ``internal/`` and Terraform's go.mod pins gRPC 1.27 with
a ``replace`` (the old client does not build on a newer one), which only holds in Terraform's
own module: the test binaries are built inside Terraform's directory in the module cache
(``-mod=readonly``: its go.sum checks every dependency). They run, one package after another,
against a fresh real etcd 3.4 on a free port, then a fresh petcd. What must hold: every test
that passes against etcd passes against petcd, except those in ``DIFFERENT`` with the reason,
and a listed test still differs.
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
MODULE = HERE / "terraform_etcd"
TERRAFORM = "github.com/hashicorp/terraform"
PACKAGES = ("internal/backend/remote-state/etcdv3", "internal/backend/remote-state/etcdv2")

# Test ("package/TestName") -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


@dataclass
class V2ServerProcess(ServerProcess):
    """A server that also serves etcd's v2 API (the ``etcdv2`` backend speaks it)."""

    def command(self) -> list[str]:
        return [*super().command(), "--enable-v2"]


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
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Package -> (its test binary, its sources)."""
    base = tmp_path_factory.mktemp("terraform-etcd")
    terraform = _terraform_dir()
    packages = {}
    for package in PACKAGES:
        binary = base / (Path(package).name + ".test")
        subprocess.run(
            [_go(), "test", "-c", "-mod=readonly", "-o", str(binary), f"./{package}"],
            cwd=terraform,
            check=True,
            timeout=1800,
        )
        packages[package] = (binary, terraform / package)
    return packages


def run_suites(
    built: dict[str, tuple[Path, Path]], server: ServerProcess, log_dir: Path
) -> dict[str, str]:
    """Test ("package/TestName") -> "pass" / "fail" / "skip" for one run of every package
    against ``server``; each package's output goes to a log in ``log_dir``."""
    env = {
        **os.environ,
        "TF_ETCDV3_TEST": "1",
        "TF_ETCDV3_ENDPOINTS": server.endpoint,
        "ETCD_ENDPOINT": server.client_url,
    }
    results: dict[str, str] = {}
    for package, (binary, source) in built.items():
        name = Path(package).name
        log = log_dir / f"{name}.json"
        argv = [_go(), "tool", "test2json", "-t", str(binary), "-test.v=test2json"]
        argv += ["-test.timeout", "10m"]
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
        found = 0
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            test = event.get("Test")
            if test and "/" not in test and event.get("Action") in ("pass", "fail", "skip"):
                results[f"{name}/{test}"] = event["Action"]
                found += 1
        if not found:
            pytest.fail(f"no results for {package}; see {log}")
    return results


def test_terraform_etcd_backends_pass_on_petcd_where_they_pass_on_etcd(
    built: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    results = {}
    for kind in ("etcd", "petcd"):
        server = V2ServerProcess(kind, tmp_path / kind / "data", name="terraform")
        log_dir = tmp_path / f"{kind}-logs"
        log_dir.mkdir()
        try:
            server.start()
            results[kind] = run_suites(built, server, log_dir)
        finally:
            server.stop()
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    on_petcd = {t for t in passed if results["petcd"].get(t) == "pass"}
    print(f"Terraform etcd: {len(passed)} tests pass against etcd 3.4, {len(on_petcd)} on petcd")
    ran = {"etcdv3/TestBackend", "etcdv3/TestEtcdv3_stateLock", "etcdv2/TestEtcdClient"}
    assert ran <= passed, results["etcd"]  # the suites did run against the server
    regressions = sorted(t for t in passed - DIFFERENT.keys() if results["petcd"].get(t) != "pass")
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
