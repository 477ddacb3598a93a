"""Unit tests of the linearizability checker: hand-written histories, good and bad."""

from __future__ import annotations

import random

import pytest

from tests.robustness.linearizability import (
    KV,
    CheckerTimeout,
    Compare,
    Delete,
    Event,
    Get,
    Operation,
    Put,
    Response,
    Txn,
    check_against_log,
    check_client_revisions,
    check_history,
    check_linearizable,
    check_ops,
    check_real_time_revisions,
    check_unique_write_revisions,
    partition,
)


def put(c: int, t0: int, t1: int | None, key: bytes, value: bytes, rev: int | None) -> Operation:
    resp = None if rev is None else Response(revision=rev)
    return Operation(c, Put(key, value), t0, resp, t1 if resp else None)


def get(c: int, t0: int, t1: int, key: bytes, kv: tuple[bytes, int] | None, rev: int) -> Operation:
    kvs = (KV(key, kv[0], kv[1]),) if kv else ()
    return Operation(c, Get(key), t0, Response(revision=rev, kvs=kvs), t1)


def test_empty_and_sequential_histories_are_linearizable() -> None:
    assert check_history([]).ok
    h = [
        put(1, 0, 10, b"a", b"1", 2),
        get(1, 20, 30, b"a", (b"1", 2), 2),
        put(2, 40, 50, b"a", b"2", 3),
        get(1, 60, 70, b"a", (b"2", 3), 3),
    ]
    assert check_history(h).ok


def test_concurrent_read_may_see_either_value() -> None:
    # The put of "2" overlaps both reads: old then new is fine.
    h = [
        put(1, 0, 10, b"a", b"1", 2),
        put(2, 20, 100, b"a", b"2", 3),
        get(3, 30, 40, b"a", (b"1", 2), 2),
        get(3, 50, 60, b"a", (b"2", 3), 3),
    ]
    assert check_history(h).ok


def test_stale_read_is_rejected() -> None:
    h = [
        put(1, 0, 10, b"a", b"1", 2),
        put(1, 20, 30, b"a", b"2", 3),
        get(2, 40, 50, b"a", (b"1", 2), 2),  # after "2" was acknowledged
    ]
    report = check_linearizable(h)
    assert not report.ok
    assert "not linearizable" in report.errors[0]
    # The header revision went backwards in real time too.
    assert check_real_time_revisions(h)


def test_stale_read_with_fresh_header_is_rejected_by_the_search_alone() -> None:
    h = [
        put(1, 0, 10, b"a", b"1", 2),
        put(1, 20, 30, b"a", b"2", 3),
        get(2, 40, 50, b"a", (b"1", 2), 3),
    ]
    assert not check_real_time_revisions(h)
    assert not check_linearizable(h).ok


def test_new_then_old_value_while_write_overlaps_is_rejected() -> None:
    # Both reads overlap the write, but once a read saw "2" a later read cannot see "1".
    h = [
        put(1, 0, 10, b"a", b"1", 2),
        put(2, 20, 100, b"a", b"2", 3),
        get(3, 30, 40, b"a", (b"2", 3), 3),
        get(3, 50, 60, b"a", (b"1", 2), 3),
    ]
    assert not check_linearizable(h).ok


def test_lost_write_is_rejected() -> None:
    h = [
        put(1, 0, 10, b"a", b"1", 2),
        get(2, 20, 30, b"a", None, 2),  # acknowledged put vanished
    ]
    assert not check_linearizable(h).ok
    log = [Event(2, b"a", b"1", False)]
    assert check_against_log(h, log)  # the log has it, the read does not see it
    h2 = [put(1, 0, 10, b"a", b"1", 2), put(1, 20, 30, b"b", b"x", 3)]
    errors = check_against_log(h2, [Event(3, b"b", b"x", False)])
    assert any("acknowledged write lost" in e for e in errors)


def test_write_that_appears_then_disappears_is_rejected() -> None:
    # An unknown-outcome put is seen, then not seen any more, with no delete in between.
    h = [
        put(1, 0, None, b"a", b"1", None),
        get(2, 10, 20, b"a", (b"1", 2), 2),
        get(2, 30, 40, b"a", None, 2),
    ]
    assert not check_linearizable(h).ok


def test_unknown_write_may_take_effect_or_not() -> None:
    took = [
        put(1, 0, None, b"a", b"1", None),
        get(2, 1000, 1010, b"a", (b"1", 2), 2),
    ]
    assert check_history(took).ok
    did_not = [
        put(1, 0, None, b"a", b"1", None),
        get(2, 1000, 1010, b"a", None, 1),
    ]
    assert check_history(did_not).ok
    # ... but only after it was invoked.
    too_early = [
        get(2, 0, 10, b"a", (b"1", 2), 2),
        put(1, 20, None, b"a", b"1", None),
    ]
    assert not check_linearizable(too_early).ok


def test_unknown_write_takes_effect_late() -> None:
    # Unknown outcome: it may take effect long after the client gave up.
    h = [
        put(1, 0, None, b"a", b"1", None),
        get(2, 10, 20, b"a", None, 1),
        put(3, 30, 40, b"b", b"x", 2),
        get(2, 50, 60, b"a", (b"1", 3), 3),
    ]
    assert check_history(h).ok


