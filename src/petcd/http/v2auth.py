"""etcd's v2 auth over HTTP (``--enable-v2``): ``/v2/auth/...`` and the checks of v2 requests.

Theory of operation
-------------------
``add_routes`` serves ``/v2/auth/enable`` (GET the state, PUT enable, DELETE disable),
``/v2/auth/users[/name]`` and ``/v2/auth/roles[/name]`` (GET, PUT create or update with
grant/revoke/password, DELETE) over the member's ``petcd.server.v2auth.V2AuthStore``, with
etcd's bodies (``encoding/json``, one document per line), statuses and error bodies
(``{"message":"auth: ..."}``). ``Access`` is the check every v2 route makes while auth is on,
as etcd's ``client_auth.go`` does:

- the auth routes and the writes of ``/v2/members`` (and enable/disable) need a user with
  the root role; a GET of ``/v2/auth/enable`` and of ``/v2/members`` needs nobody;
- ``/v2/keys`` needs a role whose read (GET, HEAD) or write patterns cover the key (a
  recursive request: a ``*`` pattern); without credentials the ``guest`` role decides;
- the user is the one of the ``Authorization: Basic`` header (its bcrypt password checked),
  or, with ``--client-cert-auth`` and no such header, a user named after a common name of the
  verified client certificate chain (``Access.cert_names``).

A refused key request is etcd's v2 error 110 (401, cause "Insufficient credentials"); a
refused auth or members request is 401 ``{"message":"Insufficient credentials"}``.
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from petcd.server.v2auth import V2AuthStore
from petcd.v2store import V2Error
from petcd.v2store.auth import (
    GUEST_ROLE,
    ROOT_ROLE,
    AuthError,
    BadJSON,
    Role,
    User,
    decode_role,
    decode_user,
    role_json,
    user_json,
    user_with_roles_json,
)

AUTH_PREFIX = "/v2/auth"
_CORS = {
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Origin": "*",
}
_JSON = {"Content-Type": "application/json"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """etcd's httptypes.HTTPError (``headers``: those set before it, the cluster id)."""
    from petcd.http.v2 import go_string

    body = '{"message":' + go_string(message) + "}"
    return web.Response(
        body=body.encode(), status=status, headers={**_CORS, **(headers or {}), **_JSON}
    )


def no_auth() -> web.Response:
    return _message(401, "Insufficient credentials")


def _error(err: Exception, headers: dict[str, str] | None = None) -> web.Response:
    """etcd's writeError: an auth error, a v2 error, else 500."""
    if isinstance(err, AuthError):
        return _message(err.status, err.message, headers)
    if isinstance(err, V2Error):
        from petcd.http.v2 import error_json

        headers = {**_CORS, **(headers or {}), **_JSON, "X-Etcd-Index": str(err.index)}
        return web.Response(body=error_json(err).encode(), status=err.status, headers=headers)
    return _message(500, "Internal Server Error", headers)


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    """Go's Request.BasicAuth."""
    header = request.headers.get("Authorization", "")
    if len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    text = raw.decode("utf-8", "surrogateescape")
    if ":" not in text:
        return None
    name, password = text.split(":", 1)
    return name, password


class Access:
    """etcd's permission checks of v2 requests (``client_auth.go``)."""

    def __init__(
        self, store: V2AuthStore, client_cert_auth: bool, trusted_ca_file: str = ""
    ) -> None:
        self.store = store
        self.client_cert_auth = client_cert_auth
        self.trusted_ca_file = trusted_ca_file

    async def _from_basic_auth(self, request: web.Request) -> User | None:
        creds = _basic_auth(request)
        if creds is None:
            return None
        try:
            user = self.store.get_user(creds[0])
        except (AuthError, V2Error, BadJSON):
            return None
        if not await self.store.check_password(user, creds[1]):
            return None
        return user

    def _from_certificate(self, request: web.Request) -> User | None:
        for name in cert_names(request, self.trusted_ca_file):
            try:
                return self.store.get_user(name)
            except (AuthError, V2Error, BadJSON):
                continue
        return None

    async def root(self, request: web.Request) -> bool:
        if not self.store.auth_enabled():
            return True
        if request.headers.get("Authorization", "") == "" and self.client_cert_auth:
            user = self._from_certificate(request)
        else:
            user = await self._from_basic_auth(request)
        return user is not None and ROOT_ROLE in (user.roles or ())

    async def write_root(self, request: web.Request) -> bool:
        if request.method in ("GET", "HEAD"):
            return True
        return await self.root(request)

    async def key(self, request: web.Request, key: str, recursive: bool) -> bool:
        """May this request read (GET, HEAD) or write ``key`` (the path after /v2/keys)?"""
        if not self.store.auth_enabled():
            return True
        write = request.method not in ("GET", "HEAD")
        user: User | None = None
        if request.headers.get("Authorization", "") == "":
            if self.client_cert_auth:
                user = self._from_certificate(request)
            if user is None:
                return self._guest(key, write)
        else:
            user = await self._from_basic_auth(request)
            if user is None:
                return False
        for name in user.roles or ():
            try:
                role = self.store.get_role(name)
            except (AuthError, V2Error, BadJSON):
                continue
            if recursive:
                if role.has_recursive_access(key, write):
                    return True
            elif role.has_key_access(key, write):
                return True
        return False

    def _guest(self, key: str, write: bool) -> bool:
        try:
            role = self.store.get_role(GUEST_ROLE)
        except (AuthError, V2Error, BadJSON):
            return False
        return role.has_key_access(key, write)  # (etcd checks the guest non-recursively)


