"""Authentication and permission checks of client requests (etcd's auth appliers and checks).

Theory of operation
-------------------
The gRPC layer hands the member a ``Credentials`` (the call's ``token`` metadata, the common
name of a verified client certificate) for every call made while auth was on when the call
started, and ``None`` otherwise (then nothing is checked: that is the fast path, auth off).
``AuthGate`` turns credentials into an ``AuthInfo`` (user, auth revision) through the member's
``AuthStore`` and checks the request as etcd 3.5 does:

- **Writes** (Put, DeleteRange, Txn, LeaseRevoke, auth changes) are checked by the proposing
  member against its applied auth state at revision R, then proposed as ``Guarded(R, request)``.
  Every member applies a guarded request only while its auth store is still at R (else "revision
  of auth store is old"): the same state, so the same answer as the proposer's check, without
  carrying user names or re-checking at apply. A write proposed without a guard (auth was off)
  and applied after auth was enabled fails with "user name is empty", as etcd's applier does for
  a request without a user (``Member._apply_request``).
- **Reads** (Range, LeaseTimeToLive with keys) are checked before the read and fail with
  "revision of auth store is old" if the auth store moved during the read (etcd's
  ``doSerialize``). A linearizable Range is checked after its read index, as etcd's Range
  (``Member.range``): an auth change committed before the read is what the check sees. A Txn,
  read-only too, is proposed as a write is.
- **Admin** calls (Maintenance Defragment, Snapshot, Hash, HashKV; every auth change and list;
  AuthStatus with auth on) need a user with the ``root`` role. UserGet of oneself and RoleGet
  of one's own role need no admin.
- **Watch** creation is checked like a Range of the watched range.

Permission rules of mvcc requests (``check_request``): Range -> read; Put -> write (+ read with
prev_kv; + write on every key of its lease unless admin); DeleteRange -> write (+ read with
prev_kv); Txn -> read on every compare, and every op as above (nested txns too, which etcd 3.5
does not check).

A simple token carries the raft index that issued it: a member that has not applied that index
yet waits for it (up to the request timeout) before deciding the token is unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from petcd.auth import errors
from petcd.auth.store import AuthOp, AuthRequest, AuthStore, hash_password, password_matches
from petcd.auth.tokens import AuthInfo, SimpleTokens
from petcd.lease import LeaseId, Lessor
from petcd.mvcc.requests import DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest
from petcd.server.entry import Guarded

_T = TypeVar("_T")

_APPLIED_POLL_S = 0.005


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a call brings to identify its user."""

    token: str | None = None
    common_name: str | None = None  # of a verified client certificate (--client-cert-auth)


class _Member(Protocol):
    auth: AuthStore
    lessor: Lessor
    request_timeout_s: float

    @property
    def applied_index(self) -> int: ...

    async def linearizable_read_notify(self) -> None: ...

    async def _propose(self, req: Any) -> Any: ...


def check_request(store: AuthStore, info: AuthInfo | None, req: Any, lessor: Lessor) -> None:
    """Raise the ``AuthError`` etcd answers ``req`` (an mvcc request) with, if any."""
    if isinstance(req, RangeRequest):
        store.check_range(info, req.key, req.range_end)
    elif isinstance(req, PutRequest):
        store.check_put(info, req.key)
        if req.lease and not store.is_admin(info):
            for key in lessor.keys(LeaseId(req.lease)) if req.lease in lessor else ():
                store.check_put(info, key)
        if req.prev_kv:
            store.check_range(info, req.key, b"")
    elif isinstance(req, DeleteRangeRequest):
        if req.prev_kv:
            store.check_range(info, req.key, req.range_end)
        store.check_delete_range(info, req.key, req.range_end)
    elif isinstance(req, TxnRequest):
        for c in req.compare:
            store.check_range(info, c.key, c.range_end)
        for op in (*req.success, *req.failure):
            inner = op.request_range or op.request_put or op.request_delete_range or op.request_txn
            check_request(store, info, inner, lessor)


