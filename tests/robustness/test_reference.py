"""The watch checker against a known bug of the reference: etcd 3.4's early progress response.

etcd 3.4 (Debian's 3.4.23) answers a progress request at once with the store's revision,
even while a watcher of the stream is still catching up from history, so the client is told
"everything up to R was delivered" before the events below R arrive (etcd issue #15220,
fixed upstream by PR #15237). The checker must flag that on etcd, and petcd, which answers
only once every watcher of the stream is synced, must pass the same scenario.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.robustness.cluster import Cluster
from tests.robustness.linearizability import Event
from tests.robustness.watch_check import WatcherHistory, WatchResponseRecord, check_watcher
from tests.robustness.workload import _channel, _event, _kv_stub

KEYS = 300


def _catch_up_with_progress_request(endpoint: str) -> tuple[WatcherHistory, list[Event], int]:
    with _channel(endpoint) as channel:
        kv = _kv_stub(channel)
        final = 0
        for i in range(KEYS):
            final = kv.Put(
                rpc_pb2.PutRequest(key=b"ref/%04d" % i, value=b"v%d" % i)
            ).header.revision
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=b"ref/", range_end=b"ref0", start_revision=1
                )
            )
        )
        requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

        def request_iter() -> Iterator[Any]:
            while (item := requests.get()) is not None:
                yield item

        stub = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Watch(request_iter(), timeout=30)
        responses: list[WatchResponseRecord] = []
        events: list[Event] = []
        progress_seen = False
        try:
            for resp in call:
                if resp.created:
                    continue
                evs = tuple(_event(e) for e in resp.events)
                events += evs
                progress_seen |= not evs
                responses.append(WatchResponseRecord(evs, resp.header.revision, progress=not evs))
                if progress_seen and events and events[-1].revision >= final:
                    break
        finally:
            requests.put(None)
            call.cancel()
    log = [Event(i + 2, b"ref/%04d" % i, b"v%d" % i, False) for i in range(KEYS)]
    return WatcherHistory("catch-up", b"ref/", b"ref0", 1, tuple(responses)), log, final


@pytest.mark.skipif(not os.path.exists("/usr/bin/etcd"), reason="no /usr/bin/etcd")
def test_checker_flags_etcd_3_4_early_progress_response(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "etcd", 1)
    try:
        cluster.start()
        w, log, final = _catch_up_with_progress_request(cluster.endpoints[0])
    finally:
        cluster.stop()
    assert final == KEYS + 1
    errors = check_watcher(w, log, final)
    assert any("after a progress notification" in e for e in errors), errors
    # Only that: no gap, no duplicate, nothing out of order.
    assert all("after a progress notification" in e for e in errors), errors


def test_petcd_answers_progress_only_when_synced(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, "petcd", 1)
    try:
        cluster.start()
        w, log, final = _catch_up_with_progress_request(cluster.endpoints[0])
    finally:
        cluster.stop()
    assert check_watcher(w, log, final) == []
    assert any(r.progress for r in w.responses)
