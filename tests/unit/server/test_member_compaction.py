"""The member's compaction: done in steps between Ready rounds, also when no writes come.

Theory of operation
-------------------
A one-member ``Member`` in a temporary directory, driven in-process, with a few thousand
revisions written in transactions. A compaction is applied at once (reads below it fail), then
its steps run between Ready rounds: the index first, then the backend's records. An idle member
must finish it without further writes (it used to wait for the next write), and a "physical"
request must be answered only when this member's compaction is done, without running it all
inside the apply.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from petcd.backend import KEY
from petcd.mvcc.requests import (
    CompactionRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from petcd.server.member import Member
from tests.unit.server.solo import start_solo

_TXNS = 40
_PUTS_PER_TXN = 100  # keys k0..k99, each written 40 times: 4,000 records


async def _member(tmp_path: Path) -> Member:
    m = await start_solo(tmp_path)
    for t in range(_TXNS):
        ops = tuple(
            RequestOp(request_put=PutRequest(b"k%02d" % i, b"v%d" % t))
            for i in range(_PUTS_PER_TXN)
        )
        await m.txn(TxnRequest(success=ops))
    return m


def _records(m: Member) -> int:
    return len(m._backend.range(KEY, b""))


def test_an_idle_member_finishes_a_compaction(tmp_path: Path) -> None:
    async def run() -> None:
        m = await _member(tmp_path)
        try:
            assert _records(m) == _TXNS * _PUTS_PER_TXN
            rev = m.kv.current_revision
            await m.compact(CompactionRequest(rev))
            deadline = time.monotonic() + 10
            while m.kv.compaction_pending and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not m.kv.compaction_pending, "the compaction waited for writes"
            assert _records(m) == _PUTS_PER_TXN
            got = await m.range(RangeRequest(b"k00"))
            assert got.kvs[0].value == b"v%d" % (_TXNS - 1)
        finally:
            await m.stop()

    asyncio.run(run())


def test_a_physical_compaction_is_answered_when_it_is_done(tmp_path: Path) -> None:
    async def run() -> None:
        m = await _member(tmp_path)
        try:
            steps = 0
            step = m.kv.compaction_step

            def small_step(max_keys: int = 1000, *, commit: bool = True) -> bool:
                # Small steps: the compaction takes many Ready rounds, as a big one does.
                nonlocal steps
                steps += 1
                return step(50, commit=commit)

            m.kv.compaction_step = small_step  # type: ignore[method-assign]
            rev = m.kv.current_revision
            # Writes go on meanwhile: they are not held up until the compaction is done.
            writer_done = 0.0

            async def writer() -> None:
                nonlocal writer_done
                for i in range(5):
                    await m.put(PutRequest(b"other%d" % i, b"x"))
                writer_done = time.monotonic()

            w = asyncio.ensure_future(writer())
            await m.compact(CompactionRequest(rev, physical=True))
            answered = time.monotonic()
            await w
            assert not m.kv.compaction_pending
            assert _records(m) == _PUTS_PER_TXN + 5
            assert steps > _TXNS * _PUTS_PER_TXN // 50  # one step per round, many rounds
            assert writer_done < answered
        finally:
            await m.stop()

    asyncio.run(run())
