"""petcd.snap.bbolt on small files laid out page by page here (bbolt's format, as documented
in the module): the shapes a real etcd file has (inline and paged buckets, branch pages,
overflow pages, a nested bucket) and the damage a reader must refuse. Files written by the real
etcd are read in tests/compat/test_etcd_snapshot_import_compat.py."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from petcd.snap.bbolt import (
    BRANCH_PAGE,
    BUCKET_LEAF,
    FREELIST_PAGE,
    LEAF_PAGE,
    MAGIC,
    META_PAGE,
    BoltFile,
    fnv64a,
    sniff,
)
from petcd.snap.errors import BoltError

PAGE = 4096


def page_header(pgid: int, flags: int, count: int, overflow: int = 0) -> bytes:
    return struct.pack("<QHHI", pgid, flags, count, overflow)


def meta_page(pgid: int, root: int, page_count: int, txid: int, *, magic: int = MAGIC) -> bytes:
    body = struct.pack("<IIIIQQQQQ", magic, 2, PAGE, 0, root, 0, 2, page_count, txid)
    body += struct.pack("<Q", fnv64a(body))
    return (page_header(pgid, META_PAGE, 0) + body).ljust(PAGE, b"\0")


def leaf(pgid: int, elems: list[tuple[bytes, bytes, int]], overflow: int = 0) -> bytes:
    """A leaf page: element headers first, then each key and value (pos counts from the
    element's own header)."""
    n = len(elems)
    heads = b""
    data = b""
    for i, (k, v, flags) in enumerate(elems):
        pos = (n - i) * 16 + len(data)
        heads += struct.pack("<IIII", flags, pos, len(k), len(v))
        data += k + v
    return page_header(pgid, LEAF_PAGE, n, overflow) + heads + data


def branch(pgid: int, children: list[tuple[bytes, int]]) -> bytes:
    n = len(children)
    heads = b""
    data = b""
    for i, (k, child) in enumerate(children):
        heads += struct.pack("<IIQ", (n - i) * 16 + len(data), len(k), child)
        data += k
    return page_header(pgid, BRANCH_PAGE, n) + heads + data


def inline_bucket(elems: list[tuple[bytes, bytes, int]]) -> bytes:
    return struct.pack("<QQ", 0, 0) + leaf(0, elems)


def paged_bucket(root: int) -> bytes:
    return struct.pack("<QQ", root, 7)


BIG = b"o" * (PAGE + 1000)  # needs an overflow page


def pages() -> dict[int, bytes]:
    """A file: root leaf (page 3) with buckets ``a`` (inline) and ``tree`` (branch page 4 over
    leaves 5 and 6; leaf 6 has one overflow page, 7); ``tree`` holds a nested inline bucket."""
    sub = inline_bucket([(b"x", b"1", 0)])
    return {
        0: meta_page(0, 3, 8, txid=4),
        1: meta_page(1, 3, 8, txid=3),
        2: page_header(2, FREELIST_PAGE, 0),
        3: leaf(
            3,
            [
                (b"a", inline_bucket([(b"k1", b"v1", 0), (b"k2", b"", 0)]), BUCKET_LEAF),
                (b"tree", paged_bucket(4), BUCKET_LEAF),
            ],
        ),
        4: branch(4, [(b"b", 5), (b"m", 6)]),
        5: leaf(5, [(b"b", b"vb", 0), (b"c", b"vc", 0)]),
        6: leaf(6, [(b"m", BIG, 0), (b"nested", sub, BUCKET_LEAF), (b"z", b"vz", 0)], overflow=1),
    }


def write(path: Path, ps: dict[int, bytes], trailer: bytes = b"") -> str:
    out = bytearray(PAGE * 8)
    for pgid, raw in ps.items():
        out[pgid * PAGE : pgid * PAGE + len(raw)] = raw
    path.write_bytes(bytes(out) + trailer)
    return str(path)


def test_buckets_items_overflow_and_nested_buckets(tmp_path: Path) -> None:
    path = write(tmp_path / "db", pages(), trailer=b"s" * 32)
    assert sniff(path)
    with BoltFile(path) as db:
        assert db.meta.txid == 4 and db.meta.size_bytes == 8 * PAGE
        assert db.buckets() == [b"a", b"tree"]
        assert list(db.items(b"a")) == [(b"k1", b"v1"), (b"k2", b"")]
        assert list(db.items(b"tree")) == [
            (b"b", b"vb"),
            (b"c", b"vc"),
            (b"m", BIG),
            (b"nested", None),
            (b"z", b"vz"),
        ]
        assert db.buckets(b"tree") == [b"nested"]
        assert list(db.items(b"tree", b"nested")) == [(b"x", b"1")]
        assert db.check() == 8
        with pytest.raises(KeyError):
            list(db.items(b"missing"))


def test_the_valid_meta_with_the_higher_txid_is_used(tmp_path: Path) -> None:
    ps = pages()
    ps[1] = meta_page(1, 3, 8, txid=9)
    with BoltFile(write(tmp_path / "db", ps)) as db:
        assert db.meta.txid == 9
    bad = bytearray(ps[1])
    bad[40] ^= 1  # the root bucket's sequence: the checksum no longer matches
    ps[1] = bytes(bad)
    with BoltFile(write(tmp_path / "db", ps)) as db:
        assert db.meta.txid == 4
    ps[0] = meta_page(0, 3, 8, txid=4, magic=0x12345678)
    ps[1] = meta_page(1, 3, 8, txid=3)
    with BoltFile(write(tmp_path / "db", ps)) as db:  # page 1 found by trying page sizes
        assert db.meta.txid == 3


def test_a_file_without_a_valid_meta_page_is_refused(tmp_path: Path) -> None:
    ps = pages()
    ps[0] = meta_page(0, 3, 8, txid=4, magic=0x12345678)
    ps[1] = meta_page(1, 3, 8, txid=3, magic=0x12345678)
    path = write(tmp_path / "db", ps)
    assert not sniff(path)
    with pytest.raises(BoltError, match="not a bbolt database: page 0: invalid database"):
        BoltFile(path)
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    with pytest.raises(BoltError, match="file too small"):
        BoltFile(str(small))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({4: branch(4, [(b"b", 5), (b"m", 9)])}, "page 9 out of range"),
        ({5: leaf(6, [(b"b", b"vb", 0)])}, "page 5 names itself page 6"),
        ({4: branch(4, [(b"b", 6), (b"m", 5)])}, "keys out of order"),
        ({4: branch(4, [(b"b", 4)])}, "tree deeper than 64"),
        ({4: page_header(4, FREELIST_PAGE, 0)}, "unexpected page type 0x10"),
        ({6: leaf(6, [(b"m", BIG, 0)], overflow=5)}, "overflows past the pages in use"),
        ({0: meta_page(0, 3, 20, txid=4)}, "file is truncated"),
    ],
)
def test_damage_is_refused_with_what_is_wrong(
    tmp_path: Path, damage: dict[int, bytes], message: str
) -> None:
    ps = pages()
    ps.update(damage)
    path = write(tmp_path / "db", ps)
    with pytest.raises(BoltError, match=message), BoltFile(path) as db:
        db.check()


def test_a_leaf_element_past_its_page_is_refused(tmp_path: Path) -> None:
    ps = pages()
    raw = bytearray(ps[5])
    struct.pack_into("<I", raw, 16 + 12, PAGE * 3)  # the first element's value size
    ps[5] = bytes(raw)
    with BoltFile(write(tmp_path / "db", ps)) as db, pytest.raises(BoltError, match="runs past"):
        list(db.items(b"tree"))
