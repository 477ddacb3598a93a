"""The JSON gateway's streams on a real member, with curl and an HTTP client: ``POST /v3/watch``
and ``POST /v3/lease/keepalive`` (grpc-gateway's chunked ``{"result":...}`` lines), a client
that goes away cancels its watch (etcd's watcher gauges back to 0), ``--max-concurrent-streams``
bounds the gateway calls in flight as etcd's gateway connection does, and auth's token comes
from the ``Authorization`` header."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.petcd_proc import ETCDCTL_BIN, PetcdProcess, etcdctl

pytestmark = [
    pytest.mark.skipif(not os.path.exists(ETCDCTL_BIN), reason="etcdctl not installed"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _ok(endpoint: str, *args: str) -> str:
    out = etcdctl(endpoint, *args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def _gauges(endpoint: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    names = ("etcd_debugging_mvcc_watch_stream_total", "etcd_debugging_mvcc_watcher_total")
    return {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.split(" ")[0] in names}


def _wait_gauges(endpoint: str, streams: int, watchers: int) -> None:
    want = {
        "etcd_debugging_mvcc_watch_stream_total": float(streams),
        "etcd_debugging_mvcc_watcher_total": float(watchers),
    }
    deadline = time.monotonic() + 10
    while (got := _gauges(endpoint)) != want:
        assert time.monotonic() < deadline, got
        time.sleep(0.1)


def _curl(url: str, body: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["curl", "-sS", "-N", "-X", "POST", "-d", body, *args, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    m = PetcdProcess(tmp_path_factory.mktemp("gw-streams") / "data", name="gwstreams")
    m.start()
    try:
        yield m
    finally:
        m.stop()


def test_watch_events_arrive_over_http_with_curl(member: PetcdProcess) -> None:
    ep = member.endpoint
    for prefix in ("/v3", "/v3beta"):
        key = f"gw/w{prefix}"
        _ok(ep, "put", key, "v1")
        body = json.dumps({"create_request": {"key": _b64(key), "start_revision": 1}})
        curl = _curl(f"http://{ep}{prefix}/watch", body)
        try:
            assert curl.stdout is not None
            created = json.loads(curl.stdout.readline())["result"]
            assert created["created"] is True and "watch_id" not in created  # id 0 left out
            history = json.loads(curl.stdout.readline())["result"]  # from revision 1
            assert [base64.b64decode(e["kv"]["value"]) for e in history["events"]] == [b"v1"]
            _ok(ep, "put", key, f"live{prefix}")
            live = json.loads(curl.stdout.readline())["result"]
            (event,) = live["events"]
            assert base64.b64decode(event["kv"]["value"]) == f"live{prefix}".encode()
            assert isinstance(event["kv"]["mod_revision"], str)  # int64 as a string
            assert live["header"]["revision"] == event["kv"]["mod_revision"]
            # The body has ended long ago: the stream stays open, as etcd's does.
            assert curl.poll() is None
        finally:
            curl.kill()
            curl.wait()
    _wait_gauges(ep, 0, 0)


def test_a_client_that_goes_away_cancels_its_watch(member: PetcdProcess) -> None:
    ep = member.endpoint
    _wait_gauges(ep, 0, 0)

    async def watch() -> None:
        body = "".join(
            json.dumps({"create_request": {"key": _b64(f"gw/gone/{i}")}}) for i in range(3)
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://{ep}/v3/watch", data=body) as resp,
        ):
            assert resp.status == 200
            ids = [json.loads(await resp.content.readline())["result"] for _ in range(3)]
            assert [r.get("watch_id", "0") for r in ids] == ["0", "1", "2"]
            await asyncio.to_thread(_wait_gauges, ep, 1, 3)
        # Leaving the block closed the connection mid-stream.

    asyncio.run(watch())
    _wait_gauges(ep, 0, 0)


def test_keepalive_answers_the_ttl(member: PetcdProcess) -> None:
    ep = member.endpoint
    out = _ok(ep, "lease", "grant", "120")  # "lease 694d... granted with TTL(120s)"
    lease_id = int(out.split()[1], 16)
    body = json.dumps({"ID": str(lease_id)}) + "\n" + json.dumps({"ID": 12345})
    done = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-d", body, f"http://{ep}/v3/lease/keepalive"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    # The stream ends with the body (etcd's LeaseKeepAlive returns on the client's EOF).
    assert done.returncode == 0, done.stderr
    first, missing = (json.loads(line)["result"] for line in done.stdout.splitlines())
    assert (first["ID"], first["TTL"]) == (str(lease_id), "120")
    assert (missing["ID"], "TTL" in missing) == ("12345", False)  # TTL 0: no such lease


def test_max_concurrent_streams_bounds_the_gateway_calls(tmp_path: Path) -> None:
    m = PetcdProcess(tmp_path / "data", name="gwlimit", extra_args=["--max-concurrent-streams=2"])
    m.start()
    try:
        url = f"http://{m.endpoint}"
        watch = json.dumps({"create_request": {"key": _b64("foo")}})
        watches = [_curl(f"{url}/v3/watch", watch) for _ in range(2)]
        try:
            for w in watches:
                assert w.stdout is not None and '"created":true' in w.stdout.readline()
            rng = ["curl", "-sS", "-m", "2", "-X", "POST", "-d", '{"key":"Zm9v"}']
            waited = subprocess.run([*rng, f"{url}/v3/kv/range"], capture_output=True, text=True)
            assert waited.returncode == 28, waited  # curl's "Operation timed out"
            # gRPC is not limited (etcd's limit is per connection; each client has its own).
            assert _ok(m.endpoint, "put", "foo", "bar") == "OK\n"
            watches[0].kill()
            watches[0].wait()
            got = subprocess.run([*rng, f"{url}/v3/kv/range"], capture_output=True, text=True)
            assert got.returncode == 0, got
            assert base64.b64decode(json.loads(got.stdout)["kvs"][0]["value"]) == b"bar"
        finally:
            for w in watches:
                w.kill()
                w.wait()
    finally:
        m.stop()


def test_auth_takes_the_token_from_the_authorization_header(tmp_path: Path) -> None:
    m = PetcdProcess(tmp_path / "data", name="gwauth", extra_args=["--bcrypt-cost", "4"])
    m.start()
    try:
        ep = m.endpoint
        for args in (
            ("user", "add", "root:rootpw"),
            ("user", "add", "alice:alicepw"),
            ("role", "add", "reader"),
            ("role", "grant-permission", "reader", "read", "app/", "--prefix"),
            ("user", "grant-role", "alice", "reader"),
            ("auth", "enable"),
        ):
            _ok(ep, *args)
        request = urllib.request.Request(
            f"http://{ep}/v3/auth/authenticate",
            data=json.dumps({"name": "alice", "password": "alicepw"}).encode(),
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            token = json.loads(r.read())["token"]

        def first_answer(key: str, *headers: str) -> Any:
            body = json.dumps({"create_request": {"key": _b64(key)}})
            curl = _curl(f"http://{ep}/v3/watch", body, *headers)
            try:
                assert curl.stdout is not None
                return json.loads(curl.stdout.readline())["result"]
            finally:
                curl.kill()
                curl.wait()

        allowed = first_answer("app/x", "-H", f"Authorization: {token}")
        assert (allowed["created"], "canceled" in allowed) == (True, False)
        denied = first_answer("other", "-H", f"Authorization: {token}")
        assert (denied["watch_id"], denied["canceled"], denied["cancel_reason"]) == (
            "-1",
            True,
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
        )
        anonymous = first_answer("app/x")
        assert anonymous["cancel_reason"] == (
            "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
        )
        _wait_gauges(ep, 0, 0)
    finally:
        m.stop()


def test_a_stream_from_before_auth_gets_no_watch_after_it(tmp_path: Path) -> None:
    """A /v3/watch stream opened while auth was off: once auth is on, the watches it creates
    are refused as having no user (as etcd's gRPC streams are); its first watch stays."""
    m = PetcdProcess(tmp_path / "data", name="gwlate", extra_args=["--bcrypt-cost", "4"])
    m.start()
    try:
        ep = m.endpoint

        async def watch() -> list[Any]:
            auth_on = asyncio.Event()

            async def body() -> AsyncIterator[bytes]:
                yield json.dumps({"create_request": {"key": _b64("late/a")}}).encode()
                await auth_on.wait()
                yield json.dumps({"create_request": {"key": _b64("late/b")}}).encode()

            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://{ep}/v3/watch", data=body()) as resp,
            ):
                first = json.loads(await resp.content.readline())["result"]
                for args in (
                    ("user", "add", "root:rootpw"),
                    ("user", "grant-role", "root", "root"),
                    ("auth", "enable"),
                ):
                    await asyncio.to_thread(_ok, ep, *args)
                auth_on.set()
                second = json.loads(await resp.content.readline())["result"]
                return [first, second]

        first, second = asyncio.run(watch())
        assert (first["created"], "canceled" in first) == (True, False)
        assert (second["watch_id"], second["canceled"], second["cancel_reason"]) == (
            "-1",
            True,
            "rpc error: code = InvalidArgument desc = etcdserver: user name is empty",
        )
    finally:
        m.stop()
