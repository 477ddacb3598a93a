"""The KV service's encoded Put and Txn answers (``KVService._put_bytes``, ``_txn_bytes``)
against protobuf's: byte for byte the same for every response, whichever way it is built.

Theory of operation
-------------------
A Put answer without a prev_kv, and a Txn answer made only of such Put answers, are built
from the native RangeResponse encoder's header bytes; every other answer goes through
protobuf. Hypothesis draws responses of every shape (extreme header values, prev_kvs,
nested ranges, deletes and txns, succeeded or not) and compares the bytes with
``convert.*_response_pb(...).SerializeToString()``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from petcd.grpc import convert
from petcd.grpc.services import KVService, _field, _native_range_encoder
from petcd.mvcc.requests import (
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    ResponseOp,
    TxnResponse,
)

pytest.importorskip("petcd._frontend")

U64 = st.one_of(st.sampled_from([0, 1, 127, 128, 2**63 - 1, 2**64 - 1]), st.integers(0, 2**64 - 1))
I64 = st.integers(0, 2**63 - 1)
headers = st.builds(ResponseHeader, U64, U64, I64, U64)
nested_headers = st.builds(lambda r: ResponseHeader(revision=r), I64)
kvs = st.builds(
    KeyValue,
    st.binary(max_size=20),
    I64,
    I64,
    I64,
    st.binary(max_size=200),
    st.integers(-(2**63), 2**63 - 1),
)
puts = st.builds(PutResponse, st.one_of(headers, nested_headers), st.one_of(st.none(), kvs))
plain_puts = st.builds(PutResponse, st.one_of(headers, nested_headers))


def ops(depth: int) -> st.SearchStrategy[ResponseOp]:
    options = [
        plain_puts.map(lambda p: ResponseOp(None, p)),
        puts.map(lambda p: ResponseOp(None, p)),
        st.builds(RangeResponse, nested_headers, st.lists(kvs, max_size=2).map(tuple)).map(
            lambda r: ResponseOp(r)
        ),
        st.builds(DeleteRangeResponse, nested_headers, I64).map(
            lambda d: ResponseOp(None, None, d)
        ),
    ]
    if depth:
        options.append(
            txns(depth - 1, nested_headers).map(lambda t: ResponseOp(None, None, None, t))
        )
    return st.one_of(*options)


def txns(depth: int, header: st.SearchStrategy[ResponseHeader] = headers) -> st.SearchStrategy[Any]:
    return st.builds(
        TxnResponse,
        header,
        st.booleans(),
        st.one_of(
            st.lists(plain_puts.map(lambda p: ResponseOp(None, p)), max_size=4),
            st.lists(ops(depth), max_size=3),
        ).map(tuple),
    )


def service() -> KVService:
    kv = KVService.__new__(KVService)
    kv._encode_range = _native_range_encoder()
    assert kv._encode_range is not None
    return kv


@given(puts)
def test_put_answers_are_protobuf_s_bytes(resp: PutResponse) -> None:
    assert service()._put_bytes(resp) == convert.put_response_pb(resp).SerializeToString()


@given(txns(1))
def test_txn_answers_are_protobuf_s_bytes(resp: TxnResponse) -> None:
    assert service()._txn_bytes(resp) == convert.txn_response_pb(resp).SerializeToString()


def test_a_txn_of_many_puts_with_the_largest_headers() -> None:
    big = ResponseHeader(2**64 - 1, 2**64 - 1, 2**63 - 1, 2**64 - 1)
    resp = TxnResponse(big, True, tuple(ResponseOp(None, PutResponse(big)) for _ in range(200)))
    assert service()._txn_bytes(resp) == convert.txn_response_pb(resp).SerializeToString()


def test_field_lengths_of_two_bytes_and_more() -> None:
    assert _field(b"\x12", b"x" * 127) == b"\x12\x7f" + b"x" * 127
    assert _field(b"\x12", b"x" * 300) == b"\x12\xac\x02" + b"x" * 300
    assert _field(b"\x1a", b"y" * 20000) == b"\x1a\xa0\x9c\x01" + b"y" * 20000
