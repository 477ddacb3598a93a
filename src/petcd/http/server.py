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
  ``?exclude=NOSPACE`` (repeatable) ignores that alarm, as etcd 3.5 does.
- ``GET /livez`` (check ``serializable_read``) and ``GET /readyz`` (``data_corruption``,
  ``serializable_read``, ``linearizable_read``), each check also on its own path
  (``/readyz/linearizable_read``): ``ok`` with 200 when the checks pass, else 503 and a
  ``[-]NAME failed: why`` line per failed check; ``?verbose`` lists every check, ``?exclude=``
  leaves one out (etcd 3.5.17's k8s-style probes).
- ``GET /version``: ``{"etcdserver":"3.5.x","etcdcluster":"3.5.0"}``.
- ``GET /metrics``: the Prometheus text format of the member's registry.
- ``GET /debug/vars``: etcd's expvar page (``cmdline``, ``file_descriptor_limit``,
  ``raft.status``; not Go's ``memstats``), on the client URLs only, as etcd.

On the client URLs (not ``--listen-metrics-urls``) etcd's access controller comes first
(``AccessPolicy``): a plain (not TLS) request whose Host is not in ``--host-whitelist`` gets
421 with etcd's DNS-rebinding text; with ``--client-cert-auth`` and auth on, a JSON gateway
request over TLS whose client certificate has a common name gets 400 (the gateway would
ignore the name); CORS headers go on every answer as ``--cors`` allows;
``OPTIONS`` on any path is 200. Everywhere, a path nothing serves and a method a route does
not take are answered with Go's texts (``404 page not found``, ``Method Not Allowed`` and
its ``Allow`` header; under ``/v3/`` the gateway's ``Not Found``, with no ``Allow``); the
GET endpoints refuse HEAD as etcd's do, and ``/metrics`` takes any method as etcd's
Prometheus handler does.
- ``/v2/keys``, ``/v2/members``, ``/v2/machines``, ``/v2/stats/store``: etcd's v2 API
  (``petcd.http.v2``), on the client URLs only and only with ``--enable-v2``.
- ``POST /v3/...``: etcd's JSON gateway (``petcd.http.gateway``), on the client HTTP URLs only
  (etcd does not serve it on ``--listen-metrics-urls`` either), its streams included; the app
  runs with aiohttp's ``handler_cancellation``, so that a client that goes away ends its call.

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
from petcd.http.accepted import behind_tls, presented_chain
from petcd.http.access import AccessPolicy
from petcd.server.hostport import split_host_port
from petcd.server.log import Logger

_CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
_REFUSED = "petcd.access_refused"  # request key: the access controller refused it
_GATEWAY_COMMON_NAME = (
    "CommonName of client sending a request against gateway will be ignored and not used as"
    " expected"
)


async def _corruption(source: HealthSource) -> str:
    return "alarm activated: CORRUPT" if "CORRUPT" in source.active_alarms() else ""


async def _read(source: HealthSource, serializable: bool) -> str:
    try:
        await source.check_read(serializable)
    except Exception as e:
        from petcd.grpc.status import status_for

        return status_for(e)[1]  # etcd's error text ("etcdserver: leader changed" ...)
    return ""


async def _serializable_read(source: HealthSource) -> str:
    return await _read(source, True)


async def _linearizable_read(source: HealthSource) -> str:
    return await _read(source, False)


_CHECKS: dict[str, Callable[[HealthSource], Awaitable[str]]] = {
    "data_corruption": _corruption,
    "serializable_read": _serializable_read,
    "linearizable_read": _linearizable_read,
}
_LIVEZ = ("serializable_read",)
_READYZ = ("data_corruption", "serializable_read", "linearizable_read")


class HealthSource(Protocol):
    async def check_health(self, serializable: bool, exclude: frozenset[str] = frozenset()) -> str:
        """Return ``""`` when healthy, else etcd's reason text (``"RAFT NO LEADER"`` ...)."""
        ...

    async def check_read(self, serializable: bool) -> None:
        """A one-key read (/livez, /readyz); raises what the read raised."""
        ...

    def active_alarms(self) -> frozenset[str]:
        """The names of the active alarms (``NOSPACE``, ``CORRUPT``)."""
        ...

    def render_metrics(self) -> bytes: ...

    def debug_vars(self) -> str:
        """etcd's ``/debug/vars`` JSON text."""
        ...


_TEXT_PLAIN = "text/plain; charset=utf-8"
_TEXT = {"Content-Type": _TEXT_PLAIN, "X-Content-Type-Options": "nosniff"}
_CORS_METHODS = "POST, GET, OPTIONS, PUT, DELETE"
_CORS_HEADERS = "accept, content-type, authorization"
_CORS_NAMES = (
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Headers",
)


def _go_error(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """What Go's ``http.Error`` writes."""
    return web.Response(text=text + "\n", status=status, headers={**_TEXT, **(headers or {})})


@web.middleware
async def _go_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The router's 404 and 405 as Go's mux (and, under ``/v3/``, grpc-gateway) answer them."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if request.path.startswith("/v3/"):
            return _go_error(404, "Not Found")
        return _go_error(404, "404 page not found")
    except web.HTTPMethodNotAllowed as e:
        if request.path.startswith("/v3/"):
            return _go_error(405, "Method Not Allowed")
        return _go_error(405, "Method Not Allowed", {"Allow": ", ".join(sorted(e.allowed_methods))})


def _dns_rebinding_text(host: str) -> str:
    # etcd's errCVE20185702 (CVE-2018-5702), which names the flag to use.
    return (
        "\netcd received your request, but the Host header was unrecognized.\n\n"
        "To fix this, choose one of the following options:\n"
        "- Enable TLS, then any HTTPS request will be allowed.\n"
        "- Add the hostname you want to use to the whitelist in settings.\n"
        f'  - e.g. etcd --host-whitelist "{host}"\n\n'
        'This requirement has been added to help prevent "DNS Rebinding" attacks '
        "(CVE-2018-5702).\n"
    )


def _hostname(request: web.Request) -> str:
    """etcd's ``httputil.GetHostname``: the Host header without its port, or as given when it
    has none (Go's ``net.SplitHostPort`` fails then)."""
    host = request.headers.get("Host", "")
    split = split_host_port(host)
    return host if split is None else split[0]


def _gateway_common_name(request: web.Request) -> str | None:
    """The common name of the client certificate of a JSON gateway request (``/v3/``, or
    etcd's older ``/v3beta/``), or None."""
    if not request.path.startswith(("/v3/", "/v3beta/")):
        return None
    from petcd.grpc.interceptors import common_name

    chain = presented_chain(request.transport)
    return common_name(chain[0]) if chain else None


def _access_control(
    policy: AccessPolicy, log: Logger | None, gateway_member: Any
) -> Callable[[web.Request, Any], Awaitable[web.StreamResponse]]:
    check_names = policy.client_cert_auth and gateway_member is not None

    @web.middleware
    async def access(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not behind_tls(request.transport):
            host = _hostname(request)
            if not policy.host_allowed(host):
                if log is not None:
                    log.warn("rejecting HTTP request to prevent DNS rebinding attacks", host=host)
                request[_REFUSED] = True
                return _go_error(421, _dns_rebinding_text(host))
        elif check_names and gateway_member.auth_enabled and _gateway_common_name(request):
            # The gateway authenticates by token alone: the certificate's name would be ignored.
            request[_REFUSED] = True
            return _go_error(400, _GATEWAY_COMMON_NAME)
        if request.method == "OPTIONS":
            return web.Response()
        return await handler(request)

    return access


def _cors_headers(
    policy: AccessPolicy,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def add(request: web.Request, response: web.StreamResponse) -> None:
        # Set here, before any answer's headers go out (streams included), replacing what a
        # handler set (the v2 routes write etcd's defaults themselves).
        for name in _CORS_NAMES:
            response.headers.popall(name, None)
        if request.get(_REFUSED):  # etcd refuses before it writes them
            return
        if policy.origin_allowed("*"):
            origin = "*"
        else:
            origin = request.headers.get("Origin", "")
            if not policy.origin_allowed(origin):
                return
        response.headers["Access-Control-Allow-Methods"] = _CORS_METHODS
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS

    return add


def make_app(
    source: HealthSource,
    gateway_member: Any = None,
    *,
    gateway_calls_max: int = 2**32 - 1,
    log: Logger | None = None,
    v2_member: Any = None,
    access: AccessPolicy | None = None,
) -> web.Application:
    """The endpoints; with ``gateway_member`` also etcd's JSON gateway (``/v3/...``), at most
    ``gateway_calls_max`` of its calls at once (``--max-concurrent-streams``); with ``access``
    (a client URL's) also ``/debug/vars``, behind etcd's access controller."""

    async def health(request: web.Request) -> web.Response:
        serializable = request.query.get("serializable", "false") == "true"
        exclude = frozenset(request.query.getall("exclude", ()))  # alarm names: NOSPACE ...
        reason = await source.check_health(serializable, exclude)
        body = json.dumps(
            {"health": "false" if reason else "true", "reason": reason}, separators=(",", ":")
        )
        # etcd writes no Content-Type here: Go's sniffing says text/plain.
        return web.Response(
            text=body, status=503 if reason else 200, headers={"Content-Type": _TEXT_PLAIN}
        )

    def checks(
        names: Sequence[str],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """etcd 3.5's /livez and /readyz: named checks, ``?exclude=NAME`` (repeatable) and
        ``?verbose``; 200 "ok" when all pass, else 503 with a "[-]NAME failed: why" line per
        failed check ("[+]NAME ok" per passed one)."""

        async def handler(request: web.Request) -> web.Response:
            excluded = set(request.query.getall("exclude", ()))
            lines, failed = [], False
            for name in names:
                if name in excluded:
                    continue
                why = await _CHECKS[name](source)
                failed = failed or bool(why)
                lines.append(f"[-]{name} failed: {why}\n" if why else f"[+]{name} ok\n")
            report = "".join(lines)
            if failed:
                return web.Response(text=report + "\n", status=503)
            verbose = "verbose" in request.query
            return web.Response(text=(report if verbose else "") + "ok\n")

        return handler

    async def version(request: web.Request) -> web.Response:
        body = json.dumps(
            {"etcdserver": ETCD_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION}, separators=(",", ":")
        )
        return web.Response(body=body.encode(), headers={"Content-Type": "application/json"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=source.render_metrics(), headers={"Content-Type": _CONTENT_TYPE_METRICS}
        )

    async def variables(request: web.Request) -> web.Response:
        return web.Response(
            text=source.debug_vars(), content_type="application/json", charset="utf-8"
        )

    middlewares: list[Any] = [_go_errors]
    if access is not None:
        middlewares.append(_access_control(access, log, gateway_member))
    app = web.Application(middlewares=middlewares)
    if access is not None:
        app.on_response_prepare.append(_cors_headers(access))
    # GET only, as etcd's handlers (HEAD is refused too: 405 with "Allow: GET").
    app.router.add_get("/health", health, allow_head=False)
    for root, names in (("/livez", _LIVEZ), ("/readyz", _READYZ)):
        app.router.add_get(root, checks(names), allow_head=False)
        for name in names:
            app.router.add_get(f"{root}/{name}", checks((name,)), allow_head=False)
    app.router.add_get("/version", version, allow_head=False)
    app.router.add_route("*", "/metrics", metrics)  # etcd's Prometheus handler takes any
    if access is not None:
        app.router.add_get("/debug/vars", variables, allow_head=False)
    if gateway_member is not None:
        from petcd.http.gateway import add_routes

        add_routes(app, gateway_member, gateway_calls_max, log)
    if v2_member is not None:  # --enable-v2: etcd's v2 API (petcd.http.v2)
        from petcd.http import v2

        v2.add_routes(app, v2_member)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """A runner for ``app``: a client that goes away cancels its call (a JSON-gateway watch
    is cancelled then, as etcd cancels the gRPC stream behind it)."""
    return web.AppRunner(app, access_log=None, handler_cancellation=True)


class HttpServer:
    """The HTTP endpoints on a set of listeners, each a (host, port) pair or a Unix socket's
    path; those ``secure`` marks serve HTTPS with ``ssl_context``."""

    def __init__(
        self,
        source: HealthSource,
        listeners: Sequence[tuple[str, int] | str],
        gateway: bool = False,
        *,
        secure: Sequence[bool] = (),
        ssl_context: ssl.SSLContext | None = None,
        gateway_calls_max: int = 2**32 - 1,
        log: Logger | None = None,
        v2: bool = False,
        access: AccessPolicy | None = None,
    ) -> None:
        app = make_app(
            source,
            source if gateway else None,
            gateway_calls_max=gateway_calls_max,
            log=log,
            v2_member=source if v2 else None,
            access=access,
        )
        self._runner = make_runner(app)
        self._listeners = tuple(listeners)
        self._secure = tuple(secure) or (False,) * len(self._listeners)
        self._ssl = ssl_context

    async def start(self) -> None:
        await self._runner.setup()
        for address, is_secure in zip(self._listeners, self._secure, strict=True):
            context = self._ssl if is_secure else None
            site: web.BaseSite
            if isinstance(address, str):
                site = web.UnixSite(self._runner, address, ssl_context=context)
            else:
                site = web.TCPSite(self._runner, address[0], address[1], ssl_context=context)
            await site.start()

    async def stop(self) -> None:
        await self._runner.cleanup()
