"""Persistence of leases: the ``LeaseStore`` seam, a bucket adapter and an in-memory store.

Theory of operation
-------------------
The lessor persists one ``LeaseRecord`` per lease (id, TTL, remaining TTL) and nothing else:
attached keys live in mvcc (each ``KeyValue`` names its lease) and are re-attached by the
server from mvcc at start, and expiries are volatile leader state.

The lessor talks to its storage through ``LeaseStore``, a three-method ``Protocol``. The
lessor's writes happen while a raft entry is applied, so the server must hand it a store whose
writes land in the same backend transaction as the entry's mvcc writes and the consistent
index: a revoke that deletes keys but not the lease (or the reverse) after a crash would break
replay.

``BucketLeaseStore`` adapts any byte-level bucket (``LeaseBucket``: put / delete / items, which
an LMDB sub-database named ``lease`` satisfies with a thin wrapper) and fixes the on-disk
encoding, the same as etcd's:

    key   = the lease id as 8 bytes, big-endian two's complement   (etcd's int64ToBytes)
    value = protobuf leasepb.Lease { int64 ID = 1; int64 TTL = 2; int64 RemainingTTL = 3; }

    e.g. id 0x10, ttl 60, remaining 0:
    key   00 00 00 00 00 00 00 10
    value 08 10 10 3c             (fields with value 0 are omitted, as proto3 does)

``NamedBucket(backend, "lease")`` turns a backend with named buckets (``put(bucket, key,
value)``, ``delete(bucket, key)``, ``iterate(bucket)``: ``petcd.backend.Backend``) into a
``LeaseBucket``, so the server's whole adapter is
``BucketLeaseStore(NamedBucket(backend, petcd.backend.LEASE))``.

``MemoryLeaseStore`` keeps records in a dict, for tests and for tools that need no disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from petcd.lease.errors import LeaseDecodeError
from petcd.lease.types import LeaseId, LeaseRecord

_INT64_MASK = (1 << 64) - 1


class LeaseStore(Protocol):
    """Where the lessor keeps its records; every call is made at apply time."""

    def put_lease(self, record: LeaseRecord) -> None:
        """Create or replace the record of ``record.id``."""
        ...

    def delete_lease(self, lease_id: LeaseId) -> None:
        """Remove the record of ``lease_id``; no error if there is none."""
        ...

    def iter_leases(self) -> Iterable[LeaseRecord]:
        """Every record, in any order (read once, when the lessor is built)."""
        ...


class LeaseBucket(Protocol):
    """A byte-level key/value bucket (the backend's ``lease`` sub-database)."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...


def encode_lease_key(lease_id: LeaseId) -> bytes:
    return (lease_id & _INT64_MASK).to_bytes(8, "big")


def decode_lease_key(key: bytes) -> LeaseId:
    if len(key) != 8:
        raise LeaseDecodeError(f"lease key must be 8 bytes, got {len(key)}")
    return LeaseId(int.from_bytes(key, "big", signed=True))


def _put_varint(out: bytearray, value: int) -> None:
    value &= _INT64_MASK
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_lease_record(record: LeaseRecord) -> bytes:
    """``record`` as protobuf ``leasepb.Lease`` bytes (proto3: zero fields omitted)."""
    out = bytearray()
    for field_number, value in (
        (1, record.id),
        (2, record.ttl_seconds),
        (3, record.remaining_ttl_seconds),
    ):
        if value != 0:
            out.append(field_number << 3)  # wire type 0: varint
            _put_varint(out, value)
    return bytes(out)


def decode_lease_record(data: bytes) -> LeaseRecord:
    """The inverse of ``encode_lease_record``; unknown varint fields are skipped."""
    fields = {1: 0, 2: 0, 3: 0}
    pos = 0
    while pos < len(data):
        tag, pos = _get_varint(data, pos)
        if tag & 7 != 0:
            raise LeaseDecodeError(f"unexpected wire type {tag & 7} at offset {pos}")
        value, pos = _get_varint(data, pos)
        if value >= 1 << 63:
            value -= 1 << 64
        fields[tag >> 3] = value
    return LeaseRecord(LeaseId(fields[1]), fields[2], fields[3])


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise LeaseDecodeError("truncated varint in lease record")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _INT64_MASK, pos
    raise LeaseDecodeError("varint longer than 10 bytes in lease record")


class BucketedBackend(Protocol):
    """A store of named byte buckets (what ``petcd.backend.Backend`` offers)."""

    def put(self, bucket: str, key: bytes, value: bytes) -> None: ...

    def delete(self, bucket: str, key: bytes) -> None: ...

    def iterate(self, bucket: str) -> Iterable[tuple[bytes, bytes]]: ...


class NamedBucket:
    """One bucket of a ``BucketedBackend``, as a ``LeaseBucket``."""

    __slots__ = ("_backend", "_name")

    def __init__(self, backend: BucketedBackend, name: str) -> None:
        self._backend = backend
        self._name = name

    def put(self, key: bytes, value: bytes) -> None:
        self._backend.put(self._name, key, value)

    def delete(self, key: bytes) -> None:
        self._backend.delete(self._name, key)

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return self._backend.iterate(self._name)


class BucketLeaseStore:
    """A ``LeaseStore`` over a byte-level ``LeaseBucket``, with etcd's encoding."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: LeaseBucket) -> None:
        self._bucket = bucket

    def put_lease(self, record: LeaseRecord) -> None:
        self._bucket.put(encode_lease_key(record.id), encode_lease_record(record))

    def delete_lease(self, lease_id: LeaseId) -> None:
        self._bucket.delete(encode_lease_key(lease_id))

    def iter_leases(self) -> Iterator[LeaseRecord]:
        for key, value in self._bucket.items():
            record = decode_lease_record(value)
            if record.id != decode_lease_key(key):
                raise LeaseDecodeError(f"lease key {key.hex()} holds lease {record.id:x}")
            yield record


class MemoryLeaseStore:
    """A ``LeaseStore`` in a dict; ``records`` is public so tests can inspect it."""

    __slots__ = ("records",)

    def __init__(self, records: Iterable[LeaseRecord] = ()) -> None:
        self.records: dict[LeaseId, LeaseRecord] = {r.id: r for r in records}

    def put_lease(self, record: LeaseRecord) -> None:
        self.records[record.id] = record

    def delete_lease(self, lease_id: LeaseId) -> None:
        self.records.pop(lease_id, None)

    def iter_leases(self) -> Iterator[LeaseRecord]:
        return iter(list(self.records.values()))
