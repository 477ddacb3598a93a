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
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess
from tests.compat.thirdparty import pysuite

pytestmark = pytest.mark.long

RELEASE = "etcd3==0.12.0"
# Its generated code needs protobuf 3's pure-Python implementation; grpcio any recent one.
REQUIREMENTS = ("protobuf==3.20.3", "grpcio", "tenacity", "six", "pytest", "mock", "hypothesis")

# Its test_snapshot passes since petcd's Snapshot RPC sends etcd's format
# (docs/enhancements/0012-snapshot-rpc-bbolt.md).
DIFFERENT: set[str] = set()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked release holding ``tests/``)."""
    return pysuite.install(tmp_path_factory.mktemp("python-etcd3"), RELEASE, REQUIREMENTS)


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
            env = {
                "PYTHON_ETCD_HTTP_URL": f"http://{server.endpoint}",
                "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            }
            results[kind] = pysuite.run(python, source, env, "tests")
        finally:
            server.stop()
    pysuite.compare(results, DIFFERENT, least=50)
