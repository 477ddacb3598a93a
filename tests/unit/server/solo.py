"""A one-member ``Member`` in a temporary directory, for the tests that drive it in-process."""

from __future__ import annotations

import asyncio
import io
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
