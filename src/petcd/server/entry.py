"""The binary encoding of client requests in raft entries (an on-disk format).

Theory of operation
-------------------
Every write a client asks for travels through raft as the ``data`` of one normal entry, is
written to the WAL and replayed after a restart, possibly by a newer petcd. So this encoding
is a file format: it is specified in ``docs/enhancements/0003-entry-format.md`` and never
changes incompatibly; a new request kind gets a new kind number.

An entry's data::

    +---------+------+------------------+------------------------+
    | version | kind | request id       | body (by kind)          |
    | 1 byte  | 1 B  | uvarint          |                        |
    +---------+------+------------------+------------------------+

``version`` is ``FORMAT_VERSION`` (1). ``request id`` ties the committed entry back to the
waiting client on the member that proposed it (0: nobody waits). Integers are LEB128 varints:
``uvarint`` for values that are never negative, zig-zag ``svarint`` for int64 fields (lease,
revisions, limits). ``bytes`` is a uvarint length then the raw bytes. Booleans of one message
share one ``flags`` byte (bit 0 = the first boolean field in etcd's field order). Bodies:

- PUT (1): flags(prev_kv, ignore_value, ignore_lease), key, value, svarint lease.
- DELETE_RANGE (2): flags(prev_kv), key, range_end.
- TXN (3): uvarint n, n compares; uvarint n, n success ops; uvarint n, n failure ops.
  A compare: uvarint result, uvarint target, key, range_end, then the target's value:
  svarint for VERSION/CREATE/MOD/LEASE, bytes for VALUE and for a target out of the enum.
  An op: a tag byte (1 range, 2 put, 3 delete-range, 4 txn) then that request's body.
  A range body: flags(serializable, keys_only, count_only), key, range_end, svarint limit,
  svarint revision, uvarint sort_order, uvarint sort_target, svarint min_mod_revision,
  svarint max_mod_revision, svarint min_create_revision, svarint max_create_revision.
  Enums (a compare's result and target, a range's sort order and target) are protobuf's
  open int32 enums: written as their uint32 bits, so that a negative one (out of the enum,
  which etcd answers) stays out of it.
- COMPACTION (4): flags(physical), svarint revision.
- MEMBER_ATTRIBUTES (5): uvarint member id, bytes name, uvarint n, n client URLs as bytes
  (etcd's ClusterMemberAttrSetRequest: what a member publishes about itself at start).
- LEASE_GRANT (6): svarint id, svarint ttl (seconds). LEASE_REVOKE (7): svarint id.
  LEASE_CHECKPOINT (8): uvarint n, n x (svarint id, svarint remaining ttl).
- ALARM (9): uvarint action (1 activate, 2 deactivate), uvarint member id, uvarint alarm type
  (etcd's AlarmType: 1 NOSPACE, 2 CORRUPT).
- GUARDED (10): uvarint auth revision, then another kind byte and that kind's body (never
  GUARDED again): a request whose permissions the proposing member checked with auth on, at
  that auth revision (``docs/enhancements/0010-auth.md``).
- AUTH (11): uvarint op (``petcd.auth.AuthOp``), bytes name, bytes role, bytes password hash,
  flags(no_password), uvarint permission type, bytes key, bytes range_end, bytes token.
- V2 (12): a v2 API request, ``petcd.v2store.V2Request``'s own encoding to the end of the data
  (``docs/enhancements/0014-v2-api.md``).

Decoding rejects anything malformed with ``EntryFormatError``: a member that cannot read its
own log must stop, not guess. Nothing here performs I/O.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from petcd.auth.store import AuthOp, AuthRequest
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
from petcd.server.errors import ServerError
from petcd.v2store.request import V2FormatError, V2Request

FORMAT_VERSION = 1


class EntryFormatError(ServerError):
    """An entry's data does not follow the format: the log is corrupt or from the future."""


class Kind(enum.IntEnum):
    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACTION = 4
    MEMBER_ATTRIBUTES = 5
    LEASE_GRANT = 6
    LEASE_REVOKE = 7
    LEASE_CHECKPOINT = 8
    ALARM = 9
    GUARDED = 10
    AUTH = 11
    V2 = 12


