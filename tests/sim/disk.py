"""The simulated disk of one member: what survives a crash.

Theory of operation
-------------------
A member's Raft state lives in two places, like in a real server:

- the *durable log* (``SimDisk``'s ``hard_state``, ``snapshot`` and ``entries``), the analog of
  the WAL plus the snap directory. It changes only when the simulator persists a ``Ready``
  (``persist``, before the Ready's messages go out) or takes a snapshot of its state machine
  (``compact``);
- the *durable state machine* (``SimDisk.sm``), the analog of the backend with its consistent
  index: the applied index, a digest of everything applied so far and the ``ConfState`` as of the
  applied index. The simulator writes it back only now and then (``save_sm``), so after a crash
  it may lag behind what the member had applied, and the core must hand the missing entries
  again (``Config.applied``).

A crash throws away the ``RawNode``, its ``MemoryStorage`` and the volatile state machine; a
restart rebuilds a ``MemoryStorage`` from the durable log alone (``rebuild_storage``) and the
state machine from ``sm`` (or from the durable snapshot, if that is newer: the server restores
its backend from a snapshot that is ahead of it, as etcd does).

The state machine of the simulation is a hash chain over the applied entries: ``SmState.digest``
after applying index ``i`` is ``H(digest at i-1, i, term, type, data)``. Two members that applied
the same sequence have the same digest at every index, so comparing digests by index (in the
checker) proves "every member applies the same sequence" without keeping the sequences.

Invariants
----------
- ``entries`` are contiguous and start at ``snapshot.metadata.index + 1``.
- ``sm.applied >= snapshot.metadata.index`` whenever the snapshot was taken locally (a snapshot
  received from the leader may be ahead of ``sm`` until it is installed).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from petcd.raft.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    Snapshot,
    Term,
)


class DiskError(AssertionError):
    """The core handed the simulator something no disk could store (a hole in the log...)."""


@dataclass(frozen=True, slots=True)
class SmState:
    """The simulated state machine: how far it applied and a digest of what it applied."""

    applied: Index = field(default=Index(0))
    digest: bytes = b""
    conf_state: ConfState = field(default_factory=ConfState)

    def apply(self, entry: Entry) -> SmState:
        assert entry.index == self.applied + 1, (entry.index, self.applied)
        h = hashlib.blake2b(self.digest, digest_size=16)
        h.update(b"%d/%d/%d/" % (entry.index, entry.term, entry.type))
        h.update(entry.data)
        return SmState(entry.index, h.digest(), self.conf_state)

    def with_conf_state(self, conf_state: ConfState) -> SmState:
        return SmState(self.applied, self.digest, conf_state)

    def encode(self) -> bytes:
        """The snapshot payload: ``b"<applied>:<digest hex>"``."""
        return b"%d:%s" % (self.applied, self.digest.hex().encode())

    @staticmethod
    def from_snapshot(snapshot: Snapshot) -> SmState:
        index_text, _, digest_hex = snapshot.data.partition(b":")
        if int(index_text or b"0") != snapshot.metadata.index:
            raise DiskError(
                f"snapshot at index {snapshot.metadata.index} carries state machine data "
                f"for index {index_text!r}"
            )
        return SmState(
            snapshot.metadata.index,
            bytes.fromhex(digest_hex.decode()),
            snapshot.metadata.conf_state,
        )


@dataclass(slots=True)
class SimDisk:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: list[Entry] = field(default_factory=list)
    sm: SmState = field(default_factory=SmState)

    @property
    def first_index(self) -> Index:
        return Index(self.snapshot.metadata.index + 1)

    @property
    def last_index(self) -> Index:
        return Index(self.snapshot.metadata.index + len(self.entries))

    def term(self, index: Index) -> Term | None:
        """The term of the entry at ``index``, or None if it is compacted or beyond the log."""
        if index == self.snapshot.metadata.index:
            return self.snapshot.metadata.term
        if self.first_index <= index <= self.last_index:
            return self.entries[index - self.first_index].term
        return None

    def entry(self, index: Index) -> Entry | None:
        if self.first_index <= index <= self.last_index:
            return self.entries[index - self.first_index]
        return None

    def persist(
        self, snapshot: Snapshot | None, hard_state: HardState | None, entries: Sequence[Entry]
    ) -> None:
        """Write a Ready's snapshot, hard state and entries, in that order (one fsync)."""
        if snapshot is not None and not snapshot.is_empty:
            self.snapshot = snapshot
            self.entries = []
        if hard_state is not None:
            self.hard_state = hard_state
        if entries:
            first = entries[0].index
            for prev, nxt in itertools.pairwise(entries):
                if nxt.index != prev.index + 1:
                    raise DiskError(f"Ready.entries not contiguous: {prev.index} then {nxt.index}")
            if first <= self.snapshot.metadata.index:
                raise DiskError(
                    f"Ready.entries start at {first}, inside the snapshot "
                    f"(index {self.snapshot.metadata.index})"
                )
            if first > self.last_index + 1:
                raise DiskError(f"Ready.entries start at {first}, log ends at {self.last_index}")
            del self.entries[first - self.first_index :]
            self.entries.extend(entries)

    def compact(self, snapshot: Snapshot) -> None:
        """Record a snapshot taken locally from the state machine; release the log before it.

        The in-memory storage may keep a few entries before the snapshot for lagging followers;
        the durable log does not need them: a restart loads the snapshot and the entries after
        it, as etcd loads the newest snapshot and the WAL from there.
        """
        index = snapshot.metadata.index
        assert self.snapshot.metadata.index < index <= self.last_index, (
            self.snapshot.metadata.index,
            index,
            self.last_index,
        )
        del self.entries[: index - self.snapshot.metadata.index]
        self.snapshot = snapshot

    def save_sm(self, sm: SmState) -> None:
        assert sm.applied >= self.sm.applied, (sm.applied, self.sm.applied)
        self.sm = sm
