"""Differential tests of the JSON gateway, with curl against both servers: the streams
``POST /v3/watch``, ``POST /v3/lease/keepalive`` and ``POST /v3/election/observe`` print the
same chunked ``{"result":...}`` lines (ids, revisions and field names included), the Election,
Lock, Maintenance and Cluster routes the same answers and errors, and a body that is not JSON
gets the same grpc-gateway answer. Only the cluster's own ids are masked; elections and locks
run on leases granted with fixed ids, so that their keys are the same on both.

Left out, because etcd 3.4 (the reference) differs from etcd 3.5, which petcd follows:
``/v3/maintenance/hashkv`` (3.5 only), the Alarm answer's header (3.4 sends none), the HTTP
status of FAILED_PRECONDITION (3.4's grpc-gateway says 412, 3.5's 400: only the body is
compared), and an error's key order (compared as JSON).

A watch or an observe never ends by itself: curl is read until the lines expected have come,
then killed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.compat.harness import Differ

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

_IDS = re.compile(rb'"(cluster_id|member_id|raft_term)":"[0-9]+"')


def _masked(data: bytes) -> bytes:
    return _IDS.sub(rb'"\1":"X"', data)


def _post(url: str, body: str, lines: int | None = None) -> tuple[int, bytes]:
    """(HTTP status, body): the whole answer, or its first ``lines`` lines (curl killed)."""
    argv = ["curl", "-sS", "-N", "-X", "POST", "-d", body, "-w", "\n%{http_code}", url]
    if lines is None:
        done = subprocess.run(argv, capture_output=True, timeout=20, check=True)
        out, _, status = done.stdout.rpartition(b"\n")
        return int(status), _masked(out)
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as curl:
        assert curl.stdout is not None
        got = b"".join(curl.stdout.readline() for _ in range(lines))
        curl.kill()
    return 200, _masked(got)


def _both(differ: Differ, path: str, body: str, lines: int | None = None) -> tuple[int, bytes]:
    ref = _post(differ.reference.client_url + path, body, lines)
    tgt = _post(differ.target.client_url + path, body, lines)
    if ref[0] == tgt[0] >= 400:  # etcd 3.4 orders the error's keys as 3.5 does not
        assert json.loads(ref[1]) == json.loads(tgt[1])
    else:
        assert ref == tgt
    return tgt


def _revision(differ: Differ) -> int:
    _, out = _both(differ, "/v3/kv/range", json.dumps({"key": "Z3cvbm9uZQ=="}))
    return int(json.loads(out)["header"]["revision"])


def _by_watch(lines: bytes) -> dict[str, list[bytes]]:
    """A watch stream's lines by their watch id (a missing one is 0), each id's in order."""
    found: dict[str, list[bytes]] = {}
    for line in lines.splitlines():
        watch_id = json.loads(line)["result"].get("watch_id", "0")
        found.setdefault(watch_id, []).append(line)
    return found


def test_watch_stream_output_is_etcds(differ: Differ) -> None:
    start = _revision(differ) + 1
    differ.check("put", "gw/k", "v1")
    differ.check("put", "gw/k", "v2")
    differ.check("del", "gw/k")
    key = base64.b64encode(b"gw/k").decode()
    requests = [
        {"create_request": {"key": key, "start_revision": start, "prev_kv": True}},
        {"create_request": {"key": key, "start_revision": start, "watch_id": 7}},
        {"create_request": {"key": key, "watch_id": "7"}},  # a duplicate id
        {"create_request": {"key": key, "filters": ["NOPUT"], "start_revision": start}},
    ]
    # Created (0), its events, created (7), its events, the duplicate's refusal, created (8),
    # the delete alone: the same lines on both, in the same order for each watch id. (The
    # events of a watch that starts in the past are sent by etcd's sync loop, which may come
    # before or after the next creation's answer: the order across watches varies.)
    body = "".join(json.dumps(r) for r in requests)
    ref = _post(differ.reference.client_url + "/v3/watch", body, lines=7)[1]
    out = _post(differ.target.client_url + "/v3/watch", body, lines=7)[1]
    assert _by_watch(ref) == _by_watch(out), (ref, out)
    assert b'"cancel_reason":"mvcc: duplicate watch ID provided on the WatchStream"' in out
    _, progress = _both(differ, "/v3/watch", '{"progress_request":{}}', lines=1)
    assert b'"watch_id":"-1"' in progress


def test_keepalive_stream_output_is_etcds(differ: Differ) -> None:
    _both(differ, "/v3/lease/grant", '{"ID":7077,"TTL":300}')
    status, out = _both(differ, "/v3/lease/keepalive", '{"ID":7077}\n{"ID":"7077"}{"ID":7078}')
    assert (status, out.count(b"\n")) == (200, 3)
    _both(differ, "/v3/lease/revoke", '{"ID":7077}')


@pytest.mark.parametrize(
    "body", ['{"ID":', "xyz", "[]", "", '{"ID" 7}', '{"ID":7 "x":1}', '{"ID":7078} bad']
)
def test_bodies_that_are_not_json_get_etcds_answer(differ: Differ, body: str) -> None:
    _both(differ, "/v3/lease/keepalive", body)


def _error(code: int, message: str) -> Any:
    return {"error": message, "code": code, "message": message}


def _lease(differ: Differ, lease_id: int) -> None:
    _both(differ, "/v3/lease/grant", json.dumps({"ID": lease_id, "TTL": 300}))


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_election_routes_answer_as_etcd(differ: Differ) -> None:
    _lease(differ, 7101)
    name = _b64("gw-election")
    _, out = _both(
        differ,
        "/v3/election/campaign",
        json.dumps({"name": name, "lease": 7101, "value": _b64("v1")}),
    )
    leader = json.loads(out)["leader"]
    assert base64.b64decode(leader["key"]) == b"gw-election/1bbd"  # the lease in hex
    _both(differ, "/v3/election/leader", json.dumps({"name": name}))
    _both(differ, "/v3/election/proclaim", json.dumps({"leader": leader, "value": _b64("v2")}))
    _both(differ, "/v3/election/leader", json.dumps({"name": name}))
    _both(differ, "/v3/election/resign", json.dumps({"leader": leader}))
    status, out = _both(differ, "/v3/election/leader", json.dumps({"name": name}))
    assert (status, json.loads(out)) == (500, _error(2, "election: no leader"))
    status, out = _both(
        differ, "/v3/election/proclaim", json.dumps({"leader": leader, "value": _b64("v3")})
    )
    assert (status, json.loads(out)) == (500, _error(2, "election: not leader"))
    for path, body in (("proclaim", '{"value":"djI="}'), ("resign", "{}")):
        status, out = _both(differ, f"/v3/election/{path}", body)
        assert (status, json.loads(out)) == (500, _error(2, '"leader" field must be provided'))
    _both(differ, "/v3/election/campaign", json.dumps({"name": name, "lease": 7199}))
    _both(differ, "/v3/lease/revoke", '{"ID":7101}')


def test_observe_stream_output_is_etcds(differ: Differ) -> None:
    _lease(differ, 7102)
    name = _b64("gw-observe")
    argv = ["curl", "-sS", "-N", "-X", "POST", "-d", json.dumps({"name": name})]
    observers = [
        subprocess.Popen(
            [*argv, f"{server.client_url}/v3/election/observe"], stdout=subprocess.PIPE
        )
        for server in (differ.reference, differ.target)
    ]
    try:
        _, out = _both(differ, "/v3/election/campaign", json.dumps({"name": name, "lease": 7102}))
        leader = json.loads(out)["leader"]
        _both(differ, "/v3/election/proclaim", json.dumps({"leader": leader, "value": _b64("p")}))
        ref, tgt = (
            _masked(b"".join(o.stdout.readline() for _ in range(2)))  # type: ignore[union-attr]
            for o in observers
        )
        assert ref == tgt
        assert ref.count(b'{"result":{"header":') == 2
    finally:
        for o in observers:
            o.kill()
            o.wait()
    _both(differ, "/v3/lease/revoke", '{"ID":7102}')


def test_lock_routes_answer_as_etcd(differ: Differ) -> None:
    _lease(differ, 7103)
    _, out = _both(differ, "/v3/lock/lock", json.dumps({"name": _b64("gw-lock"), "lease": 7103}))
    key = json.loads(out)["key"]
    assert base64.b64decode(key) == b"gw-lock/1bbf"
    _both(differ, "/v3/lock/unlock", json.dumps({"key": key}))
    _both(differ, "/v3/lock/lock", json.dumps({"name": _b64("gw-lock"), "lease": 7199}))
    _both(differ, "/v3/lease/revoke", '{"ID":7103}')


def test_maintenance_and_cluster_errors_are_etcds(differ: Differ) -> None:
    _both(differ, "/v3/maintenance/defragment", "{}")
    # The hash is of each server's own database file.
    ref, tgt = (
        _post(server.client_url + "/v3/maintenance/hash", "{}")
        for server in (differ.reference, differ.target)
    )
    assert re.sub(rb'"hash":[0-9]+', b"", ref[1]) == re.sub(rb'"hash":[0-9]+', b"", tgt[1])
    assert ref[0] == tgt[0] == 200 and sorted(json.loads(tgt[1])) == ["hash", "header"]
    for path, body in (
        ("/v3/cluster/member/remove", '{"ID":5}'),
        ("/v3/cluster/member/update", '{"ID":5,"peerURLs":["http://127.0.0.1:9"]}'),
        ("/v3/cluster/member/promote", '{"ID":5}'),
    ):
        status, out = _both(differ, path, body)
        assert (status, json.loads(out)) == (404, _error(5, "etcdserver: member not found"))
    # FAILED_PRECONDITION: 412 from etcd 3.4's grpc-gateway, 400 from 3.5's and petcd's.
    ref = _post(
        differ.reference.client_url + "/v3/maintenance/transfer-leadership", '{"targetID":5}'
    )
    tgt = _post(differ.target.client_url + "/v3/maintenance/transfer-leadership", '{"targetID":5}')
    assert (
        json.loads(ref[1]) == json.loads(tgt[1]) == _error(9, "etcdserver: bad leader transferee")
    )
    assert (ref[0], tgt[0]) == (412, 400 if differ.target.target == "petcd" else 412)


def test_snapshot_stream_has_etcds_shape(differ: Differ) -> None:
    answers = []
    for server in (differ.reference, differ.target):
        status, out = _post(server.client_url + "/v3/maintenance/snapshot", "{}")
        chunks = [json.loads(line)["result"] for line in out.splitlines()]
        blobs = [base64.b64decode(c["blob"]) for c in chunks]
        assert blobs[-1] == hashlib.sha256(b"".join(blobs[:-1])).digest()
        assert [int(c.get("remaining_bytes", 0)) for c in chunks][-2:] == [0, 0]
        answers.append((status, [sorted(c) for c in chunks[-2:]]))
    assert answers[0] == answers[1] == (200, [["blob"], ["blob"]])


@pytest.mark.parametrize(
    "path",
    ["/v3/election/campaign", "/v3/election/observe", "/v3/lock/lock", "/v3/maintenance/snapshot"],
)
@pytest.mark.parametrize("body", ["xyz", '{"name":', "[]", '"s"'])
def test_bodies_that_are_not_json_get_etcds_400(differ: Differ, path: str, body: str) -> None:
    status, out = _both(differ, path, body)
    assert (status, json.loads(out)["code"]) == (400, 3)


@pytest.mark.parametrize(
    "body",
    ["xyz", '{"key":', "[]", "   ", "null", '{"key":"Zm9v"} xyz', '{"key":"Zm9v","bogus":{"x":1}}'],
)
def test_unary_bodies_are_read_as_etcds_gateway_reads_them(differ: Differ, body: str) -> None:
    _both(differ, "/v3/kv/range", body)  # only the first JSON value; unknown fields ignored


def test_an_unknown_enum_name_is_refused(differ: Differ) -> None:
    # The texts differ: Go's protobuf wording against Python's.
    for server in (differ.reference, differ.target):
        status, out = _post(server.client_url + "/v3/kv/range", '{"key":"Zm9v","sort_order":"X"}')
        assert (status, json.loads(out)["code"]) == (400, 3)
