"""etcd's v2 auth model: users, roles, their JSON, merges and key permissions, sans I/O.

Theory of operation
-------------------
etcd 3.5 serves v2 auth (``/v2/auth/...``) with ``--enable-v2``, and keeps its data in the v2
tree itself, under ``/2`` (``/2/enabled``, ``/2/users/<name>``, ``/2/roles/<name>``, each
value a JSON document): every change is an ordinary v2 write that goes through raft, so the
tree's index moves as etcd's does and the data is as durable and replicated as the tree. The
member's side (``petcd.server.v2auth``) reads and writes those nodes; this module is what
they mean:

- ``User`` and ``Role`` as etcd's structs, decoded from and encoded to JSON the way Go's
  ``encoding/json`` does it for them (field names matched case-insensitively, unknown fields
  ignored, ``null`` and an empty list kept apart because etcd compares users and roles with
  ``reflect.DeepEqual``, zero ``grant``/``revoke``/``password`` left out);
- ``merge_user`` and ``merge_role``: an update (grant, revoke, new password) applied to the
  stored value, with etcd's refusals (duplicate grants, revoking a role not granted);
- ``Role.has_key_access`` and ``has_recursive_access``: etcd's patterns (``/foo`` is that
  key, ``/foo/*`` every key starting with ``/foo/``; a recursive request needs a ``*``
  pattern), the built-in ``root`` role (everything) and the default ``guest`` role that
  enabling auth creates (everything, until an administrator narrows it).

Password hashing is the caller's (bcrypt, in a worker thread): ``merge_user`` takes the new
hash already made. Expected refusals are ``AuthError`` with etcd's HTTP status and message
(``auth: ...``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PERMS_PREFIX = "/2"
ROOT_ROLE = "root"
GUEST_ROLE = "guest"
ROOT_USER = "root"

Strings = tuple[str, ...] | None  # Go's []string: None is nil (JSON null), () is empty


class AuthError(Exception):
    """An expected refusal: etcd's ``v2auth.Error`` (HTTP ``status``, ``auth: ...`` text)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def auth_error(status: int, text: str) -> AuthError:
    return AuthError(status, "auth: " + text)


class BadJSON(ValueError):
    """A body Go's ``json.Decoder`` would not decode into the struct."""


@dataclass(frozen=True, slots=True)
class RW:
    read: Strings = None
    write: Strings = None

    def is_empty(self) -> bool:
        return not self.read and not self.write


@dataclass(frozen=True, slots=True)
class Role:
    role: str = ""
    permissions: RW = RW()  # etcd's Permissions{KV: RWPermission}
    grant: RW | None = None
    revoke: RW | None = None

    def has_key_access(self, key: str, write: bool) -> bool:
        if self.role == ROOT_ROLE:
            return True
        return any(_simple_match(p, key) for p in _patterns(self.permissions, write))

    def has_recursive_access(self, key: str, write: bool) -> bool:
        if self.role == ROOT_ROLE:
            return True
        return any(_prefix_match(p, key) for p in _patterns(self.permissions, write))


@dataclass(frozen=True, slots=True)
class User:
    user: str = ""
    password: str = ""
    roles: Strings = None
    grant: Strings = None
    revoke: Strings = None


ROOT_ROLE_VALUE = Role(ROOT_ROLE, RW(("/*",), ("/*",)))
GUEST_ROLE_VALUE = Role(GUEST_ROLE, RW(("/*",), ("/*",)))


def _patterns(perms: RW, write: bool) -> tuple[str, ...]:
    return (perms.write if write else perms.read) or ()


def _simple_match(pattern: str, key: str) -> bool:
    if not pattern:  # etcd indexes pattern[len-1] and panics; nothing matches here
        return False
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern


def _prefix_match(pattern: str, key: str) -> bool:
    return pattern.endswith("*") and key.startswith(pattern[:-1])


def with_root_role(u: User) -> User:
    """etcd attaches the root role to the user named root whenever it reads or creates it."""
    if u.roles is not None and ROOT_ROLE in u.roles:
        return u
    return dataclasses.replace(u, roles=(*(u.roles or ()), ROOT_ROLE))


# -- merges (etcd's User.merge, Role.merge) -----------------------------------------------------


def merge_user(old: User, new: User, new_hash: str | None) -> User:
    """``old`` with ``new``'s grant, revoke and password (``new_hash``: its bcrypt hash)."""
    if old.user != new.user:
        raise auth_error(
            409, f"Merging user data with conflicting usernames: {old.user} {new.user}"
        )
    roles = set(old.roles or ())
    for g in new.grant or ():
        if g in roles:
            raise auth_error(409, f"Granting duplicate role {g} for user {new.user}")
        roles.add(g)
    for r in new.revoke or ():
        if r not in roles:
            raise auth_error(409, f"Revoking ungranted role {r} for user {new.user}")
        roles.discard(r)
    password = new_hash if new.password else old.password
    return User(old.user, password or "", tuple(sorted(roles)))


