"""clientv3.WithRequireLeader (the ``hasleader`` metadata) on a member that lost its leader.

Theory of operation: the apiserver opens its watches with ``WithRequireLeader``
so that a member cut off from the quorum ends them (gRPC UNAVAILABLE,
``etcdserver: no leader``) and the apiserver re-establishes them elsewhere,
instead of waiting forever on a member that will never see another write. A
3-member cluster of the reference and of the target each lose two members
(SIGKILL); on the survivor, a watch stream with the metadata must end with that
status within a few election timeouts (etcd: about 4 s), a stream without it
must stay open, and a unary request with the metadata, even a serializable
one, must fail the same way. Waits for real time: ``long``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.conftest import _targets
from tests.compat.k8s.watch_stream import StreamEnded, WatchStream
from tests.robustness.cluster import Cluster

pytestmark = pytest.mark.long

REQUIRE_LEADER = (("hasleader", "true"),)
NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
END_WITHIN_S = 15.0


@pytest.fixture(scope="module", params=_targets())
def clusters(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Cluster, Cluster]]:
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"k8s-leader-{kind}")
    reference = Cluster(base / "reference", "etcd", 3)
    target = Cluster(base / "target", kind, 3)
    try:
        reference.start()
        target.start()
        yield kind, reference, target
    finally:
        target.stop()
        reference.stop()


def _lose_leader(cluster: Cluster) -> dict[str, Any]:
    endpoint = cluster.endpoints[0]
    with WatchStream(endpoint, REQUIRE_LEADER) as required, WatchStream(endpoint) as plain:
        required.create(b"/k8s/leader/", b"/k8s/leader0")
        plain.create(b"/k8s/leader/", b"/k8s/leader0")
        cluster.kill(1)
        cluster.kill(2)
        started = time.monotonic()
        try:
            resp = required.next(timeout_s=END_WITHIN_S)
            watch: Any = ("response", str(resp))
        except StreamEnded as ended:
            watch = (ended.code, ended.details, time.monotonic() - started < END_WITHIN_S)
        try:
            plain_watch: Any = ("response", str(plain.next(timeout_s=1.0)))
        except StreamEnded as ended:
            plain_watch = (ended.code, ended.details)
    with grpc.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        request = rpc_pb2.RangeRequest(key=b"/k8s/leader/", serializable=True)
        try:
            kv.Range(request, metadata=REQUIRE_LEADER, timeout=10)
            unary: Any = "ok"
        except grpc.RpcError as exc:
            unary = (exc.code(), exc.details())
        kv.Range(request, timeout=10)  # without the metadata: served locally
    return {"watch": watch, "plain_watch": plain_watch, "unary": unary}


def test_require_leader_ends_watches_and_requests_without_a_leader(
    clusters: tuple[str, Cluster, Cluster],
) -> None:
    _, reference, target = clusters
    ref = _lose_leader(reference)
    assert ref == {
        "watch": (*NO_LEADER, True),
        "plain_watch": (None, None),  # still open: no response within a second
        "unary": NO_LEADER,
    }, ref
    assert _lose_leader(target) == ref
