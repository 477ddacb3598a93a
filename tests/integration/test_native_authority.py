"""etcdctl 3.4's ``endpoint status --cluster`` and ``endpoint hashkv --cluster`` against petcd on
the native client transport.

With ``--cluster``, etcd's clientv3 3.4 dials every member's client URL with the gRPC target
``passthrough:///http://host:port``, so grpc-go sends ``:authority: http://host:port`` (scheme
included). h2 refuses such a request (RST_STREAM PROTOCOL_ERROR); the front end's stream
wrapper (native/frontend/src/authority.rs) rewrites the header blocks so that h2 accepts it,
as etcd and grpc-go do.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.petcd_proc import PetcdProcess, etcdctl

pytest.importorskip("petcd._frontend", reason="the native front end is not built (make install)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(
        tmp_path_factory.mktemp("native-authority") / "data",
        name="authority",
        extra_args=["--client-transport", "native"],
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return out.stdout


@pytest.mark.parametrize("endpoint", ["plain", "with-scheme"])
def test_endpoint_status_cluster(server: PetcdProcess, endpoint: str) -> None:
    ep = server.endpoint if endpoint == "plain" else f"http://{server.endpoint}"
    assert ok(etcdctl(ep, "put", "a/k", "v")) == "OK\n"
    [status] = json.loads(ok(etcdctl(ep, "endpoint", "status", "--cluster", "-w", "json")))
    assert status["Endpoint"] == f"http://{server.endpoint}"
    assert status["Status"]["leader"] == status["Status"]["header"]["member_id"]
    assert status["Status"]["header"]["revision"] >= 2
    # The table form, as test_cluster_faults.py reads it.
    out = ok(etcdctl(ep, "endpoint", "status", "--cluster"))
    assert out.startswith(f"http://{server.endpoint}, "), out


def test_endpoint_hashkv_cluster(server: PetcdProcess) -> None:
    ep = server.endpoint
    assert ok(etcdctl(ep, "put", "h/k", "v")) == "OK\n"
    [plain] = json.loads(ok(etcdctl(ep, "endpoint", "hashkv", "-w", "json")))
    [cluster] = json.loads(ok(etcdctl(ep, "endpoint", "hashkv", "--cluster", "-w", "json")))
    assert cluster["Endpoint"] == f"http://{server.endpoint}"
    assert cluster["HashKV"]["hash"] == plain["HashKV"]["hash"] != 0


def test_endpoint_health_cluster(server: PetcdProcess) -> None:
    r = etcdctl(server.endpoint, "endpoint", "health", "--cluster")
    ok(r)
    # etcdctl 3.4 prints the health lines on stderr.
    assert f"http://{server.endpoint} is healthy" in r.stdout + r.stderr, r
