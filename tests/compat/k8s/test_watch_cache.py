"""The Kubernetes watch cache (the apiserver's cacher) against etcd and petcd.

Theory of operation: the apiserver fills its cache with a paginated list at one
revision R (the first page at the current revision, the next ones at R, each
from the last key + ``\\0``), then watches the resource prefix from R+1 with
``prev_kv`` and ``progress_notify`` on a stream that carries the ``hasleader``
metadata (clientv3's ``WithRequireLeader``). Since Kubernetes 1.31 a consistent
read is served from the cache once it has caught up with the store's current
revision, which it learns from a progress response to ``RequestProgress``.

These tests drive that sequence with the generated gRPC stubs against the
session's reference etcd and the target, with the same writes in the same
order on both (so revisions agree), and compare a transcript of what the
cacher saw: pages, events (flattened: how live events are grouped into
responses depends on timing), progress revisions. They also check the cache
against a fresh list, and on the target that a progress response never claims
a revision whose events have not been delivered yet (etcd 3.4, the reference,
does not guarantee that: etcd issue #15220, see tests/robustness/test_reference.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.mvccpb import kv_pb2
from tests.compat.k8s.watch_stream import WatchStream
from tests.compat.servers import ServerProcess

REQUIRE_LEADER = (("hasleader", "true"),)
OBJECTS = 120
PAGE = 50


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Store:
    """The apiserver's storage calls over one channel (etcd3 store.go patterns)."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()

    def create(self, key: bytes, value: bytes) -> Any:
        return self.kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=key,
                        target=rpc_pb2.Compare.MOD,
                        result=rpc_pb2.Compare.EQUAL,
                        mod_revision=0,
                    )
                ],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
            )
        )

    def update(self, key: bytes, value: bytes, mod_revision: int) -> Any:
        return self.kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=key,
                        target=rpc_pb2.Compare.MOD,
                        result=rpc_pb2.Compare.EQUAL,
                        mod_revision=mod_revision,
                    )
                ],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
            )
        )

    def delete(self, key: bytes, mod_revision: int) -> Any:
        return self.kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=key,
                        target=rpc_pb2.Compare.MOD,
                        result=rpc_pb2.Compare.EQUAL,
                        mod_revision=mod_revision,
                    )
                ],
                success=[
                    rpc_pb2.RequestOp(
                        request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, prev_kv=True)
                    )
                ],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
            )
        )

    def put(self, key: bytes, value: bytes) -> int:
        revision: int = self.kv.Put(rpc_pb2.PutRequest(key=key, value=value)).header.revision
        return revision

    def list_pages(self, prefix: bytes, limit: int) -> tuple[int, list[Any], list[Any]]:
        """A paginated list as the cacher does it: (revision, kvs, per-page summaries)."""
        end = prefix_end(prefix)
        key, revision = prefix, 0
        kvs: list[Any] = []
        pages: list[Any] = []
        while True:
            resp = self.kv.Range(
                rpc_pb2.RangeRequest(key=key, range_end=end, limit=limit, revision=revision)
            )
            if revision == 0:
                revision = resp.header.revision
            pages.append((len(resp.kvs), resp.more, resp.count, resp.header.revision))
            kvs += resp.kvs
            if not resp.more:
                return revision, kvs, pages
            key = resp.kvs[-1].key + b"\0"

    def current_revision(self, prefix: bytes) -> int:
        """What the apiserver asks before a consistent read from its cache."""
        resp = self.kv.Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=1)
        )
        revision: int = resp.header.revision
        return revision


@pytest.fixture
def stores(servers: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[Store, Store]]:
    reference, target = servers
    ref, tgt = Store(reference.endpoint), Store(target.endpoint)
    yield ref, tgt
    ref.close()
    tgt.close()


def _event(ev: Any) -> tuple[Any, ...]:
    return (
        "DELETE" if ev.type == kv_pb2.Event.DELETE else "PUT",
        ev.kv.key.decode(),
        ev.kv.mod_revision,
        ev.kv.create_revision,
        ev.kv.version,
        ev.kv.value.decode(),
        ev.prev_kv.mod_revision if ev.HasField("prev_kv") else 0,
    )


def _cacher(store: Store, endpoint: str, prefix: bytes) -> dict[str, Any]:
    for i in range(OBJECTS):
        resp = store.create(prefix + b"ns-%d/pod-%03d" % (i % 4, i), b"spec-%d" % i)
        assert resp.succeeded
    list_rev, kvs, pages = store.list_pages(prefix, PAGE)
    cache = {kv.key: (kv.value, kv.mod_revision) for kv in kvs}
    assert len(cache) == OBJECTS
    with WatchStream(endpoint, REQUIRE_LEADER) as stream:
        stream.create(
            prefix,
            prefix_end(prefix),
            start_revision=list_rev + 1,
            prev_kv=True,
            progress_notify=True,
        )
        writes = []
        keys = sorted(cache)
        for n, key in enumerate(keys[:10]):
            writes.append(store.update(key, b"updated-%d" % n, cache[key][1]))
        writes.append(store.update(keys[0], b"stale", cache[keys[0]][1]))  # a conflict
        for key in keys[10:15]:
            writes.append(store.delete(key, cache[key][1]))
        for i in range(5):
            writes.append(store.create(prefix + b"ns-9/new-%d" % i, b"new"))
        last_in_prefix = writes[-1].header.revision
        final = 0
        for i in range(3):
            final = store.put(b"/k8s/cacher/other/%d" % i, b"x")
        events: list[tuple[Any, ...]] = []
        headers_cover_events = True
        while not events or events[-1][2] < last_in_prefix:
            resp = stream.next()
            assert not resp.canceled, resp
            evs = [_event(ev) for ev in resp.events]
            headers_cover_events &= bool(evs) and resp.header.revision >= evs[-1][2]
            events += evs
        stream.request_progress()
        progress = stream.next()
    for kind, key, mod, _, _, value, _ in events:
        if kind == "DELETE":
            del cache[key.encode()]
        else:
            cache[key.encode()] = (value.encode(), mod)
    fresh_rev, fresh, _ = store.list_pages(prefix, PAGE)
    return {
        "list_revision": list_rev,
        "pages": pages,
        "txn": [(w.succeeded, w.header.revision) for w in writes],
        "events": events,
        "headers_cover_events": headers_cover_events,
        "progress": (len(progress.events), progress.header.revision, progress.canceled),
        "final": final,
        "cache_matches": fresh_rev == final
        and cache == {kv.key: (kv.value, kv.mod_revision) for kv in fresh},
    }


