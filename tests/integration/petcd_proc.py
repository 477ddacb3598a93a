"""Start and stop real ``petcd`` processes on loopback ports for the integration tests.

Theory of operation: ``PetcdProcess`` runs ``.venv/bin/petcd`` with every URL flag set on
127.0.0.1 and on ports found free just before (``free_port``), in a data directory the test
owns, logging to a file next to it. ``start()`` waits until Maintenance.Status reports a
leader. ``kill()`` (SIGKILL) and ``terminate()`` (SIGTERM, then wait) act on exactly the
process it started, by pid; ``stop()`` makes sure it is gone. Nothing here is a pytest
fixture: tests compose them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PETCD_BIN = str(REPO / ".venv" / "bin" / "petcd")
ETCDCTL_BIN = "/usr/bin/etcdctl"
START_TIMEOUT_S = 30.0


@dataclass
class PetcdProcess:
    data_dir: Path
    name: str = "itest"
    extra_args: list[str] = field(default_factory=list)
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # When set: exactly these arguments instead of the URL flags built from the ports.
    args: list[str] | None = None
    env: dict[str, str] | None = None
    # When set: the client URL is https and the readiness probe and channel() use these.
    credentials: grpc.ChannelCredentials | None = None
    # The working directory (relative unix:// socket paths are in it); None: the test's.
    cwd: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"petcd-{self.name}.log"

    def command(self) -> list[str]:
        if self.args is not None:
            return [PETCD_BIN, *self.args]
        scheme = "http" if self.credentials is None else "https"
        client_url = f"{scheme}://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        return [
            PETCD_BIN,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"{self.name}={peer_url}",
            "--initial-cluster-token",
            "petcd-itest",
            *self.extra_args,
        ]

    def start(self, wait: bool = True) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                cwd=self.cwd,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        with self.channel() as channel:
            stub = maintenance_stub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"petcd exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if stub.Status(rpc_pb2.StatusRequest(), timeout=1.0).leader != 0:
                        return
                except grpc.RpcError as e:
                    last = e
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"petcd not ready after {START_TIMEOUT_S}s: {last}\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def kill(self) -> None:
        """SIGKILL the process (no chance to flush anything) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status (negative: killed by that signal)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        self.kill()

    def channel(self) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(self.endpoint, self.credentials)
        return grpc.insecure_channel(self.endpoint)


def kv_stub(channel: grpc.Channel) -> Any:
    return rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]


def assert_acknowledged(
    channel: grpc.Channel, acked: Mapping[bytes, tuple[bytes, int]], what: object = None
) -> None:
    """Every acknowledged put is there: key -> (value, the revision its answer named)."""
    kv = kv_stub(channel)
    for key, (value, revision) in acked.items():
        got = kv.Range(rpc_pb2.RangeRequest(key=key), timeout=10)
        assert [kv_.value for kv_ in got.kvs] == [value], (what, key)
        assert got.kvs[0].mod_revision == revision, (what, key)


def maintenance_stub(channel: grpc.Channel) -> Any:
    return rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]


def etcdctl(endpoint: str, *args: str, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETCDCTL_API": "3"}
    return subprocess.run(
        [ETCDCTL_BIN, f"--endpoints={endpoint}", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        check=False,
    )


def run_petcd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run petcd to completion (for --version, --help, bad flags)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    return subprocess.run(
        [PETCD_BIN, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )
