"""The in-memory key index: for every key, its revisions; keys kept in sorted order.

Theory of operation
-------------------
etcd keeps, for each key, a ``keyIndex`` of generations (a generation runs from a creation to
the tombstone that ends it). petcd stores the same information flat, to keep memory per key
small: one ``list[int]`` of revisions in increasing order, where a revision ``(main, sub)`` is
packed as ``main << 32 | sub`` and a tombstone (a deletion) is stored negated::

    key "foo": put@2  put@5  del@7   put@9          -> [2<<32, 5<<32, -(7<<32), 9<<32]
               '--- generation 1 ---' '- gen 2 -...'

A key with a single revision stores it as a bare ``int`` (no list) to save memory.

The key is live at main revision ``r`` iff the last entry with ``main <= r`` exists and is
positive; that entry is the revision to load from the backend. Version and create revision
are not kept here: they are in the stored KeyValue.

Compaction at ``R`` (etcd's ``keyIndex.compact``): let ``p`` be the last entry with
``main <= R``. If it is a tombstone, everything up to and including it is dropped (the
generation ended at or before R); otherwise everything before it is dropped and ``p`` is
"kept" (returned in the keep set: the backend must not delete it). A key whose list becomes
empty leaves the index. ``keep(R)`` computes the same set without changing anything.

Keys are ordered by ``SortedKeys``, a list of sorted chunks (bisect on the chunk maxima, then
inside one chunk), so that inserting a new key costs O(sqrt-ish) instead of the O(n) of one
big list, and a range is a walk from one bisect.

Invariants
----------
- every revision list is non-empty and strictly increasing in ``abs()``;
- ``SortedKeys`` holds exactly the keys of the revision dict.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

SUB_BITS = 32
SUB_MASK = (1 << SUB_BITS) - 1


def pack_rev(main: int, sub: int) -> int:
    return (main << SUB_BITS) | sub


def rev_main(rev: int) -> int:
    return abs(rev) >> SUB_BITS


class SortedKeys:
    """A sorted set of byte strings as a list of sorted chunks."""

    __slots__ = ("_chunks", "_load", "_maxes", "_size")

    def __init__(self, sorted_keys: Iterable[bytes] = (), load: int = 512) -> None:
        self._load = load
        keys = list(sorted_keys)
        self._chunks: list[list[bytes]] = [keys[i : i + load] for i in range(0, len(keys), load)]
        self._maxes: list[bytes] = [c[-1] for c in self._chunks]
        self._size = len(keys)

    def __len__(self) -> int:
        return self._size

    def add(self, key: bytes) -> None:
        """Insert a key that is not present."""
        maxes = self._maxes
        self._size += 1
        if not maxes:
            self._chunks.append([key])
            maxes.append(key)
            return
        i = bisect.bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            chunk = self._chunks[i]
            chunk.append(key)
            maxes[i] = key
        else:
            chunk = self._chunks[i]
            bisect.insort(chunk, key)
        if len(chunk) > 2 * self._load:
            half = len(chunk) // 2
            self._chunks[i : i + 1] = [chunk[:half], chunk[half:]]
            maxes[i : i + 1] = [chunk[half - 1], chunk[-1]]

    def remove(self, key: bytes) -> None:
        """Remove a key that is present."""
        i = bisect.bisect_left(self._maxes, key)
        chunk = self._chunks[i]
        j = bisect.bisect_left(chunk, key)
        assert chunk[j] == key
        del chunk[j]
        self._size -= 1
        if not chunk:
            del self._chunks[i]
            del self._maxes[i]
        elif j == len(chunk):
            self._maxes[i] = chunk[-1]

    def irange(self, start: bytes, end: bytes | None) -> Iterator[bytes]:
        """Keys with ``start <= key < end`` (``end=None``: unbounded), ascending."""
        i = bisect.bisect_left(self._maxes, start)
        if i == len(self._maxes):
            return
        j = bisect.bisect_left(self._chunks[i], start)
        for chunk in self._chunks[i:]:
            if end is not None and chunk[-1] >= end:
                for k in chunk[j:] if j else chunk:
                    if k >= end:
                        return
                    yield k
                return
            yield from (chunk[j:] if j else chunk)
            j = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield from chunk


_Revs = int | list[int]


class KeyIndex:
    """Revisions per key (see the module docstring).

    Memory: a key with a single revision (the common case: written once, or compacted down
    to its latest version) stores that revision as a bare ``int`` instead of a one-element
    list, which saves about 90 bytes per key. ``_as_list`` gives the uniform view.
    """

    __slots__ = ("_keys", "_revs")

    def __init__(self) -> None:
        self._revs: dict[bytes, _Revs] = {}
        self._keys = SortedKeys()

    @classmethod
    def from_revisions(cls, revs: dict[bytes, _Revs]) -> KeyIndex:
        """Build from ``{key: revision or revisions}`` (increasing in abs, as read from disk)."""
        index = cls()
        index._revs = revs
        index._keys = SortedKeys(sorted(revs))
        return index

    def __len__(self) -> int:
        return len(self._revs)

    def put(self, key: bytes, rev: int) -> None:
        all_revs = self._revs
        revs = all_revs.get(key)
        if revs is None:
            all_revs[key] = rev
            self._keys.add(key)
        elif type(revs) is int:
            assert abs(revs) < rev
            all_revs[key] = [revs, rev]
        else:
            assert isinstance(revs, list) and abs(revs[-1]) < rev
            revs.append(rev)

    def tombstone(self, key: bytes, rev: int) -> None:
        revs = self._revs[key]
        if type(revs) is int:
            assert 0 < revs < rev
            self._revs[key] = [revs, -rev]
        else:
            assert isinstance(revs, list) and 0 < revs[-1] < rev
            revs.append(-rev)

    def latest(self, key: bytes) -> int | None:
        """The revision of the live key now, or None if absent or deleted."""
        revs = self._revs.get(key)
        if revs is None:
            return None
        last = revs if type(revs) is int else revs[-1]  # type: ignore[index]
        return last if last > 0 else None

    def get(self, key: bytes, at_main: int) -> int | None:
        """The revision of the key as of main revision ``at_main``, or None if not live."""
        revs = self._revs.get(key)
        if revs is None:
            return None
        if type(revs) is int:
            return revs if revs > 0 and revs >> SUB_BITS <= at_main else None
        return _at(revs, at_main)  # type: ignore[arg-type]

    def revisions(
        self, key: bytes, end: bytes | None, at_main: int, limit: int = 0
    ) -> tuple[list[tuple[bytes, int]], int]:
        """Live (key, revision) pairs at ``at_main`` for ``key <= k < end``, and their count.

        ``limit > 0`` caps the list (the count is still the total, as etcd's).
        """
        out: list[tuple[bytes, int]] = []
        total = 0
        all_revs = self._revs
        for k in self._keys.irange(key, end):
            revs = all_revs[k]
            if type(revs) is int:
                last = revs
                if abs(last) >> SUB_BITS > at_main:
                    continue
                r: int | None = last if last > 0 else None
            else:
                last = revs[-1]  # type: ignore[index]
                if abs(last) >> SUB_BITS <= at_main:
                    r = last if last > 0 else None
                else:
                    r = _at(revs, at_main)  # type: ignore[arg-type]
            if r is None:
                continue
            total += 1
            if limit <= 0 or len(out) < limit:
                out.append((k, r))
        return out, total

    def live_keys(self, key: bytes, end: bytes | None) -> list[tuple[bytes, int]]:
        """Keys live now in ``[key, end)`` with their latest revision."""
        out = []
        all_revs = self._revs
        for k in self._keys.irange(key, end):
            revs = all_revs[k]
            last = revs if type(revs) is int else revs[-1]  # type: ignore[index]
            if last > 0:
                out.append((k, last))
        return out

    def keys_snapshot(self) -> list[bytes]:
        """Every key now, in no particular order (for ``compact_keys``)."""
        return list(self._revs)

    def compact(self, at_main: int) -> set[int]:
        """Drop what compaction at ``at_main`` removes; return the revisions <= it kept."""
        keep: set[int] = set()
        self.compact_keys(self.keys_snapshot(), at_main, keep)
        return keep

    def compact_keys(self, keys: Sequence[bytes], at_main: int, keep: set[int]) -> None:
        """``compact`` for some keys only, adding the revisions <= ``at_main`` kept to ``keep``.

        A compaction may be spread over calls on slices of the key list taken when it started
        (keys created since then have only later revisions; keys gone since are skipped):
        reads at ``at_main`` or later give the same answers before, between and after them.
        """
        bound = (at_main + 1) << SUB_BITS
        all_revs = self._revs
        emptied = []
        for k in keys:
            revs = all_revs.get(k)
            if revs is None:
                continue
            if type(revs) is int:
                if abs(revs) >= bound:
                    continue
                if revs < 0:
                    emptied.append(k)
                else:
                    keep.add(revs)
                continue
            assert isinstance(revs, list)
            if abs(revs[0]) >= bound:
                continue
            p = bisect.bisect_left(revs, bound, key=abs) - 1
            r = revs[p]
            if r < 0:
                del revs[: p + 1]
            else:
                if p:
                    del revs[:p]
                keep.add(r)
            if len(revs) == 1:
                all_revs[k] = revs[0]
            elif not revs:
                emptied.append(k)
        for k in emptied:
            del all_revs[k]
            self._keys.remove(k)

    def keep(self, at_main: int) -> set[int]:
        """The revisions that ``compact(at_main)`` would keep (nothing is changed)."""
        return keep_of(self._revs.values(), at_main)

    def values_snapshot(self) -> list[_Revs]:
        """Every key's revisions now (the lists themselves), for ``keep_of`` in another thread
        while this one goes on: see ``keep_of``."""
        return list(self._revs.values())

    def items(self) -> Iterator[tuple[bytes, list[int]]]:
        """(key, revisions) in key order (copies: mutating them changes nothing)."""
        revs = self._revs
        for k in self._keys:
            yield k, _as_list(revs[k])


def keep_of(values: Iterable[_Revs], at_main: int) -> set[int]:
    """``KeyIndex.keep`` over ``values`` (all of an index's, or a ``values_snapshot``).

    On a snapshot, this may run in another thread while the index's own thread goes on writing,
    as long as no compaction changes the index meanwhile: writes only append revisions above
    ``at_main`` to the lists (each append atomic under the GIL) or replace a key's entry by a
    new object, neither of which changes the answer.
    """
    keep: set[int] = set()
    bound = (at_main + 1) << SUB_BITS
    for revs in values:
        if type(revs) is int:
            if 0 < revs < bound:
                keep.add(revs)
            continue
        assert isinstance(revs, list)
        if abs(revs[0]) >= bound:
            continue
        r = revs[bisect.bisect_left(revs, bound, key=abs) - 1]
        if r > 0:
            keep.add(r)
    return keep


def _as_list(revs: _Revs) -> list[int]:
    return [revs] if type(revs) is int else list(revs)  # type: ignore[arg-type]


def _at(revs: list[int], at_main: int) -> int | None:
    p = bisect.bisect_left(revs, (at_main + 1) << SUB_BITS, key=abs)
    if p == 0:
        return None
    r = revs[p - 1]
    return r if r > 0 else None