def merge_role(old: Role, new: Role) -> Role:
    if old.role != new.role:
        raise auth_error(409, f"Merging role with conflicting names: {old.role} {new.role}")
    perms = old.permissions
    if new.grant is not None:
        perms = RW(
            _grant(perms.read, new.grant.read, "read"),
            _grant(perms.write, new.grant.write, "write"),
        )
    if new.revoke is not None:
        perms = RW(_revoke(perms.read, new.revoke.read), _revoke(perms.write, new.revoke.write))
    return Role(old.role, perms)


def _grant(have: Strings, add: Strings, what: str) -> tuple[str, ...]:
    out = set(have or ())
    for p in add or ():
        if p in out:
            raise auth_error(409, f"Granting duplicate {what} permission {p}")
        out.add(p)
    return tuple(sorted(out))


def _revoke(have: Strings, remove: Strings) -> tuple[str, ...]:
    out = set(have or ())
    out.difference_update(remove or ())  # revoking what was not granted is no error
    return tuple(sorted(out))


# -- JSON as Go's encoding/json -------------------------------------------------------------


def _go_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        out = out.replace(a, b)
    out = out.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return out.replace("\\b", "\\u0008").replace("\\f", "\\u000c")


def _strings_json(v: Strings) -> str:
    if v is None:
        return "null"
    return "[" + ",".join(_go_string(s) for s in v) + "]"


def rw_json(p: RW) -> str:
    return f'{{"kv":{{"read":{_strings_json(p.read)},"write":{_strings_json(p.write)}}}}}'


def role_json(r: Role) -> str:
    out = f'{{"role":{_go_string(r.role)},"permissions":{rw_json(r.permissions)}'
    if r.grant is not None:
        out += f',"grant":{rw_json(r.grant)}'
    if r.revoke is not None:
        out += f',"revoke":{rw_json(r.revoke)}'
    return out + "}"


def user_json(u: User) -> str:
    out = '{"user":' + _go_string(u.user)
    if u.password:
        out += ',"password":' + _go_string(u.password)
    out += ',"roles":' + _strings_json(u.roles)
    if u.grant:
        out += ',"grant":' + _strings_json(u.grant)
    if u.revoke:
        out += ',"revoke":' + _strings_json(u.revoke)
    return out + "}"


def user_with_roles_json(name: str, roles: Sequence[Role]) -> str:
    """etcd's userWithRoles: the user's name and its roles in full (left out when none)."""
    out = '{"user":' + _go_string(name)
    if roles:
        out += ',"roles":[' + ",".join(role_json(r) for r in roles) + "]"
    return out + "}"


def _first_value(text: str | bytes) -> Any:
    """The first JSON value of ``text``, as Go's ``json.Decoder.Decode`` reads it (what
    follows it is not looked at)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    s = text.lstrip(" \t\r\n")
    try:
        value, _ = json.JSONDecoder(strict=True).raw_decode(s)
    except ValueError as e:
        raise BadJSON(str(e)) from None
    return value


def _fields(obj: Any, names: Sequence[str]) -> dict[str, Any]:
    """Go's matching of JSON object keys to struct fields (exact, else case-insensitive);
    a later key for the same field wins. ``null`` is dropped (Go leaves the field)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise BadJSON("not an object")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        field = key if key in names else next((n for n in names if n.lower() == key.lower()), None)
        if field is not None:
            out[field] = value
    return {k: v for k, v in out.items() if v is not None}


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise BadJSON("not a string")
    return v


def _strings(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise BadJSON("not an array")
    return tuple("" if s is None else _string(s) for s in v)


def _rw(v: Any) -> RW:
    kv = _fields(_fields(v, ("kv",)).get("kv"), ("read", "write"))
    return RW(
        _strings(kv["read"]) if "read" in kv else None,
        _strings(kv["write"]) if "write" in kv else None,
    )


def decode_user(text: str | bytes) -> User:
    f = _fields(_first_value(text), ("user", "password", "roles", "grant", "revoke"))
    return User(
        _string(f.get("user", "")),
        _string(f.get("password", "")),
        *(_strings(f[k]) if k in f else None for k in ("roles", "grant", "revoke")),
    )


def decode_role(text: str | bytes) -> Role:
    value = _first_value(text)
    f = _fields(value, ("role", "permissions", "grant", "revoke"))
    # A null "permissions" leaves the zero value; a null grant is a nil pointer.
    return Role(
        _string(f.get("role", "")),
        _rw(f["permissions"]) if "permissions" in f else RW(),
        _rw(f["grant"]) if "grant" in f else None,
        _rw(f["revoke"]) if "revoke" in f else None,
    )
