"""Fixtures of the differential tests: a reference etcd and the server under test.

One reference etcd and one target server per target for the whole session
(not per module or test), so the default compat run stays around a minute. The target is
parametrised over :func:`tests.compat.servers.available_targets`: ``etcd``
always, ``petcd`` once ``src/petcd/server/main.py`` exists and ``petcd
--version`` runs. ``PETCD_COMPAT_TARGETS=etcd`` (comma-separated) restricts the
list.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.harness import Differ
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess, available_targets


def _targets() -> list[str]:
    targets = available_targets()
    wanted = os.environ.get("PETCD_COMPAT_TARGETS")
    if wanted:
        targets = [t for t in targets if t in wanted.split(",")]
    return targets or ["etcd"]


# Differential tests of features the petcd server does not have yet. They run against petcd
# and must fail there (strict xfail): when a feature lands, its tests XPASS, which fails the run
# until the entry is removed here.
PETCD_MISSING: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.compat)
            name = getattr(item, "originalname", item.name)
            params = getattr(getattr(item, "callspec", None), "params", {})
            if name in PETCD_MISSING and "petcd" in params.values():
                item.add_marker(pytest.mark.xfail(strict=True, reason=PETCD_MISSING[name]))


@pytest.fixture(scope="session", params=_targets())
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A reference etcd and a target server, shared by every module for one target.

    Both see exactly the same operations in the same order (every test drives
    both), so they stay at the same revision from module to module.
    """
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed (make etcd)")
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"compat-{kind}")
    reference = ServerProcess("etcd", base / "reference" / "data", name="compat")
    target = ServerProcess(kind, base / "target" / "data", name="compat")
    try:
        reference.start()
        target.start()
        yield reference, target
    finally:
        target.stop()
        reference.stop()


@pytest.fixture(scope="module")
def differ(servers: tuple[ServerProcess, ServerProcess]) -> Differ:
    return Differ(*servers)


@pytest.fixture(scope="module", params=_targets())
def lone_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A target server of its own, for tests that drive only the target."""
    kind: str = request.param
    server = ServerProcess(kind, tmp_path_factory.mktemp(f"lone-{kind}") / "data")
    server.start()
    yield server
    server.stop()
