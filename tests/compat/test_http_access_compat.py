"""etcd's access controller and Go's error answers on the client port: etcd 3.4 and petcd.

etcd puts an access controller in front of everything HTTP on its client URLs: a plain request
whose Host header names a host outside ``--host-whitelist`` is refused (421, with a text
about DNS rebinding, CVE-2018-5702); CORS headers are written as ``--cors`` allows (``*``, or
the request's ``Origin`` when it is one of the listed URLs); ``OPTIONS`` on any path is 200.
Behind it, Go's mux answers a path nothing serves with ``404 page not found`` (grpc-gateway,
under ``/v3/``, with ``Not Found``), a method a handler refuses with ``Method Not Allowed``
(and ``Allow: GET`` for the GET endpoints, HEAD included), and ``/metrics`` takes any method.
Both servers get the same raw HTTP/1.1 requests; status, the headers that matter and the
bodies of the refusals must be the same.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.compat.procs import Proc, wait_leader
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, PETCD_BIN, available_targets
from tests.ports import free_port
from tests.tlsfiles import make_tls_files

TARGETS = [t for t in ("etcd", "petcd") if t in available_targets()]
HEADERS = (
    "Content-Type",
    "Allow",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
)
# (method, path, extra headers, body); the Host header is 127.0.0.1:<port> unless given.
REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("GET", "/health", {}, None),
    ("GET", "/health", {"Host": "evil.example:2379"}, None),
    ("GET", "/version", {"Host": "evil.example"}, None),
    ("GET", "/version", {"Host": "localhost:1"}, None),
    ("GET", "/version", {"Host": "[::1]:2379"}, None),
    ("GET", "/version", {"Origin": "http://a.example:8080"}, None),
    ("GET", "/version", {"Origin": "http://b.example:8080"}, None),
    ("OPTIONS", "/nothing/here", {}, None),
    ("OPTIONS", "/v3/kv/range", {"Origin": "http://a.example:8080"}, None),
    ("GET", "/foo", {}, None),
    ("GET", "/v3/foo", {}, None),
    ("POST", "/health", {}, None),
    ("HEAD", "/health", {}, None),
    ("DELETE", "/version", {}, None),
    ("POST", "/metrics", {}, None),
    ("GET", "/v3/kv/range", {}, None),
    ("POST", "/v3/kv/range", {"Origin": "http://a.example:8080"}, b'{"key":"YQ=="}'),
    ("GET", "/version", {"Host": "evil.example", "Origin": "http://a.example:8080"}, None),
]
# Bodies compared as they are: the refusals (the rest carry versions, ids, metrics).
COMPARED_BODIES = {404, 405, 421}


def _start(target: str, tmp: Path, extra: list[str], scheme: str = "http") -> tuple[Proc, int]:
    port, peer = free_port(), free_port()
    argv = [
        ETCD_BIN if target == "etcd" else PETCD_BIN,
        "--name",
        "m1",
        "--data-dir",
        str(tmp / f"{target}.data"),
        "--listen-client-urls",
        f"{scheme}://127.0.0.1:{port}",
        "--advertise-client-urls",
        f"{scheme}://127.0.0.1:{port}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-cluster",
        f"m1=http://127.0.0.1:{peer}",
        "--logger",
        "zap",
        *extra,
    ]
    proc = Proc(argv, tmp / f"{target}.log")
    proc.start()
    return proc, port


def _wait_up(proc: Proc, answers: Callable[[], bool]) -> None:
    """Until ``answers()`` is true (a refused or broken connection counts as not yet)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if answers():
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, proc.log_text()[-2000:]
        time.sleep(0.2)


def _ask(port: int) -> list[Any]:
    seen: list[Any] = []
    for method, path, headers, body in REQUESTS:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", headers.get("Host", f"127.0.0.1:{port}"))
            for name, value in headers.items():
                if name != "Host":
                    conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            got = {h: resp.getheader(h) for h in HEADERS}
            shown = data if resp.status in COMPARED_BODIES else bool(data)
            seen.append((method, path, headers, resp.status, got, shown))
        finally:
            conn.close()
    return seen


def _answers(tmp: Path, target: str, extra: list[str]) -> list[Any]:
    tmp.mkdir(exist_ok=True)
    proc, port = _start(target, tmp, extra)
    try:
        wait_leader(f"127.0.0.1:{port}", proc)
        return _ask(port)
    finally:
        proc.stop()


@pytest.mark.skipif(TARGETS != ["etcd", "petcd"], reason="needs etcd and petcd")
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="defaults"),
        pytest.param(
            ["--cors=http://a.example:8080", "--host-whitelist=localhost,127.0.0.1,::1"],
            id="cors-and-host-whitelist",
        ),
    ],
)
def test_access_control_and_go_errors_as_etcd(tmp_path: Path, extra: list[str]) -> None:
    etcd = _answers(tmp_path / "etcd", "etcd", extra)
    petcd = _answers(tmp_path / "petcd", "petcd", extra)
    for mine, theirs in zip(petcd, etcd, strict=True):
        assert mine == theirs
    # What both said, so that agreeing on a failure cannot pass.
    statuses = [answer[3] for answer in petcd]
    assert statuses[9:16] == [404, 404, 405, 405, 405, 200, 405]
    if extra:
        assert statuses[1:5] == [421, 421, 200, 200]
        assert b"--host-whitelist" in petcd[1][5]
        assert petcd[5][4]["Access-Control-Allow-Origin"] == "http://a.example:8080"
        assert petcd[6][4]["Access-Control-Allow-Origin"] is None
        assert statuses[17] == 421  # refused before any CORS header is written
        assert petcd[17][4]["Access-Control-Allow-Origin"] is None
    else:
        assert statuses[:5] == [200] * 5
        assert petcd[6][4]["Access-Control-Allow-Origin"] == "*"