def test_revision_going_backwards_is_rejected() -> None:
    # Key-wise the value sequence is fine, but the write's revision is older than the key's.
    h = [
        put(1, 0, 10, b"a", b"1", 5),
        put(1, 20, 30, b"a", b"2", 4),
    ]
    assert not check_linearizable(h).ok
    assert check_client_revisions(h)
    # Across keys: a later write on another key got an older revision.
    h2 = [put(1, 0, 10, b"a", b"1", 5), put(2, 20, 30, b"b", b"2", 4)]
    assert check_linearizable(h2).ok  # per key each is fine...
    assert check_real_time_revisions(h2)  # ... but not in real time
    assert not check_history(h2).ok
    # A read reporting a mod revision above its header revision.
    h3 = [put(1, 0, 10, b"a", b"1", 2), get(2, 20, 30, b"a", (b"1", 2), 1)]
    assert not check_history(h3).ok


def test_duplicate_write_revision_is_rejected() -> None:
    h = [put(1, 0, 10, b"a", b"1", 2), put(2, 0, 10, b"b", b"1", 2)]
    assert check_unique_write_revisions(h)


def test_txn_compare_mod_revision() -> None:
    ok = [
        put(1, 0, 10, b"a", b"1", 2),
        Operation(
            2, Txn(b"a", Compare.MOD_REVISION, 2, value=b"2"), 20, Response(3, succeeded=True), 30
        ),
        Operation(
            3,
            Txn(b"a", Compare.MOD_REVISION, 2, value=b"3"),
            40,
            Response(3, kvs=(KV(b"a", b"2", 3),), succeeded=False),
            50,
        ),
        get(1, 60, 70, b"a", (b"2", 3), 3),
    ]
    assert check_history(ok).ok
    # Two CAS on the same mod revision cannot both succeed.
    both = [
        put(1, 0, 10, b"a", b"1", 2),
        Operation(
            2, Txn(b"a", Compare.MOD_REVISION, 2, value=b"2"), 20, Response(3, succeeded=True), 30
        ),
        Operation(
            3, Txn(b"a", Compare.MOD_REVISION, 2, value=b"3"), 20, Response(4, succeeded=True), 40
        ),
    ]
    assert not check_linearizable(both).ok
    # A CAS on an absent key compares mod revision 0.
    absent = [
        Operation(
            2, Txn(b"a", Compare.MOD_REVISION, 0, value=b"2"), 0, Response(2, succeeded=True), 10
        ),
    ]
    assert check_linearizable(absent).ok


def test_txn_compare_value_and_unknown_txn() -> None:
    h = [
        put(1, 0, 10, b"a", b"1", 2),
        Operation(2, Txn(b"a", Compare.VALUE, expected_value=b"1", value=b"2"), 20, None, None),
        get(1, 30, 40, b"a", (b"2", 3), 3),
        Operation(
            2,
            Txn(b"a", Compare.VALUE, expected_value=b"1", value=b"9"),
            50,
            Response(3, kvs=(KV(b"a", b"2", 3),), succeeded=False),
            60,
        ),
    ]
    assert check_history(h).ok
    wrong = [
        put(1, 0, 10, b"a", b"1", 2),
        Operation(
            2,
            Txn(b"a", Compare.VALUE, expected_value=b"1", value=b"2"),
            20,
            Response(2, kvs=(KV(b"a", b"1", 2),), succeeded=False),
            30,
        ),
    ]
    assert not check_linearizable(wrong).ok


def test_unknown_write_compare_refines_revision() -> None:
    # An unknown put lands at some revision; a CAS on a wrong revision must fail.
    h = [
        put(1, 0, None, b"a", b"1", None),
        get(2, 10, 20, b"a", (b"1", 7), 7),
        Operation(
            2, Txn(b"a", Compare.MOD_REVISION, 6, value=b"2"), 30, Response(8, succeeded=True), 40
        ),
    ]
    assert not check_linearizable(h).ok


def test_delete_and_prefix_reads() -> None:
    h = [
        put(1, 0, 10, b"k/a", b"1", 2),
        put(1, 20, 30, b"k/b", b"2", 3),
        Operation(
            2,
            Get(b"k/", b"k0"),
            40,
            Response(3, kvs=(KV(b"k/a", b"1", 2), KV(b"k/b", b"2", 3))),
            50,
        ),
        Operation(1, Delete(b"k/a"), 60, Response(4, deleted=1), 70),
        Operation(2, Get(b"k/", b"k0"), 80, Response(4, kvs=(KV(b"k/b", b"2", 3),)), 90),
        Operation(1, Delete(b"k/a"), 100, Response(4, deleted=0), 110),
        Operation(
            1, Delete(b"k/", b"k0"), 120, Response(5, deleted=1, kvs=(KV(b"k/b", b"2", 3),)), 130
        ),
        Operation(2, Get(b"k/", b"k0"), 140, Response(5), 150),
    ]
    log = [
        Event(2, b"k/a", b"1", False),
        Event(3, b"k/b", b"2", False),
        Event(4, b"k/a", b"", True),
        Event(5, b"k/b", b"", True),
    ]
    report = check_history(h, log)
    assert report.ok, report.errors
    # A prefix read that misses a key written before it: stale.
    bad = [*h[:2], Operation(2, Get(b"k/", b"k0"), 40, Response(3, kvs=(KV(b"k/b", b"2", 3),)), 50)]
    assert not check_linearizable(bad).ok
    # A delete reporting a count for a key that is not there.
    bad2 = [Operation(1, Delete(b"x"), 0, Response(1, deleted=1), 10)]
    assert not check_linearizable(bad2).ok


