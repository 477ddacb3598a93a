"""A lone member under concurrent puts: batch k is applied while batch k+1's fdatasync runs
(``Member._handle_ready``, "Pipelined apply"), and never before its own fdatasync returned.

Theory of operation
-------------------
A one-member ``Member`` in a temporary directory, driven in-process by many concurrent client
tasks. The WAL's ``save`` is wrapped to note the last index written, its ``sync`` to note when
an fdatasync runs and which index it makes durable, and the member's ``_apply`` to note every
applied entry. Applying an entry above the durable index would make a write visible (and
answered) before it is durable; an apply that runs while a later batch is written but not yet
durable is the overlap the pipeline exists for (unpipelined, the loop applies only once all it
wrote is durable). The second test blocks an fdatasync and checks that the writes it carries
are neither answered nor visible until it returns, while the batch before it is.

Both run twice: with the fdatasync submitted to the kernel (Linux AIO, what the member uses
where it can; here a stand-in that runs the real fdatasync in a thread after the delay and
signals the eventfd as the kernel would), and in a worker thread (the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from petcd.mvcc.requests import PutRequest, RangeRequest
from petcd.raft.types import Entry, HardState
from petcd.server.member import Member
from tests.unit.server.solo import start_solo


class _DelayedAio:
    """Stands in for ``AsyncFdatasync``: each submitted fdatasync runs in a thread of its own,
    after the ``_Disk``'s delay (and gate), and completes on an eventfd as the kernel's would."""

    def __init__(self) -> None:
        self.disk: _Disk | None = None
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._done: list[int] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.in_flight = 0

    def fileno(self) -> int:
        return self._efd

    def submit(self, fd: int) -> None:
        disk = self.disk
        fd = os.dup(fd)  # the WAL may cut a segment and close its fd meanwhile, as in the kernel
        self.in_flight += 1

        def run() -> None:
            try:
                if disk is not None:
                    disk.run_sync(lambda: os.fdatasync(fd))
                else:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self._done.append(0)
            os.eventfd_write(self._efd, 1)

        t = threading.Thread(target=run, daemon=True)
        self._threads.append(t)
        t.start()

    def reap(self) -> list[int]:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        with self._lock:
            done, self._done = self._done, []
        self.in_flight -= len(done)
        return done

    def close(self) -> None:
        for t in self._threads:
            t.join(30)
        os.close(self._efd)


@pytest.fixture(params=["aio", "thread"])
def fdatasync_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way the member makes its WAL fdatasyncs; ``_Disk`` hooks into either."""
    if request.param == "aio":
        monkeypatch.setattr(Member, "_open_aio", staticmethod(_DelayedAio))
    else:
        monkeypatch.setattr(Member, "_open_aio", staticmethod(lambda: None))
    return str(request.param)


class _Disk:
    """Wraps a member's WAL: notes what is saved, what is durable, and when syncs run."""

    def __init__(self, m: Member, sync_delay_s: float) -> None:
        self.saved = 0  # last entry index handed to WAL.save
        self.durable = 0  # last entry index an fdatasync made durable
        self.in_flight = False
        self.started = 0  # fdatasyncs started
        self.block_from: int | None = None  # the fdatasyncs from this one on wait for gate
        self.gate = threading.Event()
        self.syncs = 0  # fdatasyncs returned
        self._delay_s = sync_delay_s
        wal = m.wal
        save, sync = wal.save, wal.sync

        def noting_save(hs: HardState | None, entries: Sequence[Entry] = ()) -> None:
            save(hs, entries)
            if entries:
                self.saved = entries[-1].index

        wal.save = noting_save  # type: ignore[method-assign]
        if isinstance(m._aio, _DelayedAio):
            m._aio.disk = self
        else:
            wal.sync = lambda: self.run_sync(sync)  # type: ignore[method-assign]

    def run_sync(self, sync: Callable[[], None]) -> None:
        """One fdatasync (``sync``), slowed down; notes what it makes durable."""
        target = self.saved  # nothing is saved while a sync runs (the loop awaits it)
        n, self.started = self.started, self.started + 1
        self.in_flight = True
        try:
            time.sleep(self._delay_s)
            if self.block_from is not None and n >= self.block_from:
                self.gate.wait(30)
            sync()
        finally:
            self.in_flight = False
        self.durable = max(self.durable, target)
        self.syncs += 1


