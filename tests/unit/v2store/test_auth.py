"""etcd's v2 auth model (petcd.v2store.auth): JSON as Go reads and writes it, merges,
permission patterns."""

from __future__ import annotations

import pytest

from petcd.v2store.auth import (
    GUEST_ROLE_VALUE,
    ROOT_ROLE_VALUE,
    RW,
    AuthError,
    BadJSON,
    Role,
    User,
    decode_role,
    decode_user,
    merge_role,
    merge_user,
    role_json,
    user_json,
    user_with_roles_json,
    with_root_role,
)


def test_user_json_as_go_writes_it() -> None:
    assert user_json(User("foo")) == '{"user":"foo","roles":null}'
    assert user_json(User("foo", "h", ())) == '{"user":"foo","password":"h","roles":[]}'
    assert user_json(User("a<b", "", ("r",), ("g",))) == (
        '{"user":"a\\u003cb","roles":["r"],"grant":["g"]}'
    )
    assert user_with_roles_json("u", []) == '{"user":"u"}'
    assert user_with_roles_json("u", [ROOT_ROLE_VALUE]) == (
        '{"user":"u","roles":[{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}]}'
    )


def test_role_json_keeps_null_apart_from_empty() -> None:
    assert role_json(Role("r", RW(("/a",)))) == (
        '{"role":"r","permissions":{"kv":{"read":["/a"],"write":null}}}'
    )
    assert role_json(Role("r", RW((), ()), grant=RW())) == (
        '{"role":"r","permissions":{"kv":{"read":[],"write":[]}},'
        '"grant":{"kv":{"read":null,"write":null}}}'
    )


def test_decode_as_go_json_decoder() -> None:
    # keys matched case-insensitively, unknown ones ignored, what follows the value not read
    assert decode_user(b' {"User":"a","PASSWORD":"p","x":1,"roles":["r"]} trailing') == User(
        "a", "p", ("r",)
    )
    assert decode_user("null") == User()
    assert decode_user('{"user":"a","roles":null,"grant":[]}') == User("a", "", None, ())
    role = decode_role('{"role":"r","permissions":{"kv":{"read":["/x"]}},"grant":null}')
    assert role == Role("r", RW(("/x",), None))
    assert decode_role('{"role":"r","revoke":{}}').revoke == RW()
    for bad in ("", "nope", "[]", '{"user":1}', '{"roles":"a"}', '{"roles":[1]}'):
        with pytest.raises(BadJSON):
            decode_user(bad)
    with pytest.raises(BadJSON):
        decode_role('{"permissions":{"kv":{"write":{}}}}')


def test_merge_user() -> None:
    old = User("u", "h", ("b", "a"))
    assert merge_user(old, User("u", grant=("c",)), None) == User("u", "h", ("a", "b", "c"))
    assert merge_user(old, User("u", revoke=("a",)), None) == User("u", "h", ("b",))
    assert merge_user(old, User("u", "new"), "h2") == User("u", "h2", ("a", "b"))
    assert merge_user(User("u", "h"), User("u"), None) == User("u", "h", ())  # nil -> []
    with pytest.raises(AuthError) as e:
        merge_user(old, User("u", grant=("a",)), None)
    assert (e.value.status, e.value.message) == (
        409,
        "auth: Granting duplicate role a for user u",
    )
    with pytest.raises(AuthError) as e:
        merge_user(old, User("u", revoke=("z",)), None)
    assert e.value.message == "auth: Revoking ungranted role z for user u"


def test_merge_role() -> None:
    old = Role("r", RW(("/b", "/a"), None))
    assert merge_role(old, Role("r", grant=RW(("/c",)))) == Role("r", RW(("/a", "/b", "/c"), ()))
    # revoking what was never granted is no error
    assert merge_role(old, Role("r", revoke=RW(("/a", "/zz"), ("/w",)))) == Role(
        "r", RW(("/b",), ())
    )
    assert merge_role(old, Role("r")) == old
    with pytest.raises(AuthError) as e:
        merge_role(old, Role("r", grant=RW(None, ("/w", "/w"))))
    assert e.value.message == "auth: Granting duplicate write permission /w"


def test_key_patterns() -> None:
    role = Role("r", RW(("/foo/*", "/exact", ""), ("/w",)))
    assert role.has_key_access("/foo/bar", False)
    assert role.has_key_access("/foo/", False)
    assert not role.has_key_access("/foo", False)
    assert role.has_key_access("/exact", False)
    assert not role.has_key_access("/exact/sub", False)
    assert not role.has_key_access("/foo/bar", True)
    assert role.has_key_access("/w", True)
    # a recursive request needs a prefix pattern
    assert role.has_recursive_access("/foo/bar", False)
    assert not role.has_recursive_access("/exact", False)
    assert not role.has_recursive_access("/w", True)
    assert ROOT_ROLE_VALUE.has_recursive_access("", True)
    assert GUEST_ROLE_VALUE.has_key_access("/anything", True)
    assert Role("root").has_key_access("/x", True)  # the name is what counts


def test_root_user_always_has_the_root_role() -> None:
    assert with_root_role(User("root")).roles == ("root",)
    assert with_root_role(User("root", roles=("a",))).roles == ("a", "root")
    same = User("root", roles=("root",))
    assert with_root_role(same) is same
