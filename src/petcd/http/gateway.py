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

Routes (every one ``POST``, also under etcd's older ``/v3beta/`` prefix; etcd 3.5.17's
``rpc.pb.gw.go``, ``v3election.pb.gw.go`` and ``v3lock.pb.gw.go``):

- served here over the member: ``/v3/kv/{range,put,deleterange,txn,compaction}``,
  ``/v3/lease/{grant,revoke,timetolive,leases}`` (also etcd's older ``/v3/kv/lease/...``
  aliases);
- served by the gRPC services' own methods (``_SERVICE_ROUTES``: their auth checks, admin-only
  maintenance calls and errors, with a context that turns their abort into the error answer):
  ``/v3/maintenance/{status,alarm,defragment,hash,hashkv,transfer-leadership}``,
  ``/v3/cluster/member/{add,remove,update,list,promote}``,
  ``/v3/election/{campaign,proclaim,leader,resign}``, ``/v3/lock/{lock,unlock}`` and the Auth
  service's ``/v3/auth/...`` (``enable``, ``user/add``, ``role/grant``, ...). A campaign or a
  lock waits as its gRPC call does; a client that goes away cancels it (the campaign resigns,
  the waiting lock's key is deleted).

etcd 3.5's ``/v3/maintenance/downgrade`` is not served (petcd has no Downgrade).

A unary body is read as grpc-gateway's decoder reads it: the first JSON value only, an empty
body (or ``null``) an empty message, a body that is not JSON or not an object 400 with Go's text
(``invalid character 'x' looking for beginning of value``, ``unexpected EOF``).

The server streams, ``POST /v3/election/observe`` (Observe) and ``POST /v3/maintenance/snapshot``
(Snapshot), take their one request message as a unary call does (a bad body is the same 400)
and answer as the streams below: a ``{"result":...}`` line per message (snapshot: 32 KiB
``blob`` chunks in base64 of etcd's snapshot format with ``remaining_bytes``, then the SHA-256
of the rest), an error as
the last chunk. The ``Grpc-Metadata-Content-Type`` header comes with the first message, as
etcd's gRPC header metadata does: a call that fails first (Snapshot refused by auth) has none.

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

**Learners.** etcd's gateway calls go through its gRPC server's interceptors, so a learner
refuses them as it refuses gRPC calls: everything but ``/v3/maintenance/status``, a
serializable ``/v3/kv/range`` and the snapshot stream is answered 503 with ``etcdserver: rpc
not supported for learner`` (a stream: as its error chunk). petcd's routes make the same check
(``_learner_refuses``) before calling the member.

While auth is on, the ``Authorization`` header is the call's token (etcd's gateway passes it on
as ``authorization`` metadata), checked as for gRPC calls (``petcd.server.authz``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import http
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.v3electionpb import v3election_pb2
from petcd.api.v3lockpb import v3lock_pb2
from petcd.grpc import convert
from petcd.grpc.auth import AuthService
from petcd.grpc.election import ElectionService
from petcd.grpc.interceptors import CALL_CREDENTIALS, ERR_LEARNER
from petcd.grpc.lease import LeaseService
from petcd.grpc.lock import LockService
from petcd.grpc.services import ClusterService, MaintenanceService
from petcd.grpc.status import status_for
from petcd.grpc.watch import WatchService
from petcd.server.authz import Credentials
from petcd.server.log import Logger

CALLS_MAX_DEFAULT = 2**32 - 1  # etcd's --max-concurrent-streams default, math.MaxUint32
_METADATA_HEADER = "Grpc-Metadata-Content-Type"

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

# The unary call a learner serves through the gateway besides a serializable range (etcd's
# isRPCSupportedForLearner; of the streams it serves the snapshot only).
_LEARNER_SERVES = frozenset(("/v3/maintenance/status",))


def _learner_refuses(member: Any, path: str, message: Any) -> bool:
    """``member`` is a learner and the call at ``path`` (a ``/v3/`` route) is not one it
    serves."""
    if not member.is_learner or path in _LEARNER_SERVES:
        return False
    return not (path == "/v3/kv/range" and message.serializable)


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
        body=body.encode(), status=_HTTP_STATUS.get(code, 500), content_type="application/json"
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
}


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _GatewayContext:
    """The part of a gRPC servicer context that the services' unary methods use."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()  # what a gateway call carries besides its token (CALL_CREDENTIALS)

    def time_remaining(self) -> float | None:
        return None  # grpc-gateway sets no deadline


# Path under /v3/ -> (service, method, request message) of the unary calls served by the gRPC
# services' own methods (etcd 3.5.17's rpc.pb.gw.go, v3election.pb.gw.go, v3lock.pb.gw.go).
_SERVICE_ROUTES: dict[str, tuple[str, str, type[Any]]] = {
    "maintenance/alarm": ("maintenance", "Alarm", rpc_pb2.AlarmRequest),
    "maintenance/status": ("maintenance", "Status", rpc_pb2.StatusRequest),
    "maintenance/defragment": ("maintenance", "Defragment", rpc_pb2.DefragmentRequest),
    "maintenance/hash": ("maintenance", "Hash", rpc_pb2.HashRequest),
    "maintenance/hashkv": ("maintenance", "HashKV", rpc_pb2.HashKVRequest),
    "maintenance/transfer-leadership": ("maintenance", "MoveLeader", rpc_pb2.MoveLeaderRequest),
    "cluster/member/add": ("cluster", "MemberAdd", rpc_pb2.MemberAddRequest),
    "cluster/member/remove": ("cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest),
    "cluster/member/update": ("cluster", "MemberUpdate", rpc_pb2.MemberUpdateRequest),
    "cluster/member/list": ("cluster", "MemberList", rpc_pb2.MemberListRequest),
    "cluster/member/promote": ("cluster", "MemberPromote", rpc_pb2.MemberPromoteRequest),
    "election/campaign": ("election", "Campaign", v3election_pb2.CampaignRequest),
    "election/proclaim": ("election", "Proclaim", v3election_pb2.ProclaimRequest),
    "election/leader": ("election", "Leader", v3election_pb2.LeaderRequest),
    "election/resign": ("election", "Resign", v3election_pb2.ResignRequest),
    "lock/lock": ("lock", "Lock", v3lock_pb2.LockRequest),
    "lock/unlock": ("lock", "Unlock", v3lock_pb2.UnlockRequest),
    "auth/enable": ("auth", "AuthEnable", rpc_pb2.AuthEnableRequest),
    "auth/disable": ("auth", "AuthDisable", rpc_pb2.AuthDisableRequest),
    "auth/status": ("auth", "AuthStatus", rpc_pb2.AuthStatusRequest),
    "auth/authenticate": ("auth", "Authenticate", rpc_pb2.AuthenticateRequest),
    "auth/user/add": ("auth", "UserAdd", rpc_pb2.AuthUserAddRequest),
    "auth/user/get": ("auth", "UserGet", rpc_pb2.AuthUserGetRequest),
    "auth/user/list": ("auth", "UserList", rpc_pb2.AuthUserListRequest),
    "auth/user/delete": ("auth", "UserDelete", rpc_pb2.AuthUserDeleteRequest),
    "auth/user/changepw": ("auth", "UserChangePassword", rpc_pb2.AuthUserChangePasswordRequest),
    "auth/user/grant": ("auth", "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest),
    "auth/user/revoke": ("auth", "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest),
    "auth/role/add": ("auth", "RoleAdd", rpc_pb2.AuthRoleAddRequest),
    "auth/role/get": ("auth", "RoleGet", rpc_pb2.AuthRoleGetRequest),
    "auth/role/list": ("auth", "RoleList", rpc_pb2.AuthRoleListRequest),
    "auth/role/delete": ("auth", "RoleDelete", rpc_pb2.AuthRoleDeleteRequest),
    "auth/role/grant": ("auth", "RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest),
    "auth/role/revoke": ("auth", "RoleRevokePermission", rpc_pb2.AuthRoleRevokePermissionRequest),
}


class _Services:
    """The gRPC services a gateway calls into (its own instances, over the same member)."""

    def __init__(self, member: Any, log: Logger | None) -> None:
        self.maintenance = MaintenanceService(member, log)
        self.cluster = ClusterService(member, log)
        self.election = ElectionService(member, log)
        self.lock = LockService(member, log)
        self.auth = AuthService(member.gate, member, log)
        self.watch = WatchService(member, log)
        self.lease = LeaseService(member, log)

    def routes(self) -> dict[str, tuple[type[Any], Handler]]:
        routes: dict[str, tuple[type[Any], Handler]] = {}
        for path, (service, name, message_type) in _SERVICE_ROUTES.items():
            method = getattr(getattr(self, service), name)

            async def call(member: Any, m: Any, method: Any = method) -> Any:
                return await method(m, _GatewayContext())

            routes[f"/v3/{path}"] = (message_type, call)
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
    services = _Services(member, log)
    for path, (message_type, handler) in {**ROUTES, **services.routes()}.items():

        async def route(
            request: web.Request,
            message_type: Any = message_type,
            handler: Handler = handler,
            path: str = path,
        ) -> web.Response:
            message = await _request_message(request, message_type)
            if isinstance(message, web.Response):
                return message
            if _learner_refuses(member, path, message):
                return _status_response(*ERR_LEARNER)
            async with slots:
                _credentials(member, request)
                try:
                    resp = await handler(member, message)
                except _Aborted as e:
                    return _status_response(e.code, e.message)
                except Exception as e:
                    return _error(e)
            return web.Response(body=_to_json(resp).encode(), content_type="application/json")

        _add_post(app, path, route)

    streams = _Streams(member, services, slots)
    _add_post(app, "/v3/watch", streams.watch)
    _add_post(app, "/v3/lease/keepalive", streams.keep_alive)
    _add_post(app, "/v3/election/observe", streams.observe)
    _add_post(app, "/v3/maintenance/snapshot", streams.snapshot)
    app.on_shutdown.append(streams.close)


async def _request_message(request: web.Request, message_type: type[Any]) -> Any:
    """The body as one request message (a unary call's or a server stream's), or
    grpc-gateway's 400 answer (code 3, INVALID_ARGUMENT) when it is not one. As grpc-gateway's
    decoder, it reads the first JSON value only; an empty body is an empty message."""
    text = (await request.text()).lstrip(" \t\r\n")
    try:
        if not text:
            return message_type()
        try:
            obj, _ = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError as e:
            raise _BadBody(_json_error_text(e, text)) from None
        return _message_of(obj, message_type)
    except _BadBody as e:
        return _status_response(grpc.StatusCode.INVALID_ARGUMENT, str(e))


def _add_post(app: web.Application, path: str, route: Any) -> None:
    app.router.add_post(path, route)
    # etcd 3.5 still answers the 3.3-era prefix by rewriting it (its serve.go).
    app.router.add_post(path.replace("/v3/", "/v3beta/", 1), route)


# -- streams -------------------------------------------------------------------------------------


class _BadBody(Exception):
    """The body is not a request message: grpc-gateway's 400 answer (code 3) for a unary call
    or a server stream, its 500 (code 2) for the first message of a bidirectional stream."""


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


def _message_of(obj: Any, message_type: type[Any]) -> Any:
    """The request message a decoded JSON value stands for; ``_BadBody`` with Go's text for a
    value that is not an object (``null`` is an empty message, as in Go)."""
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise _BadBody(
            f"json: cannot unmarshal {_GO_KINDS.get(type(obj), 'value')} "
            "into Go value of type map[string]json.RawMessage"
        )
    message = message_type()
    try:
        return json_format.ParseDict(_known(obj, message.DESCRIPTOR), message)
    except json_format.ParseError as e:
        raise _BadBody(str(e)) from None


@functools.cache
def _fields(descriptor: Any) -> dict[str, Any]:
    """A message type's fields by their .proto and their JSON names."""
    return {
        **{f.json_name: f for f in descriptor.fields},
        **{f.name: f for f in descriptor.fields},
    }