@dataclass(frozen=True, slots=True)
class MemberAttributes:
    """A member's name and client URLs, published through raft when it starts."""

    member_id: int
    name: str
    client_urls: tuple[str, ...] = ()


_OP_RANGE, _OP_PUT, _OP_DELETE, _OP_TXN = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    id: int
    ttl_seconds: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseCheckpoints:
    checkpoints: tuple[tuple[int, int], ...]  # (lease id, remaining ttl seconds)


@dataclass(frozen=True, slots=True)
class AlarmChange:
    action: int  # 1 activate, 2 deactivate (etcd's AlarmRequest.AlarmAction)
    member_id: int
    alarm: int  # etcd's AlarmType


@dataclass(frozen=True, slots=True)
class Guarded:
    """``request``, checked by its proposer with auth on at ``auth_revision``: applied only
    if the auth store is still at that revision (or auth is off by then)."""

    auth_revision: int
    request: EntryRequest


EntryRequest = (
    Guarded
    | AuthRequest
    | PutRequest
    | DeleteRangeRequest
    | TxnRequest
    | CompactionRequest
    | MemberAttributes
    | LeaseGrant
    | LeaseRevoke
    | LeaseCheckpoints
    | AlarmChange
    | V2Request
)


@dataclass(frozen=True, slots=True)
class DecodedEntry:
    request_id: int
    request: EntryRequest


# --- encoding --------------------------------------------------------------------------------


def _uvarint(out: bytearray, n: int) -> None:
    assert n >= 0, n
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _svarint(out: bytearray, n: int) -> None:
    assert -(1 << 63) <= n < (1 << 63), n
    _uvarint(out, (n << 1) ^ (n >> 63) if n < 0 else n << 1)


def _bytes(out: bytearray, b: bytes) -> None:
    _uvarint(out, len(b))
    out += b


# uvarints below 0x80 are one byte: the usual flags, lengths of short keys and small leases.
_UV1 = tuple(bytes((i,)) for i in range(0x80))
# The first byte of a longer uvarint: its low 7 bits with the continuation bit.
_UV_FIRST = tuple(bytes((i | 0x80,)) for i in range(0x80))


@functools.lru_cache(maxsize=64)
def _uv_cached(n: int) -> bytes:
    out = bytearray()
    _uvarint(out, n)
    return bytes(out)


def _uv(n: int) -> bytes:
    """``_uvarint`` as a value, for building an entry with one ``join``.

    Above 0x7f: the first byte, then the uvarint of ``n >> 7`` from a small cache. A member's
    request ids are consecutive 64-bit numbers, so ``n >> 7`` repeats for 128 ids in a row
    (the 9-byte loop was a tenth of the cost of proposing a put); value lengths repeat too.
    """
    if 0 <= n < 0x80:
        return _UV1[n]
    assert n > 0, n
    return _UV_FIRST[n & 0x7F] + _uv_cached(n >> 7)


def _zigzag(n: int) -> int:
    assert -(1 << 63) <= n < (1 << 63), n
    return (n << 1) ^ (n >> 63) if n < 0 else n << 1


_PUT_PREFIX = bytes((FORMAT_VERSION, Kind.PUT))


def _encode_put(request_id: int, r: PutRequest) -> bytes:
    """``encode`` of a PutRequest, the most common entry, in one join (same bytes as
    ``_put``)."""
    parts = [_PUT_PREFIX, _uv(request_id)]
    _put_parts(parts, r)
    return b"".join(parts)


def _flags(out: bytearray, *bits: bool) -> None:
    out.append(sum(1 << i for i, bit in enumerate(bits) if bit))


def _put(out: bytearray, r: PutRequest) -> None:
    _flags(out, r.prev_kv, r.ignore_value, r.ignore_lease)
    _bytes(out, r.key)
    _bytes(out, r.value)
    _svarint(out, r.lease)


def _delete(out: bytearray, r: DeleteRangeRequest) -> None:
    _flags(out, r.prev_kv)
    _bytes(out, r.key)
    _bytes(out, r.range_end)


