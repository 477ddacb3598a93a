"""python-etcd3's own test suite, run against etcd 3.4 and against petcd (``make test-long``).

Theory of operation: the suite ships in python-etcd3's source release on PyPI (``etcd3``
0.12.0, the last one). It is installed into a virtualenv of its own with the old protobuf its
generated code needs, and run twice, each time against a fresh single member of its own
(``PYTHON_ETCD_HTTP_URL``; the suite's fixtures delete every key under ``/``): once against
the real etcd and once against petcd. Some of its tests fail against any single etcd 3.4 on
this machine (they expect three members, an etcd on 127.0.0.1:2379, an older hypothesis):
what must hold is that every test passing against etcd passes against petcd, except those
listed in ``DIFFERENT`` with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess

pytestmark = pytest.mark.long

RELEASE = "etcd3==0.12.0"
# Its generated code needs protobuf 3's pure-Python implementation; grpcio any recent one.
REQUIREMENTS = ("protobuf==3.20.3", "grpcio", "tenacity", "six", "pytest", "mock", "hypothesis")

DIFFERENT = {
    # The suite checks a snapshot with the real etcdctl's `snapshot status`, which reads
    # bbolt files; petcd's snapshot is its LMDB backend (docs/server.md).
    "tests/test_etcd3.py::TestEtcd3::test_snapshot",
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked release holding ``tests/``)."""
    base = tmp_path_factory.mktemp("python-etcd3")
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    python = base / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *REQUIREMENTS], check=True, timeout=600)
    download = [str(python), "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    download += ["--no-deps", "--no-binary", ":all:", "-d", str(base), RELEASE]
    subprocess.run(download, check=True, timeout=300)
    (archive,) = base.glob("etcd3-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(base, filter="data")
    (source,) = (p for p in base.glob("etcd3-*") if p.is_dir())
    subprocess.run([*pip, "--no-deps", str(source)], check=True, timeout=300)
    return python, source


def run_suite(python: Path, source: Path, server: ServerProcess) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHON_ETCD_HTTP_URL": f"http://{server.endpoint}",
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        "PATH": f"{Path(ETCDCTL_BIN).parent}:{os.environ.get('PATH', '')}",
        "ETCDCTL_API": "3",
    }
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    outcomes = {}
    for line in done.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|SKIPPED)(?: \[\d+\])? (\S+)", line)
        if m:
            outcomes.setdefault(m.group(2), m.group(1))
    assert outcomes, done.stdout[-3000:] + done.stderr[-3000:]
    return outcomes


def test_python_etcd3_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, Path], tmp_path: Path
) -> None:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed (make etcd)")
    python, source = suite
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="thirdparty")
        try:
            server.start()
            results[kind] = run_suite(python, source, server)
        finally:
            server.stop()
    passed_on_etcd = {t for t, outcome in results["etcd"].items() if outcome == "PASSED"}
    assert len(passed_on_etcd) >= 50, results["etcd"]
    regressions = sorted(
        t for t in passed_on_etcd - DIFFERENT if results["petcd"].get(t) != "PASSED"
    )
    assert regressions == [], {t: results["petcd"].get(t) for t in regressions}
    for t in DIFFERENT:  # still different: else the entry is out of date
        assert results["petcd"].get(t) != "PASSED", t
