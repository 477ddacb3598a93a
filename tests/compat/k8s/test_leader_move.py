"""A watch with WithRequireLeader on a follower while the leadership moves.

Theory of operation: in a 3-member cluster of the reference and of the target,
a watch (``hasleader`` metadata, as Kubernetes opens them) and a writer sit on
a follower; ten writes, ``MoveLeader`` to the other follower, ten more writes.
The watch must stay open and deliver all twenty events in revision order,
and the revisions must agree between the two clusters. Starts clusters of its
own: ``long``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.conftest import _targets
from tests.compat.k8s.watch_stream import WatchStream
from tests.robustness.cluster import Cluster

pytestmark = pytest.mark.long


@pytest.fixture(scope="module", params=_targets())
def clusters(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Cluster]]:
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"k8s-move-{kind}")
    reference = Cluster(base / "reference", "etcd", 3)
    target = Cluster(base / "target", kind, 3)
    try:
        reference.start()
        target.start()
        yield reference, target
    finally:
        target.stop()
        reference.stop()


def _watch_through_move(cluster: Cluster) -> dict[str, Any]:
    channels = [grpc.insecure_channel(e) for e in cluster.endpoints]
    try:
        maint = [rpc_pb2_grpc.MaintenanceStub(ch) for ch in channels]  # type: ignore[no-untyped-call]
        status = [m.Status(rpc_pb2.StatusRequest()) for m in maint]
        ids = [s.header.member_id for s in status]
        leader = ids.index(status[0].leader)
        first, second = (i for i in range(3) if i != leader)
        kv = rpc_pb2_grpc.KVStub(channels[first])  # type: ignore[no-untyped-call]
        revisions: list[int] = []
        events: list[int] = []
        with WatchStream(cluster.endpoints[first], (("hasleader", "true"),)) as watch:
            watch.create(b"/k8s/move/", b"/k8s/move0")
            for i in range(20):
                if i == 10:
                    maint[leader].MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=ids[second]))
                put = rpc_pb2.PutRequest(key=b"/k8s/move/%02d" % i, value=b"v")
                revisions.append(kv.Put(put, timeout=10).header.revision)
            while len(events) < 20:
                events += [ev.kv.mod_revision for ev in watch.next().events]
        leaders = {m.Status(rpc_pb2.StatusRequest()).leader for m in maint}
        return {"revisions": revisions, "events": events, "moved": leaders == {ids[second]}}
    finally:
        for ch in channels:
            ch.close()


def test_watch_on_a_follower_survives_a_leader_move(clusters: tuple[Cluster, Cluster]) -> None:
    ref = _watch_through_move(clusters[0])
    tgt = _watch_through_move(clusters[1])
    assert ref["events"] == ref["revisions"] and ref["moved"], ref
    assert tgt == ref
