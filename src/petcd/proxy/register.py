"""``--resolver-prefix``: proxies register themselves in the cluster and list each other.

Theory of operation
-------------------
``register`` keeps this proxy's entry under the prefix, as etcd's does with its endpoints
manager: a lease of ``--resolver-ttl`` seconds, kept alive on a LeaseKeepAlive stream (every
third of the TTL), and the key ``<prefix>/<advertise-client-url>`` attached to it, whose value
is the JSON ``{"Op":0,"Addr":"<advertise-client-url>","Metadata":"{\\"name\\":\\"<host>\\"}"}``.
When the lease is lost (the stream ends, the TTL comes back 0) it logs etcd's "session
expired" warnings and registers again, at most once a second. With ``--namespace`` the key
is in the namespace, as etcd's (its registration goes through the namespaced client).

``watch_registry`` fills a ``Registry`` from the same keys: a serializable range of
``<prefix>/``, then a watch from the next revision; puts add a proxy, deletes remove it.
``Cluster.MemberList`` on the proxy answers from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client.requests import prefix_range_end
from petcd.proxy.service import Registry
from petcd.proxy.upstream import Upstream
from petcd.server.log import Logger

_RETRY_S = 1.0
_TIMEOUT_S = 5.0


def entry_value(addr: str) -> bytes:
    meta = json.dumps({"name": socket.gethostname()}, separators=(",", ":"))
    value = {"Op": 0, "Addr": addr, "Metadata": meta}
    return json.dumps(value, separators=(",", ":")).encode()


def _call(upstream: Upstream, method: str, request: Any, resp_cls: Any) -> Any:
    return upstream.unary(
        method, request, (), _TIMEOUT_S, type(request).SerializeToString, resp_cls.FromString
    )


async def _session(log: Logger, upstream: Upstream, key: bytes, addr: str, ttl: int) -> None:
    grant = await _call(
        upstream,
        "/etcdserverpb.Lease/LeaseGrant",
        rpc_pb2.LeaseGrantRequest(TTL=ttl),
        rpc_pb2.LeaseGrantResponse,
    )
    if grant.error:
        raise RuntimeError(grant.error)
    put = rpc_pb2.PutRequest(key=key, value=entry_value(addr), lease=grant.ID)
    await _call(
        upstream,
        "/etcdserverpb.KV/Txn",
        rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=put)]),
        rpc_pb2.TxnResponse,
    )
    log.info("registered session with lease", addr=addr, lease_ttl=ttl)
    loop = asyncio.get_running_loop()
    ch = await upstream.channel(loop.time() + _TIMEOUT_S)

    async def pings() -> AsyncIterator[Any]:
        while True:
            yield rpc_pb2.LeaseKeepAliveRequest(ID=grant.ID)
            await asyncio.sleep(max(ttl / 3.0, 0.5))

    call = ch.stream_stream(
        "/etcdserverpb.Lease/LeaseKeepAlive",
        request_serializer=rpc_pb2.LeaseKeepAliveRequest.SerializeToString,
        response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString,
    )(pings())
    try:
        async for resp in call:
            if resp.TTL <= 0:
                return
    finally:
        call.cancel()


async def register(
    log: Logger, upstream: Upstream, namespace: bytes, prefix: str, addr: str, ttl: int
) -> None:
    key = namespace + f"{prefix}/{addr}".encode()
    while True:
        try:
            await _session(log, upstream, key, addr, ttl)
        except (grpc.aio.AioRpcError, RuntimeError) as e:
            log.warn("failed to create a session", error=_text(e))
        else:
            log.warn("session expired; possible network partition or server restart")
            log.warn("creating a new session to rejoin")
        await asyncio.sleep(_RETRY_S)


def _text(e: Exception) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return e.details() or str(e.code())
    return str(e)


def _apply(registry: Registry, kv: Any, deleted: bool) -> None:
    key = kv.key.decode(errors="replace")
    if deleted:
        registry.members.pop(key, None)
        return
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        update = json.loads(kv.value)
        name = json.loads(str(update.get("Metadata"))).get("name", "")
        registry.members[key] = (str(update["Addr"]), str(name))


async def watch_registry(
    log: Logger, upstream: Upstream, namespace: bytes, prefix: str, registry: Registry
) -> None:
    """Keeps ``registry.members`` equal to the registered proxies."""
    start = namespace + f"{prefix}/".encode()
    end = prefix_range_end(start)
    while True:
        try:
            got = await _call(
                upstream,
                "/etcdserverpb.KV/Range",
                rpc_pb2.RangeRequest(key=start, range_end=end, serializable=True),
                rpc_pb2.RangeResponse,
            )
            registry.members.clear()
            for kv in got.kvs:
                _apply(registry, kv, False)
            ch = await upstream.channel(asyncio.get_running_loop().time() + _TIMEOUT_S)
            create = rpc_pb2.WatchCreateRequest(
                key=start, range_end=end, start_revision=got.header.revision + 1
            )

            async def requests(create: Any = create) -> AsyncIterator[Any]:
                yield rpc_pb2.WatchRequest(create_request=create)
                await asyncio.Event().wait()  # keep the stream open

            call = ch.stream_stream(
                "/etcdserverpb.Watch/Watch",
                request_serializer=rpc_pb2.WatchRequest.SerializeToString,
                response_deserializer=rpc_pb2.WatchResponse.FromString,
            )(requests())
            try:
                async for resp in call:
                    for ev in resp.events:
                        _apply(registry, ev.kv, ev.type == ev.DELETE)
                    if resp.canceled:
                        break
            finally:
                call.cancel()
        except grpc.aio.AioRpcError as e:
            log.warn("failed to establish endpoint watch", prefix=prefix, error=_text(e))
        await asyncio.sleep(_RETRY_S)
