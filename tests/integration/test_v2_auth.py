"""etcd's v2 auth on a three-member petcd cluster (``--enable-v2``): users, roles and the
switch made through one member hold on every member, and survive kill -9 of all of them."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.petcd_proc import PetcdProcess
from tests.integration.test_v2 import _cluster, _leader, _start, _wait_for
from tests.ports import free_port
from tests.tlsfiles import make_tls_files


def call(
    p: PetcdProcess,
    method: str,
    path: str,
    body: str | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", p.client_port, timeout=20)
    try:
        headers = {}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if body is not None and path.startswith("/v2/keys"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(
            method, path, body=body.encode() if body is not None else None, headers=headers
        )
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw.strip() else None
    finally:
        conn.close()


ROOT = ("root", "rootpw")
ALICE = ("alice", "alicepw")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[PetcdProcess]]:
    members = _cluster(tmp_path)
    try:
        _start(members)
        yield members
    finally:
        for m in members:
            m.stop()


def _state(p: PetcdProcess) -> tuple[Any, Any, Any]:
    """What a member serves of auth: the switch, the users with their roles, the roles."""
    return (
        call(p, "GET", "/v2/auth/enable")[1],
        call(p, "GET", "/v2/auth/users", auth=ROOT)[1],
        call(p, "GET", "/v2/auth/roles", auth=ROOT)[1],
    )


def _checks(p: PetcdProcess) -> list[int]:
    """The statuses of requests whose answers depend on the auth data."""
    return [
        call(p, "GET", "/v2/keys/app/x", auth=ALICE)[0],  # alice reads /app/*
        call(p, "PUT", "/v2/keys/app/x", "value=2", auth=ALICE)[0],  # but does not write
        call(p, "GET", "/v2/keys/app/x", auth=("alice", "wrong"))[0],
        call(p, "GET", "/v2/keys/app/x")[0],  # the guest role reads nothing any more
        call(p, "GET", "/v2/auth/users")[0],
        call(p, "GET", "/v2/auth/users", auth=ALICE)[0],
    ]


def test_v2_auth_replicated_and_durable(cluster: list[PetcdProcess]) -> None:
    leader = _leader(cluster)
    a, b = [m for m in cluster if m is not leader]
    # Every change through a different member; followers forward them to the leader.
    assert call(a, "PUT", "/v2/auth/users/root", '{"user":"root","password":"rootpw"}')[0] == 201
    assert call(b, "PUT", "/v2/auth/users/alice", '{"user":"alice","password":"alicepw"}')[0] == 201
    role = '{"role":"app","permissions":{"kv":{"read":["/app/*"],"write":[]}}}'
    assert call(leader, "PUT", "/v2/auth/roles/app", role)[0] == 201
    assert call(a, "PUT", "/v2/auth/users/alice", '{"user":"alice","grant":["app"]}')[0] == 200
    assert call(leader, "PUT", "/v2/keys/app/x", "value=1")[0] == 201
    assert call(b, "PUT", "/v2/auth/enable")[0] == 200
    narrow = '{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}'
    assert call(a, "PUT", "/v2/auth/roles/guest", narrow, auth=ROOT)[0] == 200

    want_checks = [200, 401, 401, 401, 401, 401]
    _wait_for(lambda: len({json.dumps(_state(m)) for m in cluster}) == 1, "auth states differ")
    state = _state(leader)
    assert state[0] == {"enabled": True}
    assert [u["user"] for u in state[1]["users"]] == ["alice", "root"]
    assert [r["role"] for r in state[2]["roles"]] == ["app", "guest", "root"]
    for m in cluster:
        assert _checks(m) == want_checks, m.name
    indexes = {
        call(m, "GET", "/v2/keys/app/x", auth=ROOT)[1]["node"]["modifiedIndex"] for m in cluster
    }
    assert len(indexes) == 1

    for m in cluster:
        m.kill()
    for m in cluster:
        m.start(wait=False)
    for m in cluster:
        m.wait_ready()
    leader = _leader(cluster)
    for m in cluster:
        _wait_for(lambda m=m: _state(m) == state, f"{m.name} lost auth state on restart")
        assert _checks(m) == want_checks, m.name
    # and the store still takes changes after the restart (its /2 directories exist)
    assert call(leader, "DELETE", "/v2/auth/enable", auth=ROOT)[0] == 200
    for m in cluster:
        _wait_for(
            lambda m=m: call(m, "GET", "/v2/auth/enable")[1] == {"enabled": False},
            f"{m.name} did not see auth disabled",
        )
        assert call(m, "PUT", "/v2/keys/app/x", "value=3")[0] == 200


def test_v2_auth_common_name_on_an_https_client_http_url(tmp_path: Path) -> None:
    """--listen-client-http-urls over TLS (aiohttp's, not the front end's): the client
    certificate's common name ("root") is the user when there is no Authorization header."""
    files = make_tls_files(tmp_path / "certs")
    http_port = free_port()
    p = PetcdProcess(
        tmp_path / "data",
        extra_args=[
            "--enable-v2",
            *("--listen-client-http-urls", f"https://127.0.0.1:{http_port}"),
            *("--cert-file", files["server"], "--key-file", files["server_key"]),
            *("--client-cert-auth", "--trusted-ca-file", files["ca"]),
        ],
    )
    try:
        p.start()
        assert (
            call(p, "PUT", "/v2/auth/users/root", '{"user":"root","password":"rootpw"}')[0] == 201
        )
        assert call(p, "PUT", "/v2/auth/enable")[0] == 200
        context = ssl.create_default_context(cafile=files["ca"])
        context.load_cert_chain(files["client"], files["client_key"])

        def https(auth: tuple[str, str] | None) -> int:
            conn = http.client.HTTPSConnection("127.0.0.1", http_port, context=context, timeout=20)
            try:
                headers = {}
                if auth is not None:
                    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                    headers["Authorization"] = f"Basic {token}"
                conn.request("GET", "/v2/auth/users", headers=headers)
                return conn.getresponse().status
            finally:
                conn.close()

        assert https(None) == 200  # the certificate's name
        assert https(("root", "wrong")) == 401  # basic auth, when given, decides
        assert call(p, "GET", "/v2/auth/users")[0] == 401  # plain http: no certificate
    finally:
        p.stop()
