"""The member's per-request path: proposal timeouts and the proposer's own entries.

Theory of operation
-------------------
A one-member ``Member`` in a temporary directory, driven in-process. The WAL's sync is slowed
down on purpose so that a proposal is in raft but not yet applied when its request times out:
the caller gets etcd's timeout, the write is still applied later (as in etcd, a timed-out
request may take effect), and the member forgets the waiter, so that nothing accumulates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from petcd.mvcc.requests import PutRequest, RangeRequest, RequestOp, TxnRequest
from petcd.server.errors import RequestTimeoutError
from tests.unit.server.solo import slow_wal_syncs, start_solo


def test_a_timed_out_proposal_is_applied_later_and_forgotten(tmp_path: Path) -> None:
    async def run() -> None:
        m = await start_solo(tmp_path)
        try:
            await m.put(PutRequest(b"k", b"v1"))
            undo = slow_wal_syncs(m, 0.8)  # the loop runs on meanwhile
            m.request_timeout_s = 0.2
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                await m.put(PutRequest(b"k", b"v2"))
            assert time.monotonic() - started < 0.7  # the ticker's sweep, not the slow sync
            # Still being synced, but already forgotten (a new leader could overwrite it).
            assert not m._waiters and not m._local_requests
            undo()
            m.request_timeout_s = 5.0
            # The entry was in raft already: it is applied after all, from its decoded data.
            for _ in range(100):
                if m._waiters or m.kv.range(RangeRequest(b"k")).kvs[0].value != b"v2":
                    await asyncio.sleep(0.05)
            assert m.kv.range(RangeRequest(b"k")).kvs[0].value == b"v2"
            assert not m._waiters and not m._local_requests and not m._appended
            # The proposer's own entries (applied from the request objects) give the same
            # answers as decoded ones.
            r = await m.txn(TxnRequest(success=(RequestOp(request_put=PutRequest(b"k", b"v3")),)))
            assert r.succeeded and r.responses[0].response_put is not None
            got = await m.range(RangeRequest(b"k"))
            assert [kv.value for kv in got.kvs] == [b"v3"]
            assert got.header.revision == r.header.revision == 4
            assert not m._waiters and not m._local_requests and not m._appended
        finally:
            await m.stop()

    asyncio.run(run())


def test_proposals_time_out_while_the_ready_loop_is_busy(tmp_path: Path) -> None:
    """A write queued while the Ready loop runs a long job (a defragmentation) has not been
    proposed yet; it still fails with etcd's timeout at its deadline, not when the job ends,
    and a write after the job goes through."""

    async def run() -> None:
        m = await start_solo(tmp_path)
        try:
            m.request_timeout_s = 0.2
            job = asyncio.ensure_future(m._loop_job(lambda: time.sleep(1.0)))
            await asyncio.sleep(0.05)  # the Ready loop is in the job now
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                await m.put(PutRequest(b"k", b"v"))
            assert time.monotonic() - started < 0.7  # the ticker's sweep, not the job's end
            assert not job.done()
            await job
            m.request_timeout_s = 5.0
            await m.put(PutRequest(b"k", b"w"))
            assert [kv.value for kv in m.kv.range(RangeRequest(b"k")).kvs] == [b"w"]
            assert not m._waiters and not m._local_requests and not m._proposals
        finally:
            await m.stop()

    asyncio.run(run())


def test_writes_go_on_while_the_backend_commits(tmp_path: Path) -> None:
    """The backend's LMDB commit runs beside the Ready loop: a slow commit does not hold up
    the writes that come meanwhile (they go into the next batch), and both batches land."""

    async def run() -> None:
        m = await start_solo(tmp_path)
        try:
            backend = m._backend
            write = backend._write_detached
            writing = asyncio.Event()
            loop = asyncio.get_running_loop()

            def slow_write(detached: object) -> None:
                loop.call_soon_threadsafe(writing.set)
                time.sleep(1.0)
                write(detached)  # type: ignore[arg-type]

            backend._write_detached = slow_write  # type: ignore[method-assign]
            await m.put(PutRequest(b"first", b"1"))
            await asyncio.wait_for(writing.wait(), 5)  # the commit timer started it
            started = time.monotonic()
            for i in range(5):
                await m.put(PutRequest(b"during-%d" % i, b"2"))
            assert time.monotonic() - started < 0.6  # not after the 1 s commit
            assert m._backend_commit is not None  # still writing
            await asyncio.wait_for(asyncio.shield(m._backend_commit), 5)
            resp = await m.range(RangeRequest(b"d", b"e"))
            assert [kv.key for kv in resp.kvs] == [b"during-%d" % i for i in range(5)]
        finally:
            await m.stop()
        m2 = await start_solo(tmp_path)
        try:
            assert (await m2.range(RangeRequest(b"first"))).kvs[0].value == b"1"
            assert (await m2.range(RangeRequest(b"d", b"e"))).count == 5
        finally:
            await m2.stop()

    asyncio.run(run())


def test_the_leaders_appended_shortcut_never_misattributes(tmp_path: Path) -> None:
    """The leader finds the request id of its own entries by the identity of their data; an
    entry it does not recognise there is decoded, and stale records are dropped."""

    async def run() -> None:
        m = await start_solo(tmp_path)
        try:
            first = await m.put(PutRequest(b"a", b"1"))
            assert not m._appended
            # A record for the next index with other bytes (as if another leader's entry had
            # replaced this member's): the real entry there is decoded, not taken for it.
            nxt = m.node.raft.raft_log.last_index() + 1
            m._appended.append((nxt, b"someone else's entry", 12345))
            second = await m.put(PutRequest(b"b", b"2", prev_kv=True))
            assert second.header.revision == first.header.revision + 1
            assert second.prev_kv is None
            assert not m._appended  # the stale record went with the entry at its index
            results = await asyncio.gather(
                *(m.put(PutRequest(b"c%d" % i, b"%d" % i)) for i in range(20))
            )
            assert sorted(r.header.revision for r in results) == list(
                range(second.header.revision + 1, second.header.revision + 21)
            )
            got = await m.range(RangeRequest(b"c", b"d"))
            assert sorted(kv.value for kv in got.kvs) == sorted(b"%d" % i for i in range(20))
            assert not m._appended and not m._waiters and not m._local_requests
        finally:
            await m.stop()

    asyncio.run(run())


def test_a_pinned_range_refused_after_its_read_releases_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``range_records(pinned=True)`` with credentials reads through the auth gate; when the gate
    refuses after the read (the auth revision moved meanwhile), the views' lease is released
    there, not left to hold its read transaction (and to hold up closing the file)."""
    from petcd.auth import errors as auth_errors
    from petcd.backend.backend import PINNED_VALUE_MIN_BYTES
    from petcd.server.authz import Credentials

    async def body() -> None:
        m = await start_solo(tmp_path)
        try:
            for i in range(3):
                await m.put(PutRequest(b"k%d" % i, b"v" * PINNED_VALUE_MIN_BYTES, lease=0))
            m._backend.commit()
            req = RangeRequest(b"k", b"l")
            _, records, lease = await m.range_records(req, pinned=True)
            assert lease is not None and records is not None
            assert [type(r) for r in records] == [memoryview] * 3
            assert m._backend._leases == 1
            lease.release()
            assert m._backend._leases == 0

            async def stale(
                creds: object, r: object, run: Callable[[], Awaitable[object]]
            ) -> object:
                await run()
                raise auth_errors.AuthOldRevisionError()

            monkeypatch.setattr(m.gate, "read", stale)
            with pytest.raises(auth_errors.AuthOldRevisionError) as refused:
                await m.range_records(req, Credentials(token="t"), pinned=True)
            # released, not merely dropped: the refusal's traceback still holds the frames
            assert refused.traceback and m._backend._leases == 0
        finally:
            await m.stop()

    asyncio.run(body())


