"""The native front end's HTTP/2 frames, seen with a raw client (tests/unit/native/rawh2.py)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from .conftest import Served, echo, raw_unary
from .rawh2 import DATA, END_STREAM, HEADERS, RawH2, frame, grpc_headers

Serve = Callable[..., Served]


def test_error_is_one_trailers_only_headers_frame(serve: Serve) -> None:
    s = serve(lambda ev: [(ev[1], None, 5, "not here")] if ev[0] == 2 else [])
    c = RawH2(s.port)
    try:
        c.request(1, grpc_headers(s.port), b"x")
        frames = c.response(1)
    finally:
        c.close()
    assert [(k, f & END_STREAM) for k, f, _ in frames] == [(HEADERS, END_STREAM)]


def test_ok_response_is_headers_data_trailers(serve: Serve) -> None:
    s = serve(echo)
    c = RawH2(s.port)
    try:
        c.request(1, grpc_headers(s.port), b"abc")
        frames = c.response(1)
    finally:
        c.close()
    assert [(k, f & END_STREAM) for k, f, _ in frames] == [(HEADERS, 0), (DATA, 0), (HEADERS, 1)]
    assert frames[1][2] == b"\x00\x00\x00\x00\x03abc"


def test_not_grpc_content_type_is_415_without_new(serve: Serve) -> None:
    s = serve(echo)
    c = RawH2(s.port)
    try:
        headers = [
            (k, b"text/plain" if k == b"content-type" else v) for k, v in grpc_headers(s.port)
        ]
        c.request(1, headers, b"x")
        frames = c.response(1)
        c.request(3, grpc_headers(s.port), b"after")  # the connection goes on
        assert [k for k, _, _ in c.response(3)] == [HEADERS, DATA, HEADERS]
    finally:
        c.close()
    assert [(k, f & END_STREAM) for k, f, _ in frames] == [(HEADERS, END_STREAM)]
    # :status 415: 0x48 = literal with indexing, name :status (static index 8); 0x83 =
    # Huffman-coded, 3 bytes; "h-\xff" = "415" in HPACK's Huffman code (011010 00001 011011 +
    # padding).
    assert frames[0][2] == b"H\x83h-\xff"
    assert [e[2] for e in s.driver.new_calls()] == ["/t.S/M"]
    assert len(s.driver.new_calls()) == 1


def test_server_side_deadline_without_client_deadline(serve: Serve) -> None:
    s = serve()  # never answers
    c = RawH2(s.port)
    try:
        t0 = time.monotonic()
        c.request(1, grpc_headers(s.port, grpc_timeout=b"300m"), b"x")
        frames = c.response(1, timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        c.close()
    assert [(k, f & END_STREAM) for k, f, _ in frames] == [(HEADERS, END_STREAM)]
    assert 0.25 < elapsed < 5
    s.driver.wait_for(lambda evs: any(e[0] == 3 for e in evs))
    (new,) = s.driver.new_calls()
    assert new[4] is not None and abs(new[4] - 0.3) < 1e-9
    s.driver.wait_for(lambda evs: (3, new[1]) in evs)


def _compressed_call(s: Served, encoding: bytes, body: bytes) -> list[tuple[int, int, bytes]]:
    c = RawH2(s.port)
    try:
        c.request(1, grpc_headers(s.port, grpc_encoding=encoding), None)
        prefix = b"\x01" + len(body).to_bytes(4, "big")
        c.send(frame(DATA, END_STREAM, 1, prefix + body))
        return c.response(1)
    finally:
        c.close()


def _refused(s: Served, frames: list[tuple[int, int, bytes]]) -> None:
    assert [(k, f & END_STREAM) for k, f, _ in frames] == [(HEADERS, END_STREAM)]
    s.driver.wait_for(lambda evs: any(e[0] == 3 for e in evs))
    (new,) = s.driver.new_calls()
    assert (3, new[1]) in s.driver.events
    assert not any(e[0] == 1 for e in s.driver.of(new[1]))


def test_gzip_compressed_message_arrives_decompressed(serve: Serve) -> None:
    s = serve(echo)
    frames = _compressed_call(s, b"gzip", gzip.compress(b"hello " * 100))
    # echoed back, uncompressed (flag 0)
    assert frames[1][2] == b"\x00" + (600).to_bytes(4, "big") + b"hello " * 100


def test_gzip_with_grpcio_client_compression(serve: Serve) -> None:
    s = serve(echo)
    with s.channel() as ch:
        call = raw_unary(ch)
        assert call(b"x" * 5000, timeout=10, compression=grpc.Compression.Gzip) == b"x" * 5000


def test_compressed_message_with_an_unknown_encoding_is_refused(serve: Serve) -> None:
    s = serve(echo)
    _refused(s, _compressed_call(s, b"snappy", b"zz"))


def test_corrupt_gzip_is_refused(serve: Serve) -> None:
    s = serve(echo)
    _refused(s, _compressed_call(s, b"gzip", b"zz"))


def test_gzip_bomb_over_max_recv_bytes_is_refused(serve: Serve) -> None:
    s = serve(echo, max_recv_bytes=4096)
    _refused(s, _compressed_call(s, b"gzip", gzip.compress(b"\0" * 1_000_000)))


def test_keepalive_closes_a_peer_that_does_not_answer_pings(serve: Serve) -> None:
    s = serve(echo, keepalive_interval_ms=200, keepalive_timeout_ms=300)
    dead = RawH2(s.port, ack_pings=False)
    try:
        t0 = time.monotonic()
        dead.sock.settimeout(10)
        while dead.read_frame() is not None:
            pass
        assert dead.pings >= 1
        assert time.monotonic() - t0 < 5
    finally:
        dead.close()
    # A real client answers the PINGs and keeps its connection.
    with s.channel() as ch:
        assert raw_unary(ch)(b"1", timeout=10) == b"1"
        time.sleep(1.0)
        assert raw_unary(ch)(b"2", timeout=10) == b"2"
    live = RawH2(s.port)
    try:
        live.request(1, grpc_headers(s.port), b"x")
        assert [k for k, _, _ in live.response(1)] == [HEADERS, DATA, HEADERS]
        live.pump(1.0)  # reads (and ACKs the PINGs) for a second
        live.request(3, grpc_headers(s.port), b"y")
        assert [k for k, _, _ in live.response(3)] == [HEADERS, DATA, HEADERS]
        assert live.pings >= 2
    finally:
        live.close()


def test_authority_with_a_scheme_is_accepted(serve: Serve) -> None:
    """etcdctl 3.4's per-endpoint clients send ":authority: http://host:port", which the h2
    crate alone would reset (PROTOCOL_ERROR) and grpc-go servers accept."""
    s = serve(echo)
    c = RawH2(s.port)
    try:
        headers = [
            (k, b"http://127.0.0.1:%d" % s.port if k == b":authority" else v)
            for k, v in grpc_headers(s.port)
        ]
        c.request(1, headers, b"x")
        assert [k for k, _, _ in c.response(1)] == [HEADERS, DATA, HEADERS]
    finally:
        c.close()


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="needs etcdctl (make etcd)")
def test_etcdctl_endpoint_health_with_a_url_endpoint(serve: Serve) -> None:
    # Any request is answered with an empty message (health reads a key: an empty Range).
    s = serve(lambda ev: [(ev[1], b"", 0, "")] if ev[0] == 2 else [])
    out = subprocess.run(
        ["etcdctl", f"--endpoints=http://127.0.0.1:{s.port}", "endpoint", "health"],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert f"http://127.0.0.1:{s.port} is healthy" in out.stdout + out.stderr
    assert "/etcdserverpb.KV/Range" in [e[2] for e in s.driver.new_calls()]


def test_small_messages_of_one_send_share_data_frames(serve: Serve) -> None:
    """A watch fan-out sends one ~300-byte message per watcher; h2 writes every DATA frame of
    256 bytes or more with a socket write of its own, so the front end joins the whole
    messages queued for a stream into frames of up to 16 KiB (bytes and order unchanged)."""
    messages = [bytes([i]) * 300 for i in range(100)]

    def burst(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if ev[0] != 2:
            return []
        return [*((ev[1], m) for m in messages), (ev[1], None, 0, "")]

    s = serve(burst)
    c = RawH2(s.port)
    try:
        c.request(1, grpc_headers(s.port), b"go")
        frames = c.response(1)
    finally:
        c.close()
    data = [p for k, _, p in frames if k == DATA]
    assert b"".join(data) == b"".join(b"\x00\x00\x00\x01\x2c" + m for m in messages)
    assert all(len(p) <= 16384 for p in data)
    assert len(data) <= 4, [len(p) for p in data]
