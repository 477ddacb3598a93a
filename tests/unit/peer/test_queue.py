"""petcd.peer.queue: the per-peer queue is bounded and FIFO; backoff doubles up to its cap."""

from __future__ import annotations

import random

from petcd.peer.queue import Backoff, PeerQueue
from petcd.raft.types import Index, Message, MessageType


def _msgs(n: int, start: int = 0) -> list[Message]:
    return [Message(MessageType.APP, index=Index(i)) for i in range(start, start + n)]


def test_queue_refuses_past_its_bound_and_keeps_order() -> None:
    q = PeerQueue(3)
    assert [q.push(m) for m in _msgs(5)] == [True, True, True, False, False]
    assert len(q) == 3
    assert [m.index for m in q.take_all()] == [0, 1, 2]
    assert len(q) == 0
    assert q.push(_msgs(1)[0])


def test_push_many_fills_what_fits() -> None:
    q = PeerQueue(4)
    assert q.push_many(_msgs(3)) == 0
    assert q.push_many(_msgs(3, start=3)) == 2
    assert q.push_many(_msgs(2, start=6)) == 2
    assert [m.index for m in q.take_all()] == [0, 1, 2, 3]


def test_clear_counts_dropped() -> None:
    q = PeerQueue(10)
    q.push_many(_msgs(7))
    assert q.clear() == 7
    assert q.take_all() == []


def test_backoff_doubles_to_cap_and_resets() -> None:
    b = Backoff(0.05, 0.4, random.Random(1), jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
    b.reset()
    assert b.next_delay() == 0.05


def test_backoff_jitter_stays_within_bounds() -> None:
    b = Backoff(1.0, 1.0, random.Random(7), jitter=0.5)
    delays = [b.next_delay() for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 100
