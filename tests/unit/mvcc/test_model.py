"""Property tests: KVStore against a small reference model of etcd's semantics.

The model keeps, for every revision, the full map key -> KeyValue (revisions are main
revisions only; sub revisions are not observable through the API). Random sequences of put,
delete, txn, compact, compaction steps, reopen and range are applied to both; every answer,
every revision and every error must be equal. A second store (a "twin", other batch limit,
compactions finished at once) must end with the same hash-kv as the first.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from petcd.backend import Backend
from petcd.mvcc import (
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DuplicateKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    KeyValue,
    KVStore,
    MvccError,
    PutRequest,
    RangeRequest,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
)
from petcd.raft.types import Index, Term

KEYS = [b"a", b"ab", b"b", b"ba", b"c", b"d"]
keys = st.sampled_from(KEYS)
values = st.binary(max_size=3)
ends = st.sampled_from([b"", b"\x00", b"b", b"c", b"e", b"a"])

cmp_tuples = st.tuples(
    keys,
    st.sampled_from([CompareTarget.VERSION, CompareTarget.CREATE, CompareTarget.VALUE]),
    st.sampled_from(list(CompareResult)),
    st.integers(0, 4),
    values,
)
leaf_ops = st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("del"), keys, ends),
    st.tuples(st.just("get"), keys, ends),
)
nested_txns = st.recursive(
    st.tuples(
        st.just("txn"), cmp_tuples, st.lists(leaf_ops, max_size=2), st.lists(leaf_ops, max_size=2)
    ),
    lambda inner: st.tuples(
        st.just("txn"),
        cmp_tuples,
        st.lists(st.one_of(leaf_ops, inner), max_size=3),
        st.lists(st.one_of(leaf_ops, inner), max_size=3),
    ),
    max_leaves=6,
)


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\x00":
        return k >= key
    return key <= k < end


class Model:
    def __init__(self) -> None:
        self.states: dict[int, dict[bytes, KeyValue]] = {1: {}}
        self.current = 1
        self.compacted = -1

    def state(self) -> dict[bytes, KeyValue]:
        return self.states[self.current]

    def range(self, r: RangeRequest) -> tuple[list[KeyValue], int, bool]:
        rev = r.revision
        if rev > self.current:
            raise FutureRevisionError()
        if rev <= 0:
            rev = self.current
        if rev < self.compacted:
            raise CompactedError()
        st_ = self.states[rev]
        kvs = [st_[k] for k in sorted(st_) if in_range(k, r.key, r.range_end)]
        count = len(kvs)
        if r.count_only:
            return [], count, False
        if r.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
        if r.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
        attr = {
            SortTarget.KEY: "key",
            SortTarget.VERSION: "version",
            SortTarget.CREATE: "create_revision",
            SortTarget.MOD: "mod_revision",
            SortTarget.VALUE: "value",
        }[SortTarget(r.sort_target)]
        if r.sort_order != SortOrder.NONE or r.sort_target != SortTarget.KEY:
            kvs.sort(key=lambda kv: getattr(kv, attr), reverse=r.sort_order == SortOrder.DESCEND)
        more = False
        if r.limit > 0 and len(kvs) > r.limit:
            kvs = kvs[: r.limit]
            more = True
        if r.keys_only:
            kvs = [replace(kv, value=b"") for kv in kvs]
        return kvs, count, more

    def apply_ops(
        self, work: dict[bytes, KeyValue], rev: int, ops: list[tuple[str, bytes, bytes]]
    ) -> bool:
        changed = False
        for kind, key, arg in ops:
            if kind == "put":
                prev = work.get(key)
                work[key] = KeyValue(
                    key,
                    prev.create_revision if prev else rev,
                    rev,
                    prev.version + 1 if prev else 1,
                    arg,
                    0,
                )
                changed = True
            elif kind == "del":
                for k in [k for k in work if in_range(k, key, arg)]:
                    del work[k]
                    changed = True
        return changed

    def write(self, ops: list[tuple[str, bytes, bytes]]) -> bool:
        work = dict(self.state())
        if self.apply_ops(work, self.current + 1, ops):
            self.current += 1
            self.states[self.current] = work
            return True
        return False


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="petcd-mvcc-model-")
        self.backend = Backend(self.dir + "/db", batch_limit=3)
        self.store = KVStore(self.backend)
        self.twin_backend = Backend(self.dir + "/twin", batch_limit=1000)
        self.twin = KVStore(self.twin_backend)
        self.model = Model()
        self.index = 0

    def teardown(self) -> None:
        self.backend.close()
        self.twin_backend.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _next(self) -> tuple[Index, Term]:
        self.index += 1
        return Index(self.index), Term(1)

    def _both(self, req: PutRequest | DeleteRangeRequest | TxnRequest) -> object:
        index, term = self._next()
        got: object
        try:
            got = self.store.apply(req, index=index, term=term)
        except MvccError as e:
            got = e
        try:
            twin = self.twin.apply(req, index=index, term=term)
            assert not isinstance(got, MvccError) and twin == got
        except MvccError as e:
            assert isinstance(got, MvccError) and type(e) is type(got)
        return got

    @rule(key=keys, value=values, prev=st.booleans(), ignore_value=st.booleans())
    def put(self, key: bytes, value: bytes, prev: bool, ignore_value: bool) -> None:
        req = PutRequest(
            key, b"" if ignore_value else value, prev_kv=prev, ignore_value=ignore_value
        )
        old = self.model.state().get(key)
        got = self._both(req)
        if ignore_value and old is None:
            assert isinstance(got, KeyNotFoundError)
            return
        assert not isinstance(got, MvccError), got
        self.model.write([("put", key, old.value if ignore_value and old else value)])
        assert got.header.revision == self.model.current  # type: ignore[attr-defined]
        assert got.prev_kv == (old if prev else None)  # type: ignore[attr-defined]

    @rule(key=keys, end=ends, prev=st.booleans())
    def delete(self, key: bytes, end: bytes, prev: bool) -> None:
        before = self.model.state()
        gone = [before[k] for k in sorted(before) if in_range(k, key, end)]
        got = self._both(DeleteRangeRequest(key, end, prev_kv=prev))
        self.model.write([("del", key, end)])
        assert not isinstance(got, MvccError), got
        assert got.deleted == len(gone)  # type: ignore[attr-defined]
        assert got.prev_kvs == (tuple(gone) if prev else ())  # type: ignore[attr-defined]
        assert got.header.revision == self.model.current  # type: ignore[attr-defined]

    @rule(
        ckey=keys,
        ctarget=st.sampled_from(list(CompareTarget)),
        result=st.sampled_from(list(CompareResult)),
        operand=st.integers(0, 6),
        cvalue=values,
        then_ops=st.lists(
            st.tuples(st.sampled_from(["put", "del", "get"]), keys, values), max_size=3
        ),
        else_ops=st.lists(
            st.tuples(st.sampled_from(["put", "del", "get"]), keys, values), max_size=3
        ),
    )
    def txn(
        self,
        ckey: bytes,
        ctarget: CompareTarget,
        result: CompareResult,
        operand: int,
        cvalue: bytes,
        then_ops: list[tuple[str, bytes, bytes]],
        else_ops: list[tuple[str, bytes, bytes]],
    ) -> None:
        target = ctarget
        cmp = Compare(
            result,
            target,
            ckey,
            version=operand,
            create_revision=operand,
            mod_revision=operand,
            value=cvalue,
            lease=0,
        )

        def to_op(kind: str, key: bytes, arg: bytes) -> RequestOp:
            if kind == "put":
                return RequestOp(request_put=PutRequest(key, arg))
            if kind == "del":
                return RequestOp(request_delete_range=DeleteRangeRequest(key))
            return RequestOp(request_range=RangeRequest(key, b"\x00"))

        req = TxnRequest(
            (cmp,), tuple(to_op(*o) for o in then_ops), tuple(to_op(*o) for o in else_ops)
        )

        def dup(ops: list[tuple[str, bytes, bytes]]) -> bool:
            puts = [k for kind, k, _ in ops if kind == "put"]
            dels = {k for kind, k, _ in ops if kind == "del"}
            return len(set(puts)) != len(puts) or bool(dels & set(puts))

        got = self._both(req)
        if dup(then_ops) or dup(else_ops):
            assert isinstance(got, DuplicateKeyError), got
            return
        state = self.model.state()
        kv = state.get(ckey)
        if kv is None:
            ok = target != CompareTarget.VALUE and _cmp(
                result, 0, 0 if target == CompareTarget.LEASE else operand
            )
        else:
            actual: int | bytes = {
                CompareTarget.VERSION: kv.version,
                CompareTarget.CREATE: kv.create_revision,
                CompareTarget.MOD: kv.mod_revision,
                CompareTarget.LEASE: kv.lease,
                CompareTarget.VALUE: kv.value,
            }[target]
            expected: int | bytes = cvalue if target == CompareTarget.VALUE else operand
            if target == CompareTarget.LEASE:
                expected = 0
            ok = _cmp(result, actual, expected)
        assert not isinstance(got, MvccError), got
        assert got.succeeded == ok  # type: ignore[attr-defined]
        ops = then_ops if ok else else_ops
        work = dict(state)
        rev = self.model.current + 1
        changed = False
        for (kind, key, arg), resp in zip(ops, got.responses, strict=True):  # type: ignore[attr-defined]
            if kind == "get":
                view = {k: v for k, v in work.items() if k >= key}
                assert [x.key for x in resp.response_range.kvs] == sorted(view)
                assert list(resp.response_range.kvs) == [view[k] for k in sorted(view)]
            else:
                changed |= self.model.apply_ops(
                    work, rev, [(kind, key, arg if kind == "put" else b"")]
                )
        if changed:
            self.model.current = rev
            self.model.states[rev] = work
        assert got.header.revision == self.model.current  # type: ignore[attr-defined]

    @rule(t=nested_txns)
    def nested_txn(self, t: tuple) -> None:  # type: ignore[type-arg]
        req = _to_txn(t)
        before = self.model.state()
        got = self._both(req)
        if isinstance(got, DuplicateKeyError):
            assert self.model.state() == before
            return
        assert not isinstance(got, MvccError), got
        path = _model_path(t, before)
        work = dict(before)
        rev = self.model.current + 1
        changed, tree = _model_run(self.model, t, work, rev, iter(path))
        if changed:
            self.model.current = rev
            self.model.states[rev] = work
        assert _shape(got) == tree  # type: ignore[arg-type]
        assert got.header.revision == self.model.current  # type: ignore[attr-defined]

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(0, self.model.current + 1))
        index, term = self._next()
        try:
            self.store.compact(rev, index=index, term=term)
            got: object = None
        except MvccError as e:
            got = e
        try:
            self.twin.compact(rev, index=index, term=term)
            while self.twin.compaction_step(2):
                pass
        except MvccError:
            pass
        if rev <= self.model.compacted:
            assert isinstance(got, CompactedError)
        elif rev > self.model.current:
            assert isinstance(got, FutureRevisionError)
        else:
            assert got is None
            self.model.compacted = rev

    @rule(n=st.integers(1, 4))
    def compaction_step(self, n: int) -> None:
        self.store.compaction_step(n)

    @rule()
    def reopen(self) -> None:
        self.backend.close()
        self.backend = Backend(self.dir + "/db", batch_limit=3)
        self.store = KVStore(self.backend)
        assert self.store.consistent_index() == (self.index, 1 if self.index else 0)

    @rule(
        data=st.data(),
        key=keys,
        end=ends,
        limit=st.integers(0, 3),
        order=st.sampled_from(list(SortOrder)),
        starget=st.sampled_from(list(SortTarget)),
        keys_only=st.booleans(),
        count_only=st.booleans(),
        min_mod=st.integers(0, 5),
        max_create=st.sampled_from([0, 3, 6]),
    )
    def range(
        self,
        data: st.DataObject,
        key: bytes,
        end: bytes,
        limit: int,
        order: SortOrder,
        starget: SortTarget,
        keys_only: bool,
        count_only: bool,
        min_mod: int,
        max_create: int,
    ) -> None:
        rev = data.draw(st.integers(0, self.model.current + 1))
        req = RangeRequest(
            key,
            end,
            limit=limit,
            revision=rev,
            sort_order=order,
            sort_target=starget,
            keys_only=keys_only,
            count_only=count_only,
            min_mod_revision=min_mod,
            max_create_revision=max_create,
        )
        try:
            expected: object = self.model.range(req)
        except MvccError as e:
            expected = e
        try:
            resp = self.store.range(req)
        except MvccError as e:
            assert type(e) is type(expected), (e, expected)
            return
        assert not isinstance(expected, MvccError), (expected, resp)
        kvs, count, more = expected  # type: ignore[misc]
        assert resp.header.revision == self.model.current
        assert (list(resp.kvs), resp.count, resp.more) == (kvs, count, more)

    @invariant()
    def revisions_agree(self) -> None:
        assert self.store.current_revision == self.model.current
        assert self.twin.current_revision == self.model.current
        assert self.store.compact_revision == self.model.compacted

    @invariant()
    def index_knows_create_revision_and_version(self) -> None:
        """What a put takes instead of reading the record it replaces (``live_generation``)
        is the live key's mod revision, create revision and version, in both stores, whatever
        compactions and reopens came before."""
        state = self.model.state()
        for store in (self.store, self.twin):
            for k in KEYS:
                gen = store._index.live_generation(k)
                kv = state.get(k)
                if kv is None:
                    assert gen is None
                    continue
                assert gen is not None
                assert (gen[0] >> 32, gen[1], gen[2]) == (
                    kv.mod_revision,
                    kv.create_revision,
                    kv.version,
                )

    @precondition(lambda self: not self.store.compaction_pending)
    @invariant()
    def all_history_readable_and_hashes_equal(self) -> None:
        low = max(1, self.model.compacted)
        for rev in range(low, self.model.current + 1):
            resp = self.store.range(RangeRequest(b"\x00", b"\x00", revision=rev))
            st_ = self.model.states[rev]
            assert list(resp.kvs) == [st_[k] for k in sorted(st_)]
        assert self.store.hash_kv() == self.twin.hash_kv()


# -- nested transactions ---------------------------------------------------------------------


def _to_op(op: tuple) -> RequestOp:  # type: ignore[type-arg]
    kind = op[0]
    if kind == "put":
        return RequestOp(request_put=PutRequest(op[1], op[2]))
    if kind == "del":
        return RequestOp(request_delete_range=DeleteRangeRequest(op[1], op[2]))
    if kind == "get":
        return RequestOp(request_range=RangeRequest(op[1], op[2]))
    return RequestOp(request_txn=_to_txn(op))


def _to_txn(t: tuple) -> TxnRequest:  # type: ignore[type-arg]
    _, (ckey, target, result, operand, cvalue), then_ops, else_ops = t
    cmp = Compare(result, target, ckey, version=operand, create_revision=operand, value=cvalue)
    return TxnRequest(
        (cmp,), tuple(_to_op(o) for o in then_ops), tuple(_to_op(o) for o in else_ops)
    )


def _model_compare(state: dict[bytes, KeyValue], c: tuple) -> bool:  # type: ignore[type-arg]
    ckey, target, result, operand, cvalue = c
    kv = state.get(ckey)
    if kv is None:
        if target == CompareTarget.VALUE:
            return False
        return _cmp(result, 0, operand)
    if target == CompareTarget.VALUE:
        return _cmp(result, kv.value, cvalue)
    actual = kv.version if target == CompareTarget.VERSION else kv.create_revision
    return _cmp(result, actual, operand)


def _model_path(t: tuple, state: dict[bytes, KeyValue]) -> list[bool]:  # type: ignore[type-arg]
    ok = _model_compare(state, t[1])
    out = [ok]
    for op in t[2] if ok else t[3]:
        if op[0] == "txn":
            out.extend(_model_path(op, state))
    return out


def _model_run(
    model: Model,
    t: tuple,
    work: dict[bytes, KeyValue],
    rev: int,
    path: object,  # type: ignore[type-arg]
) -> tuple[bool, tuple]:  # type: ignore[type-arg]
    ok = next(path)  # type: ignore[call-overload]
    changed = False
    shapes = []
    for op in t[2] if ok else t[3]:
        kind = op[0]
        if kind == "put":
            changed |= model.apply_ops(work, rev, [("put", op[1], op[2])])
            shapes.append(("put",))
        elif kind == "del":
            n = sum(1 for k in work if in_range(k, op[1], op[2]))
            changed |= model.apply_ops(work, rev, [("del", op[1], op[2])])
            shapes.append(("del", n))
        elif kind == "get":
            shapes.append(
                ("get", tuple(work[k] for k in sorted(work) if in_range(k, op[1], op[2])))
            )
        else:
            sub_changed, sub = _model_run(model, op, work, rev, path)
            changed |= sub_changed
            shapes.append(sub)
    return changed, ("txn", ok, tuple(shapes))


def _shape(resp: object) -> tuple:  # type: ignore[type-arg]
    out = []
    for r in resp.responses:  # type: ignore[attr-defined]
        if r.response_put is not None:
            out.append(("put",))
        elif r.response_delete_range is not None:
            out.append(("del", r.response_delete_range.deleted))
        elif r.response_range is not None:
            out.append(("get", r.response_range.kvs))
        else:
            out.append(_shape(r.response_txn))
    return ("txn", resp.succeeded, tuple(out))  # type: ignore[attr-defined]


def _cmp(result: CompareResult, a: int | bytes, b: int | bytes) -> bool:
    c = (a > b) - (a < b)  # type: ignore[operator]
    return {
        CompareResult.EQUAL: c == 0,
        CompareResult.NOT_EQUAL: c != 0,
        CompareResult.GREATER: c > 0,
        CompareResult.LESS: c < 0,
    }[result]


StoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestStoreModel = StoreMachine.TestCase


# 500 examples of 60 steps: about 25 s of CPU, 47 s of wall time at a load average of 5, over
# 300 s at a load average of 18 (2 cores). pytest-timeout's default 300 s stopped it mid-example,
# which Hypothesis then reported as a FlakyStrategyDefinition rather than as a timeout.
@pytest.mark.long
@pytest.mark.timeout(900)
def test_store_model_long() -> None:
    run_state_machine_as_test(
        StoreMachine, settings=settings(max_examples=500, stateful_step_count=60, deadline=None)
    )
