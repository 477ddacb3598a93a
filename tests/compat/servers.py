"""Servers under test for the differential tests: a real etcd, or petcd.

Theory of operation: :class:`ServerProcess` starts one single-member server with
every URL flag set explicitly on 127.0.0.1 and on ports the kernel just handed
out (bind to port 0, read the port, close), in a data directory the caller owns.
It waits until the member answers a gRPC ``Status`` call, and :meth:`stop` kills
exactly the process it started, by pid. Both etcd and petcd take etcd's flags,
so the same command line serves both targets; only the binary differs.

:func:`available_targets` names the targets this machine can run: ``etcd``
when ``/usr/bin/etcd`` exists, ``petcd`` when ``src/petcd/server/main.py``
exists (the server is built by another part of the project and is added to
the matrix as soon as it is there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"
PETCD_BIN = str(REPO / ".venv" / "bin" / "petcd")
PETCDCTL_BIN = str(REPO / ".venv" / "bin" / "petcdctl")
PETCD_SERVER_MAIN = REPO / "src" / "petcd" / "server" / "main.py"
START_TIMEOUT_S = 30.0


def available_targets() -> list[str]:
    targets = []
    if os.path.exists(ETCD_BIN):
        targets.append("etcd")
    if PETCD_SERVER_MAIN.exists() and os.path.exists(PETCD_BIN) and _petcd_runs():
        targets.append("petcd")
    return targets


def _petcd_runs() -> bool:
    try:
        proc = subprocess.run(
            [PETCD_BIN, "--version"], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@dataclass
class ServerProcess:
    """One single-member server process (etcd or petcd) on loopback ports."""

    target: str
    data_dir: Path
    name: str = "compat"
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    # Another build of the target's server (e.g. etcd 3.5.17 built from the Go module proxy).
    binary: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def command(self) -> list[str]:
        binary = self.binary or {"etcd": ETCD_BIN, "petcd": PETCD_BIN}[self.target]
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        return [
            binary,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"{self.name}={peer_url}",
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "petcd-compat",
        ]

    def start(self) -> None:
        assert self.proc is None, "already started"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.target}-{self.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        with grpc.insecure_channel(self.endpoint) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.target} exited with {self.proc.returncode}; see its log in "
                        f"{self.data_dir.parent}"
                    )
                try:
                    status = stub.Status(rpc_pb2.StatusRequest(), timeout=1.0)
                    if status.leader != 0:
                        return
                except grpc.RpcError as exc:
                    last_error = exc
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.target} not ready after {START_TIMEOUT_S}s: {last_error}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
