"""HTTP/1 on the front end's port: with ``http1=True`` a connection that does not begin
with HTTP/2's preface is handed to Python as an HTTP1 event ``(8, fd, peer, None)``, its bytes
unread; HTTP/2 on the same port goes on as before."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from petcd import _frontend

from .conftest import Served, echo, raw_unary
from .rawh2 import RawH2, grpc_headers

Serve = Callable[..., Served]

REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _http1_events(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [e for e in events if e[0] == _frontend.HTTP1]


def test_constant() -> None:
    assert _frontend.HTTP1 == 8


def test_http1_connection_is_handed_over_unread(serve: Serve) -> None:
    s = serve(echo, http1=True)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as client:
        client.sendall(REQUEST)
        [(_, fd, peer, certs)] = _http1_events(
            s.driver.wait_for(lambda evs: bool(_http1_events(evs)))
        )
        assert peer == f"ipv4:127.0.0.1:{client.getsockname()[1]}"
        assert certs is None  # (no TLS)
        with socket.socket(fileno=fd) as taken:
            taken.settimeout(10)
            got = b""
            while len(got) < len(REQUEST):
                got += taken.recv(4096)
            assert got == REQUEST  # nothing consumed by the sniffing
            taken.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 204")
    assert not s.driver.new_calls()


def test_post_and_put_are_http1_too(serve: Serve) -> None:
    # Both begin with "P", as the preface does: the second byte decides.
    s = serve(echo, http1=True)
    for line in (b"POST /v3/kv/put HTTP/1.1\r\n", b"PUT /x HTTP/1.1\r\n", b"P"):
        n = len(_http1_events(s.driver.wait_for(lambda evs: True)))
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as client:
            client.sendall(line)
            if line == b"P":  # a prefix of the preface: the front end waits for more
                time.sleep(0.3)
                assert len(_http1_events(s.driver.wait_for(lambda evs: True))) == n
                client.sendall(b"ATCH / HTTP/1.1\r\n")
            events = s.driver.wait_for(lambda evs, n=n: len(_http1_events(evs)) > n)
            socket.socket(fileno=_http1_events(events)[-1][1]).close()


def test_http2_still_served_next_to_http1(serve: Serve) -> None:
    s = serve(echo, http1=True)
    with s.channel() as ch:
        assert raw_unary(ch)(b"hello", timeout=10) == b"hello"
    # The preface split over two segments is still HTTP/2.
    c = RawH2(s.port, split_preface=7)
    try:
        c.request(1, grpc_headers(s.port), b"abc")
        frames = c.response(1)
    finally:
        c.close()
    assert frames[1][2] == b"\x00\x00\x00\x00\x03abc"
    assert not _http1_events(s.driver.events)


def test_without_http1_such_a_connection_is_closed(serve: Serve) -> None:
    s = serve(echo)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as client:
        client.sendall(REQUEST)
        data = b""
        while chunk := client.recv(4096):  # HTTP/2's handshake fails: GOAWAY, then EOF
            data += chunk
    assert b"HTTP/1.1" not in data
    assert not _http1_events(s.driver.events)