def test_cacher_list_then_watch_from_list_revision(
    servers: tuple[ServerProcess, ServerProcess], stores: tuple[Store, Store]
) -> None:
    prefix = b"/k8s/cacher/pods/"
    ref = _cacher(stores[0], servers[0].endpoint, prefix)
    tgt = _cacher(stores[1], servers[1].endpoint, prefix)
    assert ref["cache_matches"] and ref["headers_cover_events"], ref
    assert ref["progress"] == (0, ref["final"], False)
    assert [p[0] for p in ref["pages"]] == [50, 50, 20]
    assert len(ref["events"]) == 20
    for field in ref:
        assert ref[field] == tgt[field], field


def _idle_progress(store: Store, endpoint: str) -> tuple[int, int, int, int, int]:
    with WatchStream(endpoint, REQUIRE_LEADER) as stream:
        stream.create(b"/k8s/idle/", b"/k8s/idle0", progress_notify=True)
        for i in range(3):
            store.put(b"/k8s/busy/%d" % i, b"x")
        current = store.current_revision(b"/k8s/idle/")
        stream.request_progress()
        resp = stream.next()
        # watch_id -1: a progress response for the whole stream (etcd 3.4 and 3.5 alike).
        return current, resp.header.revision, len(resp.events), int(resp.canceled), resp.watch_id


def test_request_progress_on_an_idle_stream_returns_the_current_revision(
    servers: tuple[ServerProcess, ServerProcess], stores: tuple[Store, Store]
) -> None:
    """A consistent read from the cache: the progress revision reaches the store's."""
    ref = _idle_progress(stores[0], servers[0].endpoint)
    tgt = _idle_progress(stores[1], servers[1].endpoint)
    assert ref[0] == ref[1] and ref[2:] == (0, 0, -1), ref
    assert ref == tgt


def _check_bookmarks(responses: list[Any], expected: list[int]) -> list[str]:
    """Every progress revision P: all events up to P delivered before it, none after."""
    problems = []
    delivered: list[int] = []
    progress = 0
    for resp in responses:
        if resp.events:
            for ev in resp.events:
                if ev.kv.mod_revision <= progress:
                    problems.append(f"event {ev.kv.mod_revision} after progress {progress}")
                delivered.append(ev.kv.mod_revision)
        else:
            rev = resp.header.revision
            if rev < progress:
                problems.append(f"progress went back from {progress} to {rev}")
            progress = max(progress, rev)
            missing = [r for r in expected if r <= rev and r not in delivered]
            if missing:
                problems.append(f"progress {rev} before events {missing[:5]}...")
    if delivered != expected:
        problems.append(f"events {delivered} != {expected}")
    return problems


def _bookmark_run(store: Store, endpoint: str, prefix: bytes, catch_up: bool) -> list[str]:
    expected: list[int] = []
    start = 0
    if catch_up:
        start = store.current_revision(prefix) + 1
        expected = [store.put(prefix + b"k%03d" % i, b"v") for i in range(200)]
    with WatchStream(endpoint, REQUIRE_LEADER) as stream:
        stream.create(prefix, prefix_end(prefix), start_revision=start, progress_notify=True)
        stream.request_progress()
        for i in range(40):
            expected.append(store.put(prefix + b"live%02d" % i, b"v"))
            stream.request_progress()
        responses: list[Any] = []
        final = expected[-1]
        while True:
            resp = stream.next()
            assert not resp.canceled, resp
            responses.append(resp)
            if not resp.events and resp.header.revision >= final:
                break
            if not resp.events:
                continue
            if resp.events[-1].kv.mod_revision >= final:
                stream.request_progress()  # the ones sent while unsynced may be answered late
    return _check_bookmarks(responses, expected)


@pytest.mark.parametrize("catch_up", [False, True], ids=["live", "catch-up"])
def test_progress_never_precedes_undelivered_events(
    servers: tuple[ServerProcess, ServerProcess], stores: tuple[Store, Store], catch_up: bool
) -> None:
    target = servers[1]
    if target.target == "etcd":
        pytest.skip("etcd 3.4 answers progress requests early (etcd #15220; tests/robustness)")
    prefix = b"/k8s/bookmarks/%d/" % catch_up
    # The same writes on the reference keep both servers at the same revision.
    for i in range(200 if catch_up else 0):
        stores[0].put(prefix + b"k%03d" % i, b"v")
    for i in range(40):
        stores[0].put(prefix + b"live%02d" % i, b"v")
    assert _bookmark_run(stores[1], target.endpoint, prefix, catch_up) == []