def _range(out: bytearray, r: RangeRequest) -> None:
    _flags(out, r.serializable, r.keys_only, r.count_only)
    _bytes(out, r.key)
    _bytes(out, r.range_end)
    _svarint(out, r.limit)
    _svarint(out, r.revision)
    _uvarint(out, int(r.sort_order) & 0xFFFFFFFF)
    _uvarint(out, int(r.sort_target) & 0xFFFFFFFF)
    _svarint(out, r.min_mod_revision)
    _svarint(out, r.max_mod_revision)
    _svarint(out, r.min_create_revision)
    _svarint(out, r.max_create_revision)


def _compare(out: bytearray, c: Compare) -> None:
    _uvarint(out, int(c.result) & 0xFFFFFFFF)
    _uvarint(out, int(c.target) & 0xFFFFFFFF)
    _bytes(out, c.key)
    _bytes(out, c.range_end)
    target = c.target
    if target == CompareTarget.VERSION:
        _svarint(out, c.version)
    elif target == CompareTarget.CREATE:
        _svarint(out, c.create_revision)
    elif target == CompareTarget.MOD:
        _svarint(out, c.mod_revision)
    elif target == CompareTarget.LEASE:
        _svarint(out, c.lease)
    else:
        _bytes(out, c.value)


def _op(out: bytearray, op: RequestOp) -> None:
    if op.request_range is not None:
        out.append(_OP_RANGE)
        _range(out, op.request_range)
    elif op.request_put is not None:
        out.append(_OP_PUT)
        _put(out, op.request_put)
    elif op.request_delete_range is not None:
        out.append(_OP_DELETE)
        _delete(out, op.request_delete_range)
    else:
        assert op.request_txn is not None, "a RequestOp with no request"
        out.append(_OP_TXN)
        _txn(out, op.request_txn)


def _txn(out: bytearray, r: TxnRequest) -> None:
    _uvarint(out, len(r.compare))
    for c in r.compare:
        _compare(out, c)
    for ops in (r.success, r.failure):
        _uvarint(out, len(ops))
        for op in ops:
            _op(out, op)


# The same fields as bytes pieces for one ``join`` (``_encode_txn``): a txn is every
# Kubernetes write, and appending to a bytearray byte by byte costs twice as much.
_ZERO = _UV1[0]
_RANGE_DEFAULT_TAIL = bytes(8)  # limit .. max_create_revision all zero
_TXN_PREFIX = bytes((FORMAT_VERSION, Kind.TXN))


def _sv(n: int) -> bytes:
    return _ZERO if n == 0 else _uv(_zigzag(n))


def _put_parts(parts: list[bytes], r: PutRequest) -> None:
    key, value = r.key, r.value
    parts += (
        _UV1[(1 if r.prev_kv else 0) | (2 if r.ignore_value else 0) | (4 if r.ignore_lease else 0)],
        _uv(len(key)),
        key,
        _uv(len(value)),
        value,
        _sv(r.lease),
    )


def _range_parts(parts: list[bytes], r: RangeRequest) -> None:
    key, end = r.key, r.range_end
    parts += (
        _UV1[(1 if r.serializable else 0) | (2 if r.keys_only else 0) | (4 if r.count_only else 0)],
        _uv(len(key)),
        key,
        _uv(len(end)),
        end,
    )
    if (
        r.limit
        or r.revision
        or r.sort_order
        or r.sort_target
        or r.min_mod_revision
        or r.max_mod_revision
        or r.min_create_revision
        or r.max_create_revision
    ):
        parts += (
            _sv(r.limit),
            _sv(r.revision),
            _uv(int(r.sort_order) & 0xFFFFFFFF),
            _uv(int(r.sort_target) & 0xFFFFFFFF),
            _sv(r.min_mod_revision),
            _sv(r.max_mod_revision),
            _sv(r.min_create_revision),
            _sv(r.max_create_revision),
        )
    else:
        parts.append(_RANGE_DEFAULT_TAIL)


def _compare_parts(parts: list[bytes], c: Compare) -> None:
    key, end, target = c.key, c.range_end, c.target
    parts += (
        _uv(int(c.result) & 0xFFFFFFFF),
        _uv(int(target) & 0xFFFFFFFF),
        _uv(len(key)),
        key,
        _uv(len(end)),
        end,
    )
    if target == CompareTarget.MOD:  # Kubernetes' compare
        parts.append(_sv(c.mod_revision))
    elif target == CompareTarget.VERSION:
        parts.append(_sv(c.version))
    elif target == CompareTarget.CREATE:
        parts.append(_sv(c.create_revision))
    elif target == CompareTarget.LEASE:
        parts.append(_sv(c.lease))
    else:
        value = c.value
        parts += (_uv(len(value)), value)


