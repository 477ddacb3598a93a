"""Shared by the harnesses of Python client libraries' own test suites (``make test-long``).

A library's source release from PyPI ships its tests: ``install`` puts the release and the
packages its tests need into a virtualenv of their own, ``run`` runs its pytest suite against
one server and returns each test's outcome, and ``compare`` states the rule every such harness
checks: a test that passes against the real etcd passes against petcd, unless it is listed as
different (with its reason), and a listed test must still differ. ``fixed_ports`` holds the
loopback ports a suite hard-codes (under a lock file, as other harnesses taking them do).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.compat.servers import ETCDCTL_BIN


def install(
    base: Path, release: str, requirements: Iterable[str], env: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked source release holding its tests); ``env`` is
    added to the environment of the release's own installation."""
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    python = base / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True, timeout=600)
    download = [str(python), "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    download += ["--no-deps", "--no-binary", ":all:", "-d", str(base), release]
    subprocess.run(download, check=True, timeout=300)
    name = release.split("==")[0]
    (archive,) = base.glob(f"{name}-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(base, filter="data")
    (source,) = (p for p in base.glob(f"{name}-*") if p.is_dir())
    subprocess.run(
        [*pip, "--no-deps", str(source)], check=True, timeout=300, env={**os.environ, **(env or {})}
    )
    return python, source


def run(
    python: Path, source: Path, env: dict[str, str], *args: str, log: Path | None = None
) -> dict[str, str]:
    """Test id -> PASSED / FAILED / ERROR / SKIPPED for one run of the suite in ``source``
    (``env`` added to this process's environment; the real etcdctl first on PATH). With
    ``log``, the run's whole output is written there. The suite runs in a process group of its
    own, killed when it is over: servers a suite starts itself and leaves behind (killed by
    the timeout, say) go with it."""
    full = {
        **os.environ,
        "PATH": f"{Path(ETCDCTL_BIN).parent}:{os.environ.get('PATH', '')}",
        "ETCDCTL_API": "3",
        **env,
    }
    full.pop("PYTHONPATH", None)
    suite = subprocess.Popen(
        [str(python), "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *args],
        cwd=source,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = suite.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(suite.pid, signal.SIGKILL)
        suite.wait()
    done = subprocess.CompletedProcess(suite.args, suite.returncode, stdout, stderr)
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    outcomes: dict[str, str] = {}
    for line in done.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|SKIPPED)(?: \[\d+\])? (\S+)", line)
        if m:
            outcomes.setdefault(m.group(2), m.group(1))
    assert outcomes, done.stdout[-3000:] + done.stderr[-3000:]
    return outcomes


def compare(results: dict[str, dict[str, str]], different: Iterable[str], least: int) -> None:
    """The rule, given each server's outcomes (``results["etcd"]``, ``results["petcd"]``)."""
    passed_on_etcd = {t for t, outcome in results["etcd"].items() if outcome == "PASSED"}
    for kind, outcomes in results.items():  # shown with -s or -rP: the figures a report quotes
        passed = sum(outcome == "PASSED" for outcome in outcomes.values())
        print(f"{kind}: {passed} of {len(outcomes)} passed")
    assert len(passed_on_etcd) >= least, results["etcd"]
    different = set(different)
    regressions = sorted(
        t for t in passed_on_etcd - different if results["petcd"].get(t) != "PASSED"
    )
    assert regressions == [], {t: results["petcd"].get(t) for t in regressions}
    for t in different:  # still different: else the entry is out of date
        assert results["petcd"].get(t) != "PASSED", t


@contextlib.contextmanager
def fixed_ports(lock: Path, ports: Iterable[int]) -> Iterator[None]:
    """The loopback ``ports``, ours while the block runs: ``lock`` held (``flock``), and each
    port checked free (failing at once when another program has it)."""
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # As the servers bind: connections of an earlier run may linger in TIME_WAIT.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise AssertionError(f"port {port} is taken by another program: {exc}") from exc
        yield
