"""Unit tests of KVStore: one test per etcd rule and error."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.backend import Backend
from petcd.mvcc import (
    HASHES_MAX,
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    HashKVResult,
    InvalidSortOptionError,
    KeyNotFoundError,
    KeyValue,
    KVStore,
    LeaseNotFoundError,
    LeaseProvidedError,
    MvccError,
    PutRequest,
    RangeRequest,
    RequestOp,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TooManyOpsError,
    TxnRequest,
    TxnResponse,
    ValueProvidedError,
    validate_request,
)
from petcd.mvcc.kvstore import SUB_BITS, add_records, parse_rev_key
from petcd.raft.types import Index, Term
from tests.unit.mvcc.conftest import Harness


def put(key: bytes, value: bytes = b"v", **kw: object) -> RequestOp:
    return RequestOp(request_put=PutRequest(key, value, **kw))  # type: ignore[arg-type]


def delete(key: bytes, end: bytes = b"") -> RequestOp:
    return RequestOp(request_delete_range=DeleteRangeRequest(key, end))


def get(key: bytes, end: bytes = b"", **kw: object) -> RequestOp:
    return RequestOp(request_range=RangeRequest(key, end, **kw))  # type: ignore[arg-type]


def txn(
    *ops: RequestOp, compare: tuple[Compare, ...] = (), failure: tuple[RequestOp, ...] = ()
) -> TxnRequest:
    return TxnRequest(compare, ops, failure)


def keys(h: Harness, key: bytes = b"\x00", end: bytes = b"\x00", rev: int = 0) -> list[bytes]:
    return [kv.key for kv in h.store.range(RangeRequest(key, end, revision=rev)).kvs]


def snapshot(h: Harness) -> tuple[int, list[KeyValue]]:
    s = h.store
    return s.current_revision, list(s.range(RangeRequest(b"\x00", b"\x00")).kvs)


# -- revisions -----------------------------------------------------------------------------


def test_revision_starts_at_1_and_first_put_is_2(h: Harness) -> None:
    assert h.store.current_revision == 1
    resp = h.apply(PutRequest(b"a", b"1"))
    assert resp.header.revision == 2
    assert h.store.get(b"a") == KeyValue(b"a", 2, 2, 1, b"1", 0)


def test_version_counts_puts_and_delete_resets_generation(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"1"))
    h.apply(PutRequest(b"a", b"2"))
    assert h.store.get(b"a") == KeyValue(b"a", 2, 3, 2, b"2", 0)
    h.apply(DeleteRangeRequest(b"a"))
    assert h.store.get(b"a") is None
    h.apply(PutRequest(b"a", b"3"))
    assert h.store.get(b"a") == KeyValue(b"a", 5, 5, 1, b"3", 0)
    assert h.store.get(b"a", revision=3) == KeyValue(b"a", 2, 3, 2, b"2", 0)
    assert h.store.get(b"a", revision=4) is None


def test_delete_of_nothing_does_not_advance_revision(h: Harness) -> None:
    h.apply(PutRequest(b"a"))
    resp = h.apply(DeleteRangeRequest(b"zz"))
    assert resp.deleted == 0 and resp.header.revision == 2
    assert h.store.current_revision == 2


def test_read_only_txn_does_not_advance_revision(h: Harness) -> None:
    h.apply(PutRequest(b"a"))
    resp = h.apply(txn(get(b"a")))
    assert resp.header.revision == 2 and h.store.current_revision == 2
    assert resp.responses[0].response_range is not None
    assert resp.responses[0].response_range.kvs[0].key == b"a"


def test_txn_changes_share_main_revision_with_increasing_sub(h: Harness) -> None:
    h.apply(PutRequest(b"c"))
    resp = h.apply(txn(put(b"a"), put(b"b"), delete(b"c"), get(b"a", b"\x00")))
    assert resp.header.revision == 3
    assert [kv.mod_revision for kv in h.store.range(RangeRequest(b"a", b"c")).kvs] == [3, 3]
    # the read inside the txn saw the txn's own writes
    rr = resp.responses[3].response_range
    assert rr is not None and [kv.key for kv in rr.kvs] == [b"a", b"b"]
    assert rr.header.revision == 3
    # sub revisions ordered the events: a(3,0) b(3,1) c-tombstone(3,2)
    hist = h.backend.range("key", b"")
    assert [k[:17][-1] for k, _ in hist[-3:]] == [0, 1, 2]
    assert hist[-1][0].endswith(b"t")


def test_delete_range_prev_kvs_and_count(h: Harness) -> None:
    for k in (b"a", b"b", b"c"):
        h.apply(PutRequest(k, k))
    resp = h.apply(DeleteRangeRequest(b"a", b"c", prev_kv=True))
    assert resp.deleted == 2
    assert [kv.value for kv in resp.prev_kvs] == [b"a", b"b"]
    assert keys(h) == [b"c"]


# -- range ---------------------------------------------------------------------------------


def test_range_end_conventions(h: Harness) -> None:
    for k in (b"a", b"b", b"ba", b"c"):
        h.apply(PutRequest(k))
    assert keys(h, b"b", b"") == [b"b"]
    assert keys(h, b"b", b"\x00") == [b"b", b"ba", b"c"]
    assert keys(h, b"\x00", b"\x00") == [b"a", b"b", b"ba", b"c"]
    assert keys(h, b"b", b"c") == [b"b", b"ba"]
    assert keys(h, b"c", b"b") == []


def test_range_limit_more_and_count(h: Harness) -> None:
    for k in (b"a", b"b", b"c"):
        h.apply(PutRequest(k))
    r = h.store.range(RangeRequest(b"a", b"\x00", limit=2))
    assert [kv.key for kv in r.kvs] == [b"a", b"b"] and r.more and r.count == 3
    r = h.store.range(RangeRequest(b"a", b"\x00", limit=3))
    assert not r.more and r.count == 3
    r = h.store.range(RangeRequest(b"a", b"\x00", count_only=True))
    assert r.kvs == () and r.count == 3
    r = h.store.range(RangeRequest(b"a", b"\x00", keys_only=True))
    assert all(kv.value == b"" for kv in r.kvs) and r.kvs[0].version == 1


def test_range_sort_and_filters(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"3"))  # rev 2
    h.apply(PutRequest(b"b", b"1"))  # rev 3
    h.apply(PutRequest(b"c", b"2"))  # rev 4
    h.apply(PutRequest(b"a", b"4"))  # rev 5
    by = lambda **kw: [  # noqa: E731
        kv.key
        for kv in h.store.range(RangeRequest(b"a", b"\x00", **kw)).kvs  # type: ignore[arg-type]
    ]
    assert by(sort_target=SortTarget.VALUE) == [b"b", b"c", b"a"]  # NONE + VALUE -> ASCEND
    assert by(sort_order=SortOrder.DESCEND) == [b"c", b"b", b"a"]
    assert by(sort_order=SortOrder.DESCEND, sort_target=SortTarget.MOD) == [b"a", b"c", b"b"]
    assert by(sort_order=SortOrder.ASCEND, sort_target=SortTarget.CREATE) == [b"a", b"b", b"c"]
    assert by(min_mod_revision=4) == [b"a", b"c"]
    assert by(max_mod_revision=3) == [b"b"]
    assert by(min_create_revision=3) == [b"b", b"c"]
    assert by(max_create_revision=2) == [b"a"]
    r = h.store.range(
        RangeRequest(b"a", b"\x00", limit=1, sort_order=SortOrder.DESCEND, min_mod_revision=3)
    )
    # sorting and filters fetch everything, then cut: count is the unfiltered total
    assert [kv.key for kv in r.kvs] == [b"c"] and r.more and r.count == 3


def test_range_past_revision_future_and_compacted(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"1"))
    h.apply(PutRequest(b"a", b"2"))
    h.apply(PutRequest(b"a", b"3"))
    r = h.store.range(RangeRequest(b"a", revision=2))
    assert r.kvs[0].value == b"1" and r.header.revision == 4
    with pytest.raises(FutureRevisionError) as fut:
        h.store.range(RangeRequest(b"a", revision=5))
    assert str(fut.value) == "etcdserver: mvcc: required revision is a future revision"
    h.compact(3)
    with pytest.raises(CompactedError) as comp:
        h.store.range(RangeRequest(b"a", revision=2))
    assert str(comp.value) == "etcdserver: mvcc: required revision has been compacted"
    assert h.store.range(RangeRequest(b"a", revision=3)).kvs[0].value == b"2"


def test_range_validation(h: Harness) -> None:
    with pytest.raises(EmptyKeyError) as e:
        h.store.range(RangeRequest(b""))
    assert str(e.value) == "etcdserver: key is not provided"
    with pytest.raises(InvalidSortOptionError):
        h.store.range(RangeRequest(b"a", sort_target=9))  # NONE + not KEY: etcd would sort
    with pytest.raises(InvalidSortOptionError):
        h.store.range(RangeRequest(b"a", sort_order=SortOrder.DESCEND, sort_target=-1))


def test_range_sort_order_out_of_the_enum_sorts_nothing(h: Harness) -> None:
    # etcd answers such a request in key order, whatever the target (found by
    # tests/compat/test_differential_fuzz.py: petcd refused it with "invalid sort option").
    h.apply(PutRequest(b"a", b"3"))
    h.apply(PutRequest(b"b", b"1"))
    h.apply(PutRequest(b"c", b"2"))
    for order in (7, -1):
        for target in (SortTarget.KEY, SortTarget.VALUE, 9):
            r = h.store.range(
                RangeRequest(b"a", b"\x00", limit=2, sort_order=order, sort_target=target)  # type: ignore[arg-type]
            )
            assert [kv.key for kv in r.kvs] == [b"a", b"b"] and r.more and r.count == 3


# -- put options ---------------------------------------------------------------------------


def test_put_prev_kv_ignore_value_ignore_lease(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"1", lease=7))
    resp = h.apply(PutRequest(b"a", b"2", prev_kv=True, ignore_lease=True))
    assert resp.prev_kv == KeyValue(b"a", 2, 2, 1, b"1", 7)
    assert h.store.get(b"a") == KeyValue(b"a", 2, 3, 2, b"2", 7)
    h.apply(PutRequest(b"a", ignore_value=True, lease=9))
    assert h.store.get(b"a") == KeyValue(b"a", 2, 4, 3, b"2", 9)


def test_ignore_value_on_missing_key_is_key_not_found_and_changes_nothing(h: Harness) -> None:
    before = snapshot(h)
    with pytest.raises(KeyNotFoundError) as e:
        h.apply(PutRequest(b"zz", ignore_value=True))
    assert str(e.value) == "etcdserver: key not found"
    with pytest.raises(KeyNotFoundError):
        h.apply(PutRequest(b"zz", ignore_lease=True))
    assert snapshot(h) == before
    assert h.store.consistent_index() == (2, 1)  # the entries were still applied


def test_put_of_its_own_checks_the_lease_before_the_key_and_a_txn_put_after(
    h: Harness,
) -> None:
    # etcd's Put looks the lease up before the key ignore_value needs; a put in a txn looks
    # for the key first (found by tests/compat/test_differential_fuzz.py).
    store = KVStore(h.backend, lessor=FakeLessor({5}))
    with pytest.raises(LeaseNotFoundError):
        store.apply(PutRequest(b"zz", ignore_value=True, lease=99), index=Index(1), term=Term(1))
    with pytest.raises(KeyNotFoundError):
        store.apply(PutRequest(b"zz", ignore_value=True, lease=5), index=Index(2), term=Term(1))
    with pytest.raises(KeyNotFoundError):
        store.apply(txn(put(b"zz", b"", ignore_value=True, lease=99)), index=Index(3), term=Term(1))
    assert store.current_revision == 1


def test_put_validation_errors(h: Harness) -> None:
    with pytest.raises(EmptyKeyError):
        h.apply(PutRequest(b""))
    with pytest.raises(ValueProvidedError) as e1:
        h.apply(PutRequest(b"a", b"x", ignore_value=True))
    assert str(e1.value) == "etcdserver: value is provided"
    with pytest.raises(LeaseProvidedError) as e2:
        h.apply(PutRequest(b"a", lease=5, ignore_lease=True))
    assert str(e2.value) == "etcdserver: lease is provided"
    with pytest.raises(EmptyKeyError):
        h.apply(DeleteRangeRequest(b""))
    assert h.store.current_revision == 1


class FakeLessor:
    def __init__(self, leases: set[int]) -> None:
        self.leases = {lid: set() for lid in leases}  # type: dict[int, set[bytes]]

    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def attach(self, lease_id: int, key: bytes) -> None:
        self.leases[lease_id].add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        self.leases[lease_id].discard(key)

    def lease_of(self, key: bytes) -> int:
        return next((lid for lid, keys in self.leases.items() if key in keys), 0)


def test_lease_attach_detach_and_not_found(h: Harness) -> None:
    lessor = FakeLessor({5, 6})
    store = KVStore(h.backend, lessor=lessor)
    store.apply(PutRequest(b"a", lease=5), index=Index(1), term=Term(1))
    store.apply(PutRequest(b"b", lease=5), index=Index(2), term=Term(1))
    assert lessor.leases[5] == {b"a", b"b"}
    store.apply(PutRequest(b"a", lease=6), index=Index(3), term=Term(1))
    assert lessor.leases == {5: {b"b"}, 6: {b"a"}}
    store.apply(DeleteRangeRequest(b"b"), index=Index(4), term=Term(1))
    assert lessor.leases[5] == set()
    with pytest.raises(LeaseNotFoundError) as e:
        store.apply(PutRequest(b"c", lease=99), index=Index(5), term=Term(1))
    assert str(e.value) == "etcdserver: requested lease not found"
    with pytest.raises(LeaseNotFoundError):
        store.apply(txn(put(b"d"), put(b"c", lease=99)), index=Index(6), term=Term(1))
    assert store.get(b"d") is None and store.current_revision == 5
    # a txn's put with a lease that exists (the txn's fast path) attaches the key
    store.apply(txn(put(b"e", lease=5)), index=Index(7), term=Term(1))
    assert lessor.leases[5] == {b"e"}
    # a restart re-attaches live keys to their leases
    relessor = FakeLessor({5, 6})
    KVStore(h.backend, lessor=relessor)
    assert relessor.leases == {5: {b"e"}, 6: {b"a"}}


# -- txn -----------------------------------------------------------------------------------


def cmp(
    target: CompareTarget, result: CompareResult, key: bytes, end: bytes = b"", **kw: object
) -> Compare:
    return Compare(result, target, key, end, **kw)  # type: ignore[arg-type]


def test_txn_compares(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"x"))  # rev 2
    h.apply(PutRequest(b"b", b"y", lease=3))  # rev 3
    T, R = CompareTarget, CompareResult
    cases = [
        (cmp(T.VALUE, R.EQUAL, b"a", value=b"x"), True),
        (cmp(T.VALUE, R.GREATER, b"a", value=b"w"), True),
        (cmp(T.VALUE, R.LESS, b"a", value=b"w"), False),
        (cmp(T.VALUE, R.NOT_EQUAL, b"a", value=b"x"), False),
        (cmp(T.VERSION, R.EQUAL, b"a", version=1), True),
        (cmp(T.CREATE, R.EQUAL, b"a", create_revision=2), True),
        (cmp(T.MOD, R.LESS, b"a", mod_revision=3), True),
        (cmp(T.LEASE, R.EQUAL, b"b", lease=3), True),
        # missing key: compares against an empty KeyValue, except VALUE which always fails
        (cmp(T.CREATE, R.EQUAL, b"zz", create_revision=0), True),
        (cmp(T.VERSION, R.EQUAL, b"zz", version=0), True),
        (cmp(T.VALUE, R.EQUAL, b"zz", value=b""), False),
        (cmp(T.VALUE, R.NOT_EQUAL, b"zz", value=b"q"), False),
        # over a range: every key must satisfy
        (cmp(T.VERSION, R.EQUAL, b"a", b"c", version=1), True),
        (cmp(T.MOD, R.EQUAL, b"a", b"c", mod_revision=2), False),
        (cmp(T.MOD, R.GREATER, b"a", b"\x00", mod_revision=1), True),
    ]
    for c, expected in cases:
        resp = h.apply(TxnRequest((c,), (get(b"a"),), (get(b"b"),)))
        assert resp.succeeded is expected, c
        chosen = resp.responses[0].response_range
        assert chosen is not None and chosen.kvs[0].key == (b"a" if expected else b"b")


def test_txn_failure_branch_and_nested_txn(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"1"))
    inner = TxnRequest(
        (cmp(CompareTarget.VALUE, CompareResult.EQUAL, b"a", value=b"1"),),
        (put(b"x", b"inner-ok"),),
        (put(b"x", b"inner-fail"),),
    )
    outer = TxnRequest(
        (cmp(CompareTarget.VERSION, CompareResult.EQUAL, b"a", version=5),),
        (put(b"never"),),
        (put(b"a", b"2"), RequestOp(request_txn=inner)),
    )
    resp = h.apply(outer)
    assert not resp.succeeded and resp.header.revision == 3
    nested = resp.responses[1].response_txn
    # nested compares were evaluated against the state before the txn (a == "1"), as etcd
    assert nested is not None and nested.succeeded and nested.header.revision == 0
    assert h.store.get(b"x") is not None and h.store.get(b"x").value == b"inner-ok"  # type: ignore[union-attr]
    assert h.store.get(b"never") is None


def test_duplicate_keys_in_txn(h: Harness) -> None:
    bad = [
        txn(put(b"a"), put(b"a")),
        txn(delete(b"a", b"c"), put(b"b")),
        txn(put(b"b"), delete(b"b")),
        txn(put(b"a"), RequestOp(request_txn=txn(put(b"a")))),
        txn(delete(b"a", b"z"), RequestOp(request_txn=txn(put(b"m")))),
        txn(RequestOp(request_txn=txn(put(b"a"))), RequestOp(request_txn=txn(put(b"a")))),
        txn(
            RequestOp(request_txn=TxnRequest((), (), (put(b"a"),))),
            RequestOp(request_txn=txn(put(b"a"))),
        ),
        txn(RequestOp(request_txn=txn(delete(b"q"))), put(b"q")),
    ]
    for req in bad:
        with pytest.raises(DuplicateKeyError) as e:
            h.apply(req)
        assert str(e.value) == "etcdserver: duplicate key given in txn request"
    ok = [
        txn(delete(b"a", b"c"), delete(b"b")),  # overlapping deletes are fine
        txn(put(b"a"), failure=(put(b"a"),)),  # then/else are exclusive
        TxnRequest((), (RequestOp(request_txn=TxnRequest((), (put(b"k"),), (put(b"k"),))),)),
        txn(delete(b"a", b"\x00"), put(b"b")),  # etcd does not treat "\0" as open-ended here
    ]
    for req in ok:
        validate_request(req)
    assert h.store.current_revision == 1


def test_too_many_ops_and_empty_keys_in_txn(h: Harness) -> None:
    with pytest.raises(TooManyOpsError) as e:
        validate_request(txn(*(put(bytes([65 + i % 26, i])) for i in range(129))))
    assert str(e.value) == "etcdserver: too many operations in txn request"
    with pytest.raises(EmptyKeyError):
        validate_request(TxnRequest((cmp(CompareTarget.VERSION, CompareResult.EQUAL, b""),)))
    with pytest.raises(EmptyKeyError):
        validate_request(txn(RequestOp(request_txn=txn(get(b"")))))
    with pytest.raises(KeyNotFoundError):
        validate_request(txn(RequestOp()))


def test_txn_range_revision_checked_before_any_write(h: Harness) -> None:
    h.apply(PutRequest(b"a"))
    before = snapshot(h)
    with pytest.raises(FutureRevisionError):
        h.apply(txn(put(b"b"), get(b"a", revision=3)))
    assert snapshot(h) == before
    h.apply(PutRequest(b"a"))
    h.compact(3)
    with pytest.raises(CompactedError):
        h.apply(txn(put(b"b"), get(b"a", revision=2)))
    assert h.store.get(b"b") is None


def test_bad_input_in_batch_changes_nothing_and_consumes_its_index(h: Harness) -> None:
    out = h.store.apply_many(
        [
            (PutRequest(b"a", b"1"), Index(1), Term(1)),
            (PutRequest(b"a", b"x", ignore_value=True), Index(2), Term(1)),
            (txn(put(b"b"), put(b"b")), Index(3), Term(1)),
            (PutRequest(b"b", b"2"), Index(4), Term(2)),
        ]
    )
    assert [type(o).__name__ for o in out] == [
        "PutResponse",
        "ValueProvidedError",
        "DuplicateKeyError",
        "PutResponse",
    ]
    assert isinstance(out[1], MvccError)
    assert h.store.current_revision == 3
    assert h.store.consistent_index() == (4, 2)


# -- compaction ----------------------------------------------------------------------------


def test_compaction_rules(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"1"))  # 2
    h.apply(PutRequest(b"a", b"2"))  # 3
    h.apply(PutRequest(b"d", b"1"))  # 4
    h.apply(DeleteRangeRequest(b"d"))  # 5
    h.apply(PutRequest(b"e", b"1"))  # 6
    with pytest.raises(FutureRevisionError):
        h.compact(7)
    h.compact(5)
    with pytest.raises(CompactedError):
        h.compact(5)
    with pytest.raises(CompactedError):
        h.compact(4)
    assert h.store.compact_revision == 5
    while h.store.compaction_step(1):
        pass
    # the latest version of every live key is kept, and the tombstone at the compaction
    # revision itself (etcd 3.5.17, #18089: a watch from 5 sees d deleted); older ones go
    revs = [k[:8] for k, _ in h.backend.range("key", b"")]
    assert [int.from_bytes(r, "big") for r in revs] == [3, 5, 6]
    assert keys(h, rev=5) == [b"a"]
    assert h.store.get(b"a", revision=5) == KeyValue(b"a", 2, 3, 2, b"2", 0)
    # reopen: the compaction is remembered, reads below it still fail
    store = h.reopen()
    assert store.compact_revision == 5 and store.current_revision == 6
    with pytest.raises(CompactedError):
        store.range(RangeRequest(b"a", revision=4))


def test_a_put_after_compaction_and_reopen_counts_on_from_the_history_it_replaced(
    h: Harness,
) -> None:
    """A put takes the create revision and version from the key index, not from the record
    it replaces: they stay right after a compaction dropped the key's first revisions, after
    a reopen that finds only what the compaction kept, and past a history too long for the
    index to say (then the record is read)."""
    h.apply(PutRequest(b"a", b"1"))  # 2
    h.apply(PutRequest(b"a", b"2"))  # 3
    h.apply(PutRequest(b"b", b"1"))  # 4
    h.apply(DeleteRangeRequest(b"b"))  # 5
    h.apply(PutRequest(b"b", b"2"))  # 6
    h.apply(PutRequest(b"b", b"3"))  # 7
    h.compact(6)
    h.apply(PutRequest(b"a", b"3"))  # 8
    h.apply(PutRequest(b"b", b"4"))  # 9
    assert h.store.get(b"a") == KeyValue(b"a", 2, 8, 3, b"3", 0)
    assert h.store.get(b"b") == KeyValue(b"b", 6, 9, 3, b"4", 0)
    while h.store.compaction_step(1):
        pass
    store = h.reopen()  # the first records on disk are a@3 (version 2) and b@6 (a creation)
    store.apply(PutRequest(b"a", b"4"), index=Index(90), term=Term(1))  # 10
    store.apply(PutRequest(b"b", b"5"), index=Index(91), term=Term(1))  # 11
    assert store.get(b"a") == KeyValue(b"a", 2, 10, 4, b"4", 0)
    assert store.get(b"b") == KeyValue(b"b", 6, 11, 4, b"5", 0)
    store.compact(11, index=Index(92), term=Term(1))
    for i in range(40):  # a long history: the key's revisions become a list
        store.apply(PutRequest(b"a", b"%d" % i), index=Index(93 + i), term=Term(1))
    assert store.get(b"a") == KeyValue(b"a", 2, 51, 44, b"39", 0)
    store.apply(DeleteRangeRequest(b"a"), index=Index(140), term=Term(1))  # 52
    store.apply(PutRequest(b"a", b"x"), index=Index(141), term=Term(1))  # 53
    store.apply(PutRequest(b"a", b"y"), index=Index(142), term=Term(1))  # 54
    assert store.get(b"a") == KeyValue(b"a", 53, 54, 2, b"y", 0)
    store.compact(54, index=Index(143), term=Term(1))  # a@54 alone is left, version 2
    store.apply(PutRequest(b"a", b"z"), index=Index(144), term=Term(1))  # 55
    assert store.get(b"a") == KeyValue(b"a", 53, 55, 3, b"z", 0)


def test_compaction_at_current_revision_keeps_current_revision(h: Harness) -> None:
    h.apply(PutRequest(b"a"))
    h.apply(DeleteRangeRequest(b"a"))
    h.compact(3)
    while h.store.compaction_step():
        pass
    # only the tombstone at the compaction revision is left
    assert [parse_rev_key(k) for k, _ in h.backend.range("key", b"")] == [-(3 << SUB_BITS)]
    store = h.reopen()
    assert store.current_revision == 3
    assert store.apply(PutRequest(b"b"), index=Index(99), term=Term(1)).header.revision == 4


def test_interrupted_compaction_resumes_after_reopen(h: Harness) -> None:
    for i in range(20):
        h.apply(PutRequest(b"k", str(i).encode()))
    h.compact(20)
    h.store.compaction_step(5)
    h.backend.commit()
    store = h.reopen()
    assert store.compaction_pending
    while store.compaction_step(5):
        pass
    assert len(h.backend.range("key", b"")) == 2  # rev 20 (kept) and 21


def test_a_compaction_compacts_the_index_in_steps_before_deleting_records(h: Harness) -> None:
    for rnd in range(3):
        for i in range(25):
            h.apply(PutRequest(b"k%02d" % i, b"v%d" % rnd))
    h.apply(DeleteRangeRequest(b"k00"))
    at = h.store.current_revision
    before = [list(h.store.range(RangeRequest(b"k", b"l", revision=r)).kvs) for r in (at, 0)]
    h.compact(at)
    with pytest.raises(CompactedError):
        h.store.range(RangeRequest(b"k", revision=at - 1))
    records = len(h.backend.range("key", b""))
    steps = 0
    while h.store.compaction_step(1):  # 2 index keys, or 1 record, per step
        steps += 1
        during = [list(h.store.range(RangeRequest(b"k", b"l", revision=r)).kvs) for r in (at, 0)]
        assert during == before
        if steps <= 12:
            assert len(h.backend.range("key", b"")) == records  # the index pass first
    assert steps >= 12 + records
    # one record per live key, and k00's tombstone at the compaction revision
    assert len(h.backend.range("key", b"")) == 25
    hashed = h.store.hash_kv()
    assert h.reopen().hash_kv() == hashed


def test_hash_kv(h: Harness, tmp_path: object) -> None:
    h.apply(PutRequest(b"a", b"1"))
    h.apply(PutRequest(b"b", b"2"))
    h1 = h.store.hash_kv()
    assert h1.hash_revision == 3 and h1.compact_revision == -1
    assert h.store.hash_kv(3) == h1
    assert h.store.hash_kv(2).hash != h1.hash
    h.apply(PutRequest(b"c", b"3"))
    assert h.store.hash_kv(3) == h1  # later writes do not change the hash at 3
    with pytest.raises(FutureRevisionError):
        h.store.hash_kv(9)
    h.compact(3)
    with pytest.raises(CompactedError):
        h.store.hash_kv(2)
    # At the compact revision itself: hashed (etcd 3.5.17; 3.5.0 refused it), over what the
    # compaction keeps, here everything.
    at_compact = h.store.hash_kv(3)
    assert (at_compact.hash, at_compact.compact_revision) == (h1.hash, 3)
    before = h.store.hash_kv(4)
    while h.store.compaction_step(1):
        pass
    assert h.store.hash_kv(4) == before  # physical compaction progress does not matter
    assert h.store.hash_kv(3).hash == at_compact.hash  # now the compaction's record
    assert h.reopen().hash_kv(4) == before


@pytest.mark.parametrize("on_tombstone", [False, True])
def test_hash_kv_is_the_same_before_and_after_the_records_are_deleted_when_nothing_is_kept(
    h: Harness, on_tombstone: bool
) -> None:
    """etcd's e2e TestVerifyHashKVAfterCompact: one key, written and deleted twice, compacted
    on or between the tombstones; nothing at or below the compaction is kept. Members that
    deleted the compacted records and members still deleting them answer the same hash."""
    tombstones = []
    for _ in range(2):
        for i in range(9):
            h.apply(PutRequest(b"key0", b"%d" % i))
        h.apply(DeleteRangeRequest(b"key0"))
        tombstones.append(h.store.current_revision)
    h.apply(PutRequest(b"key0", b"last"))
    at = tombstones[0] if on_tombstone else (tombstones[0] + tombstones[1]) // 2
    h.compact(at)
    before = [h.store.hash_kv(r) for r in range(at + 1, h.store.current_revision + 1)]
    while h.store.compaction_step(1):
        pass
    after = [h.store.hash_kv(r) for r in range(at + 1, h.store.current_revision + 1)]
    assert after == before


# -- compaction hashes (--experimental-compact-hash-check-enabled) --------------------------


def _history(h: Harness, rounds: int = 3) -> None:
    for rnd in range(rounds):
        for i in range(7):
            h.apply(PutRequest(b"k%d" % i, b"v%d" % rnd))
        h.apply(DeleteRangeRequest(b"k%d" % rnd))


def _finish(store: KVStore, step: int = 1) -> None:
    while store.compaction_step(step):
        pass


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_compaction_records_the_hash_kv_of_its_revision_from_before_it(
    h: Harness, step: int
) -> None:
    """etcd's hash recorded at compaction: HashKV(R) with the previous compaction's revision,
    whatever the pace of the member's compaction steps; HashKV(R) then answers it."""
    _history(h)
    first = h.store.current_revision - 5
    expected = h.store.hash_kv(first)
    assert expected.compact_revision == -1
    h.compact(first)
    assert h.store.hashes() == [] and h.store.take_finished_compactions() == []
    _finish(h.store, step)
    assert h.store.hashes() == [expected]
    [done] = h.store.take_finished_compactions()
    assert (done.revision, done.hash, done.stored) == (first, expected, True)
    assert h.store.take_finished_compactions() == []
    # Asked at its revision (itself compacted), HashKV answers the record (etcd's HashByRev).
    assert h.store.hash_kv(first) == expected
    # A second compaction: its hash has the first one's compact revision.
    _history(h, 2)
    second = h.store.current_revision
    expected2 = h.store.hash_kv(second)
    assert expected2.compact_revision == first
    h.compact(second)
    _finish(h.store, step)
    assert h.store.hashes() == [expected, expected2]
    assert h.store.hash_kv(second) == expected2
    assert h.store.hash_kv().compact_revision == second  # revision 0: computed, as before


