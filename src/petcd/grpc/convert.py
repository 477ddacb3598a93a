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

from collections.abc import Sequence
from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.mvcc.kvstore import add_records
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


# The request builders pass fields positionally, in the dataclasses' field order: keyword
# arguments make a frozen dataclass's constructor about 1.5x slower (RangeRequest 3.1 -> 2.0 µs).


def range_request(m: Any) -> RangeRequest:
    return RangeRequest(
        m.key,
        m.range_end,
        m.limit,
        m.revision,
        m.sort_order,
        m.sort_target,
        m.serializable,
        m.keys_only,
        m.count_only,
        m.min_mod_revision,
        m.max_mod_revision,
        m.min_create_revision,
        m.max_create_revision,
    )


def put_request(m: Any) -> PutRequest:
    return PutRequest(m.key, m.value, m.lease, m.prev_kv, m.ignore_value, m.ignore_lease)


def delete_range_request(m: Any) -> DeleteRangeRequest:
    return DeleteRangeRequest(m.key, m.range_end, m.prev_kv)


def compare(m: Any) -> Compare:
    return Compare(
        m.result,
        m.target,
        m.key,
        m.range_end,
        m.version,
        m.create_revision,
        m.mod_revision,
        m.value,
        m.lease,
    )


def request_op(m: Any) -> RequestOp:
    # Positional arguments: (request_range, request_put, request_delete_range, request_txn).
    which = m.WhichOneof("request")
    if which == "request_put":  # the common case first
        return RequestOp(None, put_request(m.request_put))
    if which == "request_range":
        return RequestOp(range_request(m.request_range))
    if which == "request_delete_range":
        return RequestOp(None, None, delete_range_request(m.request_delete_range))
    if which == "request_txn":
        return RequestOp(None, None, None, txn_request(m.request_txn))
    # etcd treats an empty RequestOp as a no-op range of nothing; petcd rejects it upstream.
    return RequestOp()


def txn_request(m: Any) -> TxnRequest:
    # Every Kubernetes write is a Txn: no generator per field, nothing built for empty ones.
    c, s, f = m.compare, m.success, m.failure
    return TxnRequest(
        tuple(map(compare, c)) if c else (),
        tuple(map(request_op, s)) if s else (),
        tuple(map(request_op, f)) if f else (),
    )


def compaction_request(m: Any) -> CompactionRequest:
    return CompactionRequest(revision=m.revision, physical=m.physical)


# --- dataclass -> protobuf (responses) ------------------------------------------------------


def header_pb(h: ResponseHeader) -> Any:
    return rpc_pb2.ResponseHeader(
        cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision, raft_term=h.raft_term
    )


# The response builders below fill sub-messages in place (``m.header.revision = ...``,
# ``m.kvs.add(...)``): building a sub-message and passing it to a constructor copies it, which
# costs about four times as much on the Put path (see bench/results/*-convert-micro.json).


def _fill_header(m: Any, h: ResponseHeader) -> None:
    # Assigning even a zero marks the header present, as passing ``header=`` did.
    m.cluster_id = h.cluster_id
    m.member_id = h.member_id
    m.revision = h.revision
    m.raft_term = h.raft_term


def _fill_key_value(m: Any, kv: KeyValue) -> None:
    m.key = kv.key
    m.create_revision = kv.create_revision
    m.mod_revision = kv.mod_revision
    m.version = kv.version
    m.value = kv.value
    m.lease = kv.lease


def key_value_pb(kv: KeyValue) -> Any:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def _fill_range_response(m: Any, r: RangeResponse, records: list[bytes] | None = None) -> None:
    _fill_header(m.header, r.header)
    add = m.kvs.add
    if records is not None:  # the KeyValues as stored (KVStore.range_records)
        add_records(add, records)
    for kv in r.kvs:
        add(
            key=kv.key,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            value=kv.value,
            lease=kv.lease,
        )
    if r.more:
        m.more = True
    if r.count:
        m.count = r.count


def range_response_pb(r: RangeResponse, records: list[bytes] | None = None) -> Any:
    """``records``: the response's KeyValues as stored, when ``r`` has none (``range_records``)."""
    m = rpc_pb2.RangeResponse()
    _fill_range_response(m, r, records)
    return m


