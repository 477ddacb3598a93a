"""petcd.http: etcd's /health, /livez, /readyz, /version and /metrics answers."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from petcd import ETCD_CLUSTER_VERSION, ETCD_VERSION
from petcd.http.server import make_app
from petcd.server.metrics import ServerMetrics


class FakeMember:
    def __init__(self) -> None:
        self.reason = ""
        self.asked: list[bool] = []
        self.metrics = ServerMetrics()

    async def check_health(self, serializable: bool) -> str:
        self.asked.append(serializable)
        return self.reason

    def render_metrics(self) -> bytes:
        return self.metrics.render()


async def _exercise(member: FakeMember) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    async with TestClient(TestServer(make_app(member))) as client:
        for path in ("/health", "/health?serializable=true", "/livez", "/readyz", "/version"):
            resp = await client.get(path)
            out[path] = (resp.status, await resp.text())
        member.reason = "RAFT NO LEADER"
        for path in ("/health", "/readyz", "/livez"):
            resp = await client.get(path)
            out["down " + path] = (resp.status, await resp.text())
        resp = await client.get("/metrics")
        out["/metrics"] = (resp.status, await resp.text())
    return out


def test_http_endpoints() -> None:
    member = FakeMember()
    member.metrics.has_leader.set(1)
    out = asyncio.run(_exercise(member))
    assert out["/health"][0] == 200
    assert json.loads(out["/health"][1]) == {"health": "true", "reason": ""}
    assert member.asked[:2] == [False, True]
    assert out["/livez"] == (200, "ok")
    assert out["/readyz"] == (200, "ok")
    assert json.loads(out["/version"][1]) == {
        "etcdserver": ETCD_VERSION,
        "etcdcluster": ETCD_CLUSTER_VERSION,
    }
    assert out["down /health"][0] == 503
    assert json.loads(out["down /health"][1]) == {"health": "false", "reason": "RAFT NO LEADER"}
    assert out["down /readyz"][0] == 503
    assert out["down /livez"] == (200, "ok")
    assert out["/metrics"][0] == 200
    assert "etcd_server_has_leader 1.0" in out["/metrics"][1]
    # etcd's process collector's names (etcdctl check datascale reads the RSS)
    rss = [
        line
        for line in out["/metrics"][1].splitlines()
        if line.startswith("process_resident_memory_bytes ")
    ]
    assert len(rss) == 1 and float(rss[0].split()[1]) > 1 << 20
    assert "\nprocess_open_fds " in out["/metrics"][1]
    assert "\nprocess_cpu_seconds_total " in out["/metrics"][1]
    assert f'etcd_server_version{{server_version="{ETCD_VERSION}"}} 1.0' in out["/metrics"][1]


def test_health_and_version_bodies_are_compact_like_etcd() -> None:
    out = asyncio.run(_exercise(FakeMember()))
    assert out["/health"][1] == '{"health":"true","reason":""}'
    assert out["/version"][1] == (
        f'{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}'
    )
