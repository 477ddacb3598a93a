"""The Rust client etcd-rs's own test suite, against three-member clusters of etcd 3.4 and of
petcd (make test-long).

Theory of operation: the crate's source release on crates.io (``etcd-rs`` 1.0.1, checked
against its SHA-256; a client over tonic that balances over all the endpoints it is given)
ships its integration tests: ``tests/kv.rs`` (puts with leases, ``ignore_value`` and
``ignore_lease``, the errors and texts for an empty key and a request over 1.5 MiB, ranges and
deletes of every key with the revisions they expect from a fresh cluster, compaction errors),
``tests/watch.rs`` (prefix watches, two on one stream, cancelled), ``tests/tls.rs`` (a put and
a get over TLS with client certificates) and ``tests/failover.rs`` (puts and gets while members
are stopped and started again: one down, two down and no quorum, all down, a watch that must
see its stream interrupted when every member is gone and a new one once they are back).

Each test sets up a fresh cluster of three members through ``tests/support.rs``, which runs
``make setup-etcd-cluster``, ``start-etcd-node``, ``stop-etcd-node``, ``teardown-etcd-cluster``
and ``etcd-cluster-status`` in the crate's directory: the crate's Makefile runs docker-compose,
which cannot run here. Ours replaces it (``etcd_rs/Makefile``), and runs ``etcd_rs/cluster.py``,
which starts the members as processes at the compose file's addresses, client
``127.0.0.1:N2379`` and peer ``127.0.0.1:N2380`` for ``etcd-N``, stops one as ``docker stop``
does (SIGTERM, SIGKILL after 10 s), starts it again on its data directory, and writes the
certificates ``tests/tls.rs`` reads into ``hack/certs/`` (see its docstring). The ports are
fixed: the harness holds ``LOCK`` and checks them free first.

The crate's tests are built once with cargo (its build script compiles etcd's .proto files
with protoc: grpcio-tools' protoc, through a small wrapper) and run twice, one test at a time,
with etcd 3.4 as the members and with petcd. The crate's CI runs them with ``cargo nextest
--retries 5``: a test that fails is run again alone, ``RETRIES`` more times at most, against
either server alike (a pass on a retry is printed). What must hold: every test passing against
etcd passes against petcd, except those in ``DIFFERENT`` with the reason (none). 13 of 13 pass
against both, none needing a retry in the runs so far. 6 to 8 minutes: the build 1.5, etcd 3
(a member that gets SIGTERM while it leads first hands its leadership over, which takes up to
etcd's request timeout, 7 s, when its peers stop with it: every teardown), petcd 1.5.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, REPO
from tests.compat.thirdparty import rustcrate
from tests.compat.thirdparty.pysuite import fixed_ports

pytestmark = [pytest.mark.long, pytest.mark.timeout(3600)]

CRATE_VERSION = "1.0.1"
CRATE_SHA256 = "ac209f35d6d386385644695eb4edfb1af99637977193e9239ef2d8721c930d25"
TEST_TARGETS = ("kv", "watch", "tls", "failover")
HERE = Path(__file__).resolve().parent / "etcd_rs"
# The compose file's ports: etcd-N's client port N2379 and peer port N2380.
PORTS = tuple(n * 10000 + offset for n in (1, 2, 3) for offset in (2379, 2380))
LOCK = Path("/tmp/petcd-etcd-rs-ports.lock")
RETRIES = 2

DIFFERENT: dict[str, str] = {}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the unpacked crate with its tests built and our Makefile, cargo's environment)."""
    base = tmp_path_factory.mktemp("etcd-rs")
    source = rustcrate.unpack(base, "etcd-rs", CRATE_VERSION, CRATE_SHA256)
    assert "docker-compose" in (source / "Makefile").read_text()
    shutil.copyfile(HERE / "Makefile", source / "Makefile")
    env = {**os.environ, "PROTOC": str(rustcrate.protoc_wrapper(base))}
    argv = [rustcrate.cargo(), "test", "--no-run", "--quiet"]
    for target in TEST_TARGETS:
        argv += ["--test", target]
    subprocess.run(argv, cwd=source, env=env, check=True, timeout=2400)
    return source, env


def _cargo_test(source: Path, env: dict[str, str], target: str, *args: str) -> dict[str, str]:
    done = subprocess.run(
        [rustcrate.cargo(), "test", "--test", target, "--", "--test-threads=1", *args],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    found = re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", done.stdout, re.M)
    assert found, done.stdout[-3000:] + done.stderr[-3000:]
    log = Path(env["PETCD_ETCD_RS_STATE"]) / f"cargo-{target}.log"
    with open(log, "a") as f:
        f.write(done.stdout + done.stderr)
    return dict(found)


def run_suite(source: Path, env: dict[str, str]) -> dict[str, str]:
    """Test name -> "ok" / "FAILED" / "ignored" for each test of the crate's targets."""
    outcomes: dict[str, str] = {}
    for target in TEST_TARGETS:
        for name, outcome in _cargo_test(source, env, target).items():
            for attempt in range(RETRIES):
                if outcome != "FAILED":
                    break
                outcome = _cargo_test(source, env, target, "--exact", name)[name]
                if outcome == "ok":
                    print(f"{target}::{name} passed on retry {attempt + 1}")
            outcomes[f"{target}::{name}"] = outcome
    return outcomes


def _cluster_env(kind: str, state: Path) -> dict[str, str]:
    state.mkdir(parents=True)
    return {
        "PETCD_ETCD_RS_PYTHON": str(REPO / ".venv" / "bin" / "python"),
        "PETCD_ETCD_RS_CLUSTER": str(HERE / "cluster.py"),
        "PETCD_ETCD_RS_PYTHONPATH": f"{REPO}:{REPO / 'src'}",
        "PETCD_ETCD_RS_TARGET": kind,
        "PETCD_ETCD_RS_SRC": str(REPO / "src"),
        "PETCD_ETCD_RS_STATE": str(state),
    }


def test_etcd_rs_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    source, build_env = suite
    results = {}
    with fixed_ports(LOCK, PORTS):
        for kind in ("etcd", "petcd"):
            env = {**build_env, **_cluster_env(kind, tmp_path / kind)}
            try:
                results[kind] = run_suite(source, env)
            finally:  # whatever a failed test left running
                subprocess.run(
                    ["make", "teardown-etcd-cluster"], cwd=source, env=env, check=True, timeout=60
                )
    for kind, outcomes in results.items():  # shown with -s or -rP: the figures a report quotes
        passed = sum(outcome == "ok" for outcome in outcomes.values())
        print(f"{kind}: {passed} of {len(outcomes)} passed")
    passed_on_etcd = {t for t, outcome in results["etcd"].items() if outcome == "ok"}
    assert len(passed_on_etcd) >= 12, results["etcd"]
    regressions = sorted(
        t for t in passed_on_etcd - set(DIFFERENT) if results["petcd"].get(t) != "ok"
    )
    assert regressions == [], {t: results["petcd"].get(t) for t in regressions}
    for t in DIFFERENT:  # still different: else the entry is out of date
        assert results["petcd"].get(t) != "ok", t
