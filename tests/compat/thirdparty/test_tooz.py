"""tooz's own coordination tests, run against etcd 3.4 and against petcd (``make test-long``).

Theory of operation: tooz (9.1.0 from PyPI) is OpenStack's coordination library (Cinder,
Designate, Octavia, Ironic ... take their distributed locks, groups, leaders and hash rings
from it); its ``etcd3+http://`` driver keeps them in etcd through the JSON gateway, with
etcd3gw: members and groups as keys under prefixes bound to a membership lease refreshed by
heartbeats, locks as transactions that put a key with a lease of their own only if its
version is 0 and delete it only if it still holds the owner's value, lock waits through
watches, leases found expired and granted again. Its source release ships its generic
coordination suite (``tooz/tests/test_coordination.py``: groups, members, capabilities,
leaders, locks shared between coordinators and processes, heartbeats, ``tooz.partitioner``
on top), which runs against the backend named by ``TOOZ_TEST_URL``. ``pysuite`` installs the
release with the packages its requirements files name into a virtualenv of its own (the
suite's module imports every driver: their client packages too), and runs the suite twice,
each time against a fresh single member of its own: the real etcd, then petcd. What a driver
does not implement skips itself on both. Every test that passes against etcd must pass
against petcd, except those listed in ``DIFFERENT`` with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ServerProcess
from tests.compat.thirdparty import pysuite

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]

RELEASE = "tooz==9.1.0"
# Its requirements.txt and test-requirements.txt, less what only its CI runs (coverage,
# pifpaf, stestr), with the etcd3gw extra at the version test_etcd3gw.py runs, the client
# packages of the other drivers the suite's module imports (memcached, redis, ipc), and
# pytest to run it.
REQUIREMENTS = (
    "pbr>=2.0",
    "stevedore>=1.16.0",
    "voluptuous>=0.8.9",
    "msgpack>=0.4.0",
    "fasteners>=0.7",
    "tenacity>=5.0.0",
    "futurist>=1.2.0",
    "oslo.utils>=4.7.0",
    "oslo.serialization>=1.10.0",
    "etcd3gw==2.7.0",
    "pymemcache>=1.2.9",
    "redis>=4.0.0",
    "sysv-ipc>=0.6.8",
    "testtools>=1.4.0",
    "fixtures>=3.0.0",
    "ddt>=1.2.1",
    "requests>=2.10.0",
    "pytest==9.0.3",
)
# The driver-generic suites; tooz/tests/drivers/ holds mocked unit tests of each driver.
SUITES = ("tooz/tests/test_coordination.py", "tooz/tests/test_partitioner.py")

DIFFERENT: dict[str, str] = {}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked release holding ``tooz/tests``)."""
    # pbr takes the version from git unless told: the release has no .git.
    return pysuite.install(
        tmp_path_factory.mktemp("tooz"), RELEASE, REQUIREMENTS, {"PBR_VERSION": "9.1.0"}
    )


def test_tooz_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, Path], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    python, source = suite
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="tooz")
        try:
            server.start()
            env = {"TOOZ_TEST_URL": f"etcd3+http://127.0.0.1:{server.client_port}"}
            results[kind] = pysuite.run(python, source, env, *SUITES)
        finally:
            server.stop()
    pysuite.compare(results, DIFFERENT, least=70)