def test_a_linearizable_range_is_checked_against_the_auth_state_at_its_read_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd's Range waits for its read index and only then checks the caller's permissions
    (linearizableReadNotify, then doSerialize): a revocation committed while the read waits
    is what the check sees, so the answer is "permission denied", not "revision of auth
    store is old" (which petcd gave when it checked first and read after the wait). The
    revocation is applied inside the read index wait here, as it is when it commits on
    another member while this one's read index round is out."""
    from petcd.auth import errors as auth_errors
    from petcd.auth.store import READ, AuthOp, AuthRequest
    from petcd.server.authz import Credentials

    async def body() -> None:
        m = await start_solo(tmp_path)
        try:
            await m.put(PutRequest(b"secret", b"s3", lease=0))
            for req in [
                AuthRequest(AuthOp.USER_ADD, "root", no_password=True),
                AuthRequest(AuthOp.ROLE_ADD, "root"),
                AuthRequest(AuthOp.USER_GRANT_ROLE, "root", role="root"),
                AuthRequest(AuthOp.USER_ADD, "alice", no_password=True),
                AuthRequest(AuthOp.ROLE_ADD, "reader"),
                AuthRequest(AuthOp.ROLE_GRANT_PERMISSION, "reader", perm_type=READ, key=b"secret"),
                AuthRequest(AuthOp.USER_GRANT_ROLE, "alice", role="reader"),
                AuthRequest(AuthOp.ENABLE),
            ]:
                await m.gate.change(None, req)
            root = Credentials(common_name="root")
            alice = Credentials(common_name="alice")
            req = RangeRequest(b"secret")
            got = await m.range(req, alice)
            assert [kv.value for kv in got.kvs] == [b"s3"]

            orig = m._read_barrier
            revocations = []

            async def barrier() -> None:
                revoke = AuthRequest(AuthOp.ROLE_REVOKE_PERMISSION, "reader", key=b"secret")
                revocations.append(await m.gate.change(root, revoke))
                await orig()

            monkeypatch.setattr(m, "_read_barrier", barrier)
            with pytest.raises(auth_errors.PermissionDeniedError):
                await m.range(req, alice)
            for pinned in (False, True):
                grant = AuthRequest(
                    AuthOp.ROLE_GRANT_PERMISSION, "reader", perm_type=READ, key=b"secret"
                )
                await m.gate.change(root, grant)
                with pytest.raises(auth_errors.PermissionDeniedError):
                    await m.range_records(req, alice, pinned=pinned)
            assert len(revocations) == 3
            # A serializable Range has no read index to wait for: checked at once.
            await m.gate.change(root, grant)
            got = await m.range(RangeRequest(b"secret", serializable=True), alice)
            assert [kv.value for kv in got.kvs] == [b"s3"]
            assert len(revocations) == 3
        finally:
            await m.stop()

    asyncio.run(body())
