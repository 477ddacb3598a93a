"""etcd's v2 API on petcd clusters (``--enable-v2``): replication, durability, TTL expiry,
snapshots, and the requests Patroni's etcd (v2) DCS makes through python-etcd."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.petcd_proc import PetcdProcess, run_petcd

Answer = tuple[int, dict[str, str], Any]


def v2(
    p: PetcdProcess,
    method: str,
    path: str,
    form: dict[str, str] | None = None,
    query: str = "",
    timeout_s: float = 20,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", p.client_port, timeout=timeout_s)
    try:
        body, headers = None, {}
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path + (f"?{query}" if query else ""), body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw or b"null")
    finally:
        conn.close()


def _cluster(base: Path, *extra: str) -> list[PetcdProcess]:
    members = [PetcdProcess(base / n / "data", name=n) for n in ("a", "b", "c")]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        m.extra_args = [
            "--initial-cluster",
            initial,
            "--initial-cluster-token",
            "itest-v2",
            "--enable-v2",
            *extra,
        ]
    return members


def _start(members: list[PetcdProcess]) -> None:
    for m in members:
        m.start(wait=False)
    for m in members:
        m.wait_ready()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[PetcdProcess]]:
    members = _cluster(tmp_path)
    try:
        _start(members)
        yield members
    finally:
        for m in members:
            m.stop()


def _wait_for(cond: Any, what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _tree(p: PetcdProcess) -> Any:
    status, headers, body = v2(p, "GET", "/v2/keys/", query="recursive=true&sorted=true")
    assert status == 200
    return body, headers["x-etcd-index"]


def _leader(members: list[PetcdProcess]) -> PetcdProcess:
    _, _, lead = v2(members[0], "GET", "/v2/members/leader")
    return next(m for m in members if m.name == lead["name"])


def test_v2_cluster_replicates_expires_and_survives_kill(cluster: list[PetcdProcess]) -> None:
    # Every member mirrors the same membership: 3 members added, 3 published, the version.
    _wait_for(
        lambda: {v2(m, "GET", "/v2/keys/")[1]["x-etcd-index"] for m in cluster} == {"7"},
        "the members' v2 indexes are not all 7",
    )
    leader = _leader(cluster)
    a, b = [m for m in cluster if m is not leader]
    status, _, body = v2(a, "PUT", "/v2/keys/svc/x", {"value": "1"})  # a follower proposes
    assert status == 201 and body["node"]["modifiedIndex"] == 8
    status, _, body = v2(b, "GET", "/v2/keys/svc/x", query="quorum=true")
    assert (status, body["node"]["value"]) == (200, "1")
    status, _, body = v2(b, "POST", "/v2/keys/q", {"value": "job"})
    assert body["node"]["key"] == "/q/00000000000000000009"
    status, _, body = v2(leader, "PUT", "/v2/keys/svc/x", {"value": "2", "prevValue": "1"})
    assert (status, body["action"]) == (200, "compareAndSwap")
    _wait_for(lambda: len({json.dumps(_tree(m)) for m in cluster}) == 1, "trees differ")

    # TTL: the leader's SYNC expires the key on every member; a watch sees "expire".
    status, headers, _ = v2(a, "PUT", "/v2/keys/lock", {"value": "me", "ttl": "1"})
    index = int(headers["x-etcd-index"])
    _wait_for(
        lambda: all(v2(m, "GET", "/v2/keys/lock")[0] == 404 for m in cluster),
        "the key with a ttl did not expire everywhere",
    )
    for m in cluster:
        _, _, ev = v2(m, "GET", "/v2/keys/lock", query=f"wait=true&waitIndex={index + 1}")
        assert ev["action"] == "expire" and ev["prevNode"]["value"] == "me"

    # kill -9 loses nothing acknowledged, and the killed member catches up on restart.
    acknowledged = []
    for i in range(20):
        status, _, _ = v2(leader, "PUT", f"/v2/keys/acked/{i:02d}", {"value": str(i)})
        assert status == 201
        acknowledged.append(i)
    for m in cluster:
        m.kill()
    for m in cluster:
        m.start(wait=False)
    for m in cluster:
        m.wait_ready()
    leader = _leader(cluster)
    v2(leader, "PUT", "/v2/keys/after", {"value": "restart"})
    for m in cluster:
        _wait_for(lambda m=m: v2(m, "GET", "/v2/keys/after")[0] == 200, "no catch up")
        status, _, body = v2(m, "GET", "/v2/keys/acked", query="sorted=true")
        assert [n["value"] for n in body["node"]["nodes"]] == [str(i) for i in acknowledged]
    _wait_for(lambda: len({json.dumps(_tree(m)) for m in cluster}) == 1, "trees differ")
    # The event history is not durable: an index before the restart is cleared (401).
    status, _, body = v2(cluster[0], "GET", "/v2/keys/svc/x", query="wait=true&waitIndex=8")
    assert (status, body["errorCode"]) == (400, 401)


def test_v2_tree_travels_in_a_raft_snapshot(tmp_path: Path) -> None:
    members = _cluster(
        tmp_path, "--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "5"
    )
    try:
        _start(members)
        leader = _leader(members)
        follower = next(m for m in members if m is not leader)
        follower.kill()
        for i in range(60):
            status, _, _ = v2(leader, "PUT", f"/v2/keys/s/{i:02d}", {"value": str(i)})
            assert status == 201
        follower.start()
        _wait_for(
            lambda: any(r["msg"] == "applied snapshot" for r in follower.log_records()),
            "the snapshot was never installed",
            30,
        )
        _wait_for(lambda: _tree(follower) == _tree(leader), "the follower's tree differs", 30)
        v2(leader, "PUT", "/v2/keys/s/after", {"value": "x"})
        _wait_for(lambda: v2(follower, "GET", "/v2/keys/s/after")[0] == 200, "not applied")
        follower.kill()
        follower.start()
        _wait_for(lambda: _tree(follower) == _tree(leader), "lost after restart", 30)
    finally:
        for m in members:
            m.stop()


@pytest.fixture
def single(tmp_path: Path) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path / "data", extra_args=["--enable-v2"])
    try:
        p.start()
        yield p
    finally:
        p.stop()


def test_v2_patroni_requests(single: PetcdProcess) -> None:
    """What Patroni's etcd DCS sends through python-etcd (driven directly: python-etcd's last
    release is from 2018): the leader key with a ttl, taken with prevExist=false, kept with a
    prevValue compare-and-swap, watched with wait/waitIndex on the cluster's directory,
    released with a prevValue delete."""
    p = single
    scope = "/v2/keys/service/batman"
    status, _, body = v2(p, "PUT", f"{scope}/initialize", {"value": "6957", "prevExist": "false"})
    assert status == 201
    status, _, body = v2(p, "PUT", f"{scope}/initialize", {"value": "1", "prevExist": "false"})
    assert (status, body["errorCode"]) == (412, 105)
    status, _, body = v2(
        p, "PUT", f"{scope}/leader", {"value": "pg0", "ttl": "30", "prevExist": "false"}
    )
    assert status == 201 and body["node"]["ttl"] == 30
    status, _, body = v2(
        p, "PUT", f"{scope}/leader", {"value": "pg1", "ttl": "30", "prevExist": "false"}
    )
    assert (status, body["errorCode"], body["cause"]) == (412, 105, "/service/batman/leader")
    status, _, body = v2(
        p, "PUT", f"{scope}/leader", {"value": "pg0", "ttl": "30", "prevValue": "pg0"}
    )
    assert (status, body["action"]) == (200, "compareAndSwap")
    status, _, body = v2(
        p, "PUT", f"{scope}/leader", {"value": "pg1", "ttl": "30", "prevValue": "pg1"}
    )
    assert (status, body["errorCode"], body["cause"]) == (412, 101, "[pg1 != pg0]")
    status, headers, cluster = v2(p, "GET", scope, query="recursive=true")
    assert {n["key"] for n in cluster["node"]["nodes"]} == {
        "/service/batman/initialize",
        "/service/batman/leader",
    }
    index = int(headers["x-etcd-index"])
    answer: list[Answer] = []

    def watch() -> None:
        answer.append(v2(p, "GET", scope, query=f"wait=true&waitIndex={index + 1}&recursive=true"))

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.5)
    status, _, _ = v2(p, "DELETE", f"{scope}/leader", query="prevValue=pg0")
    assert status == 200
    t.join(10)
    assert answer and answer[0][2]["action"] == "compareAndDelete"
    assert answer[0][2]["node"]["key"] == "/service/batman/leader"
    status, _, body = v2(
        p, "PUT", f"{scope}/members/pg0", {"value": "{}", "ttl": "30", "prevExist": "true"}
    )
    assert (status, body["errorCode"]) == (404, 100)


def test_v2_and_a_write_only_deprecation_stage_are_refused() -> None:
    out = run_petcd("--enable-v2", "--v2-deprecation=write-only")
    assert out.returncode == 1
    assert "--enable-v2 and --v2-deprecation=write-only are mutually exclusive" in out.stderr


def test_v2_content_refused_at_the_write_only_stage(tmp_path: Path) -> None:
    """etcd's assertNoV2StoreContent: a data dir holding v2 keys does not start with
    --v2-deprecation=write-only (and starts, with a warning, at the default stage)."""
    p = PetcdProcess(tmp_path / "data", extra_args=["--enable-v2"])
    try:
        p.start()
        assert v2(p, "PUT", "/v2/keys/foo", {"value": "bar"})[0] == 201
        p.terminate()  # as etcd's check, it reads what the backend holds at start
    finally:
        p.stop()
    p.extra_args = ["--v2-deprecation=write-only"]
    p.start(wait=False)
    assert p.proc is not None and p.proc.wait(timeout=30) == 1
    assert "detected disallowed custom content in v2store" in p.log_tail()
    p.extra_args = ["--enable-v2"]
    try:
        p.start()
        assert v2(p, "GET", "/v2/keys/foo")[2]["node"]["value"] == "bar"
        assert "detected custom v2store content" in p.log_path.read_text()
    finally:
        p.stop()


def test_petcd_serves_as_a_discovery_service(single: PetcdProcess, tmp_path: Path) -> None:
    """Three petcd members bootstrap through a discovery URL on a petcd with --enable-v2 (the
    service etcd's v2 discovery protocol needs: prevExist creates, waits on the directory)."""
    token = "/v2/keys/discovery/6c007a14"
    assert v2(single, "PUT", f"{token}/_config/size", {"value": "3"})[0] == 201
    url = f"http://127.0.0.1:{single.client_port}{token}"
    members = [PetcdProcess(tmp_path / n / "data", name=n) for n in ("d1", "d2", "d3")]
    for m in members:
        peer = f"http://127.0.0.1:{m.peer_port}"
        client = f"http://127.0.0.1:{m.client_port}"
        m.args = [
            "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--discovery", url, "--enable-v2",
        ]  # fmt: skip
    try:
        _start(members)
        _, _, listed = v2(members[0], "GET", "/v2/members")
        assert sorted(m["name"] for m in listed["members"]) == ["d1", "d2", "d3"]
        _, _, registered = v2(single, "GET", token, query="sorted=true")
        assert len([n for n in registered["node"]["nodes"] if "_config" not in n["key"]]) == 3
    finally:
        for m in members:
            m.stop()
