"""A one-member ``Member`` in a temporary directory, for the tests that drive it in-process."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from petcd.server.config import Config, Url
from petcd.server.log import Logger
from petcd.server.member import Member


def solo_config(tmp_path: Path) -> Config:
    peer = Url("http", "127.0.0.1", 1)  # never listened on: listen_peer_urls is empty
    return Config(
        name="solo",
        data_dir=str(tmp_path / "solo.etcd"),
        listen_peer_urls=(),
        initial_advertise_peer_urls=(peer,),
        initial_cluster=(("solo", (peer,)),),
    )


async def start_solo(tmp_path: Path, log: Logger | None = None) -> Member:
    """Open and start the member, and wait until it serves (stopped again if it does not)."""
    m = Member.open(solo_config(tmp_path), log or Logger("error", [io.StringIO()]))
    await m.start()
    try:
        await asyncio.wait_for(m.wait_ready(), 10)
    except BaseException:
        await m.stop()
        raise
    return m


def slow_wal_syncs(m: Member, seconds: float) -> Callable[[], None]:
    """Make each of the member's WAL fdatasyncs finish ``seconds`` later, whichever way the
    member makes them (submitted to the kernel through Linux AIO, or in a worker thread), while
    the event loop runs on; returns the undo. Also keeps the member off its inline path for a
    lone write (which blocks the loop during its fdatasync) for a minute."""
    wal = m.wal
    m._concurrent_at = time.monotonic() + 60
    if m._aio is None:
        sync = wal.sync

        def slow_sync() -> None:
            time.sleep(seconds)
            sync()

        wal.sync = slow_sync  # type: ignore[method-assign]
        return lambda: setattr(wal, "sync", sync)
    sync_start = wal.sync_start

    def slow_sync_start(submit: Callable[[int], None]) -> bool:
        def submit_later(fd: int) -> None:
            dup = os.dup(fd)  # the WAL may cut and close its fd meanwhile

            def fire() -> None:
                try:
                    submit(dup)  # the kernel holds the file from here on
                finally:
                    os.close(dup)

            threading.Timer(seconds, fire).start()

        return sync_start(submit_later)

    wal.sync_start = slow_sync_start  # type: ignore[method-assign]
    return lambda: setattr(wal, "sync_start", sync_start)