def test_a_compaction_hash_differs_where_a_record_differs(h: Harness, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = Harness(tmp_path / "other")
    try:
        for store in (h, other):
            _history(store)
        # A stored value changed behind the store's back (as a bad disk would).
        k, v = other.backend.range("key", b"")[4]
        other.backend.put("key", k, v[:-1] + bytes([v[-1] ^ 1]))
        at = h.store.current_revision
        for store in (h, other):
            store.compact(at)
            _finish(store.store, 2)
        [a], [b] = h.store.hashes(), other.store.hashes()
        assert (a.compact_revision, a.hash_revision) == (b.compact_revision, b.hash_revision)
        assert a.hash != b.hash
    finally:
        other.backend.close()


def test_no_hash_is_recorded_after_an_unfinished_compaction(h: Harness) -> None:
    """etcd's checkPrevCompactionCompleted: a compaction scheduled while the previous one was
    unfinished, or resumed after a restart, finishes without recording its hash (some records
    it should hash may be gone); the next one records again."""
    _history(h)
    h.compact(10)
    h.store.compaction_step(1)
    h.compact(15)  # supersedes the one at 10
    _finish(h.store)
    assert h.store.hashes() == []
    [done] = h.store.take_finished_compactions()
    assert (done.revision, done.stored, done.hash.compact_revision) == (15, False, 10)
    _history(h)
    # Interrupted by a restart: resumed on open, finished, not recorded.
    h.compact(h.store.current_revision - 3)
    for _ in range(20):
        h.store.compaction_step(1)
    h.backend.commit()
    store = h.reopen()
    assert store.compaction_pending
    _finish(store)
    [done] = store.take_finished_compactions()
    assert (done.revision, done.stored, done.hash.compact_revision) == (
        store.compact_revision,
        False,
        15,
    )
    assert store.hashes() == []
    # The previous compaction finished: the next one is recorded.
    h.apply(PutRequest(b"k1", b"again"))
    expected = store.hash_kv(store.current_revision)
    h.compact(store.current_revision)
    _finish(store)
    assert store.hashes() == [expected]


def test_hashes_are_in_memory_the_newest_ten(h: Harness) -> None:
    recorded = []
    for i in range(HASHES_MAX + 2):
        h.apply(PutRequest(b"k", b"%d" % i))
        recorded.append(h.store.hash_kv(h.store.current_revision))
        h.compact(h.store.current_revision)
        _finish(h.store)
    assert h.store.hashes() == recorded[-HASHES_MAX:]
    assert len(h.store.take_finished_compactions()) == HASHES_MAX + 2
    assert h.reopen().hashes() == []  # not persisted, as etcd's


def test_a_finished_compaction_reports_its_duration_by_the_store_clock(tmp_path: Path) -> None:
    now = [100.0]
    backend = Backend(str(tmp_path / "db"))
    try:
        store = KVStore(backend, clock=lambda: now[0])
        store.apply(PutRequest(b"a", b"1"), index=Index(1), term=Term(1))
        store.compact(2, index=Index(2), term=Term(1))
        now[0] = 102.5
        _finish(store)
        [done] = store.take_finished_compactions()
        assert done.took_s == 2.5
    finally:
        backend.close()


def test_a_started_hash_walks_the_snapshot_of_its_start_in_another_thread(h: Harness) -> None:
    for i in range(20):
        h.apply(PutRequest(b"k%d" % (i % 7), b"v%d" % i))
    h.compact(10)
    expected = h.store.hash_kv()
    walk = h.store.start_hash_kv()
    # What happens before the walk runs does not change it: writes into the batch, a
    # compaction and its physical deletes, backend commits.
    for i in range(20):
        h.apply(PutRequest(b"k%d" % (i % 5), b"w%d" % i))
    h.compact(30)
    job = h.store._compaction
    assert job is not None
    for _ in range(50):  # the index pass waits until the walk has read the index
        assert h.store.compaction_step(3)
    assert job.index_keys is not None and job.index_position == 0
    h.backend.commit()
    assert h.store.hash_kv() != expected
    result: list[HashKVResult] = []
    t = threading.Thread(target=lambda: result.append(walk()))
    t.start()
    t.join()
    assert result == [expected]
    assert h.store.compaction_step(3) and job.index_position == 6  # now it goes on
    # A hash started halfway through the index pass is the one of the finished compaction.
    halfway = h.store.start_hash_kv()()
    while h.store.compaction_step(3):
        pass
    assert halfway == h.store.hash_kv()
    with pytest.raises(CompactedError):
        h.store.start_hash_kv(29)  # the checks are made when the hash is started
    with pytest.raises(FutureRevisionError):
        h.store.start_hash_kv(99)


def test_reopen_restores_everything(h: Harness) -> None:
    h.apply(PutRequest(b"a", b"1"))
    h.apply(txn(put(b"b"), put(b"c")))
    h.apply(DeleteRangeRequest(b"b"))
    before = [snapshot(h)] + [
        list(h.store.range(RangeRequest(b"\x00", b"\x00", revision=r)).kvs) for r in range(1, 5)
    ]
    store = h.reopen()
    after = [snapshot(h)] + [
        list(store.range(RangeRequest(b"\x00", b"\x00", revision=r)).kvs) for r in range(1, 5)
    ]
    assert before == after
    assert store.consistent_index() == (3, 1)


def test_put_then_delete_from_key_in_one_txn_deletes_both(h: Harness) -> None:
    # Checked against etcd 3.4: the "\0" range end does not collide with the put (no
    # duplicate-key error) and the delete, running after the put, removes it too.
    h.apply(PutRequest(b"a", b"1"))
    resp = h.apply(txn(put(b"b", b"x"), delete(b"a", b"\x00")))
    dr = resp.responses[1].response_delete_range
    assert dr is not None and dr.deleted == 2 and dr.header.revision == 3
    assert keys(h) == [] and h.store.current_revision == 3
    assert h.reopen().range(RangeRequest(b"\x00", b"\x00")).kvs == ()


def test_delete_keys_is_one_revision_and_one_watch_response(h: Harness) -> None:
    from petcd.mvcc import QueueSink

    for k in (b"a", b"b", b"c"):
        h.apply(PutRequest(k))
    sink = QueueSink()
    h.store.watch(b"\x00", b"\x00", sink=sink)
    n = h.store.delete_keys([b"c", b"zz", b"a"], index=Index(10), term=Term(2))
    assert n == 2 and h.store.current_revision == 5
    assert keys(h) == [b"b"] and h.store.consistent_index() == (10, 2)
    (resp,) = sink.drain()
    assert resp.revision == 5 and [e.kv.key for e in resp.events] == [b"c", b"a"]
    assert h.store.delete_keys([b"zz"], index=Index(11), term=Term(2)) == 0
    assert h.store.current_revision == 5


def test_txn_checks_every_put_before_any_range_revision(h: Harness) -> None:
    # Found by a differential run against etcd 3.4: etcd checks all puts of the chosen
    # branches first, then all range revisions, so the put's error wins even when the bad
    # range comes first (and sits in an outer txn).
    h.apply(PutRequest(b"a"))
    req = txn(
        get(b"a", revision=99),
        RequestOp(request_txn=txn(put(b"missing", b"", ignore_value=True))),
    )
    with pytest.raises(KeyNotFoundError):
        h.apply(req)
    with pytest.raises(FutureRevisionError):
        h.apply(txn(get(b"a", revision=99), put(b"fine")))
    assert h.store.current_revision == 2


def test_ignore_value_put_after_a_delete_of_the_same_txn_is_rejected_before_any_change(
    h: Harness,
) -> None:
    # etcd 3.4 panics on these (the check sees the key, the execution does not; found by the
    # differential run). petcd refuses them up front and changes nothing.
    h.apply(PutRequest(b"b", b"1"))
    h.apply(PutRequest(b"i", b"2"))
    before = snapshot(h)
    with pytest.raises(KeyNotFoundError):
        h.apply(txn(delete(b"a", b"\x00"), put(b"b", b"", ignore_value=True)))
    with pytest.raises(KeyNotFoundError):
        h.apply(
            txn(
                delete(b"i", b"\x00"),
                RequestOp(request_txn=txn(put(b"i", b"", ignore_value=True))),
            )
        )
    with pytest.raises(KeyNotFoundError):
        h.apply(txn(delete(b"a", b"\x00"), put(b"b", ignore_lease=True)))
    assert snapshot(h) == before
    # the same shapes with the key put back first are fine
    resp = h.apply(txn(put(b"b", b"3"), delete(b"c", b"\x00")))
    assert resp.header.revision == 4


def test_header_source_fills_top_level_headers_only(h: Harness) -> None:
    # The server's header (cluster, member, term) goes on the response it hands to a client;
    # responses nested in a txn keep the bare revision, as etcd's do.
    built: list[int] = []

    def header(revision: int) -> ResponseHeader:
        built.append(revision)
        return ResponseHeader(cluster_id=7, member_id=8, revision=revision, raft_term=9)

    h.store.set_header_source(header)
    assert h.apply(PutRequest(b"a", b"1")).header == ResponseHeader(7, 8, 2, 9)
    assert h.store.range(RangeRequest(b"a")).header == ResponseHeader(7, 8, 2, 9)
    assert h.store.range(RangeRequest(b"a", b"b", limit=1)).header == ResponseHeader(7, 8, 2, 9)
    resp = h.apply(txn(put(b"b"), get(b"a"), delete(b"c"), RequestOp(request_txn=txn(get(b"b")))))
    assert resp.header == ResponseHeader(7, 8, 3, 9)
    assert isinstance(resp, TxnResponse)
    nested = [
        r.response_put or r.response_range or r.response_delete_range or r.response_txn
        for r in resp.responses
    ]
    assert [n.header if n else None for n in nested] == [
        ResponseHeader(revision=3),
        ResponseHeader(revision=3),
        ResponseHeader(revision=3),
        ResponseHeader(),
    ]
    inner = resp.responses[3].response_txn
    assert inner is not None and inner.responses[0].response_range is not None
    assert inner.responses[0].response_range.header == ResponseHeader(revision=3)
    assert h.apply(DeleteRangeRequest(b"b")).header == ResponseHeader(7, 8, 4, 9)
    h.compact(2)
    assert built and all(r > 0 for r in built)


# -- a listing's records ---------------------------------------------------------------------


def _decoded(h: Harness, req: RangeRequest) -> object:
    """``range_records(req)`` as ``range(req)`` would answer it (or the error it raised)."""
    try:
        resp, records = h.store.range_records(req)
    except MvccError as e:
        return type(e), str(e)
    if records is None:
        return resp
    kvs: list[KeyValue] = []
    add_records(lambda **f: kvs.append(KeyValue(**f)), records)  # type: ignore[arg-type]
    assert resp.kvs == ()
    return replace(resp, kvs=tuple(kvs))


def _expected(h: Harness, req: RangeRequest) -> object:
    try:
        return h.store.range(req)
    except MvccError as e:
        return type(e), str(e)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from([b"", b"a", b"b", b"k3", b"\x00"]),
    end=st.sampled_from([b"", b"\x00", b"c", b"k5", b"a"]),
    limit=st.integers(0, 4),
    revision=st.integers(-1, 14),
    order=st.sampled_from([0, 1, 2, 5]),
    target=st.sampled_from([0, 1, 3]),
    flags=st.sampled_from(["", "keys_only", "count_only", "min_mod_revision", "lease"]),
)
def test_range_records_answers_what_range_answers(
    h: Harness,
    key: bytes,
    end: bytes,
    limit: int,
    revision: int,
    order: int,
    target: int,
    flags: str,
) -> None:
    if h.store.current_revision == 1:  # the history, written once per test function
        for i in range(8):
            h.apply(PutRequest(b"k%d" % i, b"v%d" % i))
            if i == 4:
                h.backend.commit()  # some records committed, the later ones still pending
        h.apply(PutRequest(b"k2", b"again"))
        h.apply(DeleteRangeRequest(b"k5"))
        h.apply(PutRequest(b"a", b"x" * 300))
        h.compact(3)
    extra = {"min_mod_revision": 5} if flags == "min_mod_revision" else {}
    if flags in ("keys_only", "count_only"):
        extra = {flags: True}
    req = RangeRequest(
        key, end, limit=limit, revision=revision, sort_order=order, sort_target=target, **extra
    )  # type: ignore[arg-type]
    assert _decoded(h, req) == _expected(h, req)