def test_log_checks_holes_phantoms_and_read_snapshots() -> None:
    h = [put(1, 0, 10, b"a", b"1", 2), put(1, 20, 30, b"b", b"2", 3)]
    assert check_against_log(h, [Event(2, b"a", b"1", False), Event(3, b"b", b"2", False)]) == []
    assert any("no events at" in e for e in check_against_log(h[:1], [Event(3, b"a", b"1", False)]))
    phantom = [
        Event(2, b"a", b"1", False),
        Event(3, b"b", b"2", False),
        Event(4, b"a", b"zz", False),
    ]
    assert any("phantom" in e for e in check_against_log(h, phantom))
    # A read at revision 3 that returns a's value from the future of the log
    h2 = [*h, Operation(2, Get(b"a"), 40, Response(2, kvs=(KV(b"a", b"1", 2),)), 50)]
    assert check_against_log(h2, [Event(2, b"a", b"1", False), Event(3, b"b", b"2", False)]) == []
    h3 = [*h, Operation(2, Get(b"b"), 40, Response(2, kvs=(KV(b"b", b"2", 3),)), 50)]
    errors = check_against_log(h3, [Event(2, b"a", b"1", False), Event(3, b"b", b"2", False)])
    assert any("read differs" in e for e in errors)


def test_partition_skips_failed_reads() -> None:
    h = [put(1, 0, 10, b"a", b"1", 2), Operation(2, Get(b"a"), 5, None, None)]
    parts = partition(h)
    assert list(parts) == [b"a"] and len(parts[b"a"]) == 1


def _random_register_history(
    rng: random.Random, n_ops: int, clients: int, keys: list[bytes], unknown_p: float
) -> list[Operation]:
    """A history produced by a correct sequential store with random overlapping timings."""
    store: dict[bytes, tuple[bytes, int]] = {}
    revision = 1
    history = []
    t = 0
    seq = 0
    for _ in range(n_ops):
        t += rng.randint(1, 5)
        # linearization point t; invocation before, return after
        call = t - rng.randint(0, 40)
        ret = t + rng.randint(0, 40)
        c = rng.randrange(clients)
        k = rng.choice(keys)
        if rng.random() < 0.5:
            seq += 1
            v = b"v%d" % seq
            revision += 1
            store[k] = (v, revision)
            if rng.random() < unknown_p:
                history.append(Operation(c, Put(k, v), call))
            else:
                history.append(Operation(c, Put(k, v), call, Response(revision), ret))
        else:
            kv = store.get(k)
            kvs = (KV(k, kv[0], kv[1]),) if kv else ()
            history.append(Operation(c, Get(k), call, Response(revision, kvs=kvs), ret))
    return history


@pytest.mark.parametrize("seed", range(5))
def test_random_correct_histories_pass_and_corrupted_ones_fail(seed: int) -> None:
    rng = random.Random(seed)
    h = _random_register_history(rng, 600, 8, [b"a", b"b", b"c"], 0.05)
    assert check_linearizable(h).ok
    # Corrupt one read well after its value was overwritten: make it return a stale value.
    reads = [
        i
        for i, op in enumerate(h)
        if isinstance(op.request, Get) and op.response and op.response.kvs and i > 300
    ]
    i = reads[0]
    op = h[i]
    assert op.response is not None and op.return_ns is not None
    key = op.request.key
    older = [
        o
        for o in h[: max(0, i - 60)]
        if isinstance(o.request, Put)
        and o.request.key == key
        and o.response
        and o.response.revision < op.response.kvs[0].mod_revision
    ]
    assert older
    stale = older[0]
    assert stale.response is not None and isinstance(stale.request, Put)
    bad_resp = Response(
        op.response.revision, kvs=(KV(key, stale.request.value, stale.response.revision),)
    )
    h[i] = Operation(op.client_id, op.request, op.call_ns, bad_resp, op.return_ns)
    assert not check_linearizable(h).ok


def test_a_few_thousand_operations_check_quickly() -> None:
    rng = random.Random(42)
    h = _random_register_history(rng, 4000, 10, [b"k%d" % i for i in range(5)], 0.03)
    report = check_linearizable(h)
    assert report.ok and report.operations == 4000


def test_search_budget() -> None:
    rng = random.Random(1)
    h = _random_register_history(rng, 300, 8, [b"a"], 0.2)
    with pytest.raises(CheckerTimeout):
        check_ops(partition(h)[b"a"], max_states=10)
