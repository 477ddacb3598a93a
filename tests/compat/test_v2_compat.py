"""etcd's v2 API (``--enable-v2``): the same HTTP requests and ``ETCDCTL_API=2 etcdctl``
commands to etcd 3.4 and to petcd, answers compared.

Both servers are fresh single members started with ``--enable-v2`` for this module and see the
same requests in the same order, so their v2 indexes (``modifiedIndex``, ``X-Etcd-Index``, the
error ``index``) must be equal: a fresh member is at 3 (its membership mirrored into ``/0``).
Normalised: the cluster id, ``X-Raft-Index`` (etcd proposes a cluster version entry petcd does
not), expiration times and ``ttl`` figures (the clocks of two processes).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess

pytestmark = pytest.mark.compat

Answer = tuple[int, dict[str, str], str]


class V2Server(ServerProcess):
    def command(self) -> list[str]:
        return [*super().command(), "--enable-v2=true"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[V2Server, V2Server]]:
    if not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)):
        pytest.skip("real etcd / etcdctl not installed")
    base = tmp_path_factory.mktemp("v2compat")
    etcd = V2Server("etcd", base / "etcd" / "data")
    petcd = V2Server("petcd", base / "petcd" / "data")
    try:
        etcd.start()
        petcd.start()
        yield etcd, petcd
    finally:
        etcd.stop()
        petcd.stop()


def request(
    server: ServerProcess,
    method: str,
    path: str,
    form: dict[str, str] | list[tuple[str, str]] | None = None,
    query: str = "",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=20)
    try:
        hdrs = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path + (f"?{query}" if query else ""), body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read().decode()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


_EXPIRATION = re.compile(r'"expiration":"[^"]+"')
_TTL = re.compile(r'"ttl":-?\d+')


def normalise(answer: Answer) -> tuple[int, dict[str, str], str]:
    status, headers, body = answer
    kept = {
        k: v
        for k, v in headers.items()
        if k in ("content-type", "x-etcd-index", "allow")
        or k.startswith("access-control")
        or (k in ("x-raft-index", "x-raft-term", "x-etcd-cluster-id"))
    }
    for k in ("x-raft-index", "x-raft-term", "x-etcd-cluster-id"):
        if k in kept:
            kept[k] = "<set>"
    body = _TTL.sub('"ttl":<ttl>', _EXPIRATION.sub('"expiration":"<t>"', body))
    return status, kept, body


def both(pair: tuple[V2Server, V2Server], *args: object, **kwargs: object) -> Answer:
    """Send to both; assert equal normalised answers; return etcd's."""
    etcd, petcd = pair
    want = request(etcd, *args, **kwargs)  # type: ignore[arg-type]
    got = request(petcd, *args, **kwargs)  # type: ignore[arg-type]
    assert normalise(got) == normalise(want), (args, kwargs)
    return want


KEYS = "/v2/keys"

