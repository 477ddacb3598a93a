"""A read-only reader of bbolt files: etcd's backend (``member/snap/db``) and snapshot files.

Theory of operation
-------------------
etcd keeps its state machine in bbolt (go.etcd.io/bbolt), a copy-on-write B+tree in one file
of fixed-size pages. petcd's backend is LMDB, so an etcd snapshot is converted: this module
reads one (``petcd.utl.etcd_import`` converts what it reads). It never writes; the export to
etcd builds fresh files with ``petcd.snap.bbolt_write``, which shares these constants.

The file, as bbolt writes it on a little-endian machine (amd64, arm64)::

    page 0, page 1   meta pages; the valid one with the higher txid is current
    page 2, ...      freelist, branch, leaf pages; a page may run over ``overflow``
                     following pages (a value bigger than a page)

    page header (16 bytes): id u64, flags u16 (0x01 branch, 0x02 leaf, 0x04 meta,
                            0x10 freelist), count u16, overflow u32

    meta (after the page header): magic u32 = 0xED0CDAED, version u32 = 2, page size u32,
        flags u32, root bucket (root page u64, sequence u64), freelist page u64,
        high-water page id u64 (pages in use), txid u64, checksum u64 = FNV-64a of the
        meta's bytes before it

    branch element (16 bytes): pos u32, ksize u32, child page u64
    leaf element   (16 bytes): flags u32 (0x01: the value is a bucket), pos u32,
                               ksize u32, vsize u32
        ``pos`` counts from the element itself; the key follows at ``pos``, the value after
        the key.

A bucket is a leaf value flagged 0x01: a 16-byte header (root page u64, sequence u64). A
bucket with root 0 is *inline*: its one leaf page follows the header inside the value. The
top-level buckets are the elements of the meta's root bucket. Keys of a bucket are in byte
order; iterating a bucket is an in-order walk of its tree.

What is checked (a damaged file must fail with a clear ``BoltError``, never loop or return
garbage): the meta pages (magic, version, checksum), that every page reached lies inside the
pages in use and inside the file, that a page names itself, has a branch or leaf type and
elements inside its bytes, that the tree is not deeper than ``_DEPTH_MAX`` (a cycle), and that
the keys of each bucket come out strictly ascending (a page reached twice). A file written on
a big-endian machine fails the magic check.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from petcd.snap.errors import BoltError

MAGIC = 0xED0CDAED
VERSION = 2

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF = 0x01

_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIIIQQQQQQ")  # ..., checksum last
_META_SUMMED = _META.size - 8
_ELEMENT = struct.Struct("<IIII")  # leaf: flags, pos, ksize, vsize
_BRANCH = struct.Struct("<IIQ")  # branch: pos, ksize, child page
_BUCKET_HEADER = struct.Struct("<QQ")  # root page, sequence
_HEADER_SIZE = _PAGE_HEADER.size
_ELEMENT_SIZE = _ELEMENT.size
_DEPTH_MAX = 64
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64 = (1 << 64) - 1


def fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bits (Go's ``hash/fnv.New64a``): the meta page checksum."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h


@dataclass(frozen=True, slots=True)
class Meta:
    """The current meta page."""

    page_size: int
    flags: int
    root_page: int
    root_sequence: int
    freelist_page: int
    page_count: int  # the high-water mark: pages 0..page_count-1 are in use
    txid: int

    @property
    def size_bytes(self) -> int:
        """The database's size as bbolt reports it (``Tx.Size``): pages in use x page size."""
        return self.page_count * self.page_size


def _parse_meta(buf: bytes | mmap.mmap, offset: int) -> tuple[Meta | None, str]:
    """The meta at a page starting at ``offset``, or None and why it is not valid."""
    start = offset + _HEADER_SIZE
    if len(buf) < start + _META.size:
        return None, "file too short for a meta page"
    fields = _META.unpack_from(buf, start)
    magic, version, page_size, flags, root, seq, freelist, pgid, txid, checksum = fields
    if magic != MAGIC:
        return None, "invalid database (no bbolt magic)"
    if version != VERSION:
        return None, f"version mismatch (version {version}, expected {VERSION})"
    if checksum != fnv64a(bytes(buf[start : start + _META_SUMMED])):
        return None, "checksum error in the meta page"
    if page_size < 512 or page_size & (page_size - 1):
        return None, f"invalid page size {page_size}"
    return Meta(page_size, flags, root, seq, freelist, pgid, txid), ""


