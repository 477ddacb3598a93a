"""``_write``: a write on a connection that is already gone fails like a lost connection.

Issue 6: uvloop raises ``RuntimeError`` when writing to a transport the peer already reset;
that escaped the dial loop's ``OSError`` handlers and ended it for good.
"""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from petcd.peer.transport import _write


class FakeWriter:
    def __init__(self, *, closing: bool = False, write_error: Exception | None = None) -> None:
        self.closing = closing
        self.write_error = write_error
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.write_error is not None:
            raise self.write_error
        self.written.append(data)


def _w(f: FakeWriter) -> asyncio.StreamWriter:
    return cast(asyncio.StreamWriter, f)


def test_write_on_an_open_connection_writes() -> None:
    f = FakeWriter()
    _write(_w(f), b"hello")
    assert f.written == [b"hello"]


def test_write_on_a_closing_connection_is_a_reset() -> None:
    f = FakeWriter(closing=True)
    with pytest.raises(ConnectionResetError):
        _write(_w(f), b"hello")
    assert f.written == []


def test_uvloop_closed_handle_error_is_a_reset() -> None:
    err = RuntimeError("unable to perform operation on <TCPTransport closed=True>; closed")
    with pytest.raises(ConnectionResetError, match="closed=True"):
        _write(_w(FakeWriter(write_error=err)), b"hello")


def test_other_write_errors_pass_through() -> None:
    with pytest.raises(ValueError):
        _write(_w(FakeWriter(write_error=ValueError("bad data"))), b"hello")