# (method, path, form or None, query)
SEQUENCE: list[tuple[str, str, dict[str, str] | None, str]] = [
    ("GET", KEYS, None, ""),
    ("GET", KEYS + "/", None, ""),
    ("GET", KEYS + "/nokey", None, ""),
    ("PUT", KEYS + "/foo", {"value": "bar"}, ""),
    ("PUT", KEYS + "/foo", {"value": "baz"}, ""),
    ("GET", KEYS + "/foo", None, ""),
    ("HEAD", KEYS + "/foo", None, ""),
    ("PUT", KEYS + "/foo", {"value": "x", "prevExist": "false"}, ""),
    ("PUT", KEYS + "/new", {"value": "x", "prevExist": "false"}, ""),
    ("PUT", KEYS + "/nope", {"value": "x", "prevExist": "true"}, ""),
    ("PUT", KEYS + "/foo", {"value": "u", "prevExist": "true"}, ""),
    ("PUT", KEYS + "/foo", {"value": "c", "prevValue": "wrong"}, ""),
    ("PUT", KEYS + "/foo", {"value": "c", "prevIndex": "1"}, ""),
    ("PUT", KEYS + "/foo", {"value": "c", "prevIndex": "1", "prevValue": "w"}, ""),
    ("PUT", KEYS + "/foo", {"value": "c", "prevValue": "u"}, ""),
    ("PUT", KEYS + "/foo", {"value": "d", "prevValue": "c", "prevExist": "true"}, ""),
    ("PUT", KEYS + "/foo", {"value": "e", "prevIndex": "9"}, ""),
    ("PUT", KEYS + "/dir", {"dir": "true"}, ""),
    ("PUT", KEYS + "/dir", {"dir": "true"}, ""),
    ("PUT", KEYS + "/dir", {"value": "x"}, ""),
    ("PUT", KEYS + "/dir/a", {"value": "1"}, ""),
    ("PUT", KEYS + "/dir/b/c", {"value": "2"}, ""),
    ("PUT", KEYS + "/dir/_hidden", {"value": "h"}, ""),
    ("PUT", KEYS + "/foo/under", {"value": "x"}, ""),
    ("GET", KEYS + "/dir", None, "sorted=true"),
    ("GET", KEYS + "/dir", None, "recursive=true&sorted=true"),
    ("GET", KEYS + "/dir/_hidden", None, ""),
    ("GET", KEYS + "/dir/a/b", None, ""),
    ("GET", KEYS + "/dir", None, "quorum=true&sorted=true&recursive=true"),
    ("POST", KEYS + "/queue", {"value": "first"}, ""),
    ("POST", KEYS + "/queue", {"value": "second"}, ""),
    ("GET", KEYS + "/queue", None, "sorted=true"),
    ("POST", KEYS + "/queue", {"dir": "true"}, ""),
    ("DELETE", KEYS + "/dir", None, ""),
    ("DELETE", KEYS + "/dir", None, "dir=true"),
    ("DELETE", KEYS + "/dir/a", None, "prevValue=no"),
    ("DELETE", KEYS + "/dir/a", None, "prevIndex=1"),
    ("DELETE", KEYS + "/dir/a", None, "prevValue=1"),
    ("DELETE", KEYS + "/dir/b", None, "prevValue=1"),
    ("DELETE", KEYS + "/dir", None, "recursive=true"),
    ("DELETE", KEYS + "/dir", None, "recursive=true"),
    ("PUT", KEYS + "/empty", {"dir": "true"}, ""),
    ("DELETE", KEYS + "/empty", None, "dir=true"),
    ("DELETE", KEYS + "/new", None, ""),
    ("DELETE", KEYS + "/", None, "recursive=true"),
    ("PUT", KEYS, {"value": "x"}, ""),
    ("PUT", KEYS + "/ttl", {"value": "t", "ttl": "100"}, ""),
    ("GET", KEYS + "/ttl", None, ""),
    ("PUT", KEYS + "/ttl", {"ttl": "200", "refresh": "true", "prevExist": "true"}, ""),
    ("PUT", KEYS + "/ttl", {"ttl": "", "value": "permanent", "prevExist": "true"}, ""),
    ("PUT", KEYS + "/ttl", {"refresh": "true"}, ""),
    ("PUT", KEYS + "/ttl", {"refresh": "true", "ttl": "5", "value": "v"}, ""),
    ("PUT", KEYS + "/ttl", {"ttl": "abc", "value": "v"}, ""),
    ("PUT", KEYS + "/ttl", {"value": "v", "prevIndex": "abc"}, ""),
    ("PUT", KEYS + "/ttl", {"value": "v", "prevValue": ""}, ""),
    ("PUT", KEYS + "/ttl", {"value": "v", "prevExist": "maybe"}, ""),
    ("PUT", KEYS + "/ttl", {"value": "v", "dir": "maybe"}, ""),
    ("PUT", KEYS + "/ttl", {"value": "v", "wait": "true"}, ""),
    ("GET", KEYS + "/ttl", None, "waitIndex=x&wait=true"),
    ("GET", KEYS + "/ttl", None, "recursive=2"),
    ("PUT", KEYS + "/nv", {"value": "v", "noValueOnSuccess": "true"}, ""),
    ("PUT", KEYS + "/q", None, "value=fromquery"),
    ("GET", KEYS + "/q", None, ""),
    ("PUT", KEYS + "/esc", {"value": '<a & b> \u00e9\u2028 \x01\b\f\t\n"'}, ""),
    ("GET", KEYS + "/esc", None, ""),
    ("PUT", KEYS + "/a%20b/c", {"value": "space"}, ""),
    ("GET", KEYS + "/a%20b", None, "recursive=true"),
    ("GET", KEYS + "//double//slash/", None, ""),
    ("PATCH", KEYS + "/foo", {"value": "x"}, ""),
    ("GET", KEYS + "/0", None, ""),
    ("GET", KEYS + "/foo", None, "wait=true&waitIndex=4"),
    ("GET", KEYS + "/", None, "wait=true&waitIndex=5&recursive=true"),
    ("GET", KEYS + "/dir", None, "wait=true&waitIndex=19"),
    ("GET", KEYS + "/dir/b", None, "wait=true&waitIndex=19"),
    ("GET", KEYS, None, "recursive=true&sorted=true"),
]