def sniff(path: str) -> bool:
    """Whether ``path`` starts like a bbolt file (the magic in one of its meta pages)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_SIZE + 4)
            if len(head) == _HEADER_SIZE + 4 and _magic_at(head, 0):
                return True
            for i in range(15):  # page sizes 1 KiB .. 16 MiB, as bbolt tries them
                f.seek(1024 << i)
                head = f.read(_HEADER_SIZE + 4)
                if len(head) < _HEADER_SIZE + 4:
                    break
                if _magic_at(head, 0):
                    return True
    except OSError:
        return False
    return False


def _magic_at(buf: bytes, offset: int) -> bool:
    return int.from_bytes(buf[offset + _HEADER_SIZE : offset + _HEADER_SIZE + 4], "little") == MAGIC


class BoltFile:
    """An open bbolt file, read through a read-only memory map. Use as a context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < 1024:
                raise BoltError(path, f"file too small ({size} bytes) to be a bbolt database")
            # Pages are copied out of the map as bytes (a page with its overflow at a time): no
            # view into the map outlives a call, so close() can always unmap it.
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            self.meta = self._read_meta()
        except BaseException:
            self.close()
            raise
        if self.meta.size_bytes > len(self._map):
            size_bytes = self.meta.size_bytes
            self.close()
            raise BoltError(
                path,
                f"file is truncated: its meta page says {size_bytes} bytes in use, the file "
                f"has {size}",
            )

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()

    def __enter__(self) -> BoltFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_meta(self) -> Meta:
        first, why0 = _parse_meta(self._map, 0)
        page_size = first.page_size if first is not None else 0
        second: Meta | None = None
        why1 = "not found"
        if page_size:
            second, why1 = _parse_meta(self._map, page_size)
        else:
            # Page 0 is damaged: find page 1 by trying every page size (bbolt does the same).
            for i in range(15):
                offset = 1024 << i
                if offset >= len(self._map):
                    break
                second, why1 = _parse_meta(self._map, offset)
                if second is not None:
                    if second.page_size != offset:
                        second, why1 = None, "meta page 1 is not at its page size"
                    break
        metas = [m for m in (first, second) if m is not None]
        if not metas:
            raise BoltError(self.path, f"not a bbolt database: page 0: {why0}; page 1: {why1}")
        return max(metas, key=lambda m: m.txid)

    # -- pages -------------------------------------------------------------------------------

    def _page(self, pgid: int) -> tuple[bytes, int, int]:
        """The bytes of page ``pgid`` (with its overflow pages), its flags and count."""
        meta = self.meta
        if pgid < 2 or pgid >= meta.page_count:
            raise BoltError(
                self.path, f"page {pgid} out of range (pages in use: {meta.page_count})"
            )
        start = pgid * meta.page_size
        pid, flags, count, overflow = _PAGE_HEADER.unpack_from(self._map, start)
        if pid != pgid:
            raise BoltError(self.path, f"page {pgid} names itself page {pid}")
        if pgid + overflow >= meta.page_count:
            raise BoltError(
                self.path, f"page {pgid} overflows past the pages in use ({overflow} more)"
            )
        end = start + (1 + overflow) * meta.page_size
        return self._map[start:end], flags, count

    def _walk(
        self, page: bytes | memoryview, flags: int, count: int, depth: int, where: str
    ) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, element flags) of every leaf element under ``page``, in order."""
        if depth > _DEPTH_MAX:
            raise BoltError(self.path, f"{where}: tree deeper than {_DEPTH_MAX} (a cycle?)")
        size = len(page)
        if _HEADER_SIZE + count * _ELEMENT_SIZE > size:
            raise BoltError(self.path, f"{where}: {count} elements do not fit the page")
        if flags == LEAF_PAGE:
            for i in range(count):
                at = _HEADER_SIZE + i * _ELEMENT_SIZE
                eflags, pos, ksize, vsize = _ELEMENT.unpack_from(page, at)
                k = at + pos
                v = k + ksize
                if v + vsize > size:
                    raise BoltError(self.path, f"{where}: leaf element {i} runs past its page")
                yield bytes(page[k:v]), bytes(page[v : v + vsize]), eflags
        elif flags == BRANCH_PAGE:
            for i in range(count):
                at = _HEADER_SIZE + i * _ELEMENT_SIZE
                _, _, child = _BRANCH.unpack_from(page, at)
                cpage, cflags, ccount = self._page(child)
                yield from self._walk(cpage, cflags, ccount, depth + 1, f"page {child}")
        else:
            raise BoltError(self.path, f"{where}: unexpected page type 0x{flags:02x}")

    def _bucket_items(self, header: bytes, name: str) -> Iterator[tuple[bytes, bytes, int]]:
        if len(header) < _BUCKET_HEADER.size:
            raise BoltError(self.path, f"bucket {name}: value too short for a bucket header")
        root, _ = _BUCKET_HEADER.unpack_from(header)
        if root == 0:  # inline: the page follows the header inside the value
            inline = memoryview(header)[_BUCKET_HEADER.size :]
            if len(inline) < _HEADER_SIZE:
                raise BoltError(self.path, f"bucket {name}: inline page too short")
            _, flags, count, _ = _PAGE_HEADER.unpack_from(inline)
            walk = self._walk(inline, flags, count, 0, f"bucket {name} (inline)")
        else:
            page, flags, count = self._page(root)
            walk = self._walk(page, flags, count, 0, f"bucket {name} (page {root})")
        previous: bytes | None = None
        for k, v, f in walk:
            if previous is not None and k <= previous:
                raise BoltError(self.path, f"bucket {name}: keys out of order at {k!r}")
            previous = k
            yield k, v, f

    # -- buckets -----------------------------------------------------------------------------

    def _root_header(self) -> bytes:
        return _BUCKET_HEADER.pack(self.meta.root_page, self.meta.root_sequence)

    def _find(self, path: tuple[bytes, ...]) -> bytes:
        """The bucket header (and inline page) of the bucket at ``path`` (() = the root)."""
        header = self._root_header()
        for depth, name in enumerate(path):
            for k, v, f in self._bucket_items(header, _name(path[:depth])):
                if k == name:
                    if not f & BUCKET_LEAF:
                        raise BoltError(self.path, f"{_name(path[: depth + 1])} is not a bucket")
                    header = v
                    break
                if k > name:
                    raise KeyError(_name(path[: depth + 1]))
            else:
                raise KeyError(_name(path[: depth + 1]))
        return header

    def buckets(self, *path: bytes) -> list[bytes]:
        """The names of the buckets in the bucket at ``path`` (none: the top-level ones)."""
        header = self._find(path)
        return [k for k, _, f in self._bucket_items(header, _name(path)) if f & BUCKET_LEAF]

    def items(self, *path: bytes) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) of the bucket at ``path`` in key order; a nested bucket's value is
        None (as bbolt's ``ForEach``). KeyError if there is no such bucket."""
        header = self._find(path)
        for k, v, f in self._bucket_items(header, _name(path)):
            yield k, (None if f & BUCKET_LEAF else v)

    def check(self) -> int:
        """Walk every bucket, nested ones too; the number of keys. BoltError if damaged."""
        total = 0
        stack: list[tuple[bytes, ...]] = [()]
        while stack:
            path = stack.pop()
            for k, v in self.items(*path):
                total += 1 if path else 0
                if v is None:
                    stack.append((*path, k))
        return total


def _name(path: tuple[bytes, ...]) -> str:
    return "/".join(p.decode(errors="backslashreplace") for p in path) or "(root)"
