"""etcd's v2 HTTP API (``--enable-v2``): /v2/keys, /v2/members, /v2/machines, /v2/stats.

Theory of operation
-------------------
Routes added to the member's HTTP app (``petcd.http.server``) only when v2 is on. A v2 write
or a quorum read is proposed through raft by the member (``Member.v2_propose``), which applies
it to its ``petcd.v2store.V2Store``; a plain read and a watch are served from the local tree,
as etcd serves them. The keys of ``/v2/keys/foo`` live at ``/1/foo`` in the tree (etcd's
``StoreKeysPrefix``); answers and error causes have the prefix stripped.

Bodies are written as etcd's Go ``encoding/json`` writes them: fields in etcd's order, zero
fields left out (``omitempty``), ``<``, ``>``, ``&`` escaped, one JSON document per line.
Errors are etcd's v2 error JSON (``errorCode``, ``message``, ``cause``, ``index``) with its
HTTP statuses; the request checks follow etcd's ``parseKeyRequest`` in order, so that the
first failing field names the same error. Headers: ``X-Etcd-Cluster-Id``, ``X-Etcd-Index``,
``X-Raft-Index`` (the commit index), ``X-Raft-Term``, and etcd's CORS headers.

``/v2/stats/self`` and ``/v2/stats/leader`` have etcd's shapes, with the figures petcd does not
measure (append counts, followers' latencies) at 0. v2 auth (``/v2/auth``, and the checks of
``/v2/keys`` and ``/v2/members`` while it is on) is ``petcd.http.v2auth``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import html
import json
import time
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDict

from petcd.server.v2auth import V2AuthStore
from petcd.v2store import Event, NodeView, V2Error, V2Request
from petcd.v2store import errors as codes
from petcd.v2store.request import Method

KEYS_PREFIX = "/v2/keys"
STORE_KEYS_PREFIX = "/1"
_CORS = {
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Origin": "*",
}
_GO_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def go_string(s: str) -> str:
    """A JSON string as Go's encoding/json writes it."""
    out = json.dumps(s, ensure_ascii=False).translate(_GO_ESCAPES)
    return out.replace("\\b", "\\u0008").replace("\\f", "\\u000c")


def rfc3339_nano(ns: int) -> str:
    """Go's time.Time JSON (RFC 3339 with trailing zeros of the fraction dropped), UTC."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += "." + f"{frac:09d}".rstrip("0")
    return stamp + "Z"


def go_duration(ns: int) -> str:
    """Go's time.Duration.String() for a non-negative duration."""
    if ns < 1000:
        return f"{ns}ns" if ns else "0s"
    if ns < 1_000_000:
        return f"{ns / 1000:g}µs" if ns % 1000 else f"{ns // 1000}µs"
    if ns < 1_000_000_000:
        return _frac(ns, 1_000_000) + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = f"{hours}h" if hours else ""
    out += f"{minutes}m" if hours or minutes else ""
    return out + _frac(rest, 1_000_000_000) + "s"


def _frac(n: int, unit: int) -> str:
    whole, part = divmod(n, unit)
    digits = len(str(unit)) - 1
    tail = f"{part:0{digits}d}".rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def _trim(key: str) -> str:
    return key[len(STORE_KEYS_PREFIX) :] if key.startswith(STORE_KEYS_PREFIX) else key


def node_json(n: NodeView) -> str:
    parts = []
    key = _trim(n.key)
    if key:
        parts.append('"key":' + go_string(key))
    if n.value is not None:
        parts.append('"value":' + go_string(n.value))
    if n.dir:
        parts.append('"dir":true')
    if n.expire_ns:
        parts.append(f'"expiration":"{rfc3339_nano(n.expire_ns)}"')
    if n.ttl:
        parts.append(f'"ttl":{n.ttl}')
    if n.nodes:
        parts.append('"nodes":[' + ",".join(node_json(c) for c in n.nodes) + "]")
    if n.modified:
        parts.append(f'"modifiedIndex":{n.modified}')
    if n.created:
        parts.append(f'"createdIndex":{n.created}')
    return "{" + ",".join(parts) + "}"


