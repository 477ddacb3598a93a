"""The bounded per-peer outbound queue and the redial backoff.

Theory of operation
-------------------
``PeerQueue`` holds the messages waiting for one peer's writer. ``push`` never blocks: past
``messages_max`` it refuses the message, and the transport drops it and reports the peer
unreachable (Raft resends after probing), so a slow or dead peer costs at most
``messages_max`` messages of memory and never delays the caller or other peers. The writer
takes everything at once (``take_all``) and sends it as one write: batching is the queue's
natural state while the previous write drains.

``Backoff`` yields the delays between dial attempts: ``initial_seconds``, doubling per
failure, capped at ``max_seconds``, each scaled by a random factor in ``[1 - jitter, 1]``
from the injected ``random.Random`` so that members do not redial in lockstep.

Both are pure (no asyncio, no clock) and unit-tested directly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from petcd.raft.types import Message


class PeerQueue:
    """A bounded FIFO of messages for one peer."""

    __slots__ = ("_items", "messages_max")

    def __init__(self, messages_max: int) -> None:
        assert messages_max > 0, messages_max
        self.messages_max = messages_max
        self._items: list[Message] = []

    def __len__(self) -> int:
        return len(self._items)

    def push(self, m: Message) -> bool:
        """Queue ``m``; False (nothing queued) when the queue is full."""
        if len(self._items) >= self.messages_max:
            return False
        self._items.append(m)
        return True

    def push_many(self, ms: Sequence[Message]) -> int:
        """Queue as many of ``ms`` as fit, in order; return how many did not fit."""
        room = self.messages_max - len(self._items)
        if room >= len(ms):
            self._items.extend(ms)
            return 0
        if room > 0:
            self._items.extend(ms[:room])
            return len(ms) - room
        return len(ms)

    def take_all(self) -> list[Message]:
        """Everything queued, oldest first; the queue is then empty."""
        items, self._items = self._items, []
        return items

    def clear(self) -> int:
        """Drop everything queued (the connection is gone); return how many were dropped."""
        n = len(self._items)
        self._items = []
        return n


class Backoff:
    """Capped exponential backoff with jitter."""

    __slots__ = ("_next_seconds", "initial_seconds", "jitter", "max_seconds", "rand")

    def __init__(
        self,
        initial_seconds: float,
        max_seconds: float,
        rand: random.Random,
        jitter: float = 0.5,
    ) -> None:
        assert 0 < initial_seconds <= max_seconds, (initial_seconds, max_seconds)
        assert 0 <= jitter < 1, jitter
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self.jitter = jitter
        self.rand = rand
        self._next_seconds = initial_seconds

    def next_delay(self) -> float:
        """The delay before the next attempt; doubles the following one (up to the cap)."""
        base = self._next_seconds
        self._next_seconds = min(base * 2, self.max_seconds)
        return base * (1 - self.jitter * self.rand.random())

    def reset(self) -> None:
        """A connection succeeded: the next failure waits ``initial_seconds`` again."""
        self._next_seconds = self.initial_seconds
