"""etcd's Lease service over a member (grpc.aio).

Theory of operation
-------------------
Grant and Revoke go through raft (``Member.lease_grant`` / ``lease_revoke``); KeepAlive is a
bidirectional stream answered by the leader's lessor, one response per request, with TTL 0
for a lease that does not exist (etcd does not fail the stream for that); TimeToLive answers
TTL -1 for a lease that does not exist (OK, not an error, as etcd's LeaseServer); Leases
lists every lease id. Errors are mapped by ``petcd.grpc.status``.

KeepAlive and TimeToLive are answered by the leader's lessor only. On a follower the member
raises ``NotLeaderError`` and this service forwards the request to the leader's client URL
over gRPC (etcd forwards over its peer HTTP endpoint), one channel per leader address.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.grpc import convert
from petcd.grpc.interceptors import CALL_CREDENTIALS
from petcd.grpc.status import is_expected, status_for
from petcd.lease import LeaseInfo, TimeToLive
from petcd.mvcc.requests import ResponseHeader
from petcd.server.authz import Credentials
from petcd.server.errors import NoLeaderError, NotLeaderError
from petcd.server.log import Logger


class LeaseMember(Protocol):
    async def lease_grant(
        self, lease_id: int, ttl_seconds: int
    ) -> tuple[ResponseHeader, LeaseInfo]: ...

    async def lease_revoke(
        self, lease_id: int, creds: Credentials | None = None
    ) -> ResponseHeader: ...

    async def lease_keep_alive(self, lease_id: int) -> tuple[ResponseHeader, int]: ...

    async def lease_time_to_live(
        self, lease_id: int, with_keys: bool, creds: Credentials | None = None
    ) -> tuple[ResponseHeader, TimeToLive | None]: ...

    async def lease_leases(self) -> tuple[ResponseHeader, list[LeaseInfo]]: ...

    def leader_client_endpoint(self) -> str | None: ...


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, member: LeaseMember, log: Logger | None = None) -> None:
        self._member = member
        self._log = log
        self._channels: dict[str, Any] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _leader_stub(self) -> Any:
        endpoint = self._member.leader_client_endpoint()
        if endpoint is None:
            raise NoLeaderError()
        ch = self._channels.get(endpoint)
        if ch is None:
            for old in self._channels.values():  # a new leader: close channels to old ones
                task = asyncio.get_running_loop().create_task(old.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            self._channels = {endpoint: grpc.aio.insecure_channel(endpoint)}
            ch = self._channels[endpoint]
        return rpc_pb2_grpc.LeaseStub(ch)  # type: ignore[no-untyped-call]

    async def _forward_keep_alive(self, req: Any) -> Any:
        call = self._leader_stub().LeaseKeepAlive()
        try:
            await call.write(req)
            return await call.read()
        finally:
            call.cancel()

    async def _abort(self, context: Any, exc: BaseException, method: str) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):  # the leader's answer to a forwarded call
            await context.abort(exc.code(), exc.details() or "")
        code, message = status_for(exc)
        if not is_expected(exc) and self._log is not None:
            self._log.error("unexpected error in gRPC handler", method=method, error=repr(exc))
        await context.abort(code, message)

    async def LeaseGrant(self, request: Any, context: Any) -> Any:
        try:
            header, info = await self._member.lease_grant(request.ID, request.TTL)
            return rpc_pb2.LeaseGrantResponse(
                header=convert.header_pb(header), ID=info.id, TTL=info.ttl_seconds
            )
        except Exception as e:
            await self._abort(context, e, "LeaseGrant")

    async def LeaseRevoke(self, request: Any, context: Any) -> Any:
        try:
            header = await self._member.lease_revoke(request.ID, CALL_CREDENTIALS.get())
            return rpc_pb2.LeaseRevokeResponse(header=convert.header_pb(header))
        except Exception as e:
            await self._abort(context, e, "LeaseRevoke")

    async def LeaseKeepAlive(self, request_iterator: Any, context: Any) -> Any:
        try:
            async for req in request_iterator:
                try:
                    header, ttl = await self._member.lease_keep_alive(req.ID)
                except NotLeaderError:
                    await context.write(await self._forward_keep_alive(req))
                    continue
                await context.write(
                    rpc_pb2.LeaseKeepAliveResponse(
                        header=convert.header_pb(header), ID=req.ID, TTL=ttl
                    )
                )
        except Exception as e:
            await self._abort(context, e, "LeaseKeepAlive")

    async def LeaseTimeToLive(self, request: Any, context: Any) -> Any:
        try:
            creds = CALL_CREDENTIALS.get()
            try:
                header, ttl = await self._member.lease_time_to_live(request.ID, request.keys, creds)
            except NotLeaderError:
                token = None if creds is None else creds.token
                return await self._leader_stub().LeaseTimeToLive(
                    request, timeout=10, metadata=None if token is None else (("token", token),)
                )
            if ttl is None:
                return rpc_pb2.LeaseTimeToLiveResponse(
                    header=convert.header_pb(header), ID=request.ID, TTL=-1
                )
            return rpc_pb2.LeaseTimeToLiveResponse(
                header=convert.header_pb(header),
                ID=ttl.id,
                TTL=ttl.ttl_seconds,
                grantedTTL=ttl.granted_ttl_seconds,
                keys=list(ttl.keys),
            )
        except Exception as e:
            await self._abort(context, e, "LeaseTimeToLive")

    async def LeaseLeases(self, request: Any, context: Any) -> Any:
        try:
            header, leases = await self._member.lease_leases()
            return rpc_pb2.LeaseLeasesResponse(
                header=convert.header_pb(header),
                leases=[rpc_pb2.LeaseStatus(ID=info.id) for info in leases],
            )
        except Exception as e:
            await self._abort(context, e, "LeaseLeases")
