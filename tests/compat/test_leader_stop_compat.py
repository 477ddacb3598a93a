"""A leader stopped with SIGTERM hands leadership over first: etcd 3.4 and petcd.

etcd's graceful stop (``EtcdServer.Stop``) begins with TransferLeadership: a leader among
several voters moves leadership to the voter it has been connected to longest and waits
until that one leads, so that the cluster elects no new leader after an election timeout.
A 3-member cluster of each runs with a long election timeout (5 s), which an election would
have to wait out; the leader gets SIGTERM; another member must lead, in the next term, well
before that timeout, and the stopped leader's log must say "leadership transfer starting"
and "leadership transfer finished". A follower stopped the same way transfers nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.procs import Proc, wait_leader
from tests.compat.servers import ETCD_BIN, PETCD_BIN, available_targets
from tests.ports import free_port

ELECTION_MS = 5000  # an election after the leader vanished would wait at least this long
TARGETS = [t for t in ("etcd", "petcd") if t in available_targets()]


def _cluster(target: str, tmp: Path) -> tuple[list[Proc], list[str]]:
    names = ["m1", "m2", "m3"]
    ports = {n: (free_port(), free_port()) for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    procs, endpoints = [], []
    for n in names:
        client, peer = ports[n]
        argv = [
            ETCD_BIN if target == "etcd" else PETCD_BIN,
            *("--name", n, "--data-dir", str(tmp / f"{n}.data"), "--logger", "zap"),
            *("--listen-client-urls", f"http://127.0.0.1:{client}"),
            *("--advertise-client-urls", f"http://127.0.0.1:{client}"),
            *("--listen-peer-urls", f"http://127.0.0.1:{peer}"),
            *("--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"),
            *("--initial-cluster", initial, "--initial-cluster-token", f"stop-{target}"),
            *("--heartbeat-interval", "100", "--election-timeout", str(ELECTION_MS)),
        ]
        procs.append(Proc(argv, tmp / f"{n}.log"))
        endpoints.append(f"127.0.0.1:{client}")
    for p in procs:
        p.start()
    return procs, endpoints


def _status(endpoint: str) -> rpc_pb2.StatusResponse | None:
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
        try:
            status: rpc_pb2.StatusResponse = stub.Status(rpc_pb2.StatusRequest(), timeout=1)
        except grpc.RpcError:
            return None
        return status


def _messages(proc: Proc) -> list[str]:
    out = []
    for line in proc.log_text().splitlines():
        try:
            out.append(str(json.loads(line).get("msg", "")))
        except (ValueError, AttributeError):
            continue
    return out


def _stop_gracefully(proc: Proc) -> None:
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGTERM)
    proc.wait_exit(30)


def _run(target: str, tmp: Path) -> dict[str, object]:
    tmp.mkdir()
    procs, endpoints = _cluster(target, tmp)
    try:
        first = wait_leader(endpoints[0], procs[0])
        ids = {}
        for p, e in zip(procs, endpoints, strict=True):
            ids[wait_leader(e, p).header.member_id] = (p, e)
        leader, _ = ids[first.leader]
        follower, _ = next(v for k, v in ids.items() if k != first.leader)
        others = [v for k, v in ids.items() if k != first.leader]
        # A follower's stop transfers nothing.
        _stop_gracefully(follower)
        still = _status(next(e for p, e in others if p is not follower))
        assert still is not None
        # The leader's stop hands leadership to the remaining member at once.
        stopped = time.monotonic()
        _stop_gracefully(leader)
        survivor = next(e for p, e in others if p is not follower)
        new = None
        while time.monotonic() - stopped < ELECTION_MS / 1000 * 3:
            new = _status(survivor)
            if new is not None and new.leader and new.leader != first.leader:
                break
            time.sleep(0.05)
        assert new is not None and new.leader, "no new leader"
        return {
            "took": time.monotonic() - stopped,
            "term": new.raftTerm - first.raftTerm,
            "new_leader_is_survivor": new.leader == new.header.member_id,
            "leader_log": [m for m in _messages(leader) if "leadership transfer" in m],
            "follower_log": [m for m in _messages(follower) if "leadership transfer" in m],
        }
    finally:
        for p in procs:
            p.stop()


@pytest.mark.skipif(TARGETS != ["etcd", "petcd"], reason="needs etcd and petcd")
def test_a_stopping_leader_hands_leadership_over(tmp_path: Path) -> None:
    seen = {t: _run(t, tmp_path / t) for t in TARGETS}
    for t, got in seen.items():
        assert float(str(got["took"])) < ELECTION_MS / 1000 / 2, (t, got)  # no election wait
    for got in seen.values():
        got.pop("took")
    assert seen["petcd"] == seen["etcd"]
    assert seen["petcd"] == {
        "term": 1,
        "new_leader_is_survivor": True,
        "leader_log": ["leadership transfer starting", "leadership transfer finished"],
        "follower_log": ["skipped leadership transfer; local server is not leader"],
    }
