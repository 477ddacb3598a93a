"""The member's persist step for a lone proposal: applied while the WAL write is on its way to
the disk (``Member._persist_and_apply``), never visible before the fdatasync returned.

Theory of operation
-------------------
A one-member ``Member`` in a temporary directory, driven in-process. A reader task reads the
key serializably on every loop iteration while one client puts, one at a time; the WAL's
``sync`` is wrapped to note when it returned. A read that sees a value before the sync that
made it durable had returned would be a write visible before it is durable. The second test
fails the fdatasync and checks that the member ends the process instead of answering; the
last does the same with an fdatasync submitted to the kernel (``_sync_wal``, Linux AIO).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
from pathlib import Path

import pytest

from petcd.mvcc.requests import PutRequest, RangeRequest
from petcd.server.errors import StoppedError
from petcd.server.log import Logger
from petcd.server.member import Member
from petcd.wal import WalFatalError
from petcd.wal import wal as wal_module
from tests.unit.server.solo import solo_config, start_solo


def test_a_lone_put_is_applied_during_the_write_but_seen_only_after_the_sync(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        m = await start_solo(tmp_path)
        try:
            await m.put(PutRequest(b"k", b"v0"))
            wal = m.wal
            write, sync = wal.write, wal.sync
            events: list[str] = []
            durable: set[bytes] = {b"v0"}
            pending: list[bytes] = []

            def counting_write() -> None:
                events.append("write")
                write()

            def noting_sync() -> None:
                sync()
                events.append("sync")
                durable.update(pending)

            wal.write = counting_write  # type: ignore[method-assign]
            wal.sync = noting_sync  # type: ignore[method-assign]
            early: list[bytes] = []
            stop = False

            async def reader() -> None:
                while not stop:
                    got = await m.range(RangeRequest(b"k", serializable=True))
                    value = got.kvs[0].value
                    if value not in durable:
                        early.append(value)
                    await asyncio.sleep(0)

            task = asyncio.create_task(reader())
            await asyncio.sleep(0)
            for i in range(1, 30):
                value = b"v%d" % i
                pending[:] = [value]
                events.append("put")
                resp = await m.put(PutRequest(b"k", value))
                assert value in durable  # answered only once durable
                events.append("answered")
                assert resp.header.revision == i + 2  # v0 was revision 2
            stop = True
            await task
            assert not early, f"read before its WAL sync returned: {early}"
            # The lone puts took the overlapped path: write, (apply), sync, then the answer.
            assert events[:4] == ["put", "write", "sync", "answered"], events[:8]
            assert events.count("write") == 29
        finally:
            await m.stop()

    asyncio.run(run())


def test_a_failed_fdatasync_after_the_overlapped_apply_ends_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        out = io.StringIO()
        m = Member.open(solo_config(tmp_path), Logger("error", [out]))
        answered: list[bytes] = []
        exits: list[tuple[int, list[bytes]]] = []

        def exit_process(code: int) -> None:
            # os._exit in production: the process ends here, before the event loop runs the
            # answer the apply already resolved. This stand-in returns, so the test notes
            # what had been answered at that moment.
            exits.append((code, list(answered)))

        m._exit_process = exit_process
        await m.start()
        try:
            await asyncio.wait_for(m.wait_ready(), 10)
            await m.put(PutRequest(b"k", b"v0"))
            answered.append(b"v0")

            def failing_fdatasync(fd: int) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(wal_module.os, "fdatasync", failing_fdatasync)
            with contextlib.suppress(StoppedError):
                await m.put(PutRequest(b"k", b"v1"))
                answered.append(b"v1")
            monkeypatch.setattr(wal_module.os, "fdatasync", os.fdatasync)
            assert exits == [(1, [b"v0"])]
            assert isinstance(m.fatal_error, WalFatalError)
            assert "failed to save Raft hard state and entries" in out.getvalue()
        finally:
            await m.stop()

    asyncio.run(run())


class _KernelFdatasync:
    """Stands in for ``AsyncFdatasync``: every fdatasync completes at once, with the real
    result, or with -EIO once ``fail`` is set (what a failing disk makes the kernel report)."""

    def __init__(self) -> None:
        self.fail = False
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._done: list[int] = []
        self.in_flight = 0

    def fileno(self) -> int:
        return self._efd

    def submit(self, fd: int) -> None:
        os.fdatasync(fd)
        self._done.append(-5 if self.fail else 0)
        self.in_flight += 1
        os.eventfd_write(self._efd, 1)

    def reap(self) -> list[int]:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        done, self._done = self._done, []
        self.in_flight -= len(done)
        return done

    def close(self) -> None:
        os.close(self._efd)


def test_a_failed_kernel_fdatasync_stops_the_member_without_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = _KernelFdatasync()
    monkeypatch.setattr(Member, "_open_aio", staticmethod(lambda: kernel))

    async def run() -> None:
        out = io.StringIO()
        m = await start_solo(tmp_path, Logger("error", [out]))
        try:
            await m.put(PutRequest(b"k", b"v0"))
            assert m._aio is kernel
            m._concurrent_at = time.monotonic() + 60  # the submitted fdatasync, not inline
            kernel.fail = True
            with pytest.raises(StoppedError):
                await m.put(PutRequest(b"k", b"v1"))
            await m.wait_stopped()
            assert isinstance(m.fatal_error, WalFatalError)
            assert "Input/output error" in str(m.fatal_error)
            assert "member stopped on a fatal error" in out.getvalue()
            # Nothing of the failed write became visible.
            assert m.kv.range(RangeRequest(b"k")).kvs[0].value == b"v0"
        finally:
            await m.stop()

    asyncio.run(run())
