"""etcd's v3lock service (Lock, Unlock) and the waiting recipes it shares with v3election.

Theory of operation
-------------------
etcd serves ``v3lockpb.Lock`` and ``v3electionpb.Election`` by running the client-side
recipes of ``clientv3/concurrency`` (Mutex, Election) against itself. petcd runs the same
recipes against the member (``ConcurrencyMember``: range, txn, delete_range, lease_grant and
the member's local watch), so the keys, revisions and headers are the ones etcd produces:

- a *session lease*: the request's lease, or, when it is 0, a fresh lease of
  ``SESSION_TTL_SECONDS`` that nobody keeps alive (etcd grants it and orphans the session);
- the waiter's key is ``<name>/<lease id in lower-case hex>``, put with the lease only if it
  does not exist (``create_revision == 0``); its create revision orders the waiters;
- ``wait_deletes``: repeatedly find the newest key under the prefix created before ours
  (``max_create_revision``) and watch it, from the revision of that read, until it is
  deleted; when none is left, we are first.

Lock (etcd 3.5): after the wait, the key is read again; if it is gone (the lease expired or
was revoked meanwhile) the call fails with ``mutex: session is expired``. If the wait fails
or the client goes away (the handler is cancelled), the key is deleted, as the Mutex's
``Unlock`` on a failed ``Lock``. That delete runs in a task of its own, so that it completes
even though the handler is being cancelled.

Errors: etcd's handlers return the in-process client's errors, which are not gRPC statuses,
so every failure reaches the client as ``UNKNOWN`` with etcd's text (for example
``etcdserver: requested lease not found``); ``_abort`` does that mapping.

Watches here are the member's local watches; a read is linearizable first, so a watch that
starts at that read's revision misses nothing, on a follower too.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from typing import Any, NoReturn, Protocol

import grpc

from petcd.api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from petcd.client.requests import prefix_range_end
from petcd.grpc import convert
from petcd.grpc.interceptors import CALL_CREDENTIALS
from petcd.grpc.status import is_expected, status_for
from petcd.grpc.watch import WatchMember
from petcd.lease import LeaseInfo
from petcd.mvcc.errors import CompactedError
from petcd.mvcc.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    EventType,
    PutRequest,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    WatchResponse,
)
from petcd.server.authz import Credentials
from petcd.server.log import Logger

SESSION_TTL_SECONDS = 60  # clientv3/concurrency's defaultSessionTTL
SINK_CAPACITY = 128


class ConcurrencyError(Exception):
    """An expected failure of a lock or election recipe, with etcd's text."""

    message = "concurrency error"

    def __init__(self) -> None:
        super().__init__(self.message)


class SessionExpiredError(ConcurrencyError):
    message = "mutex: session is expired"


class LostWatcherError(ConcurrencyError):
    message = "lost watcher waiting for delete"


class ConcurrencyMember(WatchMember, Protocol):
    async def range(self, req: RangeRequest, creds: Credentials | None = None) -> RangeResponse: ...

    async def txn(self, req: TxnRequest, creds: Credentials | None = None) -> TxnResponse: ...

    async def delete_range(
        self, req: DeleteRangeRequest, creds: Credentials | None = None
    ) -> DeleteRangeResponse: ...

    async def lease_grant(
        self, lease_id: int, ttl_seconds: int
    ) -> tuple[ResponseHeader, LeaseInfo]: ...


# --- requests ---------------------------------------------------------------------------------


def waiter_key(prefix: bytes, lease: int) -> bytes:
    """``prefix`` + the lease id as Go's ``%x`` prints an int64 (lower case, ``-`` if < 0)."""
    return prefix + (b"%x" % lease)


def top_create(prefix: bytes, order: SortOrder, max_create_revision: int = 0) -> RangeRequest:
    """The first (ASCEND) or last (DESCEND) created key under ``prefix`` (withTop)."""
    return RangeRequest(
        key=prefix,
        range_end=prefix_range_end(prefix),
        limit=1,
        sort_order=order,
        sort_target=SortTarget.CREATE,
        max_create_revision=max_create_revision,
    )


def create_revision_is(key: bytes, revision: int) -> Compare:
    return Compare(
        result=CompareResult.EQUAL,
        target=CompareTarget.CREATE,
        key=key,
        create_revision=revision,
    )


async def session_lease(member: ConcurrencyMember, lease: int) -> int:
    """The session's lease: ``lease``, or a new orphaned one when it is 0 (etcd's NewSession)."""
    if lease != 0:
        return lease
    _, info = await member.lease_grant(0, SESSION_TTL_SECONDS)
    return int(info.id)


# --- watching -----------------------------------------------------------------------------------


