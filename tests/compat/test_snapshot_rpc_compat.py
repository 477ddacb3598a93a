"""The Snapshot RPC sends etcd's format: the real etcdctl's ``snapshot save`` from petcd, then
``snapshot status`` and ``snapshot restore`` with the real etcdctl 3.4, the real etcd serving
the restored dir, and petcdutl's restore of the same file serving the same
(docs/enhancements/0012-snapshot-rpc-bbolt.md).

Theory of operation: the module fixture is the export test's source member
(tests/compat/test_etcd_snapshot_export_compat.py: history, a compaction, leases with keys,
users, roles and auth, thousands of keys) with five values of 1 MiB on top, so that the
backend copy is over the member's thread limit and the conversion runs in a child process;
the export test's smaller member (and tests/integration/test_utl.py) take the worker thread.
The file saved by the real etcdctl is checked as etcd's tools and etcd itself see it, and
every answer of the member that sent it is compared with the restored servers' answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.server.member import SNAPSHOT_THREAD_BYTES_MAX
from petcd.snap.bbolt import BoltFile
from tests.compat.servers import ETCD_BIN, ETCDCTL_BIN, ServerProcess
from tests.compat.test_etcd_snapshot_export_compat import (
    ETCD35_DIR,
    Source,
    _bulk,
    _compare,
    _restore_with,
    _serve,
    _status,
    build_source,
)
from tests.compat.test_etcd_snapshot_import_compat import ask, ok, petcdutl, restore_and_start

pytestmark = pytest.mark.skipif(
    not (os.path.exists(ETCD_BIN) and os.path.exists(ETCDCTL_BIN)),
    reason="real etcd / etcdctl not installed (make etcd)",
)

BLOBS = 5  # values of 1 MiB: the backend copy is over the thread limit


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    with build_source(tmp_path_factory.mktemp("snapshot-rpc"), blobs=BLOBS) as s:
        yield s


def test_the_saved_file_is_etcds_format_with_its_sha256(source: Source) -> None:
    data = source.rpc_snapshot.read_bytes()
    assert len(data) % 512 == 32  # a bbolt file of whole pages, then etcd's trailer
    with BoltFile(str(source.rpc_snapshot)) as db:
        db.check()
        assert db.meta.page_count * db.meta.page_size == len(data) - 32
        assert set(db.buckets()) == {
            b"alarm",
            b"auth",
            b"authRoles",
            b"authUsers",
            b"cluster",
            b"key",
            b"lease",
            b"members",
            b"members_removed",
            b"meta",
        }


def test_etcdctl_snapshot_status_of_what_petcd_sent(source: Source) -> None:
    st = _status(ETCDCTL_BIN, source.rpc_snapshot)
    assert st["revision"] == source.answers["revision"]
    assert st["totalSize"] == os.path.getsize(source.rpc_snapshot) - 32
    # every record: the key history, leases, users, roles, auth, meta, member, cluster version
    with BoltFile(str(source.rpc_snapshot)) as db:
        assert st["totalKey"] == sum(1 for b in db.buckets() for _ in db.items(b))
        assert sum(1 for _ in db.items(b"key")) > 3000
    assert st == json.loads(
        ok(petcdutl("snapshot", "status", str(source.rpc_snapshot), "-w", "json"))
    )
    if ETCD35_DIR:
        assert _status(os.path.join(ETCD35_DIR, "etcdutl"), source.rpc_snapshot) == st


def test_real_etcd_restores_and_serves_what_petcd_sent(source: Source, tmp_path: Path) -> None:
    etcd = ServerProcess("etcd", tmp_path / "restored", name="m1")
    _restore_with([ETCDCTL_BIN], source.rpc_snapshot, etcd)
    got = _serve(etcd, source.answers)
    _compare(got, source.answers)
    assert got["kvs"] == source.answers["kvs"]  # the 1 MiB values too
    assert got["next_revision"] == source.answers["revision"] + 1


@pytest.mark.skipif(not ETCD35_DIR, reason="PETCD_ETCD35_BIN_DIR not set (etcd 3.5.17 build)")
def test_etcd35_restores_and_serves_what_petcd_sent(source: Source, tmp_path: Path) -> None:
    etcd = ServerProcess(
        "etcd", tmp_path / "restored35", name="m1", binary=os.path.join(ETCD35_DIR, "etcd")
    )
    _restore_with([os.path.join(ETCD35_DIR, "etcdutl")], source.rpc_snapshot, etcd)
    got = _serve(etcd, source.answers)
    _compare(got, source.answers)


def test_petcdutl_restores_what_petcd_sent_and_petcd_serves_the_same(
    source: Source, tmp_path: Path
) -> None:
    p = restore_and_start(source.rpc_snapshot, tmp_path)
    try:
        got = ask(p.endpoint, source.answers["leases"], source.answers["compact_rev"])
        got["bulk"] = _bulk(p.endpoint)
    finally:
        p.stop()
    _compare(got, source.answers)
    assert got["kvs"] == source.answers["kvs"]


def test_a_snapshot_in_petcds_own_format_still_restores(source: Source, tmp_path: Path) -> None:
    # Files saved from petcd before the RPC sent etcd's format (LMDB and its SHA-256).
    p = restore_and_start(source.snapshot, tmp_path)
    try:
        got = ask(p.endpoint, source.answers["leases"], source.answers["compact_rev"])
        got["bulk"] = _bulk(p.endpoint)
    finally:
        p.stop()
    _compare(got, source.answers)


def test_the_member_converted_in_a_child_and_logged_etcds_lines(source: Source) -> None:
    lines = [json.loads(x) for x in source.log.read_text().splitlines() if x.startswith("{")]
    by_msg = {x["msg"]: x for x in lines}
    converting = by_msg["converting database snapshot to etcd's format"]
    assert converting["converter"] == "process"
    assert converting["size-bytes"] > SNAPSHOT_THREAD_BYTES_MAX
    size = os.path.getsize(source.rpc_snapshot) - 32
    sending = by_msg["sending database snapshot to client"]
    assert sending["total-bytes"] == size and sending["size"].endswith(" MB")
    checksum = by_msg["sending database sha256 checksum to client"]
    assert (checksum["total-bytes"], checksum["checksum-size"]) == (size, 32)
    sent = by_msg["successfully sent database snapshot to client"]
    assert sent["total-bytes"] == size and sent["took"].endswith(("now", "ago"))
    member_dir = source.log.parent / "petcd" / "member"
    assert not [n for n in os.listdir(member_dir) if n.startswith("snapshot-")]
