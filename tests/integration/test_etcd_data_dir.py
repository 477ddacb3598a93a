"""petcd started on a stopped etcd member's data dir converts it in place (0013).

Theory of operation: the real etcd 3.4 (``/usr/bin/etcd``) writes a data dir through the real
etcdctl and is stopped (SIGTERM: cleanly; SIGKILL with a long backend batch interval: committed
entries left unapplied in its db); then petcd is started with exactly etcd's flags on the same
dir, and the same etcdctl questions get the same answers (headers included: the member and
cluster ids are kept). Refusals are checked by their fatal log line and by the data dir left
as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess
from tests.integration.petcd_proc import REPO, PetcdProcess, etcdctl
from tests.ports import free_port

pytestmark = pytest.mark.skipif(
    not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)),
    reason="real etcd / etcdctl not installed (make etcd)",
)

ROOT = "--user=root:rootpw"
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def as_json(out: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(out))


def petcd_on(etcd: ServerProcess) -> PetcdProcess:
    """A petcd process with exactly the etcd member's flags (its ports, name, dir)."""
    return PetcdProcess(
        etcd.data_dir,
        name=f"petcd-{etcd.name}",
        client_port=etcd.client_port,
        peer_port=etcd.peer_port,
        args=etcd.command()[1:],
        env=ENV,
    )


def stop_cleanly(etcd: ServerProcess) -> None:
    assert etcd.proc is not None
    etcd.proc.send_signal(signal.SIGTERM)
    assert etcd.proc.wait(timeout=30) in (0, -signal.SIGTERM)  # etcd re-raises the signal
    etcd.proc = None


