"""``hasleader`` (clientv3.WithRequireLeader) on a petcd member that loses its quorum.

Three members with short election timeouts (500 ms); two are killed. On the survivor: a watch
opened with the metadata ends with ``UNAVAILABLE`` ``etcdserver: no leader`` once the member
has seen no leader for three election timeouts in a row (etcd's monitorLeader), not at once;
a watch without it stays open; a new stream or a unary call with it is refused at once, even
a serializable read, while the same read without it is served. The long differential version
against real etcd is tests/compat/k8s/test_require_leader.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.k8s.watch_stream import StreamEnded, WatchStream
from tests.robustness.cluster import Cluster

REQUIRE_LEADER = (("hasleader", "true"),)
NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
ELECTION_TIMEOUT_S = 0.5
END_WITHIN_S = 20.0  # generous: 2 cores shared by many test runs


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path,
        "petcd",
        3,
        extra_args=[
            "--heartbeat-interval", "50",
            "--election-timeout", str(int(ELECTION_TIMEOUT_S * 1000)),
        ],
    )  # fmt: skip
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_the_survivor_ends_require_leader_watches_and_refuses_require_leader_calls(
    cluster: Cluster,
) -> None:
    endpoint = cluster.endpoints[0]
    with (
        WatchStream(endpoint, REQUIRE_LEADER) as required,
        WatchStream(endpoint) as plain,
        grpc.insecure_channel(endpoint) as channel,
    ):
        kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        serializable = rpc_pb2.RangeRequest(key=b"k", serializable=True)
        kv.Range(serializable, metadata=REQUIRE_LEADER, timeout=10)  # a leader: served
        required.create(b"k", b"")
        plain.create(b"k", b"")
        cluster.kill(1)
        cluster.kill(2)
        killed = time.monotonic()
        try:
            resp = required.next(timeout_s=END_WITHIN_S)
            raise AssertionError(f"a response instead of the end of the stream: {resp}")
        except StreamEnded as ended:
            took_s = time.monotonic() - killed
            assert (ended.code, ended.details) == NO_LEADER, ended
        # The member first notices the loss (an election timeout at least), then waits three
        # samples of one election timeout each: never at once.
        assert took_s > 2 * ELECTION_TIMEOUT_S, took_s

        with pytest.raises(grpc.RpcError) as refused:
            kv.Range(serializable, metadata=REQUIRE_LEADER, timeout=10)
        assert (refused.value.code(), refused.value.details()) == NO_LEADER
        assert kv.Range(serializable, timeout=10).header.member_id != 0  # served locally

        with WatchStream(endpoint, REQUIRE_LEADER) as late:
            with pytest.raises(StreamEnded) as at_start:
                late.create(b"k", b"")
            assert (at_start.value.code, at_start.value.details) == NO_LEADER

        # The watch without the metadata is still open: no response, no end.
        with pytest.raises(StreamEnded) as quiet:
            plain.next(timeout_s=1.0)
        assert quiet.value.code is None, quiet.value
