"""CRC-32C: the standard check value and the fast path against the byte-wise definition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from petcd.mvcc.crc32c import crc32c, update, update_bytewise


def test_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(b"\x00" * 32) == 0x8A9136AA  # RFC 3720 B.4 test vector


@given(a=st.binary(max_size=200), b=st.binary(max_size=200))
def test_fast_path_equals_bytewise_and_pieces_chain(a: bytes, b: bytes) -> None:
    assert update(0, a) == update_bytewise(0, a)
    assert update(update(0, a), b) == crc32c(a + b)
