"""petcd.utl: snapshot status/restore, hashkv and defrag on files built in a temp dir."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import pytest

from petcd.backend import KEY, LEASE, MEMBERS, Backend
from petcd.mvcc import crc32c
from petcd.mvcc.kvstore import KVStore
from petcd.mvcc.requests import DeleteRangeRequest, PutRequest, RangeRequest
from petcd.raft import confchange
from petcd.raft.types import ConfChangeType, EntryType, Index, Term
from petcd.server.ids import cluster_id, member_id
from petcd.snap import Snapshotter
from petcd.utl import (
    BadClusterConfigError,
    DataDirInUseError,
    DataDirNotEmptyError,
    RestoreConfig,
    RevisionError,
    SnapshotCorruptError,
    SnapshotHashMismatchError,
    SnapshotHashMissingError,
    WalDirExistsError,
    defrag_data_dir,
    hash_kv,
    restore,
    status,
)
from petcd.utl.snapshot import has_checksum
from petcd.wal import read_all, snapshot_markers

TOKEN = "tok"


def make_backend(path: Path, n_keys: int = 5) -> tuple[int, int]:
    """A member-like backend: keys, a lease record, an old member; returns (rev, hash)."""
    be = Backend(str(path))
    store = KVStore(be)
    index = 0
    for i in range(n_keys):
        index += 1
        store.apply(
            PutRequest(f"k{i}".encode(), f"v{i}".encode()), index=Index(index), term=Term(2)
        )
    index += 1
    store.apply(PutRequest(b"k0", b"v0-2"), index=Index(index), term=Term(2))
    be.put(LEASE, (7).to_bytes(8, "big"), b"lease-record")
    be.put(MEMBERS, (99).to_bytes(8, "big"), b'{"name": "old", "peerURLs": ["http://x:1"]}')
    be.commit()
    rev = store.current_revision
    h = store.hash_kv().hash
    be.close()
    return rev, h


def make_snapshot(tmp_path: Path, n_keys: int = 5) -> tuple[Path, int, int]:
    """A snapshot file as Maintenance.Snapshot streams it: backend copy + sha256."""
    rev, h = make_backend(tmp_path / "src.db", n_keys)
    be = Backend(str(tmp_path / "src.db"))
    snap = tmp_path / "snap.db"
    with open(snap, "wb") as f:
        be.copy_to(f)
    be.close()
    data = snap.read_bytes()
    snap.write_bytes(data + hashlib.sha256(data).digest())
    return snap, rev, h


def urls(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def cfg(snap: Path, data_dir: Path, **kw: object) -> RestoreConfig:
    base: dict[str, object] = {
        "snapshot_path": str(snap),
        "name": "a",
        "data_dir": str(data_dir),
        "peer_urls": urls(1),
        "initial_cluster": f"a={urls(1)},b={urls(2)},c={urls(3)}",
        "initial_cluster_token": TOKEN,
    }
    base.update(kw)
    return RestoreConfig(**base)  # type: ignore[arg-type]


# -- status ----------------------------------------------------------------------------------


def test_status_reports_revision_keys_size_and_a_hash_of_all_buckets(tmp_path: Path) -> None:
    snap, rev, _ = make_snapshot(tmp_path)
    st = status(str(snap))
    assert st.revision == rev == 7
    assert st.total_size == snap.stat().st_size - 32
    assert st.total_size % 4096 == 0
    # 6 key records, the lease, the member, meta (consistent index) records.
    assert st.total_key >= 8
    # The hash changes when any bucket's content does.
    be = Backend(str(tmp_path / "src.db"))
    be.put(LEASE, (8).to_bytes(8, "big"), b"x")
    be.close()
    snap2 = tmp_path / "snap2.db"
    be = Backend(str(tmp_path / "src.db"))
    with open(snap2, "wb") as f:
        be.copy_to(f)
    be.close()
    st2 = status(str(snap2))
    assert st2.total_key == st.total_key + 1
    assert st2.hash != st.hash
    assert st2.total_size == snap2.stat().st_size  # no trailer: the whole file


def test_status_hash_is_crc32c_over_names_keys_and_values(tmp_path: Path) -> None:
    be = Backend(str(tmp_path / "db"))
    be.put(KEY, b"\x00" * 7 + b"\x05_" + b"\x00" * 8, b"record")
    be.close()
    st = status(str(tmp_path / "db"))
    expected = 0
    # Every bucket petcd creates, in name order; only "key" holds something.
    for name in sorted(
        [
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
        ]
    ):
        expected = crc32c.update(expected, name)
        if name == b"key":
            expected = crc32c.update(expected, b"\x00" * 7 + b"\x05_" + b"\x00" * 8 + b"record")
    assert st.hash == expected
    assert st.revision == 5
    assert st.total_key == 1


def test_status_of_a_file_that_is_not_a_backend_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not lmdb" * 1000)
    with pytest.raises(SnapshotCorruptError, match="not a petcd snapshot"):
        status(str(bad))


def test_checksum_is_recognised_by_size() -> None:
    assert has_checksum(4096 * 3 + 32)
    assert not has_checksum(4096 * 3)


# -- restore ---------------------------------------------------------------------------------


def test_restore_builds_a_member_data_dir(tmp_path: Path) -> None:
    snap, rev, h = make_snapshot(tmp_path)
    out = tmp_path / "out"
    res = restore(cfg(snap, out))
    ids = {n: member_id([urls(p)], TOKEN) for n, p in (("a", 1), ("b", 2), ("c", 3))}
    assert res.member_id == ids["a"]
    assert res.cluster_id == cluster_id(ids.values())
    assert res.revision == rev
    # The WAL: metadata, one ADD_NODE per member, commit n, a snapshot marker at n.
    wal_dir = out / "member" / "wal"
    markers = snapshot_markers(wal_dir)
    assert [(m.index, m.term) for m in markers] == [(3, 1)]
    assert markers[-1].conf_state.voters == frozenset(ids.values())
    state = read_all(wal_dir)
    assert int.from_bytes(state.metadata[:8], "big") == ids["a"]
    assert int.from_bytes(state.metadata[8:], "big") == res.cluster_id
    assert state.hard_state.commit == 3 and state.hard_state.term == 1
    ents = state.entries
    assert [e.type for e in ents] == [EntryType.CONF_CHANGE] * 3
    ccs = [confchange.decode(e.data) for e in ents]
    assert all(cc.type == ConfChangeType.ADD_NODE for cc in ccs)
    assert sorted(cc.node_id for cc in ccs) == sorted(ids.values())
    names = {json.loads(cc.context)["name"] for cc in ccs}
    assert names == {"a", "b", "c"}
    # The snap file matches the marker.
    assert Snapshotter(str(out / "member" / "snap")).names() == [
        "0000000000000001-0000000000000003.snap"
    ]
    # The backend: keys kept, membership replaced, consistent index at the marker.
    assert not (out / "member" / "snap" / "db-lock").exists()
    be = Backend(str(out / "member" / "snap" / "db"))
    try:
        assert be.consistent_index() == (3, 1)
        members = {int.from_bytes(k, "big"): json.loads(v) for k, v in be.iterate(MEMBERS)}
        assert set(members) == set(ids.values())
        assert members[ids["b"]] == {"name": "b", "peerURLs": [urls(2)]}
        assert be.get(LEASE, (7).to_bytes(8, "big")) == b"lease-record"
        store = KVStore(be)
        assert store.current_revision == rev
        assert store.hash_kv().hash == h
        got = store.range(RangeRequest(b"k", b"l"))
        assert [(kv.key, kv.value) for kv in got.kvs] == [
            (b"k0", b"v0-2"),
            (b"k1", b"v1"),
            (b"k2", b"v2"),
            (b"k3", b"v3"),
            (b"k4", b"v4"),
        ]
    finally:
        be.close()


def test_restore_with_separate_wal_dir(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    restore(cfg(snap, tmp_path / "out", wal_dir=str(tmp_path / "wal")))
    assert snapshot_markers(tmp_path / "wal")[-1].index == 3
    assert not (tmp_path / "out" / "member" / "wal").exists()


def test_restore_refuses_a_non_empty_data_dir_and_touches_nothing(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious").write_text("x")
    with pytest.raises(DataDirNotEmptyError) as e:
        restore(cfg(snap, out))
    assert str(e.value) == f'data-dir "{out}" not empty or could not be read'
    assert sorted(os.listdir(out)) == ["precious"]
    # An empty existing dir is fine, as in etcd.
    empty = tmp_path / "empty"
    empty.mkdir()
    restore(cfg(snap, empty))


def test_restore_refuses_an_existing_wal_dir(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    (tmp_path / "wal").mkdir()
    with pytest.raises(WalDirExistsError, match=r'wal-dir ".*wal" exists'):
        restore(cfg(snap, tmp_path / "out", wal_dir=str(tmp_path / "wal")))


def test_restore_detects_a_damaged_snapshot_and_cleans_up(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    data = bytearray(snap.read_bytes())
    data[5000] ^= 0xFF
    snap.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(SnapshotHashMismatchError, match=r"^expected sha256 \[\d+ "):
        restore(cfg(snap, out, wal_dir=str(tmp_path / "wal")))
    assert not out.exists()
    assert not (tmp_path / "wal").exists()
    assert not [n for n in os.listdir(tmp_path) if "petcdutl-restore" in n]


def test_restore_without_a_trailer_needs_skip_hash_check(tmp_path: Path) -> None:
    make_backend(tmp_path / "src.db")
    with pytest.raises(SnapshotHashMissingError, match="--skip-hash-check=false"):
        restore(cfg(tmp_path / "src.db", tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    res = restore(cfg(tmp_path / "src.db", tmp_path / "out", skip_hash_check=True))
    assert res.revision == 7


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": "z"}, 'couldn\'t find local name "z"'),
        ({"peer_urls": urls(9)}, "missing from --initial-advertise-peer-urls"),
        ({"initial_cluster": f"a={urls(1)},b={urls(1)}"}, "duplicate url"),
        ({"initial_cluster": "a"}, "initial-cluster"),
        ({"bump_revision": 5}, "--mark-compacted required"),
        ({"mark_compacted": True}, "--mark-compacted required"),
    ],
)
def test_restore_rejects_bad_cluster_flags(
    tmp_path: Path, kw: dict[str, object], match: str
) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    with pytest.raises(BadClusterConfigError, match=match):
        restore(cfg(snap, tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()


def test_restore_of_something_that_is_not_a_backend(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x01" * 4096)
    with pytest.raises(SnapshotCorruptError):
        restore(cfg(bad, tmp_path / "out", skip_hash_check=True))
    assert not (tmp_path / "out").exists()


def test_bump_revision_and_mark_compacted(tmp_path: Path) -> None:
    snap, rev, _ = make_snapshot(tmp_path)
    out = tmp_path / "out"
    res = restore(cfg(snap, out, bump_revision=1000, mark_compacted=True))
    assert res.revision == rev + 1000
    be = Backend(str(out / "member" / "snap" / "db"))
    try:
        store = KVStore(be)
        assert store.current_revision == rev + 1000
        assert store.compact_revision == rev + 1000
        while store.compaction_step():
            pass
        # The live keys survive; the next write gets the bumped revision + 1.
        assert len(store.range(RangeRequest(b"k", b"l")).kvs) == 5
        resp = store.apply(PutRequest(b"new", b"x"), index=Index(4), term=Term(2))
        assert resp.header.revision == rev + 1001
    finally:
        be.close()


def test_progress_is_reported_up_to_the_total(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    seen: list[tuple[int, int]] = []
    restore(cfg(snap, tmp_path / "out"), progress=lambda c, t: seen.append((c, t)))
    total = snap.stat().st_size - 32
    assert seen and seen[-1] == (total, total)


# -- hashkv ----------------------------------------------------------------------------------


def test_hashkv_of_snapshot_and_data_dir_equals_the_store_hash(tmp_path: Path) -> None:
    snap, rev, h = make_snapshot(tmp_path)
    r = hash_kv(str(snap))
    assert (r.hash, r.hash_revision, r.compact_revision) == (h, rev, -1)
    out = tmp_path / "out"
    restore(cfg(snap, out))
    assert hash_kv(str(out)).hash == h
    older = hash_kv(str(snap), 3)
    assert older.hash_revision == 3 and older.hash != h
    with pytest.raises(RevisionError, match="future revision"):
        hash_kv(str(snap), rev + 1)


def test_hashkv_of_a_compacted_revision(tmp_path: Path) -> None:
    be = Backend(str(tmp_path / "db"))
    store = KVStore(be)
    for i in range(1, 5):
        store.apply(PutRequest(b"a", str(i).encode()), index=Index(i), term=Term(1))
    store.compact(3, index=Index(5), term=Term(1))
    be.close()
    with pytest.raises(RevisionError, match="compacted"):
        hash_kv(str(tmp_path / "db"), 2)
    assert hash_kv(str(tmp_path / "db")).compact_revision == 3


# -- defrag ----------------------------------------------------------------------------------


def test_defrag_shrinks_a_stopped_members_backend(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    out = tmp_path / "out"
    restore(cfg(snap, out))
    db = out / "member" / "snap" / "db"
    be = Backend(str(db))
    store = KVStore(be)
    for i in range(300):
        store.apply(PutRequest(b"big%d" % i, b"x" * 2000), index=Index(4 + i), term=Term(2))
    be.commit()
    store.apply(DeleteRangeRequest(b"big", b"bih"), index=Index(400), term=Term(2))
    store.compact(store.current_revision, index=Index(401), term=Term(2))
    while store.compaction_step():
        pass
    be.close()
    h = hash_kv(str(out)).hash
    started: list[int] = []
    r = defrag_data_dir(str(out), on_start=lambda p, s: started.append(s.size_bytes))
    assert started == [r.before.size_bytes]
    assert r.after.size_bytes < r.before.size_bytes
    assert r.after.size_bytes == db.stat().st_size
    assert hash_kv(str(out)).hash == h


def test_defrag_refuses_a_running_member(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    out = tmp_path / "out"
    restore(cfg(snap, out))
    fd = os.open(out / "member" / "wal", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running member holds
        before = (out / "member" / "snap" / "db").read_bytes()
        with pytest.raises(DataDirInUseError, match="in use by a running petcd member"):
            defrag_data_dir(str(out))
        assert (out / "member" / "snap" / "db").read_bytes() == before
    finally:
        os.close(fd)


def test_defrag_of_a_dir_that_is_not_a_data_dir(tmp_path: Path) -> None:
    from petcd.utl import DataDirInvalidError

    with pytest.raises(DataDirInvalidError, match="not a petcd data dir"):
        defrag_data_dir(str(tmp_path))


def test_restore_reports_a_damaged_header_as_a_hash_mismatch(tmp_path: Path) -> None:
    snap, _, _ = make_snapshot(tmp_path)
    data = bytearray(snap.read_bytes())
    data[0:64] = b"\xff" * 64  # LMDB's meta page: the file no longer opens
    snap.write_bytes(bytes(data))
    with pytest.raises(SnapshotHashMismatchError):
        restore(cfg(snap, tmp_path / "out"))
    with pytest.raises(SnapshotCorruptError):
        restore(cfg(snap, tmp_path / "out", skip_hash_check=True))
    assert not (tmp_path / "out").exists()


def test_defrag_refuses_a_backend_another_process_reads(tmp_path: Path) -> None:
    """A member with its WAL elsewhere holds no lock in the data dir; LMDB's readers tell."""
    import subprocess
    import sys

    snap, _, _ = make_snapshot(tmp_path)
    out = tmp_path / "out"
    restore(cfg(snap, out, wal_dir=str(tmp_path / "wal")))
    db = out / "member" / "snap" / "db"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import lmdb, sys\n"
            "env = lmdb.open(sys.argv[1], subdir=False, max_dbs=16)\n"
            "txn = env.begin()\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "ready\n"
        with pytest.raises(DataDirInUseError, match=f"process {reader.pid} has"):
            defrag_data_dir(str(out))
    finally:
        assert reader.stdin is not None
        reader.stdin.close()
        reader.wait(timeout=10)
    defrag_data_dir(str(out))  # the reader is gone (its slot may remain: a dead pid)