def _fill_put_response(m: Any, r: PutResponse) -> None:
    _fill_header(m.header, r.header)
    if r.prev_kv is not None:
        _fill_key_value(m.prev_kv, r.prev_kv)


def put_response_pb(r: PutResponse) -> Any:
    m = rpc_pb2.PutResponse()
    _fill_put_response(m, r)
    return m


def _fill_delete_range_response(m: Any, r: DeleteRangeResponse) -> None:
    _fill_header(m.header, r.header)
    if r.deleted:
        m.deleted = r.deleted
    for kv in r.prev_kvs:
        _fill_key_value(m.prev_kvs.add(), kv)


def delete_range_response_pb(r: DeleteRangeResponse) -> Any:
    m = rpc_pb2.DeleteRangeResponse()
    _fill_delete_range_response(m, r)
    return m


def _fill_response_op(m: Any, op: ResponseOp) -> None:
    put = op.response_put
    if put is not None:
        pm = m.response_put
        h, mh = put.header, pm.header
        mh.cluster_id = h.cluster_id
        mh.member_id = h.member_id
        mh.revision = h.revision
        mh.raft_term = h.raft_term
        if put.prev_kv is not None:
            _fill_key_value(pm.prev_kv, put.prev_kv)
    elif op.response_range is not None:
        _fill_range_response(m.response_range, op.response_range)
    elif op.response_delete_range is not None:
        _fill_delete_range_response(m.response_delete_range, op.response_delete_range)
    else:
        assert op.response_txn is not None, "a ResponseOp with no response"
        _fill_txn_response(m.response_txn, op.response_txn)


def response_op_pb(op: ResponseOp) -> Any:
    m = rpc_pb2.ResponseOp()
    _fill_response_op(m, op)
    return m


def _fill_txn_response(m: Any, r: TxnResponse) -> None:
    _fill_header(m.header, r.header)
    if r.succeeded:
        m.succeeded = True
    if r.responses:
        add = m.responses.add
        for op in r.responses:
            _fill_response_op(add(), op)


def txn_response_pb(r: TxnResponse) -> Any:
    m = rpc_pb2.TxnResponse()
    _fill_txn_response(m, r)
    return m


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


# --- pre-serialized watch responses ----------------------------------------------------------
#
# A write seen by many watchers is delivered to each of them in its own WatchResponse, which
# differs between watchers only in ``watch_id`` (and the header, which is the same for one
# revision). Protobuf's wire format is a concatenation of fields, so the bytes of a
# WatchResponse are built here from pieces: the header field (encoded once per distinct
# header), the watch_id field, and each event's field (encoded once per Event object, which the
# watchable store shares between all watchers that do not ask for prev_kv). Fields go in field
# number order, as protobuf's own serializer writes them, so the bytes are the same.

_WATCH_HEADER_TAG = b"\x0a"  # WatchResponse.header, field 1, length-delimited
_WATCH_ID_TAG = b"\x10"  # WatchResponse.watch_id, field 2, varint
_WATCH_EVENT_TAG = b"\x5a"  # WatchResponse.events, field 11, length-delimited
_EVENT_CACHE_ENTRIES_MAX = 4096
_EVENT_CACHE_BYTES_MAX = 16 << 20
_HEADER_CACHE_ENTRIES_MAX = 256

# id(event) -> (event, its encoded ``events`` field); the event is held so its id stays unique.
_event_fields: dict[int, tuple[Event, bytes]] = {}
_event_fields_bytes = 0
_header_fields: dict[ResponseHeader, bytes] = {}
_VARINT1 = [bytes((i,)) for i in range(128)]


def _varint(v: int) -> bytes:
    if 0 <= v < 128:
        return _VARINT1[v]
    if v < 0:
        v += 1 << 64  # int64 negatives are ten-byte two's-complement varints
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _event_field(ev: Event) -> bytes:
    global _event_fields_bytes
    hit = _event_fields.get(id(ev))
    if hit is not None and hit[0] is ev:
        return hit[1]
    body: bytes = event_pb(ev).SerializeToString()
    fld = _WATCH_EVENT_TAG + _varint(len(body)) + body
    if (
        len(_event_fields) >= _EVENT_CACHE_ENTRIES_MAX
        or _event_fields_bytes > _EVENT_CACHE_BYTES_MAX
    ):
        _event_fields.clear()
        _event_fields_bytes = 0
    _event_fields[id(ev)] = (ev, fld)
    _event_fields_bytes += len(fld)
    return fld


