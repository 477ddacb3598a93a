"""etcd's JSON gateway (grpc-gateway): ``POST /v3/kv/put`` and friends, over HTTP/1.

Theory of operation
-------------------
etcd serves its gRPC API as JSON too (``curl -d '{"key":"Zm9v"}' http://host:2379/v3/kv/range``):
the body is the request message in protobuf's JSON mapping (original field names, bytes in
base64, int64 as strings or numbers), the answer the response message the same way. Each route
here parses the body into the generated protobuf class (``google.protobuf.json_format``),
converts it with ``petcd.grpc.convert``, awaits the member, and prints the response with the
original field names, as grpc-gateway does for etcd. Errors come back as grpc-gateway's
``{"error": msg, "code": grpc_code, "message": msg}`` with the HTTP status grpc-gateway maps the
gRPC code to (INVALID_ARGUMENT 400, NOT_FOUND 404, FAILED_PRECONDITION 400, OUT_OF_RANGE 400,
RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, ...).

Routes: ``/v3/kv/{range,put,deleterange,txn,compaction}``, ``/v3/lease/{grant,revoke,
timetolive,leases}`` (also etcd's older ``/v3/kv/lease/...`` aliases) and
``/v3/maintenance/status`` and the Auth service's ``/v3/auth/...`` (``enable``,
``user/add``, ``role/grant``, ...: served by ``petcd.grpc.auth.AuthService`` with a context that
turns its abort into the error answer).

The two streams, ``POST /v3/watch`` (Watch) and ``POST /v3/lease/keepalive`` (LeaseKeepAlive),
are served as grpc-gateway serves a bidirectional stream:

- The body is a sequence of JSON request messages (``{"create_request":{"key":"Zm9v"}}``,
  ``{"ID":"7"}``), read and passed on as they arrive. A first message that is not JSON (or
  not an object) is answered 500 with ``{"error","code":2,"message"}`` and Go's decoder text
  ("unexpected EOF", "invalid character 'x' looking for beginning of value"); a later bad one
  ends the requests, as the end of the body does.
- The answer is HTTP/1.1 chunked, one chunk per response message: ``{"result":<message>}``
  and a newline, the message printed as the unary answers are. Nothing is sent, headers
  included, before the first response. An error of the call (``etcdserver: no leader`` ...)
  is a last chunk ``{"error":{"grpc_code","http_code","message","http_status"}}`` (no
  newline), with the error's HTTP status if nothing was sent before.
- The end of the body half-closes the call: a keep-alive stream then ends (etcd's server
  returns), a watch stream stays open (etcd keeps sending events) until the client goes.
- A client that goes away cancels the call (the app runs with aiohttp's
  ``handler_cancellation``): its watchers are cancelled, nothing is left behind.

Both go through the gRPC services' own code (``WatchService.batches``,
``LeaseService.LeaseKeepAlive``) with a context that writes chunks and turns an abort into the
error chunk.

**Calls in flight.** etcd's gateway forwards every call over one gRPC client connection to its
own server, so the server's ``--max-concurrent-streams`` (HTTP/2 streams per connection)
bounds the gateway calls in flight: with that many watches open through it, a further call,
even a unary ``/v3/kv/range``, waits until one ends. petcd keeps that behaviour with a
semaphore of ``calls_max`` slots per gateway (per app: the client port's and
``--listen-client-http-urls``' are separate, as etcd dials one connection per listener); the
default, etcd's ``math.MaxUint32``, is no limit in practice.

While auth is on, the ``Authorization`` header is the call's token (etcd's gateway passes it on
as ``authorization`` metadata), checked as for gRPC calls (``petcd.server.authz``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import http
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.grpc.auth import AuthService
from petcd.grpc.interceptors import CALL_CREDENTIALS
from petcd.grpc.lease import LeaseService
from petcd.grpc.status import status_for
from petcd.grpc.watch import WatchService
from petcd.server.authz import Credentials
from petcd.server.log import Logger

CALLS_MAX_DEFAULT = 2**32 - 1  # etcd's --max-concurrent-streams default, math.MaxUint32

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.CANCELLED: 408,
}

Handler = Callable[[Any, Any], Awaitable[Any]]


def _to_json(message: Any) -> str:
    # grpc-gateway's marshaller prints compact JSON with the .proto field names.
    obj = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _error(exc: BaseException) -> web.Response:
    return _status_response(*status_for(exc))


def _status_response(code: grpc.StatusCode, message: str) -> web.Response:
    body = json.dumps(
        {"error": message, "code": code.value[0], "message": message}, separators=(",", ":")
    )
    return web.Response(
        text=body, status=_HTTP_STATUS.get(code, 500), content_type="application/json"
    )


async def _kv_range(member: Any, m: Any) -> Any:
    creds = CALL_CREDENTIALS.get()
    return convert.range_response_pb(await member.range(convert.range_request(m), creds))


async def _kv_put(member: Any, m: Any) -> Any:
    creds = CALL_CREDENTIALS.get()
    return convert.put_response_pb(await member.put(convert.put_request(m), creds))


async def _kv_delete(member: Any, m: Any) -> Any:
    resp = await member.delete_range(convert.delete_range_request(m), CALL_CREDENTIALS.get())
    return convert.delete_range_response_pb(resp)


async def _kv_txn(member: Any, m: Any) -> Any:
    return convert.txn_response_pb(await member.txn(convert.txn_request(m), CALL_CREDENTIALS.get()))


async def _kv_compact(member: Any, m: Any) -> Any:
    resp = await member.compact(convert.compaction_request(m))
    return rpc_pb2.CompactionResponse(header=convert.header_pb(resp.header))


async def _lease_grant(member: Any, m: Any) -> Any:
    header, info = await member.lease_grant(m.ID, m.TTL)
    return rpc_pb2.LeaseGrantResponse(
        header=convert.header_pb(header), ID=info.id, TTL=info.ttl_seconds
    )


async def _lease_revoke(member: Any, m: Any) -> Any:
    header = await member.lease_revoke(m.ID, CALL_CREDENTIALS.get())
    return rpc_pb2.LeaseRevokeResponse(header=convert.header_pb(header))


async def _lease_ttl(member: Any, m: Any) -> Any:
    header, ttl = await member.lease_time_to_live(m.ID, m.keys, CALL_CREDENTIALS.get())
    if ttl is None:
        return rpc_pb2.LeaseTimeToLiveResponse(header=convert.header_pb(header), ID=m.ID, TTL=-1)
    return rpc_pb2.LeaseTimeToLiveResponse(
        header=convert.header_pb(header),
        ID=ttl.id,
        TTL=ttl.ttl_seconds,
        grantedTTL=ttl.granted_ttl_seconds,
        keys=list(ttl.keys),
    )


async def _lease_leases(member: Any, m: Any) -> Any:
    header, leases = await member.lease_leases()
    return rpc_pb2.LeaseLeasesResponse(
        header=convert.header_pb(header),
        leases=[rpc_pb2.LeaseStatus(ID=info.id) for info in leases],
    )


async def _status(member: Any, m: Any) -> Any:
    s = member.status()
    return rpc_pb2.StatusResponse(
        header=convert.header_pb(s.header),
        version=s.version,
        dbSize=s.db_size,
        leader=s.leader,
        raftIndex=s.raft_index,
        raftTerm=s.raft_term,
        raftAppliedIndex=s.raft_applied_index,
        errors=list(s.errors),
        dbSizeInUse=s.db_size_in_use,
        isLearner=s.is_learner,
    )


ROUTES: dict[str, tuple[type[Any], Handler]] = {
    "/v3/kv/range": (rpc_pb2.RangeRequest, _kv_range),
    "/v3/kv/put": (rpc_pb2.PutRequest, _kv_put),
    "/v3/kv/deleterange": (rpc_pb2.DeleteRangeRequest, _kv_delete),
    "/v3/kv/txn": (rpc_pb2.TxnRequest, _kv_txn),
    "/v3/kv/compaction": (rpc_pb2.CompactionRequest, _kv_compact),
    "/v3/lease/grant": (rpc_pb2.LeaseGrantRequest, _lease_grant),
    "/v3/lease/revoke": (rpc_pb2.LeaseRevokeRequest, _lease_revoke),
    "/v3/kv/lease/revoke": (rpc_pb2.LeaseRevokeRequest, _lease_revoke),
    "/v3/lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, _lease_ttl),
    "/v3/kv/lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, _lease_ttl),
    "/v3/lease/leases": (rpc_pb2.LeaseLeasesRequest, _lease_leases),
    "/v3/kv/lease/leases": (rpc_pb2.LeaseLeasesRequest, _lease_leases),
    "/v3/maintenance/status": (rpc_pb2.StatusRequest, _status),
}


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _GatewayContext:
    """The part of a gRPC servicer context that ``AuthService`` uses."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


