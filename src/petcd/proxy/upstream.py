"""The proxy's side as a client of the cluster: one gRPC channel per endpoint, failover.

Theory of operation
-------------------
``Upstream`` holds one ``grpc.aio`` channel per endpoint of ``--endpoints`` (``http://`` and
bare ``host:port`` plain, ``https://`` or any bare endpoint when upstream TLS is configured
with TLS, ``unix://`` sockets as petcd's client takes them). ``channel()`` picks one the way
etcd's client balances: round robin over the endpoints whose connection is up; when none is,
it waits (at most until the call's deadline) for the first that comes up, and when none does
it hands back the next one anyway, so that the call fails with the upstream's own
``UNAVAILABLE``.

``unary()`` forwards one call and retries it on another endpoint after ``UNAVAILABLE``, as
etcd's client retry interceptor does: a read-only method (``SAFE_METHODS``) whatever the
reason, any other only when the call never left (the connection could not be made), so that a
write is never applied twice. Retries stop at the call's deadline (``DEFAULT_TIMEOUT_S`` when
the caller gave none). Every other status comes back unchanged.

``--endpoints-auto-sync-interval``: ``sync()`` asks the cluster for its members
(``MemberList``, serializable) and replaces the endpoint list with their client URLs, opening
channels for new endpoints and closing the ones no longer listed, as etcd's client autoSync.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client.client import normalize_endpoint, unix_server_name

DEFAULT_TIMEOUT_S = 5.0  # etcd's client: retries end with the caller's deadline, or ~5 s
_RETRY_BACKOFF_S = 0.025
_CONNECT_WAIT_S = 1.0

# Methods etcd's client retries after any UNAVAILABLE (it calls them "repeatable").
SAFE_METHODS = frozenset(
    (
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "/etcdserverpb.Lease/LeaseLeases",
        "/etcdserverpb.Lease/LeaseRevoke",
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Auth/AuthStatus",
        "/etcdserverpb.Auth/UserGet",
        "/etcdserverpb.Auth/UserList",
        "/etcdserverpb.Auth/RoleGet",
        "/etcdserverpb.Auth/RoleList",
        "/grpc.health.v1.Health/Check",
    )
)
# Texts of grpc's UNAVAILABLE when no connection could be made (the request was not sent).
_NOT_SENT = ("failed to connect", "connection refused", "connections to all backends failing")


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """``--cacert``/``--cert``/``--key``, read at start (None: the system's roots)."""

    root_certificates: bytes | None
    private_key: bytes | None
    certificate_chain: bytes | None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )


def not_sent(e: grpc.aio.AioRpcError) -> bool:
    details = (e.details() or "").lower()
    return e.code() == grpc.StatusCode.UNAVAILABLE and any(t in details for t in _NOT_SENT)


class Upstream:
    def __init__(
        self,
        endpoints: Sequence[str],
        tls: UpstreamTLS | None,
        options: Sequence[tuple[str, Any]],
    ) -> None:
        self._tls = tls
        self._options = list(options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._order: list[str] = []
        self._rr = itertools.count()
        self.set_endpoints(endpoints)

    @property
    def endpoints(self) -> list[str]:
        return list(self._order)

    def set_endpoints(self, endpoints: Sequence[str]) -> list[grpc.aio.Channel]:
        """Replaces the endpoint list; returns the channels of dropped endpoints, which the
        caller closes (calls on them may still be running)."""
        order = list(dict.fromkeys(endpoints))
        assert order, "at least one endpoint"
        for ep in order:
            if ep not in self._channels:
                self._channels[ep] = self._open(ep)
        dropped = [self._channels.pop(ep) for ep in list(self._channels) if ep not in order]
        self._order = order
        return dropped

    def _open(self, endpoint: str) -> grpc.aio.Channel:
        target, scheme_tls = normalize_endpoint(endpoint)
        plain = endpoint.startswith(("http://", "unix://", "unix:"))
        options = list(self._options)
        name = unix_server_name(endpoint)
        if name is not None:
            options.append(("grpc.ssl_target_name_override", name))
        if scheme_tls or (self._tls is not None and not plain):
            creds = self._tls.credentials() if self._tls else grpc.ssl_channel_credentials()
            return grpc.aio.secure_channel(target, creds, options=options)
        return grpc.aio.insecure_channel(target, options=options)

    async def channel(self, deadline: float) -> grpc.aio.Channel:
        order = [self._channels[ep] for ep in self._order]
        start = next(self._rr) % len(order)
        order = order[start:] + order[:start]
        for ch in order:
            if ch.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
                return ch
        wait_s = min(deadline - asyncio.get_running_loop().time(), _CONNECT_WAIT_S)
        if wait_s > 0:
            waiters = {asyncio.ensure_future(ch.channel_ready()): ch for ch in order}
            done, pending = await asyncio.wait(
                waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
            )
            for t in pending:
                t.cancel()
            for t in done:
                if not t.cancelled() and t.exception() is None:
                    return waiters[t]
        return order[0]

    async def unary(
        self,
        method: str,
        request: Any,
        metadata: Sequence[tuple[str, str]],
        timeout_s: float | None,
        serializer: Any = None,
        deserializer: Any = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
        safe = method in SAFE_METHODS
        while True:
            ch = await self.channel(deadline)
            call = ch.unary_unary(
                method, request_serializer=serializer, response_deserializer=deserializer
            )
            remaining = deadline - loop.time()
            try:
                return await call(
                    request,
                    metadata=metadata,
                    timeout=max(remaining, 0.001) if timeout_s is not None else None,
                )
            except grpc.aio.AioRpcError as e:
                retry = e.code() == grpc.StatusCode.UNAVAILABLE and (safe or not_sent(e))
                if not retry or deadline - loop.time() <= _RETRY_BACKOFF_S:
                    raise
            await asyncio.sleep(_RETRY_BACKOFF_S)

    async def sync(self, timeout_s: float) -> list[str] | None:
        """The client URLs of the cluster's started members (None when unchanged)."""
        request = rpc_pb2.MemberListRequest(linearizable=False)
        resp = await self.unary(
            "/etcdserverpb.Cluster/MemberList",
            request,
            (),
            timeout_s,
            rpc_pb2.MemberListRequest.SerializeToString,
            rpc_pb2.MemberListResponse.FromString,
        )
        eps = [u for m in resp.members for u in m.clientURLs]
        if not eps or eps == self._order:
            return None
        return eps

    async def close(self) -> None:
        for ch in self._channels.values():
            with contextlib.suppress(Exception):
                await ch.close()
