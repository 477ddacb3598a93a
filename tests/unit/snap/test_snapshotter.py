"""Unit tests of petcd.snap: atomic snapshot files, verification, fallback, purge."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import lmdb
import pytest

from petcd.raft.types import ConfState, Index, MemberId, SnapshotMetadata, Term
from petcd.snap import (
    LoadedSnapshot,
    SnapCorruptError,
    Snapshotter,
    read_snapshot_file,
    snapshot_name,
)


def meta(index: int, term: int = 1) -> SnapshotMetadata:
    return SnapshotMetadata(
        Index(index),
        Term(term),
        ConfState(frozenset({MemberId(1), MemberId(2), MemberId(3)}), frozenset({MemberId(9)})),
    )


def test_save_then_load_newest_returns_metadata_and_data(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path)
    assert snaps.load_newest() is None
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several read chunks
    path = snaps.save_bytes(meta(10, 2), data)
    assert os.path.basename(path) == "0000000000000002-000000000000000a.snap"
    assert snapshot_name(meta(10, 2)) == os.path.basename(path)
    loaded = snaps.load_newest()
    assert loaded is not None
    assert loaded.metadata == meta(10, 2)
    assert loaded.read_data() == data
    out = io.BytesIO()
    loaded.copy_data_to(out)
    assert out.getvalue() == data
    with loaded.open_data() as f:
        f.seek(1000)
        assert f.read(10) == data[1000:1010]
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no temp file left


def test_empty_data_and_no_members(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path)
    snaps.save_bytes(SnapshotMetadata(Index(1), Term(1)), b"")
    loaded = snaps.load_newest()
    assert loaded is not None
    assert loaded.metadata == SnapshotMetadata(Index(1), Term(1))
    assert loaded.read_data() == b""


def test_callback_may_write_to_the_file_descriptor_like_lmdb_copyfd(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(1000):
            txn.put(f"key{i:04d}".encode(), f"value{i}".encode() * 10)
    snaps = Snapshotter(tmp_path / "snap")

    def copy_to(f: BinaryIO) -> None:
        env.copyfd(f.fileno())

    snaps.save(meta(5), copy_to)
    env.close()
    loaded = snaps.load_newest()
    assert loaded is not None
    restored = tmp_path / "restored"
    restored.mkdir()
    loaded.extract_to(restored / "data.mdb")
    env2 = lmdb.open(str(restored), map_size=1 << 24, readonly=True)
    with env2.begin() as txn:
        assert txn.get(b"key0999") == b"value999" * 10
        assert txn.stat()["entries"] == 1000
    env2.close()


def test_mixed_writes_through_the_object_and_the_descriptor(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path)

    def write(f: BinaryIO) -> None:
        f.write(b"abc")
        f.flush()
        os.write(f.fileno(), b"def")

    snaps.save(meta(3), write)
    loaded = snaps.load_newest()
    assert loaded is not None and loaded.read_data() == b"abcdef"


def test_a_failing_callback_leaves_no_file(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path)
    snaps.save_bytes(meta(1), b"old")

    def boom(f: BinaryIO) -> None:
        f.write(b"partial")
        raise RuntimeError("backend copy failed")

    with pytest.raises(RuntimeError):
        snaps.save(meta(2), boom)
    assert snaps.names() == [snapshot_name(meta(1))]
    assert sorted(os.listdir(tmp_path)) == [snapshot_name(meta(1))]
    loaded = snaps.load_newest()
    assert loaded is not None and loaded.metadata == meta(1)


def test_a_crash_before_the_rename_leaves_only_a_temp_file_which_is_ignored_and_removed(
    tmp_path: Path,
) -> None:
    snaps = Snapshotter(tmp_path)
    snaps.save_bytes(meta(1), b"old")
    whole = Path(snaps.save_bytes(meta(2), b"new")).read_bytes()
    os.remove(tmp_path / snapshot_name(meta(2)))
    (tmp_path / (snapshot_name(meta(2)) + ".tmp")).write_bytes(whole[: len(whole) // 2])
    again = Snapshotter(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [snapshot_name(meta(1))]
    loaded = again.load_newest()
    assert loaded is not None and loaded.read_data() == b"old"


def test_every_flipped_byte_is_detected(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path)
    path = Path(snaps.save_bytes(meta(7, 3), b"state machine bytes"))
    good = path.read_bytes()
    read_snapshot_file(path)
    for i in range(len(good)):
        damaged = bytearray(good)
        damaged[i] ^= 0x04
        path.write_bytes(bytes(damaged))
        with pytest.raises(SnapCorruptError) as info:
            read_snapshot_file(path)
        assert info.value.path == str(path)
    for cut in (0, 10, len(good) - 25, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(SnapCorruptError):
            read_snapshot_file(path)


def test_corrupt_newest_is_skipped_renamed_and_reported(tmp_path: Path) -> None:
    reported: list[SnapCorruptError] = []
    snaps = Snapshotter(tmp_path, on_corrupt=reported.append)
    snaps.save_bytes(meta(10), b"ten")
    newest = Path(snaps.save_bytes(meta(20), b"twenty"))
    data = bytearray(newest.read_bytes())
    data[-30] ^= 0xFF  # inside the data
    newest.write_bytes(bytes(data))
    loaded = snaps.load_newest()
    assert loaded is not None
    assert loaded.metadata == meta(10)
    assert loaded.read_data() == b"ten"
    assert [r.path for r in reported] == [str(newest)]
    assert "CRC mismatch" in str(reported[0])
    assert (tmp_path / (newest.name + ".broken")).exists()
    assert not newest.exists()
    assert snaps.names() == [snapshot_name(meta(10))]


def test_a_file_whose_name_does_not_match_its_metadata_is_rejected(tmp_path: Path) -> None:
    reported: list[SnapCorruptError] = []
    snaps = Snapshotter(tmp_path, on_corrupt=reported.append)
    path = Path(snaps.save_bytes(meta(10), b"ten"))
    path.rename(tmp_path / snapshot_name(meta(11)))
    assert snaps.load_newest() is None
    assert len(reported) == 1


def test_load_newest_only_among_the_markers_the_wal_knows(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path)
    snaps.save_bytes(meta(10), b"ten")
    snaps.save_bytes(meta(20), b"twenty")
    snaps.save_bytes(meta(30, 2), b"thirty")
    loaded = snaps.load_newest([meta(10), meta(20)])
    assert loaded is not None and loaded.metadata == meta(20)
    assert snaps.load_newest([meta(30, 1)]) is None  # same index, other term
    assert snaps.load_newest([]) is None
    newest = snaps.load_newest()
    assert isinstance(newest, LoadedSnapshot) and newest.metadata == meta(30, 2)


def test_old_files_are_purged_keeping_the_newest_n(tmp_path: Path) -> None:
    snaps = Snapshotter(tmp_path, keep=3)
    for i in range(1, 8):
        snaps.save_bytes(meta(i * 100, term=1 + i // 4), str(i).encode())
    assert snaps.names() == [snapshot_name(meta(i * 100, 1 + i // 4)) for i in (7, 6, 5)]
    assert len(os.listdir(tmp_path)) == 3
    default = Snapshotter(tmp_path / "d")
    for i in range(1, 9):
        default.save_bytes(meta(i), b"x")
    assert len(default.names()) == 5


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Snapshotter(tmp_path, keep=0)