def _txn_parts(parts: list[bytes], r: TxnRequest) -> None:
    parts.append(_uv(len(r.compare)))
    for c in r.compare:
        _compare_parts(parts, c)
    for ops in (r.success, r.failure):
        parts.append(_uv(len(ops)))
        for op in ops:
            if op.request_put is not None:
                parts.append(_OP_PUT_TAG)
                _put_parts(parts, op.request_put)
            elif op.request_range is not None:
                parts.append(_OP_RANGE_TAG)
                _range_parts(parts, op.request_range)
            elif op.request_delete_range is not None:
                d = op.request_delete_range
                key, end = d.key, d.range_end
                parts += (
                    _OP_DELETE_TAG,
                    _UV1[1 if d.prev_kv else 0],
                    _uv(len(key)),
                    key,
                    _uv(len(end)),
                    end,
                )
            else:
                assert op.request_txn is not None, "a RequestOp with no request"
                parts.append(_OP_TXN_TAG)
                _txn_parts(parts, op.request_txn)


_OP_RANGE_TAG, _OP_PUT_TAG, _OP_DELETE_TAG, _OP_TXN_TAG = (
    _UV1[_OP_RANGE],
    _UV1[_OP_PUT],
    _UV1[_OP_DELETE],
    _UV1[_OP_TXN],
)


def _encode_txn(request_id: int, r: TxnRequest) -> bytes:
    """``encode`` of a TxnRequest in one join (same bytes as ``_txn``)."""
    parts = [_TXN_PREFIX, _uv(request_id)]
    _txn_parts(parts, r)
    return b"".join(parts)


def encode(request_id: int, request: EntryRequest) -> bytes:
    """The entry data for ``request``, proposed by a client waiting under ``request_id``."""
    if type(request) is PutRequest:
        return _encode_put(request_id, request)
    if type(request) is TxnRequest:
        return _encode_txn(request_id, request)
    out = bytearray((FORMAT_VERSION,))
    if isinstance(request, Guarded):
        if isinstance(request.request, Guarded):
            raise ValueError("a guarded request cannot be guarded again")
        inner = encode(request_id, request.request)
        out.append(Kind.GUARDED)
        _uvarint(out, request_id)
        _uvarint(out, request.auth_revision)
        # the inner request's kind and body, without its version and request id
        skip = 2 + len(_uv(request_id))
        out.append(inner[1])
        out += inner[skip:]
        return bytes(out)
    if isinstance(request, AuthRequest):
        out.append(Kind.AUTH)
        _uvarint(out, request_id)
        _uvarint(out, request.op)
        _bytes(out, request.name.encode())
        _bytes(out, request.role.encode())
        _bytes(out, request.password_hash)
        _flags(out, request.no_password)
        _uvarint(out, request.perm_type)
        _bytes(out, request.key)
        _bytes(out, request.range_end)
        _bytes(out, request.token.encode())
        return bytes(out)
    if isinstance(request, PutRequest):
        out.append(Kind.PUT)
        _uvarint(out, request_id)
        _put(out, request)
    elif isinstance(request, DeleteRangeRequest):
        out.append(Kind.DELETE_RANGE)
        _uvarint(out, request_id)
        _delete(out, request)
    elif isinstance(request, TxnRequest):
        out.append(Kind.TXN)
        _uvarint(out, request_id)
        _txn(out, request)
    elif isinstance(request, CompactionRequest):
        out.append(Kind.COMPACTION)
        _uvarint(out, request_id)
        _flags(out, request.physical)
        _svarint(out, request.revision)
    elif isinstance(request, LeaseGrant):
        out.append(Kind.LEASE_GRANT)
        _uvarint(out, request_id)
        _svarint(out, request.id)
        _svarint(out, request.ttl_seconds)
    elif isinstance(request, LeaseRevoke):
        out.append(Kind.LEASE_REVOKE)
        _uvarint(out, request_id)
        _svarint(out, request.id)
    elif isinstance(request, LeaseCheckpoints):
        out.append(Kind.LEASE_CHECKPOINT)
        _uvarint(out, request_id)
        _uvarint(out, len(request.checkpoints))
        for lease_id, remaining in request.checkpoints:
            _svarint(out, lease_id)
            _svarint(out, remaining)
    elif isinstance(request, AlarmChange):
        out.append(Kind.ALARM)
        _uvarint(out, request_id)
        _uvarint(out, request.action)
        _uvarint(out, request.member_id)
        _uvarint(out, request.alarm)
    elif isinstance(request, V2Request):
        out.append(Kind.V2)
        _uvarint(out, request_id)
        out += request.encode()
    else:
        out.append(Kind.MEMBER_ATTRIBUTES)
        _uvarint(out, request_id)
        _uvarint(out, request.member_id)
        _bytes(out, request.name.encode())
        _uvarint(out, len(request.client_urls))
        for url in request.client_urls:
            _bytes(out, url.encode())
    return bytes(out)