def event_json(ev: Event, no_value: bool = False) -> str:
    parts = ['"action":' + go_string(ev.action)]
    if not no_value:
        parts.append('"node":' + node_json(ev.node))
        if ev.prev_node is not None:
            parts.append('"prevNode":' + node_json(ev.prev_node))
    # etcd clones the event before writing it, and its clone drops ``refresh``.
    return "{" + ",".join(parts) + "}\n"


def error_json(err: V2Error) -> str:
    parts = [f'"errorCode":{err.code}', '"message":' + go_string(err.message)]
    cause = err.cause
    if cause.startswith(STORE_KEYS_PREFIX):
        cause = cause[len(STORE_KEYS_PREFIX) :]
    if cause:
        parts.append('"cause":' + go_string(cause))
    parts.append(f'"index":{err.index}')
    return "{" + ",".join(parts) + "}\n"


def _error_response(err: V2Error, headers: dict[str, str]) -> web.Response:
    headers = {**headers, "X-Etcd-Index": str(err.index), **_JSON}
    return web.Response(body=error_json(err).encode(), status=err.status, headers=headers)


def _method_not_allowed(allowed: tuple[str, ...]) -> web.Response:
    return web.Response(
        text="Method Not Allowed\n",
        status=405,
        headers={**_CORS, "Allow": ",".join(allowed), "X-Content-Type-Options": "nosniff"},
        content_type="text/plain",
        charset="utf-8",
    )


_JSON = {"Content-Type": "application/json"}
_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def _bool(form: MultiDict[str], key: str, err: V2Error) -> bool:
    """Go's strconv.ParseBool of the first value, False when absent."""
    if key not in form:
        return False
    v = form.getone(key)
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise err


def _uint(form: MultiDict[str], key: str, err: V2Error) -> int:
    if key not in form:
        return 0
    v = form.getone(key)
    if not v.isascii() or not v.isdigit() or int(v) >= 1 << 64:
        raise err
    return int(v)


def _field(what: str) -> V2Error:
    return V2Error(codes.INVALID_FIELD, f'invalid value for "{what}"')


class KeyRequest:
    """A parsed /v2/keys request (etcd's parseKeyRequest)."""

    def __init__(self, method: str, path: str, form: MultiDict[str]) -> None:
        self.method = method
        self.path = path
        index_nan = codes.INDEX_NAN
        self.prev_index = _uint(
            form, "prevIndex", V2Error(index_nan, 'invalid value for "prevIndex"')
        )
        self.wait_index = _uint(
            form, "waitIndex", V2Error(index_nan, 'invalid value for "waitIndex"')
        )
        self.recursive = _bool(form, "recursive", _field("recursive"))
        self.sorted = _bool(form, "sorted", _field("sorted"))
        self.wait = _bool(form, "wait", _field("wait"))
        self.dir = _bool(form, "dir", _field("dir"))
        self.quorum = _bool(form, "quorum", _field("quorum"))
        self.stream = _bool(form, "stream", _field("stream"))
        if self.wait and method != "GET":
            raise V2Error(codes.INVALID_FIELD, '"wait" can only be used with GET requests')
        self.prev_value = form.get("prevValue", "")
        if "prevValue" in form and self.prev_value == "":
            raise V2Error(codes.PREV_VALUE_REQUIRED, '"prevValue" cannot be empty')
        self.no_value = _bool(form, "noValueOnSuccess", _field("noValueOnSuccess"))
        self.ttl: int | None = None
        if form.get("ttl", ""):
            self.ttl = _uint(form, "ttl", V2Error(codes.TTL_NAN, 'invalid value for "ttl"'))
        self.prev_exist: bool | None = None
        if "prevExist" in form:
            self.prev_exist = _bool(
                form, "prevExist", V2Error(codes.INVALID_FIELD, "invalid value for prevExist")
            )
        self.refresh = False
        if "refresh" in form:
            self.refresh = _bool(
                form, "refresh", V2Error(codes.INVALID_FIELD, "invalid value for refresh")
            )
            if self.refresh:
                if form.get("value", ""):
                    raise V2Error(codes.REFRESH_VALUE, "A value was provided on a refresh")
                if self.ttl is None:
                    raise V2Error(codes.REFRESH_TTL_REQUIRED, "No TTL value set")
        self.value = form.get("value", "")
        self.expire_ns = 0
        if self.ttl is not None:
            self.expire_ns = time.time_ns() + self.ttl * 1_000_000_000

    def proposal(self) -> V2Request:
        method = {"PUT": Method.PUT, "POST": Method.POST, "DELETE": Method.DELETE}.get(
            self.method, Method.QGET
        )
        return V2Request(
            method,
            self.path,
            self.value,
            self.dir,
            self.recursive,
            self.sorted,
            self.refresh,
            self.prev_exist,
            self.prev_value,
            self.prev_index,
            self.expire_ns,
        )


