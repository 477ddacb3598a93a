"""The Raft core's view of durable state, and an in-memory implementation of it.

Theory of operation
-------------------
The core never writes storage: it reads what the caller persisted (``Storage``) and tells the
caller, through ``Ready``, what to persist next. ``MemoryStorage`` is both the reader the core
uses and the writer the caller uses (``set_hard_state``, ``append``, ``apply_snapshot``,
``create_snapshot``, ``compact``); the server keeps one in front of its WAL, the tests and the
simulator use it alone.

Layout of ``MemoryStorage``::

    _ents[0]      a dummy entry: (index, term) of the last compacted entry (the snapshot's)
    _ents[1:]     the log, consecutive indexes from first_index() to last_index()

    snapshot index = _ents[0].index      first_index() = _ents[0].index + 1
    last_index()   = _ents[0].index + len(_ents) - 1

Invariants
----------
- ``_ents`` is never empty and its indexes are consecutive.
- ``_ents[0]`` matches the snapshot's (index, term) or was produced by ``compact``.
- ``entries(lo, hi)`` is half-open and returns at least one entry when ``lo < hi`` even if that
  one entry exceeds ``max_bytes``.

A new cluster: ``MemoryStorage.bootstrap(voters)`` gives every founding member the same log: one
``ADD_NODE`` conf-change entry per voter at term 1 (indexes 1..n, ascending member id), a hard
state with term 1 and commit n, and a ``ConfState`` with those voters. The entries are handed to
the caller as committed entries, so a state machine that keeps a member list sees every founding
member added; a member that joins later learns them by replaying the same entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from petcd.raft import confchange
from petcd.raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from petcd.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    MemberId,
    Snapshot,
    SnapshotMetadata,
    Term,
)


class Storage(Protocol):
    """What the Raft core reads. Implementations raise the errors of ``petcd.raft.errors``."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]: ...

    def term(self, i: Index) -> Term: ...

    def first_index(self) -> Index: ...

    def last_index(self) -> Index: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` whose payload fits ``max_bytes``; never fewer than one."""
    if max_bytes is None or len(ents) <= 1:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += len(e.data)
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents


class MemoryStorage:
    """An in-memory ``Storage`` with the writer side the caller drives."""

    __slots__ = ("_conf_state", "_ents", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._conf_state = ConfState()
        self._ents: list[Entry] = [Entry(Term(0), Index(0))]

    @classmethod
    def bootstrap(
        cls, voters: Iterable[MemberId], contexts: Mapping[MemberId, bytes] | None = None
    ) -> MemoryStorage:
        """A founding member's storage; every founding member must get the same ``voters``.

        ``contexts`` optionally gives each voter's conf-change context (opaque to the core).
        """
        ids = sorted(set(voters))
        assert ids, "a cluster needs at least one voter"
        assert all(i > 0 for i in ids), "member ids must be positive"
        ctx = contexts or {}
        s = cls()
        ents = [
            Entry(
                Term(1),
                Index(n),
                EntryType.CONF_CHANGE,
                confchange.encode(ConfChange(ConfChangeType.ADD_NODE, i, ctx.get(i, b""))),
            )
            for n, i in enumerate(ids, start=1)
        ]
        s.append(ents)
        s.set_hard_state(HardState(Term(1), MemberId(0), Index(len(ids))))
        s._conf_state = ConfState(voters=frozenset(ids))
        return s

    # -- reader side (the core) --------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf_state

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        ents = self._ents
        offset = ents[0].index
        if lo <= offset:
            raise CompactedError(f"entries from {lo}: compacted up to {offset}")
        last = offset + len(ents) - 1
        if hi > last + 1:
            raise UnavailableError(f"entries up to {hi}: last index is {last}")
        return limit_size(ents[lo - offset : hi - offset], max_bytes)

    def term(self, i: Index) -> Term:
        ents = self._ents
        offset = ents[0].index
        if i < offset:
            raise CompactedError(f"term of {i}: compacted up to {offset}")
        if i - offset >= len(ents):
            raise UnavailableError(f"term of {i}: last index is {offset + len(ents) - 1}")
        return ents[i - offset].term

    def first_index(self) -> Index:
        return Index(self._ents[0].index + 1)

    def last_index(self) -> Index:
        return Index(self._ents[0].index + len(self._ents) - 1)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writer side (the caller) ------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def set_conf_state(self, cs: ConfState) -> None:
        """Record the configuration ``initial_state`` reports (as of the caller's applied index)."""
        self._conf_state = cs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a snapshot received from the leader)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            have = self._snapshot.metadata.index
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.metadata.index} is not newer than {have}"
            )
        self._snapshot = snap
        self._conf_state = snap.metadata.conf_state
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (which must be in the log)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )
        offset = self._ents[0].index
        assert index <= self.last_index(), f"snapshot {index} is beyond the last index"
        term = self._ents[index - offset].term
        self._snapshot = Snapshot(SnapshotMetadata(index, term, conf_state), data)
        return self._snapshot

    def compact(self, index: Index) -> None:
        """Discard the entries up to and including ``index``."""
        ents = self._ents
        offset = ents[0].index
        if index <= offset:
            raise CompactedError(f"compact to {index}: already compacted up to {offset}")
        assert index <= self.last_index(), f"compact to {index} is beyond the last index"
        i = index - offset
        self._ents = [Entry(ents[i].term, ents[i].index), *ents[i + 1 :]]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, replacing any conflicting tail of the log."""
        if not entries:
            return
        ents = self._ents
        first = ents[0].index + 1
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        at = entries[0].index - ents[0].index
        assert at <= len(ents), f"missing log entries before {entries[0].index}"
        if at < len(ents):
            del ents[at:]
        ents.extend(entries)
