"""The Raft core's view of durable state, and an in-memory implementation of it.

Theory of operation
-------------------
The core never writes storage: it reads what the caller persisted (``Storage``) and tells the
caller, through ``Ready``, what to persist next. ``MemoryStorage`` is both the reader the core
uses and the writer the caller uses (``set_hard_state``, ``append``, ``apply_snapshot``,
``create_snapshot``, ``compact``); the server keeps one in front of its WAL, the tests and the
simulator use it alone.

Layout of ``MemoryStorage``: the entry with index ``_offset + k`` is
``(_terms[k], _types[k], _datas[k])``, and ``k = 0`` is a dummy entry: the (index, term) of the
last compacted entry (the snapshot's)::

    snapshot index = _offset      first_index() = _offset + 1
    last_index()   = _offset + len(_terms) - 1

Terms are kept in an ``array('q')``, types in a ``bytearray`` and payloads in a list of bytes,
not as ``Entry`` objects: none of these per-entry values is an object the cyclic garbage
collector tracks. An ``Entry`` object (a slotted class) would be tracked for as long as the log
keeps it, up to a snapshot's worth of entries (100,000 by default), and every collection of
the older generations walked them: 55-75 ms pauses of the whole member under load, and a
young-generation pass every ~12,000 writes (docs/enhancements/0004-transport.md, session 6).
``entries()`` builds the ``Entry`` objects it returns.

Invariants
----------
- ``_terms``, ``_types`` and ``_datas`` have the same length, at least 1 (the dummy).
- The dummy matches the snapshot's (index, term) or was produced by ``compact``.
- ``entries(lo, hi)`` is half-open and returns at least one entry when ``lo < hi`` even if that
  one entry exceeds ``max_bytes``.

A new cluster: ``MemoryStorage.bootstrap(voters)`` gives every founding member the same log: one
``ADD_NODE`` conf-change entry per voter at term 1 (indexes 1..n, ascending member id), a hard
state with term 1 and commit n, and a ``ConfState`` with those voters. The entries are handed to
the caller as committed entries, so a state machine that keeps a member list sees every founding
member added; a member that joins later learns them by replaying the same entries.
"""

from __future__ import annotations

from array import array
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


_TYPES = tuple(sorted(EntryType))  # EntryType by value
assert all(int(t) == v for v, t in enumerate(_TYPES))


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` whose payload fits ``max_bytes``; never fewer than one."""
    if max_bytes is None or len(ents) <= 1:
        return ents
    n = _fitting([len(e.data) for e in ents], max_bytes)
    return ents if n == len(ents) else ents[:n]


def _fitting(sizes: Sequence[int], max_bytes: int) -> int:
    """How many of the leading payload sizes ``sizes`` fit ``max_bytes``; at least one."""
    total = 0
    for i, n in enumerate(sizes):
        total += n
        if total > max_bytes and i > 0:
            return i
    return len(sizes)


class MemoryStorage:
    """An in-memory ``Storage`` with the writer side the caller drives."""

    __slots__ = ("_conf_state", "_datas", "_hard_state", "_offset", "_snapshot", "_terms", "_types")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._conf_state = ConfState()
        self._reset(Index(0), Term(0))

    def _reset(self, index: Index, term: Term) -> None:
        """Only the dummy entry: (``index``, ``term``)."""
        self._offset = index
        self._terms = array("q", (term,))
        self._types = bytearray(1)
        self._datas: list[bytes] = [b""]

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
        offset = self._offset
        if lo <= offset:
            raise CompactedError(f"entries from {lo}: compacted up to {offset}")
        last = offset + len(self._terms) - 1
        if hi > last + 1:
            raise UnavailableError(f"entries up to {hi}: last index is {last}")
        first, end = lo - offset, hi - offset
        datas = self._datas
        if max_bytes is not None and end - first > 1:
            end = first + _fitting([len(d) for d in datas[first:end]], max_bytes)
        terms, types, kinds = self._terms, self._types, _TYPES
        return [
            Entry(Term(terms[k]), Index(offset + k), kinds[types[k]], datas[k])
            for k in range(first, end)
        ]

    def term(self, i: Index) -> Term:
        offset = self._offset
        if i < offset:
            raise CompactedError(f"term of {i}: compacted up to {offset}")
        if i - offset >= len(self._terms):
            raise UnavailableError(f"term of {i}: last index is {self.last_index()}")
        return Term(self._terms[i - offset])

    def first_index(self) -> Index:
        return Index(self._offset + 1)

    def last_index(self) -> Index:
        return Index(self._offset + len(self._terms) - 1)

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
        self._reset(snap.metadata.index, snap.metadata.term)

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (which must be in the log)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )
        assert index <= self.last_index(), f"snapshot {index} is beyond the last index"
        term = Term(self._terms[index - self._offset])
        self._snapshot = Snapshot(SnapshotMetadata(index, term, conf_state), data)
        return self._snapshot

    def compact(self, index: Index) -> None:
        """Discard the entries up to and including ``index``."""
        offset = self._offset
        if index <= offset:
            raise CompactedError(f"compact to {index}: already compacted up to {offset}")
        assert index <= self.last_index(), f"compact to {index} is beyond the last index"
        i = index - offset  # entry ``index`` becomes the dummy
        del self._terms[:i]
        del self._types[:i]
        del self._datas[:i]
        self._types[0] = 0
        self._datas[0] = b""
        self._offset = index

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, replacing any conflicting tail of the log."""
        if not entries:
            return
        first = self._offset + 1
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        at = entries[0].index - self._offset
        terms = self._terms
        assert at <= len(terms), f"missing log entries before {entries[0].index}"
        if at < len(terms):
            del terms[at:]
            del self._types[at:]
            del self._datas[at:]
        terms.extend([e.term for e in entries])
        self._types.extend([e.type for e in entries])
        self._datas.extend([e.data for e in entries])
