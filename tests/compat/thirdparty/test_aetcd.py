"""aetcd's own test suite, run against etcd 3.4 and against petcd (``make test-long``).

Theory of operation: aetcd (an asyncio etcd client; 1.0.0 from PyPI) ships its tests in its
source release. ``pysuite`` installs the release with the test packages it pins into a
virtualenv of its own and runs its suite twice, each time against a fresh single member of
its own (``TEST_ETCD_HTTP_URL``; its fixtures delete every key after each test, with the real
etcdctl): once against the real etcd and once against petcd. The suite's unit tests (mocks)
pass on both alike; its integration tests (KV, txn, watch, leases, locks, members,
maintenance, auth) are what is compared. Every test that passes against etcd must pass
against petcd, except those listed in ``DIFFERENT`` with the reason. (``test_auth`` fails
against a fresh etcd too: it expects a root user that it does not create.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess
from tests.compat.thirdparty import pysuite

pytestmark = pytest.mark.long

RELEASE = "aetcd==1.0.0"
# Its dependencies as its pyproject bounds them, and the versions its "test" extra pins
# (pytest-cov left out: coverage is not run).
REQUIREMENTS = (
    "grpcio>1.66.0,<2",
    "protobuf>4,<8",
    "pytest==9.0.3",
    "pytest-asyncio==1.3.0",
    "pytest-mock==3.15.1",
)

# Its test_snapshot passes since petcd's Snapshot RPC sends etcd's format
# (docs/enhancements/0012-snapshot-rpc-bbolt.md).
DIFFERENT: set[str] = set()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked release holding ``tests/``)."""
    return pysuite.install(tmp_path_factory.mktemp("aetcd"), RELEASE, REQUIREMENTS)


def test_aetcd_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, Path], tmp_path: Path
) -> None:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed (make etcd)")
    python, source = suite
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="aetcd")
        try:
            server.start()
            env = {"TEST_ETCD_HTTP_URL": server.client_url}
            # Its pyproject adds coverage options (pytest-cov is not installed): cleared.
            results[kind] = pysuite.run(python, source, env, "-o", "addopts=", "tests")
        finally:
            server.stop()
    pysuite.compare(results, DIFFERENT, least=60)
