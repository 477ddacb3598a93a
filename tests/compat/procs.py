"""Server processes for the multi-member differential tests (etcd 3.4 or petcd, same flags).

``Proc`` starts one command line, logging to a file, and stops exactly that process, by its
pid. ``wait_leader`` waits until a member's Status names a leader; ``member_list`` reads
the cluster id and the members (id, name, peer URLs) as a client sees them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

START_TIMEOUT_S = 30.0


@dataclass
class Proc:
    """One server process (etcd or petcd), started with ``argv``, stopped by its pid."""

    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def warnings(self) -> list[dict[str, object]]:
        """The log's JSON records above info (etcd runs with ``--logger zap``)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("level") != "info":
                    out.append({k: rec[k] for k in ("level", "msg", "error") if k in rec})
        return out

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_leader(endpoint: str, proc: Proc) -> rpc_pb2.StatusResponse:
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
        while time.monotonic() < deadline:
            assert proc.proc is not None
            if proc.proc.poll() is not None:
                raise AssertionError(f"exited {proc.proc.returncode}:\n{proc.log_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError):
                status: rpc_pb2.StatusResponse = stub.Status(rpc_pb2.StatusRequest(), timeout=1)
                if status.leader:
                    return status
            time.sleep(0.1)
    raise AssertionError(f"no leader at {endpoint}:\n{proc.log_text()[-3000:]}")


def member_list(endpoint: str) -> tuple[int, list[tuple[int, str, tuple[str, ...]]]]:
    """(cluster id, [(member id, name, peer URLs)] sorted)."""
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.ClusterStub(ch)  # type: ignore[no-untyped-call]
        resp = stub.MemberList(rpc_pb2.MemberListRequest(linearizable=True), timeout=10)
    listed = sorted((m.ID, m.name, tuple(m.peerURLs)) for m in resp.members)
    return resp.header.cluster_id, listed
