"""petcd.server.entry: the on-disk encoding of requests in raft entries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.auth import AuthOp, AuthRequest
from petcd.mvcc.requests import (
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from petcd.server.entry import (
    FORMAT_VERSION,
    AlarmChange,
    EntryFormatError,
    Guarded,
    Kind,
    LeaseCheckpoints,
    LeaseGrant,
    LeaseRevoke,
    MemberAttributes,
    _put,
    _Reader,
    _txn,
    _uvarint,
    decode,
    encode,
    request_id,
)

i64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
keys = st.binary(max_size=20)

puts = st.builds(PutRequest, keys, keys, i64, st.booleans(), st.booleans(), st.booleans())
deletes = st.builds(DeleteRangeRequest, keys, keys, st.booleans())
ranges = st.builds(
    RangeRequest,
    keys,
    keys,
    i64,
    i64,
    st.integers(0, 2),
    st.integers(0, 4),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    i64,
    i64,
    i64,
    i64,
)


@st.composite
def compares(draw: st.DrawFn) -> Compare:
    target = draw(st.sampled_from(list(CompareTarget)))
    result = draw(st.sampled_from(list(CompareResult)))
    key, end = draw(keys), draw(keys)
    if target is CompareTarget.VALUE:
        return Compare(result, target, key, end, value=draw(keys))
    n = draw(i64)
    if target is CompareTarget.VERSION:
        return Compare(result, target, key, end, version=n)
    if target is CompareTarget.CREATE:
        return Compare(result, target, key, end, create_revision=n)
    if target is CompareTarget.MOD:
        return Compare(result, target, key, end, mod_revision=n)
    return Compare(result, target, key, end, lease=n)


def ops(txns: st.SearchStrategy[TxnRequest]) -> st.SearchStrategy[RequestOp]:
    return st.one_of(
        ranges.map(lambda r: RequestOp(request_range=r)),
        puts.map(lambda r: RequestOp(request_put=r)),
        deletes.map(lambda r: RequestOp(request_delete_range=r)),
        txns.map(lambda r: RequestOp(request_txn=r)),
    )


txns = st.recursive(
    st.just(TxnRequest()),
    lambda inner: st.builds(
        TxnRequest,
        st.lists(compares(), max_size=3).map(tuple),
        st.lists(ops(inner), max_size=3).map(tuple),
        st.lists(ops(inner), max_size=3).map(tuple),
    ),
    max_leaves=8,
)
compactions = st.builds(CompactionRequest, i64, st.booleans())
attributes = st.builds(
    MemberAttributes,
    st.integers(0, (1 << 64) - 1),
    st.text(max_size=10),
    st.lists(st.text(max_size=20), max_size=3).map(tuple),
)
leases = st.one_of(
    st.builds(LeaseGrant, i64, i64),
    st.builds(LeaseRevoke, i64),
    st.builds(LeaseCheckpoints, st.lists(st.tuples(i64, i64), max_size=4).map(tuple)),
    st.builds(AlarmChange, st.integers(1, 2), st.integers(0, (1 << 64) - 1), st.integers(0, 2)),
)
auths = st.builds(
    AuthRequest,
    st.sampled_from(list(AuthOp)),
    st.text(max_size=8),
    st.text(max_size=8),
    keys,
    st.booleans(),
    st.integers(0, 2),
    keys,
    keys,
    st.text(max_size=20),
)
plain = st.one_of(puts, deletes, txns, compactions, attributes, leases, auths)
guarded = st.builds(Guarded, st.integers(0, (1 << 64) - 1), plain)
requests = st.one_of(plain, guarded)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, (1 << 64) - 1), requests)
def test_roundtrip(request_id: int, request: object) -> None:
    data = encode(request_id, request)  # type: ignore[arg-type]
    decoded = decode(data)
    assert decoded.request_id == request_id
    assert decoded.request == request


def test_sort_options_out_of_the_enum_stay_out_of_it() -> None:
    # protobuf reads open int32 enums, so a txn's range may carry a negative sort order, which
    # etcd answers (it sorts nothing): the entry keeps it out of the enum.
    for order, target in ((-1, 0), (-(1 << 31), -1), (5, 9)):
        request = TxnRequest(
            (),
            (RequestOp(request_range=RangeRequest(b"a", sort_order=order, sort_target=target)),),
            (),  # type: ignore[arg-type]
        )
        decoded = decode(encode(1, request)).request
        assert isinstance(decoded, TxnRequest)
        got = decoded.success[0].request_range
        assert got is not None
        assert (got.sort_order, got.sort_target) == (order & 0xFFFFFFFF, target & 0xFFFFFFFF)
        assert got.sort_order not in (0, 1, 2)


def test_compare_enums_out_of_the_enum_are_written_and_read() -> None:
    # A compare's target and result are open int32 enums: etcd compares nothing for an
    # unknown target and takes an unknown result as true. The encoder stopped the member on a
    # negative one, and the decoder refused a positive unknown target it had written.
    for result, target in ((0, 7), (0, -1), (-2, 0), (9, 3), (-(1 << 31), (1 << 31) - 1)):
        request = TxnRequest((Compare(result, target, b"k", value=b"v"),), (), ())
        decoded = decode(encode(1, request)).request
        assert isinstance(decoded, TxnRequest)
        got = decoded.compare[0]
        assert (got.result, got.target) == (result & 0xFFFFFFFF, target & 0xFFFFFFFF)


def test_known_bytes_are_stable() -> None:
    # The format is on disk: these bytes must decode the same forever.
    data = encode(300, PutRequest(b"foo", b"bar", lease=-1, prev_kv=True))
    assert data.hex() == "0101ac020103666f6f036261720" + "1"
    assert encode(0, CompactionRequest(5, physical=True)).hex() == "0104000" + "10a"
    # GUARDED (10): request id, auth revision 7, then a PUT's kind and body.
    assert encode(300, Guarded(7, PutRequest(b"k", b"v"))).hex() == "010aac02070100016b017600"
    # AUTH (11): op 10 (grant permission), role "r", READWRITE on ["a", "b").
    grant = AuthRequest(AuthOp.ROLE_GRANT_PERMISSION, "r", perm_type=2, key=b"a", range_end=b"b")
    assert encode(300, grant).hex() == "010bac020a0172000000020161016200"


def test_guarded_requests_do_not_nest() -> None:
    with pytest.raises(ValueError, match="guarded again"):
        encode(1, Guarded(1, Guarded(2, PutRequest(b"k"))))  # type: ignore[arg-type]
    data = bytearray(encode(1, Guarded(1, PutRequest(b"k"))))
    data[4] = Kind.GUARDED
    with pytest.raises(EntryFormatError, match="guarded again"):
        decode(bytes(data))
    bad_op = encode(1, AuthRequest(AuthOp.ENABLE))
    with pytest.raises(EntryFormatError, match="auth operation"):
        decode(bad_op[:3] + b"\x63" + bad_op[4:])


@settings(max_examples=60, deadline=None)
@given(requests)
def test_every_truncation_is_rejected(request: object) -> None:
    data = encode(7, request)  # type: ignore[arg-type]
    for n in range(len(data)):
        with pytest.raises(EntryFormatError):
            decode(data[:n])


def test_rejects_unknown_version_kind_and_trailing_bytes() -> None:
    data = encode(1, PutRequest(b"k"))
    with pytest.raises(EntryFormatError, match="version"):
        decode(b"\x02" + data[1:])
    with pytest.raises(EntryFormatError, match="kind"):
        decode(data[:1] + b"\x63" + data[2:])
    with pytest.raises(EntryFormatError, match="trailing"):
        decode(data + b"\x00")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, (1 << 64) - 1), puts)
def test_put_fast_path_writes_the_generic_bytes(rid: int, request: PutRequest) -> None:
    # encode() builds a PutRequest's entry in one join; it must equal the field-by-field
    # encoding that txn ops use (the format's definition), byte for byte.
    generic = bytearray((FORMAT_VERSION, Kind.PUT))
    _uvarint(generic, rid)
    _put(generic, request)
    assert encode(rid, request) == bytes(generic)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, (1 << 64) - 1), requests)
def test_request_id_reads_what_decode_reads(rid: int, request: object) -> None:
    data = encode(rid, request)  # type: ignore[arg-type]
    assert request_id(data) == decode(data).request_id == rid
    # Every prefix: the same id or the same error as the general varint reader.
    for n in range(len(data)):
        try:
            want: int | str = _Reader(data[:n], 2).uvarint() if n >= 2 else "truncated"
        except EntryFormatError as e:
            want = str(e)
        try:
            got: int | str = request_id(data[:n])
        except EntryFormatError as e:
            got = str(e)
        assert got == want or (n < 2 and "truncated" in str(got))


def test_request_id_rejects_an_overlong_varint_and_unknown_version() -> None:
    with pytest.raises(EntryFormatError, match="varint too long"):
        request_id(bytes((FORMAT_VERSION, Kind.PUT)) + b"\xff" * 10 + b"\x01")
    with pytest.raises(EntryFormatError, match="truncated"):
        request_id(bytes((FORMAT_VERSION, Kind.PUT)) + b"\xff" * 9)
    with pytest.raises(EntryFormatError, match="version"):
        request_id(b"\x02\x01\x01")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 64) - 1), txns)
def test_txn_fast_path_writes_the_generic_bytes(rid: int, request: TxnRequest) -> None:
    # encode() builds a TxnRequest's entry from bytes pieces in one join; it must equal the
    # field-by-field encoding (the format's definition), byte for byte.
    generic = bytearray((FORMAT_VERSION, Kind.TXN))
    _uvarint(generic, rid)
    _txn(generic, request)
    assert encode(rid, request) == bytes(generic)


def test_known_txn_bytes_are_stable() -> None:
    # Kubernetes' update: if mod_revision(k) == 5 then put k=v with lease 7 else get k.
    t = TxnRequest(
        compare=(Compare(CompareResult.EQUAL, CompareTarget.MOD, b"k", mod_revision=5),),
        success=(RequestOp(request_put=PutRequest(b"k", b"v", lease=7)),),
        failure=(RequestOp(request_range=RangeRequest(b"k", limit=2)),),
    )
    expected = (
        "0103 01"  # version, kind TXN, request id 1
        " 01 00 02 016b 00 0a"  # one compare: EQUAL, MOD, key k, no range end, 5
        " 01 02 00 016b 0176 0e"  # one success op: put, no flags, k, v, lease 7
        " 01 01 00 016b 00 04 00000000000000"  # one failure op: range k, limit 2, zeros
    )
    assert encode(1, t).hex() == expected.replace(" ", "")
    assert decode(encode(1, t)).request == t