# --- decoding --------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise EntryFormatError("entry data is truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uvarint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7
            if shift > 63:
                raise EntryFormatError("varint too long")

    def svarint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)

    def bytes_(self) -> bytes:
        n = self.uvarint()
        end = self.pos + n
        if end > len(self.data):
            raise EntryFormatError("entry data is truncated")
        b = self.data[self.pos : end]
        self.pos = end
        return b

    def flags(self, count: int) -> tuple[bool, ...]:
        f = self.byte()
        if f >> count:
            raise EntryFormatError(f"unknown flag bits {f:#x}")
        return tuple(bool(f >> i & 1) for i in range(count))


def _read_put(r: _Reader) -> PutRequest:
    prev_kv, ignore_value, ignore_lease = r.flags(3)
    key = r.bytes_()
    value = r.bytes_()
    return PutRequest(key, value, r.svarint(), prev_kv, ignore_value, ignore_lease)


def _read_delete(r: _Reader) -> DeleteRangeRequest:
    (prev_kv,) = r.flags(1)
    key = r.bytes_()
    return DeleteRangeRequest(key, r.bytes_(), prev_kv)


def _read_range(r: _Reader) -> RangeRequest:
    serializable, keys_only, count_only = r.flags(3)
    key = r.bytes_()
    range_end = r.bytes_()
    limit = r.svarint()
    revision = r.svarint()
    sort_order = r.uvarint()
    sort_target = r.uvarint()
    return RangeRequest(
        key,
        range_end,
        limit,
        revision,
        sort_order,
        sort_target,
        serializable,
        keys_only,
        count_only,
        r.svarint(),
        r.svarint(),
        r.svarint(),
        r.svarint(),
    )


def _read_compare(r: _Reader) -> Compare:
    result = r.uvarint()
    target = r.uvarint()
    key = r.bytes_()
    range_end = r.bytes_()
    if target == CompareTarget.VERSION:
        return Compare(result, target, key, range_end, version=r.svarint())
    if target == CompareTarget.CREATE:
        return Compare(result, target, key, range_end, create_revision=r.svarint())
    if target == CompareTarget.MOD:
        return Compare(result, target, key, range_end, mod_revision=r.svarint())
    if target == CompareTarget.LEASE:
        return Compare(result, target, key, range_end, lease=r.svarint())
    # VALUE, or a target out of the enum (etcd compares nothing then): the value's bytes.
    return Compare(result, target, key, range_end, value=r.bytes_())


def _read_op(r: _Reader, depth: int) -> RequestOp:
    tag = r.byte()
    if tag == _OP_RANGE:
        return RequestOp(request_range=_read_range(r))
    if tag == _OP_PUT:
        return RequestOp(request_put=_read_put(r))
    if tag == _OP_DELETE:
        return RequestOp(request_delete_range=_read_delete(r))
    if tag == _OP_TXN:
        return RequestOp(request_txn=_read_txn(r, depth + 1))
    raise EntryFormatError(f"unknown txn op tag {tag}")


def _read_txn(r: _Reader, depth: int = 0) -> TxnRequest:
    if depth > 64:
        raise EntryFormatError("txn nested too deeply")
    compares = tuple(_read_compare(r) for _ in range(r.uvarint()))
    success = tuple(_read_op(r, depth) for _ in range(r.uvarint()))
    failure = tuple(_read_op(r, depth) for _ in range(r.uvarint()))
    return TxnRequest(compares, success, failure)


