"""Unit tests of petcd.wal: framing, recovery, truncation, segments, snapshots, group commit."""

from __future__ import annotations

import os
import re
import select
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from petcd.wal import (
    WAL,
    WalAppendError,
    WalClosedError,
    WalCorruptError,
    WalEntriesMissingError,
    WalExistsError,
    WalFatalError,
    WalLockedError,
    WalNotFoundError,
    WalSnapshotMismatchError,
    WalSnapshotNotFoundError,
    exists,
    read_all,
    record,
    segment_name,
    snapshot_markers,
)
from petcd.wal.fileutil import AsyncFdatasync

SEG = 4096  # small segments so that tests cut files


def ent(index: int, term: int = 1, data: bytes | None = None) -> Entry:
    if data is None:
        data = f"t{term}-i{index}".encode() * (index % 3 + 1)
    return Entry(Term(term), Index(index), EntryType.NORMAL, data)


def hs(term: int, commit: int = 0, vote: int = 0) -> HardState:
    return HardState(Term(term), MemberId(vote), Index(commit))


def snap(index: int, term: int = 1) -> SnapshotMetadata:
    return SnapshotMetadata(
        Index(index), Term(term), ConfState(frozenset({MemberId(1), MemberId(2)}), frozenset())
    )


def segments(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.endswith(".wal"))


# -- framing ---------------------------------------------------------------------------


def test_every_record_type_round_trips_and_is_8_byte_aligned() -> None:
    rb = record.RecordBuffer()
    header = record.SegmentHeader(seq=7, first_index=Index(42), metadata=b"\x00meta\xff")
    rb.add_segment_header(header)
    entries = [
        ent(1, data=b""),
        ent(2, data=b"x"),
        Entry(Term(3), Index(3), EntryType.CONF_CHANGE, b"cc" * 100),
    ]
    rb.add_entries(entries)
    rb.add_hard_state(hs(3, 2, 9))
    meta = SnapshotMetadata(
        Index(5),
        Term(2),
        ConfState(frozenset({MemberId(1), MemberId(2**63)}), frozenset({MemberId(3)})),
    )
    rb.add_snapshot(meta)
    buf = bytes(rb.seal(0))
    assert len(buf) % 8 == 0
    records, stop = record.decode_records(buf + bytes(64))
    assert stop == len(buf)
    assert [r[2] for r in records] == [header, *entries, hs(3, 2, 9), meta]
    assert all(offset % 8 == 0 for _, offset, _ in records)


def test_a_record_is_valid_only_at_the_offset_it_was_sealed_for() -> None:
    rb = record.RecordBuffer()
    rb.add_entries([ent(1), ent(2)])
    at_0 = bytes(rb.seal(0))
    assert len(record.decode_records(at_0)[0]) == 2
    # The same bytes 64 bytes further on (say, inside another entry's data) are no record.
    moved = bytes(64) + at_0
    assert not record.valid_record_at(moved, 64)
    assert record.decode_records(moved, 64) == ([], 64)
    # Sealed for offset 64, they are.
    assert len(record.decode_records(bytes(64) + bytes(rb.seal(64)), 64)[0]) == 2


def test_a_flipped_bit_anywhere_in_a_record_stops_decoding_at_that_record() -> None:
    rb = record.RecordBuffer()
    rb.add_entries([ent(1), ent(2)])
    buf = bytes(rb.seal(0))
    first_len = rb.starts[1]
    for i in range(first_len, len(buf)):
        damaged = bytearray(buf)
        damaged[i] ^= 0x10
        records, stop = record.decode_records(bytes(damaged))
        if i < first_len + record.HEADER_SIZE + 17 + len(ent(2).data):
            assert [r[2] for r in records] == [ent(1)], i
            assert stop == first_len
        else:  # padding is not covered by the CRC
            assert len(records) == 2


def test_zeroed_space_is_not_a_record() -> None:
    assert record.decode_records(bytes(4096)) == ([], 0)
    assert not record.valid_record_at(bytes(64), 0)


def test_nonzero_end() -> None:
    data = bytearray(200_000)
    assert record.nonzero_end(bytes(data), 0) == 0
    data[70_000] = 1
    assert record.nonzero_end(bytes(data), 0) == 70_001
    assert record.nonzero_end(bytes(data), 70_001) == 70_001


# -- basic life cycle ----------------------------------------------------------------------


