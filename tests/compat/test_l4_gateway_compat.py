"""``etcd gateway`` (etcd 3.4, /usr/bin/etcd) and ``petcd gateway`` side by side.

The same command lines to both: help texts and flag errors must match byte for byte (petcd's
program name aside), start-up checks must print
the same text on the same stream with the same exit code. Then both gateways are started in
front of the same little TCP servers: a connection with no endpoint reachable is closed at
once, and a client's half-close (shutdown of its writing side) ends the whole proxied
connection: the answer the server sends after reading the end of file never arrives, on both.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from tests.compat.servers import ETCD_BIN, PETCD_BIN
from tests.ports import free_port

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="real etcd not installed")

BINARIES = {"etcd": ETCD_BIN, "petcd": PETCD_BIN}
_LOG_LINE = re.compile(r"^\{.*\}$")  # etcd 3.4 and petcd (3.5's shape) log differently


def _run(binary: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    out = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    stderr = "\n".join(line for line in out.stderr.split("\n") if not _LOG_LINE.match(line))
    return out.returncode, out.stdout, stderr


def _as_etcd(text: str) -> str:
    return re.sub(r"\bpetcd\b", "etcd", text)


HELP_AND_FLAG_ERRORS = [
    ["gateway"],
    ["gateway", "--help"],
    ["gateway", "-h"],
    ["gateway", "help", "start"],
    ["gateway", "nonsense"],
    ["gateway", "--bogus"],
    ["gateway", "--insecure-discovery", "start"],  # cobra takes "start" as the flag's value
    ["gateway", "start", "--help"],
    ["gateway", "--listen-addr", "127.0.0.1:1", "start", "-h"],
    ["gateway", "start", "--bogus"],
    ["gateway", "start", "-x"],
    ["gateway", "start", "-hx"],
    ["gateway", "start", "---x"],
    ["gateway", "start", "--listen-addr"],
    ["gateway", "start", "--retry-delay=5 minutes"],
    ["gateway", "start", "--insecure-discovery=maybe"],
]

START_CHECKS = [
    ["gateway", "start", "--endpoints=127.0.0.1:2379,nope"],
    ["gateway", "start", "--endpoints=a", "--endpoints=b,c", "--listen-addr=x"],
    ["gateway", "start", "--listen-addr=nope"],
    ["gateway", "start", "--listen-addr=:23790"],
    ["gateway", "start", "--listen-addr=no-such-host.invalid:23790"],
    ["gateway", "start", "--endpoints=no-such-host.invalid:2379"],
    ["gateway", "start", "--endpoints="],
    [
        "gateway",
        "start",
        "--endpoints=http://localhost:2399,https://127.0.0.1:2400",
        "--listen-addr=127.0.0.1:2399",
    ],
]


@pytest.mark.parametrize("args", HELP_AND_FLAG_ERRORS + START_CHECKS, ids=" ".join)
def test_same_text_and_exit_code(args: list[str]) -> None:
    code, out, err = _run(ETCD_BIN, *args)
    p_code, p_out, p_err = _run(PETCD_BIN, *args)
    assert (p_code, _as_etcd(p_out), _as_etcd(p_err)) == (code, out, err)


def test_port_in_use() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        argv = ("gateway", "start", f"--listen-addr={addr}")
        results = {target: _run(binary, *argv) for target, binary in BINARIES.items()}
    in_use = f"listen tcp {addr}: bind: address already in use\n"
    assert results["petcd"] == results["etcd"] == (1, "", in_use)


class _AnswerAfterEof:
    """A TCP server that reads a connection to its end of file, then answers ``got N``."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.eofs = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                n = 0
                while data := conn.recv(4096):
                    n += len(data)
                self.eofs += 1
                with contextlib.suppress(OSError):
                    conn.sendall(f"got {n}".encode())


def _start_gateway(binary: str, endpoints: str) -> tuple[subprocess.Popen[bytes], int]:
    """The gateway's port once it logged that it is ready (a probe connection would be
    proxied, so none is made)."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read below, closed with the process
    proc = subprocess.Popen(
        [binary, "gateway", "start", f"--endpoints={endpoints}", f"--listen-addr=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        log.seek(0)
        if b"ready to proxy client requests" in log.read():
            log.close()
            return proc, port
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    log.seek(0)
    raise AssertionError(f"{binary} gateway did not start: {log.read()!r}")


@pytest.fixture
def gateway_pair() -> Iterator[dict[str, tuple[int, _AnswerAfterEof]]]:
    """For each binary: its gateway's port, in front of a dead endpoint then a live server."""
    started = []
    pair = {}
    try:
        for target, binary in BINARIES.items():
            server = _AnswerAfterEof()
            dead = f"127.0.0.1:{free_port()}"
            proc, port = _start_gateway(binary, f"{dead},127.0.0.1:{server.port}")
            started.append(proc)
            pair[target] = (port, server)
        yield pair
    finally:
        for proc in started:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def _half_close(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"hello")
        c.shutdown(socket.SHUT_WR)
        chunks = []
        while data := c.recv(4096):
            chunks.append(data)
        return b"".join(chunks)


def test_half_close_ends_the_connection(
    gateway_pair: dict[str, tuple[int, _AnswerAfterEof]],
) -> None:
    seen = {}
    for target, (port, server) in gateway_pair.items():
        # The first connection meets the dead endpoint first, then the live one.
        answers = [_half_close(port) for _ in range(3)]
        deadline = time.monotonic() + 10
        while server.eofs < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen[target] = (answers, server.eofs)
    assert seen["petcd"] == seen["etcd"] == ([b"", b"", b""], 3)


def test_no_endpoint_reachable_closes_at_once() -> None:
    for binary in BINARIES.values():
        proc, port = _start_gateway(binary, f"127.0.0.1:{free_port()}")
        try:
            for _ in range(2):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    assert c.recv(1) == b""
            assert proc.poll() is None
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
