"""CRC-32C (Castagnoli), the checksum etcd's HashKV uses.

Theory of operation
-------------------
A table-driven CRC over the reflected Castagnoli polynomial ``0x82F63B78`` with the usual
pre- and post-inversion, so that ``crc32c(b"123456789") == 0xE3069283`` (the standard check
value). ``update`` continues a running CRC, so a hash can be fed in pieces like Go's
``hash.Hash32``. Long inputs are processed 8 bytes at a time ("slicing-by-8": eight tables,
one 64-bit little-endian word per step); the tail byte by byte. Pure Python: a few MB/s, enough
for hash-kv checks, not a hot path.
"""

from __future__ import annotations

import sys

_POLY = 0x82F63B78
# The 8-byte words are read in native order: the fast path needs a little-endian machine.
_LITTLE = sys.byteorder == "little"


def _make_tables() -> tuple[tuple[int, ...], ...]:
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0.append(c)
    tables = [tuple(t0)]
    for _ in range(7):
        prev = tables[-1]
        tables.append(tuple((prev[i] >> 8) ^ t0[prev[i] & 0xFF] for i in range(256)))
    return tuple(tables)


_T = _make_tables()
_T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7 = _T


def update_bytewise(crc: int, data: bytes) -> int:
    """The reference definition, one byte per step."""
    t0 = _T0
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = t0[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def update(crc: int, data: bytes) -> int:
    """Continue the CRC ``crc`` (0 to start) over ``data``."""
    n = len(data)
    if n < 32 or not _LITTLE:
        return update_bytewise(crc, data)
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    c = crc ^ 0xFFFFFFFF
    q = n & ~7
    mv = memoryview(data)
    for w in mv[:q].cast("Q"):
        lo = (w & 0xFFFFFFFF) ^ c
        hi = w >> 32
        c = (
            t7[lo & 0xFF]
            ^ t6[(lo >> 8) & 0xFF]
            ^ t5[(lo >> 16) & 0xFF]
            ^ t4[lo >> 24]
            ^ t3[hi & 0xFF]
            ^ t2[(hi >> 8) & 0xFF]
            ^ t1[(hi >> 16) & 0xFF]
            ^ t0[hi >> 24]
        )
    for b in mv[q:]:
        c = t0[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    return update(0, data)
