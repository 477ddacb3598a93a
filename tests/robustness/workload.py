"""Client workers and watchers that drive a cluster and record what they saw.

Theory of operation
-------------------
Each :class:`ClientWorker` is a thread with its own gRPC channel that sends one request at
a time (etcd's KV API: put, linearizable range of a key or a prefix, delete of a key or a
prefix with ``prev_kv``, and a compare-and-swap txn) and records an
:class:`~tests.robustness.linearizability.Operation` for each: ``time.monotonic_ns()``
before sending and after the response. Any error leaves the outcome unknown (the request
may have been applied before the connection died or the deadline passed): the operation is
recorded without a response. After an error the worker moves to the next endpoint and backs
off briefly, so that a dead member does not turn into thousands of unknown operations.
Values are unique (``c<client>-<seq>``), which is what lets a read name the write it saw.

Each :class:`Watcher` is a thread with a watch stream on a key or a prefix from a start
revision. It records every event and progress response; when the stream breaks it opens a
new one from its last seen revision + 1 (on the next endpoint), so that its responses form
one logical stream. It sends a progress request now and then.

:func:`read_log` takes the store's whole log with a watch from revision 1. The randomness
of the workload comes from one seed; the timing of real processes does not, so a run is not
replayed exactly: its recorded history is (see :mod:`tests.robustness.run`).
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.robustness.linearizability import (
    KV,
    Compare,
    Delete,
    Event,
    Get,
    Operation,
    Put,
    Request,
    Response,
    Txn,
)
from tests.robustness.watch_check import WatcherHistory, WatchResponseRecord

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
PREFIX = b"key/"
PREFIX_END = b"key0"


def prefix_key(i: int) -> bytes:
    return PREFIX + b"%d" % i


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    clients: int = 4
    keys: int = 5
    request_timeout_s: float = 1.0
    error_backoff_s: float = 0.15
    # weights of: put, get key, get prefix, txn mod-revision CAS, txn value CAS, delete,
    # delete prefix
    weights: tuple[int, ...] = (40, 25, 8, 12, 6, 7, 2)


def _channel(endpoint: str) -> grpc.Channel:
    return grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)


def _kv_stub(channel: grpc.Channel) -> Any:
    return rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]


def _kvs(pb_kvs: Any) -> tuple[KV, ...]:
    return tuple(KV(kv.key, kv.value, kv.mod_revision) for kv in pb_kvs)


def execute(stub: Any, request: Request, timeout_s: float) -> Response:
    """Send one request; raise grpc.RpcError on failure."""
    match request:
        case Put():
            put = stub.Put(
                rpc_pb2.PutRequest(key=request.key, value=request.value), timeout=timeout_s
            )
            return Response(revision=put.header.revision)
        case Get():
            rng = stub.Range(
                rpc_pb2.RangeRequest(key=request.key, range_end=request.range_end),
                timeout=timeout_s,
            )
            return Response(revision=rng.header.revision, kvs=_kvs(rng.kvs))
        case Delete():
            dr = stub.DeleteRange(
                rpc_pb2.DeleteRangeRequest(
                    key=request.key, range_end=request.range_end, prev_kv=True
                ),
                timeout=timeout_s,
            )
            return Response(revision=dr.header.revision, deleted=dr.deleted, kvs=_kvs(dr.prev_kvs))
        case Txn():
            if request.compare is Compare.MOD_REVISION:
                cmp = rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.MOD,
                    key=request.key,
                    mod_revision=request.expected_mod_revision,
                )
            else:
                cmp = rpc_pb2.Compare(
                    result=rpc_pb2.Compare.EQUAL,
                    target=rpc_pb2.Compare.VALUE,
                    key=request.key,
                    value=request.expected_value,
                )
            txn = stub.Txn(
                rpc_pb2.TxnRequest(
                    compare=[cmp],
                    success=[
                        rpc_pb2.RequestOp(
                            request_put=rpc_pb2.PutRequest(key=request.key, value=request.value)
                        )
                    ],
                    failure=[
                        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=request.key))
                    ],
                ),
                timeout=timeout_s,
            )
            kvs: tuple[KV, ...] = ()
            if not txn.succeeded and txn.responses:
                kvs = _kvs(txn.responses[0].response_range.kvs)
            return Response(revision=txn.header.revision, kvs=kvs, succeeded=txn.succeeded)
    raise AssertionError(request)


@dataclass
class ClientWorker:
    client_id: int
    endpoints: Sequence[str]
    config: WorkloadConfig
    seed: int
    stop: threading.Event
    history: list[Operation] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.seq = 0
        self.endpoint_index = self.client_id % len(self.endpoints)
        # What this client last saw of each key, to aim its compare-and-swaps.
        self.seen: dict[bytes, KV] = {}
        self.thread = threading.Thread(target=self.run, name=f"client-{self.client_id}")

    def next_value(self) -> bytes:
        self.seq += 1
        return b"c%d-%d" % (self.client_id, self.seq)

    def next_request(self) -> Request:
        rng = self.rng
        kind = rng.choices(range(7), weights=self.config.weights)[0]
        key = prefix_key(rng.randrange(self.config.keys))
        seen = self.seen.get(key)
        match kind:
            case 0:
                return Put(key, self.next_value())
            case 1:
                return Get(key)
            case 2:
                return Get(PREFIX, PREFIX_END)
            case 3:
                mod = seen.mod_revision if seen else 0
                return Txn(
                    key, Compare.MOD_REVISION, expected_mod_revision=mod, value=self.next_value()
                )
            case 4:
                old = seen.value if seen else b"none"
                return Txn(key, Compare.VALUE, expected_value=old, value=self.next_value())
            case 5:
                return Delete(key)
            case _:
                return Delete(PREFIX, PREFIX_END)

    def remember(self, response: Response) -> None:
        for kv in response.kvs:
            self.seen[kv.key] = kv

    def run(self) -> None:
        channel = _channel(self.endpoints[self.endpoint_index])
        try:
            while not self.stop.is_set():
                request = self.next_request()
                stub = _kv_stub(channel)
                call_ns = time.monotonic_ns()
                try:
                    response = execute(stub, request, self.config.request_timeout_s)
                except grpc.RpcError:
                    self.history.append(Operation(self.client_id, request, call_ns))
                    self.errors += 1
                    channel.close()
                    self.endpoint_index = (self.endpoint_index + 1) % len(self.endpoints)
                    channel = _channel(self.endpoints[self.endpoint_index])
                    self.stop.wait(self.config.error_backoff_s * (0.5 + self.rng.random()))
                    continue
                return_ns = time.monotonic_ns()
                self.history.append(
                    Operation(self.client_id, request, call_ns, response, return_ns)
                )
                self.remember(response)
        finally:
            channel.close()


def _event(pb_event: Any) -> Event:
    kv = pb_event.kv
    is_delete = pb_event.type == 1
    return Event(kv.mod_revision, kv.key, b"" if is_delete else kv.value, is_delete)


@dataclass
class Watcher:
    name: str
    endpoints: Sequence[str]
    key: bytes
    range_end: bytes
    start_revision: int
    stop: threading.Event
    progress_interval_s: float = 0.5
    responses: list[WatchResponseRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    streams: int = 0

    def __post_init__(self) -> None:
        self.last_seen = self.start_revision - 1
        self.thread = threading.Thread(target=self.run, name=f"watcher-{self.name}")
        self._lock = threading.Lock()

    def history(self) -> WatcherHistory:
        with self._lock:
            responses = tuple(self.responses)
        return WatcherHistory(self.name, self.key, self.range_end, self.start_revision, responses)

    def run(self) -> None:
        endpoint_index = 0
        while not self.stop.is_set():
            endpoint = self.endpoints[endpoint_index % len(self.endpoints)]
            endpoint_index += 1
            with contextlib.suppress(grpc.RpcError):
                self._stream(endpoint)
            self.streams += 1
            self.stop.wait(0.1)

    def _stream(self, endpoint: str) -> None:
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=self.key, range_end=self.range_end, start_revision=self.last_seen + 1
                )
            )
        )

        def request_iter() -> Iterator[Any]:
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        def ticker() -> None:
            while not self.stop.wait(self.progress_interval_s) and not done.is_set():
                requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

        done = threading.Event()
        with _channel(endpoint) as channel:
            stub = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
            call = stub.Watch(request_iter())
            tick = threading.Thread(target=ticker, daemon=True)
            tick.start()
            stopper = threading.Thread(
                target=lambda: (self.stop.wait(), call.cancel()), daemon=True
            )
            stopper.start()
            try:
                for resp in call:
                    if resp.created:
                        continue
                    if resp.canceled:
                        self.problems.append(
                            f"{self.name}: watch canceled (compact_revision "
                            f"{resp.compact_revision}, reason {resp.cancel_reason!r})"
                        )
                        self.stop.set()
                        return
                    events = tuple(_event(e) for e in resp.events)
                    record = WatchResponseRecord(
                        events, resp.header.revision, progress=not events, stream=self.streams
                    )
                    with self._lock:
                        self.responses.append(record)
                        if events:
                            self.last_seen = max(self.last_seen, events[-1].revision)
                        else:
                            self.last_seen = max(self.last_seen, resp.header.revision)
            finally:
                done.set()
                requests.put(None)
                call.cancel()


def read_log(endpoints: Sequence[str], final_revision: int, timeout_s: float = 30.0) -> list[Event]:
    """Every event from revision 1 up to ``final_revision``, by a watch on all keys."""
    if final_revision <= 1:
        return []
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for endpoint in endpoints:
            events: list[Event] = []
            finished = threading.Event()

            def requests(finished: threading.Event = finished) -> Iterator[Any]:
                yield rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(
                        key=b"\0", range_end=b"\0", start_revision=1
                    )
                )
                finished.wait()  # a half-close must not end the stream early

            try:
                with _channel(endpoint) as channel:
                    stub = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
                    for resp in stub.Watch(requests(), timeout=timeout_s):
                        if resp.canceled:
                            raise AssertionError(f"log watch canceled: {resp}")
                        events.extend(_event(e) for e in resp.events)
                        if events and events[-1].revision >= final_revision:
                            return events
            except grpc.RpcError as exc:
                last_error = exc
            finally:
                finished.set()
    raise TimeoutError(f"could not read the log up to revision {final_revision}: {last_error}")
