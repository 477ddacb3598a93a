"""Migration from etcd: a snapshot saved by the real etcdctl from the real etcd 3.4, restored
by petcdutl, served by petcd, compared with the etcd it came from.

Theory of operation: a module fixture starts ``/usr/bin/etcd`` on free loopback ports and
writes history into it (overwrites, deletes, a txn, leases with keys, a compaction, users and
roles, then auth enabled), reads everything back with ``/usr/bin/etcdctl`` and saves a
snapshot with it. Each test restores that file (or a damaged copy) with ``petcdutl`` and, where
it should work, starts ``petcd`` on the result and asks it the same questions with the same
etcdctl. A second fixture does the same with a few thousand keys, values over a page (bbolt's
overflow pages) and several revisions per key, written over gRPC.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.snap.bbolt import BoltFile
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess
from tests.integration.petcd_proc import REPO, PetcdProcess, etcdctl

pytestmark = pytest.mark.skipif(
    not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)),
    reason="real etcd / etcdctl not installed (make etcd)",
)

PETCDUTL = str(REPO / ".venv" / "bin" / "petcdutl")
ROOT = "--user=root:rootpw"


def petcdutl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PETCDUTL, *args], capture_output=True, text=True, timeout=300, check=False
    )


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def error(out: subprocess.CompletedProcess[str]) -> str:
    """The ``Error: ...`` line (after the log lines), with exit code 1."""
    assert out.returncode == 1, out.stderr
    return out.stderr.strip().splitlines()[-1]


def as_json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ok(out))
    return result


@dataclass
class Source:
    """What the etcd member held when its snapshot was saved."""

    snapshot: Path
    answers: dict[str, Any]


def ask(endpoint: str, leases: list[str], compact_rev: int) -> dict[str, Any]:
    """The answers compared between etcd and petcd (headers dropped: the cluster is new)."""
    answers: dict[str, Any] = {}
    everything = as_json(etcdctl(endpoint, ROOT, "get", "", "--prefix", "-w", "json"))
    answers["revision"] = everything["header"]["revision"]
    answers["kvs"] = everything["kvs"]
    # History above the compaction is served; below it is compacted on both.
    at = as_json(
        etcdctl(endpoint, ROOT, "get", "", "--prefix", "-w", "json", f"--rev={compact_rev}")
    )
    answers["kvs_at_compact"] = at["kvs"]
    old = etcdctl(endpoint, ROOT, "get", "k01", f"--rev={compact_rev - 1}")
    answers["below_compact"] = (old.returncode, old.stderr.strip().splitlines()[-1])
    answers["lease_list"] = sorted(ok(etcdctl(endpoint, ROOT, "lease", "list")).splitlines())
    for lease in leases:
        ttl = as_json(etcdctl(endpoint, ROOT, "lease", "timetolive", lease, "--keys", "-w", "json"))
        # The remaining TTL runs from the restart; the granted TTL and the keys are the state.
        answers[f"lease {lease}"] = {
            "id": ttl["id"],
            "granted-ttl": ttl["granted-ttl"],
            "keys": sorted(ttl.get("keys") or []),
            "ttl_within_granted": 0 < ttl["ttl"] <= ttl["granted-ttl"],
        }
    answers["users"] = ok(etcdctl(endpoint, ROOT, "user", "list"))
    answers["user u1"] = ok(etcdctl(endpoint, ROOT, "user", "get", "u1"))
    for role in ("reader", "root"):
        answers[f"role {role}"] = ok(etcdctl(endpoint, ROOT, "role", "get", role))
    # Auth is on: a request without a user is refused, u1 reads only its range.
    anonymous = etcdctl(endpoint, "get", "k01")
    answers["anonymous"] = (anonymous.returncode, anonymous.stderr.strip().splitlines()[-1])
    answers["u1 reads"] = ok(etcdctl(endpoint, "--user=u1:u1pw", "get", "k01"))
    denied = etcdctl(endpoint, "--user=u1:u1pw", "put", "k01", "x")
    answers["u1 writes"] = (denied.returncode, denied.stderr.strip().splitlines()[-1])
    return answers


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    base = tmp_path_factory.mktemp("etcd-import")
    etcd = ServerProcess("etcd", base / "etcd" / "data", name="src")
    try:
        etcd.start()
        e = etcd.endpoint
        for i in range(1, 31):
            ok(etcdctl(e, "put", f"k{i:02d}", f"value-{i}"))
        for i in range(1, 6):
            ok(etcdctl(e, "put", "k01", f"again-{i}"))  # version 6
        ok(etcdctl(e, "del", "k02"))
        ok(etcdctl(e, "del", "k1", "--prefix"))  # k10..k19 in one revision (subs 0..9)
        compact_rev = int(as_json(etcdctl(e, "get", "k01", "-w", "json"))["header"]["revision"])
        ok(etcdctl(e, "put", "k02", "reborn"))
        ok(etcdctl(e, "compact", str(compact_rev)))
        leases = []
        for ttl in ("600", "3600"):
            leases.append(ok(etcdctl(e, "lease", "grant", ttl)).split()[1])
        ok(etcdctl(e, "put", "leased/a", "1", f"--lease={leases[0]}"))
        ok(etcdctl(e, "put", "leased/b", "2", f"--lease={leases[0]}"))
        ok(etcdctl(e, "put", "leased/c", "3", f"--lease={leases[1]}"))
        ok(etcdctl(e, "put", "k03", "big:" + "x" * 9000))  # over a 4 KiB page
        ok(etcdctl(e, "user", "add", "root:rootpw"))
        ok(etcdctl(e, "user", "add", "u1:u1pw"))
        ok(etcdctl(e, "role", "add", "reader"))
        ok(etcdctl(e, "role", "grant-permission", "reader", "read", "k0", "k1"))
        ok(etcdctl(e, "role", "grant-permission", "reader", "readwrite", "leased/", "--prefix"))
        ok(etcdctl(e, "user", "grant-role", "u1", "reader"))
        ok(etcdctl(e, "auth", "enable"))
        snap = base / "etcd.snapshot"
        ok(etcdctl(e, ROOT, "snapshot", "save", str(snap)))
        answers = ask(e, leases, compact_rev)
        answers["status"] = as_json(
            subprocess.run(
                [ETCDCTL_BIN, "snapshot", "status", str(snap), "-w", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        )
        yield Source(snap, {**answers, "leases": leases, "compact_rev": compact_rev})
    finally:
        etcd.stop()


def restore_and_start(snap: Path, base: Path, *extra: str) -> PetcdProcess:
    p = PetcdProcess(base / "restored", name="m1")
    peer = f"http://127.0.0.1:{p.peer_port}"
    ok(
        petcdutl(
            "snapshot",
            "restore",
            str(snap),
            "--data-dir",
            str(p.data_dir),
            "--name",
            "m1",
            "--initial-cluster",
            f"m1={peer}",
            "--initial-advertise-peer-urls",
            peer,
            *extra,
        )
    )
    p.start()
    return p


def test_restored_etcd_snapshot_serves_the_same_keys_leases_and_auth(
    source: Source, tmp_path: Path
) -> None:
    want = source.answers
    p = restore_and_start(source.snapshot, tmp_path)
    try:
        got = ask(p.endpoint, want["leases"], want["compact_rev"])
    finally:
        p.stop()
    assert got["kvs"] == want["kvs"]
    assert got["revision"] == want["revision"]
    assert got["kvs_at_compact"] == want["kvs_at_compact"]
    assert got["below_compact"] == want["below_compact"]
    assert got["below_compact"][1].endswith("required revision has been compacted")
    for key in ("lease_list", *(f"lease {lease}" for lease in want["leases"])):
        assert got[key] == want[key], key
    assert want[f"lease {want['leases'][0]}"]["keys"] == [
        base64.b64encode(k).decode() for k in (b"leased/a", b"leased/b")
    ]
    for key in ("users", "user u1", "role reader", "role root", "anonymous", "u1 reads"):
        assert got[key] == want[key], key
    assert got["u1 writes"] == want["u1 writes"]
    assert "permission denied" in got["u1 writes"][1]


def test_status_of_an_etcd_snapshot_is_etcdctls(source: Source) -> None:
    st = as_json(petcdutl("snapshot", "status", str(source.snapshot), "-w", "json"))
    assert st == source.answers["status"]
    assert st["revision"] == source.answers["revision"]
    table = ok(petcdutl("snapshot", "status", str(source.snapshot), "-w", "table"))
    assert f"{st['hash']:x}" in table


def test_a_damaged_etcd_snapshot_is_refused_and_nothing_is_created(
    source: Source, tmp_path: Path
) -> None:
    data = bytearray(source.snapshot.read_bytes())
    with BoltFile(str(source.snapshot)) as db:
        page_size = db.meta.page_size
        root = db.meta.root_page
    # 1. A flipped byte: the SHA-256 trailer catches it (etcd's message).
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    bad = tmp_path / "flipped.db"
    bad.write_bytes(bytes(flipped))
    target = tmp_path / "out"
    out = petcdutl("snapshot", "restore", str(bad), "--data-dir", str(target))
    assert error(out).startswith("Error: expected sha256 [")
    assert not target.exists()
    # 2. The root page zeroed and the trailer skipped: the reader refuses the file.
    zeroed = bytearray(data)
    zeroed[root * page_size : (root + 1) * page_size] = bytes(page_size)
    bad.write_bytes(bytes(zeroed))
    out = petcdutl("snapshot", "restore", str(bad), "--data-dir", str(target), "--skip-hash-check")
    assert f"page {root} names itself page 0" in error(out)
    assert error(out).startswith("Error: snapshot file integrity check failed: bbolt: ")
    assert not target.exists() and os.listdir(tmp_path) == ["flipped.db"]
    # 3. Truncated in the middle: the pages in use run past the end of the file.
    bad.write_bytes(bytes(data[: len(data) // 2]))
    out = petcdutl("snapshot", "restore", str(bad), "--data-dir", str(target), "--skip-hash-check")
    assert "file is truncated" in error(out)
    assert "file is truncated" in error(petcdutl("snapshot", "status", str(bad)))
    assert not target.exists()
    # 4. Without its trailer, as etcd: refused unless --skip-hash-check.
    bad.write_bytes(bytes(data[:-32]))
    out = petcdutl("snapshot", "restore", str(bad), "--data-dir", str(target))
    assert error(out) == "Error: snapshot missing hash but --skip-hash-check=false"
    assert not target.exists()


# -- a larger one ------------------------------------------------------------------------------

KEYS = 3000
BIG_EVERY = 100  # every 100th key holds a value of several pages


def _value(i: int, round_: int) -> bytes:
    if i % BIG_EVERY == 0:
        return bytes([65 + round_]) * (20000 + i)
    return f"v{round_}-{i}".encode()


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[int, Any]]]:
    base = tmp_path_factory.mktemp("etcd-import-large")
    etcd = ServerProcess("etcd", base / "etcd" / "data", name="big")
    try:
        etcd.start()
        with grpc.insecure_channel(etcd.endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
            for round_ in range(3):
                for i in range(KEYS if round_ == 0 else KEYS // 3):
                    kv.Put(rpc_pb2.PutRequest(key=b"big/%05d" % i, value=_value(i, round_)))
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/00", range_end=b"big/002"))
            rev = kv.Range(rpc_pb2.RangeRequest(key=b"x")).header.revision
            views = {}
            for at in (KEYS, KEYS + 500, rev - 1, 0):
                r = kv.Range(rpc_pb2.RangeRequest(key=b"big/", range_end=b"big0", revision=at))
                views[at] = [
                    (x.key, x.create_revision, x.mod_revision, x.version, x.value) for x in r.kvs
                ]
            views[-1] = rev
        snap = base / "big.snapshot"
        ok(etcdctl(etcd.endpoint, "snapshot", "save", str(snap)))
        yield snap, views
    finally:
        etcd.stop()


def test_a_large_etcd_snapshot_with_overflow_pages_and_history(
    large: tuple[Path, dict[int, Any]], tmp_path: Path
) -> None:
    snap, views = large
    with BoltFile(str(snap)) as db:
        assert db.meta.size_bytes > 20 * db.meta.page_size
    p = restore_and_start(snap, tmp_path)
    try:
        with p.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
            assert kv.Range(rpc_pb2.RangeRequest(key=b"x")).header.revision == views[-1]
            for at, want in views.items():
                if at < 0:
                    continue
                r = kv.Range(rpc_pb2.RangeRequest(key=b"big/", range_end=b"big0", revision=at))
                got = [
                    (x.key, x.create_revision, x.mod_revision, x.version, x.value) for x in r.kvs
                ]
                assert got == want, at
            assert len(views[0]) == KEYS - 200
            assert any(len(v[4]) > 20000 for v in views[0])
    finally:
        p.stop()
    shutil.rmtree(p.data_dir)


class SmallQuotaEtcd(ServerProcess):
    def command(self) -> list[str]:
        return [*super().command(), "--quota-backend-bytes=400000"]


def test_an_alarm_of_the_etcd_member_is_carried(tmp_path: Path) -> None:
    etcd = SmallQuotaEtcd("etcd", tmp_path / "etcd" / "data", name="full")
    try:
        etcd.start()
        for i in range(40):
            out = etcdctl(etcd.endpoint, "put", f"fill{i}", "x" * 50000)
            if out.returncode != 0:
                assert "database space exceeded" in out.stderr
                break
        else:
            pytest.fail("etcd never raised NOSPACE")
        want = ok(etcdctl(etcd.endpoint, "alarm", "list"))
        assert want.startswith("memberID:") and want.endswith("alarm:NOSPACE \n"), want
        snap = tmp_path / "full.snapshot"
        ok(etcdctl(etcd.endpoint, "snapshot", "save", str(snap)))
    finally:
        etcd.stop()
    # etcd's own backend file, copied from its stopped data dir, restores too (no trailer).
    raw = tmp_path / "etcd" / "data" / "member" / "snap" / "db"
    q = restore_and_start(raw, tmp_path / "raw", "--skip-hash-check")
    try:
        assert ok(etcdctl(q.endpoint, "alarm", "list")) == want
        assert as_json(etcdctl(q.endpoint, "get", "fill0", "-w", "json"))["kvs"][0]["version"] == 1
    finally:
        q.stop()
    p = restore_and_start(snap, tmp_path)
    try:
        assert ok(etcdctl(p.endpoint, "alarm", "list")) == want
        refused = etcdctl(p.endpoint, "put", "more", "x")
        assert refused.returncode != 0 and "database space exceeded" in refused.stderr
        assert ok(etcdctl(p.endpoint, "alarm", "disarm")) == want
        ok(etcdctl(p.endpoint, "put", "more", "x"))
    finally:
        p.stop()
