"""Raw gRPC requests sent to a reference etcd and a target server, answers compared field by field.

Theory of operation: a :class:`GrpcPair` holds one channel to each of two servers that have
seen the same requests (the *reference*, a real etcd, and the *target*). :meth:`GrpcPair.call`
sends one request to both, in order, and returns both outcomes (an answer or a gRPC error);
:func:`assert_same` compares them after :func:`normalised` cleared what legitimately differs
between two clusters: the ids and term in every response header (revisions are kept), the lease
ids each server chose (the target's are mapped to the reference's through ``lease_alias``),
the order of LeaseLeases' list (etcd walks a Go map), and lease TTLs that count down (compared
within :data:`TTL_SLACK_S`). Errors are compared by status code and message.

:class:`WatchPair` is one Watch stream on each side, fed by a queue and drained by a thread,
so that a test can create watchers during a sequence and read what they saw after it.
"""

from __future__ import annotations

import difflib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

CALL_TIMEOUT_S = 20.0
TTL_SLACK_S = 2
# Response fields holding a lease id (KeyValue.lease, the lease responses' ID).
_LEASE_FIELDS = frozenset({"lease", "ID"})


@dataclass(frozen=True)
class Failed:
    """A call that ended in a gRPC error: what a client can match on."""

    code: grpc.StatusCode
    details: str


Outcome = Message | Failed


def _stubs(channel: grpc.Channel) -> dict[str, Any]:
    return {
        "KV": rpc_pb2_grpc.KVStub(channel),  # type: ignore[no-untyped-call]
        "Lease": rpc_pb2_grpc.LeaseStub(channel),  # type: ignore[no-untyped-call]
        "Watch": rpc_pb2_grpc.WatchStub(channel),  # type: ignore[no-untyped-call]
        "Maintenance": rpc_pb2_grpc.MaintenanceStub(channel),  # type: ignore[no-untyped-call]
    }