def test_v2_keys_requests(pair: tuple[V2Server, V2Server]) -> None:
    for method, path, form, query in SEQUENCE:
        both(pair, method, path, form, query)


def test_v2_machines_and_members(pair: tuple[V2Server, V2Server]) -> None:
    etcd, petcd = pair
    for server in pair:
        status, _, body = request(server, "GET", "/v2/machines")
        assert (status, body) == (200, server.client_url)
        status, headers, body = request(server, "GET", "/v2/members")
        members = json.loads(body)["members"]
        assert status == 200 and headers["content-type"] == "application/json"
        assert [(m["name"], m["peerURLs"], m["clientURLs"]) for m in members] == [
            ("compat", [f"http://127.0.0.1:{server.peer_port}"], [server.client_url])
        ]
        assert list(members[0]) == ["id", "name", "peerURLs", "clientURLs"]
        leader = json.loads(request(server, "GET", "/v2/members/leader")[2])
        assert leader == members[0]
    for args in (
        ("GET", "/v2/members/nothing"),
        ("DELETE", "/v2/members/abcdef"),
        ("POST", "/v2/members"),
        ("PATCH", "/v2/members"),
    ):
        want, got = request(etcd, *args), request(petcd, *args)
        assert (got[0], got[2]) == (want[0], want[2]), args


def test_v2_watch_waits_for_the_next_change(pair: tuple[V2Server, V2Server]) -> None:
    answers: dict[str, Answer] = {}

    def watch(server: V2Server) -> None:
        answers[server.target] = request(
            server, "GET", KEYS + "/watched", query="wait=true&recursive=true"
        )

    threads = [threading.Thread(target=watch, args=(s,)) for s in pair]
    for t in threads:
        t.start()
    time.sleep(1.0)
    for server in pair:
        request(server, "PUT", KEYS + "/watched/child", {"value": "v"})
    for t in threads:
        t.join(10)
    assert normalise(answers["petcd"]) == normalise(answers["etcd"])
    assert '"action":"set"' in answers["etcd"][2]


