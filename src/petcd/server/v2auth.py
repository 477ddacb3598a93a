"""etcd's v2 auth store (``/v2/auth``, ``--enable-v2``) over the member's v2 tree.

Theory of operation
-------------------
As etcd's ``v2auth`` store does, ``V2AuthStore`` keeps users, roles and the on/off switch as
JSON values in the member's v2 tree under ``/2`` (``petcd.v2store.auth`` says what they
mean) and changes them only with ordinary v2 requests proposed through raft
(``Member.v2_propose``): ``PUT`` with ``prevExist`` to create or update, ``DELETE`` to
remove. So every member applies the same changes, the tree's index moves as etcd's (the
first change creates ``/2``, ``/2/users``, ``/2/roles`` and ``/2/enabled``, once per process
as etcd's ``ensureAuthDirectories``), and the data is as durable as the tree (the V2 entry
kind and the ``v2store`` bucket of 0014): no entry format of its own.

Reads that decide a change (does the user exist, the root user before enabling) are quorum
reads (QGET through raft); the checks of every request (is auth on, who is this user, what
may its roles do) read the local tree, as etcd's do. bcrypt runs in a worker thread at
etcd's cost (10, whatever ``--bcrypt-cost`` says: that flag is v3's), with Go's ``$2a$``
prefix; a password that checked once against a hash is remembered by a digest, so that basic
auth on every request does not cost a bcrypt each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import bcrypt

from petcd.v2store import V2Error, V2Request
from petcd.v2store import errors as codes
from petcd.v2store.auth import (
    GUEST_ROLE,
    GUEST_ROLE_VALUE,
    PERMS_PREFIX,
    ROOT_ROLE,
    ROOT_ROLE_VALUE,
    ROOT_USER,
    AuthError,
    Role,
    User,
    auth_error,
    decode_role,
    decode_user,
    merge_role,
    merge_user,
    role_json,
    user_json,
    with_root_role,
)
from petcd.v2store.request import Method

BCRYPT_COST = 10  # Go's bcrypt.DefaultCost, which etcd's v2 auth uses
_CHECKED_MAX = 1024


def hash_password(password: str) -> str:
    """bcrypt as Go's ``GenerateFromPassword``; ValueError beyond 72 bytes, as Go's."""
    raw = password.encode("utf-8", "surrogateescape")
    return bcrypt.hashpw(raw, bcrypt.gensalt(BCRYPT_COST, prefix=b"2a")).decode()


class V2AuthStore:
    """The v2 auth data of ``member`` (a ``petcd.server.member.Member`` with v2 on)."""

    def __init__(self, member: Any) -> None:
        self._member = member
        self._ensured = False
        self._checked: dict[bytes, bool] = {}

    # -- the tree ------------------------------------------------------------------------------

    def _local(self, res: str) -> Any:
        return self._member.v2.store.get(PERMS_PREFIX + res, False, False, time.time_ns())

    async def _request(self, res: str, quorum: bool) -> Any:
        if not quorum:
            return self._local(res)
        ev, _, _ = await self._member.v2_propose(V2Request(Method.QGET, PERMS_PREFIX + res))
        return ev

    async def _ensure_directories(self) -> None:
        if self._ensured:
            return
        for res in ("", "/users", "/roles"):
            try:
                await self._propose(res, "", prev_exist=False, is_dir=True)
            except V2Error as e:
                if e.code != codes.NODE_EXIST:
                    raise
        try:
            await self._propose("/enabled", "false", prev_exist=False)
        except V2Error as e:
            if e.code != codes.NODE_EXIST:
                raise
        self._ensured = True

    async def _propose(self, res: str, value: str, prev_exist: bool, is_dir: bool = False) -> None:
        req = V2Request(Method.PUT, PERMS_PREFIX + res, value, is_dir, prev_exist=prev_exist)
        await self._member.v2_propose(req)

    async def _set(self, res: str, value: str, prev_exist: bool) -> None:
        await self._ensure_directories()
        await self._propose(res, value, prev_exist)

    async def _delete(self, res: str) -> None:
        await self._ensure_directories()
        await self._member.v2_propose(V2Request(Method.DELETE, PERMS_PREFIX + res, prev_exist=True))

    def _names(self, res: str) -> list[str] | None:
        try:
            ev = self._local(res)
        except V2Error as e:
            if e.code == codes.KEY_NOT_FOUND:
                return None
            raise
        return sorted(n.key.rsplit("/", 1)[-1] for n in ev.node.nodes or ())

    # -- users ---------------------------------------------------------------------------------

    def all_users(self) -> list[str]:
        return self._names("/users") or []

    async def _get_user(self, name: str, quorum: bool) -> User:
        with _tree_error(codes.KEY_NOT_FOUND, 404, f"User {name} does not exist."):
            ev = await self._request("/users/" + name, quorum)
        return _user(ev)

    def get_user(self, name: str) -> User:
        """The user as this member's tree has it (no raft round)."""
        with _tree_error(codes.KEY_NOT_FOUND, 404, f"User {name} does not exist."):
            ev = self._local("/users/" + name)
        return _user(ev)

    async def create_user(self, user: User) -> User:
        if user.user == ROOT_USER:
            user = with_root_role(user)
        if not user.password:
            raise auth_error(400, f"Cannot create user {user.user} with an empty password")
        hashed = User(user.user, await _hash(user.password), user.roles, user.grant, user.revoke)
        with _tree_error(codes.NODE_EXIST, 409, f"User {user.user} already exists."):
            await self._set("/users/" + user.user, user_json(hashed), prev_exist=False)
        self._log("created a user", user_name=user.user)
        return hashed

    async def create_or_update_user(self, user: User) -> tuple[User, bool]:
        try:
            await self._get_user(user.user, True)
        except AuthError:
            return await self.create_user(user), True
        return await self.update_user(user), False

    async def update_user(self, user: User) -> User:
        # (etcd means to answer "User <name> doesn't exist." but the lookup's own error,
        # already an auth error, gets through)
        old = await self._get_user(user.user, True)
        new_hash = await _hash(user.password) if user.password else None
        new = merge_user(old, user, new_hash)
        if new == old:
            raise auth_error(400, "User not updated. Use grant/revoke/password to update the user.")
        await self._set("/users/" + user.user, user_json(new), prev_exist=True)
        self._log("updated a user", user_name=user.user)
        return new

    async def delete_user(self, name: str) -> None:
        if self.auth_enabled() and name == ROOT_USER:
            raise auth_error(403, "Cannot delete root user while auth is enabled.")
        with _tree_error(codes.KEY_NOT_FOUND, 404, f"User {name} does not exist"):
            await self._delete("/users/" + name)
        self._log("deleted a user", user_name=name)

    # -- roles ---------------------------------------------------------------------------------

    def all_roles(self) -> list[str]:
        return sorted([ROOT_ROLE, *(self._names("/roles") or ())])

    async def _get_role(self, name: str, quorum: bool) -> Role:
        if name == ROOT_ROLE:
            return ROOT_ROLE_VALUE
        with _tree_error(codes.KEY_NOT_FOUND, 404, f"Role {name} does not exist."):
            ev = await self._request("/roles/" + name, quorum)
        return decode_role(ev.node.value or "")

    def get_role(self, name: str) -> Role:
        if name == ROOT_ROLE:
            return ROOT_ROLE_VALUE
        with _tree_error(codes.KEY_NOT_FOUND, 404, f"Role {name} does not exist."):
            ev = self._local("/roles/" + name)
        return decode_role(ev.node.value or "")

    async def create_role(self, role: Role) -> None:
        if role.role == ROOT_ROLE:
            raise auth_error(403, f"Cannot modify role {role.role}: is root role.")
        with _tree_error(codes.NODE_EXIST, 409, f"Role {role.role} already exists."):
            await self._set("/roles/" + role.role, role_json(role), prev_exist=False)
        self._log("created a new role", role_name=role.role)

    async def delete_role(self, name: str) -> None:
        if name == ROOT_ROLE:
            raise auth_error(403, f"Cannot modify role {name}: is root role.")
        with _tree_error(codes.KEY_NOT_FOUND, 404, f"Role {name} doesn't exist."):
            await self._delete("/roles/" + name)
        self._log("delete a new role", role_name=name)  # etcd's words

    async def update_role(self, role: Role) -> Role:
        if role.role == ROOT_ROLE:
            raise auth_error(403, f"Cannot modify role {role.role}: is root role.")
        old = await self._get_role(role.role, True)  # (its error, as update_user's)
        new = merge_role(old, role)
        if new == old:
            raise auth_error(400, "Role not updated. Use grant/revoke to update the role.")
        await self._set("/roles/" + role.role, role_json(new), prev_exist=True)
        self._log("updated a new role", role_name=role.role)
        return new

    # -- the switch ----------------------------------------------------------------------------

    def auth_enabled(self) -> bool:
        if self._member.v2 is None:
            return False
        try:
            ev = self._local("/enabled")
        except V2Error:
            return False
        try:
            return json.loads(ev.node.value or "") is True
        except ValueError:
            return False

    async def enable(self) -> None:
        if self.auth_enabled():
            raise auth_error(409, "already enabled")
        try:
            await self._get_user(ROOT_USER, True)
        except (AuthError, V2Error):
            raise auth_error(409, "No root user available, please create one") from None
        try:
            await self._get_role(GUEST_ROLE, True)
        except (AuthError, V2Error):
            self._log("no guest role access found; creating default", role_name=GUEST_ROLE)
            await self.create_role(GUEST_ROLE_VALUE)
        await self._set("/enabled", "true", prev_exist=True)
        self._log("enabled auth")

    async def disable(self) -> None:
        if not self.auth_enabled():
            raise auth_error(409, "already disabled")
        await self._set("/enabled", "false", prev_exist=True)
        self._log("disabled auth")

    # -- passwords -----------------------------------------------------------------------------

    async def check_password(self, user: User, password: str) -> bool:
        digest = hashlib.sha256(
            user.password.encode() + b"\x00" + password.encode("utf-8", "surrogateescape")
        ).digest()
        if self._checked.get(digest):
            return True
        ok = await asyncio.to_thread(_checkpw, user.password, password)
        if ok:
            if len(self._checked) >= _CHECKED_MAX:
                self._checked.clear()
            self._checked[digest] = True
        return ok

    def _log(self, msg: str, **fields: Any) -> None:
        log = getattr(self._member, "log", None)
        if log is not None:
            log.info(msg, **fields)


@contextlib.contextmanager
def _tree_error(code: int, status: int, message: str) -> Iterator[None]:
    """Turns the tree's error ``code`` (no such node, the node exists) into the auth error
    ``status`` with etcd's ``message``; any other error goes through as it is."""
    try:
        yield
    except V2Error as e:
        if e.code == code:
            raise auth_error(status, message) from None
        raise


def _user(ev: Any) -> User:
    """The user stored in the node of ``ev`` (``root`` always has the root role)."""
    user = decode_user(ev.node.value or "")
    return with_root_role(user) if user.user == ROOT_USER else user


async def _hash(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


def _checkpw(hashed: str, password: str) -> bool:
    # Go's bcrypt compares only the first 72 bytes (the Blowfish key schedule's); Python's
    # refuses a longer password instead.
    raw = password.encode("utf-8", "surrogateescape")[:72]
    try:
        return bcrypt.checkpw(raw, hashed.encode())
    except ValueError:
        return False
