"""Request and response values of the KV API, named exactly as etcd's protobuf messages.

Theory of operation
-------------------
These mirror etcdserverpb (RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest, Compare,
RequestOp, ResponseOp, the responses, CompactionRequest) and mvccpb (KeyValue, Event) field by
field, with the same names and the same enum numbers, so that petcd.grpc converts between them
and the generated protobuf classes mechanically. Differences, all forced by Python:

- repeated fields are tuples; a message field that is unset is ``None``;
- a protobuf ``oneof`` becomes several optional fields of which exactly one is set
  (``RequestOp.request_*``, ``ResponseOp.response_*``); ``Compare``'s ``target_union``
  becomes the plain fields ``version``, ``create_revision``, ``mod_revision``, ``value``,
  ``lease``, of which ``target`` selects one;
- ``ResponseHeader`` is filled by mvcc with ``revision`` only, unless the server gave it
  its own header source (``KVStore.set_header_source``: cluster id, member id and raft term
  too).

All values are frozen, so a response can be shared between a waiting handler and watchers
(``petcd.fastinit`` only makes building them cheaper).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from petcd.fastinit import fast_init


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(enum.IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


class WatchFilterType(enum.IntEnum):
    """etcdserverpb.WatchCreateRequest.FilterType."""

    NOPUT = 0
    NODELETE = 1


@fast_init
@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class ResponseHeader:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: int = SortOrder.NONE
    sort_target: int = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class RangeResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class Compare:
    result: int
    target: int
    key: bytes
    range_end: bytes = b""
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    value: bytes = b""
    lease: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class RequestOp:
    request_range: RangeRequest | None = None
    request_put: PutRequest | None = None
    request_delete_range: DeleteRangeRequest | None = None
    request_txn: TxnRequest | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class ResponseOp:
    response_range: RangeResponse | None = None
    response_put: PutResponse | None = None
    response_delete_range: DeleteRangeResponse | None = None
    response_txn: TxnResponse | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class TxnResponse:
    header: ResponseHeader
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class CompactionRequest:
    revision: int
    physical: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class CompactionResponse:
    header: ResponseHeader


@fast_init
@dataclass(frozen=True, slots=True)
class HashKVResult:
    """What etcd's HashKVResponse carries besides the header."""

    hash: int
    compact_revision: int
    hash_revision: int


@fast_init
@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One delivery to a watcher (store level; the gRPC stream adds ids and the header).

    ``events`` of one write transaction are always delivered together, in one response.
    ``compact_revision != 0`` means the watcher was cancelled because its start revision was
    compacted.
    """

    watch_id: int
    events: tuple[Event, ...]
    revision: int
    compact_revision: int = 0


WriteRequest = PutRequest | DeleteRangeRequest | TxnRequest
WriteResponse = PutResponse | DeleteRangeResponse | TxnResponse
