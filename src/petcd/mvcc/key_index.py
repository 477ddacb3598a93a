"""The in-memory key index: for every key, its revisions; keys kept in sorted order.

Theory of operation
-------------------
etcd keeps, for each key, a ``keyIndex`` of generations (a generation runs from a creation to
the tombstone that ends it). petcd stores the same information flat, to keep memory per key
small: one sequence of revisions in increasing order, where a revision ``(main, sub)`` is
packed as ``main << 32 | sub`` and a tombstone (a deletion) is stored negated::

    key "foo": put@2  put@5  del@7   put@9          -> [2<<32, 5<<32, -(7<<32), 9<<32]
               '--- generation 1 ---' '- gen 2 -...'

How a key's revisions are stored:

- one revision: a bare ``int``;
- two to ``PACKED_MAX``: ``bytes``, each revision a native signed 64-bit integer
  (``_seq`` reads them as a sequence, ``with_rev`` appends);
- more (a key written often between two compactions), or a revision whose main revision is
  2**31 or more (it no longer fits 64 bits packed): a ``list`` of ``int``.

``bytes`` are what the cyclic garbage collector never tracks, and about 100 bytes smaller
than a two-revision list. With a list for every key written twice, updates to 1,000,000
keys made the collector stop the member for 70-100 ms at a time (its young generations full
of new lists), and a restart spent about a second of its start-up in the collector.

The key is live at main revision ``r`` iff the last entry with ``main <= r`` exists and is
positive; that entry is the revision to load from the backend.

A live key's create revision and version (``live_generation``) come from its revisions too,
so that a put need not read the stored KeyValue it replaces (etcd's ``keyIndex`` keeps them
for the same reason): the latest generation starts after the last tombstone, its first
revision is the creation and each revision adds one to the version. Only the first
generation in the sequence may have lost its start to a compaction (or never had it on
disk: a restart reads only what compaction left); for such a key ``_base`` holds the create
revision and version of its first stored revision. ``_base`` is small: keys written again
between two compactions only, one 2-tuple each. For a key kept as a list (more than
``PACKED_MAX`` revisions) ``_tail`` holds the create revision and version of its latest
revision, kept up to date by ``put``, so that a put never walks a long history.

Compaction at ``R`` (etcd 3.5.17's ``keyIndex.compact``): let ``p`` be the last entry with
``main <= R``. If it is a tombstone below R, everything up to and including it is dropped (the
generation ended before R); otherwise everything before it is dropped and ``p`` is "kept"
(returned in the keep set: the backend must not delete it), a tombstone at R itself included,
so that a watch from R still sees that deletion (etcd #18089; the next compaction drops it).
A key whose list becomes empty leaves the index. ``keep_of`` is etcd's ``keep`` for the hashes:
the same entries but no tombstone (etcd leaves the one at R out there, for hash values equal to
older versions').

Keys are ordered by ``SortedKeys``, a list of sorted chunks (bisect on the chunk maxima, then
inside one chunk), so that inserting a new key costs O(sqrt-ish) instead of the O(n) of one
big list, and a range is a walk from one bisect.

Invariants
----------
- every revision list is non-empty and strictly increasing in ``abs()``;
- ``SortedKeys`` holds exactly the keys of the revision dict;
- ``_base[k]`` exists iff ``k``'s first stored revision is a put that is not its
  generation's creation (version > 1); it is then ``(create main revision, version)`` of
  that revision;
- ``_tail[k]`` exists iff ``k``'s revisions are a ``list`` whose last entry is a put; it is
  then ``(create main revision, version)`` of that put.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Iterator, Sequence

SUB_BITS = 32
SUB_MASK = (1 << SUB_BITS) - 1


def pack_rev(main: int, sub: int) -> int:
    return (main << SUB_BITS) | sub


def rev_main(rev: int) -> int:
    return abs(rev) >> SUB_BITS


PACKED_MAX = 16  # a key keeps up to this many revisions packed in bytes, more in a list
_REV = struct.Struct("q")  # native order
_pack = _REV.pack
_unpack_from = _REV.unpack_from
# Packed revisions -> a tuple of ints, by length in bytes (the tuple is short-lived).
_UNPACK = {8 * n: struct.Struct(f"{n}q").unpack for n in range(1, PACKED_MAX + 1)}


def new_revs(first: int, second: int) -> bytes | list[int]:
    """The revisions of a key that gets its second one."""
    try:
        return _pack(first) + _pack(second)
    except struct.error:  # past 2**31 main revisions
        return [first, second]


def with_rev(revs: bytes | list[int], rev: int) -> bytes | list[int]:
    """A key's revisions (two or more) with ``rev`` appended: new bytes while short enough,
    else a list (a list given is appended to in place and returned)."""
    if type(revs) is bytes:
        if len(revs) < 8 * PACKED_MAX:
            try:
                return revs + _pack(rev)
            except struct.error:
                pass
        return [*_UNPACK[len(revs)](revs), rev]
    revs.append(rev)  # type: ignore[union-attr]
    return revs


def _seq(revs: bytes | list[int]) -> Sequence[int]:
    """A key's revisions (two or more) as a sequence of ints."""
    return _UNPACK[len(revs)](revs) if type(revs) is bytes else revs