def request_id(data: bytes) -> int:
    """The request id of an entry's data, without decoding the request."""
    if len(data) < 2:
        raise EntryFormatError("entry data is truncated")
    if data[0] != FORMAT_VERSION:
        raise EntryFormatError(f"unknown entry format version {data[0]}")
    # _Reader.uvarint inlined: this runs for every applied entry.
    n = shift = 0
    for b in data[2:12]:
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n
        shift += 7
        if shift > 63:
            raise EntryFormatError("varint too long")
    raise EntryFormatError("entry data is truncated")


def decode(data: bytes) -> DecodedEntry:
    """The request in an entry's data; raises ``EntryFormatError`` if it is malformed."""
    if len(data) < 2:
        raise EntryFormatError("entry data is truncated")
    if data[0] != FORMAT_VERSION:
        raise EntryFormatError(f"unknown entry format version {data[0]}")
    kind = data[1]
    r = _Reader(data, 2)
    request_id = r.uvarint()
    request: EntryRequest
    if kind == Kind.GUARDED:
        auth_revision = r.uvarint()
        inner_kind = r.byte()
        if inner_kind == Kind.GUARDED:
            raise EntryFormatError("a guarded request is guarded again")
        request = Guarded(auth_revision, _read_body(inner_kind, r))
    else:
        request = _read_body(kind, r)
    if r.pos != len(data):
        raise EntryFormatError(f"{len(data) - r.pos} trailing bytes after the request")
    return DecodedEntry(request_id, request)


def _read_auth(r: _Reader) -> AuthRequest:
    try:
        op = AuthOp(r.uvarint())
    except ValueError:
        raise EntryFormatError("unknown auth operation") from None
    try:
        name = r.bytes_().decode()
        role = r.bytes_().decode()
        password_hash = r.bytes_()
        (no_password,) = r.flags(1)
        perm_type = r.uvarint()
        key = r.bytes_()
        range_end = r.bytes_()
        token = r.bytes_().decode()
    except UnicodeDecodeError:
        raise EntryFormatError("auth request names are not UTF-8") from None
    return AuthRequest(op, name, role, password_hash, no_password, perm_type, key, range_end, token)


def _read_body(kind: int, r: _Reader) -> EntryRequest:
    request: EntryRequest
    if kind == Kind.AUTH:
        request = _read_auth(r)
    elif kind == Kind.PUT:
        request = _read_put(r)
    elif kind == Kind.DELETE_RANGE:
        request = _read_delete(r)
    elif kind == Kind.TXN:
        request = _read_txn(r)
    elif kind == Kind.COMPACTION:
        (physical,) = r.flags(1)
        request = CompactionRequest(r.svarint(), physical)
    elif kind == Kind.MEMBER_ATTRIBUTES:
        mid = r.uvarint()
        try:
            name = r.bytes_().decode()
            urls = tuple(r.bytes_().decode() for _ in range(r.uvarint()))
        except UnicodeDecodeError:
            raise EntryFormatError("member attributes are not UTF-8") from None
        request = MemberAttributes(mid, name, urls)
    elif kind == Kind.LEASE_GRANT:
        lease_id = r.svarint()
        request = LeaseGrant(lease_id, r.svarint())
    elif kind == Kind.LEASE_REVOKE:
        request = LeaseRevoke(r.svarint())
    elif kind == Kind.LEASE_CHECKPOINT:
        cps = []
        for _ in range(r.uvarint()):
            lease_id = r.svarint()
            cps.append((lease_id, r.svarint()))
        request = LeaseCheckpoints(tuple(cps))
    elif kind == Kind.ALARM:
        action = r.uvarint()
        mid = r.uvarint()
        request = AlarmChange(action, mid, r.uvarint())
    elif kind == Kind.V2:  # the rest of the data (0014)
        try:
            request = V2Request.decode(r.data[r.pos :])
        except V2FormatError as e:
            raise EntryFormatError(str(e)) from None
        r.pos = len(r.data)
    else:
        raise EntryFormatError(f"unknown entry kind {kind}")
    return request
