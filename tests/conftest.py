"""Shared test configuration.

Disk: every member a test starts (petcd's or etcd's) preallocates 64 MiB WAL segments, and a
backend file. pytest keeps only failed tests' ``tmp_path`` directories
(``tmp_path_retention_policy`` in pyproject.toml) and removes the whole base directory after a
green run; but after a failed run it keeps every directory made by ``tmp_path_factory`` (the
module fixtures' clusters), 6-10 GB for a full run, and the last two runs are kept: a CI disk
fills after a few red runs. So at the end of a red run the members' data files are removed
from the base directory, and the logs, configs and small files stay for whoever investigates.

Signals: several tests stop a child (``etcdctl watch``, ``elect``, ``lock``) with SIGINT, as a
user's Ctrl-C does. A process started in the background by a non-interactive shell (``make
test &``, some CI runners) inherits SIGINT ignored, and so would every child: etcdctl would
never stop. pytest's process therefore handles SIGINT itself (Python's default handler), and
children start with the default action again.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
