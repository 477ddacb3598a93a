"""``Frontend.drain()``: GOAWAY on every connection, with the calls in progress going on
(what a member's graceful stop sends, so that clients take new calls elsewhere)."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from .conftest import Served
from .rawh2 import DATA, END_STREAM, GOAWAY, HEADERS, WINDOW_UPDATE, RawH2, grpc_headers

Serve = Callable[..., Served]


def test_drain_sends_goaway_and_the_open_call_still_completes(serve: Serve) -> None:
    s = serve()  # answers nothing by itself
    c = RawH2(s.port)
    try:
        c.request(1, grpc_headers(s.port), b"in-flight")
        events = s.driver.wait_for(lambda evs: any(e[0] == 1 for e in evs))
        call_id = next(e[1] for e in events if e[0] == 1)
        s.fe.stop_accepting()
        s.fe.drain()
        f = c.read_frame()
        while f is not None and f[0] == WINDOW_UPDATE:
            f = c.read_frame()
        assert f is not None and f[0] == GOAWAY, f
        last_stream, code = struct.unpack(">II", f[3][:8])
        assert code == 0  # NO_ERROR
        assert last_stream >= 1  # stream 1 is kept
        s.fe.send([(call_id, b"done", 0, "")])
        frames = c.response(1)
        assert [(k, fl & END_STREAM) for k, fl, _ in frames] == [
            (HEADERS, 0),
            (DATA, 0),
            (HEADERS, END_STREAM),
        ]
        assert frames[1][2] == b"\x00\x00\x00\x00\x04done"
        # With its last stream done the server ends the connection.
        deadline = time.monotonic() + 10
        while (f := c.read_frame()) is not None:
            assert f[0] in (GOAWAY, WINDOW_UPDATE), f
            assert time.monotonic() < deadline
    finally:
        c.close()
    assert not any(e[0] == 3 and e[1] == call_id for e in s.driver.events)  # never cancelled
