"""HashiCorp Vault's etcd storage backend tests, run against etcd 3.4 and against petcd
(``make test-long``).

Theory of operation: Vault's ``etcd`` storage backend (``github.com/hashicorp/vault``
v1.21.4, ``physical/etcd``, etcd's Go client 3.6) keeps Vault's encrypted data in etcd and
elects the active node with etcd's ``concurrency`` package: a session (a lease kept alive)
and a mutex (a key under the lock prefix, the lowest create revision wins, waiters watch the
key before theirs), the leader's value put with the session's lease. Its test
(``TestEtcd3Backend``) runs Vault's generic backend checks (``ExerciseBackend``: put, get,
delete, nested entries listed as directories, deleted with and without their children;
``ExerciseBackend_ListPrefix``;
``ExerciseHABackend``: two backends contending for the lock, a lock attempt cancelled, the
lock passed on at unlock) through two clients that log in as ``root`` / ``insecure``. It
finds the server at ``$ETCD_ADDR``; instead of the docker container it otherwise starts,
the harness starts a fresh single member and turns authentication on as that helper does
(role and user ``root``, with the real etcdctl).

``vault_etcd/`` is a Go module pinning Vault; the test binary is built once from the module
cache and run against the real etcd, then against petcd. What must hold: every test that
passes against etcd passes against petcd, except those in ``DIFFERENT`` with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

HERE = Path(__file__).resolve().parent
MODULE = HERE / "vault_etcd"
PACKAGE = "github.com/hashicorp/vault/physical/etcd"

# Test -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build Vault's tests (go not found)")
    return go


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the test binary, the package's sources)."""
    binary = tmp_path_factory.mktemp("vault-etcd") / "etcd.test"
    subprocess.run(
        [_go(), "test", "-c", "-o", str(binary), PACKAGE], cwd=MODULE, check=True, timeout=1800
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


def _enable_auth(server: ServerProcess) -> None:
    """What Vault's test helper does to the etcd it starts: a root user, auth on."""
    for argv in (
        ("role", "add", "root"),
        ("user", "add", "root:insecure"),
        ("user", "grant-role", "root", "root"),
        ("auth", "enable"),
    ):
        subprocess.run(
            [ETCDCTL_BIN, "--endpoints", server.endpoint, *argv],
            env={**os.environ, "ETCDCTL_API": "3"},
            check=True,
            capture_output=True,
            timeout=60,
        )


def run_suite(built: tuple[Path, Path], url: str, log: Path) -> dict[str, str]:
    """Test -> "pass" / "fail" / "skip" for one run against ``url``; output to ``log``."""
    binary, source = built
    argv = [_go(), "tool", "test2json", "-t", str(binary), "-test.v=test2json"]
    argv += ["-test.timeout", "10m"]
    with open(log, "w") as out:
        subprocess.run(
            argv,
            cwd=source,
            env={**os.environ, "ETCD_ADDR": url},
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
        pytest.fail(f"no results from {url}; see {log}")
    return results


def test_vault_etcd_backend_passes_on_petcd_where_it_passes_on_etcd(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed (make etcd)")
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="vault")
        try:
            server.start()
            _enable_auth(server)
            results[kind] = run_suite(built, server.client_url, tmp_path / f"{kind}.json")
        finally:
            server.stop()
    passed = {t for t, r in results["etcd"].items() if r == "pass"}
    assert "TestEtcd3Backend" in passed, results["etcd"]  # the backend's test did run
    regressions = sorted(t for t in passed - DIFFERENT.keys() if results["petcd"].get(t) != "pass")
    assert regressions == [], f"pass against etcd, not against petcd: {regressions}"
    stale = sorted(t for t in DIFFERENT if results["petcd"].get(t) == "pass")
    assert not stale, f"listed in DIFFERENT but pass against petcd now: {stale}"