def _last(revs: _Revs) -> int:
    if type(revs) is int:
        return revs
    if type(revs) is bytes:
        return _unpack_from(revs, len(revs) - 8)[0]  # type: ignore[no-any-return]
    return revs[-1]  # type: ignore[index]


def _rest(revs: bytes | list[int], start: int) -> _Revs | None:
    """What stores a key's revisions from position ``start`` on (None: nothing is left)."""
    n = (len(revs) >> 3 if type(revs) is bytes else len(revs)) - start
    if n <= 0:
        return None
    if type(revs) is bytes:
        if n == 1:
            first: int = _unpack_from(revs, 8 * start)[0]
            return first
        return revs[8 * start :]
    if n == 1:
        return revs[start]
    rest = revs[start:]
    if n <= PACKED_MAX:
        try:
            return b"".join(map(_pack, rest))
        except struct.error:
            pass
    return rest


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

    def count(self, start: bytes, end: bytes | None) -> int:
        """How many keys ``start <= key < end`` (``end=None``: unbounded): a walk over the
        chunks' sizes, not the keys."""
        return max(0, self._rank(end) - self._rank(start))  # 0 when end <= start

    def _rank(self, key: bytes | None) -> int:
        """How many keys are below ``key`` (None: all)."""
        if key is None:
            return self._size
        maxes = self._maxes
        i = bisect.bisect_left(maxes, key)
        if i == len(maxes):
            return self._size
        chunks = self._chunks
        return sum(map(len, chunks[:i])) + bisect.bisect_left(chunks[i], key)

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


_Revs = int | bytes | list[int]


