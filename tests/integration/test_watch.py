"""The Watch service of a real petcd process, through a gRPC stream and through etcdctl."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.integration.petcd_proc import ETCDCTL_BIN, PetcdProcess, etcdctl, kv_stub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(
        tmp_path_factory.mktemp("watch") / "data",
        extra_args=["--experimental-watch-progress-notify-interval=300ms"],
    )
    p.start()
    yield p
    p.stop()


class WatchStream:
    """A client watch stream: send requests, receive responses with a timeout."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self.responses: queue.Queue[Any] = queue.Queue()
        stub = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
        self._call = stub.Watch(iter(self._requests.get, None))
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for resp in self._call:
                self.responses.put(resp)
        except grpc.RpcError:
            pass

    def send(self, req: Any) -> None:
        self._requests.put(req)

    def create(self, key: bytes, **kw: Any) -> Any:
        self.send(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw)))
        return self.next()

    def next(self, timeout: float = 10.0) -> Any:
        return self.responses.get(timeout=timeout)

    def close(self) -> None:
        self._call.cancel()
        self._requests.put(None)


@pytest.fixture
def stream(server: PetcdProcess) -> Iterator[WatchStream]:
    with server.channel() as ch:
        s = WatchStream(ch)
        yield s
        s.close()


def _events(resp: Any) -> list[tuple[int, bytes, bytes]]:
    return [(e.type, e.kv.key, e.kv.value) for e in resp.events]


def test_live_events_with_prev_kv_and_filters(server: PetcdProcess, stream: WatchStream) -> None:
    with server.channel() as ch:
        kv = kv_stub(ch)
        created = stream.create(b"w/a", prev_kv=True)
        assert created.created and created.watch_id == 0
        filtered = stream.create(b"w/", range_end=b"w0", filters=[rpc_pb2.WatchCreateRequest.NOPUT])
        assert filtered.created and filtered.watch_id == 1
        r1 = kv.Put(rpc_pb2.PutRequest(key=b"w/a", value=b"1")).header.revision
        kv.Put(rpc_pb2.PutRequest(key=b"w/a", value=b"2"))
        kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"w/a"))
        got: dict[int, list[Any]] = {0: [], 1: []}
        while len(got[0]) < 3 or len(got[1]) < 1:
            resp = stream.next()
            got[resp.watch_id].append(resp)
        assert [_events(r) for r in got[0]] == [
            [(0, b"w/a", b"1")],
            [(0, b"w/a", b"2")],
            [(1, b"w/a", b"")],
        ]
        assert got[0][0].header.revision == r1
        assert got[0][1].events[0].prev_kv.value == b"1"
        assert got[0][2].events[0].prev_kv.value == b"2"
        assert [_events(r) for r in got[1]] == [[(1, b"w/a", b"")]]  # puts filtered out


def test_history_cancel_progress_and_duplicate_id(
    server: PetcdProcess, stream: WatchStream
) -> None:
    with server.channel() as ch:
        kv = kv_stub(ch)
        first = kv.Put(rpc_pb2.PutRequest(key=b"h/k", value=b"old")).header.revision
        kv.Put(rpc_pb2.PutRequest(key=b"h/k", value=b"new"))
        created = stream.create(b"h/k", start_revision=first, watch_id=7)
        assert created.created and created.watch_id == 7
        history = stream.next()
        history_events = _events(history)
        while len(history_events) < 2:
            history_events += _events(stream.next())
        assert history_events == [(0, b"h/k", b"old"), (0, b"h/k", b"new")]
        dup = stream.create(b"other", watch_id=7)
        assert dup.created and dup.canceled
        assert dup.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
        stream.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        progress = stream.next()
        assert progress.watch_id == -1 and not progress.events
        assert progress.header.revision == first + 1
        stream.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=7)))
        canceled = stream.next()
        assert canceled.canceled and canceled.watch_id == 7
        kv.Put(rpc_pb2.PutRequest(key=b"h/k", value=b"after-cancel"))
        with pytest.raises(queue.Empty):
            stream.next(timeout=0.5)


