"""Differential tests of ``alarm``, ``defrag``, ``move-leader`` and ``snapshot save``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.harness import Differ, Result, run_ctl
from tests.compat.servers import PETCDCTL_BIN, REPO

PETCDUTL_BIN = str(REPO / ".venv" / "bin" / "petcdutl")
DEPRECATED_STATUS = b"Deprecated: Use `etcdutl snapshot status` instead.\n\n"


def test_alarms_and_defrag(differ: Differ) -> None:
    differ.check("alarm", "list")
    # etcd 3.5 fills the Alarm response header (api/v3rpc/maintenance.go: hdr.fill); the 3.4
    # reference answers without one, so etcdctl prints {}. petcd follows 3.5.
    ref, tgt = differ.run_both("alarm", "list", "-w", "json")
    assert (ref.code, ref.stdout) == (0, b"{}\n"), ref
    assert tgt.code == 0, tgt
    if differ.target.target == "petcd":
        answer = json.loads(tgt.stdout)
        assert set(answer["header"]) == {"cluster_id", "member_id", "revision", "raft_term"}, tgt
        assert "alarms" not in answer, tgt
    else:
        assert tgt.stdout == b"{}\n", tgt
    differ.check("alarm", "disarm")
    differ.check("alarm", "list", "extra")
    differ.check("alarm", "disarm", "extra")
    differ.check("defrag")
    differ.check("defrag", "--cluster")
    differ.check("defrag", "-w", "json")


def test_defragment_answer_has_no_header(differ: Differ) -> None:
    # etcd answers Defragment with an empty message (etcd-client's Rust suite checks it).
    for server in (differ.reference, differ.target):
        with grpc.insecure_channel(server.endpoint) as ch:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
            answer = stub.Defragment(rpc_pb2.DefragmentRequest(), timeout=60)
        assert answer == rpc_pb2.DefragmentResponse(), (server.target, answer)


def test_move_leader(differ: Differ) -> None:
    ref, tgt = differ.run_both("endpoint", "status", "-w", "json")
    ids = [int(r.stdout.split(b'"leader":')[1].split(b",")[0]) for r in (ref, tgt)]
    differ.alias("LEADER", ids[0], ids[1])
    differ.check("move-leader", "{LEADER}")
    differ.check("move-leader", "{LEADER}", "-w", "json")
    differ.check("move-leader", "1")
    differ.check("move-leader", "xyz")
    differ.check("move-leader")


def test_snapshot_save(differ: Differ, tmp_path: Path) -> None:
    differ.check("put", "snap/k", "v")
    ref, tgt = differ.run_both("snapshot", "save", str(tmp_path / "ref.db"))
    assert (ref.code, ref.stdout) == (0, f"Snapshot saved at {tmp_path / 'ref.db'}\n".encode())
    path = tmp_path / "target.db"
    ref, tgt = differ.run_both("snapshot", "save", str(path))
    assert (tgt.code, tgt.stdout) == (0, f"Snapshot saved at {path}\n".encode())
    assert path.stat().st_size > 0 and not (tmp_path / "target.db.part").exists()
    differ.check("snapshot", "save")
    differ.check(
        "snapshot", "save", str(tmp_path / "missing-dir" / "x.db"), subs=((rb"/tmp\S*", b"P"),)
    )


def test_deprecated_snapshot_status_and_restore_run_petcdutl(
    differ: Differ, tmp_path: Path
) -> None:
    differ.check("snapshot", "status", drop_stderr=(DEPRECATED_STATUS,))
    # Against etcd too: petcdutl reads etcd's snapshots (converting them on restore).
    path = tmp_path / "snap.db"

    def petcdctl(*args: str) -> Result:
        return run_ctl(PETCDCTL_BIN, differ.target, args)

    saved = petcdctl("snapshot", "save", str(path))
    assert saved.code == 0
    status = petcdctl("snapshot", "status", str(path), "-w", "json")
    direct = subprocess.run(
        [PETCDUTL_BIN, "snapshot", "status", str(path), "-w", "json"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert (status.code, status.stdout) == (direct.returncode, direct.stdout) == (0, direct.stdout)
    assert status.stderr.startswith(DEPRECATED_STATUS)
    restored = petcdctl("snapshot", "restore", str(path), "--data-dir", str(tmp_path / "restored"))
    assert restored.code == 0, restored
    assert restored.stderr.startswith(b"Deprecated: Use `etcdutl snapshot restore` instead.\n\n")
    assert (tmp_path / "restored" / "member" / "snap" / "db").exists()
    defragged = petcdctl("defrag", "--data-dir", str(tmp_path / "restored"))
    assert (defragged.code, defragged.stdout) == (0, b"")
    assert defragged.stderr.startswith(b"Use `etcdutl defrag` instead.")