class WatchQueue:
    """A member watch as an async iterator of store-level responses.

    The store writes to ``send`` from the event loop without blocking; a full queue refuses
    (the watcher becomes a victim and the member retries it after ``wake_watch_sync``).
    """

    def __init__(
        self, member: WatchMember, key: bytes, range_end: bytes, start_revision: int
    ) -> None:
        self._member = member
        self._items: collections.deque[WatchResponse] = collections.deque()
        self._wake = asyncio.Event()
        self._refused = False
        self._watcher = member.watch(
            key,
            range_end,
            start_revision,
            sink=self,
            prev_kv=False,
            filters=(),
            watch_id=0,
        )

    def send(self, response: WatchResponse) -> bool:
        if len(self._items) >= SINK_CAPACITY:
            self._refused = True
            return False
        self._items.append(response)
        self._wake.set()
        return True

    async def next(self) -> WatchResponse:
        """The next response; raises ``CompactedError`` if the start revision was compacted."""
        while not self._items:
            self._wake.clear()
            await self._wake.wait()
        resp = self._items.popleft()
        if self._refused and len(self._items) < SINK_CAPACITY // 2:
            self._refused = False
            self._member.wake_watch_sync()
        if resp.compact_revision:
            raise CompactedError(resp.compact_revision)
        return resp

    def close(self) -> None:
        self._member.cancel_watch(self._watcher)


async def wait_delete(member: ConcurrencyMember, key: bytes, revision: int) -> None:
    """Return once ``key`` is deleted at or after ``revision`` (etcd's waitDelete)."""
    q = WatchQueue(member, key, b"", revision)
    try:
        while True:
            resp = await q.next()
            if any(ev.type == EventType.DELETE for ev in resp.events):
                return
    finally:
        q.close()


async def wait_deletes(
    member: ConcurrencyMember, prefix: bytes, max_create_revision: int
) -> ResponseHeader:
    """Wait until no key under ``prefix`` has create revision <= ``max_create_revision``."""
    while True:
        resp = await member.range(
            top_create(prefix, SortOrder.DESCEND, max_create_revision), CALL_CREDENTIALS.get()
        )
        if not resp.kvs:
            return resp.header
        await wait_delete(member, resp.kvs[0].key, resp.header.revision)


# --- cleanup and errors -------------------------------------------------------------------------


class Cleanups:
    """Writes that must finish although the handler that started them is being cancelled."""

    def __init__(self, log: Logger | None) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None and self._log is not None:
                self._log.warn("cleanup failed", what=what, error=repr(t.exception()))

        task.add_done_callback(done)

    async def wait(self) -> None:
        """Wait for the cleanups started so far (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, ConcurrencyError):
        return exc.message
    return status_for(exc)[1]


async def abort(context: Any, exc: BaseException, log: Logger | None, method: str) -> NoReturn:
    """etcd's answer to a failed lock/election call: UNKNOWN with the error's text."""
    if not isinstance(exc, ConcurrencyError) and not is_expected(exc) and log is not None:
        log.error("unexpected error in gRPC handler", method=method, error=repr(exc))
    await context.abort(grpc.StatusCode.UNKNOWN, error_text(exc))
    raise AssertionError("context.abort returned")  # pragma: no cover


# --- the Lock service ---------------------------------------------------------------------------


class LockService(v3lock_pb2_grpc.LockServicer):
    def __init__(self, member: ConcurrencyMember, log: Logger | None = None) -> None:
        self._member = member
        self._log = log
        self.cleanups = Cleanups(log)

    async def lock(self, name: bytes, lease: int) -> tuple[ResponseHeader, bytes]:
        """Acquire ``name`` for ``lease`` (0: a new 60 s lease); the header and the key."""
        member = self._member
        lease = await session_lease(member, lease)
        prefix = name + b"/"
        key = waiter_key(prefix, lease)
        owner = RequestOp(request_range=top_create(prefix, SortOrder.ASCEND))
        resp = await member.txn(
            TxnRequest(
                compare=(create_revision_is(key, 0),),
                success=(RequestOp(request_put=PutRequest(key=key, lease=lease)), owner),
                failure=(RequestOp(request_range=RangeRequest(key=key)), owner),
            ),
            CALL_CREDENTIALS.get(),
        )
        my_rev = resp.header.revision
        if not resp.succeeded:
            mine = _range_of(resp, 0).kvs
            assert mine, "a failed create_revision == 0 compare with no key"
            my_rev = mine[0].create_revision
        holder = _range_of(resp, 1).kvs
        if not holder or holder[0].create_revision == my_rev:
            return resp.header, key
        try:
            await wait_deletes(member, prefix, my_rev - 1)
            got = await member.range(RangeRequest(key=key), CALL_CREDENTIALS.get())
        except BaseException:
            self.cleanups.spawn(
                member.delete_range(DeleteRangeRequest(key=key), CALL_CREDENTIALS.get()), "unlock"
            )
            raise
        if not got.kvs:
            raise SessionExpiredError()
        return got.header, key

    async def Lock(self, request: Any, context: Any) -> Any:
        try:
            header, key = await self.lock(request.name, request.lease)
            return v3lock_pb2.LockResponse(header=convert.header_pb(header), key=key)
        except Exception as e:
            await abort(context, e, self._log, "Lock")

    async def Unlock(self, request: Any, context: Any) -> Any:
        try:
            resp = await self._member.delete_range(
                DeleteRangeRequest(key=request.key), CALL_CREDENTIALS.get()
            )
            return v3lock_pb2.UnlockResponse(header=convert.header_pb(resp.header))
        except Exception as e:
            await abort(context, e, self._log, "Unlock")


def _range_of(resp: TxnResponse, i: int) -> RangeResponse:
    r = resp.responses[i].response_range
    assert r is not None, "txn response is not a range"
    return r
