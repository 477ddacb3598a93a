"""``check perf`` / ``check datascale`` pieces that need no server: the keys they write, the
figures they judge by, the progress bar, and reading a member's resident memory."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator

import pytest

from petcd.ctl import check
from petcd.ctl.context import ClientConfig


def _uvarint(data: bytes) -> tuple[int, int]:
    n = shift = 0
    for i, b in enumerate(data):
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, i + 1
    raise AssertionError("unterminated varint")


def test_random_keys_are_a_varint_then_zero_bytes() -> None:
    keys = {check.random_key(b"/p/", 256) for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(b"/p/") and len(key) == 3 + 256
        zigzag, used = _uvarint(key[3:])
        assert zigzag % 2 == 0 and zigzag >> 1 < 2**63  # a non-negative int63, zig-zag
        assert key[3 + used :] == bytes(256 - used)


def test_stats_are_computed_like_etcds_report() -> None:
    stats = check.Stats(latencies=[0.1, 0.3, 0.2, 0.2], total_s=2.0)
    assert stats.rps == 2.0
    assert stats.slowest == 0.3
    assert stats.stddev == pytest.approx((0.02 / 4) ** 0.5)
    empty = check.Stats(total_s=1.0)
    assert (empty.rps, empty.slowest) == (0.0, 0.0)


def test_progress_bar_on_a_terminal_counts_and_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    out: list[str] = []
    size = os.terminal_size((60, 24))
    monkeypatch.setattr(check.shutil, "get_terminal_size", lambda fallback: size)
    bar = check.ProgressBar(out.append, 60, terminal=True)
    bar.set(0, force=True)
    bar.set(30, force=True)
    bar.set(99, force=True)  # clamped to the total
    bar.finish()
    assert out[0].startswith("\r 0 / 60 B ") and out[0].endswith("!   0.00%")
    assert "\r 30 / 60 Boo" in out[1] and "om " in out[1] and out[1].endswith("!  50.00%")
    assert out[2].startswith("\r 60 / 60 Boo") and out[2].endswith("om! 100.00%")
    assert out[3].startswith("\r 60 / 60 Boo") and out[3].endswith("om! 100.00% 0s\n")
    assert all(len(line.strip("\r\n")) <= 60 for line in out)


def test_progress_bar_elsewhere_has_no_bar() -> None:
    # etcdctl's (pb's) form when it cannot tell the output's width.
    out: list[str] = []
    bar = check.ProgressBar(out.append, 10000, terminal=False)
    bar.set(0, force=True)
    bar.set(1873)  # within 0.2 s of the last: not drawn
    bar.set(1873, force=True)
    bar.set(10000, force=True)
    bar.finish()
    assert out == [
        "\r 0 / 10000    0.00%",
        "\r 1873 / 10000   18.73%",
        "\r 10000 / 10000  100.00%",
        "\r 10000 / 10000  100.00% 0s\n",
    ]


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[_Metrics]]]:
    handler = type("Handler", (_Metrics,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


CONFIG = ClientConfig(("x",), 2.0, 5.0, 2.0, 6.0, True, None, "", "")


def test_resident_memory_is_read_from_metrics(metrics_server: tuple[str, type[_Metrics]]) -> None:
    endpoint, handler = metrics_server
    handler.body = (
        b"# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        b"# TYPE process_resident_memory_bytes gauge\n"
        b"process_resident_memory_bytes 1.2345678e+07\n"
    )
    assert check.resident_memory_bytes(endpoint, CONFIG) == (12345678.0, "")
    assert check.resident_memory_bytes("http://" + endpoint, CONFIG) == (12345678.0, "")
    handler.body = b"go_goroutines 7\n"
    assert check.resident_memory_bytes(endpoint, CONFIG) == (
        0.0,
        "could not find: process_resident_memory_bytes",
    )


def test_resident_memory_reports_a_fetch_error() -> None:
    from tests.ports import free_port

    value, why = check.resident_memory_bytes(f"127.0.0.1:{free_port()}", CONFIG)
    assert value == 0.0 and why.startswith("fetch error: "), why
