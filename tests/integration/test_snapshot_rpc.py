"""The Snapshot RPC against a real petcd process: a client that goes away, while the member
converts its backend copy (in a child process) or while it streams, leaves no temporary file
in the member dir and no converter process behind; the member keeps serving and the next
snapshot is whole (docs/enhancements/0012-snapshot-rpc-bbolt.md)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.snap.bbolt import BoltFile
from tests.integration.petcd_proc import PetcdProcess, kv_stub, maintenance_stub

VALUES = 6  # of 1 MiB: the backend copy is over the member's thread limit (4 MiB)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path / "data", name="snaprpc")
    p.start()
    try:
        with p.channel() as ch:
            kv = kv_stub(ch)
            for i in range(VALUES):
                kv.Put(rpc_pb2.PutRequest(key=b"big/%d" % i, value=os.urandom(1 << 20)))
        yield p
    finally:
        p.stop()


def _leftovers(p: PetcdProcess) -> list[str]:
    member_dir = p.data_dir / "member"
    return sorted(n for n in os.listdir(member_dir) if n.startswith("snapshot-"))


def _converters(p: PetcdProcess) -> list[int]:
    """Pids of the member's converter children."""
    assert p.proc is not None
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == p.proc.pid and b"petcd.utl.rpc_snapshot" in cmdline:
            found.append(int(pid))
    return found


def _wait_clean(p: PetcdProcess) -> None:
    deadline = time.monotonic() + 15
    while _leftovers(p) or _converters(p):
        assert time.monotonic() < deadline, (_leftovers(p), _converters(p))
        time.sleep(0.05)


def _whole_snapshot(p: PetcdProcess, path: Path) -> None:
    with p.channel() as ch:
        chunks = [r.blob for r in maintenance_stub(ch).Snapshot(rpc_pb2.SnapshotRequest())]
    data, digest = b"".join(chunks[:-1]), chunks[-1]
    assert hashlib.sha256(data).digest() == digest
    path.write_bytes(data + digest)
    with BoltFile(str(path)) as db:
        db.check()
        assert sum(1 for _ in db.items(b"key")) == VALUES


def test_a_client_gone_during_the_conversion_leaves_nothing(
    member: PetcdProcess, tmp_path: Path
) -> None:
    with member.channel() as ch:
        stream = maintenance_stub(ch).Snapshot(rpc_pb2.SnapshotRequest())
        deadline = time.monotonic() + 15
        while not _converters(member):  # the child is converting
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stream.cancel()
        with pytest.raises(grpc.RpcError) as e:
            next(stream)
        assert e.value.code() == grpc.StatusCode.CANCELLED
    _wait_clean(member)
    _whole_snapshot(member, tmp_path / "after.db")
    _wait_clean(member)


def test_a_client_gone_mid_stream_leaves_nothing(member: PetcdProcess, tmp_path: Path) -> None:
    with member.channel() as ch:
        stream = maintenance_stub(ch).Snapshot(rpc_pb2.SnapshotRequest())
        first = next(stream)
        assert len(first.blob) == 32 * 1024 and first.remaining_bytes > 4 * 1024 * 1024
        stream.cancel()
    _wait_clean(member)
    _whole_snapshot(member, tmp_path / "after.db")
    _wait_clean(member)
