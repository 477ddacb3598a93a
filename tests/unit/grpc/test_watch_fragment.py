"""Watch ``fragment``: a large response of a fragment watcher is split as etcd 3.5 splits it.

etcd (v3rpc sendFragments): a response of at least the limit (--max-request-bytes plus 512 KiB)
with two events or more is sent as several responses with the same header and watch_id, each
under the limit unless it holds a single event, all but the last with ``fragment`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.grpc.watch import WatchService
from petcd.mvcc.requests import (
    Event,
    EventType,
    KeyValue,
    PutRequest,
    RequestOp,
    ResponseHeader,
    TxnRequest,
)
from tests.unit.grpc.test_election_lock import FakeContext, StoreMember, settle
from tests.unit.grpc.test_watch_service_raw import requests

H = ResponseHeader(cluster_id=7, member_id=9, revision=1234, raft_term=2)


def ev(i: int, size: int) -> Event:
    return Event(EventType.PUT, KeyValue(b"k%d" % i, 5, 1234, 1, b"v" * size, 0))


def parse(parts: list[bytes]) -> list[Any]:
    return [rpc_pb2.WatchResponse.FromString(p) for p in parts]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    limit=st.integers(min_value=1, max_value=3000),
    watch_id=st.integers(min_value=0, max_value=2**40),
)
def test_fragments_follow_etcds_rules(sizes: list[int], limit: int, watch_id: int) -> None:
    evs = tuple(ev(i, s) for i, s in enumerate(sizes))
    whole = convert.watch_events_bytes(H, watch_id, evs)
    parts = convert.watch_fragments_bytes(H, watch_id, evs, limit)
    msgs = parse(parts)
    if len(whole) < limit or len(evs) < 2:
        assert parts == [whole]
        return
    assert len(parts) >= 2
    # Every fragment but the last is flagged; each is the protobuf serialization of itself.
    assert [m.fragment for m in msgs] == [True] * (len(msgs) - 1) + [False]
    for p, m in zip(parts, msgs, strict=True):
        assert p == m.SerializeToString()
        assert m.header.revision == H.revision and m.watch_id == watch_id
        assert len(m.events) >= 1
        # Under the limit, unless one event alone is that large.
        assert len(p) < limit or len(m.events) == 1
    # Fragments are as full as etcd makes them: the next event would not have fitted.
    for m, nxt in itertools.pairwise(msgs):
        bigger = rpc_pb2.WatchResponse()
        bigger.CopyFrom(m)
        bigger.fragment = True
        bigger.events.append(nxt.events[0])
        assert bigger.ByteSize() >= limit
    # Concatenated, the events are the unsplit response's events, in order.
    joined = [e for m in msgs for e in m.events]
    assert joined == list(rpc_pb2.WatchResponse.FromString(whole).events)


def test_small_response_or_single_event_is_never_split() -> None:
    one = (ev(0, 5000),)
    assert convert.watch_fragments_bytes(H, 3, one, 100) == [convert.watch_events_bytes(H, 3, one)]
    two = (ev(0, 10), ev(1, 10))
    assert convert.watch_fragments_bytes(H, 3, two, 1000) == [convert.watch_events_bytes(H, 3, two)]


def create(key: bytes, **kw: Any) -> Any:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw))


def test_service_splits_only_for_fragment_watchers(tmp_path: Path) -> None:
    """Two watchers of one prefix; one txn of 20 puts; only the fragment watcher is split."""
    member = StoreMember(tmp_path)
    limit = 4096

    async def main(raw: bool) -> list[Any]:
        service = WatchService(member, fragment_bytes_max=limit)
        service.raw = raw
        ctx = FakeContext()
        q: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(service.Watch(requests(q), ctx))
        await q.put(create(b"f/", range_end=b"f0", fragment=True))
        await q.put(create(b"f/", range_end=b"f0"))
        await settle()
        puts = tuple(
            RequestOp(request_put=PutRequest(key=b"f/%02d" % i, value=b"%02d" % i * 200))
            for i in range(20)
        )
        await member.txn(TxnRequest(success=puts))
        await settle()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return [
            rpc_pb2.WatchResponse.FromString(m) if isinstance(m, bytes) else m for m in ctx.written
        ]

    try:
        for raw in (False, True):
            got = asyncio.run(main(raw))
            assert [m.created for m in got[:2]] == [True, True]
            frag = [m for m in got[2:] if m.watch_id == 0]
            whole = [m for m in got[2:] if m.watch_id == 1]
            assert len(whole) == 1 and not whole[0].fragment and len(whole[0].events) == 20
            assert whole[0].ByteSize() >= limit
            assert len(frag) >= 2
            assert [m.fragment for m in frag] == [True] * (len(frag) - 1) + [False]
            assert all(m.ByteSize() < limit for m in frag)
            assert {m.header.revision for m in frag} == {whole[0].header.revision}
            assert [e for m in frag for e in m.events] == list(whole[0].events)
    finally:
        member.backend.close()


def test_watchers_are_removed_when_the_stream_ends(tmp_path: Path) -> None:
    """Cancelled through ``Watch`` (context.write) or with the generator abandoned mid-stream
    (as a wrapping interceptor leaves it), the stream's watchers leave the store."""
    member = StoreMember(tmp_path)

    async def through_watch() -> None:
        ctx = FakeContext()
        q: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(WatchService(member).Watch(requests(q), ctx))
        await q.put(create(b"a"))
        await q.put(create(b"b", range_end=b"c"))
        await settle()
        assert member.store.watcher_counts()[0] == 2
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert member.store.watcher_counts() == (0, 0, 0)

    async def abandoned_generator() -> None:
        q: asyncio.Queue[Any] = asyncio.Queue()

        async def consume() -> None:
            gen = WatchService(member).responses(requests(q), FakeContext())
            async for _ in gen:
                await asyncio.Event().wait()  # cancelled here, outside the generator

        task = asyncio.create_task(consume())
        await q.put(create(b"a"))
        await settle()
        assert member.store.watcher_counts()[0] == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await settle()  # the loop's async-generator finalizer closes it
        assert member.store.watcher_counts() == (0, 0, 0)

    try:
        asyncio.run(through_watch())
        asyncio.run(abandoned_generator())
    finally:
        member.backend.close()