def _header_field(h: ResponseHeader) -> bytes:
    fld = _header_fields.get(h)
    if fld is None:
        body: bytes = header_pb(h).SerializeToString()
        fld = _WATCH_HEADER_TAG + _varint(len(body)) + body
        if len(_header_fields) >= _HEADER_CACHE_ENTRIES_MAX:
            _header_fields.clear()
        _header_fields[h] = fld
    return fld


def watch_events_bytes(header: ResponseHeader, watch_id: int, events: tuple[Event, ...]) -> bytes:
    """The serialized ``WatchResponse{header, watch_id, events}``, as SerializeToString."""
    parts = [_header_field(header)]
    if watch_id:
        parts.append(_WATCH_ID_TAG + _varint(watch_id))
    parts.extend([_event_field(ev) for ev in events])
    return b"".join(parts)


_watch_id_fields: dict[int, bytes] = {0: b""}  # watch_id -> its field (none for 0)
_WATCH_ID_CACHE_ENTRIES_MAX = 4096


def watch_id_fields(watch_ids: Sequence[int]) -> list[bytes]:
    """The encoded ``watch_id`` field of each of ``watch_ids`` (empty for 0, as protobuf)."""
    fields = _watch_id_fields
    out: list[bytes] = []
    for wid in watch_ids:
        fld = fields.get(wid)
        if fld is None:
            fld = _WATCH_ID_TAG + _varint(wid)
            if len(fields) >= _WATCH_ID_CACHE_ENTRIES_MAX:
                fields.clear()
                fields[0] = b""
            fields[wid] = fld
        out.append(fld)
    return out


# The events tuple of the last fan-out and its encoded fields: the store hands every stream of
# one write the same tuple (held here, so its identity stays unique).
_fanout_events: tuple[Event, ...] | None = None
_fanout_body = b""


def watch_fanout_bytes(
    header: ResponseHeader,
    watch_ids: Sequence[int],
    events: tuple[Event, ...],
    id_fields: Sequence[bytes] | None = None,
) -> list[bytes]:
    """``watch_events_bytes(header, w, events)`` for each ``w`` of ``watch_ids``, in order: the
    header and events fields encoded once for all of them. ``id_fields``, if given, is
    ``watch_id_fields(watch_ids)`` (a caller that fans out to the same watchers again and
    again keeps it)."""
    global _fanout_events, _fanout_body
    hdr = _header_field(header)
    if events is _fanout_events:  # the same write, fanned out to another stream
        body = _fanout_body
    else:
        body = b"".join([_event_field(ev) for ev in events])
        _fanout_events, _fanout_body = events, body
    if id_fields is None:
        id_fields = watch_id_fields(watch_ids)
    return [hdr + fld + body for fld in id_fields]


_WATCH_FRAGMENT_FIELD = b"\x38\x01"  # WatchResponse.fragment = true, field 7, varint


def watch_fragments_bytes(
    header: ResponseHeader, watch_id: int, events: tuple[Event, ...], bytes_max: int
) -> list[bytes]:
    """``watch_events_bytes``, split as etcd 3.5 splits a watcher's response (``fragment``).

    A response of at least ``bytes_max`` bytes with two or more events becomes several, each
    with the same header and watch_id and with as many events as fit under ``bytes_max``
    (always at least one); every one but the last has ``fragment`` set. Anything smaller is
    the one unsplit response.
    """
    prefix = _header_field(header)
    if watch_id:
        prefix += _WATCH_ID_TAG + _varint(watch_id)
    fields = [_event_field(ev) for ev in events]
    if len(fields) < 2 or len(prefix) + sum(map(len, fields)) < bytes_max:
        return [b"".join([prefix, *fields])]
    chunks: list[list[bytes]] = [[]]
    base = len(prefix) + len(_WATCH_FRAGMENT_FIELD)
    size = base
    for fld in fields:
        if chunks[-1] and size + len(fld) >= bytes_max:
            chunks.append([])
            size = base
        chunks[-1].append(fld)
        size += len(fld)
    last = len(chunks) - 1
    return [
        b"".join([prefix, b"" if i == last else _WATCH_FRAGMENT_FIELD, *chunk])
        for i, chunk in enumerate(chunks)
    ]