def test_range_records_of_a_listing_are_the_stored_records(h: Harness) -> None:
    for i in range(5):
        h.apply(PutRequest(b"k%d" % i, b"v%d" % i, lease=0))
    resp, records = h.store.range_records(RangeRequest(b"k1", b"k4", limit=2))
    assert records is not None and len(records) == 2 and resp.more and resp.count == 3
    resp, records = h.store.range_records(RangeRequest(b"k1", b"k4", keys_only=True))
    assert records is None and [kv.value for kv in resp.kvs] == [b""] * 3


def test_a_page_counts_the_live_keys_to_the_end_of_the_range(h: Harness) -> None:
    for i in range(10):
        h.apply(PutRequest(b"k%d" % i))
    h.apply(DeleteRangeRequest(b"k3"))
    h.apply(DeleteRangeRequest(b"k7"))
    h.apply(PutRequest(b"k7", b"again"))  # a new generation: live again
    h.compact(h.store.current_revision)  # k3's tombstone compacted away
    h.apply(DeleteRangeRequest(b"k8"))
    r = h.store.range(RangeRequest(b"k1", b"\x00", limit=2))
    assert [kv.key for kv in r.kvs] == [b"k1", b"k2"] and r.more and r.count == 7
    r = h.store.range(RangeRequest(b"k1", b"\x00", limit=2, revision=14))  # before k8's deletion
    assert r.more and r.count == 8
    r = h.store.range(RangeRequest(b"k0", b"\x00", limit=2, revision=h.store.current_revision))
    assert r.count == 8
    count_only = RangeRequest(b"k1", b"\x00", count_only=True)
    assert h.store.range(count_only) == replace(h.store.range(RangeRequest(b"k1", b"\x00")), kvs=())
    assert h.store.range(count_only).count == 7
    h.reopen()
    assert h.store.range(RangeRequest(b"k1", b"\x00", limit=1)).count == 7
    assert h.store.range(count_only).count == 7


