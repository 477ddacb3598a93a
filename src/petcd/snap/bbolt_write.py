"""A writer of fresh bbolt files: etcd's snapshot format, built in one pass from sorted buckets.

Theory of operation
-------------------
``petcd.utl.etcd_export`` turns a petcd snapshot into an etcd one. bbolt (the format is
described in ``petcd.snap.bbolt``, whose constants this module shares) is a copy-on-write
B+tree; a file that has never been modified needs none of that machinery: every page is
written once, in order, and nothing is ever free. The file this module writes::

    page 0, 1   meta pages (txid 0 and 1, the same tree): written last, over the space kept
    page 2      the freelist page: empty (every page below the high-water mark is in use)
    page 3 ...  each bucket's leaf pages in key order, then its branch levels bottom up,
                then the next bucket; the root bucket's page (one leaf element per bucket)
                is the last page

A leaf page takes elements while its size (16-byte header, 16 bytes per element, the keys and
values) stays within ``page_size * fill``; an element too big for that starts a page of its
own, which runs over as many following pages as it needs (``overflow``), as bbolt spills a
node with a large value. A level with more than one page gets a branch level above it, keyed
by each child's first key (what bbolt's ``Tx.Check`` expects), until one page is left: the
bucket's root. A bucket whose whole leaf fits within a quarter page is written *inline*
(``root == 0``, its leaf page inside the bucket's value), as bbolt stores small buckets.

Invariants: keys of a bucket strictly ascend (checked: ``ValueError``), pages are numbered in
file order with no gap, and the meta's high-water mark is the number of pages written, so the
file is exactly ``page_count * page_size`` bytes and ``Tx.Check`` finds every page reachable.
Only flat buckets of keys and values (what etcd keeps) are written; no nested buckets.

Memory: one page being filled plus one (first key, page id) pair per page of the level below
a branch level, so a bucket of millions of keys needs no more than a few MiB.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from typing import BinaryIO, NoReturn

from petcd.snap.bbolt import (
    _BRANCH,
    _BUCKET_HEADER,
    _ELEMENT,
    _META,
    _META_SUMMED,
    _PAGE_HEADER,
    BRANCH_PAGE,
    BUCKET_LEAF,
    FREELIST_PAGE,
    LEAF_PAGE,
    MAGIC,
    META_PAGE,
    VERSION,
    fnv64a,
)

PAGE_SIZE_DEFAULT = 4096  # the OS page size on the machines etcd runs on: bbolt's default
FILL_DEFAULT = 0.9  # etcd fills its key bucket to 90% (sequential writes); bbolt's max is 1.0
KEY_SIZE_MAX = 32768  # bbolt's MaxKeySize
VALUE_SIZE_MAX = (1 << 31) - 2  # bbolt's MaxValueSize
_COUNT_MAX = 0xFFFF  # a page's element count is a u16
_HEADER_SIZE = _PAGE_HEADER.size
_ELEMENT_SIZE = _ELEMENT.size
_FREELIST_PGID = 2
_FIRST_DATA_PGID = 3

Items = Iterable[tuple[bytes, bytes]]


def _leaf_body(sizes: list[int], data: list[bytes]) -> bytes:
    """A leaf page of flags-0 elements without its header: the elements, then each key and
    value. ``sizes`` holds (pos - the elements' size, ksize, vsize) of each element and is
    changed; ``data`` key, value, key, value, ..."""
    count = len(data) // 2
    elements_size = count * _ELEMENT_SIZE
    sizes[::3] = [pos + elements_size for pos in sizes[::3]]
    return b"".join((_elements_struct(count).pack(*sizes), *data))


@functools.lru_cache(maxsize=512)  # a 4 KiB page at 90% holds at most 216 elements
def _elements_struct(count: int) -> struct.Struct:
    """``count`` leaf elements of flags 0: ``_ELEMENT`` with the flags as zero padding."""
    return struct.Struct("<" + "4xIII" * count)


def _refuse(name: bytes, previous: bytes, k: bytes, v: bytes) -> NoReturn:
    if previous and k <= previous:
        raise ValueError(f"bucket {name!r}: keys out of order at {k!r}")
    if not k or len(k) > KEY_SIZE_MAX:
        raise ValueError(f"bucket {name!r}: key of {len(k)} bytes")
    assert len(v) > VALUE_SIZE_MAX
    raise ValueError(f"bucket {name!r}: value of {len(v)} bytes")


class BoltWriter:
    """Writes one bbolt file to ``f`` (a new, empty, seekable file opened for writing).

    Call :meth:`bucket` once per top-level bucket, in ascending name order, then
    :meth:`finish`. ``on_items`` (if given) is called with the number of keys of each bucket
    leaf page once it is written (and of an inline bucket's page)."""

    def __init__(
        self,
        f: BinaryIO,
        *,
        page_size: int = PAGE_SIZE_DEFAULT,
        fill: float = FILL_DEFAULT,
        on_items: Callable[[int], None] | None = None,
    ) -> None:
        assert page_size >= 1024 and page_size & (page_size - 1) == 0, page_size
        assert 0.1 <= fill <= 1.0, fill
        self._f = f
        self.page_size = page_size
        self._threshold = int(page_size * fill)
        self._on_items = on_items
        self._next_pgid = _FIRST_DATA_PGID
        self._root: list[tuple[bytes, bytes]] = []  # (bucket name, bucket value)
        self._finished = False
        # Meta pages and the freelist are written at the end; keep their room now.
        f.seek(0)
        f.write(bytes(_FIRST_DATA_PGID * page_size))

    @property
    def page_count(self) -> int:
        """Pages written so far (the meta's high-water mark once finished)."""
        return self._next_pgid

    # -- pages ------------------------------------------------------------------------------

    def _write_page(self, flags: int, count: int, body: bytes) -> int:
        """Write one page (and its overflow) at the end of the file; its page id."""
        pgid = self._next_pgid
        size = _HEADER_SIZE + len(body)
        pages = -(-size // self.page_size)
        header = _PAGE_HEADER.pack(pgid, flags, count, pages - 1)
        self._f.write(b"".join((header, body, bytes(pages * self.page_size - size))))
        self._next_pgid += pages
        return pgid

    @staticmethod
    def _bucket_leaf_body(elements: list[tuple[bytes, bytes, int]]) -> bytes:
        """Element headers (with their flags), then each key and value; ``pos`` counts from
        the element. For the root bucket's page."""
        n = len(elements)
        heads = bytearray()
        data = bytearray()
        for i, (k, v, flags) in enumerate(elements):
            pos = (n - i) * _ELEMENT_SIZE + len(data)
            heads += _ELEMENT.pack(flags, pos, len(k), len(v))
            data += k
            data += v
        return bytes(heads + data)

    @staticmethod
    def _branch_body(children: list[tuple[bytes, int]]) -> bytes:
        n = len(children)
        heads = bytearray()
        data = bytearray()
        for i, (k, child) in enumerate(children):
            pos = (n - i) * _BRANCH.size + len(data)
            heads += _BRANCH.pack(pos, len(k), child)
            data += k
        return bytes(heads + data)

    def _tree(self, items: Items, name: bytes) -> bytes:
        """Write the pages of one bucket; its value in the parent (header [+ inline page])."""
        # The hot loop of a conversion, one pass per key: the page being filled is two flat
        # lists of plain values that _leaf_body packs with one call, no object per element;
        # pos (from an element to its key) is known once the page's count is: it is kept
        # without the elements' size, which _leaf_body adds.
        sizes: list[int] = []  # pos - the elements' size, ksize, vsize; of each element
        data: list[bytes] = []  # key, value, key, value, ...
        pos = 0
        size = _HEADER_SIZE
        threshold = self._threshold
        leaves: list[tuple[bytes, int]] = []  # (first key, page id) of each leaf written
        previous = b""  # no key is empty: every first key compares greater
        for k, v in items:
            ksize = len(k)
            vsize = len(v)
            if k <= previous or ksize > KEY_SIZE_MAX or vsize > VALUE_SIZE_MAX:
                _refuse(name, previous, k, v)
            previous = k
            grow = _ELEMENT_SIZE + ksize + vsize
            if (size + grow > threshold or len(data) == 2 * _COUNT_MAX) and data:
                leaves.append((data[0], self._write_leaf(sizes, data)))
                sizes, data, pos, size = [], [], 0, _HEADER_SIZE
            sizes += (pos, ksize, vsize)
            data += (k, v)
            pos += ksize + vsize - _ELEMENT_SIZE
            size += grow
        count = len(data) // 2
        if not leaves and size <= self.page_size // 4:
            if self._on_items is not None:
                self._on_items(count)
            header = _PAGE_HEADER.pack(0, LEAF_PAGE, count, 0)
            return _BUCKET_HEADER.pack(0, 0) + header + _leaf_body(sizes, data)
        if data or not leaves:
            leaves.append((data[0] if data else b"", self._write_leaf(sizes, data)))
        level = leaves
        while len(level) > 1:
            level = self._branch_level(level)
        return _BUCKET_HEADER.pack(level[0][1], 0)

    def _write_leaf(self, sizes: list[int], data: list[bytes]) -> int:
        count = len(data) // 2
        pgid = self._write_page(LEAF_PAGE, count, _leaf_body(sizes, data))
        if self._on_items is not None:
            self._on_items(count)
        return pgid

    def _branch_level(self, children: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        parents: list[tuple[bytes, int]] = []
        group: list[tuple[bytes, int]] = []
        size = _HEADER_SIZE
        for k, child in children:
            grow = _BRANCH.size + len(k)
            if group and (size + grow > self._threshold or len(group) == _COUNT_MAX):
                parents.append(
                    (
                        group[0][0],
                        self._write_page(BRANCH_PAGE, len(group), self._branch_body(group)),
                    )
                )
                group, size = [], _HEADER_SIZE
            group.append((k, child))
            size += grow
        parents.append(
            (group[0][0], self._write_page(BRANCH_PAGE, len(group), self._branch_body(group)))
        )
        return parents

    # -- buckets ----------------------------------------------------------------------------

    def bucket(self, name: bytes, items: Items) -> None:
        """Write one top-level bucket: ``items`` are (key, value) in strictly ascending order."""
        assert not self._finished
        if self._root and name <= self._root[-1][0]:
            raise ValueError(f"bucket {name!r}: buckets out of order")
        if not name or len(name) > KEY_SIZE_MAX:
            raise ValueError(f"bucket name of {len(name)} bytes")
        self._root.append((name, self._tree(items, name)))

    def finish(self) -> int:
        """Write the root bucket, the freelist and both meta pages; the high-water mark."""
        assert not self._finished
        self._finished = True
        elements = [(name, value, BUCKET_LEAF) for name, value in self._root]
        root = self._write_page(LEAF_PAGE, len(elements), self._bucket_leaf_body(elements))
        page_count = self._next_pgid
        self._f.seek(_FREELIST_PGID * self.page_size)
        self._f.write(_PAGE_HEADER.pack(_FREELIST_PGID, FREELIST_PAGE, 0, 0))
        for txid in (0, 1):
            fields = (MAGIC, VERSION, self.page_size, 0, root, 0, _FREELIST_PGID, page_count, txid)
            summed = struct.pack(_META.format[: len(_META.format) - 1], *fields)
            assert len(summed) == _META_SUMMED
            self._f.seek(txid * self.page_size)
            self._f.write(_PAGE_HEADER.pack(txid, META_PAGE, 0, 0))
            self._f.write(summed + struct.pack("<Q", fnv64a(summed)))
        self._f.seek(page_count * self.page_size)
        self._f.truncate()
        return page_count


def write_bolt(
    f: BinaryIO,
    buckets: Iterable[tuple[bytes, Items]],
    *,
    page_size: int = PAGE_SIZE_DEFAULT,
    fill: float = FILL_DEFAULT,
) -> int:
    """Write a whole bbolt file of ``buckets`` (ascending names, each with ascending keys);
    the number of pages."""
    w = BoltWriter(f, page_size=page_size, fill=fill)
    for name, items in buckets:
        w.bucket(name, items)
    return w.finish()