def test_create_save_sync_reopen_returns_everything(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    w = WAL.create(d, b"member=1", segment_size_bytes=SEG)
    assert exists(d)
    assert [p.name for p in segments(d)] == [segment_name(0, 0)]
    w.save(hs(1, 0, 1), [ent(1), ent(2)])
    w.save(hs(1, 2, 1), [ent(3)])
    w.sync()
    w.close()
    state = read_all(d)
    assert state.metadata == b"member=1"
    assert state.hard_state == hs(1, 2, 1)
    assert state.entries == (ent(1), ent(2), ent(3))
    assert state.snapshot == SnapshotMetadata()
    w2, state2 = WAL.open(d, segment_size_bytes=SEG)
    assert state2 == state
    w2.save(None, [ent(4)])
    w2.close()  # close syncs what is pending
    assert read_all(d).entries[-1] == ent(4)


def test_unsynced_saves_are_not_in_the_files(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1)])
    w.sync()
    w.save(hs(2), [ent(2)])
    assert read_all(tmp_path).entries == (ent(1),)
    assert read_all(tmp_path).hard_state == hs(1)
    w.sync()
    assert read_all(tmp_path).entries == (ent(1), ent(2))
    w.close()


def test_create_refuses_an_existing_wal_and_open_needs_one(tmp_path: Path) -> None:
    with pytest.raises(WalNotFoundError):
        WAL.open(tmp_path / "nothing")
    assert not exists(tmp_path / "nothing")
    WAL.create(tmp_path, segment_size_bytes=SEG).close()
    with pytest.raises(WalExistsError):
        WAL.create(tmp_path, segment_size_bytes=SEG)


def test_a_wal_can_be_open_only_once(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    with pytest.raises(WalLockedError, match="in use"):
        WAL.open(tmp_path, segment_size_bytes=SEG)
    w.close()
    WAL.open(tmp_path, segment_size_bytes=SEG)[0].close()


def test_closed_wal_refuses_calls(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.close()
    w.close()
    with pytest.raises(WalClosedError):
        w.save(hs(1), [ent(1)])
    with pytest.raises(WalClosedError):
        w.sync()


def test_save_rejects_entries_that_cannot_follow_the_log(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    with pytest.raises(WalAppendError):
        w.save(None, [ent(2)])  # gap after index 0
    with pytest.raises(WalAppendError):
        w.save(None, [ent(1), ent(3)])
    with pytest.raises(WalAppendError):
        w.save(None, [ent(0)])
    w.save(None, [ent(1)])
    w.save_snapshot(snap(10))
    w.save(None, [ent(11)])  # entries may follow a snapshot marker
    w.sync()
    w.close()
    assert read_all(tmp_path, snap(10)).entries == (ent(11),)


def test_leftover_temporary_segment_is_removed_on_open(tmp_path: Path) -> None:
    WAL.create(tmp_path, segment_size_bytes=SEG).close()
    leftover = tmp_path / (segment_name(1, 5) + ".tmp")
    leftover.write_bytes(b"half a segment")
    WAL.open(tmp_path, segment_size_bytes=SEG)[0].close()
    assert not leftover.exists()


# -- torn and zero-filled tails ----------------------------------------------------------


def _two_batches(d: Path) -> tuple[Path, int, list[int]]:
    """A WAL with batch A synced, then batch B synced; returns the file, where B starts, and
    the end offset of each record of B without its padding."""
    w = WAL.create(d, segment_size_bytes=SEG)
    w.save(hs(1, 1), [ent(1), ent(2)])
    w.sync()
    b_start = w._offset
    rb = record.RecordBuffer()
    rb.add_entries([ent(3, 2), ent(4, 2)])
    rb.add_hard_state(hs(2, 4))
    # where each record's CRC-covered bytes end (the zero padding may be missing)
    ends = [
        b_start + s + record.HEADER_SIZE + 17 + len(e.data)
        for s, e in zip(rb.starts, (ent(3, 2), ent(4, 2)), strict=False)
    ]
    ends.append(b_start + rb.starts[2] + record.HEADER_SIZE + 24)
    w.save(hs(2, 4), [ent(3, 2), ent(4, 2)])
    w.sync()
    w.close()
    return segments(d)[0], b_start, ends


def test_torn_tail_cut_at_every_byte_of_the_last_batch_ends_at_the_last_whole_record(
    tmp_path: Path,
) -> None:
    path, b_start, ends = _two_batches(tmp_path / "orig")
    original = path.read_bytes()
    # Trailing zero bytes of a record are indistinguishable from the zero fill: a record is
    # whole once its last non-zero byte is on disk.
    ends = [len(original[:e].rstrip(b"\x00")) for e in ends]
    for cut in range(b_start, ends[-1] + 1):
        torn = original[:cut] + bytes(len(original) - cut)
        path.write_bytes(torn)
        state = read_all(path.parent)
        whole = sum(1 for e in ends if e <= cut)
        expected_entries = (ent(1), ent(2), ent(3, 2), ent(4, 2))[: 2 + min(whole, 2)]
        assert state.entries == expected_entries, cut
        assert state.hard_state == (hs(2, 4) if whole == 3 else hs(1, 1)), cut


def test_torn_tail_with_a_zeroed_sector_inside_the_last_record(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=1 << 16)
    w.save(hs(1), [ent(1)])
    w.sync()
    start = w._offset
    w.save(hs(1), [ent(2, data=b"\xaa" * 3000)])
    w.sync()
    w.close()
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[start + 512 : start + 1024] = bytes(512)  # a sector of the last batch never hit disk
    data[start + 2048 :] = bytes(len(data) - start - 2048)
    path.write_bytes(bytes(data))
    assert read_all(tmp_path).entries == (ent(1),)


def test_open_overwrites_a_garbage_tail_with_zeros_then_appends_after_it(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1)])
    w.sync()
    end = w._offset
    w.close()
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[end : end + 100] = b"\xee" * 100  # bytes of an unsynced batch, no record in them
    path.write_bytes(bytes(data))
    assert read_all(tmp_path).entries == (ent(1),)
    w, state = WAL.open(tmp_path, segment_size_bytes=SEG)
    assert state.entries == (ent(1),)
    assert path.read_bytes()[end : end + 100] == bytes(100)
    w.save(hs(1, 1), [ent(2, data=b"")])  # shorter than the garbage was
    w.sync()
    w.close()
    assert read_all(tmp_path).entries == (ent(1), ent(2, data=b""))


# -- corruption in the middle ------------------------------------------------------------


def test_crc_error_followed_by_valid_records_names_file_and_offset(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1)])
    w.sync()
    bad_offset = w._offset
    w.save(hs(1), [ent(2)])
    w.sync()
    w.save(hs(1), [ent(3)])
    w.sync()
    w.close()
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[bad_offset + 20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        read_all(tmp_path)
    assert info.value.path == str(path)
    assert info.value.offset == bad_offset
    assert str(path) in str(info.value) and f"offset {bad_offset}" in str(info.value)
    with pytest.raises(WalCorruptError):
        WAL.open(tmp_path)
    assert bytes(data) == path.read_bytes()  # nothing was truncated


def test_damaged_length_field_in_the_middle_is_an_error(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1), ent(2), ent(3)])
    w.sync()
    w.save(hs(1), [ent(4)])  # a later write: the first one was acknowledged
    w.sync()
    w.close()
    path = segments(tmp_path)[0]
    records, _ = record.decode_records(path.read_bytes())
    second_entry_offset = records[2][1]
    data = bytearray(path.read_bytes())
    data[second_entry_offset + 6] ^= 0x01  # length += 65536: plausible, reaches past the data
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        read_all(tmp_path)
    assert info.value.offset == second_entry_offset


