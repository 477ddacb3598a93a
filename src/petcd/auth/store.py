"""The auth store: users, roles, key-range permissions and the auth revision (etcd's authStore).

Theory of operation
-------------------
State lives in three backend buckets, written only while a raft entry is applied (so in the same
backend batch as the entry's consistent index):

- ``auth``: ``authEnabled`` (one byte, 1 or 0) and ``authRevision`` (u64 big-endian);
- ``authUsers``: user name (UTF-8) -> JSON ``{"password": base64 bcrypt hash, "roles":
  [sorted names], "no_password": bool}``;
- ``authRoles``: role name (UTF-8) -> JSON ``{"perms": [[type, base64 key, base64 range_end],
  ...]}`` sorted by key (type 0 READ, 1 WRITE, 2 READWRITE, etcd's ``authpb.Permission``).

Everything is mirrored in memory at ``recover()`` (open, snapshot install), and so are the
merged permissions of each user: per user two sorted interval lists (read, write) built from
the roles' permissions, rebuilt after every change (etcd's ``rangePermCache``).

Semantics follow etcd 3.5's ``server/auth/store.go``: every change bumps the auth revision except
``AuthEnable`` (which needs the ``root`` user with the ``root`` role); with auth on, the ``root``
user cannot be deleted nor lose the ``root`` role, and the ``root`` role cannot be deleted.
A permission ``[key, range_end)``: an empty ``range_end`` is the one key, ``\\0`` means "to the
end of the key space". A check of ``[key, range_end)`` passes when the union of the user's
intervals of that type covers it; a one-key check when some interval holds the key. The
``root`` role may do anything.

Checks take an ``AuthInfo`` (user, revision it was looked up at): an info older than the store's
revision fails with "revision of auth store is old", as etcd's ``isOpPermitted``; ``None`` (no
token, no certificate) fails with "user name is empty".

Password hashing (bcrypt, ``--bcrypt-cost``) is done by the member that serves the request,
before proposing, so that the raft entry carries a hash, never a password.
"""

from __future__ import annotations

import base64
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import bcrypt

from petcd.auth import errors
from petcd.auth.tokens import AuthInfo, SimpleTokens, TokenProvider

AUTH_BUCKET = "auth"
USERS_BUCKET = "authUsers"
ROLES_BUCKET = "authRoles"
ENABLED_KEY = b"authEnabled"
REVISION_KEY = b"authRevision"

ROOT = "root"  # both the root user and the root role
READ, WRITE, READWRITE = 0, 1, 2
_BCRYPT_MAX = 72  # bcrypt uses at most this many bytes of a password


class AuthOp(enum.IntEnum):
    ENABLE = 1
    DISABLE = 2
    USER_ADD = 3
    USER_DELETE = 4
    USER_CHANGE_PASSWORD = 5
    USER_GRANT_ROLE = 6
    USER_REVOKE_ROLE = 7
    ROLE_ADD = 8
    ROLE_DELETE = 9
    ROLE_GRANT_PERMISSION = 10
    ROLE_REVOKE_PERMISSION = 11
    AUTHENTICATE = 12


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """One auth change, as proposed through raft. Unused fields keep their defaults.

    ``name`` is the user (user ops, AUTHENTICATE) or the role (role ops); ``role`` the role a
    user is granted or revoked; ``password_hash`` a bcrypt hash; ``token`` the simple-token
    prefix of an AUTHENTICATE."""

    op: AuthOp
    name: str = ""
    role: str = ""
    password_hash: bytes = b""
    no_password: bool = False
    perm_type: int = 0
    key: bytes = b""
    range_end: bytes = b""
    token: str = ""


class Bucketed(Protocol):
    def put(self, bucket: str, key: bytes, value: bytes) -> None: ...

    def delete(self, bucket: str, key: bytes) -> None: ...

    def get(self, bucket: str, key: bytes) -> bytes | None: ...

    def iterate(self, bucket: str) -> Any: ...


@dataclass(slots=True)
class User:
    name: str
    password: bytes = b""
    roles: list[str] = field(default_factory=list)
    no_password: bool = False

    def encode(self) -> bytes:
        record = {
            "password": base64.b64encode(self.password).decode(),
            "roles": self.roles,
            "no_password": self.no_password,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, name: str, data: bytes) -> User:
        r = json.loads(data)
        return cls(name, base64.b64decode(r["password"]), list(r["roles"]), bool(r["no_password"]))


@dataclass(frozen=True, slots=True)
class Permission:
    perm_type: int
    key: bytes
    range_end: bytes


@dataclass(slots=True)
class Role:
    name: str
    perms: list[Permission] = field(default_factory=list)

    def encode(self) -> bytes:
        b64 = base64.b64encode
        perms = [[p.perm_type, b64(p.key).decode(), b64(p.range_end).decode()] for p in self.perms]
        return json.dumps({"perms": perms}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, name: str, data: bytes) -> Role:
        d = base64.b64decode
        perms = [Permission(int(t), d(k), d(e)) for t, k, e in json.loads(data)["perms"]]
        return cls(name, perms)


# An interval [start, end) of keys; end None: to the end of the key space.
_Interval = tuple[bytes, bytes | None]


def _interval(key: bytes, range_end: bytes) -> _Interval:
    if not range_end:
        return key, key + b"\x00"  # one key
    if range_end == b"\x00":
        return key, None
    return key, range_end


def _covers(intervals: list[_Interval], key: bytes, range_end: bytes) -> bool:
    """Whether the union of ``intervals`` (sorted by start) covers the checked range."""
    if not range_end:
        for start, end in intervals:
            if start > key:
                return False
            if end is None or key < end:
                return True
        return False
    want_end = None if range_end == b"\x00" else range_end
    at = key
    for start, end in intervals:
        if start > at:
            return False
        if end is None:
            return True
        if end > at:
            at = end
            if want_end is not None and at >= want_end:
                return True
    return False


def valid_permission_range(key: bytes, range_end: bytes) -> bool:
    """etcd's isValidPermissionRange: a key, and an end after it (or none, or ``\\0``)."""
    if not key:
        return False
    return not range_end or range_end == b"\x00" or key < range_end


def hash_password(password: str, cost: int) -> bytes:
    """bcrypt hash of ``password`` (slow by design: run it off the event loop)."""
    return bytes(bcrypt.hashpw(password.encode()[:_BCRYPT_MAX], bcrypt.gensalt(cost)))


def password_matches(password: str, hashed: bytes) -> bool:
    """bcrypt comparison (slow by design: run it off the event loop)."""
    try:
        return bool(bcrypt.checkpw(password.encode()[:_BCRYPT_MAX], hashed))
    except ValueError:
        return False


