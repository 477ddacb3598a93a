"""``petcd gateway start``, etcd's L4 gateway, with the real etcdctl (3.4) through it.

A three-member petcd cluster; the gateway on a free loopback port has a dead endpoint first,
then the two followers. etcdctl's put, get and watch go through the gateway; the dead
endpoint is deactivated (etcd's "deactivated endpoint" line) and every connection goes to a
member; one member killed by pid: new connections go to the other one. Also: an endpoint that
comes back is activated after --retry-delay; with no endpoint reachable a connection is
closed at once and the gateway carries on; a port in use and a malformed endpoint get etcd's
texts and exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.petcd_proc import ETCDCTL_BIN, PETCD_BIN, etcdctl, run_petcd
from tests.ports import free_port
from tests.robustness.cluster import Cluster

READY_TIMEOUT_S = 20.0


@dataclass
class Gateway:
    """One ``petcd gateway start`` process, its JSON log in a file; stopped by pid."""

    log_path: Path
    endpoints: list[str]
    retry_delay: str = "1m0s"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = self.port or free_port()
        argv = [
            PETCD_BIN,
            "gateway",
            f"--endpoints={','.join(self.endpoints)}",
            "start",
            f"--listen-addr={self.address}",
            f"--retry-delay={self.retry_delay}",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.wait_log("ready to proxy client requests")

    def records(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_log(self, msg: str, address: str | None = None) -> dict[str, object]:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for rec in self.records():
                if rec.get("msg") == msg and address in (None, rec.get("address")):
                    return rec
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
            time.sleep(0.05)
        raise AssertionError(f"no {msg!r} line for {address}:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    try:
        yield started
    finally:
        for g in started:
            g.stop()


def _gateway(
    started: list[Gateway], log_path: Path, *endpoints: str, delay: str = "1m0s"
) -> Gateway:
    g = Gateway(log_path, list(endpoints), retry_delay=delay)
    started.append(g)
    g.start()
    return g


def _dead_endpoint() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def _ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"etcdctl failed ({out.returncode}): {out.stderr[-2000:]}"
    return out.stdout


def test_etcdctl_through_the_gateway_fails_over(tmp_path: Path, gateways: list[Gateway]) -> None:
    cluster = Cluster(tmp_path / "cluster", size=3)
    try:
        cluster.start()
        dead = _dead_endpoint()
        # Behind the gateway: the two followers, so that killing one changes no leader (a
        # leader's death would fail the next put with "leader changed", gateway or not).
        leader = cluster.leader_index()
        assert leader is not None
        first, second = (i for i in range(3) if i != leader)
        m0, m1 = cluster.members[first].endpoint, cluster.members[second].endpoint
        gw = _gateway(gateways, tmp_path / "gateway.log", dead, m0, m1)
        ready = gw.wait_log("ready to proxy client requests")
        assert ready["endpoints"] == [dead, m0, m1]

        # From revision 2, the put below on the new cluster: whenever the watch is set up.
        watch = subprocess.Popen(
            [ETCDCTL_BIN, f"--endpoints={gw.address}", "watch", "k", "--rev=2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        try:
            assert _ok(etcdctl(gw.address, "put", "k", "v1")) == "OK\n"
            assert _ok(etcdctl(gw.address, "get", "k", "--print-value-only")) == "v1\n"
            assert watch.stdout is not None
            assert [watch.stdout.readline() for _ in range(3)] == ["PUT\n", "k\n", "v1\n"]
        finally:
            watch.kill()
            watch.wait(timeout=10)
        # The first connection met the dead endpoint first: deactivated, with etcd's fields.
        deactivated = gw.wait_log("deactivated endpoint", dead)
        assert deactivated["level"] == "warn"
        assert deactivated["interval"] == "1m0s"
        assert "connection refused" in str(deactivated["error"])

        cluster.kill(first)
        for i in range(4):  # round robin: m0's turn comes within two connections
            assert _ok(etcdctl(gw.address, "put", f"after{i}", "x")) == "OK\n"
        gw.wait_log("deactivated endpoint", m0)
        got = _ok(etcdctl(gw.address, "get", "after", "--prefix", "--keys-only"))
        assert got.split() == ["after0", "after1", "after2", "after3"]
        # Every connection after that goes to m1: its status answers through the gateway.
        status = json.loads(_ok(etcdctl(gw.address, "endpoint", "status", "-w", "json")))
        direct = json.loads(_ok(etcdctl(m1, "endpoint", "status", "-w", "json")))
        assert (
            status[0]["Status"]["header"]["member_id"]
            == (direct[0]["Status"]["header"]["member_id"])
        )
    finally:
        cluster.stop()


def test_endpoint_back_is_activated_after_the_retry_delay(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    dead = _dead_endpoint()
    gw = _gateway(gateways, tmp_path / "gateway.log", dead, delay="1s")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as c:
        # No endpoint answers: the client's connection is closed at once, without a byte.
        assert c.recv(1) == b""
    gw.wait_log("deactivated endpoint", dead)
    gw.wait_log("failed to activate endpoint (stay inactive for another interval)", dead)
    host, port = dead.rsplit(":", 1)
    with socket.create_server((host, int(port))) as back:
        assert gw.wait_log("activated", dead)["level"] == "info"
        back.settimeout(10)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as c:
            c.sendall(b"ping")
            while True:  # the gateway's own probe (dial, close) may be in the backlog first
                accepted, _ = back.accept()
                with accepted:
                    accepted.settimeout(10)
                    got = accepted.recv(4)
                    if got == b"":
                        continue
                    assert got == b"ping"
                    accepted.sendall(b"pong")
                    assert c.recv(4) == b"pong"
                    break
    assert gw.proc is not None and gw.proc.poll() is None


def test_bad_input_gets_etcds_errors(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = run_petcd("gateway", "start", f"--listen-addr=127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.endswith(f"listen tcp 127.0.0.1:{port}: bind: address already in use\n"), (
        out.stderr
    )
    out = run_petcd("gateway", "start", "--endpoints=127.0.0.1:2379,nope")
    assert (out.returncode, out.stdout) == (1, 'error parsing endpoint "nope"')


def test_help_names_the_subcommand() -> None:
    out = run_petcd("--help")
    assert out.returncode == 0
    assert "\n  petcd gateway\n    Run the stateless pass-through" in out.stdout
    out = run_petcd("gateway", "start", "--help")
    assert out.returncode == 0
    assert out.stdout.startswith("start the gateway\n\nUsage:\n  petcd gateway start [flags]\n")