@pytest.mark.parametrize("writes_after", [3, 200])  # few changes since: counted; many: walked
def test_a_page_at_an_older_revision_counts_what_a_walk_counts(
    h: Harness, writes_after: int
) -> None:
    for i in range(40):
        h.apply(PutRequest(b"k%02d" % i))
    h.apply(DeleteRangeRequest(b"k05"))
    h.compact(h.store.current_revision)
    past = [h.store.current_revision]
    h.apply(DeleteRangeRequest(b"k10"))
    h.apply(PutRequest(b"k05", b"back"))
    h.apply(PutRequest(b"k40"))  # created after the first past revision
    past.append(h.store.current_revision)
    for i in range(writes_after):
        h.apply(PutRequest(b"x%03d" % i))  # outside the ranges read
    h.apply(DeleteRangeRequest(b"k20"))
    h.apply(PutRequest(b"k10", b"again"))
    index = h.store._index
    for rev in past:
        for start, end in ((b"k", b"l"), (b"k03", b"k25"), (b"k", b"\x00"), (b"k30", b"k")):
            for limit in (1, 3):
                got = h.store.range(RangeRequest(start, end, limit=limit, revision=rev))
                walk_end = None if end == b"\x00" else end
                want, total = index.revisions(start, walk_end, rev, limit + 1)
                assert got.count == total
                assert [kv.key for kv in got.kvs] == [k for k, _ in want[:limit]]
                assert got.more == (len(want) > limit)


