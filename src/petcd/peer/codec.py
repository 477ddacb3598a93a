"""The binary encoding of Raft messages, frames and handshakes between petcd members.

Theory of operation
-------------------
This module owns petcd's peer wire format (docs/enhancements/0005-peer-transport.md is its
specification); it is pure: bytes in, values out, no I/O. It is on the replication hot path,
so encoding is one ``struct`` pass per message and entry into a list of parts joined once per
batch, and decoding walks one ``memoryview`` with ``unpack_from``.

A message body (little-endian)::

    header <BBQQQQQQQII: type, flags (bit 0 reject, bit 1 snapshot), to, from, term,
                         log_term, index, commit, reject_hint, entry_count, context_length
    context
    entry_count x (<QQBI: term, index, type, data_length ; data)
    [snapshot: <QQII index, term, voter_count, learner_count ; voters u64... ; learners u64...
               <I data_length ; data]

A frame is ``u32 body_length`` followed by the body. ``FrameDecoder`` turns a byte stream cut
at arbitrary points back into messages, keeping an incomplete tail for the next ``feed``.

Invariants
----------
- ``decode_message(encode_message(m)) == m`` for every valid ``Message`` (property-tested).
- Decoding never accepts trailing bytes, truncated bodies or unknown enum values: it raises
  ``CodecError`` and the transport drops the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

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

CODEC_VERSION = 1
FRAME_BYTES_MAX = 256 * 1024 * 1024

_HEADER = struct.Struct("<BBQQQQQQQII")
_ENTRY = struct.Struct("<QQBI")
_SNAP = struct.Struct("<QQII")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_FLAG_REJECT = 1
_FLAG_SNAPSHOT = 2

# Enum lookups by value: a dict lookup is much cheaper than ``MessageType(v)``.
_MESSAGE_TYPES: dict[int, MessageType] = {t.value: t for t in MessageType}
_ENTRY_TYPES: dict[int, EntryType] = {t.value: t for t in EntryType}


def _encode_into(m: Message, parts: list[bytes]) -> int:
    """Append the parts of ``m``'s body to ``parts``; return the body's length."""
    flags = _FLAG_REJECT if m.reject else 0
    snap = m.snapshot
    if snap is not None:
        flags |= _FLAG_SNAPSHOT
    entries = m.entries
    ctx = m.context
    try:
        parts.append(
            _HEADER.pack(
                m.type,
                flags,
                m.to,
                m.from_,
                m.term,
                m.log_term,
                m.index,
                m.commit,
                m.reject_hint,
                len(entries),
                len(ctx),
            )
        )
    except struct.error as err:
        raise CodecError(f"message field out of range: {err}") from None
    size = _HEADER.size + len(ctx)
    if ctx:
        parts.append(ctx)
    pack_entry = _ENTRY.pack
    for e in entries:
        data = e.data
        try:
            parts.append(pack_entry(e.term, e.index, e.type, len(data)))
        except struct.error as err:
            raise CodecError(f"entry field out of range: {err}") from None
        if data:
            parts.append(data)
        size += _ENTRY.size + len(data)
    if snap is not None:
        meta = snap.metadata
        voters = sorted(meta.conf_state.voters)
        learners = sorted(meta.conf_state.learners)
        ids = voters + learners
        try:
            parts.append(_SNAP.pack(meta.index, meta.term, len(voters), len(learners)))
            if ids:
                parts.append(struct.pack(f"<{len(ids)}Q", *ids))
        except struct.error as err:
            raise CodecError(f"snapshot field out of range: {err}") from None
        parts.append(_U32.pack(len(snap.data)))
        if snap.data:
            parts.append(snap.data)
        size += _SNAP.size + 8 * len(ids) + 4 + len(snap.data)
    return size


def encode_message(m: Message) -> bytes:
    """The body of one message (no frame length)."""
    parts: list[bytes] = []
    _encode_into(m, parts)
    return b"".join(parts)


def encode_frames(messages: Iterable[Message]) -> bytes:
    """Frames (``u32 length`` + body) for all ``messages``, as one buffer for one write."""
    parts: list[bytes] = []
    append = parts.append
    pack_len = _U32.pack
    for m in messages:
        slot = len(parts)
        append(b"")
        size = _encode_into(m, parts)
        if size > FRAME_BYTES_MAX:
            raise CodecError(f"message of {size} bytes exceeds the frame limit")
        parts[slot] = pack_len(size)
    return b"".join(parts)


def _decode_at(buf: memoryview, off: int, end: int) -> Message:
    """Decode the body ``buf[off:end]``; it must be consumed exactly."""
    if end - off < _HEADER.size:
        raise CodecError("truncated message header")
    (
        mtype,
        flags,
        to,
        from_,
        term,
        log_term,
        index,
        commit,
        reject_hint,
        n_entries,
        ctx_len,
    ) = _HEADER.unpack_from(buf, off)
    off += _HEADER.size
    mt = _MESSAGE_TYPES.get(mtype)
    if mt is None:
        raise CodecError(f"unknown message type {mtype}")
    if flags & ~(_FLAG_REJECT | _FLAG_SNAPSHOT):
        raise CodecError(f"unknown message flags {flags:#x}")
    if off + ctx_len > end:
        raise CodecError("truncated message context")
    ctx = bytes(buf[off : off + ctx_len])
    off += ctx_len
    entries: list[Entry] = []
    if n_entries:
        unpack_entry = _ENTRY.unpack_from
        entry_size = _ENTRY.size
        entry_types = _ENTRY_TYPES
        for _ in range(n_entries):
            if off + entry_size > end:
                raise CodecError("truncated entry header")
            e_term, e_index, e_type, d_len = unpack_entry(buf, off)
            off += entry_size
            et = entry_types.get(e_type)
            if et is None:
                raise CodecError(f"unknown entry type {e_type}")
            if off + d_len > end:
                raise CodecError("truncated entry data")
            # unpack_from's values are untyped ints: the NewType wrappers are identities, and
            # skipping their calls saves a measurable share of decoding on this hot loop.
            entries.append(Entry(e_term, e_index, et, bytes(buf[off : off + d_len])))
            off += d_len
    snapshot: Snapshot | None = None
    if flags & _FLAG_SNAPSHOT:
        if off + _SNAP.size > end:
            raise CodecError("truncated snapshot metadata")
        s_index, s_term, n_voters, n_learners = _SNAP.unpack_from(buf, off)
        off += _SNAP.size
        n_ids = n_voters + n_learners
        if off + 8 * n_ids + 4 > end:
            raise CodecError("truncated snapshot configuration")
        ids = struct.unpack_from(f"<{n_ids}Q", buf, off)
        off += 8 * n_ids
        voters = frozenset(MemberId(i) for i in ids[:n_voters])
        learners = frozenset(MemberId(i) for i in ids[n_voters:])
        if len(voters) != n_voters or len(learners) != n_learners or voters & learners:
            raise CodecError("snapshot configuration has duplicate member ids")
        (d_len,) = _U32.unpack_from(buf, off)
        off += 4
        if off + d_len > end:
            raise CodecError("truncated snapshot data")
        snapshot = Snapshot(
            SnapshotMetadata(Index(s_index), Term(s_term), ConfState(voters, learners)),
            bytes(buf[off : off + d_len]),
        )
        off += d_len
    if off != end:
        raise CodecError(f"{end - off} trailing bytes after message")
    return Message(
        mt,
        to,
        from_,
        term,
        log_term,
        index,
        tuple(entries),
        commit,
        snapshot,
        bool(flags & _FLAG_REJECT),
        reject_hint,
        ctx,
    )


def decode_message(body: bytes | bytearray | memoryview) -> Message:
    """The message encoded in ``body`` (exactly one body, no frame length)."""
    buf = memoryview(body)
    return _decode_at(buf, 0, len(buf))


class FrameDecoder:
    """Reassembles frames from a byte stream cut anywhere; ``feed`` returns whole messages.

    Example: ``feed(b"\\x05\\x00")`` returns ``[]`` and keeps two bytes; the next ``feed``
    with the rest of the frame returns its message.

    A malformed frame does not lose the good frames before it: ``feed`` returns them and
    records the ``CodecError`` in ``error``; the stream is unusable from there on (every later
    ``feed`` raises it), so the caller delivers what it got, then drops the connection.
    """

    __slots__ = ("_buf", "error", "frame_bytes_max")

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buf = bytearray()
        self.frame_bytes_max = frame_bytes_max
        self.error: CodecError | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        if self.error is not None:
            raise self.error
        if self._buf:
            self._buf += data
            src: bytes | bytearray = self._buf
        else:
            src = data
        view = memoryview(src)
        total = len(view)
        off = 0
        out: list[Message] = []
        try:
            while total - off >= 4:
                (size,) = _U32.unpack_from(view, off)
                if size > self.frame_bytes_max:
                    raise CodecError(f"frame of {size} bytes exceeds the limit")
                end = off + 4 + size
                if end > total:
                    break
                out.append(_decode_at(view, off + 4, end))
                off = end
        except CodecError as e:
            self.error = e
            off = total
        finally:
            view.release()
        if src is self._buf:
            del self._buf[:off]
        else:
            self._buf = bytearray(data[off:]) if off < total else bytearray()
        return out


# -- handshake ------------------------------------------------------------------------------

HANDSHAKE_MAGIC = b"PETCDPR\x00"
PROTOCOL_VERSION = 1
_HELLO = struct.Struct("<8sHBBQQQ")
_REPLY = struct.Struct("<BH")
HELLO_BYTES = _HELLO.size
REPLY_HEADER_BYTES = _REPLY.size

KIND_STREAM = 1
KIND_SNAPSHOT = 2
KIND_MEMBERS = 3  # a joining member asks who is in the cluster (the reply's reason is JSON)
# The dialer refused the listener's certificate (--peer-cert-allowed-cn/-hostname) and closes:
# no reply, nothing follows; the listener logs it as etcd's does the TLS alert.
KIND_CERT_REFUSED = 4


class HandshakeStatus:
    """Status bytes of the listener's handshake reply (see the proposal's table)."""

    OK = 0
    BAD_PROTOCOL = 1
    CLUSTER_MISMATCH = 2
    REMOVED = 3
    UNKNOWN_SENDER = 4
    RECEIVER_MISMATCH = 5
    BAD_CERTIFICATE = 6


# The reason of a BAD_CERTIFICATE reply: the text a Go TLS client logs when etcd's listener
# refuses its certificate with an alert, so that the refused member's log says what etcd's does.
BAD_CERTIFICATE_REASON = "remote error: tls: bad certificate"


@dataclass(frozen=True, slots=True)
class Hello:
    """The dialer's handshake: who is calling whom, in which cluster, for what."""

    kind: int
    cluster_id: int
    from_: MemberId
    to: MemberId
    version: int = PROTOCOL_VERSION


def encode_hello(h: Hello) -> bytes:
    return _HELLO.pack(HANDSHAKE_MAGIC, h.version, h.kind, 0, h.cluster_id, h.from_, h.to)


def decode_hello(data: bytes) -> Hello:
    """Decode the 36 handshake bytes; a wrong magic raises ``CodecError``.

    The version and kind are returned as sent: the listener decides what it accepts.
    """
    if len(data) != _HELLO.size:
        raise CodecError(f"handshake of {len(data)} bytes, want {_HELLO.size}")
    magic, version, kind, _reserved, cluster, from_, to = _HELLO.unpack(data)
    if magic != HANDSHAKE_MAGIC:
        raise CodecError("bad handshake magic")
    return Hello(kind, cluster, MemberId(from_), MemberId(to), version)


def encode_reply(status: int, reason: str = "") -> bytes:
    raw = reason.encode()[:0xFFFF]
    return _REPLY.pack(status, len(raw)) + raw


def decode_reply_header(data: bytes) -> tuple[int, int]:
    """``(status, reason_length)`` from the reply's first ``REPLY_HEADER_BYTES`` bytes."""
    status, n = _REPLY.unpack(data)
    return int(status), int(n)


U64 = _U64
U32 = _U32
