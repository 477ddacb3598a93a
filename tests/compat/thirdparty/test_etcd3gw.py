"""etcd3gw's own test suite, run against etcd 3.4 and against petcd (``make test-long``).

Theory of operation: etcd3gw (OpenStack's client over etcd's JSON gateway, used through tooz;
2.7.0 from PyPI) ships its tests in its source release. ``pysuite`` installs it with the
packages its requirements files name into a virtualenv of its own and runs the suite twice,
each time against a fresh single member of its own (``TOOZ_TEST_HTTP_URL`` and
``TOOZ_TEST_ETCD_PORT``): once against the real etcd and once against petcd. Its functional
tests go through the gateway's routes and streams: KV, leases, locks, members, status, and
watches over ``/v3/watch`` (with cancellation and a large value). Every test that passes
against etcd must pass against petcd, except those listed in ``DIFFERENT`` with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ServerProcess
from tests.compat.thirdparty import pysuite

pytestmark = pytest.mark.long

RELEASE = "etcd3gw==2.7.0"
# Its requirements.txt and test-requirements.txt, less what only its CI runs (coverage,
# pifpaf, stestr), plus pytest to run it.
REQUIREMENTS = (
    "pbr>=2.0",
    "requests>=2.20.0",
    "futurist>=0.16.0",
    "oslotest>=1.10.0",
    "urllib3>=1.15.1",
    "pytest",
)

DIFFERENT: dict[str, str] = {}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's python, the unpacked release holding ``etcd3gw/tests``)."""
    # pbr takes the version from git unless told: the release has no .git.
    return pysuite.install(
        tmp_path_factory.mktemp("etcd3gw"), RELEASE, REQUIREMENTS, {"PBR_VERSION": "2.7.0"}
    )


def test_etcd3gw_suite_passes_on_petcd_where_it_passes_on_etcd(
    suite: tuple[Path, Path], tmp_path: Path
) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed (make etcd)")
    python, source = suite
    results = {}
    for kind in ("etcd", "petcd"):
        server = ServerProcess(kind, tmp_path / kind / "data", name="etcd3gw")
        try:
            server.start()
            env = {
                "TOOZ_TEST_HTTP_URL": server.client_url,
                "TOOZ_TEST_ETCD_PORT": str(server.client_port),
            }
            results[kind] = pysuite.run(python, source, env, "etcd3gw/tests")
        finally:
            server.stop()
    # Its functional tests skip themselves when no server answers: they must have run.
    assert sum(t.startswith("etcd3gw/tests/test_etcd3gw.py") for t in results["etcd"]) >= 20
    pysuite.compare(results, DIFFERENT, least=35)
