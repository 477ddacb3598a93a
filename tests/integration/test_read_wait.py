"""A linearizable read waits, as etcd's does, instead of failing at once.

Three petcd members with short election timeouts (500 ms, request timeout 6 s):

- without a leader (two members killed), a read on the survivor waits; when a killed member
  comes back and a leader is elected, the waiting read is answered;
- a follower's ReadIndex request lost on the way to the leader (one-way cut) is asked again
  (etcd's 500 ms retry): once the path is back, the read is answered well before the
  request timeout.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.robustness.cluster import Cluster

ELECTION_TIMEOUT_S = 0.5
REQUEST_TIMEOUT_S = 5 + 2 * ELECTION_TIMEOUT_S  # etcd's ReqTimeout
CLIENT_DEADLINE_S = 30.0


def _cluster(tmp_path: Path, proxied: bool) -> Cluster:
    return Cluster(
        tmp_path,
        "petcd",
        3,
        proxied=proxied,
        extra_args=[
            "--heartbeat-interval", "50",
            "--election-timeout", str(int(ELECTION_TIMEOUT_S * 1000)),
        ],
    )  # fmt: skip


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(1) as p:
        yield p


def _put(endpoint: str, key: bytes, value: bytes) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)


def _read(endpoint: str, key: bytes) -> bytes:
    """A linearizable Range of ``key``; its value."""
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        resp = kv.Range(rpc_pb2.RangeRequest(key=key), timeout=CLIENT_DEADLINE_S)
    return bytes(resp.kvs[0].value)


def _no_leader(endpoint: str) -> bool:
    with grpc.insecure_channel(endpoint) as ch:
        m = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
        return int(m.Status(rpc_pb2.StatusRequest(), timeout=5).leader) == 0


def _wait(cond: object, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_read_without_a_leader_waits_for_one(
    tmp_path: Path, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    c = _cluster(tmp_path, proxied=False)
    try:
        c.start()
        _put(c.endpoints[0], b"k", b"before")
        c.kill(1)
        c.kill(2)
        _wait(lambda: _no_leader(c.endpoints[0]), "the survivor to have no leader")
        read = pool.submit(_read, c.endpoints[0], b"k")
        time.sleep(2 * ELECTION_TIMEOUT_S)
        # etcd waits for a leader; petcd answered "etcdserver: no leader" at once before.
        assert not read.done(), read.exception() if read.done() else None
        c.restart(1, wait=False)
        assert read.result(timeout=REQUEST_TIMEOUT_S + 5) == b"before"
    finally:
        c.stop()


def test_a_lost_read_index_request_is_asked_again(
    tmp_path: Path, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    c = _cluster(tmp_path, proxied=True)
    try:
        c.start()
        leader = c.leader_index()
        assert leader is not None
        follower = (leader + 1) % 3
        _put(c.endpoints[leader], b"k", b"v1")
        # The leader hears nothing from the follower (its ReadIndex request is lost); the
        # follower still hears the leader's heartbeats, so nobody campaigns.
        c.cut_one_way(follower, leader)
        read = pool.submit(_read, c.endpoints[follower], b"k")
        time.sleep(1.0)
        assert not read.done(), read.exception() if read.done() else None
        cut_ended = time.monotonic()
        c.connect_all()
        assert read.result(timeout=CLIENT_DEADLINE_S) == b"v1"
        # Asked again within etcd's 500 ms retry (plus the peer stream's reconnection), not
        # left to the request timeout.
        took = time.monotonic() - cut_ended
        assert took < REQUEST_TIMEOUT_S - 2, took
        assert c.leader_index() == leader  # the cut caused no election
    finally:
        c.stop()
