"""The proxy's gRPC services: every etcd v3 method, forwarded to the cluster.

Theory of operation
-------------------
One generic handler serves every method of etcd's v3 services (KV, Watch, Lease, Cluster,
Maintenance, Auth, v3election, v3lock) and grpc health, read from the generated descriptors.
A method is forwarded as raw bytes (nothing decoded) to the endpoint ``Upstream`` picks, with
the caller's auth ``token`` (and ``hasleader``) metadata and the time left on its deadline;
the upstream's response, or its status code and message, go back unchanged. Streams (Watch,
LeaseKeepAlive, Snapshot, Observe) are pumped both ways on one upstream stream, cancelled when
the client goes away.

What the proxy answers itself, as etcd's does: ``Cluster.MemberList`` while an advertise
client URL is set (etcd's default ``127.0.0.1:23790``) lists the proxies registered under
``--resolver-prefix`` (``registry``), or this proxy alone (named after the host) when none is;
``Cluster.MemberPromote`` is refused with ``not implemented``. With ``--namespace`` the KV,
Watch and LeaseTimeToLive messages are decoded and rewritten (``petcd.proxy.namespace``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.healthpb import health_pb2
from petcd.api.v3electionpb import v3election_pb2
from petcd.api.v3lockpb import v3lock_pb2
from petcd.proxy.namespace import REWRITES, EmptyKeyError, Namespace
from petcd.proxy.upstream import Upstream

_FORWARDED_METADATA = ("token", "hasleader")
_STREAM_CONNECT_S = 5.0
MEMBER_LIST = "/etcdserverpb.Cluster/MemberList"
MEMBER_PROMOTE = "/etcdserverpb.Cluster/MemberPromote"
_EMPTY_KEY = "etcdserver: key is not provided"


def _methods() -> dict[str, tuple[bool, bool]]:
    """Full method name -> (client streaming, server streaming)."""
    out: dict[str, tuple[bool, bool]] = {}
    for module in (rpc_pb2, v3election_pb2, v3lock_pb2, health_pb2):
        for svc in module.DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                out[f"/{svc.full_name}/{m.name}"] = (m.client_streaming, m.server_streaming)
    return out


METHODS = _methods()


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[tuple[str, str], ...]:
    md = context.invocation_metadata() or ()
    return tuple((k, str(v)) for k, v in md if k in _FORWARDED_METADATA)


class Registry:
    """The proxies registered under ``--resolver-prefix`` (address -> name), kept by
    ``petcd.proxy.register``'s watch."""

    def __init__(self) -> None:
        self.members: dict[str, tuple[str, str]] = {}  # key -> (address, name)


class ProxyHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(
        self,
        upstream: Upstream,
        namespace: bytes,
        advertise_client_url: str,
        registry: Registry | None,
        send_bytes_max: int = 0,
    ) -> None:
        self._up = upstream
        self._send_bytes_max = send_bytes_max
        self._ns = Namespace(namespace) if namespace else None
        self._advertise = advertise_client_url
        self._registry = registry
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method, (cs, ss) in METHODS.items():
            self._handlers[method] = self._make(method, cs, ss)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._handlers.get(handler_call_details.method)

    # --- building the handlers -------------------------------------------------------------

    def _make(self, method: str, cs: bool, ss: bool) -> grpc.RpcMethodHandler:
        rw = REWRITES.get(method) if self._ns else None
        req_in: Callable[[bytes], Any] | None = None
        resp_out: Callable[[Any], bytes] | None = None
        up_ser: Callable[[Any], bytes] | None = None
        up_de: Callable[[bytes], Any] | None = None
        fix_req: Callable[[Any], None] = _nothing
        fix_resp: Callable[[Any], None] = _nothing
        if rw is not None:
            assert self._ns is not None
            req_cls, resp_cls, req_fix, resp_fix = rw
            req_in, up_ser = req_cls.FromString, req_cls.SerializeToString
            up_de, resp_out = resp_cls.FromString, resp_cls.SerializeToString
            fix_req = getattr(self._ns, req_fix) if req_fix else _nothing
            fix_resp = getattr(self._ns, resp_fix)
        if method == MEMBER_LIST:
            return grpc.unary_unary_rpc_method_handler(
                self._member_list,
                request_deserializer=rpc_pb2.MemberListRequest.FromString,
                response_serializer=rpc_pb2.MemberListResponse.SerializeToString,
            )
        if method == MEMBER_PROMOTE:
            return grpc.unary_unary_rpc_method_handler(self._not_implemented)
        up = self._up
        if not cs and not ss:

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    fix_req(request)
                except EmptyKeyError:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _EMPTY_KEY)
                size = len(request) if isinstance(request, bytes) else request.ByteSize()
                if 0 < self._send_bytes_max < size:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"trying to send message larger than max ({size} vs. "
                        f"{self._send_bytes_max})",
                    )
                try:
                    resp = await up.unary(
                        method, request, _metadata(context), context.time_remaining(), up_ser, up_de
                    )
                except grpc.aio.AioRpcError as e:
                    await context.abort(e.code(), _details(e))
                fix_resp(resp)
                return resp

            return grpc.unary_unary_rpc_method_handler(unary, req_in, resp_out)

        async def streaming(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            loop = asyncio.get_running_loop()
            remaining = context.time_remaining()
            connect_s = _STREAM_CONNECT_S if remaining is None else min(remaining, 5.0)
            ch = await up.channel(loop.time() + connect_s)
            if cs:
                request = _fixed(request, fix_req)
            else:
                fix_req(request)
            kind = {
                (True, True): ch.stream_stream,
                (False, True): ch.unary_stream,
                (True, False): ch.stream_unary,
            }[(cs, ss)]
            call = kind(method, request_serializer=up_ser, response_deserializer=up_de)(
                request, metadata=_metadata(context), timeout=remaining
            )
            try:
                if ss:
                    async for resp in call:
                        fix_resp(resp)
                        yield resp
                else:
                    resp = await call
                    fix_resp(resp)
                    yield resp
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), _details(e))
            finally:
                call.cancel()

        if cs and ss:
            return grpc.stream_stream_rpc_method_handler(streaming, req_in, resp_out)
        if ss:
            return grpc.unary_stream_rpc_method_handler(streaming, req_in, resp_out)

        async def client_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async for resp in streaming(request, context):
                return resp
            return None

        return grpc.stream_unary_rpc_method_handler(client_stream, req_in, resp_out)

    # --- answered by the proxy --------------------------------------------------------------

    async def _member_list(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if not self._advertise:
            try:
                return await self._up.unary(
                    MEMBER_LIST,
                    request,
                    _metadata(context),
                    context.time_remaining(),
                    rpc_pb2.MemberListRequest.SerializeToString,
                    rpc_pb2.MemberListResponse.FromString,
                )
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details() or "")
        resp = rpc_pb2.MemberListResponse()
        members = list(self._registry.members.values()) if self._registry is not None else []
        if not members:
            members = [(self._advertise, socket.gethostname())]
        for addr, name in members:
            resp.members.add(name=name, clientURLs=[addr])
        return resp

    async def _not_implemented(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        await context.abort(grpc.StatusCode.UNKNOWN, "not implemented")


def _details(e: grpc.aio.AioRpcError) -> str:
    """The upstream's message, unchanged, but for gRPC's own size error, in Go's words."""
    details = e.details() or ""
    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(
        "Received message larger than max"
    ):
        return "grpc: r" + details[1:]
    return details


def _nothing(message: Any) -> None:
    return None


async def _fixed(requests: AsyncIterator[Any], fix: Callable[[Any], None]) -> AsyncIterator[Any]:
    async for r in requests:
        fix(r)
        yield r
