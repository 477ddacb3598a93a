"""CRC-32C (Castagnoli), the checksum etcd's HashKV uses.

Theory of operation
-------------------
``update`` continues a running CRC (0 to start) over more bytes, like Go's ``hash.Hash32``, so
that HashKV can feed the key bucket in pieces. The work is done by ``google_crc32c`` (a C
implementation, hardware-accelerated where the CPU has SSE4.2): HashKV walks the whole key
bucket, hundreds of MB on a large store, which a pure-Python CRC does at a few MB/s.
``update_bytewise`` is the textbook definition (reflected polynomial ``0x82F63B78``, pre- and
post-inversion), kept as the reference the tests hold the fast path against.
"""

from __future__ import annotations

import google_crc32c

_POLY = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_T0 = _make_table()


def update_bytewise(crc: int, data: bytes) -> int:
    """The reference definition, one byte per step."""
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _T0[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def update(crc: int, data: bytes) -> int:
    """Continue the CRC ``crc`` (0 to start) over ``data``."""
    return int(google_crc32c.extend(crc, data))


def crc32c(data: bytes) -> int:
    return update(0, data)