_small_keys = st.sampled_from([b"a", b"b", b"c"])
_flat_ops = st.one_of(
    st.builds(lambda k, v: put(k, v), _small_keys, st.sampled_from([b"1", b"2"])),
    st.builds(lambda k, p: put(k, prev_kv=p), _small_keys, st.booleans()),
    st.builds(lambda k: put(k, lease=5), _small_keys),
    st.builds(lambda k: put(k, lease=99), _small_keys),  # no such lease: LeaseNotFound
    st.builds(lambda k: put(k, b"", ignore_value=True), _small_keys),
    st.builds(delete, _small_keys),
    st.builds(lambda k: get(k, b"\x00"), _small_keys),
    st.builds(lambda k, r: get(k, revision=r), _small_keys, st.integers(0, 12)),
)
_compares = st.builds(
    lambda t, r, k, n: cmp(t, r, k, version=n, create_revision=n, mod_revision=n, value=b"1"),
    st.sampled_from(list(CompareTarget)),
    st.sampled_from(list(CompareResult)),
    _small_keys,
    st.integers(0, 6),
)
_flat_txns = st.builds(
    TxnRequest,
    st.lists(_compares, max_size=2).map(tuple),
    st.lists(_flat_ops, max_size=3).map(tuple),
    st.lists(_flat_ops, max_size=2).map(tuple),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_flat_txns, min_size=1, max_size=8))
