"""petcd.grpc: watch responses serialized once per event, and merged per watcher on a stream."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.grpc.watch import (
    COALESCE_BYTES_MAX,
    Fanout,
    _Stream,
    _StreamSink,
    coalesce,
    serialize_watch_response,
)
from petcd.mvcc.requests import Event, EventType, KeyValue, ResponseHeader, WatchResponse
from petcd.mvcc.watchable_store import QueueSink, Watcher

i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
kvs = st.builds(
    KeyValue,
    key=st.binary(max_size=40),
    create_revision=i64,
    mod_revision=i64,
    version=i64,
    value=st.binary(max_size=300),
    lease=i64,
)
events = st.builds(
    Event,
    type=st.sampled_from([EventType.PUT, EventType.DELETE]),
    kv=kvs,
    prev_kv=st.none() | kvs,
)
headers = st.builds(ResponseHeader, cluster_id=u64, member_id=u64, revision=i64, raft_term=u64)


def reference(h: ResponseHeader, watch_id: int, evs: tuple[Event, ...]) -> bytes:
    m = rpc_pb2.WatchResponse(
        header=convert.header_pb(h), watch_id=watch_id, events=[convert.event_pb(e) for e in evs]
    )
    data: bytes = m.SerializeToString()
    return data


@settings(max_examples=200, deadline=None)
@given(headers, i64, st.lists(events, max_size=4).map(tuple))
def test_watch_events_bytes_equal_protobuf_serialization(
    h: ResponseHeader, watch_id: int, evs: tuple[Event, ...]
) -> None:
    data = convert.watch_events_bytes(h, watch_id, evs)
    assert data == reference(h, watch_id, evs)
    back = rpc_pb2.WatchResponse.FromString(data)
    assert back.watch_id == watch_id
    assert back.header.revision == h.revision
    assert [e.kv.value for e in back.events] == [e.kv.value for e in evs]


def test_one_event_shared_by_many_watchers_differs_only_in_watch_id() -> None:
    h = ResponseHeader(cluster_id=7, member_id=9, revision=1234, raft_term=2)
    ev = Event(EventType.PUT, KeyValue(b"k", 5, 1234, 3, b"v" * 256, 0))
    for wid in (0, 1, 127, 128, 2**40, -1):
        assert convert.watch_events_bytes(h, wid, (ev,)) == reference(h, wid, (ev,))


def test_a_new_event_at_a_reused_address_is_not_served_from_the_cache() -> None:
    h = ResponseHeader(revision=3)
    for i in range(50):  # freed events' ids get reused; each must encode its own content
        ev = Event(EventType.PUT, KeyValue(b"k", 1, 3, 1, str(i).encode(), 0))
        assert convert.watch_events_bytes(h, 1, (ev,)) == reference(h, 1, (ev,))
        del ev


def test_cache_stays_bounded() -> None:
    h = ResponseHeader(revision=3)
    keep = [Event(EventType.PUT, KeyValue(b"k%d" % i, 1, 3, 1, b"x", 0)) for i in range(5000)]
    for ev in keep:
        convert.watch_events_bytes(h, 1, (ev,))
    assert len(convert._event_fields) <= convert._EVENT_CACHE_ENTRIES_MAX


def test_serializer_passes_bytes_and_serializes_messages() -> None:
    m = rpc_pb2.WatchResponse(watch_id=3, created=True)
    assert serialize_watch_response(b"\x10\x03") == b"\x10\x03"
    assert serialize_watch_response(m) == m.SerializeToString()


def resp(wid: int, rev: int, value: bytes = b"v") -> WatchResponse:
    return WatchResponse(wid, (Event(EventType.PUT, KeyValue(b"k", 1, rev, 1, value, 0)),), rev)


def revs(r: WatchResponse) -> list[int]:
    return [e.kv.mod_revision for e in r.events]


def test_coalesce_merges_each_watchers_queued_responses_in_order() -> None:
    out = coalesce([resp(0, 2), resp(1, 2), resp(0, 3), resp(1, 3), resp(0, 4)])
    assert [(r.watch_id, r.revision, revs(r)) for r in out] == [
        (0, 4, [2, 3, 4]),
        (1, 3, [2, 3]),
    ]


def test_coalesce_never_moves_events_across_a_control_response() -> None:
    progress = rpc_pb2.WatchResponse(watch_id=-1)
    compacted = WatchResponse(1, (), 9, compact_revision=5)
    out = coalesce([resp(0, 2), progress, resp(0, 3), compacted, resp(0, 4), resp(0, 5)])
    assert out[1] is progress and out[3] is compacted
    assert [revs(r) for r in (out[0], out[2], out[4])] == [[2], [3], [4, 5]]
    assert len(out) == 5


def test_coalesce_keeps_merged_responses_under_the_size_bound() -> None:
    big = b"x" * (COALESCE_BYTES_MAX // 3)
    out = coalesce([resp(0, r, big) for r in range(2, 8)])
    assert [revs(r) for r in out] == [[2, 3], [4, 5], [6, 7]]
    assert all(sum(len(e.kv.value) for e in r.events) <= COALESCE_BYTES_MAX for r in out)


@settings(max_examples=100, deadline=None)
@given(headers, st.lists(i64, max_size=5), st.lists(events, min_size=1, max_size=3).map(tuple))
def test_fanout_bytes_equal_each_watchers_own_response(
    h: ResponseHeader, ids: list[int], evs: tuple[Event, ...]
) -> None:
    assert convert.watch_fanout_bytes(h, ids, evs) == [reference(h, w, evs) for w in ids]


def watchers(*ids: int) -> list[Watcher]:
    return [Watcher(i, b"k", b"", QueueSink(), False, frozenset(), 0) for i in ids]


def fan(ws: list[Watcher], rev: int, value: bytes = b"v") -> Fanout:
    return Fanout(ws, resp(0, rev, value).events, rev)


def expand(items: list[object]) -> list[object]:
    return [r for i in items for r in (i.responses() if isinstance(i, Fanout) else [i])]


def shape(items: list[object]) -> list[object]:
    return [(r.watch_id, r.revision, revs(r)) if isinstance(r, WatchResponse) else r for r in items]


def test_coalesce_merges_a_run_of_fanouts_to_the_same_watchers_into_one() -> None:
    ab = watchers(0, 1)
    out = coalesce([fan(ab, 2), fan(ab, 3), fan(ab, 4)])
    assert len(out) == 1 and isinstance(out[0], Fanout) and out[0].watchers is ab
    assert shape(expand(out)) == [(0, 4, [2, 3, 4]), (1, 4, [2, 3, 4])]


def test_coalesce_of_fanouts_equals_coalesce_of_their_responses() -> None:
    a, b, c = watchers(0, 1, 2)
    progress = rpc_pb2.WatchResponse(watch_id=-1)
    big = b"x" * (COALESCE_BYTES_MAX // 3)
    cases: list[list[object]] = [
        [fan([a, b], 2), fan([a], 3), fan([a, b], 4)],  # b fell behind at 3
        [fan([a, b], 2), resp(2, 2), fan([a, b], 3), resp(0, 3)],  # mixed with own responses
        [fan([a, b], 2), progress, fan([a, b], 3), fan([a, b], 4)],  # never across a control
        [fan([a, b, c], r, big) for r in range(2, 8)],  # the size bound
        [fan([a, b], 2), fan([b, a], 3)],  # same watchers, another order
    ]
    for items in cases:
        assert shape(expand(coalesce(items))) == shape(coalesce(expand(items))), items


def test_stream_sink_takes_a_fanout_up_to_its_capacity() -> None:
    async def main() -> None:
        sink = _StreamSink(capacity=5)
        ws = watchers(0, 1, 2)
        ev = resp(0, 2).events
        assert sink.send_fanout(ws, ev, 2) == 3
        assert sink.send_fanout(ws, ev, 3) == 2 and sink.refused
        assert sink.send_fanout(ws, ev, 4) == 0
        assert [len(i.watchers) for i in sink.items] == [3, 2]
        assert sink.events == 5 and sink.wake.is_set()

    asyncio.run(main())


class HeaderMember:
    """What ``_Stream`` asks of the member to encode responses."""

    def watch_header(self, revision: int = 0) -> ResponseHeader:
        return ResponseHeader(7, 8, revision, 3)

    def add_watch_sync_listener(self, cb: object) -> None:
        pass


def test_stream_fanout_bytes_follow_the_watchers_object_it_is_handed() -> None:
    """The stream keeps the watch ids of the last fan-out's watchers (the store hands the same
    object while a group is unchanged); a new object is read afresh."""

    async def main() -> None:
        stream = _Stream(HeaderMember(), None, raw=True)  # type: ignore[arg-type]
        group = tuple(watchers(0, 1, 300))
        smaller = group[::2]
        for ws, rev in [(group, 2), (group, 3), (smaller, 4), (group, 5)]:
            item = fan(list(ws), rev) if rev == 5 else Fanout(ws, resp(0, rev).events, rev)
            got = stream.fanout_to_proto(item, {})
            h = HeaderMember().watch_header(rev)
            assert got == [reference(h, w.watch_id, item.events) for w in ws], rev

    asyncio.run(main())


def test_fanout_bytes_of_one_write_for_several_streams() -> None:
    """The encoded events are kept for the next stream of the same write (the same tuple)."""
    ev1, ev2 = resp(0, 2, b"one").events, resp(0, 3, b"two").events
    h2, h3 = ResponseHeader(1, 2, 2, 9), ResponseHeader(1, 2, 3, 9)
    assert convert.watch_fanout_bytes(h2, [0, 5], ev1) == [reference(h2, w, ev1) for w in (0, 5)]
    assert convert.watch_fanout_bytes(h2, [7], ev1) == [reference(h2, 7, ev1)]
    assert convert.watch_fanout_bytes(h3, [7], ev2) == [reference(h3, 7, ev2)]
    assert convert.watch_fanout_bytes(h3, [1], (*ev2,)) == [reference(h3, 1, ev2)]
