"""etcd's own robustness tests (``go.etcd.io/etcd/tests/v3/robustness`` 3.6) against petcd
(``make test-long``): client histories recorded under injected faults, checked for
linearizability (porcupine) and for the watch guarantees.

Theory of operation: ``etcd_robustness/`` is a Go module pinning etcd's test module at 3.6.16
and building the real etcd 3.6.16 (``cmd/etcd``, ``cmd/etcdctl``). Its ``robustness_test.go``
drives the framework's exported packages (traffic, failpoint, client, validate, report) over
a fixed matrix, ``TestRobustness/<traffic>/<cluster>/<failpoint>``: traffic EtcdHighTraffic
(puts, txns, ranges), EtcdTrafficDeleteLeases (with deletes, leases and progress requests on
the watches) and KubernetesHighTraffic (optimistic-concurrency txns and list/watch), each on
one member with ``kill -9`` and on three members (peer TLS, the framework's peer proxy) with
``kill -9``, a peer blackhole, a blackhole until the member needs a snapshot, peer delay, peer
drop and member replace (remove, wipe, add back). etcd's own ``TestRobustnessExploratory``
is not used: every one of its clusters needs gofail (a ``GOFAIL_HTTP`` endpoint that only
etcd builds with failpoints compiled in have) and is skipped without it, and it picks its
failpoint at random. The gofail failpoints (panics inside etcd's raft, backend and
compaction code) cannot apply to petcd.

The framework reads the requests persisted in each member's WAL (etcd's format) to validate
the watches: ``etcd_robustness/waldump.py`` prints a petcd member's log, which the Go side
writes into an etcd-format WAL for the framework's own reader.

The cases run once with ``<bin-dir>/etcd`` being petcd; every case that fails there runs
again on the real etcd 3.6.16: one that fails on both is the machine's (reported, not
failed). Every other failure must be listed in ``DIFFERENT`` with its reason. The framework
binds fixed ports from 20000 on: the run holds ``/tmp/e2e.lock`` (as the e2e suite's users
do) so that no other e2e run on the machine uses them at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.long, pytest.mark.timeout(2400)]  # about 10 minutes here

MODULE = Path(__file__).resolve().parent / "etcd_robustness"
REPO = Path(__file__).resolve().parents[3]
E2E_LOCK = "/tmp/e2e.lock"

# Test name (or a prefix of subtests) -> why it fails on petcd and not on etcd.
DIFFERENT: dict[str, str] = {}


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        pytest.fail("the Go toolchain is needed to build etcd's robustness tests (go not found)")
    return go


@contextlib.contextmanager
def _e2e_ports() -> Iterator[None]:
    with open(E2E_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def bin_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"petcd": bin dir, "etcd": bin dir} for the framework's ``-bin-dir``."""
    base = tmp_path_factory.mktemp("etcd-robustness")
    built = base / "built"
    for name in ("etcd", "etcdctl"):
        subprocess.run(
            [_go(), "build", "-o", str(built / name), f"./cmd/{name}"],
            cwd=MODULE,
            check=True,
            timeout=1200,
        )
    dirs = {"petcd": base / "petcd", "etcd": base / "etcd"}
    for d in dirs.values():
        d.mkdir()
        (d / "etcdctl").symlink_to(built / "etcdctl")
    (dirs["etcd"] / "etcd").symlink_to(built / "etcd")
    # The framework passes its processes no environment but ETCD_*, ETCDCTL_* and PATH: the
    # script names this checkout's sources itself.
    script = dirs["petcd"] / "etcd"
    script.write_text(
        f'#!/bin/sh\nPYTHONPATH={REPO / "src"} exec {sys.executable} -m petcd.server.main "$@"\n'
    )
    script.chmod(0o755)
    return dirs