class AuthGate:
    """The member's checks of client calls against its auth store; see the module docstring."""

    def __init__(self, member: _Member) -> None:
        self._m = member

    @property
    def enabled(self) -> bool:
        return self._m.auth.enabled

    async def _wait_applied(self, index: int) -> None:
        deadline = time.monotonic() + self._m.request_timeout_s
        while self._m.applied_index < index and time.monotonic() < deadline:
            await asyncio.sleep(_APPLIED_POLL_S)

    async def info(self, creds: Credentials | None) -> AuthInfo | None:
        """Who ``creds`` are; None for nobody (or auth off). Raises "invalid auth token"."""
        store = self._m.auth
        if creds is None or not store.enabled:
            return None
        if creds.token is not None:
            if isinstance(store.tokens, SimpleTokens):
                index = SimpleTokens.index(creds.token)
                if index is None:
                    raise errors.InvalidAuthTokenError()
                if index > self._m.applied_index:
                    await self._wait_applied(index)
            return store.info_from_token(creds.token)
        if creds.common_name:
            return AuthInfo(creds.common_name, store.revision)
        return None

    async def guard(self, creds: Credentials | None, req: Any) -> int:
        """Check a write; the auth revision to guard its proposal with (0: auth is off)."""
        if creds is None:
            return 0
        info = await self.info(creds)
        store = self._m.auth
        if not store.enabled:
            return 0
        check_request(store, info, req, self._m.lessor)
        return store.revision

    async def read(
        self, creds: Credentials | None, req: Any, run: Callable[[], Awaitable[_T]]
    ) -> _T:
        """``await run()`` (a read of ``req``) if ``creds`` may make it."""
        if creds is None:
            return await run()
        info = await self.info(creds)
        store = self._m.auth
        check_request(store, info, req, self._m.lessor)
        revision = store.revision
        result = await run()
        if store.enabled and store.revision != revision:
            raise errors.AuthOldRevisionError()
        return result

    async def admin(self, creds: Credentials | None) -> None:
        if creds is not None:
            self._m.auth.check_admin(await self.info(creds))

    async def watch(self, creds: Credentials | None, key: bytes, range_end: bytes) -> None:
        if creds is not None:
            self._m.auth.check_range(await self.info(creds), key, range_end)

    async def _lease_keys(
        self, creds: Credentials | None, lease_id: int
    ) -> tuple[AuthInfo | None, list[bytes]] | None:
        """Who asks about ``lease_id`` and the lease's keys; None when nothing is checked."""
        if creds is None:
            return None
        info = await self.info(creds)
        if not self._m.auth.enabled:
            return None
        lessor = self._m.lessor
        return info, lessor.keys(LeaseId(lease_id)) if lease_id in lessor else []

    async def lease_revoke(self, creds: Credentials | None, lease_id: int) -> int:
        """Check a LeaseRevoke (write on every attached key, unless admin); its guard."""
        found = await self._lease_keys(creds, lease_id)
        if found is None:
            return 0
        info, keys = found
        store = self._m.auth
        if not store.is_admin(info):
            for key in keys:
                store.check_put(info, key)
        return store.revision

    async def lease_keys(self, creds: Credentials | None, lease_id: int) -> int:
        """Check a LeaseTimeToLive with keys (read on every attached key); the revision."""
        found = await self._lease_keys(creds, lease_id)
        if found is None:
            return 0
        info, keys = found
        if info is None:
            raise errors.UserEmptyError()
        for key in keys:
            self._m.auth.check_range(info, key, b"")
        return self._m.auth.revision

    def still(self, revision: int) -> None:
        """Fail a read that began at auth ``revision`` if the auth store moved since."""
        store = self._m.auth
        if revision and store.enabled and store.revision != revision:
            raise errors.AuthOldRevisionError()

    # -- the Auth service ----------------------------------------------------------------------

    async def change(self, creds: Credentials | None, req: AuthRequest) -> None:
        """An auth change through raft (admin only while auth is on)."""
        store = self._m.auth
        proposal: Any = req
        if creds is not None and store.enabled:
            store.check_admin(await self.info(creds))
            proposal = Guarded(store.revision, req)
        await self._m._propose(proposal)

    async def user_add(
        self, creds: Credentials | None, name: str, password: str, no_password: bool
    ) -> None:
        hashed = b""
        if not no_password:
            cost = self._m.auth.bcrypt_cost
            hashed = await asyncio.to_thread(hash_password, password, cost)
        req = AuthRequest(AuthOp.USER_ADD, name, password_hash=hashed, no_password=no_password)
        await self.change(creds, req)

    async def change_password(self, creds: Credentials | None, name: str, password: str) -> None:
        cost = self._m.auth.bcrypt_cost
        hashed = await asyncio.to_thread(hash_password, password, cost)
        await self.change(
            creds, AuthRequest(AuthOp.USER_CHANGE_PASSWORD, name, password_hash=hashed)
        )

    async def authenticate(self, name: str, password: str) -> str:
        """A token for ``name``; etcd's Authenticate (password checked off the event loop;
        with simple tokens the token is assigned through raft so that every member knows it;
        retried if the auth store moved while the password was being checked)."""
        await self._m.linearizable_read_notify()
        store = self._m.auth
        while True:
            hashed, revision = store.password_hash(name)
            if not await asyncio.to_thread(password_matches, password, hashed):
                raise errors.AuthFailedError()
            tokens = store.tokens
            if isinstance(tokens, SimpleTokens):
                prefix = SimpleTokens.gen_prefix()
                token: str = await self._m._propose(
                    AuthRequest(AuthOp.AUTHENTICATE, name, token=prefix)
                )
            else:
                if not tokens.can_sign:
                    raise errors.AuthFailedError()
                token = tokens.assign(name, revision)
            if store.revision == revision:
                return token

    async def listing(self, creds: Credentials | None) -> AuthStore:
        """The auth store for an admin read (UserList, RoleList, AuthStatus), linearizable."""
        await self._m.linearizable_read_notify()
        await self.admin(creds)
        return self._m.auth

    async def user_get(self, creds: Credentials | None, name: str) -> list[str]:
        await self._m.linearizable_read_notify()
        store = self._m.auth
        if creds is not None and store.enabled:
            info = await self.info(creds)
            if info is None or info.username != name:
                store.check_admin(info)
        return list(store.user(name).roles)

    async def role_get(self, creds: Credentials | None, name: str) -> list[Any]:
        await self._m.linearizable_read_notify()
        store = self._m.auth
        if creds is not None and store.enabled:
            info = await self.info(creds)
            if info is None or not store.has_role(info.username, name):
                store.check_admin(info)
        return list(store.role(name).perms)


def apply_check(store: AuthStore, req: Any, guard: int) -> None:
    """At apply: refuse a guarded request whose guard is stale, and an unguarded client write
    or auth change once auth is on (see the module docstring)."""
    if not store.enabled:
        return
    if guard:
        if guard < store.revision:
            raise errors.AuthOldRevisionError()
        return
    if isinstance(req, PutRequest | DeleteRangeRequest | TxnRequest):
        raise errors.UserEmptyError()
    if isinstance(req, AuthRequest) and req.op not in (AuthOp.AUTHENTICATE, AuthOp.ENABLE):
        raise errors.UserEmptyError()
