"""Unit tests of the in-memory key index and its sorted key list."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.mvcc.key_index import PACKED_MAX, KeyIndex, SortedKeys, _as_list, keep_of, pack_rev


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=2)), max_size=300),
    start=st.binary(max_size=2),
    end=st.one_of(st.none(), st.binary(max_size=2)),
)
def test_sorted_keys_behaves_like_a_sorted_set(
    ops: list[tuple[bool, bytes]], start: bytes, end: bytes | None
) -> None:
    keys = SortedKeys(load=4)  # tiny chunks: splits and chunk removal happen often
    model: set[bytes] = set()
    for add, k in ops:
        if add and k not in model:
            keys.add(k)
            model.add(k)
        elif not add and k in model:
            keys.remove(k)
            model.discard(k)
    assert list(keys) == sorted(model) and len(keys) == len(model)
    want = [k for k in sorted(model) if k >= start and (end is None or k < end)]
    assert list(keys.irange(start, end)) == want


def r(main: int, sub: int = 0) -> int:
    return pack_rev(main, sub)


def _dead_keys(ki: KeyIndex) -> list[bytes]:
    """The keys of the index whose latest revision is a tombstone, from their histories."""
    return [k for k, revs in ki.items() if revs[-1] < 0]


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(st.binary(min_size=1, max_size=2), max_size=60, unique=True),
    start=st.binary(max_size=2),
    end=st.one_of(st.none(), st.binary(max_size=2)),
)
def test_sorted_keys_count_is_the_length_of_irange(
    keys: list[bytes], start: bytes, end: bytes | None
) -> None:
    sk = SortedKeys(sorted(keys), load=4)
    assert sk.count(start, end) == len(list(sk.irange(start, end)))


def test_get_across_generations() -> None:
    ki = KeyIndex()
    ki.put(b"k", r(2))
    ki.put(b"k", r(4, 1))
    ki.tombstone(b"k", r(6))
    ki.put(b"k", r(8))
    assert [ki.get(b"k", m) for m in range(1, 10)] == [
        None,
        r(2),
        r(2),
        r(4, 1),
        r(4, 1),
        None,
        None,
        r(8),
        r(8),
    ]
    assert ki.latest(b"k") == r(8)
    assert ki.get(b"other", 9) is None


def test_compact_drops_ended_generations_and_keeps_latest_at_or_below() -> None:
    ki = KeyIndex()
    ki.put(b"a", r(2))
    ki.put(b"a", r(3))
    ki.tombstone(b"a", r(4))  # a's generation ends at 4
    ki.put(b"b", r(5))
    ki.put(b"b", r(7))
    ki.put(b"c", r(9))
    assert ki.keep(6) == {r(5)}
    assert ki.keep(4) == set()  # a tombstone is never kept
    keep = ki.compact(6)
    assert keep == {r(5)}
    assert ki.get(b"a", 6) is None and len(ki) == 2  # a left the index entirely
    assert [k for k, _ in ki.items()] == [b"b", b"c"]
    assert ki.get(b"b", 6) == r(5) and ki.get(b"b", 7) == r(7)
    ki.tombstone(b"b", r(10))
    # A tombstone at the compaction revision itself stays (etcd 3.5.17, etcd #18089): a
    # watch from 10 must still see b's deletion. The next compaction drops it.
    assert ki.keep(10) == {r(9)}  # but not in the hash's keep set
    assert ki.compact(10) == {r(9), -r(10)}
    assert [k for k, _ in ki.items()] == [b"b", b"c"] and ki.get(b"b", 10) is None
    assert list(ki._dead) == [b"b"]
    assert ki.compact(11) == {r(9)}
    assert [k for k, _ in ki.items()] == [b"c"]


def test_revisions_counts_all_and_limits_list() -> None:
    ki = KeyIndex()
    for i, k in enumerate([b"a", b"b", b"c", b"d"]):
        ki.put(k, r(i + 2))
    ki.tombstone(b"b", r(6))
    pairs, total = ki.revisions(b"a", None, 6, limit=2)
    assert pairs == [(b"a", r(2)), (b"c", r(4))] and total == 3
    pairs, total = ki.revisions(b"a", b"c", 5)
    assert pairs == [(b"a", r(2)), (b"b", r(3))] and total == 2


def _check_generations(ki: KeyIndex, model: dict[bytes, list[int]]) -> None:
    """``live_generation`` against the full history: the latest revision of a live key, the
    main revision of the first put after its last tombstone, and the puts since; and the
    invariants of ``_base`` and ``_tail``."""
    for k, revs in model.items():
        if revs[-1] < 0:
            assert ki.live_generation(k) is None
            continue
        i = len(revs) - 1
        while i > 0 and revs[i - 1] > 0:
            i -= 1
        assert ki.live_generation(k) == (revs[-1], revs[i] >> 32, len(revs) - i)
    lists = {k for k, v in ki._revs.items() if type(v) is list and v[-1] > 0}
    assert set(ki._tail) == lists
    assert set(ki._base) <= {k for k in ki._revs if _as_list(ki._revs[k])[0] > 0}


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["put", "del", "compact"]), st.sampled_from([b"a", b"b", b"c"])),
        max_size=40,
    ),
    # Just below 2**31: a key's revisions outgrow what 64 bits packed hold, and become a list.
    first_main=st.sampled_from([1, 2**31 - 6]),
)
def test_key_index_matches_a_list_model(ops: list[tuple[str, bytes]], first_main: int) -> None:
    ki = KeyIndex()
    model: dict[bytes, list[int]] = {}  # full history, never compacted
    compacted = first_main - 1
    main = first_main
    for kind, key in ops:
        live = key in model and model[key][-1] > 0
        if kind == "put":
            main += 1
            gen = ki.put(key, r(main))
            model.setdefault(key, []).append(r(main))
            assert (r(main), *gen) == ki.live_generation(key)  # checked against the model below
        elif kind == "del" and live:
            main += 1
            ki.tombstone(key, r(main))
            model[key].append(-r(main))
        elif kind == "compact":
            keep = ki.compact(main)
            compacted = main
            expected_keep = set()
            for revs in model.values():
                at = [x for x in revs if abs(x) >> 32 <= main]
                if at and (at[-1] > 0 or -at[-1] >> 32 == main):  # a tombstone at main stays
                    expected_keep.add(at[-1])
            assert keep == expected_keep
        for at_main in range(max(compacted, 1), main + 1):
            for k, revs in model.items():
                at = [x for x in revs if abs(x) >> 32 <= at_main]
                want = at[-1] if at and at[-1] > 0 else None
                assert ki.get(k, at_main) == want
            pairs, total = ki.revisions(b"a", None, at_main)
            assert [p for _, p in pairs] == [
                ki.get(k, at_main) for k in sorted(model) if ki.get(k, at_main) is not None
            ]
            assert total == len(pairs)
        for start, end in ((b"a", None), (b"b", b"c"), (b"b", None)):
            for limit in (1, 2):  # the count past the limit taken from the sorted key sets
                fast = ki.revisions(start, end, main, limit, current=True)
                assert fast == ki.revisions(start, end, main, limit)
        assert list(ki._dead) == _dead_keys(ki)
        assert ki.keep(main) == {rv for rv in (ki.latest(k) for k in model) if rv is not None}
        _check_generations(ki, model)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "del", "compact", "step"]),
            st.sampled_from([b"a", b"b", b"c", b"d"]),
        ),
        max_size=60,
    )
)
def test_a_compaction_spread_over_steps_between_writes(ops: list[tuple[str, bytes]]) -> None:
    """``compact_keys`` on one key at a time, writes and new compactions in between: reads at
    the compacted revision or later never change, and the keep set of a finished pass is the
    one ``compact`` returns."""
    ki = KeyIndex()
    twin = KeyIndex()  # compacted in one go at every compaction
    model: dict[bytes, list[int]] = {}
    compacted = 0
    main = 1
    job: tuple[int, list[bytes], set[int]] | None = None
    for kind, key in ops:
        live = key in model and model[key][-1] > 0
        if kind == "put":
            main += 1
            for index in (ki, twin):
                gen = index.put(key, r(main))
                assert (r(main), *gen) == index.live_generation(key)
            model.setdefault(key, []).append(r(main))
        elif kind == "del" and live:
            main += 1
            for index in (ki, twin):
                index.tombstone(key, r(main))
            model[key].append(-r(main))
        elif kind == "compact":
            compacted = main
            job = (main, ki.keys_snapshot(), set())  # supersedes a pass still running
            twin_keep = twin.compact(main)
        elif kind == "step" and job is not None:
            at, keys, keep = job
            ki.compact_keys(keys[:1], at, keep)
            if len(keys) > 1:
                job = (at, keys[1:], keep)
            else:
                assert at == compacted and keep == twin_keep
                job = None
        for at_main in range(max(compacted, 1), main + 1):
            for k, revs in model.items():
                at_revs = [x for x in revs if abs(x) >> 32 <= at_main]
                want = at_revs[-1] if at_revs and at_revs[-1] > 0 else None
                assert ki.get(k, at_main) == want
            pairs, total = ki.revisions(b"a", None, at_main)
            assert pairs == twin.revisions(b"a", None, at_main)[0] and total == len(pairs)
        assert ki.keep(main) == twin.keep(main)
        _check_generations(ki, model)
        _check_generations(twin, model)
    if job is not None:
        at, keys, keep = job
        ki.compact_keys(keys, at, keep)
        assert keep == twin_keep
    assert {k: ki.get(k, main) for k in model} == {k: twin.get(k, main) for k in model}
    assert list(ki.revisions(b"", None, main)[0]) == list(twin.revisions(b"", None, main)[0])
    assert ki._revs == twin._revs and list(ki._keys) == list(twin._keys)
    assert list(ki._dead) == list(twin._dead) == _dead_keys(ki)


def test_keep_of_a_snapshot_is_not_changed_by_later_writes() -> None:
    ki = KeyIndex()
    main = 1
    for i in range(30):
        main += 1
        key = b"k%d" % (i % 7)
        if i % 5 == 4 and ki.latest(key) is not None:
            ki.tombstone(key, r(main))
        else:
            ki.put(key, r(main))
    at = main
    expected = ki.keep(at)
    values = ki.values_snapshot()
    for i in range(30):  # ints become lists, lists grow, tombstones, new keys
        main += 1
        key = b"k%d" % (i % 9)
        if i % 3 == 2 and ki.latest(key) is not None:
            ki.tombstone(key, r(main))
        else:
            ki.put(key, r(main))
    assert ki.keep(at) == expected
    assert keep_of(values, at) == expected


def test_rewriting_keys_leaves_nothing_for_the_garbage_collector() -> None:
    ki = KeyIndex()
    for i in range(1000):
        ki.put(b"k%d" % i, r(i + 2))
    gc.disable()
    try:
        before = gc.get_count()[0]
        for i in range(1000):
            ki.put(b"k%d" % i, r(i + 1002))
        ki.tombstone(b"k0", r(2002))
        assert gc.get_count()[0] - before < 50  # a list per key: 1,000 more
    finally:
        gc.enable()
    assert not any(gc.is_tracked(v) for v in ki.values_snapshot())
    assert ki.get(b"k0", 2001) == r(1002) and ki.get(b"k0", 2002) is None
    assert ki.get(b"k1", 1002) == r(3) and ki.latest(b"k1") == r(1003)
    assert dict(ki.items())[b"k0"] == [r(2), r(1002), -r(2002)]


def test_a_long_history_is_a_list_and_a_compaction_packs_it_again() -> None:
    ki = KeyIndex()
    n = PACKED_MAX + 5
    for main in range(2, 2 + n):
        ki.put(b"k", r(main))
    history = [r(m) for m in range(2, 2 + n)]
    assert ki.values_snapshot() == [history]  # a list past PACKED_MAX
    assert [ki.get(b"k", m) for m in (1, 2, 10, n + 1)] == [None, r(2), r(10), r(n + 1)]
    ki.tombstone(b"k", r(n + 2))
    assert ki.get(b"k", n + 2) is None and ki.latest(b"k") is None
    assert ki.keep(n - 3) == {r(n - 3)}
    assert ki.compact(n - 3) == {r(n - 3)}
    [packed] = ki.values_snapshot()
    assert type(packed) is bytes
    assert dict(ki.items())[b"k"] == [r(n - 3), r(n - 2), r(n - 1), r(n), r(n + 1), -r(n + 2)]
    assert ki.compact(n + 1) == {r(n + 1)}
    assert dict(ki.items())[b"k"] == [r(n + 1), -r(n + 2)]
    ki.put(b"k", r(n + 3))
    assert ki.get(b"k", n + 1) == r(n + 1) and ki.get(b"k", n + 2) is None
    assert ki.revisions(b"k", None, n + 3) == ([(b"k", r(n + 3))], 1)
    assert ki.compact(n + 3) == {r(n + 3)}
    assert ki.values_snapshot() == [r(n + 3)]
    ki.tombstone(b"k", r(n + 4))
    assert ki.compact(n + 4) == {-r(n + 4)} and len(ki) == 1  # the tombstone at n + 4 stays
    assert ki.compact(n + 5) == set() and len(ki) == 0


def test_a_revision_past_2_to_the_31_makes_the_packed_revisions_a_list() -> None:
    ki = KeyIndex()
    big = 2**31
    ki.put(b"k", r(big - 2, 1))
    ki.put(b"k", r(big - 1, 7))
    assert type(ki.values_snapshot()[0]) is bytes
    ki.put(b"k", r(big))  # main << 32 | sub no longer fits a signed 64-bit integer
    ki.tombstone(b"k", r(big + 1))
    assert ki.values_snapshot()[0] == [r(big - 2, 1), r(big - 1, 7), r(big), -r(big + 1)]
    assert [ki.get(b"k", m) for m in (big - 1, big, big + 1)] == [r(big - 1, 7), r(big), None]
    assert ki.keep(big) == {r(big)}
    assert ki.compact(big) == {r(big)}
    assert ki.values_snapshot()[0] == [r(big), -r(big + 1)]
    ki.put(b"n", r(big + 2))
    ki.put(b"n", r(big + 3))  # its second revision is already too big: a list at once
    assert ki.values_snapshot()[1] == [r(big + 2), r(big + 3)]