def test_an_empty_range_is_refused_without_taking_an_id(
    server: PetcdProcess, stream: WatchStream
) -> None:
    # etcd refuses a range whose end is not after its key before it picks an id (found by
    # tests/compat/test_differential_fuzz.py: petcd registered a watcher that saw nothing).
    for key, end in ((b"e/b", b"e/a"), (b"e/a", b"e/a")):
        refused = stream.create(key, range_end=end, watch_id=3)
        assert refused.created and refused.canceled and refused.watch_id == -1
        assert refused.cancel_reason == "mvcc: watcher range is empty"
    assert stream.create(b"e/a", range_end=b"\x00").watch_id == 0  # from key: not empty
    assert stream.create(b"e/a", watch_id=3).watch_id == 3  # 3 was not taken


def test_compacted_start_revision_cancels_the_watcher(
    server: PetcdProcess, stream: WatchStream
) -> None:
    with server.channel() as ch:
        kv = kv_stub(ch)
        first = kv.Put(rpc_pb2.PutRequest(key=b"c/k", value=b"1")).header.revision
        last = kv.Put(rpc_pb2.PutRequest(key=b"c/k", value=b"2")).header.revision
        kv.Compact(rpc_pb2.CompactionRequest(revision=last))
        created = stream.create(b"c/k", start_revision=first)
        assert created.created
        resp = stream.next()
        assert resp.canceled and resp.compact_revision == last
        assert resp.header.revision == 0  # as etcd: no revision in this header


def test_a_watch_from_the_compaction_revision_sees_the_deletion_there(
    server: PetcdProcess, stream: WatchStream
) -> None:
    # etcd 3.5.17 (etcd #18089, its e2e TestDeleteEventDrop_Issue18089): the tombstone at the
    # compaction revision survives the (physical) compaction, so a watch from it starts with
    # that deletion.
    with server.channel() as ch:
        kv = kv_stub(ch)
        for value in (b"v2", b"v3", b"v4"):
            kv.Put(rpc_pb2.PutRequest(key=b"t/k", value=value))
        deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"t/k")).header.revision
        kv.Put(rpc_pb2.PutRequest(key=b"t/k", value=b"v6"))
        kv.Compact(rpc_pb2.CompactionRequest(revision=deleted, physical=True))
        assert stream.create(b"t/k", start_revision=deleted).created
        got = stream.next()
        assert _events(got) == [(1, b"t/k", b""), (0, b"t/k", b"v6")]  # DELETE, then PUT
        assert got.events[0].kv.mod_revision == deleted


def test_etcdctl_watch(server: PetcdProcess) -> None:
    watcher = subprocess.Popen(
        [ETCDCTL_BIN, f"--endpoints={server.endpoint}", "watch", "--prefix", "e/"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump(out: Any = watcher.stdout) -> None:
        for line in out:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        # etcdctl has no "ready" signal: write until the first event shows up.
        first = None
        for attempt in range(50):
            assert etcdctl(server.endpoint, "put", f"e/{attempt}", "v").returncode == 0
            try:
                first = lines.get(timeout=0.3)
                break
            except queue.Empty:
                continue
        assert first == "PUT\n"
        assert lines.get(timeout=5).startswith("e/")
        assert lines.get(timeout=5) == "v\n"
    finally:
        watcher.kill()
        watcher.wait()


def test_periodic_progress_notify(server: PetcdProcess, stream: WatchStream) -> None:
    created = stream.create(b"pn/k", progress_notify=True)
    assert created.created
    first = stream.next()
    assert first.watch_id == created.watch_id and not first.events
    assert first.header.revision >= created.header.revision
    with server.channel() as ch:
        rev = kv_stub(ch).Put(rpc_pb2.PutRequest(key=b"pn/k", value=b"v")).header.revision
    got = stream.next()
    while not got.events:  # a notification may have been queued before the put
        got = stream.next()
    assert got.header.revision == rev
    after = stream.next()
    assert not after.events and after.header.revision >= rev