def test_damage_at_the_end_of_a_non_last_segment_is_an_error(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    for i in range(1, 60):
        w.save(hs(1, i - 1), [ent(i, data=b"z" * 200)])
        w.sync()
    w.close()
    files = segments(tmp_path)
    assert len(files) > 2
    first = files[0]
    records, _ = record.decode_records(first.read_bytes())
    last_offset = records[-1][1]
    data = bytearray(first.read_bytes())
    data[last_offset + 30] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        read_all(tmp_path)
    assert info.value.path == str(first)
    assert info.value.offset == last_offset


def test_missing_middle_segment_is_an_error(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    for i in range(1, 60):
        w.save(hs(1), [ent(i, data=b"z" * 200)])
        w.sync()
    w.close()
    segments(tmp_path)[1].unlink()
    with pytest.raises(WalCorruptError, match="sequence gap"):
        read_all(tmp_path)


def test_renamed_segment_is_an_error(tmp_path: Path) -> None:
    WAL.create(tmp_path, segment_size_bytes=SEG).close()
    seg = segments(tmp_path)[0]
    seg.rename(tmp_path / segment_name(0, 5))
    with pytest.raises(WalCorruptError, match="does not match the file name"):
        read_all(tmp_path)


# -- conflicting entries -----------------------------------------------------------------


def test_conflicting_entries_replace_the_tail(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(i) for i in range(1, 11)])
    w.sync()
    w.save(hs(2), [ent(6, 2), ent(7, 2), ent(8, 2)])
    w.sync()
    w.save(hs(2), [ent(9, 2)])
    w.sync()
    w.close()
    expected = tuple([ent(i) for i in range(1, 6)] + [ent(i, 2) for i in range(6, 10)])
    assert read_all(tmp_path).entries == expected
    w, state = WAL.open(tmp_path, segment_size_bytes=SEG)
    assert state.entries == expected
    w.save(None, [ent(10, 2)])  # the next index after the truncated tail
    w.close()
    assert read_all(tmp_path).entries == (*expected, ent(10, 2))


def test_conflicting_entries_replace_a_tail_held_in_an_older_segment(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    for i in range(1, 41):
        w.save(hs(1), [ent(i, data=b"q" * 150)])
        w.sync()
    assert len(segments(tmp_path)) >= 2
    w.save(hs(3), [ent(5, 3)])
    w.sync()
    w.close()
    assert read_all(tmp_path).entries == (
        *[ent(i, data=b"q" * 150) for i in range(1, 5)],
        ent(5, 3),
    )


def test_rewrite_at_or_below_the_snapshot_supersedes_later_entries(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(i) for i in range(1, 9)])
    w.save_snapshot(snap(3))
    w.save(hs(2), [ent(3, 2)])  # log is now 1, 2, 3' (raft never does this below a snapshot)
    w.save(hs(2), [ent(4, 2)])
    w.close()
    assert read_all(tmp_path, snap(3)).entries == (ent(4, 2),)


# -- snapshot markers --------------------------------------------------------------------


def test_entries_after_the_requested_snapshot_and_the_latest_marker(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(i) for i in range(1, 11)])
    w.save_snapshot(snap(4))
    w.save(hs(1, 10), [ent(i) for i in range(11, 13)])
    w.save_snapshot(snap(8))
    w.close()
    state = read_all(tmp_path, snap(4))
    assert state.entries == tuple(ent(i) for i in range(5, 13))
    assert state.snapshot == snap(8)
    assert state.snapshots == (snap(4), snap(8))
    assert read_all(tmp_path, snap(8)).entries == tuple(ent(i) for i in range(9, 13))
    assert read_all(tmp_path).entries == tuple(ent(i) for i in range(1, 13))
    assert snapshot_markers(tmp_path) == (snap(4), snap(8))
    assert snapshot_markers(tmp_path / "none") == ()


