"""Unit tests of the watchable store: synced delivery, catch-up, victims, compaction cancel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from petcd.mvcc import (
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    QueueSink,
    RequestOp,
    TxnRequest,
    WatcherState,
    WatchFilterType,
    WatchResponse,
)
from petcd.mvcc.watchable_store import Watcher
from tests.unit.mvcc.conftest import Harness


def flat(responses: list[WatchResponse]) -> list[tuple[int, bytes, int]]:
    """(type, key, mod_revision) of every event delivered, in order."""
    return [(int(e.type), e.kv.key, e.kv.mod_revision) for r in responses for e in r.events]


def test_synced_watcher_gets_each_txn_in_one_response(h: Harness) -> None:
    sink = QueueSink()
    w = h.store.watch(b"a", b"c", sink=sink)
    assert w.state is WatcherState.SYNCED
    h.apply(PutRequest(b"a", b"1"))
    h.apply(PutRequest(b"zz", b"not watched"))
    h.apply(
        TxnRequest(
            success=(
                RequestOp(request_put=PutRequest(b"b", b"2")),
                RequestOp(request_put=PutRequest(b"q", b"x")),
                RequestOp(request_delete_range=DeleteRangeRequest(b"a")),
            )
        )
    )
    got = sink.drain()
    assert [r.revision for r in got] == [2, 4]
    assert got[1].events == (
        Event(EventType.PUT, KeyValue(b"b", 4, 4, 1, b"2", 0)),
        Event(EventType.DELETE, KeyValue(b"a", 0, 4, 0, b"", 0)),
    )
    assert all(r.watch_id == w.watch_id for r in got)


def test_single_key_watch_prefix_watch_and_filters(h: Harness) -> None:
    one, pre, noput, nodel = QueueSink(), QueueSink(), QueueSink(), QueueSink()
    h.store.watch(b"k", sink=one)
    h.store.watch(b"k", b"\x00", sink=pre)
    h.store.watch(b"k", b"l", sink=noput, filters=[WatchFilterType.NOPUT])
    h.store.watch(b"k", b"l", sink=nodel, filters=[WatchFilterType.NODELETE])
    h.apply(PutRequest(b"k"))
    h.apply(PutRequest(b"k2"))
    h.apply(DeleteRangeRequest(b"k", b"l"))
    assert flat(one.drain()) == [(0, b"k", 2), (1, b"k", 4)]
    assert flat(pre.drain()) == [(0, b"k", 2), (0, b"k2", 3), (1, b"k", 4), (1, b"k2", 4)]
    assert flat(noput.drain()) == [(1, b"k", 4), (1, b"k2", 4)]
    assert flat(nodel.drain()) == [(0, b"k", 2), (0, b"k2", 3)]


def test_prev_kv_on_live_and_historical_events(h: Harness) -> None:
    live = QueueSink()
    h.store.watch(b"a", sink=live, prev_kv=True)
    h.apply(PutRequest(b"a", b"1"))
    h.apply(PutRequest(b"a", b"2"))
    h.apply(DeleteRangeRequest(b"a"))
    evs = [e for r in live.drain() for e in r.events]
    assert [e.prev_kv.value if e.prev_kv else None for e in evs] == [None, b"1", b"2"]
    hist = QueueSink()
    h.store.watch(b"a", start_rev=1, sink=hist, prev_kv=True)
    h.store.sync()
    assert [e.prev_kv.value if e.prev_kv else None for r in hist.drain() for e in r.events] == [
        None,
        b"1",
        b"2",
    ]


def test_unsynced_watcher_catches_up_then_gets_live_events(h: Harness) -> None:
    for i in range(5):
        h.apply(PutRequest(b"a", str(i).encode()))  # revs 2..6
    sink = QueueSink()
    w = h.store.watch(b"a", start_rev=4, sink=sink)
    assert w.state is WatcherState.UNSYNCED
    h.apply(PutRequest(b"a", b"live-before-sync"))  # rev 7: not sent to unsynced watchers
    assert len(sink) == 0
    assert not h.store.sync()
    assert w.state is WatcherState.SYNCED
    h.apply(PutRequest(b"a", b"live"))  # rev 8
    assert flat(sink.drain()) == [(0, b"a", r) for r in (4, 5, 6, 7, 8)]


def test_catch_up_in_batches_never_splits_a_revision(h: Harness) -> None:
    h.store._catch_up_records_max = 4  # a small batch to exercise the cut
    for i in range(3):
        ops = tuple(RequestOp(request_put=PutRequest(bytes([97 + j]), b"%d" % i)) for j in range(3))
        h.apply(TxnRequest(success=ops))  # revs 2, 3, 4, three events each
    sink = QueueSink()
    h.store.watch(b"a", b"z", start_rev=2, sink=sink)
    rounds = 0
    while h.store.sync():
        rounds += 1
    got = sink.drain()
    assert rounds >= 1
    assert all(len({e.kv.mod_revision for e in r.events}) >= 1 for r in got)
    for r in got:
        counts: dict[int, int] = {}
        for e in r.events:
            counts[e.kv.mod_revision] = counts.get(e.kv.mod_revision, 0) + 1
        assert all(c == 3 for c in counts.values()), counts  # whole revisions only
    assert [m for _, _, m in flat(got)] == [2, 2, 2, 3, 3, 3, 4, 4, 4]


def test_slow_watcher_becomes_victim_then_catches_up_without_loss(h: Harness) -> None:
    sink = QueueSink(capacity=2)
    w = h.store.watch(b"a", sink=sink)
    for i in range(6):
        h.apply(PutRequest(b"a", str(i).encode()))  # revs 2..7
    assert w.state is WatcherState.VICTIM
    got = sink.drain()  # the consumer reads what fit
    h.store.sync()  # the victim's pending response goes out; it is now behind: unsynced
    got += sink.drain()
    while h.store.sync():
        got += sink.drain()
    got += sink.drain()
    assert w.state is WatcherState.SYNCED
    h.apply(PutRequest(b"a", b"after"))
    got += sink.drain()
    assert [m for _, _, m in flat(got)] == [2, 3, 4, 5, 6, 7, 8]


def test_compacted_start_revision_cancels_with_compact_revision(h: Harness) -> None:
    for i in range(4):
        h.apply(PutRequest(b"a", str(i).encode()))  # revs 2..5
    h.compact(4)
    sink = QueueSink()
    w = h.store.watch(b"a", start_rev=2, sink=sink)
    h.store.sync()
    (resp,) = sink.drain()
    assert resp.compact_revision == 4 and resp.events == ()
    assert w.state is WatcherState.CANCELLED
    assert h.store.watcher_counts() == (0, 0, 0)
    ok = QueueSink()
    h.store.watch(b"a", start_rev=4, sink=ok)
    h.store.sync()
    assert [m for _, _, m in flat(ok.drain())] == [4, 5]


def test_cancel_stops_delivery(h: Harness) -> None:
    sink = QueueSink()
    w = h.store.watch(b"a", sink=sink)
    assert h.store.cancel(w)
    assert not h.store.cancel(w)
    h.apply(PutRequest(b"a"))
    assert len(sink) == 0


def test_future_start_revision_waits_for_it(h: Harness) -> None:
    sink = QueueSink()
    h.store.watch(b"a", start_rev=4, sink=sink)
    h.apply(PutRequest(b"a"))  # 2
    h.apply(PutRequest(b"a"))  # 3
    h.apply(PutRequest(b"a"))  # 4
    assert [m for _, _, m in flat(sink.drain())] == [4]


def test_catch_up_batch_that_ends_early_leaves_a_further_watcher_alone(h: Harness) -> None:
    # Regression: a batch cut at revision 3 for an old watcher moved a recovering victim
    # (next revision 5) back to 4, so it received revision 4 twice.
    h.store._catch_up_records_max = 3
    h.apply(PutRequest(b"a", b"1"))  # 2
    fast = QueueSink(capacity=1)
    h.store.watch(b"a", sink=fast)
    for _ in range(3):
        h.apply(PutRequest(b"a", b"x"))  # 3, 4 (victim), 5
    slow = QueueSink(capacity=1)
    h.store.watch(b"a", start_rev=1, sink=slow)
    got_fast: list[WatchResponse] = []
    got_slow: list[WatchResponse] = []
    for _ in range(10):
        got_fast += fast.drain()
        got_slow += slow.drain()
        if not h.store.sync():
            break
    got_fast += fast.drain()
    got_slow += slow.drain()
    assert [m for _, _, m in flat(got_fast)] == [3, 4, 5]
    assert [m for _, _, m in flat(got_slow)] == [2, 3, 4, 5]


def test_replace_backend_and_reload_then_watchers_resync(h: Harness, tmp_path: Path) -> None:
    # A follower installing a leader's snapshot: the db is replaced, the store reloads, and
    # its watchers catch up on whatever the new history holds after their next revision.
    leader = Harness(tmp_path / "leader")
    try:
        for v in (b"1", b"2", b"3"):
            leader.apply(PutRequest(b"a", v))  # revs 2..4
        snap = tmp_path / "snap.db"
        with open(snap, "wb") as f:
            leader.backend.copy_to(f)
    finally:
        leader.backend.close()
    h.apply(PutRequest(b"a", b"old"))  # rev 2 here
    sink = QueueSink()
    w = h.store.watch(b"a", sink=sink)  # next revision 3
    assert h.backend.replace_with(str(snap)) == (3, 1)
    h.store.reload()
    assert h.store.current_revision == 4 and h.store.get(b"a").value == b"3"  # type: ignore[union-attr]
    assert w.state is WatcherState.UNSYNCED
    h.store.sync()
    assert [
        (m, e.kv.value) for r in sink.drain() for e in r.events for m in [e.kv.mod_revision]
    ] == [
        (3, b"2"),
        (4, b"3"),
    ]


class PlainSink:
    """A sink without ``send_fanout``: the store must fall back to one send per watcher."""

    def __init__(self) -> None:
        self.got: list[WatchResponse] = []

    def send(self, response: WatchResponse) -> bool:
        self.got.append(response)
        return True


def test_watchers_of_one_key_sharing_a_sink_get_one_fanout_each_write(h: Harness) -> None:
    sink, plain, other = QueueSink(), PlainSink(), QueueSink()
    ws = [h.store.watch(b"k", sink=sink) for _ in range(3)]
    wp = h.store.watch(b"k", sink=plain)
    prev = h.store.watch(b"k", sink=sink, prev_kv=True)
    noput = h.store.watch(b"k", sink=sink, filters=[WatchFilterType.NOPUT])
    o = h.store.watch(b"k", sink=other)
    h.apply(PutRequest(b"k", b"1"))
    h.apply(TxnRequest(success=(RequestOp(request_put=PutRequest(b"k", b"2")),)))
    h.apply(DeleteRangeRequest(b"k"))
    got = sink.drain()
    by_id = {w.watch_id: [r for r in got if r.watch_id == w.watch_id] for w in [*ws, prev, noput]}
    for w in ws:
        assert [(r.revision, [e.kv.value for e in r.events]) for r in by_id[w.watch_id]] == [
            (2, [b"1"]),
            (3, [b"2"]),
            (4, [b""]),
        ]
    # the plain watchers of one write share one events tuple
    assert by_id[ws[0].watch_id][0].events is by_id[ws[2].watch_id][0].events
    assert [
        [e.prev_kv.value if e.prev_kv else None for e in r.events] for r in by_id[prev.watch_id]
    ] == [[None], [b"1"], [b"2"]]
    assert [r.revision for r in by_id[noput.watch_id]] == [4]
    assert [r.revision for r in plain.got] == [2, 3, 4]
    assert all(r.watch_id == wp.watch_id for r in plain.got)
    assert [(r.watch_id, r.revision) for r in other.drain()] == [(o.watch_id, r) for r in (2, 3, 4)]
    assert all(w.min_rev == 5 for w in [*ws, wp, prev, noput, o])


def test_a_full_shared_sink_takes_what_fits_and_the_rest_become_victims(h: Harness) -> None:
    sink = QueueSink(capacity=5)
    ws = [h.store.watch(b"k", sink=sink) for _ in range(3)]
    h.apply(PutRequest(b"k", b"1"))  # 3 fit
    h.apply(PutRequest(b"k", b"2"))  # 2 fit, one watcher becomes a victim
    assert sorted(w.state.value for w in ws) == ["synced", "synced", "victim"]
    h.apply(PutRequest(b"k", b"3"))  # the sink is full: both synced ones become victims
    assert all(w.state is WatcherState.VICTIM for w in ws)
    got = sink.drain()
    for _ in range(20):
        if not h.store.sync() and not len(sink):
            break
        got += sink.drain()
    assert all(w.state is WatcherState.SYNCED for w in ws)
    h.apply(PutRequest(b"k", b"4"))
    got += sink.drain()
    for w in ws:
        mine = [r for r in got if r.watch_id == w.watch_id]
        assert [m for _, _, m in flat(mine)] == [2, 3, 4, 5]


class RecordingFanoutSink(QueueSink):
    """A QueueSink that records the watchers object of every fan-out it is handed."""

    def __init__(self) -> None:
        super().__init__(capacity=1000)
        self.fanouts: list[tuple[Sequence[Watcher], int]] = []

    def send_fanout(
        self, watchers: Sequence[Watcher], events: tuple[Event, ...], revision: int
    ) -> int:
        self.fanouts.append((watchers, revision))
        return super().send_fanout(watchers, events, revision)


def test_a_write_hands_each_sink_one_fanout_of_an_unchanged_group(h: Harness) -> None:
    sink = RecordingFanoutSink()
    a, b, c = (h.store.watch(b"k", sink=sink) for _ in range(3))
    late = h.store.watch(b"k", start_rev=5, sink=sink)  # revision 5 is still to come
    h.apply(PutRequest(b"k", b"1"))  # 2
    h.apply(PutRequest(b"other", b"x"))  # 3: not k, no fan-out
    h.apply(PutRequest(b"k", b"2"))  # 4
    (w2, r2), (w4, r4) = sink.fanouts
    assert (r2, r4) == (2, 4)
    assert w4 is w2 and list(w2) == [a, b, c]  # the same object while the group is unchanged
    assert (a.min_rev, late.min_rev) == (5, 5)
    h.apply(PutRequest(b"k", b"3"))  # 5: the late watcher's first revision, it joins
    assert list(sink.fanouts[-1][0]) == [a, b, c, late]
    assert h.store.cancel(b)
    h.apply(PutRequest(b"k", b"4"))  # 6
    assert list(sink.fanouts[-1][0]) == [a, c, late]
    got = sink.drain()
    assert [(r.watch_id, r.revision) for r in got if r.watch_id == late.watch_id] == [
        (late.watch_id, 5),
        (late.watch_id, 6),
    ]
    assert [r.revision for r in got if r.watch_id == b.watch_id] == [2, 4, 5]
    assert all(w.min_rev == 7 for w in (a, c, late)) and b.min_rev == 6
    assert h.store.watcher_counts() == (3, 0, 0)