def _invoke(stub: Any, method: str, request: Message) -> Outcome:
    try:
        answer: Message = getattr(stub, method)(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return Failed(exc.code(), exc.details() or "")
    return answer


@dataclass
class GrpcPair:
    reference_endpoint: str
    target_endpoint: str
    # target's server-chosen lease id -> the reference's id for the same grant
    lease_alias: dict[int, int] = field(default_factory=dict)
    channels: tuple[grpc.Channel, grpc.Channel] | None = None
    member_ids: tuple[int, ...] = ()

    def open(self) -> None:
        # Unlimited answers: etcd sends a watcher's catch-up in one response, large values too.
        options = [
            ("grpc.max_send_message_length", 16 << 20),
            ("grpc.max_receive_message_length", -1),
        ]
        self.channels = (
            grpc.insecure_channel(self.reference_endpoint, options=options),
            grpc.insecure_channel(self.target_endpoint, options=options),
        )
        self._stubs = (_stubs(self.channels[0]), _stubs(self.channels[1]))
        self.member_ids = tuple(
            stubs["Maintenance"].Status(rpc_pb2.StatusRequest()).header.member_id
            for stubs in self._stubs
        )

    def close(self) -> None:
        if self.channels is not None:
            for channel in self.channels:
                channel.close()
            self.channels = None

    def stub(self, side: int, service: str) -> Any:
        return self._stubs[side][service]

    def call(
        self, service: str, method: str, requests: tuple[Message, Message]
    ) -> tuple[Outcome, Outcome]:
        """Send requests[0] to the reference, then requests[1] to the target."""
        ref = _invoke(self._stubs[0][service], method, requests[0])
        target = _invoke(self._stubs[1][service], method, requests[1])
        return ref, target

    def call_same(self, service: str, method: str, request: Message) -> tuple[Outcome, Outcome]:
        return self.call(service, method, (request, request))

    def watch(self) -> WatchPair:
        return WatchPair(WatchStream(self._stubs[0]["Watch"]), WatchStream(self._stubs[1]["Watch"]))


def normalised(outcome: Outcome, lease_alias: dict[int, int] | None = None) -> Outcome:
    """A copy without what differs between two clusters that saw the same requests."""
    if isinstance(outcome, Failed):
        return outcome
    copy = type(outcome)()
    copy.CopyFrom(outcome)
    _scrub(copy, lease_alias or {})
    if isinstance(copy, rpc_pb2.LeaseLeasesResponse):
        ordered = sorted(copy.leases, key=lambda status: status.ID)
        del copy.leases[:]
        copy.leases.extend(ordered)
    return copy


def _scrub(message: Message, lease_alias: dict[int, int]) -> None:
    if isinstance(message, rpc_pb2.ResponseHeader):
        message.cluster_id = 0
        message.member_id = 0
        message.raft_term = 0
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            items = value if descriptor.is_repeated else [value]
            for item in items:
                _scrub(item, lease_alias)
        elif descriptor.name in _LEASE_FIELDS and value in lease_alias:
            setattr(message, descriptor.name, lease_alias[value])


def _ttl_fields(message: Message) -> list[Message]:
    """The messages whose TTL counts down while the test runs."""
    if isinstance(message, rpc_pb2.LeaseTimeToLiveResponse):
        return [message]
    return []


def assert_same(
    what: object, ref: Outcome, target: Outcome, lease_alias: dict[int, int] | None = None
) -> None:
    ref_n = normalised(ref)
    target_n = normalised(target, lease_alias)
    if isinstance(ref_n, Message) and isinstance(target_n, Message):
        for ref_ttl, target_ttl in zip(_ttl_fields(ref_n), _ttl_fields(target_n), strict=True):
            ttls = (getattr(ref_ttl, "TTL"), getattr(target_ttl, "TTL"))  # noqa: B009
            assert abs(ttls[0] - ttls[1]) <= TTL_SLACK_S, (what, ttls)
            assert (ttls[0] < 0) == (ttls[1] < 0), (what, ttls)
            target_ttl.TTL = ref_ttl.TTL  # type: ignore[attr-defined]
    if show(target_n) != show(ref_n):
        raise AssertionError(
            f"{what}\nthe target differs from etcd:\n{diff(show(ref_n), show(target_n))}"
        )


def diff(reference: str, target: str) -> str:
    """The lines that differ, with some context ("-" etcd, "+" the target)."""
    lines = difflib.unified_diff(
        reference.splitlines(), target.splitlines(), "etcd", "target", n=6, lineterm=""
    )
    return "\n".join(lines)


def show(outcome: Outcome) -> str:
    if isinstance(outcome, Failed):
        return f"error {outcome.code.name}: {outcome.details}"
    from google.protobuf import text_format

    text = text_format.MessageToString(outcome)
    # Large values: their start and their length in thousands of bytes tell them apart (the
    # fuzz's puts at the size limit differ by a byte between the two servers, on purpose).
    lines = [
        line if len(line) < 300 else f"{line[:200]}... ({len(line) // 1000}k chars)"
        for line in text.splitlines()
    ]
    return f"{type(outcome).__name__} {{\n" + "\n".join(lines) + "\n}"


class WatchStream:
    """One Watch stream: requests go in through a queue, answers collect in a list."""

    def __init__(self, stub: Any) -> None:
        self._requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self.responses: list[rpc_pb2.WatchResponse] = []
        self.cancel_requested: set[int] = set()  # the watch ids a test asked to cancel
        self.error: Failed | None = None
        self._lock = threading.Lock()
        self._call = stub.Watch(self._request_iter())
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _request_iter(self) -> Iterator[rpc_pb2.WatchRequest]:
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _drain(self) -> None:
        try:
            for response in self._call:
                with self._lock:
                    self.responses.append(response)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = Failed(exc.code(), exc.details() or "")

    def send(self, request: rpc_pb2.WatchRequest) -> None:
        self._requests.put(request)

    def snapshot(self) -> list[rpc_pb2.WatchResponse]:
        with self._lock:
            return list(self.responses)

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._thread.join(timeout=5)


@dataclass
class WatchPair:
    reference: WatchStream
    target: WatchStream

    def send(self, request: rpc_pb2.WatchRequest) -> None:
        self.reference.send(request)
        self.target.send(request)

    def close(self) -> None:
        self.reference.close()
        self.target.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
