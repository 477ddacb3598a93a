"""A minimal HTTP/2 client over a plain socket, for what grpcio cannot show or send: the
frames of a response (trailers-only or not), arbitrary headers (a grpc-timeout without a
client deadline, a wrong content-type), and a peer that never answers PINGs.

Headers are sent as HPACK literals without indexing or Huffman coding, which every
decoder accepts; responses are looked at frame by frame and not HPACK-decoded.
"""

from __future__ import annotations

import select
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def _hpack_int(n: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = bytearray([first | limit])
    n -= limit
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack(headers: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value
    return bytes(out)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def grpc_headers(port: int, path: bytes = b"/t.S/M", **extra: bytes) -> list[tuple[bytes, bytes]]:
    h = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"127.0.0.1:%d" % port),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    return h + [(k.replace("_", "-").encode(), v) for k, v in extra.items()]


class RawH2:
    def __init__(self, port: int, ack_pings: bool = True, split_preface: int = 0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.ack_pings = ack_pings
        self.pings = 0
        if split_preface:  # the preface in two TCP segments, 0.1 s apart
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(PREFACE[:split_preface])
            time.sleep(0.1)
            self.sock.sendall(PREFACE[split_preface:] + frame(SETTINGS, 0, 0))
        else:
            self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, stream: int, headers: list[tuple[bytes, bytes]], message: bytes | None
    ) -> None:
        block = hpack(headers)
        if message is None:
            self.send(frame(HEADERS, END_HEADERS, stream, block))
            return
        body = b"\x00" + struct.pack(">I", len(message)) + message
        self.send(
            frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, body)
        )

    def _recv_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_one(self) -> tuple[int, int, int, bytes] | None:
        """One frame, whatever it is; SETTINGS are ACKed, PINGs too unless ack_pings is
        False. None at EOF."""
        head = self._recv_exact(9)
        if head is None:
            return None
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = self._recv_exact(length)
        if payload is None:
            return None
        if kind == SETTINGS and not flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        if kind == PING and not flags & ACK:
            self.pings += 1
            if self.ack_pings:
                self.send(frame(PING, ACK, 0, payload))
        return kind, flags, stream, payload

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame that is not SETTINGS or PING: (kind, flags, stream, payload);
        None at EOF."""
        while True:
            f = self._read_one()
            if f is None or f[0] not in (SETTINGS, PING):
                return f

    def pump(self, seconds: float) -> None:
        """Reads frames (ACKing SETTINGS and PINGs) for `seconds`, dropping the rest."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(10)
        while (left := deadline - time.monotonic()) > 0:
            if (self._buf or select.select([self.sock], [], [], left)[0]) and (
                self._read_one() is None
            ):
                return

    def response(self, stream: int, timeout: float = 10) -> list[tuple[int, int, bytes]]:
        """The frames of one stream up to END_STREAM or RST_STREAM: (kind, flags, payload)."""
        self.sock.settimeout(timeout)
        out: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.read_frame()
            if f is None:
                break
            kind, flags, sid, payload = f
            if sid != stream or kind in (WINDOW_UPDATE,):
                continue
            out.append((kind, flags, payload))
            if kind == RST_STREAM or (kind in (HEADERS, DATA) and flags & END_STREAM):
                break
        return out
