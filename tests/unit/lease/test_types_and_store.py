"""Constants, configuration checks and the persisted encoding of lease records."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given
from hypothesis import strategies as st

from petcd.lease import (
    BucketLeaseStore,
    LeaseDecodeError,
    LeaseId,
    LeaseRecord,
    LessorConfig,
    LessorConfigError,
    MemoryLeaseStore,
    decode_lease_key,
    decode_lease_record,
    encode_lease_key,
    encode_lease_record,
    min_lease_ttl_seconds,
)

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


@pytest.mark.parametrize(
    ("election_ticks", "heartbeat_ms", "expected"),
    [
        (10, 100, 2),  # etcd's defaults: 15 ticks x 100 ms = 1.5 s, rounded up
        (5, 100, 1),  # (15 // 2) = 7 ticks x 100 ms = 0.7 s -> 1 s
        (10, 250, 4),  # 3.75 s -> 4 s
        (20, 100, 3),  # exactly 3 s stays 3 s
        (1, 1000, 1),  # (3 // 2) = 1 tick of 1 s
    ],
)
def test_min_lease_ttl_follows_etcds_formula(
    election_ticks: int, heartbeat_ms: int, expected: int
) -> None:
    assert min_lease_ttl_seconds(election_ticks, heartbeat_ms) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"min_ttl_seconds": 0},
        {"checkpoint_interval_seconds": 0.0},
        {"expired_retry_interval_seconds": -1.0},
        {"revoke_rate_per_second": 3},
    ],
)
def test_config_rejects_out_of_range_values(bad: dict[str, object]) -> None:
    with pytest.raises(LessorConfigError):
        LessorConfig(**bad)  # type: ignore[arg-type]


def _lease_pb_class() -> Any:
    """etcd's leasepb.Lease shape (int64 ID = 1, TTL = 2, RemainingTTL = 3), built at runtime."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="petcd_test_leasepb.proto", package="petcdtest", syntax="proto3"
    )
    msg = fdp.message_type.add(name="Lease")
    for number, name in ((1, "ID"), (2, "TTL"), (3, "RemainingTTL")):
        msg.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("petcdtest.Lease"))


LEASE_PB = _lease_pb_class()


def test_record_encoding_example_from_the_docstring() -> None:
    record = LeaseRecord(LeaseId(0x10), 60, 0)
    assert encode_lease_key(record.id) == bytes.fromhex("0000000000000010")
    assert encode_lease_record(record) == bytes.fromhex("0810103c")


@given(INT64, INT64, INT64)
def test_record_encoding_is_protobuf_leasepb(lease_id: int, ttl: int, remaining: int) -> None:
    record = LeaseRecord(LeaseId(lease_id), ttl, remaining)
    data = encode_lease_record(record)
    expected = LEASE_PB(ID=lease_id, TTL=ttl, RemainingTTL=remaining).SerializeToString()
    assert data == expected
    assert decode_lease_record(data) == record
    assert decode_lease_record(expected) == record


@given(INT64)
def test_key_encoding_is_big_endian_int64(lease_id: int) -> None:
    key = encode_lease_key(LeaseId(lease_id))
    assert key == lease_id.to_bytes(8, "big", signed=True)
    assert decode_lease_key(key) == lease_id


def test_positive_ids_sort_in_key_order() -> None:
    ids = [1, 2, 255, 256, 1 << 40, (1 << 63) - 1]
    assert sorted(encode_lease_key(LeaseId(i)) for i in ids) == [
        encode_lease_key(LeaseId(i)) for i in ids
    ]


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("08"),  # truncated varint
        bytes.fromhex("0a0100"),  # length-delimited field: not a lease record
        bytes.fromhex("08ffffffffffffffffffff01"),  # 11-byte varint
    ],
)
def test_corrupt_records_are_named_errors(data: bytes) -> None:
    with pytest.raises(LeaseDecodeError):
        decode_lease_record(data)


class DictBucket:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def items(self) -> list[tuple[bytes, bytes]]:
        return sorted(self.data.items())


def test_bucket_store_round_trips_records() -> None:
    bucket = DictBucket()
    store = BucketLeaseStore(bucket)
    store.put_lease(LeaseRecord(LeaseId(7), 60, 0))
    store.put_lease(LeaseRecord(LeaseId(9), 600, 120))
    store.put_lease(LeaseRecord(LeaseId(7), 60, 30))  # replaces
    store.delete_lease(LeaseId(9))
    store.delete_lease(LeaseId(12345))  # absent: no error
    assert list(store.iter_leases()) == [LeaseRecord(LeaseId(7), 60, 30)]
    assert bucket.data == {encode_lease_key(LeaseId(7)): bytes.fromhex("0807103c181e")}


def test_bucket_store_rejects_a_record_under_the_wrong_key() -> None:
    bucket = DictBucket()
    bucket.put(encode_lease_key(LeaseId(1)), encode_lease_record(LeaseRecord(LeaseId(2), 5)))
    with pytest.raises(LeaseDecodeError):
        list(BucketLeaseStore(bucket).iter_leases())


def test_memory_store_iterates_a_copy() -> None:
    store = MemoryLeaseStore([LeaseRecord(LeaseId(1), 5), LeaseRecord(LeaseId(2), 6)])
    for record in store.iter_leases():
        store.delete_lease(record.id)  # must not break the iteration
    assert store.records == {}
