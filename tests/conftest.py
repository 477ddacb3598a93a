"""Shared test configuration.

Disk: every member a test starts (petcd's or etcd's) preallocates 64 MiB WAL segments, and a
backend file. pytest keeps only failed tests' ``tmp_path`` directories
(``tmp_path_retention_policy`` in pyproject.toml) and removes the whole base directory after a
green run; but after a failed run it keeps every directory made by ``tmp_path_factory`` (the
module fixtures' clusters), 6-10 GB for a full run, and the last two runs are kept: a CI disk
fills after a few red runs. So at the end of a red run the members' data files are removed
from the base directory, and the logs, configs and small files stay for whoever investigates.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# WAL segments and their preallocated spares (petcd's and etcd's), backend files.
_MEMBER_DATA = re.compile(r"(\.wal|\.tmp|\.snap\.db)$|^(db|data\.mdb)$")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp: Path | None = getattr(factory, "_basetemp", None)
    if exitstatus == 0 or basetemp is None or not basetemp.is_dir():
        return
    for path in basetemp.rglob("*"):
        if _MEMBER_DATA.search(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