_AUTH_ROUTES = {
    "enable": ("AuthEnable", rpc_pb2.AuthEnableRequest),
    "disable": ("AuthDisable", rpc_pb2.AuthDisableRequest),
    "status": ("AuthStatus", rpc_pb2.AuthStatusRequest),
    "authenticate": ("Authenticate", rpc_pb2.AuthenticateRequest),
    "user/add": ("UserAdd", rpc_pb2.AuthUserAddRequest),
    "user/get": ("UserGet", rpc_pb2.AuthUserGetRequest),
    "user/list": ("UserList", rpc_pb2.AuthUserListRequest),
    "user/delete": ("UserDelete", rpc_pb2.AuthUserDeleteRequest),
    "user/changepw": ("UserChangePassword", rpc_pb2.AuthUserChangePasswordRequest),
    "user/grant": ("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest),
    "user/revoke": ("UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest),
    "role/add": ("RoleAdd", rpc_pb2.AuthRoleAddRequest),
    "role/get": ("RoleGet", rpc_pb2.AuthRoleGetRequest),
    "role/list": ("RoleList", rpc_pb2.AuthRoleListRequest),
    "role/delete": ("RoleDelete", rpc_pb2.AuthRoleDeleteRequest),
    "role/grant": ("RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest),
    "role/revoke": ("RoleRevokePermission", rpc_pb2.AuthRoleRevokePermissionRequest),
}


def _auth_routes(member: Any) -> dict[str, tuple[type[Any], Handler]]:
    service = AuthService(member.gate, member)
    routes: dict[str, tuple[type[Any], Handler]] = {}
    for path, (method, message_type) in _AUTH_ROUTES.items():

        async def call(member: Any, m: Any, method: str = method) -> Any:
            return await getattr(service, method)(m, _GatewayContext())

        routes[f"/v3/auth/{path}"] = (message_type, call)
    return routes


def _credentials(member: Any, request: web.Request) -> None:
    CALL_CREDENTIALS.set(
        Credentials(token=request.headers.get("Authorization")) if member.auth_enabled else None
    )


def add_routes(
    app: web.Application,
    member: Any,
    calls_max: int = CALLS_MAX_DEFAULT,
    log: Logger | None = None,
) -> None:
    """The gateway's routes on ``app``; at most ``calls_max`` calls run at once (etcd's
    ``--max-concurrent-streams``: see the module's docstring), the others wait for a slot."""
    slots = asyncio.Semaphore(calls_max or CALLS_MAX_DEFAULT)
    for path, (message_type, handler) in {**ROUTES, **_auth_routes(member)}.items():

        async def route(
            request: web.Request, message_type: Any = message_type, handler: Handler = handler
        ) -> web.Response:
            raw = await request.text()
            try:
                message = json_format.Parse(raw or "{}", message_type(), ignore_unknown_fields=True)
            except json_format.ParseError as e:
                body = json.dumps(
                    {"error": str(e), "code": 3, "message": str(e)}, separators=(",", ":")
                )
                return web.Response(text=body, status=400, content_type="application/json")
            async with slots:
                _credentials(member, request)
                try:
                    resp = await handler(member, message)
                except _Aborted as e:
                    return _status_response(e.code, e.message)
                except Exception as e:
                    return _error(e)
            return web.Response(text=_to_json(resp), content_type="application/json")

        _add_post(app, path, route)

    streams = _Streams(member, slots, log)
    _add_post(app, "/v3/watch", streams.watch)
    _add_post(app, "/v3/lease/keepalive", streams.keep_alive)
    app.on_shutdown.append(streams.close)


def _add_post(app: web.Application, path: str, route: Any) -> None:
    app.router.add_post(path, route)
    # etcd 3.5 still answers the 3.3-era prefix by rewriting it (its serve.go).
    app.router.add_post(path.replace("/v3/", "/v3beta/", 1), route)


# -- streams -------------------------------------------------------------------------------------


class _BadBody(Exception):
    """The body's first request message is not one: grpc-gateway's 500 answer, code 2."""


def _go_quote(c: str) -> str:
    """Go's quoteChar: ``'x'``, ``'\\''``, ``'"'``, ``'\\n'``."""
    if c in "'\"":
        return "'\\''" if c == "'" else "'\"'"
    return "'" + json.dumps(c, ensure_ascii=False)[1:-1] + "'"


def _json_error_text(e: json.JSONDecodeError, text: str) -> str:
    """Go's encoding/json wording for what Python's decoder refused."""
    if e.pos >= len(text) or e.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    c = _go_quote(text[e.pos])
    expected = {
        "Expecting value": "looking for beginning of value",
        "Expecting property name enclosed in double quotes": (
            "looking for beginning of object key string"
        ),
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair",
    }.get(e.msg)
    return f"invalid character {c} {expected}" if expected else e.msg


_GO_KINDS = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}


class _RequestMessages:
    """The JSON request messages of a stream's body, each as soon as it is complete
    (grpc-gateway reads the body with a streaming JSON decoder)."""

    def __init__(self, request: web.Request, message_type: type[Any]) -> None:
        self._content = request.content
        self._type = message_type
        self._text = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._eof = False

    async def next(self) -> Any | None:
        """The next message, or None at the end of the body; ``_BadBody`` for one that is not
        a request message."""
        decoder = json.JSONDecoder()
        while True:
            text = self._text.lstrip(" \t\r\n")
            if text:
                try:
                    obj, end = decoder.raw_decode(text)
                except json.JSONDecodeError as e:
                    incomplete = e.pos >= len(text) or e.msg.startswith("Unterminated string")
                    if self._eof or not incomplete:
                        raise _BadBody(_json_error_text(e, text)) from None
                else:
                    self._text = text[end:]
                    return self._message(obj)
            elif self._eof:
                return None
            chunk = await self._content.readany()
            self._eof = not chunk
            self._text = text + self._utf8.decode(chunk, final=self._eof)

    def _message(self, obj: Any) -> Any:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise _BadBody(
                f"json: cannot unmarshal {_GO_KINDS.get(type(obj), 'value')} "
                "into Go value of type map[string]json.RawMessage"
            )
        try:
            return json_format.ParseDict(obj, self._type(), ignore_unknown_fields=True)
        except json_format.ParseError as e:
            raise _BadBody(str(e)) from None

    async def rest(self, first: Any) -> AsyncIterator[Any]:
        """``first``, then the others; a bad one ends them, as the end of the body does."""
        if first is None:
            return
        yield first
        while True:
            try:
                message = await self.next()
            except _BadBody:
                return
            if message is None:
                return
            yield message


class _Chunks:
    """The chunked answer of a stream: headers at the first chunk, as grpc-gateway's."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response = web.StreamResponse()
        self.response.content_type = "application/json"
        self.response.enable_chunked_encoding()
        self._sent = False

    async def _send(self, data: bytes) -> None:
        if not self._sent:
            self._sent = True
            await self.response.prepare(self._request)
        await self.response.write(data)

    async def message(self, message: Any) -> None:
        await self._send(f'{{"result":{_to_json(message)}}}\n'.encode())

    async def error(self, code: grpc.StatusCode, message: str) -> None:
        status = _HTTP_STATUS.get(code, 500)
        if not self._sent:
            self.response.set_status(status)
        error = {
            "grpc_code": code.value[0],
            "http_code": status,
            "message": message,
            "http_status": http.HTTPStatus(status).phrase,
        }
        if not message:
            del error["message"]  # protobuf JSON leaves empty fields out
        await self._send(json.dumps({"error": error}, separators=(",", ":")).encode())

    async def end(self) -> web.StreamResponse:
        if not self._sent:
            self._sent = True
            await self.response.prepare(self._request)
        await self.response.write_eof()
        return self.response


class _StreamContext:
    """The part of a gRPC servicer context the stream services use."""

    def __init__(self, chunks: _Chunks) -> None:
        self.write = chunks.message

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


class _Streams:
    """``/v3/watch`` and ``/v3/lease/keepalive`` over the gRPC services' code."""

    def __init__(self, member: Any, slots: asyncio.Semaphore, log: Logger | None) -> None:
        self._member = member
        self._slots = slots
        self._watch = WatchService(member, log)
        self._lease = LeaseService(member, log)
        self._calls: set[asyncio.Task[Any]] = set()

    async def watch(self, request: web.Request) -> web.StreamResponse:
        async def run(requests: AsyncIterator[Any], context: _StreamContext) -> None:
            batches = self._watch.batches(requests, context)
            async with contextlib.aclosing(batches) as out:
                async for batch in out:
                    for message in batch:
                        await context.write(message)

        return await self._call(request, rpc_pb2.WatchRequest, run)

    async def keep_alive(self, request: web.Request) -> web.StreamResponse:
        async def run(requests: AsyncIterator[Any], context: _StreamContext) -> None:
            await self._lease.LeaseKeepAlive(requests, context)

        return await self._call(request, rpc_pb2.LeaseKeepAliveRequest, run)

    async def _call(
        self,
        request: web.Request,
        message_type: type[Any],
        run: Callable[[AsyncIterator[Any], _StreamContext], Awaitable[None]],
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        async with self._slots:  # etcd's gateway opens the gRPC stream first
            self._calls.add(task)
            try:
                _credentials(self._member, request)
                body = _RequestMessages(request, message_type)
                try:
                    first = await body.next()
                except _BadBody as e:
                    text = json.dumps(
                        {"error": str(e), "code": 2, "message": str(e)}, separators=(",", ":")
                    )
                    return web.Response(
                        body=text.encode(), status=500, content_type="application/json"
                    )
                chunks = _Chunks(request)
                if first is not None:  # grpc-gateway passes the stream's header metadata on
                    chunks.response.headers["Grpc-Metadata-Content-Type"] = "application/grpc"
                requests = body.rest(first)
                try:
                    try:
                        await run(requests, _StreamContext(chunks))
                    except _Aborted as e:
                        await chunks.error(e.code, e.message)
                    finally:
                        with contextlib.suppress(RuntimeError):  # still running: it ends anyway
                            await requests.aclose()  # type: ignore[attr-defined]
                    return await chunks.end()
                except ConnectionError:  # the client went before aiohttp cancelled the call
                    return chunks.response
            finally:
                self._calls.discard(task)

    async def close(self, app: web.Application) -> None:
        """At shutdown: streams end (a watch would not), so that their connections close."""
        for task in list(self._calls):
            task.cancel()
