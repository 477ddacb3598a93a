"""etcd's v2 auth (``/v2/auth``, ``--enable-v2``): the same requests and ``ETCDCTL_API=2
etcdctl`` commands to etcd 3.4 and to petcd, answers compared.

Each test has its own pair of fresh single members, which see the same requests in the same
order: the auth data lives in the v2 tree under ``/2``, so its changes move the v2 index and
the ``X-Etcd-Index`` of the key requests in between must stay equal too. Normalised as in
``test_v2_compat``: the cluster id, the raft index and term.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN
from tests.compat.test_v2_compat import Answer, V2Server, normalise, request

pytestmark = pytest.mark.compat

Pair = tuple[V2Server, V2Server]


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed")
    base = tmp_path_factory.mktemp("v2auth")
    etcd = V2Server("etcd", base / "etcd" / "data")
    petcd = V2Server("petcd", base / "petcd" / "data")
    try:
        etcd.start()
        petcd.start()
        yield etcd, petcd
    finally:
        etcd.stop()
        petcd.stop()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ROOT = _basic("root", "rootpw")
FOO = _basic("foo", "pass")

# (method, path, JSON body or form or None, query, headers)
Step = tuple[str, str, object, str, dict[str, str]]


def _send(pair: Pair, step: Step) -> Answer:
    method, path, body, query, headers = step
    kwargs: dict[str, object] = {"query": query, "headers": headers}
    if isinstance(body, dict):
        kwargs["form"] = body
    elif isinstance(body, str):
        kwargs["body"] = body.encode()
    etcd, petcd = pair
    want = request(etcd, method, path, **kwargs)  # type: ignore[arg-type]
    got = request(petcd, method, path, **kwargs)  # type: ignore[arg-type]
    assert normalise(got) == normalise(want), step
    return want


U, R, K = "/v2/auth/users", "/v2/auth/roles", "/v2/keys"
NONE: dict[str, str] = {}

AUTH_OFF: list[Step] = [
    ("GET", "/v2/auth/enable", None, "", NONE),
    ("GET", U, None, "", NONE),
    ("GET", U + "/", None, "", NONE),
    ("GET", R, None, "", NONE),
    ("PUT", K + "/before", {"value": "1"}, "", NONE),
    ("PUT", U + "/foo", '{"user":"foo", "password":"pass"}', "", NONE),
    ("GET", K + "/before", None, "", NONE),  # the index after /2 was made
    ("PUT", U + "/foo", '{"user":"foo", "password":"pass"}', "", NONE),  # a new password
    ("PUT", U + "/foo", '{"user":"foo"}', "", NONE),  # roles null -> []: an update
    ("PUT", U + "/foo", '{"user":"foo"}', "", NONE),  # nothing changes
    ("PUT", U + "/bar", '{"user":"bar"}', "", NONE),  # no password
    ("PUT", U + "/bar", '{"user":"baz","password":"x"}', "", NONE),
    ("PUT", U + "/bar", "not json", "", NONE),
    ("PUT", U + "/bar", "", "", NONE),
    ("PUT", U + "/bar", '{"user":"bar","password":1}', "", NONE),
    ("PUT", U + "/bar", '{"User":"bar","PASSWORD":"x","roles":["r1","r1"]} trailing', "", NONE),
    ("PUT", U + "/bar", '{"user":"bar","password":"x","roles":["r1"]}', "", NONE),
    ("PUT", U + "/bar", '{"user":"bar","grant":["x"],"roles":["y"]}', "", NONE),
    ("PUT", U + "/bar", '{"user":"bar","grant":["r1"]}', "", NONE),
    ("PUT", U + "/bar", '{"user":"bar","revoke":["nope"]}', "", NONE),
    ("PUT", U + "/bar", '{"user":"bar","grant":["r2"],"revoke":["r2"]}', "", NONE),
    ("PUT", U + "/bar", '{"user":"bar","grant":["r2"],"revoke":["r2"]}', "", NONE),
    ("PUT", U + "/nobody", '{"user":"nobody","grant":["r2"]}', "", NONE),
    ("GET", U + "/bar", None, "", NONE),  # granted a role that does not exist
    ("GET", U, None, "", NONE),
    ("GET", U + "/nope", None, "", NONE),
    ("GET", U + "/a/b", None, "", NONE),
    ("POST", U + "/foo", None, "", NONE),
    ("POST", U, None, "", NONE),
    ("PUT", R + "/foo", '{"role":"foo", "permissions": {"kv": {"read": ["/foo/*"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo"}', "", NONE),
    ("PUT", R + "/root", '{"role":"root"}', "", NONE),
    ("PUT", R + "/r1", '{"role":"r1","grant":{"kv":{"read":["/a"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo","grant":{"kv":{"write":["/foo/*"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo","grant":{"kv":{"write":["/foo/*"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo","revoke":{"kv":{"read":["/zzz"]}}}', "", NONE),
    (
        "PUT",
        R + "/foo",
        '{"role":"foo","permissions":{"kv":{"read":["/x"]}},"grant":{"kv":{"read":["/y"]}}}',
        "",
        NONE,
    ),
    ("PUT", R + "/other", '{"role":"other","grant":{"kv":{"read":[]}}}', "", NONE),
    ("PUT", R + "/other", '{"role":"other","revoke":{"kv":{"write":["/q"]}}}', "", NONE),
    ("PUT", R + "/bad", '{"role":"wrong"}', "", NONE),
    ("PUT", R + "/bad", "[]", "", NONE),
    ("GET", R + "/foo", None, "", NONE),
    ("GET", R + "/root", None, "", NONE),
    ("GET", R + "/nope", None, "", NONE),
    ("GET", R, None, "", NONE),
    ("GET", R + "/x/y", None, "", NONE),
    ("DELETE", R + "/root", None, "", NONE),
    ("DELETE", R + "/nope", None, "", NONE),
    ("DELETE", R + "/other", None, "", NONE),
    ("PATCH", R + "/other", None, "", NONE),
    ("PUT", U + "/foo", '{"user": "foo", "grant": ["foo"]}', "", NONE),
    ("GET", U + "/foo", None, "", NONE),
    ("GET", U, None, "", NONE),
    ("POST", "/v2/auth/enable", None, "", NONE),
    ("PUT", "/v2/auth/enable", None, "", NONE),  # no root user
    ("DELETE", "/v2/auth/enable", None, "", NONE),
    ("PUT", U + "/root", '{"user":"root","password":"rootpw"}', "", NONE),
    ("GET", U + "/root", None, "", NONE),
    ("PUT", K + "/foo/bar", {"value": "bar"}, "", NONE),
    ("PUT", K + "/other", {"value": "o"}, "", NONE),
    ("PUT", "/v2/auth/enable", None, "", NONE),
    ("GET", K + "/before", None, "", NONE),
]

AUTH_ON: list[Step] = [
    ("GET", "/v2/auth/enable", None, "", NONE),
    ("PUT", "/v2/auth/enable", None, "", ROOT),
    ("GET", U, None, "", NONE),
    ("GET", U, None, "", FOO),
    ("GET", U, None, "", _basic("root", "wrong")),
    ("GET", U, None, "", {"Authorization": "Basic !!!"}),
    ("GET", U, None, "", {"Authorization": "Bearer x"}),
    ("GET", U, None, "", ROOT),
    ("GET", R, None, "", ROOT),
    ("GET", R + "/guest", None, "", ROOT),
    ("GET", U + "/foo", None, "", FOO),
    ("GET", U + "/a/b", None, "", NONE),  # the path is refused before the credentials
    ("POST", U + "/foo", None, "", NONE),
    # guest: read and write everything, but only key by key
    ("GET", K + "/foo/bar", None, "", NONE),
    ("PUT", K + "/guest", {"value": "g"}, "", NONE),
    ("GET", K + "/foo", None, "recursive=true", NONE),
    # foo: /foo/* read and write
    ("GET", K + "/foo/bar", None, "", FOO),
    ("HEAD", K + "/foo/bar", None, "", FOO),
    ("GET", K + "/foo/", None, "", FOO),
    ("GET", K + "/foo/", None, "recursive=true", FOO),
    ("GET", K + "/foo", None, "", FOO),
    ("GET", K + "/foo", None, "recursive=true", FOO),
    ("PUT", K + "/foo/baz", {"value": "z"}, "", FOO),
    ("PUT", K + "/other", {"value": "x"}, "", FOO),
    ("GET", K + "/other", None, "", FOO),
    ("GET", K + "/foo/bar", None, "", _basic("foo", "")),
    ("GET", K + "/foo/bar", None, "", _basic("nobody", "pass")),
    ("GET", K + "/foo/bar", None, "wait=true&waitIndex=1", _basic("foo", "bad")),
    ("PUT", K + "/foo/bar", {"value": "x", "ttl": "abc"}, "", _basic("foo", "bad")),
    ("DELETE", K + "/other", None, "", ROOT),
    # root may write everything
    ("PUT", K + "/other", {"value": "r"}, "", ROOT),
    ("GET", K + "/", None, "recursive=true&sorted=true", ROOT),
    # narrow the guest role: no more writes without credentials
    ("PUT", R + "/guest", '{"role":"guest","revoke":{"kv":{"write":["/*"]}}}', "", FOO),
    ("PUT", R + "/guest", '{"role":"guest","revoke":{"kv":{"write":["/*"]}}}', "", ROOT),
    ("PUT", K + "/guest", {"value": "again"}, "", NONE),
    ("GET", K + "/guest", None, "", NONE),
    # members: reads for everybody, changes for root
    ("POST", "/v2/members", None, "", FOO),
    ("DELETE", "/v2/members/1234", None, "", NONE),
    ("DELETE", "/v2/members/1234", None, "", ROOT),
    # users and roles by root only
    ("PUT", U + "/eve", '{"user":"eve","password":"x"}', "", FOO),
    ("PUT", U + "/eve", '{"user":"eve","password":"x"}', "", ROOT),
    ("GET", K + "/foo/bar", None, "", _basic("eve", "x")),  # no roles
    ("DELETE", U + "/root", None, "", ROOT),
    ("DELETE", R + "/guest", None, "", ROOT),
    ("GET", K + "/foo/bar", None, "", NONE),  # no guest role: nothing
    ("DELETE", "/v2/auth/enable", None, "", FOO),
    ("DELETE", "/v2/auth/enable", None, "", NONE),
    ("DELETE", "/v2/auth/enable", None, "", ROOT),
    ("GET", "/v2/auth/enable", None, "", NONE),
    ("DELETE", U + "/foo", None, "", NONE),
    ("DELETE", U + "/foo", None, "", NONE),
    ("DELETE", R + "/foo", None, "", NONE),
    ("GET", U, None, "", NONE),
    ("PUT", "/v2/auth/enable", None, "", NONE),  # the guest role is made again
    ("GET", R + "/guest", None, "", ROOT),
    ("GET", K + "/before", None, "", NONE),
]


def test_v2_auth_requests(pair: Pair) -> None:
    for step in AUTH_OFF + AUTH_ON:
        _send(pair, step)
    status, _, body = request(pair[1], "GET", U, headers=ROOT)
    assert status == 200
    assert [u["user"] for u in json.loads(body)["users"]] == ["bar", "eve", "root"]


def _etcdctl(server: V2Server, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [ETCDCTL_BIN, "--endpoints", server.client_url, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ETCDCTL_API": "2"},
        timeout=20,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


_CTL: list[tuple[str, ...]] = [
    ("auth", "disable"),
    ("auth", "enable"),  # no root user
    ("user", "list"),
    ("role", "list"),
    ("user", "add", "alice:apw"),
    ("user", "add", "alice:apw"),
    ("user", "get", "alice"),
    ("user", "get", "nobody"),
    ("role", "add", "readers"),
    ("role", "add", "readers"),
    ("role", "add", "root"),
    ("role", "grant", "--read", "--path", "/pub/*", "readers"),
    ("role", "grant", "--readwrite", "--path", "/alice", "readers"),
    ("role", "grant", "--read", "--path", "/pub/*", "readers"),
    ("role", "get", "readers"),
    ("role", "get", "nope"),
    ("user", "grant", "--roles", "readers", "alice"),
    ("user", "grant", "--roles", "readers", "alice"),
    ("user", "revoke", "--roles", "nope", "alice"),
    ("user", "get", "alice"),
    ("user", "list"),
    ("role", "list"),
    ("set", "/pub/a", "1"),
    ("set", "/alice", "2"),
    ("set", "/secret", "3"),
    ("user", "add", "root:rpw"),
    ("auth", "enable"),
    ("auth", "enable"),
    # the guest role (made by auth enable) still reads and writes everything
    ("get", "/secret"),
    ("role", "revoke", "--readwrite", "--path", "/*", "guest"),
    ("--username", "root:rpw", "role", "revoke", "--readwrite", "--path", "/*", "guest"),
    ("--username", "root:rpw", "role", "get", "guest"),
    ("get", "/secret"),
    ("set", "/secret", "x"),
    ("--username", "alice:apw", "get", "/pub/a"),
    ("--username", "alice:apw", "get", "/alice"),
    ("--username", "alice:apw", "set", "/alice", "3"),
    ("--username", "alice:apw", "set", "/pub/a", "4"),
    ("--username", "alice:apw", "get", "/secret"),
    ("--username", "alice:wrong", "get", "/pub/a"),
    ("--username", "alice:apw", "ls", "--recursive", "/pub"),
    ("--username", "alice:apw", "user", "list"),
    ("--username", "alice:apw", "auth", "disable"),
    ("--username", "root:wrong", "auth", "disable"),
    ("--username", "root:rpw", "get", "/secret"),
    ("--username", "root:rpw", "user", "remove", "root"),
    ("--username", "root:rpw", "user", "revoke", "--roles", "readers", "alice"),
    ("--username", "root:rpw", "user", "get", "alice"),
    ("--username", "root:rpw", "role", "remove", "readers"),
    ("--username", "root:rpw", "role", "remove", "readers"),
    ("--username", "root:rpw", "user", "remove", "alice"),
    ("--username", "root:rpw", "user", "list"),
    ("--username", "root:rpw", "auth", "disable"),
    ("auth", "disable"),
    ("user", "remove", "root"),
    ("user", "list"),
]


def test_v2_auth_etcdctl(pair: Pair) -> None:
    etcd, petcd = pair
    for args in _CTL:
        want, got = _etcdctl(etcd, *args), _etcdctl(petcd, *args)
        assert got == want, args
