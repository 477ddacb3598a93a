"""Run ``petcd`` with a crash point in the install of a snapshot received from the leader.

``PETCD_TEST_CRASH_POINT`` names the moment at which the process SIGKILLs itself (so nothing is
flushed or closed, exactly as ``kill -9``), only during the first snapshot install:

- ``after-marker``: the snapshot's marker is synced to the WAL;
- ``after-backend``: the received database has replaced the backend;
- ``after-install``: right after the member logged "applied snapshot".

Every other argument is petcd's. Without the variable this is plain ``petcd``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from petcd.backend import Backend
from petcd.server.main import main
from petcd.server.member import Member
from petcd.wal import WAL

POINT = os.environ.get("PETCD_TEST_CRASH_POINT", "")
_installing = [False]
_marker_saved = [False]


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _crash_after(fn: Callable[..., Any], point: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if _installing[0] and point == POINT:
            _die()
        return result

    return wrapper


def _note_marker(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _installing[0]:
            _marker_saved[0] = True
        return fn(*args, **kwargs)

    return wrapper


def _crash_after_marker_sync(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if _installing[0] and _marker_saved[0] and POINT == "after-marker":
            _die()
        return result

    return wrapper


def _install() -> None:
    original = Member._install_snapshot

    async def install(self: Member, snap: Any) -> None:
        _installing[0] = True
        try:
            await original(self, snap)
        finally:
            _installing[0] = False
        if POINT == "after-install":
            _die()

    Member._install_snapshot = install  # type: ignore[method-assign]
    Backend.replace_with = _crash_after(  # type: ignore[method-assign]
        Backend.replace_with, "after-backend"
    )
    WAL.save_snapshot = _note_marker(WAL.save_snapshot)  # type: ignore[method-assign]
    # The marker's sync: made in place (``sync``), or submitted to the kernel and completed
    # on the event loop (``sync_done``), as the member does under Linux AIO.
    WAL.sync = _crash_after_marker_sync(WAL.sync)  # type: ignore[method-assign]
    WAL.sync_done = _crash_after_marker_sync(WAL.sync_done)  # type: ignore[method-assign]


if __name__ == "__main__":
    if POINT:
        _install()
    sys.exit(main())
