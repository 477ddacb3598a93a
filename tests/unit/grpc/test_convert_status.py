"""petcd.grpc: protobuf <-> dataclass conversions and etcd's status codes and messages."""

from __future__ import annotations

import grpc
from hypothesis import given, settings

from petcd.api.etcdserverpb import rpc_pb2
from petcd.backend.errors import DatabaseSpaceExceededError
from petcd.grpc import convert
from petcd.grpc.status import status_for
from petcd.mvcc import errors as mvcc_errors
from petcd.mvcc.requests import (
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    ResponseOp,
    TxnRequest,
    TxnResponse,
)
from petcd.server import errors as server_errors
from tests.unit.server.test_entry import ranges, txns


@settings(max_examples=80, deadline=None)
@given(txns)
def test_txn_request_roundtrip_through_protobuf(txn: TxnRequest) -> None:
    pb = convert.txn_request_pb(txn)
    wire = rpc_pb2.TxnRequest.FromString(pb.SerializeToString())
    assert convert.txn_request(wire) == txn


@settings(max_examples=100, deadline=None)
@given(ranges)
def test_range_request_roundtrip(r: object) -> None:
    pb = convert.range_request_pb(r)  # type: ignore[arg-type]
    assert convert.range_request(rpc_pb2.RangeRequest.FromString(pb.SerializeToString())) == r


def test_responses_to_protobuf() -> None:
    h = ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4)
    kv = KeyValue(b"k", 2, 3, 1, b"v", 7)
    txn = TxnResponse(
        h,
        True,
        (
            ResponseOp(response_range=RangeResponse(ResponseHeader(), (kv,), True, 5)),
            ResponseOp(response_put=PutResponse(ResponseHeader(revision=3), prev_kv=kv)),
        ),
    )
    pb = convert.txn_response_pb(txn)
    assert pb.header.cluster_id == 1 and pb.header.raft_term == 4 and pb.succeeded
    assert pb.responses[0].response_range.kvs[0].value == b"v"
    assert pb.responses[0].response_range.more and pb.responses[0].response_range.count == 5
    assert pb.responses[1].response_put.prev_kv.lease == 7
    assert not convert.put_response_pb(PutResponse(h)).HasField("prev_kv")


def test_etcd_status_codes_and_messages() -> None:
    c = grpc.StatusCode
    assert status_for(mvcc_errors.CompactedError(5)) == (
        c.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
    assert status_for(mvcc_errors.FutureRevisionError()) == (
        c.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision is a future revision",
    )
    assert status_for(mvcc_errors.EmptyKeyError()) == (
        c.INVALID_ARGUMENT,
        "etcdserver: key is not provided",
    )
    assert status_for(mvcc_errors.KeyNotFoundError()) == (
        c.INVALID_ARGUMENT,
        "etcdserver: key not found",
    )
    assert status_for(mvcc_errors.TooManyOpsError()) == (
        c.INVALID_ARGUMENT,
        "etcdserver: too many operations in txn request",
    )
    assert status_for(mvcc_errors.DuplicateKeyError()) == (
        c.INVALID_ARGUMENT,
        "etcdserver: duplicate key given in txn request",
    )
    assert status_for(server_errors.RequestTooLargeError()) == (
        c.INVALID_ARGUMENT,
        "etcdserver: request is too large",
    )
    assert status_for(server_errors.NoLeaderError()) == (c.UNAVAILABLE, "etcdserver: no leader")
    assert status_for(server_errors.LeaderChangedError()) == (
        c.UNAVAILABLE,
        "etcdserver: leader changed",
    )
    assert status_for(server_errors.RequestTimeoutError()) == (
        c.UNAVAILABLE,
        "etcdserver: request timed out",
    )
    assert status_for(server_errors.StoppedError()) == (
        c.UNAVAILABLE,
        "etcdserver: server stopped",
    )
    assert status_for(DatabaseSpaceExceededError()) == (
        c.RESOURCE_EXHAUSTED,
        "etcdserver: mvcc: database space exceeded",
    )
    assert status_for(RuntimeError("boom")) == (c.UNKNOWN, "boom")
