"""etcd's v2 auth (``/v2/auth``, ``--enable-v2``): the same requests and ``ETCDCTL_API=2
etcdctl`` commands to etcd 3.4 and to petcd, answers compared.

Each test has its own pair of fresh single members, which see the same requests in the same
order: the auth data lives in the v2 tree under ``/2``, so its changes move the v2 index and
the ``X-Etcd-Index`` of the key requests in between must stay equal too. Normalised as in
``test_v2_compat``: the cluster id, the raft index and term.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN
from tests.compat.test_tls_compat import TLSServer
from tests.compat.test_v2_compat import Answer, V2Server, normalise, request
from tests.tlsfiles import _cert

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
    ("GET", U + "/a%2Fb", None, "", NONE),
    ("GET", "/v2/auth//users", None, "x=1", NONE),
    ("GET", U + "/a/../b", None, "", NONE),
    ("GET", "/v2/auth/enable/", None, "", NONE),
    ("GET", "/v2/auth", None, "", NONE),
    ("PUT", "/v2/auth/", None, "", NONE),
    ("POST", U + "/foo", None, "", NONE),
    ("POST", U, None, "", NONE),
    ("OPTIONS", U + "/foo", None, "", NONE),  # CORS preflight
    ("OPTIONS", K + "/foo", None, "", NONE),
    ("OPTIONS", "/v2/members", None, "", NONE),
    ("PUT", R + "/foo", '{"role":"foo", "permissions": {"kv": {"read": ["/foo/*"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo"}', "", NONE),
    ("PUT", R + "/root", '{"role":"root"}', "", NONE),
    ("PUT", R + "/r1", '{"role":"r1","grant":{"kv":{"read":["/a"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo","grant":{"kv":{"write":["/foo/*"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo","grant":{"kv":{"write":["/foo/*"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo","revoke":{"kv":{"read":["/zzz"]}}}', "", NONE),
    ("PUT", R + "/foo", '{"role":"foo","grant":{"kv":{"read":["/other"]}}}', "", NONE),
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
    ("GET", K + "/other", None, "", FOO),  # an exact pattern: the key itself
    ("GET", K + "/other", None, "recursive=true", FOO),  # but not recursively
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


# -- client certificates' common names as users (--client-cert-auth) ---------------------------


class V2TLSServer(TLSServer):
    def command(self) -> list[str]:
        return [*super().command(), "--enable-v2=true"]


def _client_files(directory: Path) -> dict[str, str]:
    """A CA ("ca"), a server certificate for 127.0.0.1 ("server"), and client certificates
    named "root" ("client"), "someone" and "nobody", as ``tests.tlsfiles`` makes them."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("v2auth CA", ca_key, None, ca=True)
    pem = serialization.Encoding.PEM

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(pem))
        (directory / f"{name}-key.pem").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        files[name], files[f"{name}_key"] = (
            str(directory / f"{name}.pem"),
            str(directory / f"{name}-key.pem"),
        )

    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    files["ca"] = str(directory / "ca.pem")
    for name, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("someone", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("nobody", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = {"server": "127.0.0.1", "client": "root"}.get(name, name)
        write(name, _cert(subject, key, (ca.subject, ca_key), usage=(usage,)), key)
    return files


@pytest.fixture
def tls_pair(tmp_path: Path) -> Iterator[tuple[V2TLSServer, V2TLSServer]]:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed")
    files = _client_files(tmp_path / "certs")
    servers: list[V2TLSServer] = []
    try:
        for target in ("etcd", "petcd"):
            srv = V2TLSServer(target, tmp_path / target / "data")
            srv.files = files
            srv.start()
            servers.append(srv)
        yield servers[0], servers[1]
    finally:
        for srv in servers:
            srv.stop()


def _tls_request(
    server: V2TLSServer, method: str, path: str, client: str, body: str | None, auth: bool
) -> tuple[int, str]:
    f = server.files
    # The server is not verified: with the CA in its store OpenSSL would send it after the
    # client certificate, and the server would not have to find it (Go clients send the leaf).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(f[client], f[f"{client}_key"])
    conn = http.client.HTTPSConnection("127.0.0.1", server.client_port, context=context, timeout=20)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        if auth:
            headers.update(ROOT_PW)
        conn.request(method, path, body=body.encode() if body else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


ROOT_PW = _basic("root", "pw")
# (method, path, client certificate, body, basic auth as root)
TLS_STEPS: list[tuple[str, str, str, str | None, bool]] = [
    ("PUT", U + "/root", "client", '{"user":"root","password":"pw"}', False),
    ("PUT", U + "/someone", "client", '{"user":"someone","password":"x"}', False),
    ("PUT", R + "/pub", "client", '{"role":"pub","permissions":{"kv":{"read":["/pub/*"]}}}', False),
    ("PUT", U + "/someone", "client", '{"user":"someone","grant":["pub"]}', False),
    ("PUT", K + "/pub/a", "client", "value=1", False),
    ("PUT", "/v2/auth/enable", "client", None, False),
    ("PUT", R + "/guest", "someone", '{"role":"guest","revoke":{"kv":{"read":["/*"]}}}', False),
    # the certificate's common name "root" is the root user
    ("PUT", R + "/guest", "client", '{"role":"guest","revoke":{"kv":{"read":["/*"]}}}', False),
    ("GET", U + "/someone", "client", None, False),
    ("GET", K + "/pub/a", "someone", None, False),
    ("PUT", K + "/pub/a", "someone", "value=2", False),
    ("GET", U, "someone", None, False),
    ("GET", U, "someone", None, True),  # basic auth comes first
    ("GET", K + "/pub/a", "nobody", None, False),  # not a user: the guest role (write only)
    ("PUT", K + "/pub/b", "nobody", "value=3", False),
    # etcd looks up every certificate of the verified chain: the CA's name is a user too
    ("PUT", U + "/v2auth%20CA", "client", '{"user":"v2auth CA","password":"x"}', False),
    ("PUT", U + "/v2auth%20CA", "client", '{"user":"v2auth CA","grant":["pub"]}', False),
    ("GET", K + "/pub/a", "nobody", None, False),
    ("GET", K + "/pub/a", "someone", None, False),  # the leaf's name first
    ("PUT", K + "/pub/c", "nobody", "value=4", False),
    ("DELETE", "/v2/auth/enable", "someone", None, False),
    ("DELETE", "/v2/auth/enable", "client", None, False),
    ("GET", "/v2/auth/enable", "nobody", None, False),
]


def test_v2_auth_client_certificate_common_names(
    tls_pair: tuple[V2TLSServer, V2TLSServer],
) -> None:
    etcd, petcd = tls_pair
    for method, path, client, body, auth in TLS_STEPS:
        want = _tls_request(etcd, method, path, client, body, auth)
        got = _tls_request(petcd, method, path, client, body, auth)
        assert got == want, (method, path, client)
