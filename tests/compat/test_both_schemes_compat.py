"""http:// and https:// client URLs on one port, and ``/debug/vars``: petcd and etcd 3.5.

etcd 3.5 serves an ``http://`` and an ``https://`` client URL of the same host and port on
one socket (its e2e ``ClientTLSAndNonTLS`` clusters, ``TestConnectionMultiplexing``): a
client's TLS and plain connections both reach gRPC and the HTTP endpoints. etcd 3.4 starts
with such URLs but cannot serve plain gRPC on that port (its plain HTTP/2 connections reach
a TLS handshake: "first record does not look like a TLS handshake"), so the reference here is
etcd 3.5.17, when ``PETCD_ETCD35_BIN_DIR`` names a directory holding its ``etcd`` (built from
the Go module cache, as for the other 3.5 cases); without it petcd's answers are checked
against what etcd 3.5 answers, written out below.

Each server is started with the same flags and asked the same things over both schemes: the
real etcdctl (Go's gRPC), grpcio, HTTP/1.1 (``/health``, ``/version``, ``/debug/vars``, the
JSON gateway), and a connection that is neither TLS nor HTTP, after which both kinds must
still work. ``/debug/vars`` (Go's expvar page) must carry etcd's ``raft.status`` fields.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.procs import Proc, wait_leader
from tests.compat.servers import ETCDCTL_BIN, PETCD_BIN
from tests.ports import free_port
from tests.tlsfiles import make_tls_files

ETCD35_DIR = os.environ.get("PETCD_ETCD35_BIN_DIR", "")
pytestmark = pytest.mark.skipif(not os.path.exists(ETCDCTL_BIN), reason="etcdctl not installed")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tls_files(tmp_path_factory.mktemp("certs"))


def _start(target: str, tmp: Path, files: dict[str, str]) -> tuple[Proc, int]:
    port, peer = free_port(), free_port()
    argv = [
        os.path.join(ETCD35_DIR, "etcd") if target == "etcd35" else PETCD_BIN,
        "--name",
        "m1",
        "--data-dir",
        str(tmp / f"{target}.data"),
        "--listen-client-urls",
        f"http://127.0.0.1:{port},https://127.0.0.1:{port}",
        "--advertise-client-urls",
        f"http://127.0.0.1:{port}",
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-cluster",
        f"m1=http://127.0.0.1:{peer}",
        "--cert-file",
        files["server"],
        "--key-file",
        files["server_key"],
        "--logger",
        "zap",
    ]
    proc = Proc(argv, tmp / f"{target}.log")
    proc.start()
    return proc, port


def _etcdctl(files: dict[str, str], url: str, *args: str) -> str:
    done = subprocess.run(
        [ETCDCTL_BIN, "--endpoints", url, "--cacert", files["ca"], "--dial-timeout", "5s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )
    return f"{done.returncode}:{done.stdout}{done.stderr}"


def _http(files: dict[str, str], url: str, method: str = "GET", body: bytes | None = None) -> Any:
    context = ssl.create_default_context(cafile=files["ca"])
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            return r.status, r.headers.get("Allow"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Allow"), e.read()


def _grpc_get(files: dict[str, str], port: int, secure: bool, key: bytes) -> list[bytes]:
    target = f"127.0.0.1:{port}"
    if secure:
        creds = grpc.ssl_channel_credentials(Path(files["ca"]).read_bytes())
        channel = grpc.secure_channel(
            target, creds, options=[("grpc.ssl_target_name_override", "localhost")]
        )
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        resp = kv.Range(rpc_pb2.RangeRequest(key=key), timeout=10)
        return [kv_.value for kv_ in resp.kvs]


def _scenario(files: dict[str, str], port: int, member_id: int) -> list[Any]:
    plain, tls = f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port}"
    seen: list[Any] = [
        _etcdctl(files, plain, "put", "k", "over-http"),
        _etcdctl(files, tls, "get", "k"),
        _etcdctl(files, tls, "put", "k", "over-https"),
        _etcdctl(files, plain, "get", "k"),
        _grpc_get(files, port, True, b"k"),
        _grpc_get(files, port, False, b"k"),
    ]
    for base in (plain, tls):
        status, _, body = _http(files, base + "/health")
        seen.append((status, json.loads(body)["health"]))
        status, _, body = _http(files, base + "/version")
        seen.append((status, sorted(json.loads(body))))
        status, _, body = _http(files, base + "/v3/kv/range", "POST", b'{"key":"aw=="}')
        seen.append((status, [kv["value"] for kv in json.loads(body)["kvs"]]))
        status, allow, body = _http(files, base + "/debug/vars")
        variables = json.loads(body)
        raft = variables["raft.status"]
        seen.append(
            (
                status,
                sorted(k for k in variables if k != "memstats"),  # petcd has no Go runtime
                sorted(raft),
                raft["id"] == f"{member_id:x}" == raft["lead"],
                raft["raftState"],
                sorted(raft["progress"]) == [f"{member_id:x}"],
                raft["leadtransferee"],
                isinstance(variables["cmdline"], list),
                variables["file_descriptor_limit"] > 0,
            )
        )
        status, allow, body = _http(files, base + "/debug/vars", "POST", b"")
        seen.append((status, allow, body))
    # Neither TLS nor HTTP: the connection fails alone; both schemes go on working.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    seen.append(_etcdctl(files, tls, "get", "k", "--print-value-only"))
    seen.append(_etcdctl(files, plain, "get", "k", "--print-value-only"))
    return seen


def _answers(tmp: Path, files: dict[str, str], target: str) -> list[Any]:
    tmp.mkdir(exist_ok=True)
    proc, port = _start(target, tmp, files)
    try:
        status = wait_leader(f"127.0.0.1:{port}", proc)
        return _scenario(files, port, status.header.member_id)
    finally:
        proc.stop()


def test_both_schemes_on_one_port(tmp_path: Path, files: dict[str, str]) -> None:
    got = _answers(tmp_path, files, "petcd")
    ok = "0:OK\n"
    value = ["0:k\nover-http\n", "0:k\nover-https\n"]
    per_scheme = [
        (200, "true"),
        (200, ["etcdcluster", "etcdserver"]),
        (200, ["b3Zlci1odHRwcw=="]),  # "over-https"
        (
            200,
            ["cmdline", "file_descriptor_limit", "raft.status"],
            sorted(
                [
                    "id",
                    "term",
                    "vote",
                    "commit",
                    "lead",
                    "raftState",
                    "applied",
                    "progress",
                    "leadtransferee",
                ]
            ),
            True,
            "StateLeader",
            True,
            "0",
            True,
            True,
        ),
        (405, "GET", b"Method Not Allowed\n"),
    ]
    assert got == [
        ok,
        value[0],
        ok,
        value[1],
        [b"over-https"],
        [b"over-https"],
        *per_scheme,
        *per_scheme,
        "0:over-https\n",
        "0:over-https\n",
    ]


@pytest.mark.skipif(not ETCD35_DIR, reason="PETCD_ETCD35_BIN_DIR not set (etcd 3.5.17's etcd)")
def test_both_schemes_on_one_port_answer_as_etcd35(tmp_path: Path, files: dict[str, str]) -> None:
    assert _answers(tmp_path / "p", files, "petcd") == _answers(tmp_path / "e", files, "etcd35")
