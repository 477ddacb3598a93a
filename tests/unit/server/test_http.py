"""petcd.http: etcd's /health, /livez, /readyz, /version and /metrics answers."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from petcd import ETCD_CLUSTER_VERSION, ETCD_VERSION
from petcd.http.access import AccessPolicy
from petcd.http.server import make_app
from petcd.server.errors import NoLeaderError
from petcd.server.metrics import ServerMetrics


class FakeMember:
    def __init__(self) -> None:
        self.reason = ""
        self.asked: list[bool] = []
        self.excluded: list[frozenset[str]] = []
        self.alarms: frozenset[str] = frozenset()
        self.metrics = ServerMetrics()

    async def check_health(self, serializable: bool, exclude: frozenset[str] = frozenset()) -> str:
        self.asked.append(serializable)
        self.excluded.append(exclude)
        return self.reason

    async def check_read(self, serializable: bool) -> None:
        if self.reason:
            raise NoLeaderError()

    def active_alarms(self) -> frozenset[str]:
        return self.alarms

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    def debug_vars(self) -> str:
        return '{\n"cmdline": ["petcd"]\n}\n'


async def _exercise(member: FakeMember) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    async with TestClient(TestServer(make_app(member))) as client:
        for path in (
            "/health",
            "/health?serializable=true",
            "/health?exclude=NOSPACE&exclude=CORRUPT",
            "/livez",
            "/readyz",
            "/readyz?verbose",
            "/readyz/linearizable_read",
            "/version",
        ):
            resp = await client.get(path)
            out[path] = (resp.status, await resp.text())
        member.alarms = frozenset({"CORRUPT"})
        for path in ("/readyz", "/readyz?exclude=data_corruption", "/livez"):
            resp = await client.get(path)
            out["corrupt " + path] = (resp.status, await resp.text())
        member.alarms = frozenset()
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
    assert member.asked[:3] == [False, True, False]
    assert member.excluded[:3] == [frozenset(), frozenset(), frozenset({"NOSPACE", "CORRUPT"})]
    assert out["/livez"] == (200, "ok\n")
    assert out["/readyz"] == (200, "ok\n")
    assert out["/readyz?verbose"] == (
        200,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n",
    )
    assert out["/readyz/linearizable_read"] == (200, "ok\n")
    assert out["corrupt /readyz"][0] == 503
    assert "[-]data_corruption failed: alarm activated: CORRUPT\n" in out["corrupt /readyz"][1]
    assert out["corrupt /readyz?exclude=data_corruption"] == (200, "ok\n")
    assert out["corrupt /livez"] == (200, "ok\n")
    assert json.loads(out["/version"][1]) == {
        "etcdserver": ETCD_VERSION,
        "etcdcluster": ETCD_CLUSTER_VERSION,
    }
    assert out["down /health"][0] == 503
    assert json.loads(out["down /health"][1]) == {"health": "false", "reason": "RAFT NO LEADER"}
    assert out["down /readyz"][0] == 503
    assert "[-]linearizable_read failed: etcdserver: no leader" in out["down /readyz"][1]
    assert out["down /livez"][0] == 503  # etcd's livez reads too
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


def test_debug_vars_only_where_asked() -> None:
    """``/debug/vars`` is a client URL's (etcd does not serve it on --listen-metrics-urls);
    GET only, as etcd's handler (405 with ``Allow: GET`` otherwise, HEAD included)."""

    async def ask(client_url: bool) -> list[tuple[int, str, str | None]]:
        out = []
        app = make_app(FakeMember(), access=AccessPolicy() if client_url else None)
        async with TestClient(TestServer(app)) as client:
            for method in ("GET", "POST", "HEAD"):
                resp = await client.request(method, "/debug/vars")
                out.append((resp.status, await resp.text(), resp.headers.get("Allow")))
            resp = await client.get("/debug/vars")
            out.append((resp.status, resp.headers["Content-Type"], None))
        return out

    assert asyncio.run(ask(True)) == [
        (200, '{\n"cmdline": ["petcd"]\n}\n', None),
        (405, "Method Not Allowed\n", "GET"),
        (405, "", "GET"),
        (200, "application/json; charset=utf-8", None),
    ]
    assert [status for status, _, _ in asyncio.run(ask(False))] == [404, 404, 404, 404]
