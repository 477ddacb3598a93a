"""etcetra's own test suite, run against etcd 3.4 and against petcd (``make test-long``).

Theory of operation: etcetra (Lablup's asyncio client of etcd's v3 API over grpc.aio, under
Backend.AI; 0.1.19 from PyPI) ships ``tests/`` in its source release: puts and gets, prefix
reads and key listings, deletes, transactions with and without compares, a watch of a prefix
from another task, and locks (etcd's v3lock service) held by tasks that contend, with and
without a lease TTL that frees a lock whose holder went away. The tests take a fixture
``etcd`` (an ``EtcdClient``) that the release does not ship (its conftest is left out): the
harness writes the smallest one, ours, from how the tests use it (``etcetra_conftest.py``,
copied in as ``tests/conftest.py``: a client for ``PETCD_ETCETRA_ENDPOINT``, every key under
``/`` deleted after each test). ``pysuite`` installs the release with what its setup.cfg pins
(protobuf 4.25, grpcio 1.62.2; grpcio-tools, only used to generate its code, left out) and
its ``test`` extra (pytest 6.2, pytest-asyncio 0.16, pytest-mock), and runs the suite twice,
each time against a fresh single member of its own: the real etcd, then petcd. Every test
that passes against etcd must pass against petcd, except those listed in ``DIFFERENT`` with
the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ServerProcess
from tests.compat.thirdparty import pysuite

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

HERE = Path(__file__).resolve().parent
RELEASE = "etcetra==0.1.19"
REQUIREMENTS = (
    "protobuf==4.25.3",
    "grpcio==1.62.2",
    "pytest==6.2.5",
    "pytest-asyncio==0.16.0",
    "pytest-mock==3.14.0",
)

# Test -> why it fails against petcd but passes against etcd.
DIFFERENT: dict[str, str] = {}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked release holding ``tests/``, our conftest in)."""
    python, source = pysuite.install(tmp_path_factory.mktemp("etcetra"), RELEASE, REQUIREMENTS)
    shutil.copy(HERE / "etcetra_conftest.py", source / "tests" / "conftest.py")
    return python, source


def test_etcetra_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, Path], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    python, source = suite
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="etcetra")
        try:
            server.start()
            env = {"PETCD_ETCETRA_ENDPOINT": server.endpoint}
            log = tmp_path / f"{kind}.log"
            results[kind] = pysuite.run(python, source, env, "tests", log=log)
        finally:
            server.stop()
    pysuite.compare(results, DIFFERENT, least=9)