def test_unknown_or_mismatched_snapshot_is_an_error(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(i) for i in range(1, 6)])
    w.save_snapshot(snap(4, term=1))
    w.close()
    with pytest.raises(WalSnapshotNotFoundError):
        read_all(tmp_path, snap(3))
    with pytest.raises(WalSnapshotMismatchError):
        read_all(tmp_path, snap(4, term=2))


def test_entries_after_a_snapshot_install_need_that_snapshot(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1), ent(2)])
    w.save_snapshot(snap(100, 3))  # a follower installs a leader's snapshot
    w.save(hs(3, 101), [ent(101, 3)])
    w.close()
    assert read_all(tmp_path, snap(100, 3)).entries == (ent(101, 3),)
    with pytest.raises(WalEntriesMissingError):
        read_all(tmp_path)


# -- segments and release ----------------------------------------------------------------


def test_segments_are_cut_when_full_and_named_seq_and_first_index(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, b"m", segment_size_bytes=SEG)
    for i in range(1, 101):
        w.save(hs(1, i - 1), [ent(i, data=b"d" * 100)])
        w.sync()
    w.close()
    files = segments(tmp_path)
    assert len(files) > 3
    expected_first = 0
    for seq, f in enumerate(files):
        m = re.fullmatch(r"([0-9a-f]{16})-([0-9a-f]{16})\.wal", f.name)
        assert m is not None
        assert int(m.group(1), 16) == seq
        first_index = int(m.group(2), 16)
        if seq > 0:
            # the first entry in a cut segment is the one after the previous segment's last
            records, _ = record.decode_records(f.read_bytes())
            first_entry = next(v for t, _, v in records if t == record.RecordType.ENTRY)
            assert isinstance(first_entry, Entry) and first_entry.index == first_index
            assert first_index > expected_first
        expected_first = first_index
        assert os.path.getsize(f) >= SEG  # preallocated
    state = read_all(tmp_path)
    assert state.entries == tuple(ent(i, data=b"d" * 100) for i in range(1, 101))
    assert state.metadata == b"m"


def test_a_batch_larger_than_a_segment_grows_the_file(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(i, data=b"b" * 300) for i in range(1, 50)])
    w.sync()
    w.close()
    assert len(segments(tmp_path)) == 1
    assert len(read_all(tmp_path).entries) == 49