class AuthStore:
    """Users, roles and permissions over a backend; see the module docstring."""

    def __init__(self, backend: Bucketed, tokens: TokenProvider, bcrypt_cost: int = 10) -> None:
        self._backend = backend
        self.tokens = tokens
        self.bcrypt_cost = bcrypt_cost
        self.enabled = False
        self.revision = 0
        self._users: dict[str, User] = {}
        self._roles: dict[str, Role] = {}
        self._perms: dict[str, tuple[list[_Interval], list[_Interval]]] = {}

    # -- state -------------------------------------------------------------------------------

    def recover(self, backend: Bucketed | None = None) -> None:
        """(Re)load everything from the backend (at open, and after a snapshot install)."""
        if backend is not None:
            self._backend = backend
        b = self._backend
        self.enabled = b.get(AUTH_BUCKET, ENABLED_KEY) == b"\x01"
        raw = b.get(AUTH_BUCKET, REVISION_KEY)
        self.revision = int.from_bytes(raw, "big") if raw else 0
        self._users = {
            bytes(k).decode(): User.decode(bytes(k).decode(), bytes(v))
            for k, v in b.iterate(USERS_BUCKET)
        }
        self._roles = {
            bytes(k).decode(): Role.decode(bytes(k).decode(), bytes(v))
            for k, v in b.iterate(ROLES_BUCKET)
        }
        self._refresh_perms()
        if self.enabled:
            self.tokens.enable()
        else:
            self.tokens.disable()

    def _refresh_perms(self) -> None:
        perms: dict[str, tuple[list[_Interval], list[_Interval]]] = {}
        for user in self._users.values():
            reads: list[_Interval] = []
            writes: list[_Interval] = []
            for role_name in user.roles:
                role = self._roles.get(role_name)
                if role is None:
                    continue
                for p in role.perms:
                    ivl = _interval(p.key, p.range_end)
                    if p.perm_type in (READ, READWRITE):
                        reads.append(ivl)
                    if p.perm_type in (WRITE, READWRITE):
                        writes.append(ivl)
            reads.sort(key=lambda i: i[0])
            writes.sort(key=lambda i: i[0])
            perms[user.name] = (reads, writes)
        self._perms = perms

    def _commit_revision(self) -> None:
        self.revision += 1
        self._backend.put(AUTH_BUCKET, REVISION_KEY, self.revision.to_bytes(8, "big"))

    def _put_user(self, user: User) -> None:
        self._users[user.name] = user
        self._backend.put(USERS_BUCKET, user.name.encode(), user.encode())

    def _put_role(self, role: Role) -> None:
        self._roles[role.name] = role
        self._backend.put(ROLES_BUCKET, role.name.encode(), role.encode())

    # -- apply (raft) ------------------------------------------------------------------------

    def apply(self, req: AuthRequest, index: int) -> str | None:
        """Apply one change; returns the token of an AUTHENTICATE, else None. Raises an
        ``AuthError`` (having changed nothing) when etcd's store refuses the change."""
        op = req.op
        if op == AuthOp.AUTHENTICATE:
            return self._authenticate(req, index)
        if op == AuthOp.ENABLE:
            self._enable()
        elif op == AuthOp.DISABLE:
            if self.enabled:
                self._backend.put(AUTH_BUCKET, ENABLED_KEY, b"\x00")
                self._commit_revision()
                self.enabled = False
                self.tokens.disable()
        elif op in (AuthOp.USER_ADD, AuthOp.USER_DELETE, AuthOp.USER_CHANGE_PASSWORD):
            self._user_change(req)
        elif op in (AuthOp.USER_GRANT_ROLE, AuthOp.USER_REVOKE_ROLE):
            self._user_roles(req)
        else:
            self._role_change(req)
        return None

    def _enable(self) -> None:
        if self.enabled:
            return
        root = self._users.get(ROOT)
        if root is None:
            raise errors.RootUserNotExistError()
        if ROOT not in root.roles:
            raise errors.RootRoleNotExistError()
        self._backend.put(AUTH_BUCKET, ENABLED_KEY, b"\x01")
        self.enabled = True
        self.tokens.enable()
        self._refresh_perms()

    def _authenticate(self, req: AuthRequest, index: int) -> str:
        if not self.enabled:
            raise errors.AuthNotEnabledError()
        user = self._users.get(req.name)
        if user is None or user.no_password:
            raise errors.AuthFailedError()
        tokens = self.tokens
        if isinstance(tokens, SimpleTokens):
            return tokens.assign(req.name, req.token, index)
        return tokens.assign(req.name, self.revision)

    def _user_change(self, req: AuthRequest) -> None:
        name = req.name
        if req.op == AuthOp.USER_ADD:
            if not name:
                raise errors.UserEmptyError()
            if name in self._users:
                raise errors.UserAlreadyExistError()
            password = b"" if req.no_password else req.password_hash
            self._put_user(User(name, password, [], req.no_password))
        elif req.op == AuthOp.USER_DELETE:
            if self.enabled and name == ROOT:
                raise errors.InvalidAuthMgmtError()
            if name not in self._users:
                raise errors.UserNotFoundError()
            del self._users[name]
            self._backend.delete(USERS_BUCKET, name.encode())
            self.tokens.invalidate_user(name)
        else:
            user = self._users.get(name)
            if user is None:
                raise errors.UserNotFoundError()
            password = b"" if user.no_password else req.password_hash
            self._put_user(User(name, password, user.roles, user.no_password))
            self.tokens.invalidate_user(name)
        self._commit_revision()
        self._refresh_perms()

    def _user_roles(self, req: AuthRequest) -> None:
        user = self._users.get(req.name)
        if req.op == AuthOp.USER_GRANT_ROLE:
            if user is None:
                raise errors.UserNotFoundError()
            if req.role != ROOT and req.role not in self._roles:
                raise errors.RoleNotFoundError()
            if req.role in user.roles:
                return  # etcd: granting a role twice is ignored (no revision bump)
            roles = sorted([*user.roles, req.role])
        else:
            if self.enabled and req.name == ROOT and req.role == ROOT:
                raise errors.InvalidAuthMgmtError()
            if user is None:
                raise errors.UserNotFoundError()
            if req.role not in user.roles:
                raise errors.RoleNotGrantedError()
            roles = [r for r in user.roles if r != req.role]
        self._put_user(User(user.name, user.password, roles, user.no_password))
        self._commit_revision()
        self._refresh_perms()

    def _role_change(self, req: AuthRequest) -> None:
        name, op = req.name, req.op
        if op == AuthOp.ROLE_ADD:
            if not name:
                raise errors.RoleEmptyError()
            if name in self._roles:
                raise errors.RoleAlreadyExistError()
            self._put_role(Role(name))
            self._commit_revision()
            return
        if op == AuthOp.ROLE_DELETE:
            if self.enabled and name == ROOT:
                raise errors.InvalidAuthMgmtError()
            if name not in self._roles:
                raise errors.RoleNotFoundError()
            del self._roles[name]
            self._backend.delete(ROLES_BUCKET, name.encode())
            for user in list(self._users.values()):
                if name in user.roles:
                    roles = [r for r in user.roles if r != name]
                    self._put_user(User(user.name, user.password, roles, user.no_password))
        elif op == AuthOp.ROLE_GRANT_PERMISSION:
            if not valid_permission_range(req.key, req.range_end):
                raise errors.InvalidAuthMgmtError()
            role = self._roles.get(name)
            if role is None:
                raise errors.RoleNotFoundError()
            # etcd looks only at the first permission with this key: the same range there is
            # updated in place, anything else is added (and kept sorted by key).
            perms = list(role.perms)
            new = Permission(req.perm_type, req.key, req.range_end)
            i = next((i for i, p in enumerate(perms) if p.key >= req.key), len(perms))
            if i < len(perms) and (perms[i].key, perms[i].range_end) == (req.key, req.range_end):
                perms[i] = new
            else:
                perms.append(new)
                perms.sort(key=lambda p: p.key)
            self._put_role(Role(name, perms))
        else:
            role = self._roles.get(name)
            if role is None:
                raise errors.RoleNotFoundError()
            kept = [p for p in role.perms if (p.key, p.range_end) != (req.key, req.range_end)]
            if len(kept) == len(role.perms):
                raise errors.PermissionNotGrantedError()
            self._put_role(Role(name, kept))
        self._commit_revision()
        self._refresh_perms()

    # -- reads -------------------------------------------------------------------------------

    def user(self, name: str) -> User:
        user = self._users.get(name)
        if user is None:
            raise errors.UserNotFoundError()
        return user

    def role(self, name: str) -> Role:
        role = self._roles.get(name)
        if role is None:
            raise errors.RoleNotFoundError()
        return role

    def user_names(self) -> list[str]:
        return sorted(self._users)

    def role_names(self) -> list[str]:
        return sorted(self._roles)

    def has_role(self, user: str, role: str) -> bool:
        u = self._users.get(user)
        return u is not None and role in u.roles

    def password_hash(self, name: str) -> tuple[bytes, int]:
        """The user's bcrypt hash and the revision it was read at (etcd's CheckPassword, up to
        the comparison, which the caller makes off the event loop)."""
        if not self.enabled:
            raise errors.AuthNotEnabledError()
        user = self._users.get(name)
        if user is None or user.no_password:
            raise errors.AuthFailedError()
        return user.password, self.revision

    # -- checks ------------------------------------------------------------------------------

    def info_from_token(self, token: str) -> AuthInfo:
        info = self.tokens.info(token, self.revision)
        if info is None:
            raise errors.InvalidAuthTokenError()
        return info

    def _permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes, write: bool) -> None:
        if not self.enabled:
            return
        if info is None or info.revision == 0:
            raise errors.UserEmptyError()
        if info.revision < self.revision:
            raise errors.AuthOldRevisionError()
        user = self._users.get(info.username)
        if user is None:
            raise errors.PermissionDeniedError()
        if ROOT in user.roles:
            return
        reads, writes = self._perms.get(info.username, ([], []))
        if not _covers(writes if write else reads, key, range_end):
            raise errors.PermissionDeniedError()

    def check_range(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._permitted(info, key, range_end, write=False)

    def check_put(self, info: AuthInfo | None, key: bytes) -> None:
        self._permitted(info, key, b"", write=True)

    def check_delete_range(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._permitted(info, key, range_end, write=True)

    def check_admin(self, info: AuthInfo | None) -> None:
        """etcd's IsAdminPermitted (which does not look at the revision)."""
        if not self.enabled:
            return
        if info is None or not info.username:
            raise errors.UserEmptyError()
        user = self._users.get(info.username)
        if user is None:
            raise errors.UserNotFoundError()
        if ROOT not in user.roles:
            raise errors.PermissionDeniedError()

    def is_admin(self, info: AuthInfo | None) -> bool:
        try:
            self.check_admin(info)
        except errors.AuthError:
            return False
        return True
