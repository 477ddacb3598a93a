"""What a leader knows about each member's log: ``Progress``, with flow control.

Theory of operation
-------------------
A leader keeps one ``Progress`` per member (itself included). ``match`` is the highest index
known to be replicated there; ``next`` is the next index to send. Each progress is in one state:

    PROBE      the leader does not know where the follower's log ends. It sends one append at a
               time (``probe_sent`` pauses it) and backs ``next`` off on rejections.
    REPLICATE  the follower is in sync; appends are streamed optimistically (``next`` advances
               as they are sent), bounded by ``Inflights`` (``max_inflight_msgs``).
    SNAPSHOT   the follower needs a snapshot (its next entry was compacted away); nothing else is
               sent until the snapshot is reported done or failed.

    PROBE --ack--> REPLICATE --reject / unreachable--> PROBE
    PROBE/REPLICATE --entries compacted--> SNAPSHOT --report/ack--> PROBE

Invariants
----------
- ``match < next``.
- In REPLICATE, every index in ``inflights`` is in ``(match, next)``, ascending.
- In SNAPSHOT, ``pending_snapshot`` is the index of the snapshot being sent.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from petcd.raft.types import Index


class ProgressState(enum.Enum):
    PROBE = "StateProbe"
    REPLICATE = "StateReplicate"
    SNAPSHOT = "StateSnapshot"


class Inflights:
    """The last indexes of append messages sent and not yet acknowledged (REPLICATE only)."""

    __slots__ = ("_q", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: deque[Index] = deque()

    def add(self, last: Index) -> None:
        assert len(self._q) < self.size, "inflights overflow"
        self._q.append(last)

    def free_le(self, to: Index) -> None:
        q = self._q
        while q and q[0] <= to:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.size

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, match: Index, next_: Index, max_inflight: int, is_learner: bool) -> None:
        self.match = match
        self.next = next_
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        self.recent_active = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"probe_sent={self.probe_sent}, inflight={self.inflights.count()}, "
            f"learner={self.is_learner})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = Index(max(self.match + 1, pending + 1))
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = Index(self.match + 1)

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = Index(self.match + 1)

    def become_snapshot(self, snapshot_index: Index) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: Index) -> bool:
        """Record an acknowledgement up to ``n``; whether ``match`` moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = Index(n + 1)
        return updated

    def maybe_decr_to(self, rejected: Index, match_hint: Index) -> bool:
        """Back ``next`` off after the follower rejected an append at ``rejected``; False when
        the rejection is stale (it answers an older append)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = Index(self.match + 1)
            return True
        if self.next - 1 != rejected:
            return False
        self.next = Index(max(min(rejected, match_hint + 1), self.match + 1))
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    """A snapshot of one ``Progress`` for ``Status``."""

    match: Index
    next: Index
    state: ProgressState
    is_learner: bool
    recent_active: bool
    pending_snapshot: Index
    inflight: int
