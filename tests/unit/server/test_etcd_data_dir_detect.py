"""How petcd tells an etcd data dir from its own at start (0013)."""

from __future__ import annotations

import struct
from pathlib import Path

from petcd.server.main import _is_etcd_backend
from petcd.snap import bbolt

BOLT_MAGIC = struct.pack("<I", 0xED0CDAED)
LMDB_MAGIC = struct.pack("<I", 0xBEEFC0DE)


def page(body: bytes) -> bytes:
    return (bytes(16) + body).ljust(4096, b"\0")


def test_an_lmdb_file_with_bboltlike_bytes_on_a_page_is_petcds(tmp_path: Path) -> None:
    # An LMDB file whose page at 4 KiB (a value's overflow page) starts like a bbolt meta page.
    path = tmp_path / "db"
    path.write_bytes(page(LMDB_MAGIC) + page(BOLT_MAGIC + struct.pack("<I", 2)) + page(b""))
    assert bbolt.sniff(str(path))  # the snapshot sniff, which tries every page size, says bbolt
    assert not _is_etcd_backend(str(path))


def test_a_bbolt_file_is_etcds_and_a_missing_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(page(BOLT_MAGIC + struct.pack("<I", 2)) * 3)
    assert _is_etcd_backend(str(path))
    assert not _is_etcd_backend(str(tmp_path / "missing"))