def ask(endpoint: str, leases: list[str]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    everything = as_json(etcdctl(endpoint, ROOT, "get", "", "--prefix", "-w", "json"))
    header = everything["header"]
    answers["ids"] = (header["cluster_id"], header["member_id"], header["revision"])
    answers["kvs"] = everything["kvs"]
    answers["lease_list"] = sorted(ok(etcdctl(endpoint, ROOT, "lease", "list")).splitlines())
    for lease in leases:
        ttl = as_json(etcdctl(endpoint, ROOT, "lease", "timetolive", lease, "--keys", "-w", "json"))
        answers[f"lease {lease}"] = (ttl["granted-ttl"], sorted(ttl.get("keys") or []))
    answers["users"] = ok(etcdctl(endpoint, ROOT, "user", "list"))
    answers["role reader"] = ok(etcdctl(endpoint, ROOT, "role", "get", "reader"))
    anonymous = etcdctl(endpoint, "get", "k1")
    answers["anonymous"] = (anonymous.returncode, anonymous.stderr.strip().splitlines()[-1:])
    answers["u1 reads"] = ok(etcdctl(endpoint, "--user=u1:u1pw", "get", "k1"))
    members = as_json(etcdctl(endpoint, ROOT, "member", "list", "-w", "json"))
    answers["members"] = sorted((m["ID"], m["name"], m["peerURLs"]) for m in members["members"])
    return answers


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def fatal_error(p: PetcdProcess) -> str:
    assert p.proc is not None
    assert p.proc.wait(timeout=60) == 1
    fatal = [r for r in p.log_records() if r.get("level") == "fatal"]
    assert fatal, p.log_tail()
    return str(fatal[-1].get("error", ""))


# etcd 3.5.17 too when PETCD_ETCD35_BIN_DIR names a dir with its etcd (built from the Go module
# proxy, as for tests/compat/test_etcd_snapshot_export_compat.py): it saves its applied index
# with every backend commit, where 3.4 leaves entries after it even after a clean stop.
ETCD35_DIR = os.environ.get("PETCD_ETCD35_BIN_DIR", "")


@pytest.fixture(
    params=[
        pytest.param("", id="etcd3.4"),
        pytest.param(
            "3.5",
            id="etcd3.5",
            marks=pytest.mark.skipif(not ETCD35_DIR, reason="PETCD_ETCD35_BIN_DIR not set"),
        ),
    ]
)
def etcd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    e = ServerProcess("etcd", tmp_path / "data", name="m1")
    if request.param:
        e.binary = os.path.join(ETCD35_DIR, "etcd")
    try:
        yield e
    finally:
        e.stop()


def test_petcd_on_a_cleanly_stopped_etcd_serves_the_same_data(
    etcd: ServerProcess, tmp_path: Path
) -> None:
    etcd.start()
    e = etcd.endpoint
    ok(etcdctl(e, "put", "k1", "v1"))
    ok(etcdctl(e, "put", "k2", "v2"))
    ok(etcdctl(e, "put", "k1", "v1b"))
    ok(etcdctl(e, "del", "k2"))
    rev = as_json(etcdctl(e, "get", "k1", "-w", "json"))["header"]["revision"]
    ok(etcdctl(e, "put", "k3", "v3"))
    ok(etcdctl(e, "compact", str(rev)))
    lease = ok(etcdctl(e, "lease", "grant", "600")).split()[1]
    ok(etcdctl(e, "put", "leased", "x", f"--lease={lease}"))
    ok(etcdctl(e, "user", "add", "root:rootpw"))
    ok(etcdctl(e, "user", "add", "u1:u1pw"))
    ok(etcdctl(e, "role", "add", "reader"))
    ok(etcdctl(e, "role", "grant-permission", "reader", "read", "k", "l"))
    ok(etcdctl(e, "user", "grant-role", "u1", "reader"))
    ok(etcdctl(e, "auth", "enable"))
    want = ask(e, [lease])
    stop_cleanly(etcd)
    originals = tree_digest(etcd.data_dir / "member")

    p = petcd_on(etcd)
    try:
        p.start()
        got = ask(p.endpoint, [lease])
        below = etcdctl(p.endpoint, ROOT, "get", "k1", f"--rev={rev - 1}")
        after = as_json(etcdctl(p.endpoint, ROOT, "put", "k4", "v4", "-w", "json"))
    finally:
        p.stop()
    assert got == want
    assert "required revision has been compacted" in below.stderr
    assert after["header"]["revision"] == want["ids"][2] + 1
    # etcd's originals are kept, unchanged, beside the converted member.
    assert tree_digest(etcd.data_dir / "member.etcd") == originals
    converted = [r for r in p.log_records() if r.get("msg") == "converted etcd data dir"]
    assert converted and converted[0]["etcd-originals"] == str(etcd.data_dir / "member.etcd")

    # A second start is an ordinary restart of the petcd member.
    p2 = petcd_on(etcd)
    try:
        p2.start()
        assert as_json(etcdctl(p2.endpoint, ROOT, "get", "k4", "-w", "json"))["kvs"]
    finally:
        p2.stop()


def _etcd_killed_with_unapplied(etcd: ServerProcess, last: list[str]) -> None:
    """Writes then SIGKILL, with a batch interval long enough that the db holds none of them."""
    etcd.start()
    e = etcd.endpoint
    ok(etcdctl(e, "put", "k0", "v0"))
    etcd.stop()  # SIGKILL; then restart with a 30 s backend batch interval
    cmd = [*etcd.command(), "--backend-batch-interval=30s", "--backend-batch-limit=100000"]
    log = open(etcd.data_dir.parent / "etcd-batch.log", "wb")  # noqa: SIM115
    etcd.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    etcd._wait_ready()
    for i in range(1, 6):
        ok(etcdctl(e, "put", f"k{i}", f"v{i}"))
    for args in last:
        ok(etcdctl(e, *args.split()))
    etcd.stop()


def test_committed_entries_etcd_had_not_applied_are_applied(
    etcd: ServerProcess, tmp_path: Path
) -> None:
    # Only puts and deletes: a lease grant or a compaction would make etcd commit its db.
    _etcd_killed_with_unapplied(etcd, ["del k2"])
    p = petcd_on(etcd)
    try:
        p.start()
        got = as_json(etcdctl(p.endpoint, "get", "k", "--prefix", "-w", "json"))
    finally:
        p.stop()
    assert [(kv["key"], kv["mod_revision"]) for kv in got["kvs"]] == [
        ("azA=", 2),
        ("azE=", 3),
        ("azM=", 5),
        ("azQ=", 6),
        ("azU=", 7),
    ]
    assert got["header"]["revision"] == 8  # the delete of k2
    entries = [r for r in p.log_records() if r.get("msg") == "converted etcd data dir"]
    assert entries and entries[0]["requests-after-applied"] >= 6  # the db held none of them


def test_an_unapplied_auth_change_is_refused_and_nothing_changes(etcd: ServerProcess) -> None:
    _etcd_killed_with_unapplied(etcd, ["user add u9:pw"])
    before = tree_digest(etcd.data_dir)
    p = petcd_on(etcd)
    p.start(wait=False)
    error = fatal_error(p)
    assert str(etcd.data_dir) in error
    assert "an auth change (user add)" in error
    assert "etcdctl snapshot save" in error
    assert "petcdutl snapshot restore <file> --data-dir <new data dir> --name m1 " in error
    assert f"--initial-cluster m1=http://127.0.0.1:{etcd.peer_port}" in error
    assert tree_digest(etcd.data_dir) == before


_CRASH_AT_RENAME = """
import os, sys
from petcd.utl import etcd_datadir
calls = []
real = etcd_datadir._rename
def rename(src, dst):
    calls.append(dst)
    if len(calls) == int(sys.argv[2]):
        os._exit(9)  # a crash: no clean-up runs
    real(src, dst)
etcd_datadir._rename = rename
etcd_datadir.convert_data_dir(sys.argv[1], lambda reason: reason)
"""


def test_a_conversion_killed_before_or_between_its_renames_is_finished_at_start(
    etcd: ServerProcess,
) -> None:
    etcd.start()
    ok(etcdctl(etcd.endpoint, "put", "k", "v"))
    want = as_json(etcdctl(etcd.endpoint, "get", "k", "-w", "json"))
    stop_cleanly(etcd)
    data = etcd.data_dir
    originals = tree_digest(data / "member")
    for crash_at in ("1", "2"):
        run = subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-c", _CRASH_AT_RENAME, str(data), crash_at],
            env=ENV,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 9, run.stderr
        assert (data / ".member.petcd-convert" / "wal").is_dir()
    # Killed between the renames: etcd's member dir is aside, the new one complete.
    assert not (data / "member").exists()
    assert tree_digest(data / "member.etcd") == originals
    p = petcd_on(etcd)
    try:
        p.start()
        got = as_json(etcdctl(p.endpoint, "get", "k", "-w", "json"))
    finally:
        p.stop()
    assert got["kvs"] == want["kvs"]
    assert got["header"]["member_id"] == want["header"]["member_id"]
    msgs = [r.get("msg") for r in p.log_records()]
    assert "finished an interrupted conversion of an etcd data dir" in msgs
    assert not (data / ".member.petcd-convert").exists()


def test_an_etcd_that_took_snapshots_is_converted(tmp_path: Path) -> None:
    etcd = ServerProcess("etcd", tmp_path / "data", name="m1")
    etcd.binary = str(tmp_path / "etcd-snap")
    # ServerProcess has no extra flags: a wrapper adds etcd's --snapshot-count.
    Path(etcd.binary).write_text(f'#!/bin/sh\nexec {ETCD_BIN} "$@" --snapshot-count=10\n')
    Path(etcd.binary).chmod(0o755)
    try:
        etcd.start()
        for i in range(45):
            ok(etcdctl(etcd.endpoint, "put", f"k{i % 7}", f"v{i}"))
        want = as_json(etcdctl(etcd.endpoint, "get", "k", "--prefix", "-w", "json"))
        stop_cleanly(etcd)
    finally:
        etcd.stop()
    assert list((etcd.data_dir / "member" / "snap").glob("*.snap"))
    p = petcd_on(etcd)
    assert p.args is not None
    try:
        p.start()
        got = as_json(etcdctl(p.endpoint, "get", "k", "--prefix", "-w", "json"))
    finally:
        p.stop()
    assert got["kvs"] == want["kvs"]
    assert got["header"]["revision"] == want["header"]["revision"]


def test_wal_dir_is_refused_with_the_migration_command(etcd: ServerProcess) -> None:
    etcd.start()
    ok(etcdctl(etcd.endpoint, "put", "k", "v"))
    stop_cleanly(etcd)
    before = tree_digest(etcd.data_dir)
    p = petcd_on(etcd)
    assert p.args is not None
    p.args += ["--wal-dir", str(etcd.data_dir / "member" / "wal")]
    p.start(wait=False)
    error = fatal_error(p)
    assert "is an etcd data dir that petcd cannot convert in place: --wal-dir" in error
    assert "petcdutl snapshot restore" in error
    assert tree_digest(etcd.data_dir) == before


def _cluster_flags(
    names: list[str], base: Path, ports: dict[str, tuple[int, int]]
) -> dict[str, list[str]]:
    cluster = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    out = {}
    for n in names:
        client, peer = ports[n]
        out[n] = [
            "--name", n,
            "--data-dir", str(base / n),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster,
            "--initial-cluster-token", "etcddir-3",
            "--initial-cluster-state", "new",
        ]  # fmt: skip
    return out


@pytest.mark.long
@pytest.mark.parametrize(
    ("etcd35", "killed"),
    [
        pytest.param(False, False, id="etcd3.4"),
        # Every member killed with -9 while its db held none of the last writes (a 30 s backend
        # batch interval): each converted log carries them, committed or not, and the petcd
        # cluster applies them.
        pytest.param(False, True, id="etcd3.4-killed"),
        pytest.param(
            True,
            False,
            id="etcd3.5",
            marks=pytest.mark.skipif(not ETCD35_DIR, reason="PETCD_ETCD35_BIN_DIR not set"),
        ),
    ],
)
def test_a_stopped_three_member_etcd_cluster_comes_back_as_petcd(
    tmp_path: Path, etcd35: bool, killed: bool
) -> None:
    binary = os.path.join(ETCD35_DIR, "etcd") if etcd35 else ETCD_BIN
    batch = ["--backend-batch-interval=30s", "--backend-batch-limit=100000"] if killed else []
    names = ["a", "b", "c"]
    ports = {n: (free_port(), free_port()) for n in names}
    flags = _cluster_flags(names, tmp_path, ports)
    endpoints = ",".join(f"127.0.0.1:{ports[n][0]}" for n in names)
    procs: list[subprocess.Popen[bytes]] = []
    petcds: list[PetcdProcess] = []
    try:
        for n in names:
            log = open(tmp_path / f"etcd-{n}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen([binary, *flags[n], *batch], stdout=log, stderr=log))
            log.close()
        deadline = time.monotonic() + 30
        while etcdctl(endpoints, "endpoint", "health").returncode != 0:
            assert time.monotonic() < deadline, "etcd cluster not healthy"
            time.sleep(0.2)
        lease = ok(etcdctl(endpoints, "lease", "grant", "900")).split()[1]
        ok(etcdctl(endpoints, "put", "leased", "y", f"--lease={lease}"))
        for i in range(20):
            ok(etcdctl(endpoints, "put", f"key{i}", f"value{i}"))
        ok(etcdctl(endpoints, "del", "key7"))
        want = as_json(etcdctl(endpoints, "get", "", "--prefix", "-w", "json"))
        want_members = as_json(etcdctl(endpoints, "member", "list", "-w", "json"))
        for proc in procs:
            proc.send_signal(signal.SIGKILL if killed else signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM, -signal.SIGKILL)
        for n in names:
            p = PetcdProcess(
                tmp_path / n,
                name=f"petcd-{n}",
                client_port=ports[n][0],
                peer_port=ports[n][1],
                args=flags[n],
                env=ENV,
            )
            p.start(wait=False)
            petcds.append(p)
        for p in petcds:
            p.wait_ready()
        if killed:
            applied = [
                r["requests-after-applied"]
                for p in petcds
                for r in p.log_records()
                if r.get("msg") == "converted etcd data dir"
            ]
            assert len(applied) == 3 and min(applied) >= 20, applied
        for n in names:
            ep = f"127.0.0.1:{ports[n][0]}"
            got = as_json(etcdctl(ep, "get", "", "--prefix", "-w", "json", "--consistency=s"))
            assert got["kvs"] == want["kvs"], n
            assert got["header"]["cluster_id"] == want["header"]["cluster_id"]
        members = as_json(etcdctl(endpoints, "member", "list", "-w", "json"))
        assert sorted(m["ID"] for m in members["members"]) == sorted(
            m["ID"] for m in want_members["members"]
        )
        put = as_json(etcdctl(endpoints, "put", "after", "z", "-w", "json"))
        assert put["header"]["revision"] == want["header"]["revision"] + 1
        assert "found 1 leases" in ok(etcdctl(endpoints, "lease", "list"))
        deadline = time.monotonic() + 20
        for n in names:  # replicated to every member
            ep = f"127.0.0.1:{ports[n][0]}"
            while not as_json(etcdctl(ep, "get", "after", "-w", "json", "--consistency=s")).get(
                "kvs"
            ):
                assert time.monotonic() < deadline, n
                time.sleep(0.1)
    finally:
        for p in petcds:
            p.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