def test_release_to_drops_only_segments_before_the_one_holding_the_index(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    for i in range(1, 101):
        w.save(hs(1, i), [ent(i, data=b"r" * 100)])
        w.sync()
    names_before = w.segment_names()
    firsts = [int(n[17:33], 16) for n in names_before]
    target = firsts[3] + 2  # inside the fourth segment
    with pytest.raises(WalAppendError):
        w.release_to(Index(target))  # no durable marker at that index yet
    w.save_snapshot(snap(target))
    w.sync()
    w.release_to(Index(target))
    assert w.segment_names() == names_before[3:]
    assert [p.name for p in segments(tmp_path)] == names_before[3:]
    w.release_to(Index(target))  # idempotent
    w.save(hs(1, 101), [ent(101, data=b"r" * 100)])
    w.close()
    state = read_all(tmp_path, snap(target))
    assert state.entries == tuple(ent(i, data=b"r" * 100) for i in range(target + 1, 102))
    assert state.hard_state == hs(1, 101)
    assert state.snapshot == snap(target)


def test_opening_records_keep_hard_state_and_marker_when_old_segments_go(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(5, 3, vote=2), [ent(i, data=b"s" * 100) for i in range(1, 4)])
    w.save_snapshot(snap(3, 1))
    w.sync()
    for i in range(4, 80):  # no hard state and no marker saved any more
        w.save(None, [ent(i, data=b"s" * 100)])
        w.sync()
    last_first = int(w.segment_names()[-1][17:33], 16)
    w.save_snapshot(snap(last_first))
    w.sync()
    w.release_to(Index(last_first))
    assert len(w.segment_names()) == 1
    w.close()
    markers = snapshot_markers(tmp_path)
    assert markers[-1] == snap(last_first)
    state = read_all(tmp_path, snap(last_first))
    assert state.hard_state == hs(5, 3, vote=2)
    assert state.entries == tuple(ent(i, data=b"s" * 100) for i in range(last_first + 1, 80))


# -- group commit and failures -----------------------------------------------------------


def test_saves_during_a_running_sync_go_out_together_with_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=1 << 20)
    in_fsync = threading.Event()
    release = threading.Event()
    real_fdatasync = os.fdatasync
    calls = []

    def slow_fdatasync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            in_fsync.set()
            assert release.wait(10)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    w.save(hs(1), [ent(1)])
    worker = threading.Thread(target=w.sync)
    worker.start()
    assert in_fsync.wait(10)
    for i in range(2, 12):  # the event loop keeps saving while the fsync runs
        w.save(hs(1, i - 1), [ent(i)])
    release.set()
    worker.join(10)
    assert read_all(tmp_path).entries == (ent(1),)
    w.sync()
    assert len(calls) == 2
    assert w.sync_count == 2
    w.sync()  # nothing pending: no fsync
    assert len(calls) == 2
    w.close()
    assert read_all(tmp_path).entries == tuple(ent(i) for i in range(1, 12))


def test_concurrent_savers_and_syncers_lose_nothing(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=1 << 16)
    done = threading.Event()
    errors: list[BaseException] = []

    def syncer() -> None:
        try:
            while not done.is_set():
                w.sync()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=syncer) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(1, 2001):
        w.save(hs(1, i), [ent(i)])
    w.sync()
    done.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert w.sync_count < 2000
    w.close()
    state = read_all(tmp_path)
    assert state.entries == tuple(ent(i) for i in range(1, 2001))
    assert state.hard_state == hs(1, 2000)


def test_a_failed_fdatasync_makes_the_wal_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    w.save(hs(1), [ent(1)])
    with pytest.raises(WalFatalError):
        w.sync()
    monkeypatch.undo()
    w.save(hs(1), [ent(2)])  # buffering still works, but nothing can be made durable
    with pytest.raises(WalFatalError):
        w.sync()
    with pytest.raises(WalFatalError):
        w.release_to(Index(0))
    w.close()


