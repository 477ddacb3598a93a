"""HTTP/1 on the gRPC client port, as etcd serves it: ``/health``, ``/version``,
``/metrics`` and the JSON gateway next to gRPC on ``--listen-client-urls`` (native client
transport; see petcd.http.accepted). The real etcdctl and curl-style HTTP share the port."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterator

import pytest

from tests.integration.petcd_proc import PetcdProcess, etcdctl

pytest.importorskip("petcd._frontend", reason="the native front end is not built (make install)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path_factory.mktemp("http-client-port") / "data", name="httpport")
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_health_version_and_metrics_on_one_connection(server: PetcdProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=10)
    try:
        conn.request("GET", "/health")
        r = conn.getresponse()
        assert (r.status, json.loads(r.read())) == (200, {"health": "true", "reason": ""})
        conn.request("GET", "/version")  # the same (kept-alive) connection
        r = conn.getresponse()
        assert json.loads(r.read())["etcdcluster"] == "3.5.0"
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200
        assert "etcd_server_has_leader 1.0" in body
    finally:
        conn.close()


def test_gateway_and_grpc_share_the_port(server: PetcdProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=10)
    try:
        body = json.dumps({"key": _b64("gw/k"), "value": _b64("from-http")})
        conn.request("POST", "/v3/kv/put", body=body)
        r = conn.getresponse()
        assert r.status == 200, r.read()
        r.read()
    finally:
        conn.close()
    out = etcdctl(server.endpoint, "get", "gw/k", "--print-value-only")
    assert (out.returncode, out.stdout) == (0, "from-http\n"), out.stderr
    assert etcdctl(server.endpoint, "put", "gw/k2", "from-grpc").returncode == 0
    for prefix in ("/v3", "/v3beta"):  # etcd 3.5 still answers the 3.3-era prefix
        conn = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=10)
        try:
            conn.request("POST", f"{prefix}/kv/range", body=json.dumps({"key": _b64("gw/k2")}))
            kvs = json.loads(conn.getresponse().read())["kvs"]
        finally:
            conn.close()
        assert base64.b64decode(kvs[0]["value"]) == b"from-grpc"


def test_not_http_at_all_is_closed_and_the_member_goes_on(server: PetcdProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.client_port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello\r\n\r\n")  # e.g. a TLS client on a plain port
        reply = s.recv(4096)
    assert reply == b"" or reply.split(b"\r\n")[0] in (
        b"HTTP/1.0 400 Bad Request",
        b"HTTP/1.1 400 Bad Request",
    )
    out = etcdctl(server.endpoint, "endpoint", "health")
    assert out.returncode == 0, out.stderr


def test_grpcio_transport_serves_no_http1(tmp_path_factory: pytest.TempPathFactory) -> None:
    p = PetcdProcess(
        tmp_path_factory.mktemp("http-client-port-grpcio") / "data",
        name="grpcio",
        extra_args=["--client-transport", "grpcio"],
    )
    p.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", p.client_port, timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/health")
            conn.getresponse().read()
        conn.close()
    finally:
        p.stop()