def _clean_join(prefix: str, p: str) -> str:
    from petcd.v2store import clean

    return clean(prefix + "/" + p)


async def _form(request: web.Request) -> MultiDict[str]:
    """Go's Request.ParseForm: a urlencoded body's values (PUT, POST, PATCH) before the
    query's."""
    form: MultiDict[str] = MultiDict()
    if request.method in ("PUT", "POST", "PATCH"):
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            form.extend(await request.post())  # type: ignore[arg-type]
    form.extend(request.query)
    return form


def _unclean(request: web.Request) -> web.Response | None:
    """Go's ServeMux answers a path that is not clean with a redirect to the clean one."""
    from petcd.v2store import clean

    path = request.path
    want = clean(path)
    if path.endswith("/") and want != "/":
        want += "/"
    if want == path:
        return None
    target = urllib.parse.quote(want) + (f"?{request.query_string}" if request.query_string else "")
    body = f'<a href="{html.escape(target)}">Moved Permanently</a>.\n\n'
    return web.Response(
        body=body.encode(),
        status=301,
        headers={**_CORS, "Location": target, "Content-Type": "text/html; charset=utf-8"},
    )


def _is_created(ev: Event) -> bool:
    return ev.action == "create" or (ev.action == "set" and ev.prev_node is None)


