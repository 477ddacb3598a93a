"""Conversions between etcd's protobuf messages and petcd's request/response dataclasses.

Theory of operation
-------------------
The KV service receives generated protobuf objects (``petcd.api``) and the member works on the
frozen dataclasses of ``petcd.mvcc.requests``, which carry the same field names and enum numbers.
Each function here maps one message type field by field, recursively for transactions. The
mapping is total: every protobuf field of these messages has a dataclass field and back.

Protobuf ``oneof`` fields map to "exactly one of these is not None" on the dataclass side
(``RequestOp.request_*``); ``Compare.target_union`` maps to the plain fields ``version``,
``create_revision``, ``mod_revision``, ``value``, ``lease`` — only the one ``target`` selects
is written back to the protobuf message, as etcd's clients set it.
"""

from __future__ import annotations

from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.mvcc.requests import (
    CompactionRequest,
    Compare,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    TxnRequest,
    TxnResponse,
)

# --- protobuf -> dataclass (requests) -------------------------------------------------------


def range_request(m: Any) -> RangeRequest:
    return RangeRequest(
        key=m.key,
        range_end=m.range_end,
        limit=m.limit,
        revision=m.revision,
        sort_order=m.sort_order,
        sort_target=m.sort_target,
        serializable=m.serializable,
        keys_only=m.keys_only,
        count_only=m.count_only,
        min_mod_revision=m.min_mod_revision,
        max_mod_revision=m.max_mod_revision,
        min_create_revision=m.min_create_revision,
        max_create_revision=m.max_create_revision,
    )


def put_request(m: Any) -> PutRequest:
    return PutRequest(
        key=m.key,
        value=m.value,
        lease=m.lease,
        prev_kv=m.prev_kv,
        ignore_value=m.ignore_value,
        ignore_lease=m.ignore_lease,
    )


def delete_range_request(m: Any) -> DeleteRangeRequest:
    return DeleteRangeRequest(key=m.key, range_end=m.range_end, prev_kv=m.prev_kv)


def compare(m: Any) -> Compare:
    return Compare(
        result=m.result,
        target=m.target,
        key=m.key,
        range_end=m.range_end,
        version=m.version,
        create_revision=m.create_revision,
        mod_revision=m.mod_revision,
        value=m.value,
        lease=m.lease,
    )


def request_op(m: Any) -> RequestOp:
    which = m.WhichOneof("request")
    if which == "request_range":
        return RequestOp(request_range=range_request(m.request_range))
    if which == "request_put":
        return RequestOp(request_put=put_request(m.request_put))
    if which == "request_delete_range":
        return RequestOp(request_delete_range=delete_range_request(m.request_delete_range))
    if which == "request_txn":
        return RequestOp(request_txn=txn_request(m.request_txn))
    # etcd treats an empty RequestOp as a no-op range of nothing; petcd rejects it upstream.
    return RequestOp()


def txn_request(m: Any) -> TxnRequest:
    return TxnRequest(
        compare=tuple(compare(c) for c in m.compare),
        success=tuple(request_op(o) for o in m.success),
        failure=tuple(request_op(o) for o in m.failure),
    )


def compaction_request(m: Any) -> CompactionRequest:
    return CompactionRequest(revision=m.revision, physical=m.physical)


# --- dataclass -> protobuf (responses) ------------------------------------------------------


def header_pb(h: ResponseHeader) -> Any:
    return rpc_pb2.ResponseHeader(
        cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision, raft_term=h.raft_term
    )


def key_value_pb(kv: KeyValue) -> Any:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def range_response_pb(r: RangeResponse) -> Any:
    return rpc_pb2.RangeResponse(
        header=header_pb(r.header),
        kvs=[key_value_pb(kv) for kv in r.kvs],
        more=r.more,
        count=r.count,
    )


def put_response_pb(r: PutResponse) -> Any:
    if r.prev_kv is None:
        return rpc_pb2.PutResponse(header=header_pb(r.header))
    return rpc_pb2.PutResponse(header=header_pb(r.header), prev_kv=key_value_pb(r.prev_kv))


