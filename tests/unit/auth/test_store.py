"""petcd.auth.store: users, roles, permissions and the auth revision, as etcd 3.5's store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.auth import errors
from petcd.auth.store import (
    READ,
    READWRITE,
    WRITE,
    AuthOp,
    AuthRequest,
    AuthStore,
    hash_password,
    password_matches,
)
from petcd.auth.tokens import AuthInfo, SimpleTokens


class Buckets:
    def __init__(self) -> None:
        self.data: dict[str, dict[bytes, bytes]] = {}

    def put(self, bucket: str, key: bytes, value: bytes) -> None:
        self.data.setdefault(bucket, {})[key] = value

    def delete(self, bucket: str, key: bytes) -> None:
        self.data.get(bucket, {}).pop(key, None)

    def get(self, bucket: str, key: bytes) -> bytes | None:
        return self.data.get(bucket, {}).get(key)

    def iterate(self, bucket: str) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted(self.data.get(bucket, {}).items()))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[AuthStore, Buckets, Clock]:
    b, clock = Buckets(), Clock()
    store = AuthStore(b, SimpleTokens(300, clock=clock), bcrypt_cost=4)
    store.recover()
    return store, b, clock


def apply(store: AuthStore, op: AuthOp, index: int = 1, **kw: Any) -> str | None:
    return store.apply(AuthRequest(op, **kw), index)


def with_root(store: AuthStore) -> None:
    apply(store, AuthOp.USER_ADD, name="root", password_hash=b"x")
    apply(store, AuthOp.ROLE_ADD, name="root")
    apply(store, AuthOp.USER_GRANT_ROLE, name="root", role="root")


def test_enable_needs_the_root_user_with_the_root_role() -> None:
    store, _, _ = make()
    with pytest.raises(errors.RootUserNotExistError):
        apply(store, AuthOp.ENABLE)
    apply(store, AuthOp.USER_ADD, name="root", password_hash=b"x")
    with pytest.raises(errors.RootRoleNotExistError):
        apply(store, AuthOp.ENABLE)
    # etcd lets the root role be granted before it exists
    apply(store, AuthOp.USER_GRANT_ROLE, name="root", role="root")
    revision = store.revision
    apply(store, AuthOp.ENABLE)
    assert store.enabled and store.revision == revision  # enabling does not bump it
    apply(store, AuthOp.DISABLE)
    assert not store.enabled and store.revision == revision + 1


def test_changes_bump_the_revision_and_refusals_change_nothing() -> None:
    store, b, _ = make()
    apply(store, AuthOp.USER_ADD, name="u", password_hash=b"h")
    assert store.revision == 1
    snapshot = {k: dict(v) for k, v in b.data.items()}
    for op, kw, err in [
        (AuthOp.USER_ADD, {"name": "u"}, errors.UserAlreadyExistError),
        (AuthOp.USER_ADD, {"name": ""}, errors.UserEmptyError),
        (AuthOp.USER_DELETE, {"name": "x"}, errors.UserNotFoundError),
        (AuthOp.USER_CHANGE_PASSWORD, {"name": "x"}, errors.UserNotFoundError),
        (AuthOp.USER_GRANT_ROLE, {"name": "u", "role": "nope"}, errors.RoleNotFoundError),
        (AuthOp.USER_REVOKE_ROLE, {"name": "u", "role": "r"}, errors.RoleNotGrantedError),
        (AuthOp.ROLE_ADD, {"name": ""}, errors.RoleEmptyError),
        (AuthOp.ROLE_DELETE, {"name": "nope"}, errors.RoleNotFoundError),
        (AuthOp.ROLE_GRANT_PERMISSION, {"name": "r", "key": b""}, errors.InvalidAuthMgmtError),
        (
            AuthOp.ROLE_GRANT_PERMISSION,
            {"name": "r", "key": b"b", "range_end": b"a"},
            errors.InvalidAuthMgmtError,
        ),
        (AuthOp.ROLE_GRANT_PERMISSION, {"name": "r", "key": b"a"}, errors.RoleNotFoundError),
        (AuthOp.ROLE_REVOKE_PERMISSION, {"name": "r", "key": b"a"}, errors.RoleNotFoundError),
        (AuthOp.AUTHENTICATE, {"name": "u"}, errors.AuthNotEnabledError),
    ]:
        with pytest.raises(err):
            apply(store, op, **kw)
    assert store.revision == 1
    assert b.data == snapshot
    apply(store, AuthOp.ROLE_ADD, name="r")
    with pytest.raises(errors.PermissionNotGrantedError):
        apply(store, AuthOp.ROLE_REVOKE_PERMISSION, name="r", key=b"a")
    apply(store, AuthOp.USER_GRANT_ROLE, name="u", role="r")
    revision = store.revision
    apply(store, AuthOp.USER_GRANT_ROLE, name="u", role="r")  # again: ignored
    assert store.revision == revision


def test_root_is_protected_while_auth_is_on() -> None:
    store, _, _ = make()
    with_root(store)
    apply(store, AuthOp.ENABLE)
    for op, kw in [
        (AuthOp.USER_DELETE, {"name": "root"}),
        (AuthOp.USER_REVOKE_ROLE, {"name": "root", "role": "root"}),
        (AuthOp.ROLE_DELETE, {"name": "root"}),
    ]:
        with pytest.raises(errors.InvalidAuthMgmtError):
            apply(store, op, **kw)
    apply(store, AuthOp.DISABLE)
    apply(store, AuthOp.USER_REVOKE_ROLE, name="root", role="root")
    apply(store, AuthOp.ROLE_DELETE, name="root")
    apply(store, AuthOp.USER_DELETE, name="root")
    assert store.user_names() == [] and store.role_names() == []


def test_deleting_a_role_takes_it_from_its_users() -> None:
    store, _, _ = make()
    apply(store, AuthOp.USER_ADD, name="u", password_hash=b"h")
    apply(store, AuthOp.ROLE_ADD, name="r")
    apply(store, AuthOp.ROLE_ADD, name="s")
    apply(store, AuthOp.USER_GRANT_ROLE, name="u", role="s")
    apply(store, AuthOp.USER_GRANT_ROLE, name="u", role="r")
    assert store.user("u").roles == ["r", "s"]
    apply(store, AuthOp.ROLE_DELETE, name="r")
    assert store.user("u").roles == ["s"]


def test_state_survives_recovery() -> None:
    store, b, _ = make()
    with_root(store)
    apply(store, AuthOp.ROLE_ADD, name="r")
    apply(store, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=READ, key=b"a", range_end=b"c")
    apply(store, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=WRITE, key=b"a")
    apply(store, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=READ, key=b"b")
    # the same range again: as etcd, only the first permission of the key is looked at, so
    # this one is added again; that of b"b" is updated in place
    apply(store, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=READWRITE, key=b"a")
    apply(store, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=WRITE, key=b"b")
    apply(store, AuthOp.USER_ADD, name="nopw", no_password=True, password_hash=b"ignored")
    apply(store, AuthOp.USER_GRANT_ROLE, name="nopw", role="r")
    apply(store, AuthOp.ENABLE)
    again = AuthStore(b, SimpleTokens(300), bcrypt_cost=4)
    again.recover()
    assert (again.enabled, again.revision) == (True, store.revision)
    assert again.user_names() == ["nopw", "root"]
    assert again.user("nopw").no_password and again.user("nopw").password == b""
    assert [(p.perm_type, p.key, p.range_end) for p in again.role("r").perms] == [
        (READ, b"a", b"c"),
        (WRITE, b"a", b""),
        (READWRITE, b"a", b""),
        (WRITE, b"b", b""),
    ]
    info = AuthInfo("nopw", again.revision)
    again.check_put(info, b"a")
    again.check_range(info, b"a", b"")
    again.check_put(info, b"b")
    again.check_range(info, b"ab", b"")
    with pytest.raises(errors.PermissionDeniedError):
        again.check_put(info, b"ab")


def granted(perms: list[tuple[int, bytes, bytes]]) -> tuple[AuthStore, AuthInfo]:
    store, _, _ = make()
    with_root(store)
    apply(store, AuthOp.USER_ADD, name="u", password_hash=b"h")
    apply(store, AuthOp.ROLE_ADD, name="r")
    apply(store, AuthOp.USER_GRANT_ROLE, name="u", role="r")
    for perm_type, key, end in perms:
        apply(
            store, AuthOp.ROLE_GRANT_PERMISSION, name="r", perm_type=perm_type, key=key,
            range_end=end,
        )  # fmt: skip
    apply(store, AuthOp.ENABLE)
    return store, AuthInfo("u", store.revision)


def allowed(store: AuthStore, info: AuthInfo | None, key: bytes, end: bytes = b"") -> bool:
    try:
        store.check_range(info, key, end)
    except errors.PermissionDeniedError:
        return False
    return True


def test_range_checks_need_the_union_of_intervals_to_cover_the_range() -> None:
    store, info = granted(
        [(READ, b"a", b"c"), (READ, b"c", b"e"), (READ, b"g", b""), (READ, b"p", b"\x00")]
    )
    assert allowed(store, info, b"a")
    assert allowed(store, info, b"d")
    assert not allowed(store, info, b"e")
    assert allowed(store, info, b"a", b"e")  # two adjacent intervals
    assert not allowed(store, info, b"a", b"f")
    assert allowed(store, info, b"g")  # a one-key permission
    assert allowed(store, info, b"g", b"g\x00")
    assert not allowed(store, info, b"g", b"h")
    assert not allowed(store, info, b"g\x00")
    assert allowed(store, info, b"q", b"\x00")  # open-ended permission and request
    assert allowed(store, info, b"zzz")
    assert not allowed(store, info, b"o", b"\x00")
    with pytest.raises(errors.PermissionDeniedError):
        store.check_put(info, b"a")  # read only


def test_root_may_do_anything_and_nobody_else_is_admin() -> None:
    store, info = granted([(READWRITE, b"a", b"")])
    root = AuthInfo("root", store.revision)
    store.check_delete_range(root, b"\x00", b"\x00")
    store.check_admin(root)
    with pytest.raises(errors.PermissionDeniedError):
        store.check_admin(info)
    with pytest.raises(errors.UserEmptyError):
        store.check_admin(None)
    with pytest.raises(errors.UserNotFoundError):
        store.check_admin(AuthInfo("ghost", store.revision))


def test_checks_refuse_nobody_and_old_revisions_but_not_with_auth_off() -> None:
    store, info = granted([(READWRITE, b"a", b"")])
    with pytest.raises(errors.UserEmptyError):
        store.check_put(None, b"a")
    apply(store, AuthOp.ROLE_ADD, name="other")
    with pytest.raises(errors.AuthOldRevisionError):
        store.check_put(info, b"a")
    store.check_put(AuthInfo("u", store.revision), b"a")
    with pytest.raises(errors.PermissionDeniedError):
        store.check_put(AuthInfo("ghost", store.revision), b"a")
    apply(store, AuthOp.DISABLE)
    store.check_put(None, b"anything")
    store.check_admin(None)


def test_simple_tokens_expire_and_die_with_their_user() -> None:
    store, _, clock = make()
    with_root(store)
    apply(store, AuthOp.USER_ADD, name="u", password_hash=b"h")
    apply(store, AuthOp.ENABLE)
    token = apply(store, AuthOp.AUTHENTICATE, index=42, name="u", token="abcdefghijklmnop")
    assert token == "abcdefghijklmnop.42"
    assert SimpleTokens.index(token) == 42
    assert store.info_from_token(token) == AuthInfo("u", store.revision)
    clock.now += 299  # each use restarts the TTL
    assert store.info_from_token(token).username == "u"
    clock.now += 299
    assert store.info_from_token(token).username == "u"
    clock.now += 301
    with pytest.raises(errors.InvalidAuthTokenError):
        store.info_from_token(token)
    token = apply(store, AuthOp.AUTHENTICATE, index=43, name="u", token="x")
    apply(store, AuthOp.USER_CHANGE_PASSWORD, name="u", password_hash=b"new")
    with pytest.raises(errors.InvalidAuthTokenError):
        store.info_from_token(token)
    root_token = apply(store, AuthOp.AUTHENTICATE, index=44, name="root", token="y")
    apply(store, AuthOp.DISABLE)
    apply(store, AuthOp.ENABLE)
    with pytest.raises(errors.InvalidAuthTokenError):
        store.info_from_token(str(root_token))
    apply(store, AuthOp.USER_ADD, name="nopw", no_password=True)
    with pytest.raises(errors.AuthFailedError):
        apply(store, AuthOp.AUTHENTICATE, name="nopw", token="z")
    with pytest.raises(errors.AuthFailedError):
        store.password_hash("nopw")


def test_password_hashing() -> None:
    hashed = hash_password("s3cret", 4)
    assert hashed.startswith(b"$2b$04$")
    assert password_matches("s3cret", hashed)
    assert not password_matches("S3cret", hashed)
    assert not password_matches("s3cret", b"not a hash")


def _keys(min_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from([0, 1]), min_size=min_size, max_size=3).map(bytes)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_keys(1), _keys(0)), max_size=5),
    _keys(1),
    _keys(0),
)
def test_range_check_agrees_with_checking_every_key(
    perms: list[tuple[bytes, bytes]], key: bytes, end: bytes
) -> None:
    """Over keys of up to 3 bytes from a 2-letter alphabet: a one-key check is allowed iff
    some permission holds the key; a range check only if every key in it is allowed."""
    clean = [(k, e) for k, e in perms if not e or e == b"\x00" or k < e]
    store, info = granted([(READ, k, e) for k, e in clean])

    def key_ok(k: bytes) -> bool:
        for start, stop in clean:
            if not stop:
                if k == start:
                    return True
            elif start <= k and (stop == b"\x00" or k < stop):
                return True
        return False

    universe = [bytes(t) for n in (1, 2, 3) for t in _words(n)]
    if not end:
        assert allowed(store, info, key) == key_ok(key)
        return
    if end != b"\x00" and end <= key:
        return
    inside = [k for k in universe if k >= key and (end == b"\x00" or k < end)]
    if allowed(store, info, key, end):
        assert all(key_ok(k) for k in inside)


def _words(n: int) -> list[tuple[int, ...]]:
    alphabet = (0, 1)
    out: list[tuple[int, ...]] = [()]
    for _ in range(n):
        out = [(*w, c) for w in out for c in alphabet]
    return out
