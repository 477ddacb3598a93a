"""petcd.snap.bbolt_write: files written here are read back by petcd.snap.bbolt (the reader
has its own tests on hand-laid pages); the real bbolt reads them in
tests/compat/test_etcd_snapshot_export_compat.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from petcd.snap.bbolt import BRANCH_PAGE, LEAF_PAGE, BoltFile, fnv64a
from petcd.snap.bbolt_write import BoltWriter, write_bolt


def write(path: Path, buckets: list[tuple[bytes, list[tuple[bytes, bytes]]]], **kw: float) -> int:
    with open(path, "wb") as f:
        return write_bolt(f, buckets, **kw)  # type: ignore[arg-type]


def root_page_of(db: BoltFile, name: bytes) -> tuple[int, int]:
    header = db._find((name,))
    root = int.from_bytes(header[:8], "little")
    if root == 0:
        return 0, LEAF_PAGE
    _, flags, _ = db._page(root)
    return root, flags


def test_thousands_of_keys_and_large_values_read_back_in_order(tmp_path: Path) -> None:
    many = [(b"k%06d" % i, b"v" * (i % 50)) for i in range(20_000)]
    many[500] = (many[500][0], b"x" * 20_000)  # five pages: an overflowing leaf
    many[501] = (many[501][0], b"y" * 4_000)  # about a page
    path = tmp_path / "f.db"
    pages = write(path, [(b"empty", []), (b"many", many), (b"small", [(b"a", b"1"), (b"b", b"")])])
    assert path.stat().st_size == pages * 4096
    with BoltFile(str(path)) as db:
        assert db.meta.page_count == pages and db.meta.txid == 1 and db.meta.freelist_page == 2
        assert db.buckets() == [b"empty", b"many", b"small"]
        assert list(db.items(b"many")) == many
        assert list(db.items(b"small")) == [(b"a", b"1"), (b"b", b"")]
        assert list(db.items(b"empty")) == []
        assert db.check() == 20_002
        # small buckets are inline (bbolt's rule: a leaf within a quarter page), a big one
        # has branch pages above its leaves (three levels for 20,000 keys at 90% fill)
        assert root_page_of(db, b"small") == (0, LEAF_PAGE)
        assert root_page_of(db, b"empty") == (0, LEAF_PAGE)
        root, flags = root_page_of(db, b"many")
        assert flags == BRANCH_PAGE and root == pages - 2  # the root bucket's page is last
    raw = path.read_bytes()
    for pgid in (0, 1):  # both meta pages valid, txid 0 and 1
        meta = raw[pgid * 4096 + 16 : pgid * 4096 + 16 + 64]
        assert int.from_bytes(meta[56:64], "little") == fnv64a(meta[:56])
        assert int.from_bytes(meta[48:56], "little") == pgid


def test_every_page_below_the_high_water_mark_is_used_once(tmp_path: Path) -> None:
    items = [(b"%05d" % i, bytes(i % 9000)) for i in range(0, 3000, 3)]
    path = tmp_path / "f.db"
    pages = write(path, [(b"b", items)], fill=1.0)
    seen = {0, 1, 2}
    with BoltFile(str(path)) as db:
        stack = [db.meta.root_page]
        while stack:
            pgid = stack.pop()
            data, flags, count = db._page(pgid)
            n = len(data) // 4096
            assert not seen & set(range(pgid, pgid + n))
            seen |= set(range(pgid, pgid + n))
            for i in range(count):
                at = 16 + 16 * i
                if flags == BRANCH_PAGE:
                    stack.append(int.from_bytes(data[at + 8 : at + 16], "little"))
                elif int.from_bytes(data[at : at + 4], "little") & 1:  # a bucket
                    pos = int.from_bytes(data[at + 4 : at + 8], "little")
                    ksize = int.from_bytes(data[at + 8 : at + 12], "little")
                    root = int.from_bytes(data[at + pos + ksize : at + pos + ksize + 8], "little")
                    if root:
                        stack.append(root)
        assert list(db.items(b"b")) == items
    assert seen == set(range(pages))


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([(b"b", [(b"2", b""), (b"1", b"")])], "keys out of order at b'1'"),
        ([(b"b", [(b"1", b""), (b"1", b"")])], "keys out of order at b'1'"),
        ([(b"b", [(b"", b"v")])], "key of 0 bytes"),
        ([(b"b", [(b"k" * 32769, b"")])], "key of 32769 bytes"),
        ([(b"b", []), (b"a", [])], "buckets out of order"),
    ],
)
def test_unsorted_or_oversized_input_is_refused(
    buckets: list[tuple[bytes, list[tuple[bytes, bytes]]]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_bolt(io.BytesIO(), buckets)


def test_on_items_counts_every_key() -> None:
    seen = []
    w = BoltWriter(io.BytesIO(), on_items=seen.append)
    w.bucket(b"a", [(b"1", b""), (b"2", b"")])
    w.bucket(b"b", [(b"1", b"")])
    assert w.finish() == 4 and sum(seen) == 3  # meta 0, 1, freelist, the root bucket's page
