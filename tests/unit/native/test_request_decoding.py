"""``petcd._frontend.RequestDecoder`` against protobuf followed by ``petcd.grpc.convert``.

Theory of operation
-------------------
The reference for what a request's bytes mean is protobuf's parser and ``convert``'s
mapping to the dataclasses. The native decoder takes only the encodings protobuf's own
serializers write and returns None for the rest. So:

- every message protobuf serializes (random fields, every field kind, extreme int64s,
  open-enum values, empty sub-messages) is decoded, to a result equal to the reference's,
  field by field with the same Python types (a ``bool`` where protobuf gives a bool, an
  ``int`` where it gives an int, never ``1`` for ``True``);
- a nested Txn, two members of a ``oneof``, a repeated singular field, an unknown field: None;
- any byte string (random mutations of real messages, random bytes) is either None or
  decodes exactly as the reference does, and never where protobuf refuses the bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.mvcc import requests as R

frontend = pytest.importorskip("petcd._frontend")

DECODER = frontend.RequestDecoder(
    R.RangeRequest, R.PutRequest, R.DeleteRangeRequest, R.Compare, R.RequestOp, R.TxnRequest
)
KINDS = {
    "put": (rpc_pb2.PutRequest, convert.put_request, DECODER.put),
    "delete_range": (
        rpc_pb2.DeleteRangeRequest,
        convert.delete_range_request,
        DECODER.delete_range,
    ),
    "txn": (rpc_pb2.TxnRequest, convert.txn_request, DECODER.txn),
}

I64 = st.one_of(
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 127, 128, 2**31, -(2**31)]),
    st.integers(-(2**63), 2**63 - 1),
)
KEYS = st.binary(max_size=40)
FLAG = st.booleans()
ENUM = st.one_of(st.integers(0, 5), st.integers(0, 2**31 - 1), st.integers(-(2**31), -1))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (``True`` is not ``1`` here)."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@st.composite
def put_pb(draw: st.DrawFn) -> Any:
    m = rpc_pb2.PutRequest()
    if draw(FLAG):
        m.key = draw(KEYS)
    if draw(FLAG):
        m.value = draw(st.binary(max_size=300))
    if draw(FLAG):
        m.lease = draw(I64)
    m.prev_kv, m.ignore_value, m.ignore_lease = draw(FLAG), draw(FLAG), draw(FLAG)
    return m


@st.composite
def delete_pb(draw: st.DrawFn) -> Any:
    return rpc_pb2.DeleteRangeRequest(key=draw(KEYS), range_end=draw(KEYS), prev_kv=draw(FLAG))


@st.composite
def range_pb(draw: st.DrawFn) -> Any:
    return rpc_pb2.RangeRequest(
        key=draw(KEYS),
        range_end=draw(KEYS),
        limit=draw(I64),
        revision=draw(I64),
        sort_order=draw(ENUM),
        sort_target=draw(ENUM),
        serializable=draw(FLAG),
        keys_only=draw(FLAG),
        count_only=draw(FLAG),
        min_mod_revision=draw(I64),
        max_mod_revision=draw(I64),
        min_create_revision=draw(I64),
        max_create_revision=draw(I64),
    )


@st.composite
def compare_pb(draw: st.DrawFn) -> Any:
    m = rpc_pb2.Compare(result=draw(ENUM), target=draw(ENUM), key=draw(KEYS))
    if draw(FLAG):
        m.range_end = draw(KEYS)
    which = draw(
        st.sampled_from(["", "version", "create_revision", "mod_revision", "value", "lease"])
    )
    if which == "value":
        m.value = draw(KEYS)
    elif which:
        setattr(m, which, draw(I64))
    return m


def op_pb(depth: int) -> st.SearchStrategy[Any]:
    ops = [
        range_pb().map(lambda r: rpc_pb2.RequestOp(request_range=r)),
        put_pb().map(lambda p: rpc_pb2.RequestOp(request_put=p)),
        delete_pb().map(lambda d: rpc_pb2.RequestOp(request_delete_range=d)),
    ]
    if depth > 0:
        ops.append(txn_pb(depth - 1).map(lambda t: rpc_pb2.RequestOp(request_txn=t)))
    return st.one_of(*ops)


def txn_pb(depth: int = 1) -> st.SearchStrategy[Any]:
    return st.builds(
        lambda c, s, f: rpc_pb2.TxnRequest(compare=c, success=s, failure=f),
        st.lists(compare_pb(), max_size=3),
        st.lists(op_pb(depth), max_size=3),
        st.lists(op_pb(depth), max_size=3),
    )


def has_nested_txn(m: Any) -> bool:
    return any(op.WhichOneof("request") == "request_txn" for op in [*m.success, *m.failure])


def reference(kind: str, data: bytes) -> Any:
    """protobuf + convert: the request, or the exception protobuf raises."""
    message, conv, _ = KINDS[kind]
    try:
        return conv(message.FromString(data))
    except Exception as e:
        return e


@given(put_pb())
def test_every_serialized_put_is_decoded_as_protobuf_reads_it(m: Any) -> None:
    data = m.SerializeToString()
    got = DECODER.put(data)
    assert got is not None and same(got, reference("put", data))


@given(delete_pb())
def test_every_serialized_delete_range_is_decoded_as_protobuf_reads_it(m: Any) -> None:
    data = m.SerializeToString()
    got = DECODER.delete_range(data)
    assert got is not None and same(got, reference("delete_range", data))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(txn_pb())
def test_every_serialized_flat_txn_is_decoded_as_protobuf_reads_it(m: Any) -> None:
    data = m.SerializeToString()
    got = DECODER.txn(data)
    if has_nested_txn(m):
        assert got is None
    else:
        assert got is not None and same(got, reference("txn", data))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    st.sampled_from(sorted(KINDS)),
    st.data(),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "cut", "insert", "delete"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_bytes_decode_as_protobuf_reads_them_or_not_at_all(
    kind: str, data: st.DataObject, edits: list[tuple[str, int, int]]
) -> None:
    strategy = {"put": put_pb(), "delete_range": delete_pb(), "txn": txn_pb(0)}[kind]
    raw = bytearray(data.draw(strategy).SerializeToString())
    for what, where, byte in edits:
        i = where % (len(raw) + 1)
        if what == "flip" and i < len(raw):
            raw[i] ^= byte or 1
        elif what == "cut":
            del raw[i:]
        elif what == "insert":
            raw.insert(i, byte)
        elif what == "delete" and i < len(raw):
            del raw[i]
    got = KINDS[kind][2](bytes(raw))
    if got is not None:
        expected = reference(kind, bytes(raw))
        assert not isinstance(expected, Exception), f"protobuf refuses: {expected!r}"
        assert same(got, expected)


@given(st.sampled_from(sorted(KINDS)), st.binary(max_size=64))
def test_random_bytes_decode_as_protobuf_reads_them_or_not_at_all(kind: str, raw: bytes) -> None:
    got = KINDS[kind][2](raw)
    if got is not None:
        expected = reference(kind, raw)
        assert not isinstance(expected, Exception), f"protobuf refuses: {expected!r}"
        assert same(got, expected)


def field(number: int, value: bytes | int) -> bytes:
    def varint(v: int) -> bytes:
        out = bytearray()
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
        return bytes(out)

    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


@pytest.mark.parametrize(
    ("kind", "data", "why"),
    [
        ("put", field(1, b"a") + field(1, b"b"), "a singular field twice: protobuf's last wins"),
        ("put", field(1, b"a") + field(99, 1), "an unknown field: protobuf keeps it"),
        ("put", field(3, b"\x01"), "a varint field sent length-delimited"),
        (
            "txn",
            field(2, field(2, field(1, b"a")) + field(3, field(1, b"b"))),
            "two members of RequestOp's oneof: protobuf's last wins",
        ),
        (
            "txn",
            field(2, field(2, field(1, b"a")) + field(2, field(2, b"v"))),
            "a RequestOp's put twice: protobuf merges them",
        ),
        ("txn", field(1, field(4, 1) + field(6, 2)), "two members of Compare's target_union"),
        ("txn", field(2, field(4, b"")), "a nested txn"),
        ("txn", field(2, b""), "a RequestOp with nothing in it"),
    ],
)
def test_encodings_protobuf_never_writes_are_left_to_protobuf(
    kind: str, data: bytes, why: str
) -> None:
    assert KINDS[kind][2](data) is None, why
    assert not isinstance(reference(kind, data), Exception), "the reference reads it"


def test_the_decoded_request_is_a_normal_frozen_dataclass() -> None:
    t = DECODER.txn(
        rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=b"k", target=rpc_pb2.Compare.MOD, mod_revision=5)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b"v"))],
        ).SerializeToString()
    )
    assert t == R.TxnRequest(
        (R.Compare(0, 2, b"k", mod_revision=5),),
        (R.RequestOp(None, R.PutRequest(b"k", b"v")),),
        (),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.compare = ()  # type: ignore[misc]
    assert repr(t).startswith("TxnRequest(compare=(Compare(result=0, target=2, key=b'k'")


def test_classes_that_do_not_fit_are_refused() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Other:
        key: bytes

    with pytest.raises(TypeError, match="frozen, slotted dataclass"):
        frontend.RequestDecoder(
            R.RangeRequest, Other, R.DeleteRangeRequest, R.Compare, R.RequestOp, R.TxnRequest
        )

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        key: bytes
        value: bytes = b""
        lease: int = 0
        prev_kv: bool = False
        ignore_value: bool = False
        ignore_lease: bool = False

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="no __post_init__"):
        frontend.RequestDecoder(
            R.RangeRequest, Checked, R.DeleteRangeRequest, R.Compare, R.RequestOp, R.TxnRequest
        )