# -- model-based -------------------------------------------------------------------------


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.integers(0, 300)),
        st.tuples(st.just("rewrite"), st.integers(0, 8), st.integers(1, 4)),
        st.tuples(st.just("sync"), st.just(0), st.just(0)),
        st.tuples(st.just("snap"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
        st.tuples(st.just("install"), st.integers(-3, 3), st.integers(0, 1)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_wal_matches_a_model_log(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[str, int, int]]
) -> None:
    d = tmp_path_factory.mktemp("model")
    w = WAL.create(d, segment_size_bytes=1024)
    log: list[Entry] = []  # model: log[i] has index i + 1
    term = 1
    snapshot = SnapshotMetadata()
    for op, a, b in script:
        if op == "append":
            start = len(log) + 1
            new = [ent(i, term, bytes([i % 251]) * b) for i in range(start, start + a)]
            w.save(hs(term, len(log)), new)
            log.extend(new)
        elif op == "rewrite":
            first = max(snapshot.index + 1, len(log) + 1 - a)
            term += b
            new = [ent(first, term)]
            w.save(hs(term), new)
            del log[first - 1 :]
            log.extend(new)
        elif op == "sync":
            w.sync()
            assert read_all(d, snapshot).entries == tuple(log[snapshot.index :])
        elif op == "snap" and log:
            index = max(snapshot.index, len(log) - a)
            if index > snapshot.index:
                snapshot = snap(index, log[index - 1].term)
                w.save_snapshot(snapshot)
                w.sync()
                w.release_to(Index(index))
        elif op == "install":
            # The leader's snapshot at index i of a newer term replaces the log.
            index = max(snapshot.index + 1, len(log) + a)
            term += 1
            snapshot = snap(index, term)
            w.save_snapshot(snapshot)
            w.sync()
            if b:
                w.release_to(Index(index))
            del log[index:]
            log.extend(ent(i, term) for i in range(len(log) + 1, index + 1))  # compacted away
        elif op == "reopen":
            w.close()
            w, state = WAL.open(d, snapshot, segment_size_bytes=1024)
            assert state.entries == tuple(log[snapshot.index :])
    w.close()
    state = read_all(d, snapshot)
    assert state.entries == tuple(log[snapshot.index :])
    assert state.snapshot == snapshot


# -- more recovery cases -----------------------------------------------------------------


def test_a_hole_in_the_last_write_is_a_torn_tail_even_with_whole_records_after_it(
    tmp_path: Path,
) -> None:
    # After a power cut the disk may hold later pages of the last (unsynced) write but not an
    # earlier one. No later write follows, so nothing after the hole was acknowledged.
    w = WAL.create(tmp_path, segment_size_bytes=1 << 16)
    w.save(hs(1), [ent(1)])
    w.sync()
    start = w._offset
    w.save(hs(1), [ent(i, data=b"h" * 500) for i in range(2, 12)])
    w.sync()
    w.close()
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[start + 512 : start + 1024] = bytes(512)  # inside entries 2 and 3 (536 bytes each)
    path.write_bytes(bytes(data))
    assert record.valid_record_at(bytes(data), start + 1072)  # entry 4 survived the cut
    assert read_all(tmp_path).entries == (ent(1),)
    w, state = WAL.open(tmp_path, segment_size_bytes=1 << 16)
    assert state.entries == (ent(1),)
    w.save(hs(1), [ent(2)])
    w.close()
    assert read_all(tmp_path).entries == (ent(1), ent(2))


def test_a_hole_in_an_earlier_write_is_reported_not_cut(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=1 << 16)
    w.save(hs(1), [ent(1)])
    w.sync()
    start = w._offset
    w.save(hs(1), [ent(i, data=b"h" * 500) for i in range(2, 12)])
    w.sync()
    w.save(hs(1), [ent(12)])
    w.sync()
    w.close()
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[start + 512 : start + 1024] = bytes(512)
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        read_all(tmp_path)
    assert info.value.offset == start  # entry 2, damaged by the hole
    assert info.value.path == str(path)


def test_a_segment_without_its_header_is_an_error(tmp_path: Path) -> None:
    WAL.create(tmp_path, segment_size_bytes=SEG).close()
    path = segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[0:64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        read_all(tmp_path)
    assert info.value.offset == 0 and info.value.path == str(path)


def test_reopen_right_after_a_cut_appends_to_the_new_segment(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    i = 0
    while len(segments(tmp_path)) < 2:
        i += 1
        w.save(hs(1, i), [ent(i, data=b"c" * 300)])
        w.sync()
    w.close()
    names = [p.name for p in segments(tmp_path)]
    assert names[1] == segment_name(1, i)  # the batch that did not fit went to the new file
    w, state = WAL.open(tmp_path, segment_size_bytes=SEG)
    assert len(state.entries) == i
    w.save(hs(1, i + 1), [ent(i + 1)])
    w.close()
    assert [p.name for p in segments(tmp_path)] == names
    assert read_all(tmp_path).entries[-1] == ent(i + 1)
    assert read_all(tmp_path).hard_state == hs(1, i + 1)


def test_a_torn_batch_carrying_a_copy_of_a_wal_file_is_still_a_torn_tail(tmp_path: Path) -> None:
    # A value holding a WAL file (records at 8-aligned places of the torn bytes) must not be
    # taken for valid data after damage: records are bound to the offset they were written at.
    src = tmp_path / "src"
    w = WAL.create(src, segment_size_bytes=SEG)
    w.save(hs(1), [ent(i) for i in range(1, 20)])
    w.close()
    wal_bytes = segments(src)[0].read_bytes()[:2048]
    d = tmp_path / "d"
    w = WAL.create(d, segment_size_bytes=1 << 16)
    w.save(hs(1), [ent(1)])
    w.sync()
    start = w._offset
    # 3 bytes of prefix put the copied records on 8-byte boundaries of the file
    w.save(None, [ent(2, data=b"pfx" + wal_bytes)])
    w.sync()
    w.close()
    path = segments(d)[0]
    data = bytearray(path.read_bytes())
    assert (start + record.HEADER_SIZE + 17 + 3) % 8 == 0
    data[start : start + 8] = bytes(8)  # the batch's first bytes never reached the disk
    path.write_bytes(bytes(data))
    assert read_all(d).entries == (ent(1),)


def test_a_save_that_fails_half_way_leaves_nothing_behind(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1)])
    bad = Entry(Term(1), Index(3), EntryType.NORMAL, "not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        w.save(hs(1, 2), [ent(2), bad])
    with pytest.raises(struct.error):
        w.save_snapshot(SnapshotMetadata(Index(1), Term(-1)))
    w.save(hs(1, 2), [ent(2)])  # the failed saves changed nothing: index 2 still follows 1
    w.close()
    state = read_all(tmp_path)
    assert state.entries == (ent(1), ent(2))
    assert state.hard_state == hs(1, 2)
    assert state.snapshots == ()


def test_an_installed_snapshot_replaces_the_log_it_does_not_match(tmp_path: Path) -> None:
    # A follower with a stale tail (term 1) installs the leader's snapshot at 8 (term 3) and
    # crashes before the leader's next entries arrive: the stale entries 9 and 10 must not come
    # back after the snapshot (as in Raft, an installed snapshot replaces the whole log).
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(i) for i in range(1, 11)])
    w.save_snapshot(snap(8, term=3))
    w.save(hs(3, 8), [])
    w.sync()
    state = read_all(tmp_path, snap(8, term=3))
    assert state.entries == ()
    assert state.snapshot == snap(8, term=3)
    w.save(hs(3, 9), [ent(9, 3)])  # the leader's entry 9 follows the snapshot
    w.close()
    assert read_all(tmp_path, snap(8, term=3)).entries == (ent(9, 3),)
    with pytest.raises(WalEntriesMissingError, match="replaced by the snapshot at index 8"):
        read_all(tmp_path)  # entries 1..8 are no longer in the log


def test_an_installed_snapshot_beyond_the_log_end(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1), ent(2)])
    w.save_snapshot(snap(50, term=2))
    w.save(hs(2, 51), [ent(51, 2)])
    for i in range(52, 90):  # cut segments: their opening records repeat the marker
        w.save(None, [ent(i, 2, data=b"o" * 200)])
        w.sync()
    w.close()
    assert len(segments(tmp_path)) > 1
    state = read_all(tmp_path, snap(50, term=2))
    assert [e.index for e in state.entries] == list(range(51, 90))