def test_txn_fast_path_answers_what_the_checking_path_answers(
    tmp_path_factory: pytest.TempPathFactory, reqs: list[TxnRequest]
) -> None:
    # KVStore runs a txn branch that cannot fail its checks without them (``_plain``) and
    # compares a single key's mod revision from the index. Forcing every txn through the
    # checking path must give the same answers, errors and store, request by request.
    stores = []
    for fast in (True, False):
        s = KVStore(Backend(str(tmp_path_factory.mktemp("s") / "db")), lessor=FakeLessor({5}))
        if not fast:
            s._plain = lambda ops: False  # type: ignore[method-assign]
        stores.append(s)
    for i, req in enumerate(reqs, 1):
        if any(isinstance(x, MvccError) for x in _try_validate(req)):
            continue
        got = []
        for s in stores:
            try:
                got.append(s.apply(req, index=Index(i), term=Term(1)))
            except MvccError as e:
                got.append(type(e))
        assert got[0] == got[1], req
        assert [s.current_revision for s in stores] == [stores[0].current_revision] * 2
    everything = RangeRequest(b"\x00", b"\x00")
    assert stores[0].range(everything) == stores[1].range(everything)


def _try_validate(req: TxnRequest) -> list[MvccError]:
    try:
        validate_request(req)
    except MvccError as e:
        return [e]
    return []