def add_routes(app: web.Application, member: Any) -> None:
    """The v2 routes of ``member`` (a ``petcd.server.member.Member`` with v2 on), v2 auth
    (``petcd.http.v2auth``) included."""
    from petcd.http import v2auth

    cfg = member.cfg
    access = v2auth.Access(
        auth_store(member),
        bool(getattr(cfg, "client_cert_auth", False)),
        str(getattr(cfg, "trusted_ca_file", "") or ""),
    )

    def base_headers() -> dict[str, str]:
        return {**_CORS, "X-Etcd-Cluster-Id": f"{member.cluster_id:x}"}

    def event_headers(etcd_index: int) -> dict[str, str]:
        commit, term = member.v2_raft_position()
        return {
            **base_headers(),
            "X-Etcd-Index": str(etcd_index),
            "X-Raft-Index": str(commit),
            "X-Raft-Term": str(term),
        }

    async def keys(request: web.Request) -> web.StreamResponse:
        allowed = ("HEAD", "GET", "PUT", "POST", "DELETE")
        if request.method not in allowed:
            return _method_not_allowed(allowed)
        redirect = _unclean(request)
        if redirect is not None:
            return redirect
        headers = base_headers()
        service = member.v2
        try:
            rel = request.path[len(KEYS_PREFIX) :]
            req = KeyRequest(
                request.method, _clean_join(STORE_KEYS_PREFIX, rel), await _form(request)
            )
            if not await access.key(request, rel, req.recursive):
                raise V2Error(codes.UNAUTHORIZED, "Insufficient credentials", 0)
            if request.method in ("GET", "HEAD") and not (request.method == "GET" and req.quorum):
                if req.wait and request.method == "GET":
                    return await _watch(request, req, service)
                ev = service.store.get(req.path, req.recursive, req.sorted, time.time_ns())
            else:
                try:
                    ev, _, _ = await member.v2_propose(req.proposal())
                except V2Error:
                    raise
                except Exception as e:
                    from petcd.grpc.status import status_for

                    raise V2Error(codes.RAFT_INTERNAL, status_for(e)[1], 0) from e
        except V2Error as err:
            return _error_response(err, headers)
        return web.Response(
            body=event_json(ev, req.no_value and ev.action in _VALUE_ACTIONS).encode(),
            status=201 if _is_created(ev) else 200,
            headers={**event_headers(ev.etcd_index), **_JSON},
        )

    async def _watch(request: web.Request, req: KeyRequest, service: Any) -> web.StreamResponse:
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=100)

        def deliver(ev: Event) -> bool:
            try:
                queue.put_nowait(ev)
            except asyncio.QueueFull:
                return False
            return True

        w = service.store.watch(req.path, req.recursive, req.stream, req.wait_index, deliver)

        def closed() -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

        w.on_close = closed
        try:
            resp = web.StreamResponse(status=200, headers={**event_headers(w.start_index), **_JSON})
            await resp.prepare(request)
            while True:
                ev = await queue.get()
                if ev is None:  # the tree was replaced (a snapshot): the watch ends
                    break
                await resp.write(event_json(ev).encode())
                if not req.stream:
                    break
            await resp.write_eof()
            return resp
        finally:
            w.remove()

    async def members(request: web.Request) -> web.StreamResponse:
        allowed = ("GET", "POST", "DELETE", "PUT")
        if request.method not in allowed:
            return _method_not_allowed(allowed)
        if not await access.write_root(request):
            return v2auth.no_auth()
        headers = {**_CORS, "X-Etcd-Cluster-Id": f"{member.cluster_id:x}"}
        rest = request.path[len("/v2/members") :].lstrip("/")
        try:
            if request.method == "GET":
                if rest == "":
                    _, infos = member.members()
                    body = '{"members":[' + ",".join(_member_json(m) for m in infos) + "]}\n"
                    return _json(body, 200, headers)
                if rest == "leader":
                    lead = member.leader
                    _, infos = member.members()
                    found = [m for m in infos if m.id == lead]
                    if not lead or not found:
                        return _http_error(503, "During election", headers)
                    return _json(_member_json(found[0]) + "\n", 200, headers)
                return _http_error(404, "Not found", headers)
            if request.method == "POST":
                urls = await _peer_urls(request)
                if isinstance(urls, web.Response):
                    return urls
                _, info, _ = await member.member_add(urls, False)
                return _json(_member_json(info) + "\n", 201, headers)
            if not rest:
                return web.Response(text="Method Not Allowed\n", status=405)
            try:
                target = int(rest, 16)
            except ValueError:
                return _http_error(404, f"No such member: {rest}", headers)
            if request.method == "DELETE":
                await member.member_remove(target)
                return web.Response(status=204, headers=headers)
            urls = await _peer_urls(request)
            if isinstance(urls, web.Response):
                return urls
            await member.member_update(target, urls)
            return web.Response(status=204, headers=headers)
        except Exception as e:
            from petcd.server.errors import (
                MemberExistError,
                MemberNotFoundError,
                PeerURLExistError,
            )

            if isinstance(e, MemberNotFoundError):
                return _http_error(404, f"No such member: {rest}", headers)
            if isinstance(e, PeerURLExistError):
                return _http_error(409, "membership: peerURL exists", headers)
            if isinstance(e, MemberExistError):
                return _http_error(409, "membership: ID exists", headers)
            from petcd.grpc.status import status_for

            return _http_error(500, status_for(e)[1], headers)

    async def machines(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed(("GET", "HEAD"))
        _, infos = member.members()
        urls = sorted(u for m in infos for u in m.client_urls)
        return web.Response(text=", ".join(urls), content_type="text/plain", charset="utf-8")

    async def stats_store(request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            return _method_not_allowed(("GET",))
        store = member.v2.store
        stats = {**store.stats, "watchers": store.hub.count}
        return _json(json.dumps(stats, separators=(",", ":")), 200, dict(_CORS))

    started_ns = time.time_ns()
    leader_seen = [0, started_ns]  # the leader this member last reported, and since when

    async def stats_self(request: web.Request) -> web.StreamResponse:
        """etcd's ServerStats; the append counters and rates are not measured (0)."""
        if request.method != "GET":
            return _method_not_allowed(("GET",))
        lead, now = int(member.leader), time.time_ns()
        if lead != leader_seen[0]:
            leader_seen[:] = [lead, now]
        body = (
            f'{{"name":{go_string(member.cfg.name)},"id":"{member.id:x}",'
            f'"state":"{"StateLeader" if lead == member.id else "StateFollower"}",'
            f'"startTime":"{rfc3339_nano(started_ns)}",'
            f'"leaderInfo":{{"leader":"{lead:x}","uptime":"{go_duration(now - leader_seen[1])}",'
            f'"startTime":"{rfc3339_nano(leader_seen[1])}"}},'
            '"recvAppendRequestCnt":0,"sendAppendRequestCnt":0}'
        )
        return _json(body, 200, dict(_CORS))

    async def stats_leader(request: web.Request) -> web.StreamResponse:
        """etcd's LeaderStats on the leader (followers' latencies and counts not measured)."""
        if request.method != "GET":
            return _method_not_allowed(("GET",))
        if member.leader != member.id:
            return _http_error(403, "not current leader", dict(_CORS))
        _, infos = member.members()
        zero = (
            '{"latency":{"current":0,"average":0,"standardDeviation":0,"minimum":0,'
            '"maximum":0},"counts":{"fail":0,"success":0}}'
        )
        followers = ",".join(f'"{m.id:x}":{zero}' for m in infos if m.id != member.id)
        body = f'{{"leader":"{member.id:x}","followers":{{{followers}}}}}'
        return _json(body, 200, dict(_CORS))

    for path, handler in (
        (KEYS_PREFIX, keys),
        (KEYS_PREFIX + "/{tail:.*}", keys),
        ("/v2/members", members),
        ("/v2/members/{tail:.*}", members),
        ("/v2/machines", machines),
        ("/v2/stats/store", stats_store),
        ("/v2/stats/self", stats_self),
        ("/v2/stats/leader", stats_leader),
    ):
        app.router.add_route("*", path, cors_preflight(handler))
    v2auth.add_routes(app, member, access)


def cors_preflight(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """etcd's CORS handler, in front of every v2 route: an OPTIONS request is answered 200
    with the CORS headers and nothing else."""

    async def serve(request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(headers=_CORS)
        return await handler(request)

    return serve


_AUTH_STORES: weakref.WeakKeyDictionary[Any, V2AuthStore] = weakref.WeakKeyDictionary()


def auth_store(member: Any) -> V2AuthStore:
    """The member's one v2 auth store (shared by the apps of its listeners)."""
    store = _AUTH_STORES.get(member)
    if store is None:
        store = _AUTH_STORES[member] = V2AuthStore(member)
    return store


_VALUE_ACTIONS = frozenset(("set", "compareAndSwap", "create", "update"))


def _member_json(m: Any) -> str:
    peers = ",".join(go_string(u) for u in m.peer_urls)
    clients = ",".join(go_string(u) for u in m.client_urls)
    return (
        f'{{"id":"{m.id:x}","name":{go_string(m.name)},"peerURLs":[{peers}],'
        f'"clientURLs":[{clients}]}}'
    )


def _json(body: str, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(body=body.encode(), status=status, headers={**headers, **_JSON})


def _http_error(status: int, message: str, headers: dict[str, str]) -> web.Response:
    return _json('{"message":' + go_string(message) + "}", status, headers)


async def _peer_urls(request: web.Request) -> tuple[str, ...] | web.Response:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return _http_error(415, f"Bad Content-Type {ctype}, accept application/json", {})
    try:
        obj = json.loads(await request.read())
        urls = obj["peerURLs"]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError("peerURLs")
    except (ValueError, KeyError, TypeError) as e:
        return _http_error(400, str(e), {})
    return tuple(urls)
