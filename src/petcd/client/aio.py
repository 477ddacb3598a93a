"""An asyncio etcd v3 client over ``grpc.aio``.

Theory of operation: :class:`AsyncClient` is the asyncio twin of
:class:`petcd.client.Client`: the same constructor, the same methods (as
coroutines), the same requests (built by :mod:`petcd.client.requests`), the
same failover over the endpoint list, the same token authentication and the
same errors. It adds the streaming APIs that only make sense with an event
loop: :meth:`AsyncClient.watch` (an async iterator of WatchResponses over one
Watch stream) and :meth:`AsyncClient.lease_keep_alive` (a stream of renewals).
All channels belong to the event loop that first used the client; close the
client (``async with``) on that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.client import requests as rq
from petcd.client.client import (
    AUTH_NOT_ENABLED,
    DEFAULT_COMMAND_TIMEOUT_S,
    DEFAULT_DIAL_TIMEOUT_S,
    MAX_RECEIVE_BYTES,
    FragmentAssembler,
    TLSConfig,
    channel_options,
    normalize_endpoint,
)
from petcd.client.errors import ClientError, EtcdServerError, UnavailableError, from_rpc_error


class _AioStubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.kv: Any = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        self.watch: Any = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
        self.lease: Any = rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]
        self.cluster: Any = rpc_pb2_grpc.ClusterStub(channel)  # type: ignore[no-untyped-call]
        self.maintenance: Any = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
        self.auth: Any = rpc_pb2_grpc.AuthStub(channel)  # type: ignore[no-untyped-call]


class AsyncClient:
    """An asyncio etcd v3 client (KV, Watch, Lease, Maintenance, Cluster)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        dial_timeout_s: float = DEFAULT_DIAL_TIMEOUT_S,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        *,
        tls: TLSConfig | None = None,
        insecure_transport: bool = True,
        keepalive_time_s: float = 2.0,
        keepalive_timeout_s: float = 6.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self.endpoints = list(endpoints)
        self.dial_timeout_s = dial_timeout_s
        self.command_timeout_s = command_timeout_s
        self._tls = tls
        self._insecure_transport = insecure_transport
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._username = username
        self._password = password or ""
        self._token: str | None = None
        self._stubs: dict[str, _AioStubs] = {}
        self._current = 0

    # ------------------------------------------------------------ plumbing

    def _channel_for(self, endpoint: str) -> _AioStubs:
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            target, is_tls = normalize_endpoint(endpoint)
            if is_tls or self._tls is not None or not self._insecure_transport:
                tls = self._tls or TLSConfig()

                def read(path: str | None) -> bytes | None:
                    if path is None:
                        return None
                    with open(path, "rb") as f:
                        return f.read()

                creds = grpc.ssl_channel_credentials(
                    read(tls.ca_file), read(tls.key_file), read(tls.cert_file)
                )
                options = channel_options(endpoint, self._options, self._tls)
                channel = grpc.aio.secure_channel(target, creds, options)
            else:
                channel = grpc.aio.insecure_channel(target, self._options)
            stubs = _AioStubs(channel)
            self._stubs[endpoint] = stubs
        return stubs

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

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
        pick: Callable[[_AioStubs], Any],
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
        pick: Callable[[_AioStubs], Any],
        request: Any,
        endpoint: str | None,
        timeout_s: float | None,
    ) -> Any:
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        if endpoint is not None:
            order = [endpoint]
        else:
            order = [
                self.endpoints[(self._current + i) % len(self.endpoints)]
                for i in range(len(self.endpoints))
            ]
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

    async def _stream_call(self, pick: Callable[[_AioStubs], Any], requests: Any) -> Any:
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
