"""Fixtures of the differential tests: a reference etcd and the server under test.

One reference etcd and one target server per test module (not per test), so
the whole default compat run stays well under a minute. The target is
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.compat)


@pytest.fixture(scope="module", params=_targets())
def differ(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Differ]:
    """A fresh reference etcd and a fresh target server, for one module and one target."""
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed (make etcd)")
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"compat-{kind}")
    reference = ServerProcess("etcd", base / "reference" / "data", name="compat")
    target = ServerProcess(kind, base / "target" / "data", name="compat")
    try:
        reference.start()
        target.start()
        yield Differ(reference, target)
    finally:
        target.stop()
        reference.stop()
