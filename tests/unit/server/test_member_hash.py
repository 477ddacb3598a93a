"""The member's HashKV walks the key bucket off the event loop.

Theory of operation
-------------------
A one-member ``Member`` in a temporary directory, driven in-process, with the CRC made slow on
purpose (each piece of the walk sleeps), so that a hash takes about a second, as on a store of
a million keys. While it runs, the member must keep answering writes and reads (on the loop, a
walk that long stops heartbeats and loses leadership in a cluster), the hash must be the one of
the revision it was asked at, and stopping must wait for it before closing the backend.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from petcd.mvcc import crc32c
from petcd.mvcc.requests import PutRequest, RangeRequest
from petcd.server.errors import StoppedError
from petcd.server.member import Member
from tests.unit.server.solo import start_solo

_KEYS = 200
_SLEEP_PER_ITEM_S = 0.005  # about 1 s per walk


@pytest.fixture
def slow_crc(monkeypatch: pytest.MonkeyPatch) -> None:
    update = crc32c.update

    def slow(crc: int, data: bytes) -> int:
        time.sleep(_SLEEP_PER_ITEM_S)
        return update(crc, data)

    monkeypatch.setattr(crc32c, "update", slow)


async def _member(tmp_path: Path) -> Member:
    m = await start_solo(tmp_path)
    for i in range(_KEYS):
        await m.put(PutRequest(b"k%03d" % i, b"v"))
    return m


def test_the_member_serves_while_a_hash_walks(tmp_path: Path, slow_crc: None) -> None:
    async def run() -> None:
        m = await _member(tmp_path)
        try:
            expected = m.kv.hash_kv(0)  # synchronous, on the loop: what used to happen
            started = time.monotonic()
            hashing = asyncio.ensure_future(m.hash_kv(0))
            await asyncio.sleep(0.05)
            assert not hashing.done()
            for i in range(5):
                await m.put(PutRequest(b"k%03d" % i, b"w"))
                got = await m.range(RangeRequest(b"k000"))
                assert got.kvs[0].value == b"w"
            assert not hashing.done(), "the writes waited for the walk"
            assert time.monotonic() - started < 0.8 * _KEYS * _SLEEP_PER_ITEM_S
            header, result = await hashing
            # The hash of the revision it was started at, not of the writes made meanwhile.
            assert result == expected
            assert header.revision == result.hash_revision == _KEYS + 1
            assert m.kv.hash_kv(0) != expected
        finally:
            await m.stop()

    asyncio.run(run())


def test_stop_waits_for_a_walk_in_progress(tmp_path: Path, slow_crc: None) -> None:
    async def run() -> None:
        m = await _member(tmp_path)
        expected = m.kv.hash_kv(0)
        hashing = asyncio.ensure_future(m.hash_kv(0))
        await asyncio.sleep(0.05)
        await m.stop()
        assert hashing.done()
        _, result = await hashing
        assert result == expected
        with pytest.raises(StoppedError):
            await m.hash_kv(0)

    asyncio.run(run())


def test_a_caller_that_goes_away_leaves_the_walk_to_finish(tmp_path: Path, slow_crc: None) -> None:
    async def run() -> None:
        m = await _member(tmp_path)
        try:
            hashing = asyncio.ensure_future(m.hash_kv(0))
            await asyncio.sleep(0.05)
            hashing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hashing
            assert len(m._hash_walks) == 1  # still walking: the backend must stay open
            # A defragment (which reopens the backend) waits for it, then runs.
            await m.defragment()
            assert not m._hash_walks
            got = await m.range(RangeRequest(b"k000"))
            assert got.kvs[0].value == b"v"
        finally:
            await m.stop()

    asyncio.run(run())
