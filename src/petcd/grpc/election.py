"""etcd's v3election service: Campaign, Proclaim, Leader, Observe, Resign.

Theory of operation
-------------------
The recipe is clientv3/concurrency's Election run against the member, as etcd's server does
(the shared pieces, the session lease, the waiter key and ``wait_deletes``, live in
``petcd.grpc.lock``). An election ``name`` owns the keys under ``name/``; each candidate's key
is ``name/<lease hex>`` and the leader is the key with the smallest create revision.

- Campaign(name, lease, value): create the key with the value if absent; if it already
  existed (the same lease campaigns again) its create revision is kept and a different value
  is proclaimed. Then wait until every older key is deleted. The answer is the header of the
  creating txn and ``LeaderKey{name, key, rev = create revision, lease}``. A cancelled
  campaign (client gone) resigns, in a task of its own.
- Proclaim(leader, value): put the value only while the key's create revision is still
  ``leader.rev``; otherwise ``election: not leader``.
- Resign(leader): delete the key only while its create revision is ``leader.rev``; no error
  when it is not (etcd answers with the txn's header either way).
- Leader(name): the first created key under the prefix, or ``election: no leader``.
- Observe(name): a server stream. The current leader's kv (or, when there is none, the
  first key put under the prefix), then every put of that key, until it is deleted; then
  the next leader, and so on. A failed read ends the stream without an error, as etcd's.

A request whose ``leader`` field is unset fails with etcd's ``"leader" field must be
provided``. A request lease of 0 makes a fresh 60 s lease, as etcd's session does (for
Proclaim and Resign too). Every failure is sent as ``UNKNOWN`` with etcd's text
(``petcd.grpc.lock.abort``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from petcd.api.v3electionpb import v3election_pb2, v3election_pb2_grpc
from petcd.client.requests import prefix_range_end
from petcd.grpc import convert
from petcd.grpc.interceptors import CALL_CREDENTIALS
from petcd.grpc.lock import (
    Cleanups,
    ConcurrencyError,
    ConcurrencyMember,
    WatchQueue,
    abort,
    create_revision_is,
    session_lease,
    top_create,
    wait_deletes,
    waiter_key,
)
from petcd.mvcc.requests import (
    DeleteRangeRequest,
    EventType,
    KeyValue,
    PutRequest,
    RangeRequest,
    RequestOp,
    ResponseHeader,
    SortOrder,
    TxnRequest,
)
from petcd.server.log import Logger


class MissingLeaderKeyError(ConcurrencyError):
    message = '"leader" field must be provided'


class NotLeaderError(ConcurrencyError):
    message = "election: not leader"


class NoLeaderError(ConcurrencyError):
    message = "election: no leader"


class ElectionService(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, member: ConcurrencyMember, log: Logger | None = None) -> None:
        self._member = member
        self._log = log
        self.cleanups = Cleanups(log)

    # -- the recipes (decoded values in and out) -----------------------------------------------

    async def campaign(
        self, name: bytes, lease: int, value: bytes
    ) -> tuple[ResponseHeader, bytes, int, int]:
        """Wait to lead ``name``: the header, the leader key, its create revision, the lease."""
        member = self._member
        lease = await session_lease(member, lease)
        prefix = name + b"/"
        key = waiter_key(prefix, lease)
        resp = await member.txn(
            TxnRequest(
                compare=(create_revision_is(key, 0),),
                success=(RequestOp(request_put=PutRequest(key=key, value=value, lease=lease)),),
                failure=(RequestOp(request_range=RangeRequest(key=key)),),
            ),
            CALL_CREDENTIALS.get(),
        )
        rev = resp.header.revision
        if not resp.succeeded:
            existing = resp.responses[0].response_range
            assert existing is not None and existing.kvs, "compare failed but no key"
            kv = existing.kvs[0]
            rev = kv.create_revision
            if kv.value != value:
                try:
                    await self.proclaim(key, rev, lease, value)
                except BaseException:
                    self.cleanups.spawn(self.resign(key, rev), "resign")
                    raise
        try:
            await wait_deletes(member, prefix, rev - 1)
        except asyncio.CancelledError:  # the client went away: etcd resigns (only then)
            self.cleanups.spawn(self.resign(key, rev), "resign")
            raise
        return resp.header, key, rev, lease

    async def proclaim(self, key: bytes, rev: int, lease: int, value: bytes) -> ResponseHeader:
        resp = await self._member.txn(
            TxnRequest(
                compare=(create_revision_is(key, rev),),
                success=(RequestOp(request_put=PutRequest(key=key, value=value, lease=lease)),),
            ),
            CALL_CREDENTIALS.get(),
        )
        if not resp.succeeded:
            raise NotLeaderError()
        return resp.header

    async def resign(self, key: bytes, rev: int) -> ResponseHeader:
        resp = await self._member.txn(
            TxnRequest(
                compare=(create_revision_is(key, rev),),
                success=(RequestOp(request_delete_range=DeleteRangeRequest(key=key)),),
            ),
            CALL_CREDENTIALS.get(),
        )
        return resp.header

    async def leader(self, name: bytes) -> tuple[ResponseHeader, KeyValue]:
        resp = await self._member.range(
            top_create(name + b"/", SortOrder.ASCEND), CALL_CREDENTIALS.get()
        )
        if not resp.kvs:
            raise NoLeaderError()
        return resp.header, resp.kvs[0]

    # -- gRPC ----------------------------------------------------------------------------------

    async def Campaign(self, request: Any, context: Any) -> Any:
        try:
            header, key, rev, lease = await self.campaign(
                request.name, request.lease, request.value
            )
            return v3election_pb2.CampaignResponse(
                header=convert.header_pb(header),
                leader=v3election_pb2.LeaderKey(name=request.name, key=key, rev=rev, lease=lease),
            )
        except Exception as e:
            await abort(context, e, self._log, "Campaign")

    async def Proclaim(self, request: Any, context: Any) -> Any:
        try:
            if not request.HasField("leader"):
                raise MissingLeaderKeyError()
            ld = request.leader
            lease = await session_lease(self._member, ld.lease)
            header = await self.proclaim(ld.key, ld.rev, lease, request.value)
            return v3election_pb2.ProclaimResponse(header=convert.header_pb(header))
        except Exception as e:
            await abort(context, e, self._log, "Proclaim")

    async def Resign(self, request: Any, context: Any) -> Any:
        try:
            if not request.HasField("leader"):
                raise MissingLeaderKeyError()
            await session_lease(self._member, request.leader.lease)
            header = await self.resign(request.leader.key, request.leader.rev)
            return v3election_pb2.ResignResponse(header=convert.header_pb(header))
        except Exception as e:
            await abort(context, e, self._log, "Resign")

    async def Leader(self, request: Any, context: Any) -> Any:
        try:
            header, kv = await self.leader(request.name)
            return v3election_pb2.LeaderResponse(
                header=convert.header_pb(header), kv=convert.key_value_pb(kv)
            )
        except Exception as e:
            await abort(context, e, self._log, "Leader")

    async def Observe(self, request: Any, context: Any) -> None:
        member = self._member
        prefix = request.name + b"/"

        async def send(header: ResponseHeader, kv: KeyValue) -> None:
            await context.write(
                v3election_pb2.LeaderResponse(
                    header=convert.header_pb(header), kv=convert.key_value_pb(kv)
                )
            )

        try:
            while True:
                resp = await member.range(
                    top_create(prefix, SortOrder.ASCEND), CALL_CREDENTIALS.get()
                )
                if resp.kvs:
                    header, kv = resp.header, resp.kvs[0]
                else:
                    # No leader: the first key put under the prefix becomes the one observed.
                    header, kv = await _first_put(member, prefix, resp.header.revision)
                await send(header, kv)
                q = WatchQueue(member, kv.key, b"", header.revision + 1)
                try:
                    deleted = False
                    while not deleted:
                        wr = await q.next()
                        for ev in wr.events:
                            if ev.type == EventType.DELETE:
                                deleted = True
                                break
                            await send(member.watch_header(wr.revision), ev.kv)
                finally:
                    q.close()
        except Exception as e:  # etcd's observe loop ends quietly when a read or watch fails
            if self._log is not None and not isinstance(e, ConcurrencyError):
                self._log.info("election observe ended", error=repr(e))


async def _first_put(
    member: ConcurrencyMember, prefix: bytes, revision: int
) -> tuple[ResponseHeader, KeyValue]:
    q = WatchQueue(member, prefix, prefix_range_end(prefix), revision)
    try:
        while True:
            wr = await q.next()
            for ev in wr.events:
                if ev.type == EventType.PUT:
                    header = member.watch_header(wr.revision)
                    return ResponseHeader(
                        cluster_id=header.cluster_id,
                        member_id=header.member_id,
                        revision=ev.kv.mod_revision,
                        raft_term=header.raft_term,
                    ), ev.kv
    finally:
        q.close()
