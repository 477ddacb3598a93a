"""Differential tests of the JSON gateway's streams, with curl against both servers:
``POST /v3/watch`` and ``POST /v3/lease/keepalive`` print the same chunked
``{"result":...}`` lines (ids, revisions and field names included), and a body that is not
JSON gets the same grpc-gateway answer. Only the cluster's own ids are masked.

A watch never ends by itself: curl is read until the lines expected have come, then
killed.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

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
    if ref[0] == tgt[0] == 500:  # etcd 3.4 orders the error's keys as 3.5 does not
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
