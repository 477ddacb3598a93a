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
turns its abort into the error answer). Streams (watch, keep-alive) are not served here.

While auth is on, the ``Authorization`` header is the call's token (etcd's gateway passes it on
as ``authorization`` metadata), checked as for gRPC calls (``petcd.server.authz``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.grpc.auth import AuthService
from petcd.grpc.interceptors import CALL_CREDENTIALS
from petcd.grpc.status import status_for
from petcd.server.authz import Credentials

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


def add_routes(app: web.Application, member: Any) -> None:
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
            if member.auth_enabled:
                CALL_CREDENTIALS.set(Credentials(token=request.headers.get("Authorization")))
            try:
                resp = await handler(member, message)
            except _Aborted as e:
                return _status_response(e.code, e.message)
            except Exception as e:
                return _error(e)
            return web.Response(text=_to_json(resp), content_type="application/json")

        app.router.add_post(path, route)
        # etcd 3.5 still answers the 3.3-era prefix by rewriting it (its serve.go).
        app.router.add_post(path.replace("/v3/", "/v3beta/", 1), route)
