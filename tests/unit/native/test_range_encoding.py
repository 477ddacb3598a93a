"""``petcd._frontend.range_response``: etcd's RangeResponse bytes from stored KeyValue records,
byte for byte what protobuf writes for the same response."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd._frontend import range_response
from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc.convert import range_response_pb
from petcd.mvcc.kvstore import KeyValue, encode_kv
from petcd.mvcc.requests import RangeResponse, ResponseHeader

u64 = st.integers(0, (1 << 64) - 1)
i64 = st.integers(-(1 << 63), (1 << 63) - 1)
small = st.integers(-3, 300)
ints = st.one_of(small, i64)
key_values = st.builds(
    KeyValue,
    st.binary(max_size=40),
    ints,
    ints,
    ints,
    st.one_of(st.binary(max_size=40), st.binary(min_size=200, max_size=20_000)),
    ints,
)
headers = st.builds(ResponseHeader, u64, u64, st.one_of(small, i64), u64)


def _encode(h: ResponseHeader, records: list[bytes], more: bool, count: int) -> bytes:
    return range_response(h.cluster_id, h.member_id, h.revision, h.raft_term, records, more, count)


@settings(max_examples=300, deadline=None)
@given(headers, st.lists(key_values, max_size=12), st.booleans(), ints)
def test_bytes_equal_protobuf_s(
    h: ResponseHeader, kvs: list[KeyValue], more: bool, count: int
) -> None:
    records = [encode_kv(kv) for kv in kvs]
    expected = range_response_pb(RangeResponse(h, (), more, count), records).SerializeToString()
    got = _encode(h, records, more, count)
    assert got == expected
    parsed = rpc_pb2.RangeResponse.FromString(got)
    assert [m.key for m in parsed.kvs] == [kv.key for kv in kvs]
    assert [m.value for m in parsed.kvs] == [kv.value for kv in kvs]


def test_a_record_that_is_not_a_key_value_is_refused() -> None:
    h = ResponseHeader(1, 2, 3, 4)
    good = encode_kv(KeyValue(b"k", 2, 2, 1, b"v", 0))
    with pytest.raises(ValueError, match="too short"):
        _encode(h, [good, b"short"], False, 0)
    with pytest.raises(ValueError, match="key length"):
        _encode(h, [good[:40]], False, 0)  # the key cut off
    with pytest.raises(TypeError, match="bytes"):
        _encode(h, [bytearray(good)], False, 0)  # type: ignore[list-item]
