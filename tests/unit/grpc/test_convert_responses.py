"""petcd.grpc.convert: responses filled in place serialize as the constructor-built messages."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.grpc import convert
from petcd.mvcc.requests import (
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    ResponseOp,
    TxnResponse,
)

i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=3) | i64
kvs = st.builds(
    KeyValue,
    key=st.binary(max_size=12),
    create_revision=small,
    mod_revision=small,
    version=small,
    value=st.binary(max_size=200),
    lease=small,
)
headers = st.builds(
    ResponseHeader,
    cluster_id=st.just(0) | u64,
    member_id=st.just(0) | u64,
    revision=small,
    raft_term=st.just(0) | u64,
)
puts = st.builds(PutResponse, header=headers, prev_kv=st.none() | kvs)
ranges = st.builds(
    RangeResponse,
    header=headers,
    kvs=st.lists(kvs, max_size=3).map(tuple),
    more=st.booleans(),
    count=small,
)
deletes = st.builds(
    DeleteRangeResponse,
    header=headers,
    deleted=small,
    prev_kvs=st.lists(kvs, max_size=2).map(tuple),
)


def _ops(txn: st.SearchStrategy[TxnResponse]) -> st.SearchStrategy[ResponseOp]:
    return (
        st.builds(ResponseOp, response_put=puts)
        | st.builds(ResponseOp, response_range=ranges)
        | st.builds(ResponseOp, response_delete_range=deletes)
        | st.builds(ResponseOp, response_txn=txn)
    )


txns = st.recursive(
    st.builds(TxnResponse, header=headers, succeeded=st.booleans(), responses=st.just(())),
    lambda inner: st.builds(
        TxnResponse,
        header=headers,
        succeeded=st.booleans(),
        responses=st.lists(_ops(inner), max_size=3).map(tuple),
    ),
    max_leaves=6,
)


# The constructor-built reference: every sub-message passed to its parent's constructor.
def ref_header(h: ResponseHeader) -> Any:
    return rpc_pb2.ResponseHeader(
        cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision, raft_term=h.raft_term
    )


def ref_kv(kv: KeyValue) -> Any:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def ref_put(r: PutResponse) -> Any:
    if r.prev_kv is None:
        return rpc_pb2.PutResponse(header=ref_header(r.header))
    return rpc_pb2.PutResponse(header=ref_header(r.header), prev_kv=ref_kv(r.prev_kv))


def ref_range(r: RangeResponse) -> Any:
    return rpc_pb2.RangeResponse(
        header=ref_header(r.header), kvs=[ref_kv(kv) for kv in r.kvs], more=r.more, count=r.count
    )


def ref_delete(r: DeleteRangeResponse) -> Any:
    return rpc_pb2.DeleteRangeResponse(
        header=ref_header(r.header), deleted=r.deleted, prev_kvs=[ref_kv(kv) for kv in r.prev_kvs]
    )


def ref_op(op: ResponseOp) -> Any:
    if op.response_range is not None:
        return rpc_pb2.ResponseOp(response_range=ref_range(op.response_range))
    if op.response_put is not None:
        return rpc_pb2.ResponseOp(response_put=ref_put(op.response_put))
    if op.response_delete_range is not None:
        return rpc_pb2.ResponseOp(response_delete_range=ref_delete(op.response_delete_range))
    assert op.response_txn is not None
    return rpc_pb2.ResponseOp(response_txn=ref_txn(op.response_txn))


def ref_txn(r: TxnResponse) -> Any:
    return rpc_pb2.TxnResponse(
        header=ref_header(r.header),
        succeeded=r.succeeded,
        responses=[ref_op(op) for op in r.responses],
    )


@settings(max_examples=150, deadline=None)
@given(puts)
def test_put_response(r: PutResponse) -> None:
    assert convert.put_response_pb(r) == ref_put(r)


@settings(max_examples=150, deadline=None)
@given(ranges)
def test_range_response(r: RangeResponse) -> None:
    assert convert.range_response_pb(r) == ref_range(r)


@settings(max_examples=100, deadline=None)
@given(deletes)
def test_delete_range_response(r: DeleteRangeResponse) -> None:
    assert convert.delete_range_response_pb(r) == ref_delete(r)


@settings(max_examples=150, deadline=None)
@given(txns)
def test_txn_response(r: TxnResponse) -> None:
    m = convert.txn_response_pb(r)
    assert m == ref_txn(r)
    assert m.SerializeToString(deterministic=True) == ref_txn(r).SerializeToString(
        deterministic=True
    )


def test_an_all_zero_header_is_still_present() -> None:
    m = convert.put_response_pb(PutResponse(header=ResponseHeader()))
    assert m.HasField("header")
    op = convert.response_op_pb(ResponseOp(response_put=PutResponse(header=ResponseHeader())))
    assert op.WhichOneof("response") == "response_put"
