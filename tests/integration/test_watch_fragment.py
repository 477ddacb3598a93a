"""Watch ``fragment`` over the network: a real member with a small --max-request-bytes.

etcd 3.5 splits the response of a watcher created with ``fragment`` when it reaches
--max-request-bytes plus 512 KiB (grpcOverheadBytes) and holds two events or more; a watcher
without ``fragment`` gets the whole response. One DeleteRange of 30 keys with 60,000-byte
values is one revision with 30 events; with ``prev_kv`` each carries its value, about 1.8 MB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import Client
from petcd.client.aio import AsyncClient
from tests.integration.petcd_proc import PetcdProcess, kv_stub
from tests.integration.test_watch import WatchStream

MAX_REQUEST_BYTES = 65536
LIMIT = MAX_REQUEST_BYTES + 512 * 1024
KEYS = 30
VALUE_BYTES = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(
        tmp_path_factory.mktemp("watch-fragment") / "data",
        extra_args=[f"--max-request-bytes={MAX_REQUEST_BYTES}"],
    )
    p.start()
    yield p
    p.stop()


def fill(kv: Any, prefix: bytes) -> None:
    for i in range(KEYS):
        kv.Put(
            rpc_pb2.PutRequest(key=prefix + b"%02d" % i, value=bytes([65 + i % 26]) * VALUE_BYTES)
        )


def create(prefix: bytes, fragment: bool) -> Any:
    return rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(
            key=prefix, range_end=prefix[:-1] + b"0", prev_kv=True, fragment=fragment
        )
    )


def test_large_response_is_split_only_for_the_fragment_watcher(server: PetcdProcess) -> None:
    prefix = b"frag/"
    with server.channel() as ch:
        kv = kv_stub(ch)
        fill(kv, prefix)
        stream = WatchStream(ch)
        try:
            stream.send(create(prefix, fragment=True))
            assert stream.next().created
            stream.send(create(prefix, fragment=False))
            assert stream.next().created
            deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=prefix, range_end=b"frag0"))
            assert deleted.deleted == KEYS
            got = []
            while sum(len(m.events) for m in got) < 2 * KEYS:
                got.append(stream.next())
        finally:
            stream.close()
    parts = [m for m in got if m.watch_id == 0]
    whole = [m for m in got if m.watch_id == 1]
    # The watcher without fragment: one response with every event, larger than the limit.
    assert len(whole) == 1 and not whole[0].fragment
    assert len(whole[0].events) == KEYS
    assert whole[0].ByteSize() >= LIMIT
    # The fragment watcher: parts under the limit, flagged but the last, same header.
    assert len(parts) == 4  # 9 events of ~60 KB fit under 589,824 bytes: 9 + 9 + 9 + 3
    assert [m.fragment for m in parts] == [True, True, True, False]
    assert all(m.ByteSize() < LIMIT for m in parts)
    assert [len(m.events) for m in parts] == [9, 9, 9, 3]
    assert {m.header.revision for m in parts} == {deleted.header.revision}
    assert all(m.header == whole[0].header for m in parts)
    assert [e for m in parts for e in m.events] == list(whole[0].events)
    assert [e.prev_kv.key for e in whole[0].events] == [prefix + b"%02d" % i for i in range(KEYS)]


def test_client_libraries_join_the_fragments(server: PetcdProcess) -> None:
    """Sync and asyncio clients; the watchers start at the DeleteRange's revision (history)."""
    with server.channel() as ch:
        kv = kv_stub(ch)
        fill(kv, b"fcli/")
        rev = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"fcli/", range_end=b"fcli0"))
    rev = rev.header.revision
    expected = [b"fcli/%02d" % i for i in range(KEYS)]

    with Client([server.endpoint]) as client:
        events = client.watch(
            b"fcli/", prefix=True, prev_kv=True, fragment=True, start_revision=rev
        )
        try:
            resp = next(events)
        finally:
            events.close()
    assert not resp.fragment and resp.header.revision == rev
    assert [e.prev_kv.key for e in resp.events] == expected
    assert resp.ByteSize() >= LIMIT

    async def aio() -> Any:
        async with AsyncClient([server.endpoint]) as ac:
            agen = ac.watch(b"fcli/", prefix=True, prev_kv=True, fragment=True, start_revision=rev)
            try:
                return await asyncio.wait_for(agen.__anext__(), 30)
            finally:
                await agen.aclose()

    resp = asyncio.run(aio())
    assert not resp.fragment and resp.header.revision == rev
    assert [e.prev_kv.key for e in resp.events] == expected
    assert resp.ByteSize() >= LIMIT
