"""petcd.server.request_size: etcd's InternalRaftRequest size, checked against protobuf's."""

from __future__ import annotations

from petcd.api.etcdserverpb import rpc_pb2
from petcd.mvcc.requests import (
    Compare,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from petcd.server.request_size import etcd_request_bytes

REQUEST_ID = 0xA1B2_0000_0000_0001  # etcd's ids: the member's low 16 bits on top


def _varint_size(n: int) -> int:
    return len(rpc_pb2.ResponseHeader(cluster_id=n).SerializeToString()) - 1  # a uint64


def _internal(field: int, body: bytes, auth_revision: int = 0) -> int:
    """InternalRaftRequest{header: {ID, auth_revision}, <field>: body}, marshalled by hand
    around protobuf's own bytes of the request (the header's message is not in petcd.api)."""
    header = 1 + _varint_size(REQUEST_ID)
    if auth_revision:
        header += 1 + _varint_size(auth_revision)
    return 2 + _varint_size(header) + header + 1 + _varint_size(len(body)) + len(body)


def test_put_with_every_field() -> None:
    put = PutRequest(b"k" * 300, b"v" * 200_000, -1, True, True, True)
    pb = rpc_pb2.PutRequest(
        key=put.key, value=put.value, lease=-1, prev_kv=True, ignore_value=True, ignore_lease=True
    )
    assert etcd_request_bytes(REQUEST_ID, put) == _internal(4, pb.SerializeToString())
    assert etcd_request_bytes(REQUEST_ID, PutRequest(b"k"), 7) == _internal(
        4, rpc_pb2.PutRequest(key=b"k").SerializeToString(), 7
    )


def test_delete_range_and_range() -> None:
    delete = DeleteRangeRequest(b"a", b"b" * 1000, True)
    pb = rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b" * 1000, prev_kv=True)
    assert etcd_request_bytes(REQUEST_ID, delete) == _internal(5, pb.SerializeToString())
    rng = RangeRequest(b"a", b"z", 5, -3, -1, 9, True, True, True, 1, 2, 3, 4)
    rpb = rpc_pb2.RangeRequest(
        key=b"a",
        range_end=b"z",
        limit=5,
        revision=-3,
        sort_order=-1,  # type: ignore[arg-type]
        sort_target=9,  # type: ignore[arg-type]
        serializable=True,
        keys_only=True,
        count_only=True,
        min_mod_revision=1,
        max_mod_revision=2,
        min_create_revision=3,
        max_create_revision=4,
    )
    assert etcd_request_bytes(REQUEST_ID, rng) == _internal(3, rpb.SerializeToString())


def test_txn_with_every_compare_target_and_op_kind() -> None:
    compares = (
        Compare(0, 0, b"a", version=0),
        Compare(1, 1, b"a", b"\x00", create_revision=-5),
        Compare(2, 2, b"a", mod_revision=1 << 40),
        Compare(3, 3, b"a", b"c", value=b""),
        Compare(0, 4, b"a", lease=7),
    )
    ops = (
        RequestOp(request_put=PutRequest(b"p", b"v" * 130)),
        RequestOp(request_range=RangeRequest(b"r", limit=1)),
        RequestOp(request_delete_range=DeleteRangeRequest(b"d")),
        RequestOp(request_txn=TxnRequest((), (RequestOp(request_put=PutRequest(b"n")),), ())),
    )
    txn = TxnRequest(compares, ops, ops[:2])
    pb_compares = [
        rpc_pb2.Compare(result=0, target=0, key=b"a", version=0),
        rpc_pb2.Compare(result=1, target=1, key=b"a", range_end=b"\x00", create_revision=-5),
        rpc_pb2.Compare(result=2, target=2, key=b"a", mod_revision=1 << 40),
        rpc_pb2.Compare(result=3, target=3, key=b"a", range_end=b"c", value=b""),
        rpc_pb2.Compare(result=0, target=4, key=b"a", lease=7),
    ]
    pb_ops = [
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"p", value=b"v" * 130)),
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"r", limit=1)),
        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"d")),
        rpc_pb2.RequestOp(
            request_txn=rpc_pb2.TxnRequest(
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"n"))]
            )
        ),
    ]
    pb = rpc_pb2.TxnRequest(compare=pb_compares, success=pb_ops, failure=pb_ops[:2])
    assert etcd_request_bytes(REQUEST_ID, txn) == _internal(6, pb.SerializeToString())
