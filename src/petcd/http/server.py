"""HTTP/1 endpoints of a member: /health, /livez, /readyz, /version, /metrics.

Theory of operation
-------------------
etcd serves these next to gRPC on its client port (it multiplexes HTTP/1 and HTTP/2 on one
listener) and, when asked, on ``--listen-client-http-urls`` and ``--listen-metrics-urls``.
petcd does the same: on the client port, the native front end hands every connection that
does not begin with HTTP/2's preface to ``HttpOnClientPort`` (``petcd.http.accepted``), which
serves it with this module's app. With ``--client-transport=grpcio`` the client port is gRPC
only (grpc.aio owns its sockets). ``docs/server.md`` says so.

The answers follow etcd 3.5:

- ``GET /health``: ``{"health":"true","reason":""}`` with 200 when the member has a leader,
  no alarm and can read (a linearizable read; ``?serializable=true`` makes it a local read);
  otherwise ``{"health":"false","reason":"RAFT NO LEADER"}`` (or another reason) with 503.
- ``GET /livez``: ``ok`` while the process serves; ``GET /readyz``: ``ok`` when a read
  succeeds, 503 and the failed check otherwise.
- ``GET /version``: ``{"etcdserver":"3.5.x","etcdcluster":"3.5.0"}``.
- ``GET /metrics``: the Prometheus text format of the member's registry.
- ``POST /v3/...``: etcd's JSON gateway (``petcd.http.gateway``), on the client HTTP URLs only
  (etcd does not serve it on ``--listen-metrics-urls`` either).

The member is reached through the ``HealthSource`` protocol; this module knows nothing else of
it. It is an aiohttp adapter: all I/O is aiohttp's.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web

from petcd import ETCD_CLUSTER_VERSION, ETCD_VERSION

_CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class HealthSource(Protocol):
    async def check_health(self, serializable: bool) -> str:
        """Return ``""`` when healthy, else etcd's reason text (``"RAFT NO LEADER"`` ...)."""
        ...

    def render_metrics(self) -> bytes: ...


def make_app(source: HealthSource, gateway_member: Any = None) -> web.Application:
    """The endpoints; with ``gateway_member`` also etcd's JSON gateway (``/v3/...``)."""

    async def health(request: web.Request) -> web.Response:
        serializable = request.query.get("serializable", "false") == "true"
        reason = await source.check_health(serializable)
        body = json.dumps(
            {"health": "false" if reason else "true", "reason": reason}, separators=(",", ":")
        )
        return web.Response(
            text=body, status=503 if reason else 200, content_type="application/json"
        )

    def probe(serializable: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            reason = await source.check_health(serializable)
            if reason:
                return web.Response(text=f"[-]{reason}\n", status=503)
            return web.Response(text="ok")

        return handler

    async def livez(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def version(request: web.Request) -> web.Response:
        body = json.dumps(
            {"etcdserver": ETCD_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION}, separators=(",", ":")
        )
        return web.Response(text=body, content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=source.render_metrics(), headers={"Content-Type": _CONTENT_TYPE_METRICS}
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", probe(serializable=False))
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    if gateway_member is not None:
        from petcd.http.gateway import add_routes

        add_routes(app, gateway_member)
    return app


class HttpServer:
    """The HTTP endpoints on a set of (host, port) listeners; those ``secure`` marks serve
    HTTPS with ``ssl_context``."""

    def __init__(
        self,
        source: HealthSource,
        listeners: Sequence[tuple[str, int]],
        gateway: bool = False,
        *,
        secure: Sequence[bool] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        app = make_app(source, source if gateway else None)
        self._runner = web.AppRunner(app, access_log=None)
        self._listeners = tuple(listeners)
        self._secure = tuple(secure) or (False,) * len(self._listeners)
        self._ssl = ssl_context

    async def start(self) -> None:
        await self._runner.setup()
        for (host, port), is_secure in zip(self._listeners, self._secure, strict=True):
            context = self._ssl if is_secure else None
            await web.TCPSite(self._runner, host, port, ssl_context=context).start()

    async def stop(self) -> None:
        await self._runner.cleanup()
