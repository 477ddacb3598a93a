"""Property test of the watch guarantees under slow consumers.

Random writes, watchers created at random moments with random start revisions, key ranges
and tiny buffers (so they become victims), some sharing one buffer as the watchers of one gRPC
stream do (so one write reaches several of them in one ``send_fanout``), random consumer reads
and sync() calls. At the
end every watcher must have received exactly the events of history from its start revision
on, for its keys, in order, each revision whole and once. History itself is checked against
the store: the events of revision r turn the state at r-1 into the state at r.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.mvcc import (
    DeleteRangeRequest,
    Event,
    EventType,
    PutRequest,
    QueueSink,
    RangeRequest,
    RequestOp,
    TxnRequest,
    Watcher,
    WatchResponse,
)
from tests.unit.mvcc.conftest import Harness

KEYS = [b"a", b"b", b"c", b"d"]
RANGES = [(b"a", b""), (b"b", b"d"), (b"a", b"\x00"), (b"c", b"\x00")]

write = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS)),
    st.tuples(st.just("del"), st.sampled_from(KEYS)),
    st.tuples(st.just("txn"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)),
)
step = st.one_of(
    write,
    st.tuples(
        st.just("watch"),
        st.sampled_from(RANGES),
        st.integers(0, 12),
        st.integers(1, 3),
        st.booleans(),  # share the buffer of the watcher created before
    ),
    st.tuples(st.just("read"), st.integers(0, 5)),
    st.tuples(st.just("sync")),
)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    return key >= start and (end == b"\x00" or key < end)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step, max_size=60))
def test_every_watcher_gets_exactly_its_history(tmp_path_factory: object, steps: list) -> None:  # type: ignore[type-arg]
    h = Harness(tmp_path_factory.mktemp("w"))  # type: ignore[attr-defined]
    try:
        store = h.store
        store._catch_up_records_max = 3  # force catch-up in several batches
        everything = QueueSink(capacity=10**6)
        store.watch(b"\x00", b"\x00", sink=everything)
        watchers: list[tuple[Watcher, QueueSink, int, list[WatchResponse]]] = []
        got_by_id: dict[int, list[WatchResponse]] = {}

        def read(sink: QueueSink) -> None:
            for r in sink.drain():
                got_by_id[r.watch_id].append(r)

        value = 0
        for s in steps:
            kind = s[0]
            if kind == "put":
                value += 1
                h.apply(PutRequest(s[1], b"%d" % value))
            elif kind == "del":
                h.apply(DeleteRangeRequest(s[1]))
            elif kind == "txn":
                value += 1
                ops = tuple(RequestOp(request_put=PutRequest(k, b"%d" % value)) for k in s[1])
                h.apply(TxnRequest(success=ops))
            elif kind == "watch":
                (key, end), start, cap, share = s[1], s[2], s[3], s[4]
                sink = watchers[-1][1] if share and watchers else QueueSink(capacity=cap)
                w = store.watch(key, end, start, sink=sink)
                first = start if start else store.current_revision + 1
                got_by_id[w.watch_id] = []
                watchers.append((w, sink, first, got_by_id[w.watch_id]))
            elif kind == "read" and watchers:
                read(watchers[s[1] % len(watchers)][1])
            else:
                store.sync()
        # the consumers catch up completely
        for _ in range(1000):
            for _, sink, _, _ in watchers:
                read(sink)
            if not store.sync():
                break
        for _, sink, _, _ in watchers:
            read(sink)

        history = everything.drain()
        # history is complete and consistent with the stored revisions
        assert [r.revision for r in history] == list(range(2, store.current_revision + 1))
        for r in history:
            before = {
                kv.key: kv
                for kv in store.range(RangeRequest(b"\x00", b"\x00", revision=r.revision - 1)).kvs
            }
            for ev in r.events:
                if ev.type == EventType.PUT:
                    before[ev.kv.key] = ev.kv
                else:
                    del before[ev.kv.key]
            after = store.range(RangeRequest(b"\x00", b"\x00", revision=r.revision)).kvs
            assert sorted(before.values(), key=lambda kv: kv.key) == list(after)

        for w, _, first, got in watchers:
            want: list[tuple[int, Event]] = [
                (r.revision, e)
                for r in history
                if r.revision >= first
                for e in r.events
                if in_range(e.kv.key, w.key, w.range_end)
            ]
            seen = [(e.kv.mod_revision, e) for r in got for e in r.events]
            assert seen == want, (w, first)
            for r in got:  # a response never splits a revision
                revs = {e.kv.mod_revision for e in r.events}
                for rev in revs:
                    n_got = sum(1 for e in r.events if e.kv.mod_revision == rev)
                    n_want = sum(1 for wr, _ in want if wr == rev)
                    assert n_got == n_want
    finally:
        h.backend.close()


@pytest.mark.long
@settings(max_examples=600, deadline=None)
@given(steps=st.lists(step, max_size=80))
def test_every_watcher_gets_exactly_its_history_long(
    tmp_path_factory: object,
    steps: list,  # type: ignore[type-arg]
) -> None:
    test_every_watcher_gets_exactly_its_history.hypothesis.inner_test(  # type: ignore[attr-defined]
        tmp_path_factory, steps
    )
