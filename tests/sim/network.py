"""The simulated network between Raft members.

Theory of operation
-------------------
``SimNetwork`` is a priority queue of messages keyed by the tick at which they arrive. ``send``
decides, with the simulation's one ``random.Random``, whether a message is dropped, delayed (by
0 to ``delay_ticks_max`` ticks, which reorders messages between ticks) or duplicated (a second copy
with its own delay). ``due(now)`` pops every message whose delivery tick has come, shuffled, which
reorders messages inside a tick as well. A partition assigns every member to a group; a message
between two groups (from the member that sent it, to ``Message.to``) is dropped both when it is
sent and when it arrives (a partition that starts while a message is in flight cuts it too).
Members that are not named in a partition are in group 0 together. ``block(a, b)`` cuts the
link from a to b only (a one-way partition); ``heal`` restores everything.

The network never looks inside a message except for its ``to`` field, and never
creates a message that was not sent (a duplicate is the same frozen value delivered twice).

Invariants
----------
- Delivery order depends only on the seed: the queue is ordered by ``(tick, sequence number)``
  and the shuffle uses the simulation's ``random.Random``.
- With ``drop_rate == dup_rate == 0`` and no partition, every message sent is delivered exactly
  once, no later than ``delay_ticks_max`` ticks after it was sent.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from petcd.raft.types import MemberId, Message


@dataclass(slots=True)
class NetworkFaults:
    """How unreliable the network is right now; changed by the simulation between phases."""

    drop_rate: float = 0.0
    dup_rate: float = 0.0
    delay_ticks_max: int = 0

    def __post_init__(self) -> None:
        assert 0.0 <= self.drop_rate <= 1.0
        assert 0.0 <= self.dup_rate <= 1.0
        assert self.delay_ticks_max >= 0


# (deliver_tick, sequence number, sender, message); a tuple keeps heap comparisons cheap and
# the unique sequence number means the message itself is never compared.
_InFlight = tuple[int, int, MemberId, Message]


class SimNetwork:
    """A lossy, duplicating, reordering network with partitions, driven by one ``Random``."""

    def __init__(self, rng: random.Random, faults: NetworkFaults | None = None) -> None:
        self._rng = rng
        self.faults = faults if faults is not None else NetworkFaults()
        self._queue: list[_InFlight] = []
        self._seq = 0
        self._group: dict[MemberId, int] = {}
        self._blocked: set[tuple[MemberId, MemberId]] = set()
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    # -- partitions -------------------------------------------------------------------------

    def set_partition(self, groups: Sequence[Collection[MemberId]]) -> None:
        """Split members into ``groups`` (numbered from 1); unnamed members form group 0."""
        self._group = {}
        for number, members in enumerate(groups, start=1):
            for member in members:
                assert member not in self._group, f"member {member} in two groups"
                self._group[member] = number

    def block(self, sender: MemberId, receiver: MemberId) -> None:
        """Cut the link from ``sender`` to ``receiver`` only (a one-way partition)."""
        self._blocked.add((sender, receiver))

    def heal(self) -> None:
        self._group = {}
        self._blocked = set()

    @property
    def partitioned(self) -> bool:
        return bool(self._group) or bool(self._blocked)

    def connected(self, a: MemberId, b: MemberId) -> bool:
        """Whether a message from ``a`` reaches ``b``."""
        if self._blocked and (a, b) in self._blocked:
            return False
        return self._group.get(a, 0) == self._group.get(b, 0)

    # -- sending and delivering -------------------------------------------------------------

    def send(self, sender: MemberId, message: Message, now_tick: int) -> bool:
        """Queue ``message`` from ``sender`` to ``message.to``; False if it was lost at once.

        ``sender`` is the member whose Ready held the message; ``message.from_`` may differ
        (a follower forwards a proposal with its proposer's id).
        """
        self.sent += 1
        if not self.connected(sender, message.to):
            self.dropped += 1
            return False
        if self.faults.drop_rate and self._rng.random() < self.faults.drop_rate:
            self.dropped += 1
            return False
        self._enqueue(sender, message, now_tick)
        if self.faults.dup_rate and self._rng.random() < self.faults.dup_rate:
            self.duplicated += 1
            self._enqueue(sender, message, now_tick)
        return True

    def _enqueue(self, sender: MemberId, message: Message, now_tick: int) -> None:
        delay = (
            self._rng.randint(0, self.faults.delay_ticks_max) if self.faults.delay_ticks_max else 0
        )
        self._seq += 1
        heapq.heappush(self._queue, (now_tick + delay, self._seq, sender, message))

    def due(self, now_tick: int) -> list[Message]:
        """Pop the messages that arrive at ``now_tick`` (or earlier), in a random order.

        Messages cut by a partition while in flight are dropped here.
        """
        out: list[Message] = []
        queue = self._queue
        while queue and queue[0][0] <= now_tick:
            _, _, sender, message = heapq.heappop(queue)
            if self.connected(sender, message.to):
                out.append(message)
            else:
                self.dropped += 1
        self._rng.shuffle(out)
        return out

    def drop_involving(self, member: MemberId) -> int:
        """Forget every in-flight message from or to ``member``; return how many."""
        keep = [f for f in self._queue if member not in (f[2], f[3].to)]
        lost = len(self._queue) - len(keep)
        if lost:
            heapq.heapify(keep)
            self._queue = keep
            self.dropped += lost
        return lost

    @property
    def in_flight(self) -> int:
        return len(self._queue)