def test_a_local_snapshot_keeps_the_entries_after_it(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(2), [ent(1), ent(2, 2), ent(3, 2), ent(4, 2)])
    w.save_snapshot(snap(2, term=2))  # entry 2 has term 2: a local snapshot
    w.close()
    assert read_all(tmp_path, snap(2, term=2)).entries == (ent(3, 2), ent(4, 2))
    assert read_all(tmp_path).entries == (ent(1), ent(2, 2), ent(3, 2), ent(4, 2))


# -- --unsafe-no-fsync -------------------------------------------------------------------


@pytest.mark.parametrize("no_fsync", [False, True])
def test_unsafe_no_fsync_writes_everything_and_never_fdatasyncs_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_fsync: bool
) -> None:
    from petcd.wal import wal as wal_mod

    fdatasyncs: list[int] = []
    writebacks: list[int] = []
    real_fdatasync, real_writeback = os.fdatasync, wal_mod.start_writeback

    def counting_fdatasync(fd: int) -> None:
        fdatasyncs.append(fd)
        real_fdatasync(fd)

    def counting_writeback(fd: int, offset: int, nbytes: int) -> None:
        writebacks.append(fd)
        real_writeback(fd, offset, nbytes)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    monkeypatch.setattr(wal_mod, "start_writeback", counting_writeback)
    d = tmp_path / "wal"
    w = WAL.create(d, b"m", segment_size_bytes=SEG, unsafe_no_fsync=no_fsync)
    expected = []
    for i in range(1, 120):  # about 60 records per 4 KiB segment: a few cuts
        w.save(hs(1, i - 1), [ent(i)])
        expected.append(ent(i))
        if i % 2:
            w.write()
        w.sync()
    w.close()
    assert len(segments(d)) >= 3
    assert (w.sync_count == 0) is no_fsync
    assert (not fdatasyncs) is no_fsync
    assert (not writebacks) is no_fsync
    w2, state = WAL.open(d, segment_size_bytes=SEG, unsafe_no_fsync=no_fsync)
    assert state.entries == tuple(expected)
    fdatasyncs.clear()
    w2.save(None, [ent(120)])
    w2.sync()
    assert (not fdatasyncs) is no_fsync
    w2.close()
    assert read_all(d).entries[-1] == ent(120)


