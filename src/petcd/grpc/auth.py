"""etcd's Auth service over a member's ``AuthGate`` (``petcd.server.authz``).

Theory of operation
-------------------
Each RPC converts its protobuf request into a gate call: changes go through raft as
``AuthRequest`` entries (passwords hashed first, on this member, off the event loop), reads are
linearizable reads of the local auth store. The credentials of the call (``CALL_CREDENTIALS``,
set by ``RequestGuard`` while auth is on) decide what the caller may do: with auth on, every
change and every listing needs the ``root`` role, except UserGet of oneself and RoleGet of a role
one has. Responses carry the member's header. Errors are etcd's (``petcd.auth.errors``, mapped
by ``petcd.grpc.status``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.auth import AuthOp, AuthRequest
from petcd.auth.errors import PermissionNotGivenError
from petcd.grpc import convert
from petcd.grpc.interceptors import CALL_CREDENTIALS
from petcd.grpc.status import is_expected, status_for
from petcd.mvcc.requests import ResponseHeader
from petcd.server.authz import AuthGate
from petcd.server.log import Logger


class _HeaderSource(Protocol):
    def watch_header(self, revision: int = 0) -> ResponseHeader: ...


class AuthService(rpc_pb2_grpc.AuthServicer):
    def __init__(self, gate: AuthGate, member: _HeaderSource, log: Logger | None = None) -> None:
        self._gate = gate
        self._member = member
        self._log = log

    def _header(self) -> Any:
        return convert.header_pb(self._member.watch_header())

    async def _call(self, context: Any, method: str, work: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await work()
        except Exception as e:
            code, message = status_for(e)
            if not is_expected(e) and self._log is not None:
                self._log.error("unexpected error in gRPC handler", method=method, error=repr(e))
            await context.abort(code, message)

    async def _change(self, context: Any, method: str, req: AuthRequest, response: Any) -> Any:
        async def work() -> Any:
            await self._gate.change(CALL_CREDENTIALS.get(), req)
            return response(header=self._header())

        return await self._call(context, method, work)

    async def AuthEnable(self, request: Any, context: Any) -> Any:
        return await self._change(
            context, "AuthEnable", AuthRequest(AuthOp.ENABLE), rpc_pb2.AuthEnableResponse
        )

    async def AuthDisable(self, request: Any, context: Any) -> Any:
        return await self._change(
            context, "AuthDisable", AuthRequest(AuthOp.DISABLE), rpc_pb2.AuthDisableResponse
        )

    async def AuthStatus(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            store = await self._gate.listing(CALL_CREDENTIALS.get())
            return rpc_pb2.AuthStatusResponse(
                header=self._header(), enabled=store.enabled, authRevision=store.revision
            )

        return await self._call(context, "AuthStatus", work)

    async def Authenticate(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            token = await self._gate.authenticate(request.name, request.password)
            return rpc_pb2.AuthenticateResponse(header=self._header(), token=token)

        return await self._call(context, "Authenticate", work)

    async def UserAdd(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            no_password = request.HasField("options") and request.options.no_password
            await self._gate.user_add(
                CALL_CREDENTIALS.get(), request.name, request.password, no_password
            )
            return rpc_pb2.AuthUserAddResponse(header=self._header())

        return await self._call(context, "UserAdd", work)

    async def UserGet(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            roles = await self._gate.user_get(CALL_CREDENTIALS.get(), request.name)
            return rpc_pb2.AuthUserGetResponse(header=self._header(), roles=roles)

        return await self._call(context, "UserGet", work)

    async def UserList(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            store = await self._gate.listing(CALL_CREDENTIALS.get())
            return rpc_pb2.AuthUserListResponse(header=self._header(), users=store.user_names())

        return await self._call(context, "UserList", work)

    async def UserDelete(self, request: Any, context: Any) -> Any:
        return await self._change(
            context,
            "UserDelete",
            AuthRequest(AuthOp.USER_DELETE, request.name),
            rpc_pb2.AuthUserDeleteResponse,
        )

    async def UserChangePassword(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            await self._gate.change_password(CALL_CREDENTIALS.get(), request.name, request.password)
            return rpc_pb2.AuthUserChangePasswordResponse(header=self._header())

        return await self._call(context, "UserChangePassword", work)

    async def UserGrantRole(self, request: Any, context: Any) -> Any:
        return await self._change(
            context,
            "UserGrantRole",
            AuthRequest(AuthOp.USER_GRANT_ROLE, request.user, role=request.role),
            rpc_pb2.AuthUserGrantRoleResponse,
        )

    async def UserRevokeRole(self, request: Any, context: Any) -> Any:
        return await self._change(
            context,
            "UserRevokeRole",
            AuthRequest(AuthOp.USER_REVOKE_ROLE, request.name, role=request.role),
            rpc_pb2.AuthUserRevokeRoleResponse,
        )

    async def RoleAdd(self, request: Any, context: Any) -> Any:
        return await self._change(
            context,
            "RoleAdd",
            AuthRequest(AuthOp.ROLE_ADD, request.name),
            rpc_pb2.AuthRoleAddResponse,
        )

    async def RoleGet(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            perms = await self._gate.role_get(CALL_CREDENTIALS.get(), request.role)
            return rpc_pb2.AuthRoleGetResponse(
                header=self._header(),
                perm=[
                    auth_pb2.Permission(
                        permType=p.perm_type,
                        key=p.key,
                        range_end=p.range_end,
                    )
                    for p in perms
                ],
            )

        return await self._call(context, "RoleGet", work)

    async def RoleList(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            store = await self._gate.listing(CALL_CREDENTIALS.get())
            return rpc_pb2.AuthRoleListResponse(header=self._header(), roles=store.role_names())

        return await self._call(context, "RoleList", work)

    async def RoleDelete(self, request: Any, context: Any) -> Any:
        return await self._change(
            context,
            "RoleDelete",
            AuthRequest(AuthOp.ROLE_DELETE, request.role),
            rpc_pb2.AuthRoleDeleteResponse,
        )

    async def RoleGrantPermission(self, request: Any, context: Any) -> Any:
        async def work() -> Any:
            if not request.HasField("perm"):
                raise PermissionNotGivenError()
            p = request.perm
            req = AuthRequest(
                AuthOp.ROLE_GRANT_PERMISSION,
                request.name,
                perm_type=int(p.permType),
                key=p.key,
                range_end=p.range_end,
            )
            await self._gate.change(CALL_CREDENTIALS.get(), req)
            return rpc_pb2.AuthRoleGrantPermissionResponse(header=self._header())

        return await self._call(context, "RoleGrantPermission", work)

    async def RoleRevokePermission(self, request: Any, context: Any) -> Any:
        return await self._change(
            context,
            "RoleRevokePermission",
            AuthRequest(
                AuthOp.ROLE_REVOKE_PERMISSION,
                request.role,
                key=request.key,
                range_end=request.range_end,
            ),
            rpc_pb2.AuthRoleRevokePermissionResponse,
        )
