"""Migration to etcd: a petcd snapshot converted by ``petcdutl snapshot convert --to etcd``,
restored by the real etcdctl, served by the real etcd, compared with the petcd it came from.

Theory of operation: a module fixture starts petcd on free loopback ports and writes the same
history as the import test (tests/compat/test_etcd_snapshot_import_compat.py: overwrites,
deletes, a txn-free multi-delete, a compaction, leases with keys, a value over a page, users
and roles, auth enabled) plus a few thousand keys (branch pages in the bbolt file), asks it
the import test's questions with the real etcdctl, then stops it and keeps its backend as a
snapshot in petcd's own format (LMDB and SHA-256: what petcd's Snapshot RPC sent before it
sent etcd's format, docs/enhancements/0012). Each test converts that file and checks the
result with the real tools: ``etcdctl snapshot status``, ``etcdctl snapshot restore`` then
``/usr/bin/etcd`` on the restored dir answering the same questions, and petcdutl's own restore
of the converted file (the round trip). With
PETCD_ETCD35_BIN_DIR naming a dir holding etcd and etcdutl 3.5.17 built from the Go module
proxy, etcdutl 3.5's status (bbolt's full ``Tx.Check``) and restore and etcd 3.5 are checked
too; to build them: ``go build -o DIR/etcd ./cmd/etcd`` in tests/compat/thirdparty/etcd_e2e,
and in an empty module ``go get go.etcd.io/etcd/etcdutl/v3@v3.5.17 && go build -o
DIR/etcdutl go.etcd.io/etcd/etcdutl/v3``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.snap.bbolt import BRANCH_PAGE, BoltFile
from petcd.utl.hashkv import copy_backend
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess
from tests.compat.test_etcd_snapshot_import_compat import (
    ROOT,
    as_json,
    ask,
    error,
    ok,
    petcdutl,
    restore_and_start,
)
from tests.integration.petcd_proc import PetcdProcess, etcdctl

pytestmark = pytest.mark.skipif(
    not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)),
    reason="real etcd / etcdctl not installed (make etcd)",
)

ETCD35_DIR = os.environ.get("PETCD_ETCD35_BIN_DIR", "")
BULK = 3000


@dataclass
class Source:
    snapshot: Path  # petcd's own snapshot format (its LMDB backend and SHA-256), for convert
    rpc_snapshot: Path  # what the real etcdctl saved from petcd's Snapshot RPC (etcd's format)
    answers: dict[str, Any]
    bulk: list[tuple[bytes, int, int, int, bytes]]
    log: Path  # the source member's log


def petcd_format_snapshot(backend: Path, out: Path) -> None:
    """A snapshot file in petcd's own format (what the Snapshot RPC sent before etcd's format,
    docs/enhancements/0012): a compacted copy of the LMDB backend, then its SHA-256."""
    copy_backend(str(backend), str(out))
    data = out.read_bytes()
    out.write_bytes(data + hashlib.sha256(data).digest())


def _bulk_grpc(endpoint: str) -> list[tuple[bytes, int, int, int, bytes]]:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        r = kv.Range(rpc_pb2.RangeRequest(key=b"bulk/", range_end=b"bulk0"))
        return [(x.key, x.create_revision, x.mod_revision, x.version, x.value) for x in r.kvs]


def _bulk(endpoint: str) -> list[tuple[bytes, int, int, int, bytes]]:
    out = as_json(etcdctl(endpoint, ROOT, "get", "bulk/", "--prefix", "-w", "json"))["kvs"]
    return [
        (
            base64.b64decode(x["key"]),
            x["create_revision"],
            x["mod_revision"],
            x["version"],
            base64.b64decode(x.get("value", "")),
        )
        for x in out
    ]


@contextlib.contextmanager
def build_source(base: Path, blobs: int = 0) -> Iterator[Source]:
    """A petcd member with the import test's history, ``BULK`` keys and ``blobs`` values of
    1 MiB, saved with the real etcdctl, asked the import test's questions, then stopped and
    its backend kept as a petcd-format snapshot too."""
    p = PetcdProcess(base / "petcd", name="src")
    p.start()
    try:
        e = p.endpoint
        with grpc.insecure_channel(e) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
            for i in range(BULK):
                kv.Put(rpc_pb2.PutRequest(key=b"bulk/%05d" % i, value=b"b%d" % i))
            for i in range(0, BULK, 7):
                kv.Put(rpc_pb2.PutRequest(key=b"bulk/%05d" % i, value=b"again-%d" % i))
        bulk = _bulk_grpc(e)
        for i in range(1, 31):
            ok(etcdctl(e, "put", f"k{i:02d}", f"value-{i}"))
        for i in range(1, 6):
            ok(etcdctl(e, "put", "k01", f"again-{i}"))
        ok(etcdctl(e, "del", "k02"))
        ok(etcdctl(e, "del", "k1", "--prefix"))
        compact_rev = int(as_json(etcdctl(e, "get", "k01", "-w", "json"))["header"]["revision"])
        ok(etcdctl(e, "put", "k02", "reborn"))
        ok(etcdctl(e, "compact", str(compact_rev)))
        leases = [ok(etcdctl(e, "lease", "grant", ttl)).split()[1] for ttl in ("600", "3600")]
        ok(etcdctl(e, "put", "leased/a", "1", f"--lease={leases[0]}"))
        ok(etcdctl(e, "put", "leased/b", "2", f"--lease={leases[0]}"))
        ok(etcdctl(e, "put", "leased/c", "3", f"--lease={leases[1]}"))
        ok(etcdctl(e, "put", "k03", "big:" + "x" * 9000))
        with grpc.insecure_channel(e) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
            for i in range(blobs):
                kv.Put(rpc_pb2.PutRequest(key=b"blob/%d" % i, value=os.urandom(1 << 20)))
        ok(etcdctl(e, "user", "add", "root:rootpw"))
        ok(etcdctl(e, "user", "add", "u1:u1pw"))
        ok(etcdctl(e, "role", "add", "reader"))
        ok(etcdctl(e, "role", "grant-permission", "reader", "read", "k0", "k1"))
        ok(etcdctl(e, "role", "grant-permission", "reader", "readwrite", "leased/", "--prefix"))
        ok(etcdctl(e, "user", "grant-role", "u1", "reader"))
        ok(etcdctl(e, "auth", "enable"))
        rpc_snap = base / "rpc.snapshot"
        ok(etcdctl(e, ROOT, "snapshot", "save", str(rpc_snap)))
        answers = ask(e, leases, compact_rev)
        answers["bulk"] = _bulk(e)
        assert answers["bulk"] == bulk
        p.terminate()  # a clean stop: the backend holds everything applied
        snap = base / "petcd.snapshot"
        petcd_format_snapshot(p.data_dir / "member" / "snap" / "db", snap)
        answers = {**answers, "leases": leases, "compact_rev": compact_rev}
        yield Source(snap, rpc_snap, answers, bulk, p.log_path)
    finally:
        p.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    with build_source(tmp_path_factory.mktemp("etcd-export")) as s:
        yield s


@pytest.fixture(scope="module")
def converted(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "etcd.snapshot"
    ok(petcdutl("snapshot", "convert", "--to", "etcd", str(source.snapshot), str(out)))
    return out


def _status(binary: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [binary, "snapshot", "status", str(path), "-w", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return as_json(out)


def test_etcdctl_status_of_the_converted_file(source: Source, converted: Path) -> None:
    st = _status(ETCDCTL_BIN, converted)
    assert st == as_json(petcdutl("snapshot", "status", str(converted), "-w", "json"))
    assert st["revision"] == source.answers["revision"]
    petcd_st = as_json(petcdutl("snapshot", "status", str(source.snapshot), "-w", "json"))
    assert st["revision"] == petcd_st["revision"]
    assert st["totalSize"] == os.path.getsize(converted) - 32
    with BoltFile(str(converted)) as db:
        assert db.meta.page_count * db.meta.page_size == st["totalSize"]
        # thousands of keys: the key bucket has a branch page above its leaves
        assert set(db.buckets()) >= {b"key", b"meta", b"lease", b"authUsers", b"members"}
        header = db._find((b"key",))
        page, flags, _ = db._page(int.from_bytes(header[:8], "little"))
        assert flags == BRANCH_PAGE and len(page) == db.meta.page_size
    if ETCD35_DIR:
        assert _status(os.path.join(ETCD35_DIR, "etcdutl"), converted) == st


def _restore_with(tool: list[str], snap: Path, server: ServerProcess) -> None:
    peer = f"http://127.0.0.1:{server.peer_port}"
    out = subprocess.run(
        [
            *tool,
            "snapshot",
            "restore",
            str(snap),
            "--data-dir",
            str(server.data_dir),
            "--name",
            server.name,
            "--initial-cluster",
            f"{server.name}={peer}",
            "--initial-advertise-peer-urls",
            peer,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ok(out)


def _compare(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in ("revision", "kvs", "kvs_at_compact", "below_compact", "lease_list", "bulk"):
        assert got[key] == want[key], key
    assert got["below_compact"][1].endswith("required revision has been compacted")
    for lease in want["leases"]:
        assert got[f"lease {lease}"] == want[f"lease {lease}"], lease
    assert want[f"lease {want['leases'][0]}"]["keys"]
    for key in ("users", "user u1", "role reader", "role root", "anonymous", "u1 reads"):
        assert got[key] == want[key], key
    assert "permission denied" in got["u1 writes"][1]


def _serve(server: ServerProcess, want: dict[str, Any]) -> dict[str, Any]:
    server.start()
    try:
        got = ask(server.endpoint, want["leases"], want["compact_rev"])
        got["bulk"] = _bulk(server.endpoint)
        # the restored etcd goes on writing at the next revision
        put = as_json(etcdctl(server.endpoint, ROOT, "put", "after", "1", "-w", "json"))
        got["next_revision"] = put["header"]["revision"]
    finally:
        server.stop()
    return got


def test_real_etcd_restores_and_serves_the_converted_snapshot(
    source: Source, converted: Path, tmp_path: Path
) -> None:
    etcd = ServerProcess("etcd", tmp_path / "restored", name="m1")
    _restore_with([ETCDCTL_BIN], converted, etcd)
    got = _serve(etcd, source.answers)
    _compare(got, source.answers)
    assert got["next_revision"] == source.answers["revision"] + 1


@pytest.mark.skipif(not ETCD35_DIR, reason="PETCD_ETCD35_BIN_DIR not set (etcd 3.5.17 build)")
def test_etcd35_restores_and_serves_the_converted_snapshot(
    source: Source, converted: Path, tmp_path: Path
) -> None:
    etcd = ServerProcess(
        "etcd", tmp_path / "restored35", name="m1", binary=os.path.join(ETCD35_DIR, "etcd")
    )
    _restore_with([os.path.join(ETCD35_DIR, "etcdutl")], converted, etcd)
    got = _serve(etcd, source.answers)
    _compare(got, source.answers)
    assert got["next_revision"] == source.answers["revision"] + 1


def test_round_trip_through_the_etcd_file_restores_the_same_petcd(
    source: Source, converted: Path, tmp_path: Path
) -> None:
    p = restore_and_start(converted, tmp_path)
    try:
        got = ask(p.endpoint, source.answers["leases"], source.answers["compact_rev"])
        got["bulk"] = _bulk(p.endpoint)
    finally:
        p.stop()
    _compare(got, source.answers)


def test_bad_input_is_refused_and_no_output_is_written(
    source: Source, converted: Path, tmp_path: Path
) -> None:
    data = bytearray(source.snapshot.read_bytes())
    out = tmp_path / "out.db"
    # a flipped byte: the trailer catches it, with etcd's message
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.snapshot"
    bad.write_bytes(bytes(data))
    assert error(petcdutl("snapshot", "convert", "--to", "etcd", str(bad), str(out))).startswith(
        "Error: expected sha256 ["
    )
    # not a snapshot at all
    bad.write_bytes(b"not a database" * 1000)
    msg = error(petcdutl("snapshot", "convert", "--to", "etcd", str(bad), str(out)))
    assert "is not a petcd snapshot or backend" in msg
    # an etcd file is not converted again
    msg = error(petcdutl("snapshot", "convert", "--to", "etcd", str(converted), str(out)))
    assert msg.endswith("is already an etcd (bbolt) file")
    # missing input, unknown target, missing --to, existing output
    msg = error(petcdutl("snapshot", "convert", "--to", "etcd", str(tmp_path / "nope"), str(out)))
    assert msg == f"Error: open {tmp_path / 'nope'}: no such file or directory"
    r = petcdutl("snapshot", "convert", "--to", "consul", str(source.snapshot), str(out))
    assert r.returncode == 128 and 'unsupported --to "consul"' in r.stderr
    r = petcdutl("snapshot", "convert", str(source.snapshot), str(out))
    assert r.returncode == 1 and 'required flag(s) "to" not set' in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.snapshot"]
    out.write_bytes(b"keep")
    msg = error(petcdutl("snapshot", "convert", "--to", "etcd", str(source.snapshot), str(out)))
    assert msg == f"Error: output file {out} already exists"
    assert out.read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == ["bad.snapshot", "out.db"]


def test_help_names_the_command() -> None:
    out = ok(petcdutl("snapshot", "convert", "--help"))
    assert "snapshot convert <filename> <output filename> --to etcd" in out
    assert "  convert     Converts a petcd snapshot" in ok(petcdutl("snapshot", "--help"))
