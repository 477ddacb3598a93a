"""The size etcd gives a proposal when it refuses one as too large.

Theory of operation: etcd refuses a write with "etcdserver: request is too large" when its
``InternalRaftRequest`` — a header holding the request id (and, with auth, the user name and
auth revision), then the client's request — marshals to more than ``--max-request-bytes``.
petcd proposes its own, smaller encoding (``petcd.server.entry``), so near the limit it
computes etcd's size from the request instead: the protobuf size of each field etcd would
write (proto3: a zero scalar is not written; the member of a ``oneof`` that is set is, even
when zero). The user name is not known here: a request checked by auth is counted without it.

Nothing here is on the hot path: the member asks only for requests whose own encoding is a
sizeable fraction of the limit.
"""

from __future__ import annotations

from petcd.mvcc.requests import (
    CompactionRequest,
    Compare,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)

# InternalRaftRequest's fields (etcd's raft_internal.proto)
_FIELD_RANGE, _FIELD_PUT, _FIELD_DELETE_RANGE, _FIELD_TXN, _FIELD_COMPACTION = 3, 4, 5, 6, 7
_FIELD_HEADER = 100


def _varint_size(n: int) -> int:
    n &= (1 << 64) - 1  # a negative int64 or int32 is written as 10 bytes
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _tag_size(field: int) -> int:
    return _varint_size(field << 3)


def _int(field: int, n: int) -> int:
    return 0 if n == 0 else _tag_size(field) + _varint_size(n)


def _flag(field: int, b: bool) -> int:
    return _tag_size(field) + 1 if b else 0


def _bytes(field: int, b: bytes) -> int:
    return 0 if not b else _embedded(field, len(b))


def _embedded(field: int, size: int) -> int:
    return _tag_size(field) + _varint_size(size) + size


def _range(r: RangeRequest) -> int:
    return (
        _bytes(1, r.key)
        + _bytes(2, r.range_end)
        + _int(3, r.limit)
        + _int(4, r.revision)
        + _int(5, int(r.sort_order))
        + _int(6, int(r.sort_target))
        + _flag(7, r.serializable)
        + _flag(8, r.keys_only)
        + _flag(9, r.count_only)
        + _int(10, r.min_mod_revision)
        + _int(11, r.max_mod_revision)
        + _int(12, r.min_create_revision)
        + _int(13, r.max_create_revision)
    )


def _put(r: PutRequest) -> int:
    return (
        _bytes(1, r.key)
        + _bytes(2, r.value)
        + _int(3, r.lease)
        + _flag(4, r.prev_kv)
        + _flag(5, r.ignore_value)
        + _flag(6, r.ignore_lease)
    )


def _delete(r: DeleteRangeRequest) -> int:
    return _bytes(1, r.key) + _bytes(2, r.range_end) + _flag(3, r.prev_kv)


def _compare(c: Compare) -> int:
    size = _int(1, int(c.result)) + _int(2, int(c.target)) + _bytes(3, c.key)
    target = c.target
    # the oneof member the target names (petcd does not keep which one the client set)
    if target == CompareTarget.VERSION:
        size += _tag_size(4) + _varint_size(c.version)
    elif target == CompareTarget.CREATE:
        size += _tag_size(5) + _varint_size(c.create_revision)
    elif target == CompareTarget.MOD:
        size += _tag_size(6) + _varint_size(c.mod_revision)
    elif target == CompareTarget.VALUE:
        size += _embedded(7, len(c.value))
    elif target == CompareTarget.LEASE:
        size += _tag_size(8) + _varint_size(c.lease)
    return size + _bytes(64, c.range_end)


def _op(op: RequestOp) -> int:
    if op.request_range is not None:
        return _embedded(1, _range(op.request_range))
    if op.request_put is not None:
        return _embedded(2, _put(op.request_put))
    if op.request_delete_range is not None:
        return _embedded(3, _delete(op.request_delete_range))
    if op.request_txn is not None:
        return _embedded(4, _txn(op.request_txn))
    return 0


def _txn(r: TxnRequest) -> int:
    return (
        sum(_embedded(1, _compare(c)) for c in r.compare)
        + sum(_embedded(2, _op(op)) for op in r.success)
        + sum(_embedded(3, _op(op)) for op in r.failure)
    )


def etcd_request_bytes(request_id: int, request: object, auth_revision: int = 0) -> int | None:
    """The size of etcd's InternalRaftRequest for ``request``; None for another kind."""
    if isinstance(request, PutRequest):
        body = _embedded(_FIELD_PUT, _put(request))
    elif isinstance(request, TxnRequest):
        body = _embedded(_FIELD_TXN, _txn(request))
    elif isinstance(request, DeleteRangeRequest):
        body = _embedded(_FIELD_DELETE_RANGE, _delete(request))
    elif isinstance(request, RangeRequest):
        body = _embedded(_FIELD_RANGE, _range(request))
    elif isinstance(request, CompactionRequest):
        body = _embedded(_FIELD_COMPACTION, _int(1, request.revision) + _flag(2, request.physical))
    else:
        return None
    header = _int(1, request_id) + _int(3, auth_revision)
    return _embedded(_FIELD_HEADER, header) + body