def test_v2_ttl_expires(pair: tuple[V2Server, V2Server]) -> None:
    before = both(pair, "PUT", KEYS + "/short", {"value": "v", "ttl": "1"})
    index = int(before[1]["x-etcd-index"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(request(s, "GET", KEYS + "/short")[0] == 404 for s in pair):
            break
        time.sleep(0.2)
    both(pair, "GET", KEYS + "/short")
    expired = both(pair, "GET", KEYS + "/short", query=f"wait=true&waitIndex={index + 1}")
    assert '"action":"expire"' in expired[2]


def test_v2_history_cleared(pair: tuple[V2Server, V2Server]) -> None:
    for server in pair:
        conn = http.client.HTTPConnection("127.0.0.1", server.client_port, timeout=20)
        for i in range(1005):
            conn.request(
                "PUT",
                KEYS + "/many",
                body=f"value={i}".encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            conn.getresponse().read()
        conn.close()
    answer = both(pair, "GET", KEYS + "/many", query="wait=true&waitIndex=1")
    assert '"errorCode":401' in answer[2]
    both(pair, "GET", KEYS + "/many", query="wait=true&waitIndex=1&recursive=true")


def _etcdctl(server: V2Server, *args: str, timeout: float = 10) -> tuple[int, str, str]:
    env = {**os.environ, "ETCDCTL_API": "2"}
    proc = subprocess.run(
        [ETCDCTL_BIN, "--endpoints", server.client_url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


_CTL = [
    ("set", "/ctl/a", "1"),
    ("get", "/ctl/a"),
    ("mk", "/ctl/a", "2"),
    ("mk", "/ctl/b", "2"),
    ("mkdir", "/ctl/d"),
    ("mkdir", "/ctl/d"),
    ("set", "/ctl/d/x", "3"),
    # (no unsorted listing: etcd lists a directory in Go's random map order)
    ("ls", "--recursive", "--sort", "/ctl"),
    ("ls", "-p", "--sort", "/ctl"),
    ("update", "/ctl/a", "4"),
    ("update", "/ctl/none", "4"),
    ("set", "--swap-with-value", "4", "/ctl/a", "5"),
    ("set", "--swap-with-value", "nope", "/ctl/a", "6"),
    ("get", "/ctl/none"),
    ("get", "/ctl/d"),
    ("-o", "extended", "get", "/ctl/a"),
    ("-o", "json", "get", "/ctl/a"),
    ("rm", "/ctl/d"),
    ("rm", "--dir", "/ctl/d"),
    ("rm", "--recursive", "/ctl/d"),
    ("rm", "--with-value", "no", "/ctl/a"),
    ("rm", "/ctl/a"),
    ("rmdir", "/ctl"),
    ("watch", "--after-index", "4", "/ctl/a"),
    ("exec-watch", "--help"),
    ("--quorum", "get", "/ctl/b"),
]


@pytest.mark.parametrize("args", _CTL, ids=lambda a: " ".join(a))
def test_v2_etcdctl(pair: tuple[V2Server, V2Server], args: tuple[str, ...]) -> None:
    etcd, petcd = pair
    want, got = _etcdctl(etcd, *args), _etcdctl(petcd, *args)
    assert got == want


def test_v2_etcdctl_watch(pair: tuple[V2Server, V2Server]) -> None:
    procs = {}
    env = {**os.environ, "ETCDCTL_API": "2"}
    for server in pair:
        procs[server.target] = subprocess.Popen(
            [ETCDCTL_BIN, "--endpoints", server.client_url, "watch", "--recursive", "/w"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    time.sleep(1.0)
    for server in pair:
        _etcdctl(server, "set", "/w/k", "watched")
    outs = {t: p.communicate(timeout=10) for t, p in procs.items()}
    assert outs["petcd"] == outs["etcd"]
    assert outs["etcd"][0] == "[set] /w/k\nwatched\n"


def test_v2_off_by_default(tmp_path: Path) -> None:
    """Without --enable-v2 petcd serves no v2 route (etcd 3.4 answers 404 as well)."""
    for target in ("etcd", "petcd"):
        server = ServerProcess(target, tmp_path / target / "data")
        server.start()
        try:
            status, _, _ = request(server, "GET", KEYS + "/foo")
            assert status == 404
        finally:
            server.stop()


def test_v2_stats(pair: tuple[V2Server, V2Server]) -> None:
    """The shapes of /v2/stats/{self,leader,store} (the figures are each server's own)."""
    etcd, petcd = pair
    for path in ("/v2/stats/self", "/v2/stats/leader", "/v2/stats/store"):
        want, got = request(etcd, "GET", path), request(petcd, "GET", path)
        assert got[0] == want[0] == 200
        assert got[1]["content-type"] == want[1]["content-type"]
        w, g = json.loads(want[2]), json.loads(got[2])
        assert list(g) == list(w), path
        assert [type(v) for v in g.values()] == [type(v) for v in w.values()], path
    self_stats = json.loads(request(petcd, "GET", "/v2/stats/self")[2])
    assert self_stats["state"] == "StateLeader"
    assert self_stats["leaderInfo"]["leader"] == self_stats["id"]
    assert list(self_stats["leaderInfo"]) == ["leader", "uptime", "startTime"]