def _hash_of_committed(backend: Backend) -> int:
    """Maintenance.Hash's definition, computed another way: from committed data, through
    ``Backend.range``, with google_crc32c directly."""
    import google_crc32c

    from petcd.backend import BUCKETS, CONSISTENT_INDEX_KEY, META, V2

    data = bytearray()
    for name in sorted(BUCKETS):
        if name == V2 and not backend.range(name, b""):
            continue  # the v2 tree's bucket counts once it holds something (0014)
        data += name.encode()
        for k, v in backend.range(name, b""):
            if (name, k) != (META, CONSISTENT_INDEX_KEY):
                data += k + v
    return int(google_crc32c.value(bytes(data)))


def test_hash_of_the_whole_backend(h: Harness, tmp_path: Path) -> None:
    empty = h.store.start_hash()()
    h.apply(PutRequest(b"a", b"1"))
    h.apply(PutRequest(b"b", b"2"))
    h.backend.put("members", b"\x00\x01", b"member one")
    walk = h.store.start_hash()
    h.apply(PutRequest(b"c", b"3"))  # after the start: not in the walk's snapshot
    first = walk()
    assert first != empty
    h.backend.commit()
    assert h.store.start_hash()() == _hash_of_committed(h.backend) != first
    # Another store with the same writes at other raft indexes hashes the same.
    other = Harness(tmp_path / "other")
    try:
        other.apply(PutRequest(b"unrelated", b"x"))
        other.apply(DeleteRangeRequest(b"unrelated"))
        assert other.store.start_hash()() != h.store.start_hash()()
    finally:
        other.backend.close()
    again = Harness(tmp_path / "again")
    try:
        again._index = itertools.count(100)  # raft indexes that h never used
        again.apply(PutRequest(b"a", b"1"))
        again.apply(PutRequest(b"b", b"2"))
        again.backend.put("members", b"\x00\x01", b"member one")
        again.apply(PutRequest(b"c", b"3"))
        assert again.store.start_hash()() == h.store.start_hash()()
    finally:
        again.backend.close()
    # A compaction changes it (the key bucket and the compaction marks in meta).
    h.compact(2)
    while h.store.compaction_step(100):
        pass
    h.backend.commit()
    assert h.store.start_hash()() == _hash_of_committed(h.backend) != first
    assert h.reopen().start_hash()() == _hash_of_committed(h.backend)