@pytest.mark.skipif(TARGETS != ["etcd", "petcd"], reason="needs etcd and petcd")
def test_host_whitelist_is_for_plain_requests_only(tmp_path: Path) -> None:
    """Over TLS any Host is taken (etcd: "Enable TLS, then any HTTPS request will be
    allowed"); petcd's native front end terminates that TLS before aiohttp sees the request."""
    files = make_tls_files(tmp_path / "certs")
    extra = ["--host-whitelist=localhost", "--cert-file", files["server"]]
    extra += ["--key-file", files["server_key"]]
    context = ssl.create_default_context(cafile=files["ca"])

    def status(port: int, host: str) -> int:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        try:
            conn.request("GET", "/version", headers={"Host": host})
            return conn.getresponse().status
        finally:
            conn.close()

    seen: dict[str, list[int]] = {}
    for target in TARGETS:
        (tmp_path / target).mkdir()
        proc, port = _start(target, tmp_path / target, extra, scheme="https")
        try:
            _wait_up(proc, lambda p=port: status(p, "localhost") > 0)
            seen[target] = [status(port, host) for host in ("evil.example", "localhost")]
        finally:
            proc.stop()
    assert seen["petcd"] == seen["etcd"] == [200, 200]


@pytest.mark.skipif(TARGETS != ["etcd", "petcd"], reason="needs etcd and petcd")
def test_gateway_refuses_client_common_names_with_auth_on(tmp_path: Path) -> None:
    """With ``--client-cert-auth`` and auth on, a JSON gateway request (``/v3/``,
    ``/v3beta/``) over TLS whose client certificate has a common name is refused with 400
    (the gateway authenticates by token only), before any CORS header; other paths, and a
    certificate without a common name, go on."""
    files = make_tls_files(tmp_path / "certs")
    # The peer certificate (server and client use): etcd's gateway presents the server's
    # certificate to the member's own gRPC port, which --client-cert-auth verifies.
    extra = ["--cert-file", files["peer"], "--key-file", files["peer_key"]]
    extra += ["--client-cert-auth", "--trusted-ca-file", files["ca"]]
    extra += ["--cors=http://a.example:8080"]
    origin = {"Origin": "http://a.example:8080", "Accept": "*/*"}
    body = b'{"key":"YQ=="}'
    asked: list[tuple[str, str, str, bytes | None]] = [
        ("client", "POST", "/v3/kv/range", body),
        ("client", "POST", "/v3beta/kv/range", body),
        ("client", "OPTIONS", "/v3/kv/range", None),
        ("client", "GET", "/health", None),
        ("client", "GET", "/v3/nothing", None),
        ("client_no_cn", "POST", "/v3/kv/range", body),
    ]

    def ask(port: int, client: str, method: str, path: str, data: bytes | None) -> Any:
        context = ssl.create_default_context(cafile=files["ca"])
        context.load_cert_chain(files[client], files[f"{client}_key"])
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        try:
            conn.request(method, path, body=data, headers=origin)
            resp = conn.getresponse()
            text = resp.read()
            cors = resp.getheader("Access-Control-Allow-Origin")
            if resp.status < 400:
                return resp.status, cors, None
            # the gateway's JSON errors: etcd 3.4 and 3.5 order their fields differently
            return resp.status, cors, json.loads(text) if text.startswith(b"{") else text
        finally:
            conn.close()

    def ctl(port: int, *args: str) -> None:
        argv = [ETCDCTL_BIN, "--endpoints", f"https://127.0.0.1:{port}", "--cacert", files["ca"]]
        argv += ["--cert", files["client"], "--key", files["client_key"], *args]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    seen: dict[str, list[Any]] = {}
    for target in TARGETS:
        (tmp_path / target).mkdir()
        proc, port = _start(target, tmp_path / target, extra, scheme="https")
        try:
            _wait_up(proc, lambda p=port: ask(p, "client", "GET", "/health", None)[0] == 200)
            before = [ask(port, *a) for a in asked]
            ctl(port, "user", "add", "root:secret")
            ctl(port, "auth", "enable")
            seen[target] = before + [ask(port, *a) for a in asked]
        finally:
            proc.stop()
    assert seen["petcd"] == seen["etcd"]
    refused = (
        400,
        None,
        b"CommonName of client sending a request against gateway will be ignored and not"
        b" used as expected\n",
    )
    statuses = [answer[0] for answer in seen["petcd"]]
    assert statuses[:6] == [200, 200, 200, 200, 404, 200]  # auth off: nothing refused
    assert seen["petcd"][6:9] == [refused] * 3
    assert statuses[9:] == [200, 400, 400]
    empty = "etcdserver: user name is empty"  # no token, and the name is not taken
    assert seen["petcd"][11][2] == {"error": empty, "message": empty, "code": 3}