def _fixtures() -> str:
    """etcd's test certificates (the module's ``fixtures`` dir) for the peer TLS clusters.

    The module is downloaded first: ``go list -m`` names no directory for a module that is not
    in the module cache yet (a fresh machine, before ``go test`` fetched it), and a relative
    ``fixtures`` would fail every peer-TLS cluster."""
    module = "go.etcd.io/etcd/tests/v3"
    subprocess.run(
        [_go(), "mod", "download", module], cwd=MODULE, check=True, capture_output=True, timeout=600
    )
    module_dir = subprocess.run(
        [_go(), "list", "-m", "-f", "{{.Dir}}", module],
        cwd=MODULE,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.strip()
    fixtures = Path(module_dir) / "fixtures"
    if not module_dir or not (fixtures / "server.crt").exists():
        pytest.fail(f"etcd's test certificates not found (module dir {module_dir!r})")
    return str(fixtures)


def run_robustness(
    bin_dir: Path, results_dir: Path, petcd: bool, only: Collection[str] = ()
) -> dict[str, str]:
    """Test name -> "pass" / "fail" / "skip" for one run of TestRobustness (``only``: these
    subtests, "TestRobustness/<traffic>/<cluster>/<failpoint>")."""
    levels = [sorted({n.split("/")[i] for n in only}) for i in (1, 2, 3)]
    pattern = "^TestRobustness$"
    if only:  # -run matches level by level: the cross product of the levels, a superset
        pattern += "".join("/^(" + "|".join(level) + ")$" for level in levels)
    argv = [_go(), "test", ".", "-count=1", "-json", "-timeout", "40m", "-run", pattern]
    argv += ["-args", f"-bin-dir={bin_dir}", f"-cert-dir={_fixtures()}"]
    env = {**os.environ, "RESULTS_DIR": str(results_dir)}
    if petcd:
        argv.append(f"-petcd-waldump={sys.executable} {MODULE / 'waldump.py'}")
        env["PYTHONPATH"] = str(REPO / "src")
    with _e2e_ports():
        done = subprocess.run(
            argv, cwd=MODULE, env=env, capture_output=True, text=True, timeout=2700
        )
    results: dict[str, str] = {}
    for line in done.stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        test = ev.get("Test")
        if test and ev.get("Action") in ("pass", "fail", "skip"):
            results[test] = ev["Action"]
        elif test and ev.get("Action") == "output" and "logger.go" not in ev.get("Output", ""):
            print(f"{test}: {ev['Output']}", end="")  # the framework's errors, not its log
    if not results:
        pytest.fail(f"no robustness results: {done.stderr[-2000:]}{done.stdout[-2000:]}")
    return results


def _listed(test: str) -> bool:
    """``test`` or a test it is a subtest of is in ``DIFFERENT``."""
    parts = test.split("/")
    return any("/".join(parts[:i]) in DIFFERENT for i in range(1, len(parts) + 1))


def _cases(results: dict[str, str], action: str) -> set[str]:
    """The cases (``TestRobustness/<traffic>/<cluster>/<failpoint>``) with that result."""
    return {t for t, r in results.items() if r == action and t.count("/") == 3}


def test_etcd_robustness_passes_on_petcd(
    bin_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    on_petcd = run_robustness(bin_dirs["petcd"], tmp_path_factory.mktemp("petcd"), petcd=True)
    failed = _cases(on_petcd, "fail")
    passed = _cases(on_petcd, "pass")
    if on_petcd.get("TestRobustness") == "fail" and not failed:
        failed = {"TestRobustness"}  # a panic ends the run without a case's result
    suspects = {t for t in failed if not _listed(t)}
    cases = {t for t in suspects if t.count("/") == 3}
    on_etcd = {}
    if cases:
        on_etcd = run_robustness(
            bin_dirs["etcd"], tmp_path_factory.mktemp("etcd"), petcd=False, only=cases
        )
    machine = _cases(on_etcd, "fail")
    print(f"robustness on petcd: {len(passed)} passed, {sorted(failed)} failed; on etcd too: "
          f"{sorted(machine)}; skipped: {sorted(_cases(on_petcd, 'skip'))}")  # fmt: skip
    assert len(passed) >= 15, sorted(passed)  # the matrix did run
    unexplained = suspects - machine
    assert not unexplained, (
        f"failed on petcd, passed on etcd 3.6.16 and not in DIFFERENT: {sorted(unexplained)}"
    )
