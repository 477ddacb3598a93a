"""The Lock and Election services over an in-process member made of a real WatchableStore.

The fake member applies writes at once (no raft) and syncs watchers inline, so every await
point is deterministic: a waiter is blocked exactly until the write that frees it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from petcd.api.v3electionpb import v3election_pb2
from petcd.api.v3lockpb import v3lock_pb2
from petcd.backend import Backend
from petcd.client.requests import prefix_range_end
from petcd.grpc.election import ElectionService
from petcd.grpc.lock import (
    SINK_CAPACITY,
    LockService,
    WatchQueue,
    wait_delete,
    waiter_key,
)
from petcd.lease import LeaseId, LeaseInfo
from petcd.mvcc import WatchableStore
from petcd.mvcc.errors import CompactedError
from petcd.mvcc.requests import (
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
    WriteRequest,
)
from petcd.mvcc.watchable_store import Watcher, WatchSink
from petcd.raft.types import Index, Term

_T = TypeVar("_T")


class FakeLessor:
    def __init__(self) -> None:
        self.keys: dict[int, set[bytes]] = {}

    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self.keys

    def attach(self, lease_id: int, key: bytes) -> None:
        self.keys[lease_id].add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        self.keys.get(lease_id, set()).discard(key)

    def lease_of(self, key: bytes) -> int:
        return next((lid for lid, keys in self.keys.items() if key in keys), 0)


class StoreMember:
    """The member's async API over a WatchableStore; writes apply at once."""

    def __init__(self, path: Path) -> None:
        self.backend = Backend(str(path / "db"))
        self.lessor = FakeLessor()
        self.store = WatchableStore(self.backend, lessor=self.lessor)
        self._index = itertools.count(1)
        self._lease_ids = itertools.count(0x100)

    def _apply(self, req: WriteRequest) -> Any:
        resp = self.store.apply(req, index=Index(next(self._index)), term=Term(1))
        self._sync()
        return resp

    def _sync(self) -> None:
        # The member's sync task, run inline; a victim whose sink is still full stays one.
        for _ in range(8):
            if not self.store.sync():
                return

    async def range(self, req: RangeRequest, creds: object = None) -> RangeResponse:
        await asyncio.sleep(0)
        return self.store.range(req)

    async def txn(self, req: TxnRequest, creds: object = None) -> TxnResponse:
        await asyncio.sleep(0)
        resp: TxnResponse = self._apply(req)
        return resp

    async def put(self, req: PutRequest) -> Any:
        await asyncio.sleep(0)
        return self._apply(req)

    async def delete_range(
        self, req: DeleteRangeRequest, creds: object = None
    ) -> DeleteRangeResponse:
        await asyncio.sleep(0)
        resp: DeleteRangeResponse = self._apply(req)
        return resp

    async def lease_grant(
        self, lease_id: int, ttl_seconds: int
    ) -> tuple[ResponseHeader, LeaseInfo]:
        lid = lease_id or next(self._lease_ids)
        self.lessor.keys[lid] = set()
        return ResponseHeader(), LeaseInfo(LeaseId(lid), ttl_seconds, ttl_seconds)

    def revoke(self, lease_id: int) -> None:
        keys = sorted(self.lessor.keys.pop(lease_id))
        ops = tuple(RequestOp(request_delete_range=DeleteRangeRequest(key=k)) for k in keys)
        self._apply(TxnRequest(success=ops))

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        sink: WatchSink,
        prev_kv: bool,
        filters: tuple[int, ...],
        watch_id: int,
    ) -> Watcher:
        w = self.store.watch(
            key,
            range_end,
            start_revision,
            sink=sink,
            prev_kv=prev_kv,
            filters=filters,
            watch_id=watch_id,
        )
        self._sync()
        return w

    def cancel_watch(self, w: Watcher) -> bool:
        return self.store.cancel(w)

    def watch_header(self, revision: int = 0) -> ResponseHeader:
        return ResponseHeader(revision=revision or self.store.current_revision)

    def watchers_synced(self, watchers: list[Watcher]) -> bool:
        return True

    def wake_watch_sync(self) -> None:
        self._sync()

    @property
    def watch_progress_interval_s(self) -> float:
        return 600.0

    @property
    def auth_enabled(self) -> bool:
        return False

    def add_watch_sync_listener(self, cb: Any) -> None:
        pass

    def remove_watch_sync_listener(self, cb: Any) -> None:
        pass

    def keys(self, prefix: bytes) -> list[bytes]:
        resp = self.store.range(RangeRequest(key=prefix, range_end=prefix_range_end(prefix)))
        return [kv.key for kv in resp.kvs]


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


