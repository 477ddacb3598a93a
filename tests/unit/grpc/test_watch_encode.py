"""petcd.grpc: watch responses serialized once per event, and merged per watcher on a stream."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.grpc.watch import COALESCE_BYTES_MAX, coalesce, serialize_watch_response
from petcd.mvcc.requests import Event, EventType, KeyValue, ResponseHeader, WatchResponse

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
