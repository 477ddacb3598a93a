"""``--metrics-addr``: the proxy's HTTP endpoints, as etcd's proxy serves them.

Theory of operation
-------------------
- ``/metrics``: the metrics of a member, fetched from the first endpoint's ``/metrics``
  (with the scheme of the endpoint, else of ``--metrics-addr``) and relayed as text; 500
  "Internal server error" when it cannot be fetched;
- ``/health``: ``{"health":"true","reason":""}`` when a Get of ``a`` through the cluster
  answers (permission denied counts as an answer), else 503 with the reason;
- ``/proxy/health``: the same check (etcd's also watches through the proxy's own listener);
- ``/proxy/metrics``: the proxy process's own Prometheus metrics.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientTimeout, web

if TYPE_CHECKING:
    from petcd.proxy.flags import StartOptions
    from petcd.proxy.upstream import Upstream


async def start_metrics(opts: StartOptions, upstream: Upstream) -> web.AppRunner:
    from petcd.proxy.main import check_health, health_json

    url = urlsplit(opts.metrics_addr)

    async def metrics(request: web.Request) -> web.Response:
        ep = upstream.endpoints[0]
        tls = url.scheme == "https"  # etcd: the scheme of the request it answers
        target = ep if ep.startswith("http") else f"{'https' if tls else 'http'}://{ep}"
        try:
            async with (
                ClientSession(timeout=ClientTimeout(total=5)) as s,
                s.get(target.rstrip("/") + "/metrics", ssl=False) as r,
            ):
                body = await r.read()
        except Exception:
            return web.Response(status=500, text="Internal server error\n")
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def health(request: web.Request) -> web.Response:
        if request.method != "GET":
            return web.Response(status=405, text="Method Not Allowed")
        ok, reason = await check_health(upstream)
        return web.Response(
            status=200 if ok else 503, body=health_json(ok, reason), content_type="text/plain"
        )

    async def proxy_metrics(request: web.Request) -> web.Response:
        from prometheus_client import generate_latest

        return web.Response(body=generate_latest(), content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/metrics", metrics)
    app.router.add_route("*", "/health", health)
    app.router.add_route("*", "/proxy/health", health)
    app.router.add_route("*", "/proxy/metrics", proxy_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if url.scheme == "https":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(opts.cert_file, opts.key_file)
    site = web.TCPSite(runner, url.hostname, url.port, ssl_context=context)
    await site.start()
    return runner
