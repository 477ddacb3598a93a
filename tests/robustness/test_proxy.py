"""The TCP proxy in front of an echo server: pass, delay, blackhole, drop, recovery, and the
same per sender (named from the first bytes, for petcd peers the handshake)."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from petcd.peer.codec import KIND_STREAM, Hello, encode_hello
from petcd.raft.types import MemberId
from tests.robustness.proxy import PETCD_PEER_SNIFF_BYTES, Mode, TcpProxy, petcd_peer_sender


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the proxy resets connections on purpose
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = TcpProxy("127.0.0.1", server.server_address[1]).start()
    try:
        yield p
    finally:
        p.close()
        server.shutdown()
        server.server_close()


def _connect(p: TcpProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", p.listen_port), timeout=5)
    s.settimeout(2)
    return s


def _echo(s: socket.socket, payload: bytes) -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_pass_and_delay(proxy: TcpProxy) -> None:
    with _connect(proxy) as s:
        assert _echo(s, b"hello") == b"hello"
        proxy.set_mode(Mode.PASS, delay_ms=150)
        t0 = time.monotonic()
        assert _echo(s, b"slow") == b"slow"
        assert time.monotonic() - t0 >= 0.3  # delayed each way
    assert proxy.connections == 1 and proxy.bytes_forwarded >= 2 * len(b"hellos" + b"low")


def test_blackhole_swallows_then_pass_resets_and_recovers(proxy: TcpProxy) -> None:
    with _connect(proxy) as s:
        assert _echo(s, b"a") == b"a"
        proxy.set_mode(Mode.BLACKHOLE)
        s.sendall(b"lost")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)
        with _connect(proxy) as during:  # accepted, but silent
            during.sendall(b"lost too")
            during.settimeout(0.3)
            with pytest.raises(TimeoutError):
                during.recv(10)
            proxy.set_mode(Mode.PASS)
            # Bytes were lost: the connections open during the blackhole are reset.
            s.settimeout(2)
            during.settimeout(2)
            assert _is_dead(s) and _is_dead(during)
    with _connect(proxy) as fresh:
        assert _echo(fresh, b"back") == b"back"


def _is_dead(s: socket.socket) -> bool:
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def test_drop_resets_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    s = _connect(proxy)
    assert _echo(s, b"x") == b"x"
    proxy.set_mode(Mode.DROP)
    with pytest.raises(OSError):
        for _ in range(3):  # the reset may surface on the send or on the next recv
            s.sendall(b"y")
            if not s.recv(10):
                raise ConnectionResetError("closed")
    s.close()
    # The reset may even come during the connect.
    with pytest.raises(OSError), _connect(proxy) as s2:
        s2.sendall(b"z")
        if not s2.recv(10):
            raise ConnectionResetError("closed")
    proxy.set_mode(Mode.PASS)
    with _connect(proxy) as s3:
        assert _echo(s3, b"again") == b"again"


def test_sender_modes_cut_one_sender_both_ways() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The first byte names the sender (petcd peers: the handshake, see petcd_peer_sender).
    p = TcpProxy("127.0.0.1", server.server_address[1], sniff=lambda b: b, sniff_bytes=1)
    p.start()
    try:
        with _connect(p) as a, _connect(p) as b:
            assert _echo(a, b"A1") == b"A1" and _echo(b, b"B1") == b"B1"
            p.set_sender_mode(b"A", Mode.BLACKHOLE)
            a.sendall(b"2")
            a.settimeout(0.5)
            with pytest.raises(TimeoutError):
                a.recv(10)
            assert _echo(b, b"2") == b"2"  # B is not cut
            with _connect(p) as a2:  # a new connection of A: accepted, silent
                a2.sendall(b"A3")
                a2.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    a2.recv(10)
                p.set_sender_mode(b"A", Mode.DROP)
                a2.settimeout(2)
                assert _is_dead(a2)
            a.settimeout(2)
            assert _is_dead(a)
            with pytest.raises(OSError), _connect(p) as a3:
                a3.sendall(b"A4")
                if not a3.recv(10):
                    raise ConnectionResetError("closed")
            assert _echo(b, b"3") == b"3"
            p.clear_sender_modes()
            with _connect(p) as a4:
                assert _echo(a4, b"A5") == b"A5"
    finally:
        p.close()
        server.shutdown()
        server.server_close()


def test_petcd_peer_sender_reads_the_handshake() -> None:
    hello = encode_hello(Hello(KIND_STREAM, 7, MemberId(0xABC), MemberId(0xDEF)))
    assert len(hello) == PETCD_PEER_SNIFF_BYTES
    assert petcd_peer_sender(hello) == 0xABC
    assert petcd_peer_sender(b"GET / HTTP/1.1\r\n" + bytes(20)) is None
