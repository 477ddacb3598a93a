"""The Raft log as the core sees it: durable storage plus an unstable tail not yet persisted.

Theory of operation
-------------------
``RaftLog`` joins two parts::

      storage (persisted, read-only here)         unstable (not yet handed out as persisted)
    [ snapshot | first_index ... stored last ] [ offset ... last_index ]
                                                  ^ entries given to the caller in Ready.entries

``Unstable`` holds entries (and possibly a snapshot) that the core has accepted but the caller
has not yet reported persisted; ``stable_to`` drops them once ``RawNode.advance`` says they are
durable. ``committed`` and ``applied`` are the two cursors of the Raft paper.

Invariants
----------
- ``applied <= committed <= last_index()``.
- ``unstable.offset == last stored index + 1`` when the unstable part is extended by appends;
  an unstable snapshot at index ``i`` means ``offset == i + 1``.
- An entry at or below ``committed`` is never replaced (a conflict there is a bug: assert).

Hot path: appends and slices work on whole lists; nothing here loops per entry except the
conflict search of a follower receiving entries it partly has and size limiting.
"""

from __future__ import annotations

from petcd.raft.errors import CompactedError, UnavailableError
from petcd.raft.storage import Storage, limit_size
from petcd.raft.types import Entry, Index, Snapshot, Term