def cert_names(request: web.Request, trusted_ca_file: str = "") -> list[str]:
    """The common names of the request's verified client certificate chain, leaf first, the
    trusted CA that signed it last (etcd looks every certificate of Go's verified chains up
    as a user name, in that order).

    Over the native front end's TLS, from the certificates it handed over with the
    connection (``petcd.http.accepted``); over aiohttp's TLS, from the SSL object. The
    trusted CA that ends the chain comes from ``trusted_ca_file``.
    """
    from petcd.http.accepted import presented_chain

    chain = presented_chain(request.transport)
    if not chain:
        return []
    return der_common_names(complete_chain(chain, trusted_ca_file))


_CA_CACHE: dict[str, tuple[float, list[Any]]] = {}


def _trusted(path: str) -> list[Any]:
    from cryptography import x509

    try:
        mtime = os.stat(path).st_mtime
        cached = _CA_CACHE.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        with open(path, "rb") as f:
            cas = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError):
        return []
    _CA_CACHE[path] = (mtime, cas)
    return cas


def complete_chain(chain: list[bytes], trusted_ca_file: str) -> list[bytes]:
    """``chain`` (DER, leaf first, as the client sent it) followed by the trusted CAs that
    issued its last certificate, up to a self-signed one (the front end verified it)."""
    if not trusted_ca_file:
        return chain
    from cryptography import x509

    try:
        last = x509.load_der_x509_certificate(chain[-1])
    except ValueError:
        return chain
    cas = _trusted(trusted_ca_file)
    out = list(chain)
    while last.issuer != last.subject and len(out) < 16:
        issuer = next((c for c in cas if c.subject == last.issuer), None)
        if issuer is None:
            break
        der = issuer.public_bytes(serialization.Encoding.DER)
        if der in out:
            break
        out.append(der)
        last = issuer
    return out


def der_common_names(chain: list[bytes]) -> list[str]:
    from petcd.grpc.interceptors import common_name

    out = []
    for der in chain:
        name = common_name(der)
        if name is not None:
            out.append(name)
    return out


def _allow(method: str, allowed: tuple[str, ...]) -> web.Response | None:
    if method in allowed:
        return None
    from petcd.http.v2 import _method_not_allowed

    return _method_not_allowed(allowed)