class FakeContext:
    def __init__(self) -> None:
        self.written: list[Any] = []
        self.wrote = asyncio.Event()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)

    async def write(self, message: Any) -> None:
        self.written.append(message)
        self.wrote.set()


@pytest.fixture
def member(tmp_path: Path) -> Iterator[StoreMember]:
    m = StoreMember(tmp_path)
    yield m
    m.backend.close()


def run(fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return asyncio.run(fn())


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_prefix_end_and_waiter_key() -> None:
    assert prefix_range_end(b"lock/") == b"lock0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\x00"
    assert waiter_key(b"n/", 0x694DA21DEDBF4008) == b"n/694da21dedbf4008"
    assert waiter_key(b"n/", -1) == b"n/-1"


def test_lock_uncontended_then_again_with_the_same_lease(member: StoreMember) -> None:
    async def main() -> None:
        svc = LockService(member)
        _, info = await member.lease_grant(0, 10)
        header, key = await svc.lock(b"lk", info.id)
        assert key == b"lk/%x" % info.id
        assert header.revision == member.store.current_revision == 2
        # The same lease locking again gets the same key, at once (etcd: reuse the key).
        header2, key2 = await svc.lock(b"lk", info.id)
        assert (header2.revision, key2) == (2, key)
        assert member.keys(b"lk/") == [key]

    run(main)


def test_second_contender_waits_for_unlock(member: StoreMember) -> None:
    async def main() -> None:
        svc = LockService(member)
        _, a = await member.lease_grant(0, 10)
        _, b = await member.lease_grant(0, 10)
        _, key_a = await svc.lock(b"lk", a.id)
        waiter = asyncio.create_task(svc.lock(b"lk", b.id))
        await settle()
        assert not waiter.done()
        assert member.keys(b"lk/") == sorted([key_a, b"lk/%x" % b.id])
        unlocked = await svc.Unlock(v3lock_pb2.UnlockRequest(key=key_a), FakeContext())
        header, key_b = await asyncio.wait_for(waiter, 5)
        assert key_b == b"lk/%x" % b.id
        assert header.revision == unlocked.header.revision  # the read after the wait
        assert member.store.watcher_counts() == (0, 0, 0)  # the wait's watch is gone

    run(main)


def test_waiter_gets_the_lock_when_the_holders_lease_is_revoked(member: StoreMember) -> None:
    async def main() -> None:
        svc = LockService(member)
        _, a = await member.lease_grant(0, 10)
        _, b = await member.lease_grant(0, 10)
        await svc.lock(b"lk", a.id)
        waiter = asyncio.create_task(svc.lock(b"lk", b.id))
        await settle()
        assert not waiter.done()
        member.revoke(a.id)
        _, key_b = await asyncio.wait_for(waiter, 5)
        assert member.keys(b"lk/") == [key_b]

    run(main)


def test_waiter_whose_lease_is_revoked_gets_session_expired(member: StoreMember) -> None:
    async def main() -> None:
        svc = LockService(member)
        _, a = await member.lease_grant(0, 10)
        _, b = await member.lease_grant(0, 10)
        _, key_a = await svc.lock(b"lk", a.id)
        ctx = FakeContext()
        waiter = asyncio.create_task(svc.Lock(v3lock_pb2.LockRequest(name=b"lk", lease=b.id), ctx))
        await settle()
        member.revoke(b.id)
        await settle()
        assert not waiter.done()
        await member.delete_range(DeleteRangeRequest(key=key_a))
        with pytest.raises(Aborted) as e:
            await asyncio.wait_for(waiter, 5)
        assert (e.value.code, e.value.details) == (
            grpc.StatusCode.UNKNOWN,
            "mutex: session is expired",
        )

    run(main)


def test_cancelled_waiter_removes_its_key(member: StoreMember) -> None:
    async def main() -> None:
        svc = LockService(member)
        _, a = await member.lease_grant(0, 10)
        _, b = await member.lease_grant(0, 10)
        _, key_a = await svc.lock(b"lk", a.id)
        waiter = asyncio.create_task(svc.lock(b"lk", b.id))
        await settle()
        assert len(member.keys(b"lk/")) == 2
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await svc.cleanups.wait()
        assert member.keys(b"lk/") == [key_a]
        assert member.store.watcher_counts() == (0, 0, 0)

    run(main)


def test_lock_errors_are_unknown_with_etcds_text(member: StoreMember) -> None:
    async def main() -> None:
        svc = LockService(member)
        with pytest.raises(Aborted) as e:
            await svc.Lock(v3lock_pb2.LockRequest(name=b"lk", lease=12345), FakeContext())
        assert (e.value.code, e.value.details) == (
            grpc.StatusCode.UNKNOWN,
            "etcdserver: requested lease not found",
        )
        with pytest.raises(Aborted) as e:
            await svc.Unlock(v3lock_pb2.UnlockRequest(), FakeContext())
        assert e.value.details == "etcdserver: key is not provided"
        assert member.store.current_revision == 1  # nothing was written

    run(main)


def test_lock_with_no_lease_grants_a_60s_lease(member: StoreMember) -> None:
    async def main() -> None:
        svc = LockService(member)
        resp = await svc.Lock(v3lock_pb2.LockRequest(name=b"lk"), FakeContext())
        (lid,) = member.lessor.keys
        assert resp.key == b"lk/%x" % lid
        assert member.lessor.keys[lid] == {resp.key}

    run(main)


def test_campaign_proclaim_resign_and_the_next_leader(member: StoreMember) -> None:
    async def main() -> None:
        svc = ElectionService(member)
        _, a = await member.lease_grant(0, 10)
        _, b = await member.lease_grant(0, 10)
        ca = await svc.Campaign(
            v3election_pb2.CampaignRequest(name=b"el", lease=a.id, value=b"a1"), FakeContext()
        )
        assert (ca.leader.name, ca.leader.key, ca.leader.rev, ca.leader.lease) == (
            b"el",
            b"el/%x" % a.id,
            2,
            a.id,
        )
        assert ca.header.revision == 2
        second = asyncio.create_task(
            svc.Campaign(
                v3election_pb2.CampaignRequest(name=b"el", lease=b.id, value=b"b1"),
                FakeContext(),
            )
        )
        await settle()
        assert not second.done()
        pr = await svc.Proclaim(
            v3election_pb2.ProclaimRequest(leader=ca.leader, value=b"a2"), FakeContext()
        )
        assert pr.header.revision == 4
        ld = await svc.Leader(v3election_pb2.LeaderRequest(name=b"el"), FakeContext())
        assert (ld.kv.key, ld.kv.value, ld.kv.create_revision, ld.kv.version) == (
            ca.leader.key,
            b"a2",
            2,
            2,
        )
        rs = await svc.Resign(v3election_pb2.ResignRequest(leader=ca.leader), FakeContext())
        assert rs.header.revision == 5
        cb = await asyncio.wait_for(second, 5)
        assert (cb.leader.key, cb.leader.rev, cb.header.revision) == (b"el/%x" % b.id, 3, 3)
        with pytest.raises(Aborted) as e:
            await svc.Proclaim(
                v3election_pb2.ProclaimRequest(leader=ca.leader, value=b"x"), FakeContext()
            )
        assert (e.value.code, e.value.details) == (grpc.StatusCode.UNKNOWN, "election: not leader")
        # Resigning a key that is no longer ours changes nothing and is not an error.
        again = await svc.Resign(v3election_pb2.ResignRequest(leader=ca.leader), FakeContext())
        assert again.header.revision == 5
        assert member.keys(b"el/") == [cb.leader.key]

    run(main)


def test_campaign_again_with_another_value_proclaims_it(member: StoreMember) -> None:
    async def main() -> None:
        svc = ElectionService(member)
        _, a = await member.lease_grant(0, 10)
        h1, key, rev, lease = await svc.campaign(b"el", a.id, b"v1")
        h2, key2, rev2, _ = await svc.campaign(b"el", a.id, b"v2")
        assert (key2, rev2, lease) == (key, rev, a.id)
        assert h2.revision == h1.revision  # the header of the campaign txn, before the put
        _, kv = await svc.leader(b"el")
        assert (kv.value, kv.mod_revision) == (b"v2", 3)

    run(main)


def test_election_errors(member: StoreMember) -> None:
    async def main() -> None:
        svc = ElectionService(member)
        cases: list[tuple[Coroutine[Any, Any, Any], str]] = [
            (
                svc.Leader(v3election_pb2.LeaderRequest(name=b"none"), FakeContext()),
                "election: no leader",
            ),
            (
                svc.Proclaim(v3election_pb2.ProclaimRequest(value=b"x"), FakeContext()),
                '"leader" field must be provided',
            ),
            (
                svc.Resign(v3election_pb2.ResignRequest(), FakeContext()),
                '"leader" field must be provided',
            ),
            (
                svc.Campaign(v3election_pb2.CampaignRequest(name=b"e", lease=77), FakeContext()),
                "etcdserver: requested lease not found",
            ),
        ]
        for coro, text in cases:
            with pytest.raises(Aborted) as e:
                await coro
            assert (e.value.code, e.value.details) == (grpc.StatusCode.UNKNOWN, text)

    run(main)


def test_cancelled_campaign_resigns(member: StoreMember) -> None:
    async def main() -> None:
        svc = ElectionService(member)
        _, a = await member.lease_grant(0, 10)
        _, b = await member.lease_grant(0, 10)
        await svc.campaign(b"el", a.id, b"a")
        waiter = asyncio.create_task(svc.campaign(b"el", b.id, b"b"))
        await settle()
        assert member.keys(b"el/") == sorted([b"el/%x" % a.id, b"el/%x" % b.id])
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await svc.cleanups.wait()
        assert member.keys(b"el/") == [b"el/%x" % a.id]

    run(main)


def test_observe_follows_leaders(member: StoreMember) -> None:
    async def main() -> None:
        svc = ElectionService(member)
        ctx = FakeContext()
        observer = asyncio.create_task(svc.Observe(v3election_pb2.LeaderRequest(name=b"el"), ctx))
        await settle()
        assert ctx.written == []  # no leader yet: nothing until the first put
        _, a = await member.lease_grant(0, 10)
        _, b = await member.lease_grant(0, 10)
        _, key_a, rev_a, _ = await svc.campaign(b"el", a.id, b"a1")
        second = asyncio.create_task(svc.campaign(b"el", b.id, b"b1"))
        await settle()
        await svc.proclaim(key_a, rev_a, a.id, b"a2")
        await member.put(PutRequest(key=b"other", value=b"x"))  # not under the prefix
        await svc.resign(key_a, rev_a)
        await asyncio.wait_for(second, 5)
        await settle()
        seen = [(r.kv.key, r.kv.value, r.header.revision) for r in ctx.written]
        key_b = b"el/%x" % b.id
        assert seen == [(key_a, b"a1", 2), (key_a, b"a2", 4), (key_b, b"b1", 6)]
        await member.delete_range(DeleteRangeRequest(key=key_b))
        await settle()
        assert len(ctx.written) == 3  # no leader again: nothing sent
        observer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await observer
        assert member.store.watcher_counts() == (0, 0, 0)

    run(main)


def test_watch_queue_delivers_everything_to_a_slow_reader(member: StoreMember) -> None:
    async def main() -> None:
        q = WatchQueue(member, b"k", b"", 0)
        n = SINK_CAPACITY * 3
        for i in range(n):
            await member.put(PutRequest(key=b"k", value=b"%d" % i))
        values: list[bytes] = []
        while len(values) < n:
            resp = await asyncio.wait_for(q.next(), 5)
            values.extend(ev.kv.value for ev in resp.events)
        assert values == [b"%d" % i for i in range(n)]
        q.close()
        assert member.store.watcher_counts() == (0, 0, 0)

    run(main)


def test_waiting_from_a_compacted_revision_fails_with_etcds_error(member: StoreMember) -> None:
    async def main() -> None:
        for v in (b"1", b"2", b"3"):
            await member.put(PutRequest(key=b"k", value=v))
        member.store.compact(4, index=Index(100), term=Term(1))
        with pytest.raises(CompactedError) as e:
            await asyncio.wait_for(wait_delete(member, b"k", 2), 5)
        assert str(e.value) == "etcdserver: mvcc: required revision has been compacted"
        assert member.store.watcher_counts() == (0, 0, 0)

    run(main)