class Unstable:
    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: Index) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> Index | None:
        if self.snapshot is not None:
            return Index(self.snapshot.metadata.index + 1)
        return None

    def maybe_last_index(self) -> Index | None:
        if self.entries:
            return Index(self.offset + len(self.entries) - 1)
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: Index) -> Term | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        k = i - self.offset
        if k >= len(self.entries):
            return None
        return self.entries[k].term

    def stable_to(self, i: Index, t: Term) -> None:
        gt = self.maybe_term(i)
        if gt is None or gt != t or i < self.offset:
            return
        del self.entries[: i + 1 - self.offset]
        self.offset = Index(i + 1)

    def stable_snap_to(self, i: Index) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, s: Snapshot) -> None:
        self.offset = Index(s.metadata.index + 1)
        self.entries = []
        self.snapshot = s

    def truncate_and_append(self, ents: list[Entry]) -> None:
        fi = ents[0].index
        n = len(self.entries)
        if fi == self.offset + n:
            self.entries.extend(ents)
        elif fi <= self.offset:
            # Replaces the whole unstable part (a new leader overwrote our tail).
            self.offset = fi
            self.entries = list(ents)
        else:
            assert fi < self.offset + n, (
                f"appending at {fi} leaves a gap after {self.offset + n - 1}"
            )
            del self.entries[fi - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: Index, hi: Index) -> list[Entry]:
        assert self.offset <= lo <= hi <= self.offset + len(self.entries), (
            f"unstable slice [{lo}, {hi}) out of [{self.offset}, {self.offset + len(self.entries)})"
        )
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    __slots__ = ("applied", "committed", "storage", "unstable")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(Index(last + 1))
        self.committed = Index(first - 1)
        self.applied = Index(first - 1)

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- indexes and terms -------------------------------------------------------------------

    def first_index(self) -> Index:
        i = self.unstable.maybe_first_index()
        if i is not None:
            return i
        return self.storage.first_index()

    def last_index(self) -> Index:
        u = self.unstable
        if u.entries:
            return Index(u.offset + len(u.entries) - 1)
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def term(self, i: Index) -> Term:
        """The term of entry ``i``; 0 beyond the last index; ``CompactedError`` before the
        snapshot index; ``UnavailableError`` when storage lacks it."""
        u = self.unstable
        k = i - u.offset
        if k >= 0:
            # The unstable part is authoritative from its offset on; past its end is past the
            # last index (an empty unstable part starts right after storage or the snapshot).
            return u.entries[k].term if k < len(u.entries) else Term(0)
        s = u.snapshot
        if s is not None:
            # offset == snapshot index + 1: only the snapshot's own index is left to answer.
            if i == s.metadata.index:
                return s.metadata.term
            raise CompactedError(f"term of {i}: compacted up to {s.metadata.index}")
        return self.storage.term(i)

    def last_term(self) -> Term:
        return self.term(self.last_index())

    def zero_term_on_compacted(self, i: Index) -> Term:
        try:
            return self.term(i)
        except CompactedError:
            return Term(0)

    def match_term(self, i: Index, t: Term) -> bool:
        try:
            return self.term(i) == t
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, lasti: Index, term: Term) -> bool:
        """Whether a candidate's log ending at (lasti, term) is at least as up to date as ours."""
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # -- appending ---------------------------------------------------------------------------

    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> Index:
        """The index of the first entry of ``ents`` that we lack or hold with another term,
        or 0 when we hold them all."""
        if not ents:
            return Index(0)
        last = self.last_index()
        if ents[0].index > last:
            return ents[0].index
        for e in ents:
            if e.index > last or not self.match_term(e.index, e.term):
                return e.index
        return Index(0)

    def find_conflict_by_term(self, index: Index, term: Term) -> tuple[Index, Term]:
        """The largest index <= ``index`` whose term is <= ``term``, with its term.

        The leader's and follower's logs share nothing at or above an index whose term exceeds
        the other side's term there, so a whole term can be skipped in one round trip.
        """
        if index > self.last_index():
            return index, Term(0)
        while index > 0:
            try:
                our = self.term(index)
            except (CompactedError, UnavailableError):
                return index, Term(0)
            if our <= term:
                return index, our
            index = Index(index - 1)
        return Index(0), Term(0)

    def maybe_append(
        self, index: Index, log_term: Term, committed: Index, ents: tuple[Entry, ...]
    ) -> Index | None:
        """Append a leader's ``ents`` following (index, log_term); the new last index or None
        when our log does not contain (index, log_term)."""
        if not self.match_term(index, log_term):
            return None
        lastnewi = Index(index + len(ents))
        ci = self.find_conflict(ents)
        if ci:
            assert ci > self.committed, (
                f"entry {ci} conflicts with committed entry (committed {self.committed})"
            )
            start = ci - (index + 1)
            self.append(list(ents[start:]) if start else list(ents))
        self.commit_to(min(committed, lastnewi))
        return lastnewi

    def append(self, ents: list[Entry]) -> Index:
        if not ents:
            return self.last_index()
        assert ents[0].index - 1 >= self.committed, (
            f"appending at {ents[0].index} would overwrite committed {self.committed}"
        )
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    # -- reading -----------------------------------------------------------------------------

    def slice(self, lo: Index, hi: Index, max_bytes: int | None) -> list[Entry]:
        """Entries [lo, hi), limited to ``max_bytes`` of payload (at least one entry)."""
        fi = self.first_index()
        if lo < fi:
            raise CompactedError(f"slice from {lo}: first index is {fi}")
        assert lo <= hi <= self.last_index() + 1, f"slice [{lo}, {hi}) out of bounds"
        if lo == hi:
            return []
        offset = self.unstable.offset
        ents: list[Entry] = []
        if lo < offset:
            stop = min(hi, offset)
            ents = self.storage.entries(lo, Index(stop), max_bytes)
            if len(ents) < stop - lo or hi <= offset:
                return ents
        if hi > offset:
            u = self.unstable.slice(Index(max(lo, offset)), hi)
            if ents:
                ents = ents + u
                return limit_size(ents, max_bytes)
            return limit_size(u, max_bytes)
        return ents

    def entries(self, lo: Index, max_bytes: int | None) -> list[Entry]:
        last = self.last_index()
        if lo > last:
            return []
        return self.slice(lo, Index(last + 1), max_bytes)

    def next_committed_ents(self, max_bytes: int | None = None) -> list[Entry]:
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(Index(off), Index(self.committed + 1), max_bytes)
        return []

    def has_next_committed_ents(self) -> bool:
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    # -- cursors -----------------------------------------------------------------------------

    def commit_to(self, tocommit: Index) -> None:
        if tocommit > self.committed:
            assert tocommit <= self.last_index(), (
                f"commit {tocommit} is beyond the last index {self.last_index()}"
            )
            self.committed = tocommit

    def maybe_commit(self, max_index: Index, term: Term) -> bool:
        # Figure 8: only an entry of the leader's own term commits by counting replicas.
        if max_index > self.committed and self.zero_term_on_compacted(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: Index) -> None:
        if i == 0:
            return
        assert self.applied <= i <= self.committed, (
            f"applied {i} out of range [{self.applied}, {self.committed}]"
        )
        self.applied = i

    def stable_to(self, i: Index, t: Term) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: Index) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, s: Snapshot) -> None:
        self.committed = s.metadata.index
        self.unstable.restore(s)