# -- sync_start / sync_done (the fdatasync completes later, as through Linux AIO) ----------


class _Submits:
    """A stand-in for ``AsyncFdatasync.submit`` that only notes the file descriptors."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def __call__(self, fd: int) -> None:
        self.fds.append(fd)


def test_sync_start_writes_and_submits_and_sync_done_makes_it_count(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    submits = _Submits()
    assert not w.sync_start(submits), "nothing pending: nothing to make durable"
    w.save(hs(1, 1), [ent(1)])
    assert w.sync_start(submits)
    assert len(submits.fds) == 1
    # Written (a reader sees it), not yet counted durable: the next sync fdatasyncs it.
    assert read_all(tmp_path).entries == (ent(1),)
    with pytest.raises(WalAppendError):
        w.sync_start(submits)  # one started sync at a time
    os.fdatasync(submits.fds[0])  # what the kernel does for the submission
    w.sync_done(0)
    assert w.sync_count == 1
    with pytest.raises(WalAppendError):
        w.sync_done(0)  # nothing was started
    assert not w.sync_start(submits), "everything written is durable already"
    w.close()
    assert read_all(tmp_path).entries == (ent(1),)


def test_a_write_while_a_started_sync_runs_is_not_covered_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    submits = _Submits()
    w.save(hs(1, 1), [ent(1)])
    assert w.sync_start(submits)
    fdatasyncs: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        fdatasyncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    w.save(hs(1, 2), [ent(2)])
    w.write()  # the first write may not be durable yet: fdatasynced here before this one
    assert len(fdatasyncs) == 1
    w.sync_done(0)  # the submitted one finishes: it does not cover the second write
    w.sync()
    assert len(fdatasyncs) == 2
    w.close()
    assert read_all(tmp_path).entries == (ent(1), ent(2))


def test_a_failed_started_sync_makes_the_wal_unusable(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1)])
    assert w.sync_start(_Submits())
    with pytest.raises(WalFatalError, match="Input/output error"):
        w.sync_done(-5)  # -EIO
    w.save(hs(1), [ent(2)])
    with pytest.raises(WalFatalError):
        w.sync()
    with pytest.raises(WalFatalError):
        w.sync_start(_Submits())
    w.close()


def test_a_refused_submission_makes_the_wal_unusable(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG)
    w.save(hs(1), [ent(1)])

    def refusing(fd: int) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    with pytest.raises(WalFatalError, match="failed to start"):
        w.sync_start(refusing)
    with pytest.raises(WalFatalError):
        w.sync()
    w.close()


def test_sync_start_with_unsafe_no_fsync_writes_and_submits_nothing(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, segment_size_bytes=SEG, unsafe_no_fsync=True)
    submits = _Submits()
    w.save(hs(1, 1), [ent(1)])
    assert not w.sync_start(submits)
    assert submits.fds == []
    assert read_all(tmp_path).entries == (ent(1),)
    w.close()


def test_sync_start_across_segment_cuts_with_the_kernels_fdatasync(tmp_path: Path) -> None:
    aio = AsyncFdatasync.open()
    if aio is None:
        pytest.skip("Linux AIO is not available here")
    try:
        w = WAL.create(tmp_path, b"m", segment_size_bytes=SEG)
        expected = []
        for i in range(1, 120):  # a few cuts
            w.save(hs(1, i - 1), [ent(i)])
            expected.append(ent(i))
            assert w.sync_start(aio.submit)
            assert select.select([aio.fileno()], [], [], 10)[0]
            assert aio.reap() == [0]
            w.sync_done(0)
        w.close()
        assert len(segments(tmp_path)) >= 3
        _, state = WAL.open(tmp_path, segment_size_bytes=SEG)
        assert state.entries == tuple(expected)
    finally:
        aio.close()
