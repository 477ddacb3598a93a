"""petcdutl against real petcd processes: snapshot save -> restore -> serve, defrag's lock.

The keys are written and read back with Debian's real etcdctl; the snapshot is taken with
petcdctl (etcdctl 3.4's `snapshot save` works too, but petcdctl is the tool we ship).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.petcd_proc import REPO, PetcdProcess, etcdctl
from tests.ports import free_port

PETCDUTL = str(REPO / ".venv" / "bin" / "petcdutl")
PETCDCTL = str(REPO / ".venv" / "bin" / "petcdctl")


def petcdutl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PETCDUTL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def get_all(endpoint: str) -> dict[str, Any]:
    out = etcdctl(endpoint, "get", "", "--prefix", "-w", "json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.fixture
def source(tmp_path: Path) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path / "src" / "data", name="src")
    try:
        p.start()
        yield p
    finally:
        p.stop()


def _fill_and_save(p: PetcdProcess, snap: Path) -> dict[str, Any]:
    for i in range(20):
        assert etcdctl(p.endpoint, "put", f"key{i:02d}", f"value-{i}").returncode == 0
    assert etcdctl(p.endpoint, "put", "key03", "overwritten").returncode == 0
    assert etcdctl(p.endpoint, "del", "key07").stdout == "1\n"
    lease = etcdctl(p.endpoint, "lease", "grant", "3600").stdout.split()[1]
    assert etcdctl(p.endpoint, "put", "leased", "x", "--lease", lease).returncode == 0
    before = get_all(p.endpoint)
    out = subprocess.run(
        [PETCDCTL, f"--endpoints={p.endpoint}", "snapshot", "save", str(snap)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and out.stdout == f"Snapshot saved at {snap}\n", out.stderr
    before["lease"] = lease
    return before


def test_snapshot_restore_serves_every_key_at_the_snapshot_revision(
    source: PetcdProcess, tmp_path: Path
) -> None:
    snap = tmp_path / "backup.db"
    before = _fill_and_save(source, snap)
    revision = before["header"]["revision"]

    st = petcdutl("snapshot", "status", str(snap), "-w", "json")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["revision"] == revision

    # The offline hash of the file equals the live member's HashKV.
    live = etcdctl(source.endpoint, "endpoint", "hashkv", "-w", "json")
    live_hash = json.loads(live.stdout)[0]["HashKV"]["hash"]
    hk = petcdutl("hashkv", str(snap), "-w", "json")
    assert json.loads(hk.stdout)["hash"] == live_hash, hk.stderr

    # defrag refuses the running member's data dir and changes nothing.
    d = petcdutl("defrag", "--data-dir", str(source.data_dir))
    assert d.returncode == 1
    assert "in use by a running petcd member" in d.stderr

    # Restore as a different member of a different cluster.
    peer_port = free_port()
    new_dir = tmp_path / "restored" / "data"
    r = petcdutl(
        "snapshot",
        "restore",
        str(snap),
        "--data-dir",
        str(new_dir),
        "--name",
        "restored",
        "--initial-cluster",
        f"restored=http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--initial-cluster-token",
        "another-cluster",
    )
    assert r.returncode == 0, r.stderr
    again = petcdutl("snapshot", "restore", str(snap), "--data-dir", str(new_dir))
    assert again.returncode == 1
    assert f'data-dir "{new_dir}" not empty' in again.stderr

    restored = PetcdProcess(new_dir, name="restored", peer_port=peer_port)
    try:
        restored.start()
        after = get_all(restored.endpoint)
        assert after["kvs"] == before["kvs"]
        assert after["header"]["revision"] == revision
        assert after["header"]["cluster_id"] != before["header"]["cluster_id"]
        members = etcdctl(restored.endpoint, "member", "list").stdout.splitlines()
        assert len(members) == 1 and ", restored, " in members[0]
        leases = etcdctl(restored.endpoint, "lease", "list").stdout
        assert int(before["lease"], 16) and before["lease"] in leases
        # It keeps going from the snapshot's revision.
        assert etcdctl(restored.endpoint, "put", "new", "n").returncode == 0
        hdr = get_all(restored.endpoint)["header"]
        assert hdr["revision"] == revision + 1
    finally:
        restored.stop()

    # Stopped: defrag now works on the restored member, and the data survives it.
    d = petcdutl("defrag", "--data-dir", str(new_dir))
    assert d.returncode == 0, d.stderr
    assert "finished defragmenting directory" in d.stderr
    restored.start()
    try:
        assert len(get_all(restored.endpoint)["kvs"]) == len(before["kvs"]) + 1
    finally:
        restored.stop()


@pytest.mark.long
def test_three_restored_members_form_a_cluster(source: PetcdProcess, tmp_path: Path) -> None:
    snap = tmp_path / "backup.db"
    before = _fill_and_save(source, snap)
    members = [
        PetcdProcess(tmp_path / n / "data", name=n, peer_port=free_port()) for n in ("x", "y", "z")
    ]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        r = petcdutl(
            "snapshot",
            "restore",
            str(snap),
            "--data-dir",
            str(m.data_dir),
            "--name",
            m.name,
            "--initial-cluster",
            initial,
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster-token",
            "restored-3",
        )
        assert r.returncode == 0, r.stderr
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        for m in members:
            after = get_all(m.endpoint)
            assert after["kvs"] == before["kvs"]
        assert etcdctl(members[0].endpoint, "put", "k", "v").returncode == 0
        for m in members:
            assert etcdctl(m.endpoint, "get", "k", "--print-value-only").stdout == "v\n"
        assert len(etcdctl(members[1].endpoint, "member", "list").stdout.splitlines()) == 3
    finally:
        for m in members:
            m.stop()


@pytest.mark.long
def test_bump_revision_and_mark_compacted_are_served(source: PetcdProcess, tmp_path: Path) -> None:
    snap = tmp_path / "backup.db"
    before = _fill_and_save(source, snap)
    revision = before["header"]["revision"]
    peer_port = free_port()
    new_dir = tmp_path / "bumped" / "data"
    r = petcdutl(
        "snapshot",
        "restore",
        str(snap),
        "--data-dir",
        str(new_dir),
        "--name",
        "bumped",
        "--initial-cluster",
        f"bumped=http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer_port}",
        "--bump-revision",
        "1000",
        "--mark-compacted",
    )
    assert r.returncode == 0, r.stderr
    p = PetcdProcess(new_dir, name="bumped", peer_port=peer_port)
    try:
        p.start()
        after = get_all(p.endpoint)
        assert after["header"]["revision"] == revision + 1000
        assert after["kvs"] == before["kvs"]
        old = etcdctl(p.endpoint, "get", "key00", f"--rev={revision}")
        assert old.returncode != 0
        assert "required revision has been compacted" in old.stderr
        assert etcdctl(p.endpoint, "put", "next", "n").returncode == 0
        assert get_all(p.endpoint)["header"]["revision"] == revision + 1001
    finally:
        p.stop()


@pytest.mark.parametrize(
    "argv",
    [
        ["snapshot", "status"],
        ["snapshot", "status", "/nonexistent/backup.db"],
        ["snapshot", "status", "{snap}", "-w", "xml"],
        ["snapshot", "restore", "{snap}", "--data-dir", "{tmp}/r", "--name", "zz"],
        [
            "snapshot",
            "restore",
            "{snap}",
            "--data-dir",
            "{tmp}/r",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:1",
        ],
    ],
)
def test_errors_and_exit_codes_match_etcdctl_3_4(argv: list[str], tmp_path: Path) -> None:
    """Where etcdctl 3.4's snapshot commands and etcdutl 3.5 agree, petcdutl must too."""
    from petcd.backend import Backend

    snap = tmp_path / "backup.db"
    Backend(str(snap)).close()  # any readable file: these cases fail before reading it
    args = [a.format(snap=snap, tmp=tmp_path) for a in argv]
    ours = petcdutl(*args)
    theirs = subprocess.run(
        ["/usr/bin/etcdctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    assert ours.returncode == theirs.returncode
    assert ours.stdout == theirs.stdout
    assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1]