def add_routes(app: web.Application, member: Any, access: Access) -> None:
    """/v2/auth/... of ``member`` (v2 on), checked by ``access``."""
    store = access.store

    def ok_headers() -> dict[str, str]:
        return {**_CORS, **_JSON, **cid()}

    def cid() -> dict[str, str]:
        return {"X-Etcd-Cluster-Id": f"{member.cluster_id:x}"}

    def answer(body: str, status: int = 200) -> web.Response:
        return web.Response(body=(body + "\n").encode(), status=status, headers=ok_headers())

    async def root_only(request: web.Request, allowed: tuple[str, ...]) -> web.Response | None:
        """The answer that refuses ``request``: a method not ``allowed``, or (auth on) no user
        with the root role; None if it may go on."""
        refused = _allow(request.method, allowed)
        if refused is None and not await access.root(request):
            refused = no_auth()
        return refused

    def by_name(
        base: Handler, named: Callable[[web.Request, str], Awaitable[web.StreamResponse]]
    ) -> Handler:
        """``/users`` (``/roles``) to ``base``, ``/users/<name>`` to ``named``; a deeper path
        is a bad request."""

        async def serve(request: web.Request) -> web.StreamResponse:
            pieces = posixpath.normpath(request.path[len(AUTH_PREFIX) :] or ".").split("/")
            if len(pieces) == 2:
                return await base(request)
            if len(pieces) != 3:
                return _message(400, "Invalid path")
            return await named(request, pieces[2])

        return serve

    async def base_roles(request: web.Request) -> web.StreamResponse:
        refused = await root_only(request, ("GET",))
        if refused is not None:
            return refused
        try:
            roles = [store.get_role(name) for name in store.all_roles()]
        except (AuthError, V2Error) as e:
            return _error(e, cid())
        return answer('{"roles":[' + ",".join(role_json(r) for r in roles) + "]}")

    async def base_users(request: web.Request) -> web.StreamResponse:
        refused = await root_only(request, ("GET",))
        if refused is not None:
            return refused
        try:
            entries = []
            for name in store.all_users():
                user = store.get_user(name)
                roles = []
                for role_name in user.roles or ():
                    try:
                        roles.append(store.get_role(role_name))
                    except (AuthError, V2Error):
                        continue
                entries.append(user_with_roles_json(user.user, roles))
        except (AuthError, V2Error) as e:
            return _error(e, cid())
        users = "[" + ",".join(entries) + "]" if entries else "null"
        return answer('{"users":' + users + "}")

    async def for_role(request: web.Request, name: str) -> web.StreamResponse:
        refused = await root_only(request, ("GET", "PUT", "DELETE"))
        if refused is not None:
            return refused
        try:
            if request.method == "GET":
                return answer(role_json(store.get_role(name)))
            if request.method == "DELETE":
                await store.delete_role(name)
                return web.Response(headers=ok_headers())
            try:
                role = decode_role(await request.read())
            except BadJSON:
                return _message(400, "Invalid JSON in request body.", cid())
            if role.role != name:
                return _message(400, "Role JSON name does not match the name in the URL", cid())
            if (role.grant is None or role.grant.is_empty()) and (
                role.revoke is None or role.revoke.is_empty()
            ):
                await store.create_role(role)
                return answer(role_json(role), 201)
            if not role.permissions.is_empty():
                return _message(400, "Role JSON contains both permissions and grant/revoke", cid())
            return answer(role_json(await store.update_role(role)))
        except (AuthError, V2Error, BadJSON, ValueError) as e:
            return _error(e, cid())

    async def for_user(request: web.Request, name: str) -> web.StreamResponse:
        refused = await root_only(request, ("GET", "PUT", "DELETE"))
        if refused is not None:
            return refused
        try:
            if request.method == "GET":
                user = store.get_user(name)
                found: list[Role] = [store.get_role(r) for r in user.roles or ()]
                return answer(user_with_roles_json(user.user, found))
            if request.method == "DELETE":
                await store.delete_user(name)
                return web.Response(headers=ok_headers())
            try:
                user = decode_user(await request.read())
            except BadJSON:
                return _message(400, "Invalid JSON in request body.", cid())
            if user.user != name:
                return _message(400, "User JSON name does not match the name in the URL", cid())
            created = False
            if not user.grant and not user.revoke:
                if user.roles:
                    out = await store.create_user(user)
                else:
                    # only a password (or nothing): etcd cannot tell a create from an update
                    out, created = await store.create_or_update_user(user)
            else:
                if user.roles:
                    return _message(400, "User JSON contains both roles and grant/revoke", cid())
                out = await store.update_user(user)
            shown = User(out.user, "", out.roles, out.grant, out.revoke)
            return answer(user_json(shown), 201 if created else 200)
        except (AuthError, V2Error, BadJSON, ValueError) as e:
            return _error(e, cid())

    async def enable(request: web.Request) -> web.StreamResponse:
        refused = _allow(request.method, ("GET", "PUT", "DELETE"))
        if refused is not None:
            return refused
        if not await access.write_root(request):
            return no_auth()
        enabled = store.auth_enabled()
        try:
            if request.method == "GET":
                return answer('{"enabled":' + ("true" if enabled else "false") + "}")
            if request.method == "PUT":
                await store.enable()
            else:
                await store.disable()
        except (AuthError, V2Error, ValueError) as e:
            return _error(e, cid())
        return web.Response(headers=ok_headers())

    def unclean_first(handler: Handler) -> Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            from petcd.http.v2 import _unclean

            if request.method == "OPTIONS":  # etcd's CORS handler answers it first
                return web.Response(headers=_CORS)
            redirect = _unclean(request)
            if redirect is not None:
                return redirect
            try:
                return await handler(request)
            except Exception as e:  # a proposal that failed: no leader, a timeout
                if isinstance(e, web.HTTPException):
                    raise
                return _error(e, cid())

        return serve

    app.router.add_route("*", AUTH_PREFIX + "/roles", unclean_first(base_roles))
    app.router.add_route(
        "*", AUTH_PREFIX + "/roles/{tail:.*}", unclean_first(by_name(base_roles, for_role))
    )
    app.router.add_route("*", AUTH_PREFIX + "/users", unclean_first(base_users))
    app.router.add_route(
        "*", AUTH_PREFIX + "/users/{tail:.*}", unclean_first(by_name(base_users, for_user))
    )
    app.router.add_route("*", AUTH_PREFIX + "/enable", unclean_first(enable))

    async def not_found(request: web.Request) -> web.StreamResponse:
        """Go's ServeMux: an unclean path is redirected, any other is its 404."""
        return web.Response(
            text="404 page not found\n",
            status=404,
            headers={**_CORS, "X-Content-Type-Options": "nosniff"},
            content_type="text/plain",
            charset="utf-8",
        )

    app.router.add_route("*", AUTH_PREFIX, unclean_first(not_found))
    app.router.add_route("*", AUTH_PREFIX + "/{tail:.*}", unclean_first(not_found))


__all__ = ["Access", "add_routes", "cert_names", "complete_chain", "der_common_names", "no_auth"]
