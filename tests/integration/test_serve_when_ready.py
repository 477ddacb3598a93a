"""A restarted member serves clients only once it is ready (etcd's ``ReadyNotify``): it has a
leader, caught up and published itself through raft. Before that it answers nothing, not even
a serializable read, so no client reads from it a state older than what the cluster had
committed when it started.

Three members; ``k`` is v1 when m2 is killed and v2 when m1 is killed next; m0 is paused and
m2 restarted: m2 has no quorum and its disk says v1. A serializable Get on m2 must not answer
(petcd used to answer v1 at once: its client port served before the member was ready, and
etcd's robustness tests saw a Status revision below a revision they had already compacted).
Once m0 resumes, the first answer m2 gives is v2. Run on petcd and, as the reference, on
the installed etcd.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from tests.integration.petcd_proc import kv_stub
from tests.robustness.cluster import Cluster

NOT_SERVED_FOR_S = 3.0
SERVED_WITHIN_S = 30.0  # generous: 2 cores shared by many test runs


@pytest.fixture(params=["petcd", "etcd"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, str(request.param), 3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _put(endpoint: str, value: bytes) -> None:
    """Put until acknowledged (right after a kill a put may time out; a retry changes nothing
    the test looks at)."""
    deadline = time.monotonic() + SERVED_WITHIN_S
    with grpc.insecure_channel(endpoint) as channel:
        while True:
            try:
                kv_stub(channel).Put(rpc_pb2.PutRequest(key=b"k", value=value), timeout=5)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise


def _serializable_get(channel: grpc.Channel, timeout_s: float) -> bytes:
    resp = kv_stub(channel).Range(
        rpc_pb2.RangeRequest(key=b"k", serializable=True), timeout=timeout_s
    )
    [kv] = resp.kvs
    return bytes(kv.value)


def test_a_restarted_member_answers_nothing_until_it_caught_up(cluster: Cluster) -> None:
    m0 = cluster.endpoints[0]
    _put(m0, b"v1")
    cluster.kill(2)
    _put(m0, b"v2")
    cluster.kill(1)
    cluster.pause(0)
    cluster.restart(2, wait=False)
    with grpc.insecure_channel(cluster.endpoints[2]) as channel:
        deadline = time.monotonic() + NOT_SERVED_FOR_S
        while time.monotonic() < deadline:
            try:
                value = _serializable_get(channel, 0.5)
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                continue
            pytest.fail(f"m2 answered {value!r} before it had a leader and caught up")
        cluster.resume(0)
        deadline = time.monotonic() + SERVED_WITHIN_S
        while True:
            try:
                value = _serializable_get(channel, 1.0)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "m2 never served after m0 came back"
                time.sleep(0.1)
        assert value == b"v2"