class KeyIndex:
    """Revisions per key (see the module docstring).

    Memory: a key with a single revision (the common case: written once, or compacted down
    to its latest version) stores that revision as a bare ``int``; see the module docstring
    for more. ``_as_list`` gives the uniform view.

    ``_dead`` holds the keys whose latest revision is a tombstone (deleted, not yet compacted
    away), so that the live keys of a range at the newest revision are counted from two
    ``SortedKeys.count`` calls instead of a look at every key (``revisions(current=True)``).
    """

    __slots__ = ("_base", "_dead", "_keys", "_revs", "_tail")

    def __init__(self) -> None:
        self._revs: dict[bytes, _Revs] = {}
        self._keys = SortedKeys()
        self._dead = SortedKeys()
        # key -> (create main, version) of its first stored revision, where that is not the
        # creation (see the module docstring)
        self._base: dict[bytes, tuple[int, int]] = {}
        # key -> (create main, version) of its latest revision, for the keys kept as a list
        # whose latest revision is a put (see the module docstring)
        self._tail: dict[bytes, tuple[int, int]] = {}

    @classmethod
    def from_revisions(
        cls,
        revs: dict[bytes, _Revs],
        bases: dict[bytes, tuple[int, int]] | None = None,
        lists: Iterable[bytes] | None = None,
    ) -> KeyIndex:
        """Build from ``{key: revision or revisions}`` (increasing in abs, as read from disk)
        and, for each key whose first revision read is a put with version > 1, ``bases[key]
        = (create main revision, version)`` of that put (from its stored KeyValue).
        ``lists``: the keys whose revisions are a ``list`` (None: look at every key)."""
        index = cls()
        index._revs = revs
        if bases:
            index._base = bases
        tail = index._tail
        for k in revs if lists is None else lists:
            v = revs[k]
            if type(v) is list and v[-1] > 0:
                tail[k] = index._generation(k, v)
        index._keys = SortedKeys(sorted(revs))
        index._dead = SortedKeys(
            sorted(k for k, v in revs.items() if (v if type(v) is int else _last(v)) < 0)
        )
        return index

    def __len__(self) -> int:
        return len(self._revs)

    def put(self, key: bytes, rev: int) -> tuple[int, int]:
        """Record a put of ``key`` at ``rev``; return the new revision's (create main
        revision, version), as ``live_generation`` answers them afterwards (a put need not ask
        for them first: one look-up of the key's revisions for both)."""
        all_revs = self._revs
        revs = all_revs.get(key)
        if revs is None:
            all_revs[key] = rev
            self._keys.add(key)
            return rev >> SUB_BITS, 1
        t = type(revs)
        if t is list:
            last: int = revs[-1]  # type: ignore[index]
            new = with_rev(revs, rev)  # type: ignore[arg-type]  # appended in place
        else:
            seq: Sequence[int] = (
                (revs,) if t is int else _UNPACK[len(revs)](revs)  # type: ignore[arg-type]
            )
            last = seq[-1]
            new = new_revs(last, rev) if t is int else with_rev(revs, rev)  # type: ignore[arg-type]
        assert abs(last) < rev
        all_revs[key] = new
        if last < 0:  # a new generation of a deleted key
            self._dead.remove(key)
            gen = (rev >> SUB_BITS, 1)
        else:
            create, version = self._tail[key] if t is list else self._generation(key, seq)
            gen = (create, version + 1)
        if type(new) is list:  # a list already, or the key's revisions just became one
            self._tail[key] = gen
        return gen

    def tombstone(self, key: bytes, rev: int) -> None:
        revs = self._revs[key]
        if type(revs) is int:
            assert 0 < revs < rev
            self._revs[key] = new_revs(revs, -rev)
        else:
            assert not isinstance(revs, int) and 0 < _last(revs) < rev
            self._revs[key] = with_rev(revs, -rev)
            self._tail.pop(key, None)
        self._dead.add(key)

    def latest(self, key: bytes) -> int | None:
        """The revision of the live key now, or None if absent or deleted."""
        revs = self._revs.get(key)
        if revs is None:
            return None
        t = type(revs)  # _last, inline: every single-key Range comes here
        if t is int:
            last: int = revs  # type: ignore[assignment]
        elif t is bytes:
            last = _unpack_from(revs, len(revs) - 8)[0]  # type: ignore[arg-type]
        else:
            last = revs[-1]  # type: ignore[index]
        return last if last > 0 else None

    def live_generation(self, key: bytes) -> tuple[int, int, int] | None:
        """``(latest revision, create main revision, version)`` of the key if it is live now,
        else None."""
        revs = self._revs.get(key)
        if revs is None:
            return None
        t = type(revs)
        if t is int:
            if revs < 0:  # type: ignore[operator]
                return None
            base = self._base.get(key)
            if base is None:
                return revs, revs >> SUB_BITS, 1  # type: ignore[return-value,operator]
            return revs, base[0], base[1]  # type: ignore[return-value]
        if t is bytes:
            seq: Sequence[int] = _UNPACK[len(revs)](revs)  # type: ignore[arg-type]
            last = seq[-1]
            if last < 0:
                return None
            create, version = self._generation(key, seq)
            return last, create, version
        last = revs[-1]  # type: ignore[index]
        if last < 0:
            return None
        create, version = self._tail[key]
        return last, create, version

    def _generation(self, key: bytes, seq: Sequence[int]) -> tuple[int, int]:
        """(create main revision, version) of ``seq[-1]``, a put of ``key`` whose first
        stored revision is ``seq[0]`` (a walk back to the last tombstone, or to ``seq[0]``)."""
        if min(seq) < 0:  # else one generation from seq[0], found without a walk
            i = len(seq) - 2
            while seq[i] > 0:
                i -= 1
            return seq[i + 1] >> SUB_BITS, len(seq) - 1 - i
        base = self._base.get(key)
        if base is None:
            return seq[0] >> SUB_BITS, len(seq)
        return base[0], base[1] + len(seq) - 1

    def get(self, key: bytes, at_main: int) -> int | None:
        """The revision of the key as of main revision ``at_main``, or None if not live."""
        revs = self._revs.get(key)
        if revs is None:
            return None
        if type(revs) is int:
            return revs if revs > 0 and revs >> SUB_BITS <= at_main else None
        return _at(_seq(revs), at_main)  # type: ignore[arg-type]

    def count_live(self, key: bytes, end: bytes | None) -> int:
        """Live keys in ``[key, end)`` at the newest revision, from the sorted key sets."""
        return self._keys.count(key, end) - self._dead.count(key, end)

    def count_keys(self, key: bytes, end: bytes | None) -> int:
        """Keys in ``[key, end)``, live or not (still in the index)."""
        return self._keys.count(key, end)

    def revisions(
        self,
        key: bytes,
        end: bytes | None,
        at_main: int,
        limit: int = 0,
        current: bool = False,
        count: bool = True,
    ) -> tuple[list[tuple[bytes, int]], int]:
        """Live (key, revision) pairs at ``at_main`` for ``key <= k < end``, and their count.

        ``limit > 0`` caps the list (the count is still the total, as etcd's). ``current``:
        ``at_main`` is the newest revision in the index, so that a key is live iff its latest
        revision is not a tombstone: the walk stops at ``limit`` pairs and the count comes
        from the sorted key sets. ``count=False`` (with ``limit > 0``): the walk stops at
        ``limit`` pairs and the count returned is -1.
        """
        out: list[tuple[bytes, int]] = []
        total = 0
        all_revs = self._revs
        counted = current and limit > 0
        for k in self._keys.irange(key, end):
            revs = all_revs[k]
            if type(revs) is int:
                last = revs
                if abs(last) >> SUB_BITS > at_main:
                    continue
                r: int | None = last if last > 0 else None
            else:
                last = (
                    _unpack_from(revs, len(revs) - 8)[0] if type(revs) is bytes else revs[-1]  # type: ignore[index]
                )
                if abs(last) >> SUB_BITS <= at_main:
                    r = last if last > 0 else None
                else:
                    r = _at(_seq(revs), at_main)  # type: ignore[arg-type]
            if r is None:
                continue
            total += 1
            if limit <= 0 or len(out) < limit:
                out.append((k, r))
                if not count and len(out) == limit:
                    return out, -1
            elif counted:
                return out, self.count_live(key, end)
        return out, total

    def live_keys(self, key: bytes, end: bytes | None) -> list[tuple[bytes, int]]:
        """Keys live now in ``[key, end)`` with their latest revision."""
        out = []
        all_revs = self._revs
        for k in self._keys.irange(key, end):
            last = _last(all_revs[k])
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
        at_bound = at_main << SUB_BITS  # a tombstone from here on is at at_main itself
        all_revs = self._revs
        bases, tails = self._base, self._tail
        emptied = []
        for k in keys:
            revs = all_revs.get(k)
            if revs is None:
                continue
            if type(revs) is int:
                if abs(revs) >= bound:
                    continue
                if revs < 0 and -revs < at_bound:
                    emptied.append(k)
                else:
                    keep.add(revs)
                continue
            assert not isinstance(revs, int)
            seq = _seq(revs)
            if abs(seq[0]) >= bound:
                continue
            p = bisect.bisect_left(seq, bound, key=abs) - 1
            r = seq[p]
            if r < 0 and -r < at_bound:
                p += 1  # the generation ended before at_main: drop the tombstone too
                bases.pop(k, None)  # what is left, if anything, starts with a creation
            elif r < 0:  # a tombstone at at_main: kept, the first stored revision
                keep.add(r)
                bases.pop(k, None)  # what follows it starts with a creation
            else:
                keep.add(r)
                if p:  # seq[p] becomes the first stored revision: a creation, or in _base
                    create, version = self._generation(k, seq[: p + 1])
                    if version > 1:
                        bases[k] = (create, version)
                    else:
                        bases.pop(k, None)
            if p:
                rest = _rest(revs, p)
                if rest is None:
                    emptied.append(k)
                else:
                    all_revs[k] = rest
                    if type(rest) is not list:
                        tails.pop(k, None)
        for k in emptied:
            del all_revs[k]
            bases.pop(k, None)
            tails.pop(k, None)
            self._keys.remove(k)
            self._dead.remove(k)

    def keep(self, at_main: int) -> set[int]:
        """The revisions that ``compact(at_main)`` would keep, less a tombstone at ``at_main``
        (etcd's ``keep``, for the hashes; nothing is changed)."""
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
    ``at_main`` to a list (each append atomic under the GIL) or replace a key's entry by a new
    object, neither of which changes the answer.
    """
    keep: set[int] = set()
    bound = (at_main + 1) << SUB_BITS
    for revs in values:
        if type(revs) is int:
            if 0 < revs < bound:
                keep.add(revs)
            continue
        assert not isinstance(revs, int)
        seq = _seq(revs)
        if abs(seq[0]) >= bound:
            continue
        r = seq[bisect.bisect_left(seq, bound, key=abs) - 1]
        if r > 0:
            keep.add(r)
    return keep


def _as_list(revs: _Revs) -> list[int]:
    return [revs] if type(revs) is int else list(_seq(revs))  # type: ignore[arg-type]


def _at(revs: Sequence[int], at_main: int) -> int | None:
    p = bisect.bisect_left(revs, (at_main + 1) << SUB_BITS, key=abs)
    if p == 0:
        return None
    r = revs[p - 1]
    return r if r > 0 else None
