"""An asyncio etcd v3 client over ``grpc.aio``.

Theory of operation: :class:`AsyncClient` is the asyncio twin of
:class:`petcd.client.Client`: the same constructor, channels and failover
order over the endpoint list (both are a :class:`petcd.client.client.ClientBase`),
the same methods (as coroutines), the same requests (built by
:mod:`petcd.client.requests`), the same token authentication and the same
errors. It adds the streaming APIs that only make sense with an event loop:
:meth:`AsyncClient.watch` (an async iterator of WatchResponses over one Watch
stream) and :meth:`AsyncClient.lease_keep_alive` (a stream of renewals). All
channels belong to the event loop that first used the client; close the client
(``async with``) on that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import requests as rq
from petcd.client.client import AUTH_NOT_ENABLED, ClientBase, FragmentAssembler, Stubs
from petcd.client.errors import ClientError, EtcdServerError, UnavailableError, from_rpc_error


class AsyncClient(ClientBase):
    """An asyncio etcd v3 client (KV, Watch, Lease, Maintenance, Cluster)."""

    _grpc = grpc.aio

    # ------------------------------------------------------------ plumbing

    async def authenticate(self, *, timeout_s: float | None = None) -> str:
        """Get a token for the configured user (done on the first call otherwise)."""
        assert self._username is not None, "no user configured"
        request = rpc_pb2.AuthenticateRequest(name=self._username, password=self._password)
        self._token = None
        try:
            resp = await self._call_once(lambda s: s.auth.Authenticate, request, None, timeout_s)
        except EtcdServerError as exc:
            if exc.message != AUTH_NOT_ENABLED:
                raise
            self._token = ""  # authentication is off: carry on without a token
            return self._token
        self._token = str(resp.token)
        return self._token

    async def _call(
        self,
        pick: Callable[[Stubs], Any],
        request: Any,
        *,
        endpoint: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        if self._username is not None:
            if self._token is None:
                await self.authenticate(timeout_s=timeout_s)
            try:
                return await self._call_once(pick, request, endpoint, timeout_s)
            except EtcdServerError as exc:
                if exc.message != "etcdserver: invalid auth token":
                    raise
                await self.authenticate(timeout_s=timeout_s)
        return await self._call_once(pick, request, endpoint, timeout_s)

    async def _call_once(
        self,
        pick: Callable[[Stubs], Any],
        request: Any,
        endpoint: str | None,
        timeout_s: float | None,
    ) -> Any:
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        order = self._failover_order(endpoint)
        last: ClientError | None = None
        for i, ep in enumerate(order):
            method = pick(self._channel_for(ep))
            wait = len(order) == 1 or i == len(order) - 1
            try:
                result = await method(
                    request, timeout=timeout, wait_for_ready=wait, metadata=self._metadata()
                )
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if isinstance(err, UnavailableError) and i + 1 < len(order):
                    last = err
                    continue
                raise err from None
            if endpoint is None:
                self._current = self.endpoints.index(ep)
            return result
        assert last is not None
        raise last

    async def close(self) -> None:
        stubs, self._stubs = self._stubs, {}
        for s in stubs.values():
            await s.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ KV

    async def range(self, request: Any, *, timeout_s: float | None = None) -> Any:
        return await self._call(lambda s: s.kv.Range, request, timeout_s=timeout_s)

    async def get(self, key: bytes, range_end: bytes = b"", **options: Any) -> Any:
        """Like :meth:`petcd.client.Client.get`."""
        timeout_s = options.pop("timeout_s", None)
        return await self.range(rq.range_request(key, range_end, **options), timeout_s=timeout_s)

    async def put(self, key: bytes, value: bytes, **options: Any) -> Any:
        """Like :meth:`petcd.client.Client.put`."""
        timeout_s = options.pop("timeout_s", None)
        request = rq.put_request(key, value, **options)
        return await self._call(lambda s: s.kv.Put, request, timeout_s=timeout_s)

    async def delete(self, key: bytes, range_end: bytes = b"", **options: Any) -> Any:
        """Like :meth:`petcd.client.Client.delete`."""
        timeout_s = options.pop("timeout_s", None)
        request = rq.delete_request(key, range_end, **options)
        return await self._call(lambda s: s.kv.DeleteRange, request, timeout_s=timeout_s)

    async def txn(
        self,
        compare: Sequence[Any] = (),
        success: Sequence[Any] = (),
        failure: Sequence[Any] = (),
        *,
        timeout_s: float | None = None,
    ) -> Any:
        request = rq.txn_request(compare, success, failure)
        return await self._call(lambda s: s.kv.Txn, request, timeout_s=timeout_s)

    async def compact(
        self, revision: int, *, physical: bool = False, timeout_s: float | None = None
    ) -> Any:
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        return await self._call(lambda s: s.kv.Compact, request, timeout_s=timeout_s)

    # ------------------------------------------------------------ Maintenance / Cluster

    async def status(self, endpoint: str | None = None, *, timeout_s: float | None = None) -> Any:
        request = rpc_pb2.StatusRequest()
        return await self._call(
            lambda s: s.maintenance.Status, request, endpoint=endpoint, timeout_s=timeout_s
        )

    async def hash_kv(
        self, revision: int = 0, endpoint: str | None = None, *, timeout_s: float | None = None
    ) -> Any:
        request = rpc_pb2.HashKVRequest(revision=revision)
        return await self._call(
            lambda s: s.maintenance.HashKV, request, endpoint=endpoint, timeout_s=timeout_s
        )

    async def alarm_list(self, *, timeout_s: float | None = None) -> Any:
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)
        return await self._call(lambda s: s.maintenance.Alarm, request, timeout_s=timeout_s)

    async def member_list(
        self, *, linearizable: bool = False, timeout_s: float | None = None
    ) -> Any:
        request = rpc_pb2.MemberListRequest(linearizable=linearizable)
        return await self._call(lambda s: s.cluster.MemberList, request, timeout_s=timeout_s)

    # ------------------------------------------------------------ Lease

    async def lease_grant(
        self, ttl_s: int, lease_id: int = 0, *, timeout_s: float | None = None
    ) -> Any:
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl_s, ID=lease_id)
        return await self._call(lambda s: s.lease.LeaseGrant, request, timeout_s=timeout_s)

    async def lease_revoke(self, lease_id: int, *, timeout_s: float | None = None) -> Any:
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        return await self._call(lambda s: s.lease.LeaseRevoke, request, timeout_s=timeout_s)

    async def lease_time_to_live(
        self, lease_id: int, *, keys: bool = False, timeout_s: float | None = None
    ) -> Any:
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        return await self._call(lambda s: s.lease.LeaseTimeToLive, request, timeout_s=timeout_s)

    async def lease_leases(self, *, timeout_s: float | None = None) -> Any:
        request = rpc_pb2.LeaseLeasesRequest()
        return await self._call(lambda s: s.lease.LeaseLeases, request, timeout_s=timeout_s)

    async def _stream_call(self, pick: Callable[[Stubs], Any], requests: Any) -> Any:
        if self._username is not None and self._token is None:
            await self.authenticate()
        stubs = self._channel_for(self.endpoints[self._current])
        return pick(stubs)(requests, metadata=self._metadata(), wait_for_ready=True)

    async def lease_keep_alive(
        self, lease_id: int, requests: AsyncIterator[None]
    ) -> AsyncIterator[Any]:
        """Renew ``lease_id`` once per item of ``requests``; yields each renewal."""

        async def ids() -> AsyncIterator[Any]:
            async for _ in requests:
                yield rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

        call = await self._stream_call(lambda s: s.lease.LeaseKeepAlive, ids())
        try:
            async for response in call:
                yield response
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    # ------------------------------------------------------------ Watch

    async def watch(self, key: bytes, range_end: bytes = b"", **options: Any) -> AsyncIterator[Any]:
        """Watch a key or range; yields every WatchResponse after the creation one.

        Options are those of :func:`petcd.client.requests.watch_create_request`
        (``prefix``, ``start_revision``, ``prev_kv``, ``progress_notify``...). The
        stream ends when the server cancels the watch (e.g. compacted revision:
        the last response has ``canceled`` and ``compact_revision`` set). The parts of a
        response split by the server (``fragment=True``) are yielded joined.
        """
        create = rq.watch_create_request(key, range_end, **options)

        async def outgoing() -> AsyncIterator[Any]:
            yield create
            # Keep the request side open for as long as the watch lives.
            await _forever()

        call = await self._stream_call(lambda s: s.watch.Watch, outgoing())
        fragments = FragmentAssembler()
        try:
            async for part in call:
                response = fragments.feed(part)
                if response is None:
                    continue
                if response.created and not response.events:
                    continue
                yield response
                if response.canceled:
                    return
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()


async def _forever() -> None:
    await asyncio.Event().wait()
