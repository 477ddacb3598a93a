"""A follower killed while it installs a snapshot from the leader restarts and catches up.

The follower of a three-member cluster with frequent snapshots is stopped while the others take
writes, so that on its return the leader has compacted the entries it lacks and sends it a
snapshot (its backend file). The follower runs under ``snap_crash/member.py``, which SIGKILLs it
at a named moment of that install. Restarted as plain ``petcd``, it must start, catch up, hold
every acknowledged write, and hash (HashKV) exactly as the other members.

The leader's writes are arranged so that its backend has applied past its last snapshot when it
sends one: that is what once left a follower whose backend was ahead of its WAL, and which then
refused to start ("the backend applied index N beyond the WAL's last entry M").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from tests.integration.petcd_proc import REPO, PetcdProcess, kv_stub, maintenance_stub

WRAPPER = Path(__file__).parent / "snap_crash" / "member.py"
PYTHON = str(REPO / ".venv" / "bin" / "python")


class CrashingPetcd(PetcdProcess):
    """``petcd`` through the crash-point wrapper (plain petcd when ``crash_point`` is empty)."""

    crash_point: str = ""

    def command(self) -> list[str]:
        return [PYTHON, str(WRAPPER), *super().command()[1:]]

    def start(self, wait: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        env["PYTHONPATH"] = str(REPO)
        if self.crash_point:
            env["PETCD_TEST_CRASH_POINT"] = self.crash_point
        self.env = env
        super().start(wait)


def _status(p: PetcdProcess) -> Any:
    with p.channel() as ch:
        return maintenance_stub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)


def _saved_snapshot_indexes(p: PetcdProcess) -> list[int]:
    return [int(str(r["snapshot-index"])) for r in p.log_records() if r["msg"] == "saved snapshot"]


def _put_until_ahead_of_snapshot(leader: PetcdProcess, prefix: bytes, acked: list[bytes]) -> None:
    """Write until the leader's applied index is past its newest snapshot (some always are)."""
    with leader.channel() as ch:
        kv = kv_stub(ch)
        for i in range(200):
            key = prefix + b"%04d" % i
            kv.Put(rpc_pb2.PutRequest(key=key, value=b"v" + key), timeout=10)
            acked.append(key)
            if i < 60:
                continue
            snaps = _saved_snapshot_indexes(leader)
            applied = _status(leader).raftAppliedIndex
            if snaps and applied > max(snaps) + 2:
                return
    raise AssertionError("the leader never applied past its newest snapshot")


def _wait_caught_up(members: list[PetcdProcess], timeout_s: float = 60.0) -> int:
    """All members applied the same index; returns the revision they agree on."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            sts = [_status(m) for m in members]
            if (
                len({s.raftAppliedIndex for s in sts}) == 1
                and len({s.header.revision for s in sts}) == 1
            ):
                return int(sts[0].header.revision)
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, "the members did not converge"
        time.sleep(0.2)


@pytest.mark.parametrize(
    "crash_point",
    [
        "after-install",
        pytest.param("after-marker", marks=pytest.mark.long),
        pytest.param("after-backend", marks=pytest.mark.long),
    ],
)
def test_follower_killed_while_installing_a_snapshot_restarts(
    tmp_path: Path, crash_point: str
) -> None:
    members: list[PetcdProcess] = [
        CrashingPetcd(tmp_path / n / "data", name=n) for n in ("a", "b", "c")
    ]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        m.extra_args = [
            "--initial-cluster",
            initial,
            "--initial-cluster-token",
            "snap-crash",
            "--snapshot-count",
            "20",
            "--experimental-snapshot-catchup-entries",
            "5",
        ]
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        leader_id = _status(members[0]).leader
        leader = next(m for m in members if _status(m).header.member_id == leader_id)
        follower = next(m for m in members if m is not leader)
        assert isinstance(follower, CrashingPetcd)
        follower.kill()
        acked: list[bytes] = []
        _put_until_ahead_of_snapshot(leader, b"snap/", acked)

        follower.crash_point = crash_point
        follower.start(wait=False)
        assert follower.proc is not None
        try:
            code = follower.proc.wait(timeout=60)
        except Exception:
            follower.kill()
            raise AssertionError(f"no crash at {crash_point}:\n{follower.log_tail()}") from None
        assert code == -9, follower.log_tail()
        msgs = [r["msg"] for r in follower.log_records()]
        assert "applying snapshot" in msgs, follower.log_tail()
        assert ("applied snapshot" in msgs) == (crash_point == "after-install")

        # Writes while it is down again, then a plain restart: it starts and catches up.
        with leader.channel() as ch:
            kv = kv_stub(ch)
            for i in range(10):
                key = b"after/%02d" % i
                kv.Put(rpc_pb2.PutRequest(key=key, value=b"v" + key), timeout=10)
                acked.append(key)
        follower.crash_point = ""
        follower.start()
        revision = _wait_caught_up(members)
        for m in members:
            with m.channel() as ch:
                resp = kv_stub(ch).Range(
                    rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", serializable=True),
                    timeout=10,
                )
            got = {kv.key: kv.value for kv in resp.kvs}
            lost = [k for k in acked if got.get(k) != b"v" + k]
            assert not lost, f"{m.name} lost {len(lost)} acknowledged writes: {lost[:5]}"
        hashes = set()
        for m in members:
            with m.channel() as ch:
                h = maintenance_stub(ch).HashKV(
                    rpc_pb2.HashKVRequest(revision=revision), timeout=10
                )
            hashes.add((h.hash, h.compact_revision))
        assert len(hashes) == 1, hashes
        # And it keeps working afterwards: a write through it, read back everywhere.
        with follower.channel() as ch:
            kv_stub(ch).Put(rpc_pb2.PutRequest(key=b"last", value=b"x"), timeout=10)
        _wait_caught_up(members)
    finally:
        for m in members:
            m.stop()
