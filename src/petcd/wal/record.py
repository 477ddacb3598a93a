"""Encoding and decoding of WAL records (the format of docs/enhancements/0001-wal-format.md).

Theory of operation
-------------------
A record is a 12-byte frame header, a body and zero padding up to a multiple of 8 bytes::

    +--------+--------+------+-----+----------+---------------+-------+
    | crc u32| len u32| type | pad | flags    | body (len)    | zeros |
    +--------+--------+------+-----+----------+---------------+-------+
    0        4        8      9     10         12              12+len  (multiple of 8)

``flags`` bit 0 marks the first record of a write (set by ``seal``): the reader uses it to tell
a torn last write from damage followed by a later write.

``crc`` is ``zlib.crc32`` of bytes ``[4, 12 + len)``, started from the record's offset in its
segment file (mod 2**32) instead of 0: a record is valid only where it was written, so bytes
that look like a record anywhere else (a WAL file stored as a value, stale data) never are.
Type 0 never occurs, so zeroed (preallocated) space is never mistaken for a record.

The encoders append to a ``RecordBuffer`` (one per batch, written with one ``os.pwrite``),
which computes the CRCs in ``seal`` once the batch's file offset is known; the decoder walks a
whole segment held in memory (offsets in ``data`` are file offsets) and stops at the first offset
where no valid record starts, leaving the decision "torn tail or corruption" to the caller
(``petcd.wal.wal``), which knows whether the segment is the last one. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from petcd.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    MemberId,
    SnapshotMetadata,
    Term,
)

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"PWAL"
HEADER_SIZE = 12
ALIGN = 8


class RecordType(enum.IntEnum):
    SEGMENT = 1
    ENTRY = 2
    HARD_STATE = 3
    SNAPSHOT = 4


_MAX_TYPE = max(RecordType)

_FRAME = struct.Struct("<IIBBH")  # crc, len, type, pad, flags
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
# The fixed part of an entry record: crc, len, type, pad, flags, term, index, entry type.
_ENTRY_RECORD = struct.Struct("<IIBBHQQB")
_ENTRY_FIXED = _ENTRY_RECORD.size - 12  # 17: term, index, entry type
_HARD_STATE = struct.Struct("<QQQ")
_SNAP_FIXED = struct.Struct("<QQII")
_SEGMENT_FIXED = struct.Struct("<4sIQQ")
_PADS = tuple(bytes(n) for n in range(ALIGN))
_MASK32 = 0xFFFFFFFF
FLAG_BATCH_START = 1
"""Set on the first record of every write (one ``sync`` batch, or a segment's opening records)."""
_KNOWN_FLAGS = FLAG_BATCH_START
_ENTRY_TYPES = {int(t): t for t in EntryType}


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The body of the ``SEGMENT`` record that opens every segment file."""

    seq: int
    first_index: Index
    metadata: bytes
    version: int = FORMAT_VERSION


def _pad_for(body_len: int) -> int:
    return -(HEADER_SIZE + body_len) % ALIGN


class RecordBuffer:
    """Records laid out in memory, CRCs filled in by ``seal`` once the file offset is known.

    The CRC of a record starts from its offset in the segment file (see the format), and the
    offset of a batch is only known when ``sync`` writes it (a cut may move it to a new file),
    so the encoders write a zero CRC and remember where each record starts; ``seal`` computes
    them all. This also keeps the CRC work off the thread that calls ``save``.
    """

    __slots__ = ("buf", "starts")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.starts: list[int] = []

    def __len__(self) -> int:
        return len(self.buf)

    def mark(self) -> tuple[int, int]:
        """A point to ``rollback`` to."""
        return len(self.buf), len(self.starts)

    def rollback(self, mark: tuple[int, int]) -> None:
        """Drop everything added since ``mark``."""
        del self.buf[mark[0] :]
        del self.starts[mark[1] :]

    def _add(self, rtype: RecordType, body: bytes) -> None:
        buf = self.buf
        n = len(body)
        pad = _pad_for(n)
        self.starts.append(len(buf))
        buf += _FRAME.pack(0, n, rtype, pad, 0)
        buf += body
        if pad:
            buf += _PADS[pad]

    def add_entries(self, entries: Iterable[Entry]) -> None:
        """One ``ENTRY`` record per entry (the hot path: one pack per entry)."""
        buf = self.buf
        starts = self.starts
        pack_head = _ENTRY_RECORD.pack
        pads = _PADS
        entry_type = RecordType.ENTRY
        for e in entries:
            data = e.data
            n = _ENTRY_FIXED + len(data)
            pad = -(HEADER_SIZE + n) % ALIGN
            starts.append(len(buf))
            buf += pack_head(0, n, entry_type, pad, 0, e.term, e.index, e.type)
            buf += data
            if pad:
                buf += pads[pad]

    def add_hard_state(self, hs: HardState) -> None:
        self._add(RecordType.HARD_STATE, _HARD_STATE.pack(hs.term, hs.vote, hs.commit))

    def add_snapshot(self, meta: SnapshotMetadata) -> None:
        self._add(RecordType.SNAPSHOT, encode_snapshot_metadata(meta))

    def add_segment_header(self, header: SegmentHeader) -> None:
        body = (
            _SEGMENT_FIXED.pack(SEGMENT_MAGIC, header.version, header.seq, header.first_index)
            + header.metadata
        )
        self._add(RecordType.SEGMENT, body)

    def seal(self, file_offset: int) -> bytearray:
        """Mark the first record as a batch start and fill in every CRC for the buffer being
        written at ``file_offset``; returns the bytes."""
        buf = self.buf
        crc32 = zlib.crc32
        unpack_len = _U32.unpack_from
        pack_crc = _U32.pack_into
        if self.starts:
            _U16.pack_into(buf, self.starts[0] + 10, FLAG_BATCH_START)
        with memoryview(buf) as mv:
            for start in self.starts:
                (n,) = unpack_len(buf, start + 4)
                at = file_offset + start
                pack_crc(buf, start, crc32(mv[start + 4 : start + HEADER_SIZE + n], at & _MASK32))
        return buf


def encode_snapshot_metadata(meta: SnapshotMetadata) -> bytes:
    """The body of a ``SNAPSHOT`` record (also the metadata block of a snapshot file)."""
    voters = sorted(meta.conf_state.voters)
    learners = sorted(meta.conf_state.learners)
    ids = voters + learners
    return _SNAP_FIXED.pack(meta.index, meta.term, len(voters), len(learners)) + struct.pack(
        f"<{len(ids)}Q", *ids
    )


def decode_snapshot_metadata(body: bytes | memoryview) -> SnapshotMetadata:
    """Inverse of ``encode_snapshot_metadata``; raises ``ValueError`` on a malformed body."""
    if len(body) < _SNAP_FIXED.size:
        raise ValueError("snapshot metadata too short")
    index, term, n_voters, n_learners = _SNAP_FIXED.unpack_from(body, 0)
    if len(body) != _SNAP_FIXED.size + 8 * (n_voters + n_learners):
        raise ValueError("snapshot metadata length does not match its member counts")
    ids = struct.unpack_from(f"<{n_voters + n_learners}Q", body, _SNAP_FIXED.size)
    conf = ConfState(
        voters=frozenset(MemberId(i) for i in ids[:n_voters]),
        learners=frozenset(MemberId(i) for i in ids[n_voters:]),
    )
    return SnapshotMetadata(index=Index(index), term=Term(term), conf_state=conf)


Record = tuple[int, int, "Entry | HardState | SnapshotMetadata | SegmentHeader"]
"""A decoded record: (record type, offset of the record in its segment, value)."""


def record_flags_at(data: bytes, pos: int) -> int:
    """The flags of the whole, CRC-valid record starting at ``pos``; -1 if none starts there."""
    size = len(data)
    if pos + HEADER_SIZE > size:
        return -1
    crc, n, rtype, pad, flags = _FRAME.unpack_from(data, pos)
    if rtype == 0 or rtype > _MAX_TYPE or flags & ~_KNOWN_FLAGS or pad != _pad_for(n):
        return -1
    if pos + HEADER_SIZE + n + pad > size:
        return -1
    with memoryview(data) as mv:
        if zlib.crc32(mv[pos + 4 : pos + HEADER_SIZE + n], pos & _MASK32) != crc:
            return -1
    return int(flags)


def valid_record_at(data: bytes, pos: int) -> bool:
    """Whether a whole record with a matching CRC starts at ``pos``."""
    return record_flags_at(data, pos) >= 0


class BadBodyError(ValueError):
    """A record passed its CRC but its body does not parse (written by a buggy or newer writer)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset


def decode_records(
    data: bytes, start: int = 0, *, with_entries: bool = True
) -> tuple[list[Record], int]:
    """Decode the valid records from ``start`` on.

    Returns the records and the offset at which decoding stopped (no valid record starts
    there, or the end of ``data``). Raises ``BadBodyError`` for a record whose CRC matches but
    whose body is malformed: that is never a torn write. With ``with_entries=False`` entry
    records are checked but left out of the result (a cheaper scan for the other records).
    """
    out: list[Record] = []
    size = len(data)
    pos = start
    unpack_frame = _FRAME.unpack_from
    # Most records are entries: one unpack reads the frame and the entry's fixed fields.
    unpack_entry = _ENTRY_RECORD.unpack_from
    entry_record_size = _ENTRY_RECORD.size
    crc32 = zlib.crc32
    entry_types = _ENTRY_TYPES
    append = out.append
    max_type = _MAX_TYPE
    known = _KNOWN_FLAGS
    mask32 = _MASK32
    entry = RecordType.ENTRY
    with memoryview(data) as mv:
        while pos + HEADER_SIZE <= size:
            if pos + entry_record_size <= size:
                crc, n, rtype, pad, flags, term, index, etype = unpack_entry(data, pos)
            else:
                crc, n, rtype, pad, flags = unpack_frame(data, pos)
            if rtype == 0 or rtype > max_type or flags & ~known or pad != -(HEADER_SIZE + n) % 8:
                break
            end = pos + HEADER_SIZE + n
            if end + pad > size or crc32(mv[pos + 4 : end], pos & mask32) != crc:
                break
            if rtype == entry:
                if not with_entries:
                    pos = end + pad
                    continue
                if n < _ENTRY_FIXED:
                    raise BadBodyError(pos, "entry record too short")
                et = entry_types.get(etype)
                if et is None:
                    raise BadBodyError(pos, f"unknown entry type {etype}")
                append((rtype, pos, Entry(term, index, et, data[pos + entry_record_size : end])))
            else:
                append((rtype, pos, _decode_other(rtype, data[pos + HEADER_SIZE : end], pos)))
            pos = end + pad
    return out, pos


def _decode_other(
    rtype: int, body: bytes, pos: int
) -> HardState | SnapshotMetadata | SegmentHeader:
    if rtype == RecordType.HARD_STATE:
        if len(body) != _HARD_STATE.size:
            raise BadBodyError(pos, "hard state record has the wrong size")
        term, vote, commit = _HARD_STATE.unpack(body)
        return HardState(term=Term(term), vote=MemberId(vote), commit=Index(commit))
    if rtype == RecordType.SNAPSHOT:
        try:
            return decode_snapshot_metadata(body)
        except ValueError as exc:
            raise BadBodyError(pos, str(exc)) from exc
    assert rtype == RecordType.SEGMENT
    if len(body) < _SEGMENT_FIXED.size:
        raise BadBodyError(pos, "segment header too short")
    magic, version, seq, first_index = _SEGMENT_FIXED.unpack_from(body, 0)
    if magic != SEGMENT_MAGIC:
        raise BadBodyError(pos, "bad segment magic")
    if version != FORMAT_VERSION:
        raise BadBodyError(pos, f"unsupported WAL format version {version}")
    return SegmentHeader(
        seq=seq,
        first_index=Index(first_index),
        metadata=body[_SEGMENT_FIXED.size :],
        version=version,
    )


_CHUNK = 1 << 16


def nonzero_end(data: bytes, start: int) -> int:
    """One past the last non-zero byte at or after ``start`` (``start`` if all are zero)."""
    end = len(data)
    while end > start:
        lo = max(start, end - _CHUNK)
        kept = data[lo:end].rstrip(b"\x00")
        if kept:
            return lo + len(kept)
        end = lo
    return start