def _known(obj: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    """``obj`` without the keys its message type has no field for, at every level (grpc-gateway
    ignores them), so that the parser still refuses a bad value of a known field, such as an
    unknown enum name (which ``ignore_unknown_fields`` would let through)."""
    fields = _fields(descriptor)
    known: dict[str, Any] = {}
    for key, value in obj.items():
        field = fields.get(key)
        if field is None:
            continue
        sub = field.message_type
        if sub is not None and not sub.GetOptions().map_entry:
            if isinstance(value, dict):
                value = _known(value, sub)
            elif isinstance(value, list):
                value = [_known(v, sub) if isinstance(v, dict) else v for v in value]
        known[key] = value
    return known


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
                    return _message_of(obj, self._type)
            elif self._eof:
                return None
            chunk = await self._content.readany()
            self._eof = not chunk
            self._text = text + self._utf8.decode(chunk, final=self._eof)

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
        # The gRPC stream's header metadata comes with its first message (a call that fails
        # first has none): grpc-gateway passes it on as a header.
        self.metadata_with_message = False

    async def _send(self, data: bytes) -> None:
        if not self._sent:
            self._sent = True
            await self.response.prepare(self._request)
        await self.response.write(data)

    async def message(self, message: Any) -> None:
        if self.metadata_with_message and not self._sent:
            self.response.headers[_METADATA_HEADER] = "application/grpc"
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

    def __init__(self, chunks: _Chunks, token: str | None = None) -> None:
        self.write = chunks.message
        self._token = token

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The request's ``Authorization`` header, as grpc-gateway passes it on."""
        return () if self._token is None else (("authorization", self._token),)


async def _refuse_on_learner(context: _StreamContext) -> None:
    raise _Aborted(*ERR_LEARNER)


class _Streams:
    """The streams over the gRPC services' code: the bidirectional ``/v3/watch`` and
    ``/v3/lease/keepalive``, the server streams ``/v3/election/observe`` and
    ``/v3/maintenance/snapshot``."""

    def __init__(self, member: Any, services: _Services, slots: asyncio.Semaphore) -> None:
        self._member = member
        self._services = services
        self._slots = slots
        self._calls: set[asyncio.Task[Any]] = set()

    async def watch(self, request: web.Request) -> web.StreamResponse:
        async def run(requests: AsyncIterator[Any], context: _StreamContext) -> None:
            batches = self._services.watch.batches(requests, context)
            async with contextlib.aclosing(batches) as out:
                async for batch in out:
                    for message in batch:
                        await context.write(message)

        return await self._bidi(request, rpc_pb2.WatchRequest, run)

    async def keep_alive(self, request: web.Request) -> web.StreamResponse:
        return await self._bidi(
            request, rpc_pb2.LeaseKeepAliveRequest, self._services.lease.LeaseKeepAlive
        )

    async def observe(self, request: web.Request) -> web.StreamResponse:
        return await self._server_stream(
            request, v3election_pb2.LeaderRequest, self._services.election.Observe
        )

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        return await self._server_stream(
            request,
            rpc_pb2.SnapshotRequest,
            self._services.maintenance.Snapshot,
            learner_serves=True,
        )

    @contextlib.asynccontextmanager
    async def _slot(self, request: web.Request) -> AsyncIterator[None]:
        """A call in flight: one of the slots, known to ``close``, with the call's token."""
        task = asyncio.current_task()
        assert task is not None
        async with self._slots:
            self._calls.add(task)
            try:
                _credentials(self._member, request)
                yield
            finally:
                self._calls.discard(task)

    async def _bidi(
        self,
        request: web.Request,
        message_type: type[Any],
        run: Callable[[AsyncIterator[Any], _StreamContext], Awaitable[None]],
    ) -> web.StreamResponse:
        async with self._slot(request):  # etcd's gateway opens the gRPC stream first
            body = _RequestMessages(request, message_type)
            try:
                first = await body.next()
            except _BadBody as e:
                text = json.dumps(
                    {"error": str(e), "code": 2, "message": str(e)}, separators=(",", ":")
                )
                return web.Response(body=text.encode(), status=500, content_type="application/json")
            if self._member.is_learner:  # refused after the first message, as etcd's
                return await self._answer(request, _refuse_on_learner, metadata=False)
            requests = body.rest(first)

            async def call(context: _StreamContext) -> None:
                try:
                    await run(requests, context)
                finally:
                    with contextlib.suppress(RuntimeError):  # still running: it ends anyway
                        await requests.aclose()  # type: ignore[attr-defined]

            return await self._answer(request, call, metadata=first is not None)

    async def _server_stream(
        self,
        request: web.Request,
        message_type: type[Any],
        method: Callable[[Any, _StreamContext], Awaitable[None]],
        learner_serves: bool = False,
    ) -> web.StreamResponse:
        # grpc-gateway decodes the body, the one request message, before it opens the stream.
        message = await _request_message(request, message_type)
        if isinstance(message, web.Response):
            return message
        async with self._slot(request):
            if self._member.is_learner and not learner_serves:
                return await self._answer(request, _refuse_on_learner, metadata=False)

            async def call(context: _StreamContext) -> None:
                await method(message, context)

            return await self._answer(request, call, metadata=False, metadata_with_message=True)

    async def _answer(
        self,
        request: web.Request,
        call: Callable[[_StreamContext], Awaitable[None]],
        metadata: bool,
        metadata_with_message: bool = False,
    ) -> web.StreamResponse:
        """The chunked answer of ``call``, with the header grpc-gateway makes of the gRPC
        stream's header metadata: at once (``metadata``), or with the first message."""
        chunks = _Chunks(request)
        chunks.metadata_with_message = metadata_with_message
        if metadata:
            chunks.response.headers[_METADATA_HEADER] = "application/grpc"
        try:
            try:
                await call(_StreamContext(chunks, request.headers.get("Authorization")))
            except _Aborted as e:
                await chunks.error(e.code, e.message)
            return await chunks.end()
        except ConnectionError:  # the client went before aiohttp cancelled the call
            return chunks.response

    async def close(self, app: web.Application) -> None:
        """At shutdown: streams end (a watch would not), so that their connections close."""
        for task in list(self._calls):
            task.cancel()