def delete_range_response_pb(r: DeleteRangeResponse) -> Any:
    return rpc_pb2.DeleteRangeResponse(
        header=header_pb(r.header),
        deleted=r.deleted,
        prev_kvs=[key_value_pb(kv) for kv in r.prev_kvs],
    )


def response_op_pb(op: ResponseOp) -> Any:
    if op.response_range is not None:
        return rpc_pb2.ResponseOp(response_range=range_response_pb(op.response_range))
    if op.response_put is not None:
        return rpc_pb2.ResponseOp(response_put=put_response_pb(op.response_put))
    if op.response_delete_range is not None:
        return rpc_pb2.ResponseOp(
            response_delete_range=delete_range_response_pb(op.response_delete_range)
        )
    assert op.response_txn is not None, "a ResponseOp with no response"
    return rpc_pb2.ResponseOp(response_txn=txn_response_pb(op.response_txn))


def txn_response_pb(r: TxnResponse) -> Any:
    return rpc_pb2.TxnResponse(
        header=header_pb(r.header),
        succeeded=r.succeeded,
        responses=[response_op_pb(op) for op in r.responses],
    )


# --- dataclass -> protobuf (requests; used by tests and tools) -------------------------------


def range_request_pb(r: RangeRequest) -> Any:
    return rpc_pb2.RangeRequest(
        key=r.key,
        range_end=r.range_end,
        limit=r.limit,
        revision=r.revision,
        sort_order=int(r.sort_order),  # type: ignore[arg-type]
        sort_target=int(r.sort_target),  # type: ignore[arg-type]
        serializable=r.serializable,
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_request_pb(r: PutRequest) -> Any:
    return rpc_pb2.PutRequest(
        key=r.key,
        value=r.value,
        lease=r.lease,
        prev_kv=r.prev_kv,
        ignore_value=r.ignore_value,
        ignore_lease=r.ignore_lease,
    )


def delete_range_request_pb(r: DeleteRangeRequest) -> Any:
    return rpc_pb2.DeleteRangeRequest(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


def compare_pb(c: Compare) -> Any:
    m = rpc_pb2.Compare(result=int(c.result), target=int(c.target), key=c.key)  # type: ignore[arg-type]
    if c.range_end:
        m.range_end = c.range_end
    target = c.target
    if target == CompareTarget.VERSION:
        m.version = c.version
    elif target == CompareTarget.CREATE:
        m.create_revision = c.create_revision
    elif target == CompareTarget.MOD:
        m.mod_revision = c.mod_revision
    elif target == CompareTarget.LEASE:
        m.lease = c.lease
    else:
        m.value = c.value
    return m


def request_op_pb(op: RequestOp) -> Any:
    if op.request_range is not None:
        return rpc_pb2.RequestOp(request_range=range_request_pb(op.request_range))
    if op.request_put is not None:
        return rpc_pb2.RequestOp(request_put=put_request_pb(op.request_put))
    if op.request_delete_range is not None:
        return rpc_pb2.RequestOp(
            request_delete_range=delete_range_request_pb(op.request_delete_range)
        )
    if op.request_txn is not None:
        return rpc_pb2.RequestOp(request_txn=txn_request_pb(op.request_txn))
    return rpc_pb2.RequestOp()


def txn_request_pb(r: TxnRequest) -> Any:
    return rpc_pb2.TxnRequest(
        compare=[compare_pb(c) for c in r.compare],
        success=[request_op_pb(o) for o in r.success],
        failure=[request_op_pb(o) for o in r.failure],
    )


def event_pb(ev: Event) -> Any:
    m = kv_pb2.Event(type=int(ev.type), kv=key_value_pb(ev.kv))  # type: ignore[arg-type]
    if ev.prev_kv is not None:
        m.prev_kv.CopyFrom(key_value_pb(ev.prev_kv))
    return m
