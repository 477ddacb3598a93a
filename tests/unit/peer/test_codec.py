"""petcd.peer.codec: messages round-trip exactly; frames survive any cut; bad bytes are refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.peer import codec
from petcd.peer.errors import CodecError
from petcd.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Index,
    MemberId,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    Term,
)

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
ids = st.builds(MemberId, u64)
small_bytes = st.binary(max_size=64)

entries = st.builds(
    Entry,
    term=st.builds(Term, u64),
    index=st.builds(Index, u64),
    type=st.sampled_from(EntryType),
    data=small_bytes,
)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    voters = draw(st.frozensets(ids, max_size=5))
    learners = draw(st.frozensets(ids, max_size=3)) - voters
    return ConfState(voters, learners)


snapshots = st.builds(
    Snapshot,
    metadata=st.builds(
        SnapshotMetadata,
        index=st.builds(Index, u64),
        term=st.builds(Term, u64),
        conf_state=conf_states(),
    ),
    data=small_bytes,
)

messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=ids,
    from_=ids,
    term=st.builds(Term, u64),
    log_term=st.builds(Term, u64),
    index=st.builds(Index, u64),
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=st.builds(Index, u64),
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=st.builds(Index, u64),
    context=small_bytes,
)


@given(messages)
@settings(max_examples=120, deadline=None)
def test_message_round_trip(m: Message) -> None:
    assert codec.decode_message(codec.encode_message(m)) == m


@given(st.lists(messages, max_size=6), st.data())
@settings(max_examples=60, deadline=None)
def test_frames_survive_any_cuts(ms: list[Message], data: st.DataObject) -> None:
    stream = codec.encode_frames(ms)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=8)))
    dec = codec.FrameDecoder()
    out: list[Message] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        out.extend(dec.feed(stream[prev:c]))
        prev = c
    assert out == ms
    assert dec.pending_bytes == 0


def test_every_single_byte_split_of_two_frames() -> None:
    a = Message(
        MessageType.APP,
        MemberId(2),
        MemberId(1),
        Term(3),
        entries=(Entry(Term(3), Index(7), data=b"x" * 10),),
    )
    b = Message(MessageType.HEARTBEAT, MemberId(2), MemberId(1), Term(3), commit=Index(7))
    stream = codec.encode_frames([a, b])
    for i in range(len(stream) + 1):
        dec = codec.FrameDecoder()
        assert dec.feed(stream[:i]) + dec.feed(stream[i:]) == [a, b]


def test_known_encoding_is_stable() -> None:
    # The wire format is a contract between members of different builds: pin one encoding.
    m = Message(
        MessageType.APP_RESP,
        to=MemberId(1),
        from_=MemberId(2),
        term=Term(5),
        index=Index(9),
        reject=True,
        reject_hint=Index(4),
        context=b"c",
        entries=(Entry(Term(5), Index(9), EntryType.CONF_CHANGE, b"d"),),
    )
    want = (
        struct.pack("<BBQQQQQQQII", 4, 1, 1, 2, 5, 0, 9, 0, 4, 1, 1)
        + b"c"
        + struct.pack("<QQBI", 5, 9, 1, 1)
        + b"d"
    )
    assert codec.encode_message(m) == want
    assert codec.encode_frames([m]) == struct.pack("<I", len(want)) + want


def test_snapshot_ids_are_encoded_sorted_voters_then_learners() -> None:
    snap = Snapshot(
        SnapshotMetadata(
            Index(10),
            Term(2),
            ConfState(frozenset({MemberId(3), MemberId(1)}), frozenset({MemberId(2)})),
        ),
        b"",
    )
    body = codec.encode_message(Message(MessageType.SNAP, snapshot=snap))
    tail = body[66:]
    assert tail == struct.pack("<QQII", 10, 2, 2, 1) + struct.pack("<3Q", 1, 3, 2) + struct.pack(
        "<I", 0
    )


@given(messages, st.data())
@settings(max_examples=50, deadline=None)
def test_truncated_bodies_are_refused(m: Message, data: st.DataObject) -> None:
    body = codec.encode_message(m)
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    with pytest.raises(CodecError):
        codec.decode_message(body[:cut])


def test_trailing_bytes_are_refused() -> None:
    body = codec.encode_message(Message(MessageType.HEARTBEAT))
    with pytest.raises(CodecError, match="trailing"):
        codec.decode_message(body + b"\x00")


def test_unknown_types_are_refused() -> None:
    body = bytearray(codec.encode_message(Message(MessageType.HEARTBEAT)))
    body[0] = 99
    with pytest.raises(CodecError, match="unknown message type"):
        codec.decode_message(bytes(body))
    body = bytearray(
        codec.encode_message(Message(MessageType.APP, entries=(Entry(Term(1), Index(1)),)))
    )
    body[66 + 16] = 7
    with pytest.raises(CodecError, match="unknown entry type"):
        codec.decode_message(bytes(body))
    body = bytearray(codec.encode_message(Message(MessageType.HEARTBEAT)))
    body[1] = 0x80
    with pytest.raises(CodecError, match="flags"):
        codec.decode_message(bytes(body))


def test_oversized_frame_is_refused_before_buffering_it() -> None:
    dec = codec.FrameDecoder(frame_bytes_max=100)
    assert dec.feed(struct.pack("<I", 101)) == []
    assert dec.error is not None and "exceeds" in str(dec.error)
    assert dec.pending_bytes == 0
    with pytest.raises(CodecError, match="exceeds"):
        dec.feed(b"more")


def test_good_frames_before_a_bad_one_are_returned() -> None:
    good = [Message(MessageType.HEARTBEAT, commit=Index(i)) for i in range(3)]
    bad = struct.pack("<I", 5) + b"\xff" * 5
    dec = codec.FrameDecoder()
    assert dec.feed(codec.encode_frames(good) + bad + codec.encode_frames(good)) == good
    assert isinstance(dec.error, CodecError)
    with pytest.raises(CodecError):
        dec.feed(codec.encode_frames(good))


def test_out_of_range_field_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        codec.encode_message(Message(MessageType.APP, term=Term(1 << 64)))


def test_handshake_round_trip_and_bad_magic() -> None:
    h = codec.Hello(codec.KIND_SNAPSHOT, 0xDEADBEEF, MemberId(7), MemberId(9))
    raw = codec.encode_hello(h)
    assert len(raw) == codec.HELLO_BYTES == 36
    assert codec.decode_hello(raw) == h
    with pytest.raises(CodecError, match="magic"):
        codec.decode_hello(b"X" + raw[1:])
    with pytest.raises(CodecError):
        codec.decode_hello(raw[:-1])
    reply = codec.encode_reply(codec.HandshakeStatus.REMOVED, "gone")
    status, n = codec.decode_reply_header(reply[: codec.REPLY_HEADER_BYTES])
    assert (status, reply[codec.REPLY_HEADER_BYTES :][:n]) == (3, b"gone")
