"""What Kubernetes sees of the server's timers: periodic progress notifications, lease expiry.

Theory of operation: a reference etcd and a target of their own, both started
with ``--experimental-watch-progress-notify-interval=500ms`` (the flag
Kubernetes deployments set so that the cacher's bookmarks keep up with an idle
resource). These tests wait for real time (a progress interval, a lease TTL),
so they are marked ``long``. The same operations run on both servers in the
same order; what depends only on the store (revisions, events) is compared,
what depends on timing (how many notifications) is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.mvccpb import kv_pb2
from tests.compat.conftest import _targets
from tests.compat.k8s.watch_stream import WatchStream
from tests.compat.servers import ServerProcess

pytestmark = pytest.mark.long

PROGRESS_INTERVAL = "500ms"


class TimedServer(ServerProcess):
    def command(self) -> list[str]:
        return [
            *super().command(),
            f"--experimental-watch-progress-notify-interval={PROGRESS_INTERVAL}",
        ]


@pytest.fixture(scope="module", params=_targets())
def timed_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"k8s-timers-{kind}")
    reference = TimedServer("etcd", base / "reference" / "data", name="timers")
    target = TimedServer(kind, base / "target" / "data", name="timers")
    try:
        reference.start()
        target.start()
        yield reference, target
    finally:
        target.stop()
        reference.stop()


def _periodic_progress(endpoint: str) -> dict[str, Any]:
    with grpc.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        with WatchStream(endpoint, (("hasleader", "true"),)) as stream:
            quiet = stream.create(b"/k8s/quiet/", b"/k8s/quiet0")
            notified = stream.create(b"/k8s/idle/", b"/k8s/idle0", progress_notify=True)
            current = kv.Put(rpc_pb2.PutRequest(key=b"/k8s/elsewhere", value=b"x")).header.revision
            progress: list[tuple[int, int, int]] = []
            deadline = time.monotonic() + 10.0
            while len(progress) < 2 and time.monotonic() < deadline:
                resp = stream.next()
                progress.append((resp.watch_id, resp.header.revision, len(resp.events)))
    return {"quiet": quiet, "notified": notified, "current": current, "progress": progress}


def test_periodic_progress_notifications_reach_idle_watchers(
    timed_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    ref = _periodic_progress(timed_servers[0].endpoint)
    tgt = _periodic_progress(timed_servers[1].endpoint)
    for side in (ref, tgt):
        # Only the progress_notify watcher, at the current revision, no events.
        assert side["progress"] == [(side["notified"], side["current"], 0)] * 2, side
    assert ref == tgt


def _lease_expiry(endpoint: str) -> dict[str, Any]:
    with grpc.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        lease = rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]
        grant = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2))
        puts = [
            kv.Put(
                rpc_pb2.PutRequest(key=b"/k8s/events/ev-%d" % i, value=b"e", lease=grant.ID)
            ).header.revision
            for i in range(3)
        ]
        started = time.monotonic()
        with WatchStream(endpoint) as stream:
            stream.create(b"/k8s/events/", b"/k8s/events0", start_revision=puts[0], prev_kv=True)
            events: list[tuple[int, bytes, int, int]] = []
            while len(events) < 6:
                for ev in stream.next(timeout_s=15.0).events:
                    events.append(
                        (ev.type, ev.kv.key, ev.kv.mod_revision, ev.prev_kv.lease == grant.ID)
                    )
        waited_s = time.monotonic() - started
        ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID))
    return {"ttl": grant.TTL, "puts": puts, "events": events, "after": ttl.TTL, "waited": waited_s}


def test_events_expire_with_their_lease(
    timed_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    ref = _lease_expiry(timed_servers[0].endpoint)
    tgt = _lease_expiry(timed_servers[1].endpoint)
    for side in (ref, tgt):
        expired_at = side["puts"][-1] + 1
        deletes = [e for e in side["events"] if e[0] == kv_pb2.Event.DELETE]
        assert [(e[2], e[3]) for e in deletes] == [(expired_at, True)] * 3, side
        assert side["after"] == -1 and side["waited"] < 12.0, side
    ref.pop("waited")
    tgt.pop("waited")
    assert ref == tgt