def test_a_batch_is_applied_while_the_next_one_syncs_and_only_once_durable(
    tmp_path: Path, fdatasync_path: str
) -> None:
    async def run() -> None:
        m = await start_solo(tmp_path)
        try:
            await m.put(PutRequest(b"k", b"v0"))
            # The worker-thread path throughout: the lone-put path applies during the WAL write,
            # unobservably (test_member_persist.py), which the check below would flag.
            m._concurrent_at = time.monotonic() + 60
            disk = _Disk(m, sync_delay_s=0.02)
            apply = m._apply
            early: list[tuple[int, int]] = []
            overlapped = 0

            def noting_apply(entries: tuple[Entry, ...]) -> None:
                nonlocal overlapped
                if entries[-1].index > disk.durable:
                    early.append((entries[-1].index, disk.durable))
                if disk.saved > disk.durable:
                    overlapped += 1  # a later batch is written, its fdatasync not returned
                apply(entries)

            m._apply = noting_apply  # type: ignore[method-assign]
            # Open loop: writes keep arriving while an fdatasync runs, so that a next batch
            # is queued whenever one returns (closed-loop clients here would move in lockstep).
            written: list[tuple[bytes, bytes]] = []

            async def put(i: int) -> None:
                key, value = b"k%03d" % i, b"v%d" % i
                resp = await m.put(PutRequest(key, value))
                # Answered: durable, and visible to a read on this member.
                got = m.kv.range(RangeRequest(key))
                assert got.kvs[0].value == value
                assert resp.header.revision <= got.header.revision
                written.append((key, value))

            tasks = []
            for i in range(150):
                tasks.append(asyncio.create_task(put(i)))
                await asyncio.sleep(0.002)
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert len(written) == 150
            assert not early, f"applied above the durable index (index, durable): {early[:5]}"
            # Unpipelined, the loop applies only once everything written is durable.
            assert overlapped >= 3, (overlapped, disk.syncs)
            got = m.kv.range(RangeRequest(b"k", b"l"))
            assert len(got.kvs) == 150 + 1
        finally:
            await m.stop()

    asyncio.run(run())


def test_writes_whose_fdatasync_is_blocked_are_neither_answered_nor_visible(
    tmp_path: Path, fdatasync_path: str
) -> None:
    async def run() -> None:
        m = await start_solo(tmp_path)
        try:
            await m.put(PutRequest(b"k", b"v0"))
            m._concurrent_at = time.monotonic() + 60  # the worker-thread path throughout
            disk = _Disk(m, sync_delay_s=0.05)
            answered: list[int] = []

            async def put(i: int) -> None:
                await m.put(PutRequest(b"p%03d" % i, b"x"))
                answered.append(i)

            # The first batch: its fdatasync runs (slowly) while the second batch queues.
            first = [asyncio.create_task(put(i)) for i in range(10)]
            while not disk.in_flight:
                await asyncio.sleep(0.001)
            disk.block_from = disk.started  # the next fdatasync (the second batch's) blocks
            second = [asyncio.create_task(put(i)) for i in range(10, 20)]
            await asyncio.wait_for(asyncio.gather(*first), 10)
            assert sorted(answered) == list(range(10))
            # The second batch reached the disk but its fdatasync does not return.
            for _ in range(200):
                if disk.in_flight and disk.saved > disk.durable:
                    break
                await asyncio.sleep(0.01)
            assert disk.in_flight and disk.saved > disk.durable
            await asyncio.sleep(0.3)
            assert sorted(answered) == list(range(10)), "answered before its fdatasync returned"
            got = m.kv.range(RangeRequest(b"p", b"q"))
            assert [kv.key for kv in got.kvs] == [b"p%03d" % i for i in range(10)]
            disk.gate.set()
            await asyncio.wait_for(asyncio.gather(*second), 10)
            assert sorted(answered) == list(range(20))
            got = m.kv.range(RangeRequest(b"p", b"q"))
            assert len(got.kvs) == 20
        finally:
            disk.gate.set()
            await m.stop()

    asyncio.run(run())
