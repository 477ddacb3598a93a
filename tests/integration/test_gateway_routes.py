"""The JSON gateway's Election, Lock, Maintenance and Cluster routes on a real member, with curl
and urllib: each route's answer, the two server streams (``/v3/election/observe``: the
leader's kv, then its puts; ``/v3/maintenance/snapshot``: 32 KiB base64 chunks with the bytes
remaining, then the SHA-256, the same bytes as etcdctl's gRPC snapshot), etcd's error bodies and
HTTP statuses, and the ``Authorization`` header while auth is on."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.petcd_proc import ETCDCTL_BIN, PetcdProcess, etcdctl

pytestmark = [
    pytest.mark.skipif(not os.path.exists(ETCDCTL_BIN), reason="etcdctl not installed"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]

NO_LEADER_KEY = '"leader" field must be provided'


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _post(endpoint: str, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    """(HTTP status, decoded JSON answer) of a unary route."""
    data = body if isinstance(body, str) else json.dumps(body)
    request = urllib.request.Request(f"http://{endpoint}{path}", data=data.encode())
    if token is not None:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            assert r.headers["Content-Type"] == "application/json"
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _ok(endpoint: str, path: str, body: Any, token: str | None = None) -> Any:
    status, answer = _post(endpoint, path, body, token)
    assert status == 200, (path, answer)
    return answer


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": message, "code": code, "message": message}


def _curl(url: str, body: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["curl", "-sS", "-N", "-D", "/dev/stderr", "-X", "POST", "-d", body, *args, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ctl(endpoint: str, *args: str) -> str:
    out = etcdctl(endpoint, *args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    m = PetcdProcess(tmp_path_factory.mktemp("gw-routes") / "data", name="gwroutes")
    m.start()
    try:
        yield m
    finally:
        m.stop()


def test_election_campaign_proclaim_leader_resign(member: PetcdProcess) -> None:
    ep = member.endpoint
    for prefix in ("/v3", "/v3beta"):
        name = _b64(f"gw-election{prefix}")
        got = _ok(ep, f"{prefix}/election/campaign", {"name": name, "value": _b64("v1")})
        leader = got["leader"]
        assert leader["name"] == name
        assert leader["rev"] == got["header"]["revision"]  # int64 as a string
        assert base64.b64decode(leader["key"]) == (
            f"gw-election{prefix}/{int(leader['lease']):x}".encode()
        )
        proclaimed = _ok(ep, f"{prefix}/election/proclaim", {"leader": leader, "value": _b64("v2")})
        now = _ok(ep, f"{prefix}/election/leader", {"name": name})
        assert (now["kv"]["key"], base64.b64decode(now["kv"]["value"])) == (leader["key"], b"v2")
        assert now["kv"]["mod_revision"] == proclaimed["header"]["revision"]
        _ok(ep, f"{prefix}/election/resign", {"leader": leader})
        assert _post(ep, f"{prefix}/election/leader", {"name": name}) == (
            500,
            _error(2, "election: no leader"),
        )
        # The key is gone: a proclaim with the old leader key is refused.
        assert _post(
            ep, f"{prefix}/election/proclaim", {"leader": leader, "value": _b64("v3")}
        ) == (500, _error(2, "election: not leader"))


def test_election_errors_are_etcds(member: PetcdProcess) -> None:
    ep = member.endpoint
    # etcd's e2e TestV3CurlProclaimMissiongLeaderKeyNoTLS and ...ResignMissiongLeaderKey...
    assert _post(ep, "/v3/election/proclaim", {"value": _b64("v2")}) == (
        500,
        _error(2, NO_LEADER_KEY),
    )
    assert _post(ep, "/v3/election/resign", "{}") == (500, _error(2, NO_LEADER_KEY))
    assert _post(ep, "/v3/election/campaign", {"name": _b64("x"), "lease": 123}) == (
        500,
        _error(2, "etcdserver: requested lease not found"),
    )
    status, answer = _post(ep, "/v3/election/campaign", "xyz")
    assert (status, answer["code"]) == (400, 3)  # grpc-gateway: the body is not a request


def test_observe_streams_the_leader_and_its_proclamations(member: PetcdProcess) -> None:
    ep = member.endpoint
    name = _b64("gw-observed")
    observe = _curl(f"http://{ep}/v3/election/observe", json.dumps({"name": name}))
    try:
        assert observe.stdout is not None and observe.stderr is not None
        leader = _ok(ep, "/v3/election/campaign", {"name": name, "value": _b64("a")})["leader"]
        first = json.loads(observe.stdout.readline())["result"]
        assert (first["kv"]["key"], first["kv"]["value"]) == (leader["key"], _b64("a"))
        assert first["kv"]["create_revision"] == leader["rev"]
        for value in ("b", "c"):
            _ok(ep, "/v3/election/proclaim", {"leader": leader, "value": _b64(value)})
            event = json.loads(observe.stdout.readline())["result"]
            assert base64.b64decode(event["kv"]["value"]) == value.encode()
            assert event["header"]["revision"] == event["kv"]["mod_revision"]
        assert observe.poll() is None  # a stream that stays open
        headers = observe.stderr.readline() + observe.stderr.readline()
        assert headers.startswith("HTTP/1.1 200")
        _ok(ep, "/v3/election/resign", {"leader": leader})
    finally:
        observe.kill()
        observe.wait()


def test_lock_waits_for_the_holder_to_unlock(member: PetcdProcess) -> None:
    ep = member.endpoint
    name = _b64("gw-lock")
    held = _ok(ep, "/v3/lock/lock", {"name": name})
    assert base64.b64decode(held["key"]).startswith(b"gw-lock/")
    waiter = _curl(f"http://{ep}/v3/lock/lock", json.dumps({"name": name}))
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=1.5)  # the lock is held
        unlocked = _ok(ep, "/v3/lock/unlock", {"key": held["key"]})
        out, _ = waiter.communicate(timeout=20)
        second = json.loads(out)
        assert second["key"] != held["key"]
        assert int(second["header"]["revision"]) == int(unlocked["header"]["revision"])
        _ok(ep, "/v3/lock/unlock", {"key": second["key"]})
    finally:
        waiter.kill()
        waiter.wait()
    assert _post(ep, "/v3/lock/lock", {"name": name, "lease": 99}) == (
        500,
        _error(2, "etcdserver: requested lease not found"),
    )


def test_a_client_that_goes_away_gives_up_its_place(member: PetcdProcess) -> None:
    ep = member.endpoint
    held = _ok(ep, "/v3/lock/lock", {"name": _b64("gw-gone")})
    leader = _ok(ep, "/v3/election/campaign", {"name": _b64("gw-gone-el")})["leader"]
    waiters = [
        _curl(f"http://{ep}/v3/lock/lock", json.dumps({"name": _b64("gw-gone")})),
        _curl(f"http://{ep}/v3/election/campaign", json.dumps({"name": _b64("gw-gone-el")})),
    ]

    def keys(prefix: str) -> list[str]:
        return _ctl(ep, "get", "--prefix", "--keys-only", prefix).split()

    deadline = time.monotonic() + 10
    while len(keys("gw-gone/")) + len(keys("gw-gone-el/")) < 4:  # both waiting, keys put
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for w in waiters:
        w.kill()
        w.wait()
    # The waiting lock's key is deleted and the candidate resigns, as for a gRPC client.
    while keys("gw-gone/") + keys("gw-gone-el/") != [
        base64.b64decode(held["key"]).decode(),
        base64.b64decode(leader["key"]).decode(),
    ]:
        assert time.monotonic() < deadline, keys("gw-gone")
        time.sleep(0.05)
    _ok(ep, "/v3/lock/unlock", {"key": held["key"]})
    _ok(ep, "/v3/election/resign", {"leader": leader})


def test_maintenance_routes(member: PetcdProcess) -> None:
    ep = member.endpoint
    _ctl(ep, "put", "gw/m", "1")
    hashed = _ok(ep, "/v3/maintenance/hash", "{}")
    assert isinstance(hashed["hash"], int) and "revision" in hashed["header"]
    hashkv = _ok(ep, "/v3/maintenance/hashkv", {"revision": 0})
    grpc_hashkv = json.loads(_ctl(ep, "endpoint", "hashkv", "-w", "json"))[0]["HashKV"]
    assert (hashkv["hash"], hashkv["compact_revision"]) == (grpc_hashkv["hash"], "-1")
    future = int(hashkv["header"]["revision"]) + 100
    assert _post(ep, "/v3/maintenance/hashkv", {"revision": future}) == (
        400,
        _error(11, "etcdserver: mvcc: required revision is a future revision"),
    )
    assert _ok(ep, "/v3/maintenance/defragment", "{}") == {}
    assert _post(ep, "/v3/maintenance/transfer-leadership", {"targetID": 5}) == (
        400,
        _error(9, "etcdserver: bad leader transferee"),
    )
    # No alarm; activating NONE raises none (etcd's e2e TestV3CurlMaintenanceAlarmMissiongAlarm).
    assert "alarms" not in _ok(ep, "/v3/maintenance/alarm", {"action": "GET"})
    assert "alarms" not in _ok(ep, "/v3/maintenance/alarm", {"action": "ACTIVATE"})
    assert "alarms" not in _ok(ep, "/v3/maintenance/alarm", {"action": "GET"})
    assert "errors" not in _ok(ep, "/v3/maintenance/status", "{}")
    assert _ctl(ep, "alarm", "list") == ""
    # GET of one type lists only that type's alarms.
    me = _ok(ep, "/v3/maintenance/status", "{}")["header"]["member_id"]
    nospace = {"memberID": me, "alarm": "NOSPACE"}
    raised = _ok(ep, "/v3/maintenance/alarm", {"action": "ACTIVATE", **nospace})
    try:
        assert raised["alarms"] == [nospace]
        for alarm, listed in (("NOSPACE", [nospace]), ("CORRUPT", None), ("NONE", [nospace])):
            got = _ok(ep, "/v3/maintenance/alarm", {"action": "GET", "alarm": alarm})
            assert got.get("alarms") == listed, alarm
    finally:
        _ok(ep, "/v3/maintenance/alarm", {"action": "DEACTIVATE", **nospace})
    assert _ctl(ep, "alarm", "list") == ""


def test_snapshot_stream_is_the_grpc_snapshot(member: PetcdProcess, tmp_path: Path) -> None:
    ep = member.endpoint
    for i in range(3):
        _ctl(ep, "put", f"gw/big/{i}", os.urandom(15_000).hex())  # 30 KB each
    _ctl(ep, "snapshot", "save", str(tmp_path / "grpc.db"))
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-D",
            "-",
            "-X",
            "POST",
            "-d",
            "{}",
            f"http://{ep}/v3/maintenance/snapshot",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    head, _, body = done.stdout.partition("\n\n")  # text mode: \r\n read as \n
    assert "Transfer-Encoding: chunked" in head
    chunks = [json.loads(line)["result"] for line in body.splitlines()]
    assert len(chunks) >= 4  # more than 90 KB in 32 KiB chunks, then the digest
    blobs = [base64.b64decode(c["blob"]) for c in chunks]
    data = b"".join(blobs[:-1])
    remaining = [int(c.get("remaining_bytes", "0")) for c in chunks]
    assert remaining == [
        len(data) - sum(map(len, blobs[: i + 1])) for i in range(len(blobs) - 1)
    ] + [0]
    assert all(len(b) == 32 * 1024 for b in blobs[:-2])
    assert blobs[-1] == hashlib.sha256(data).digest()
    # etcdctl writes the chunks and the digest, as they came over gRPC.
    assert (tmp_path / "grpc.db").read_bytes() == data + blobs[-1]


def test_cluster_member_routes(member: PetcdProcess) -> None:
    ep = member.endpoint
    listed = _ok(ep, "/v3/cluster/member/list", "{}")
    (me,) = listed["members"]
    assert me["name"] == "gwroutes" and me["clientURLs"] == [f"http://{ep}"]
    assert _ok(ep, "/v3/cluster/member/list", {"linearizable": True})["members"] == [me]
    added = _ok(
        ep, "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:9"], "isLearner": True}
    )
    learner = added["member"]
    assert (learner["peerURLs"], learner["isLearner"]) == (["http://127.0.0.1:9"], True)
    assert sorted(m["ID"] for m in added["members"]) == sorted([me["ID"], learner["ID"]])
    assert _post(ep, "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:9"]}) == (
        400,
        _error(9, "etcdserver: Peer URLs already exists"),
    )
    updated = _ok(
        ep, "/v3/cluster/member/update", {"ID": learner["ID"], "peerURLs": ["http://127.0.0.1:8"]}
    )
    assert [m["peerURLs"] for m in updated["members"] if m["ID"] == learner["ID"]] == [
        ["http://127.0.0.1:8"]
    ]
    assert _post(ep, "/v3/cluster/member/promote", {"ID": learner["ID"]}) == (
        400,
        _error(9, "etcdserver: can only promote a learner member which is in sync with leader"),
    )
    assert _ok(ep, "/v3/cluster/member/remove", {"ID": learner["ID"]})["members"] == [me]
    for path in ("remove", "promote"):
        assert _post(ep, f"/v3/cluster/member/{path}", {"ID": learner["ID"]}) == (
            404,
            _error(5, "etcdserver: member not found"),
        )


def test_auth_takes_the_token_from_the_authorization_header(tmp_path: Path) -> None:
    m = PetcdProcess(tmp_path / "data", name="gwauth", extra_args=["--bcrypt-cost", "4"])
    m.start()
    try:
        ep = m.endpoint
        for args in (
            ("user", "add", "root:rootpw"),
            ("user", "add", "alice:alicepw"),
            ("role", "add", "app"),
            ("role", "grant-permission", "app", "readwrite", "app/", "--prefix"),
            ("user", "grant-role", "alice", "app"),
            ("auth", "enable"),
        ):
            _ctl(ep, *args)

        def token(name: str, password: str) -> str:
            answer = _ok(ep, "/v3/auth/authenticate", {"name": name, "password": password})
            return str(answer["token"])

        alice, root = token("alice", "alicepw"), token("root", "rootpw")
        # Election and Lock: the keys under the name need the caller's permission.
        got = _ok(ep, "/v3/election/campaign", {"name": _b64("app")}, alice)
        assert base64.b64decode(got["leader"]["key"]).startswith(b"app/")
        denied = _error(2, "etcdserver: permission denied")
        assert _post(ep, "/v3/election/campaign", {"name": _b64("other")}, alice) == (500, denied)
        assert _post(ep, "/v3/lock/lock", {"name": _b64("other")}, alice) == (500, denied)
        assert _post(ep, "/v3/election/leader", {"name": _b64("app")}) == (
            500,
            _error(2, "etcdserver: user name is empty"),
        )
        # Maintenance: root only, with the auth store's own errors (UNKNOWN), as etcd's.
        for path in ("hash", "hashkv", "defragment"):
            assert _post(ep, f"/v3/maintenance/{path}", "{}", alice) == (
                500,
                _error(2, "auth: permission denied"),
            )
            assert _post(ep, f"/v3/maintenance/{path}", "{}", "bogus") == (
                500,
                _error(2, "auth: invalid auth token"),
            )
            _ok(ep, f"/v3/maintenance/{path}", "{}", root)
        snapshot = _curl(
            f"http://{ep}/v3/maintenance/snapshot", "{}", "-H", f"Authorization: {alice}"
        )
        out, head = snapshot.communicate(timeout=20)
        assert head.startswith("HTTP/1.1 500") and "Grpc-Metadata-Content-Type" not in head
        assert json.loads(out) == {
            "error": {
                "grpc_code": 2,
                "http_code": 500,
                "message": "auth: permission denied",
                "http_status": "Internal Server Error",
            }
        }
        snapshot = _curl(
            f"http://{ep}/v3/maintenance/snapshot", "{}", "-H", f"Authorization: {root}"
        )
        out, head = snapshot.communicate(timeout=20)
        assert "Grpc-Metadata-Content-Type: application/grpc" in head
        assert len(out.splitlines()) >= 2 and '"blob":' in out
        # Cluster: changes are root's; the list is anyone's.
        assert _post(ep, "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:9"]}, alice) == (
            403,
            _error(7, "etcdserver: permission denied"),
        )
        assert len(_ok(ep, "/v3/cluster/member/list", "{}", alice)["members"]) == 1
        # The same refusal over gRPC.
        out = etcdctl(ep, "--user", "alice:alicepw", "endpoint", "hashkv")
        assert "code = Unknown desc = auth: permission denied" in out.stderr
    finally:
        m.stop()
