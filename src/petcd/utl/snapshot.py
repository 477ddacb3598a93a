"""Snapshot files: status, integrity check and restore into a fresh data dir (etcdutl 3.5).

Theory of operation
-------------------
A snapshot file is a backend followed by the SHA-256 of its bytes. ``Maintenance.Snapshot``
(``petcdctl snapshot save``) sends etcd's format, a bbolt file (see the etcd paragraph below;
docs/enhancements/0012-snapshot-rpc-bbolt.md); petcd's own format, which it sent before and
which restore still takes, is a compacted copy of the member's LMDB backend::

    +---------------------------------------+------------------+
    | LMDB or bbolt file (whole 4 KiB pages) | sha256 (32 bytes)|
    +---------------------------------------+------------------+

As in etcd, the trailer is recognised by the size alone: a backend is a whole number of
pages, so ``size % 512 == 32`` means a trailer is present. A ``db`` copied out of a data dir
has none and can only be restored with ``--skip-hash-check``.

``status`` reads every bucket in one read transaction: the hash is CRC-32C over each bucket's
name, then its keys and values in order (etcd's ``snapshot status`` hash, over petcd's
buckets, so values differ from etcd's); the revision is the main revision of the last record
of the ``key`` bucket; total keys counts the records of all buckets; total size is the size
of the backend without the trailer.

``restore`` builds a data dir that ``petcd`` opens as a restart (``petcd.server.member``),
with the same steps as etcd's ``snapshot restore``:

1. refuse if the data dir is not empty (or an explicit --wal-dir exists);
2. copy the backend to ``member/snap/db``, checking the trailer's SHA-256 as it streams;
3. replace the membership: empty the ``members`` and ``members_removed`` buckets and write
   the members of --initial-cluster, with ids derived from their peer URLs and
   --initial-cluster-token exactly as the server derives them (``petcd.server.ids``), so the
   members restored from one snapshot with one --initial-cluster form one new cluster;
4. write a WAL (metadata: member id, cluster id) holding one ADD_NODE conf change per member
   at indexes 1..n, term 1, a hard state committing them, and a snapshot marker at n with
   the voters; write the matching ``<term>-<index>.snap`` file;
5. set the backend's consistent index to (n, 1): on start the member picks the marker, finds
   nothing to replay, and serves the restored keys at the snapshot's revision;
6. optionally (--bump-revision with --mark-compacted) raise the revision: the scheduled
   compaction revision is set to latest + bump; on open mvcc's current revision becomes it
   and the pending compaction runs, so old revisions are gone and watchers of them see a
   compaction, as in etcd.

An etcd-format snapshot (bbolt: ``petcd.snap.bbolt.sniff``; from petcd's Snapshot RPC or from
a real etcd) takes another way through steps 2 and
``status``: its trailer is checked and the whole file read and checked before anything is
created, then ``petcd.utl.etcd_import`` converts its records into a new backend with petcd's
encodings (docs/enhancements/0011-etcd-snapshots.md) and steps 3-6 follow unchanged; its status
is etcdutl's, computed over etcd's buckets.

The dirs are built under temporary names next to the targets and renamed into place last, so
a failed or interrupted restore leaves no half-built data dir (a failure removes the
temporary dirs; a SIGKILL leaves a ``.<name>.petcdutl-restore-<pid>`` dir to delete).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from petcd.backend import KEY, MEMBERS, MEMBERS_REMOVED, META, V2, Backend
from petcd.backend.backend import CONSISTENT_INDEX_KEY
from petcd.mvcc import crc32c
from petcd.mvcc.kvstore import SCHEDULED_COMPACT_KEY
from petcd.raft import confchange
from petcd.raft.types import (
    NONE_ID,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    MemberId,
    SnapshotMetadata,
    Term,
)
from petcd.server.config import parse_initial_cluster, parse_urls
from petcd.server.errors import ConfigError
from petcd.server.ids import cluster_id, member_id
from petcd.snap import Snapshotter, bbolt
from petcd.utl.datadir import DataDir
from petcd.utl.errors import (
    BadClusterConfigError,
    DataDirNotEmptyError,
    SnapshotCorruptError,
    SnapshotHashMismatchError,
    SnapshotHashMissingError,
    UtlError,
    WalDirExistsError,
)
from petcd.wal import WAL

SHA256_SIZE = 32
_COPY_CHUNK_BYTES = 4 * 1024 * 1024
_WAL_META = struct.Struct(">QQ")  # member id, cluster id (as petcd.server.member writes it)
_Q = struct.Struct(">q")
_CI = struct.Struct(">QQ")  # the backend's consistent index record: raft index, term
_MAX_DBS = 16

DEFAULT_NAME = "default"
DEFAULT_PEER_URLS = "http://localhost:2380"
DEFAULT_CLUSTER_TOKEN = "etcd-cluster"


def has_checksum(size_bytes: int) -> bool:
    """Whether a file of this size ends with a SHA-256 trailer (etcd's rule)."""
    return size_bytes % 512 == SHA256_SIZE


@dataclass(frozen=True, slots=True)
class SnapshotStatus:
    """etcdutl's ``snapshot.Status`` (3.5): no storage version in 3.5."""

    hash: int
    revision: int
    total_key: int
    total_size: int


def open_readonly(path: str) -> lmdb.Environment:
    """A petcd snapshot or backend file opened read-only (SnapshotCorruptError if not LMDB)."""
    # A live backend (its lock file beside it) is read through LMDB's reader table, so a
    # running member cannot reuse the pages being read; a snapshot file has no lock file.
    shared = os.path.exists(path + "-lock")
    try:
        return lmdb.open(
            path, subdir=False, readonly=True, lock=shared, max_dbs=_MAX_DBS, readahead=False
        )
    except lmdb.Error as e:
        raise SnapshotCorruptError(
            f"{path} is not a petcd snapshot or backend ({e}), nor an etcd (bbolt) snapshot"
        ) from None


def status(path: str) -> SnapshotStatus:
    """Hash, revision, record count and size of a snapshot file or backend file."""
    size = os.stat(path).st_size
    if bbolt.sniff(path):
        from petcd.utl import etcd_import  # only for etcd's files: it loads the server too

        st = etcd_import.bolt_status(path)
        return SnapshotStatus(st.hash, st.revision, st.total_key, st.total_size)
    data_size = size - SHA256_SIZE if has_checksum(size) else size
    env = open_readonly(path)
    try:
        h = 0
        total = 0
        revision = 0
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
            for name in names:
                try:
                    db = env.open_db(name, txn=txn, create=False)
                except lmdb.Error as e:
                    raise SnapshotCorruptError(f"cannot get hash of bucket {name!r}: {e}") from None
                if name == V2.encode() and not txn.stat(db)["entries"]:
                    continue  # an empty v2 tree's bucket counts for nothing (as in Hash)
                h = crc32c.update(h, name)
                is_key = name == KEY.encode()
                for k, v in txn.cursor(db=db):
                    h = crc32c.update(h, bytes(k) + bytes(v))
                    if is_key:
                        revision = int.from_bytes(k[:8], "big")
                    total += 1
    except lmdb.Error as e:
        raise SnapshotCorruptError(f"snapshot file integrity check failed: {e}") from None
    finally:
        env.close()
    return SnapshotStatus(hash=h, revision=revision, total_key=total, total_size=data_size)


# -- restore -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreConfig:
    """What ``snapshot restore`` takes (etcdutl's RestoreConfig)."""

    snapshot_path: str
    name: str = DEFAULT_NAME
    data_dir: str = ""  # default: "<name>.etcd"
    wal_dir: str = ""  # default: "<data-dir>/member/wal"
    peer_urls: str = DEFAULT_PEER_URLS
    initial_cluster: str = f"{DEFAULT_NAME}={DEFAULT_PEER_URLS}"
    initial_cluster_token: str = DEFAULT_CLUSTER_TOKEN
    skip_hash_check: bool = False
    bump_revision: int = 0
    mark_compacted: bool = False

    @property
    def output_data_dir(self) -> str:
        return self.data_dir or f"{self.name}.etcd"


@dataclass(frozen=True, slots=True)
class RestoredMember:
    id: MemberId
    name: str
    peer_urls: tuple[str, ...]

    def context(self) -> bytes:
        # The server's MemberInfo encoding (conf-change context and ``members`` record).
        return json.dumps({"name": self.name, "peerURLs": list(self.peer_urls)}).encode()


@dataclass(frozen=True, slots=True)
class RestoreResult:
    data_dir: DataDir
    member_id: MemberId
    cluster_id: int
    members: tuple[RestoredMember, ...]
    revision: int  # the revision the restored member serves at


Progress = Callable[[int, int], None]  # (bytes copied, total bytes)


def plan_members(cfg: RestoreConfig) -> tuple[tuple[RestoredMember, ...], MemberId, int]:
    """The members of the new cluster, this member's id and the cluster id."""
    try:
        cluster = parse_initial_cluster(cfg.initial_cluster)
        own_urls = parse_urls(cfg.peer_urls)
    except (ValueError, ConfigError) as e:  # the server's own checks of these flags
        raise BadClusterConfigError(str(e)) from None
    if not cluster:
        raise BadClusterConfigError("--initial-cluster is empty")
    seen: set[str] = set()
    for _, urls in cluster:
        for u in urls:
            if str(u) in seen:
                raise BadClusterConfigError(
                    f"initial cluster {cfg.initial_cluster} has duplicate url {u}"
                )
            seen.add(str(u))
    by_name = {name: tuple(str(u) for u in urls) for name, urls in cluster}
    if cfg.name not in by_name:
        raise BadClusterConfigError(
            f'couldn\'t find local name "{cfg.name}" in the initial cluster configuration'
        )
    if sorted(by_name[cfg.name]) != sorted(str(u) for u in own_urls):
        # etcd's text (it compares after resolving host names; petcd compares as written).
        theirs = ",".join(sorted(by_name[cfg.name]))
        ours = ",".join(sorted(str(u) for u in own_urls))
        entry = ",".join(f"{cfg.name}={u}" for u in sorted(by_name[cfg.name]))
        raise BadClusterConfigError(
            f"--initial-cluster has {entry} but missing from --initial-advertise-peer-urls="
            f'{ours} (resolved urls: "{ours}" != "{theirs}")'
        )
    members = tuple(
        sorted(
            (
                RestoredMember(member_id(list(urls), cfg.initial_cluster_token), name, urls)
                for name, urls in by_name.items()
            ),
            key=lambda m: m.id,
        )
    )
    ids = [m.id for m in members]
    if len(set(ids)) != len(ids):
        raise BadClusterConfigError("two members of --initial-cluster have the same id")
    own = next(m.id for m in members if m.name == cfg.name)
    return members, own, cluster_id(ids)


def _dir_empty(path: str) -> bool:
    try:
        return not os.listdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def copy_and_verify(
    src_path: str, dst_path: str, *, skip_hash_check: bool, progress: Progress | None = None
) -> None:
    """Copy the backend part of ``src_path`` to ``dst_path``, checking the SHA-256 trailer."""
    size = os.stat(src_path).st_size
    hashed = has_checksum(size)
    if not hashed and not skip_hash_check:
        raise SnapshotHashMissingError()
    data_size = size - SHA256_SIZE if hashed else size
    digest = hashlib.sha256()
    copied = 0
    with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
        while copied < data_size:
            chunk = src.read(min(_COPY_CHUNK_BYTES, data_size - copied))
            if not chunk:
                raise SnapshotCorruptError(f"{src_path} shrank while it was being read")
            digest.update(chunk)
            dst.write(chunk)
            copied += len(chunk)
            if progress is not None:
                progress(copied, data_size)
        trailer = src.read(SHA256_SIZE) if hashed else b""
        dst.flush()
        os.fsync(dst.fileno())
    if hashed and not skip_hash_check and digest.digest() != trailer:
        raise SnapshotHashMismatchError(trailer, digest.digest())


def verify_trailer(path: str) -> None:
    """SnapshotHashMismatchError if ``path`` has a SHA-256 trailer that its data fails."""
    size = os.stat(path).st_size
    if not has_checksum(size):
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = size - SHA256_SIZE
        while left > 0:
            chunk = f.read(min(_COPY_CHUNK_BYTES, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        trailer = f.read(SHA256_SIZE)
    if digest.digest() != trailer:
        raise SnapshotHashMismatchError(trailer, digest.digest())


def _check_backend(path: str) -> None:
    env = open_readonly(path)
    try:
        with env.begin() as txn:
            names = {bytes(k) for k, _ in txn.cursor()}
    finally:
        env.close()
    missing = [b for b in (KEY, META) if b.encode() not in names]
    if missing:
        raise SnapshotCorruptError(
            f"the snapshot has no {', '.join(missing)} bucket: it is not a petcd backend"
        )


def restore(cfg: RestoreConfig, *, progress: Progress | None = None) -> RestoreResult:
    """Build a fresh data dir for one member of a new cluster from a snapshot file."""
    if (cfg.bump_revision == 0 and cfg.mark_compacted) or (
        cfg.bump_revision > 0 and not cfg.mark_compacted
    ):
        raise BadClusterConfigError("--mark-compacted required if --revision-bump > 0")
    members, own, cid = plan_members(cfg)
    data_dir = cfg.output_data_dir
    if not _dir_empty(data_dir):
        raise DataDirNotEmptyError(data_dir)
    if cfg.wal_dir and os.path.exists(cfg.wal_dir):
        raise WalDirExistsError(cfg.wal_dir)
    if not os.path.isfile(cfg.snapshot_path):
        raise UtlError(f"open {cfg.snapshot_path}: no such file or directory")
    from_etcd = bbolt.sniff(cfg.snapshot_path)
    if from_etcd:
        # etcd's snapshot: checked whole before anything is created, then converted.
        if not cfg.skip_hash_check:
            if not has_checksum(os.stat(cfg.snapshot_path).st_size):
                raise SnapshotHashMissingError()
            verify_trailer(cfg.snapshot_path)
        from petcd.utl import etcd_import  # only for etcd's files: it loads the server too

        etcd_import.check_file(cfg.snapshot_path)
    else:
        try:
            _check_backend(cfg.snapshot_path)  # before anything is created: is it petcd's?
        except SnapshotCorruptError:
            if not cfg.skip_hash_check:
                verify_trailer(cfg.snapshot_path)  # damaged rather than foreign: say so
            raise
    # Everything is built in temporary siblings and renamed into place at the end, so an
    # interrupted restore (even SIGKILL) never leaves a half-built data dir under the real
    # name: only a ".<name>.petcdutl-restore-<pid>" directory to delete.
    tmp_data = _temp_sibling(data_dir)
    tmp_wal = _temp_sibling(cfg.wal_dir) if cfg.wal_dir else ""
    work = DataDir(tmp_data, tmp_wal)
    try:
        os.makedirs(work.snap_dir, mode=0o700)
        if from_etcd:
            _import_etcd(cfg.snapshot_path, work.backend_path, progress)
        else:
            copy_and_verify(
                cfg.snapshot_path,
                work.backend_path,
                skip_hash_check=cfg.skip_hash_check,
                progress=progress,
            )
        revision = _rewrite_backend(work, members, cfg)
        _write_wal_and_snap(work, members, own, cid)
        with contextlib.suppress(FileNotFoundError):
            os.remove(work.backend_path + "-lock")  # LMDB's reader table; petcd makes its own
        if tmp_wal:
            _rename_into_place(tmp_wal, cfg.wal_dir)
        # rename(2) replaces an empty directory, so an existing empty --data-dir is fine.
        _rename_into_place(tmp_data, data_dir)
    except BaseException:
        for tmp in (tmp_data, tmp_wal):
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        if tmp_wal and os.path.isdir(cfg.wal_dir) and not os.path.exists(data_dir):
            shutil.rmtree(cfg.wal_dir, ignore_errors=True)  # moved, then the data dir failed
        raise
    dd = DataDir(data_dir, cfg.wal_dir)
    return RestoreResult(dd, own, cid, members, revision)


def _import_etcd(src_path: str, dst_path: str, progress: Progress | None) -> None:
    from petcd.utl import etcd_import

    size = os.stat(src_path).st_size
    try:
        backend = Backend(dst_path)
    except lmdb.Error as e:
        raise SnapshotCorruptError(f"cannot create the restored backend: {e}") from None
    with backend:
        etcd_import.import_etcd(src_path, backend)
    if progress is not None:
        progress(size, size)


def _temp_sibling(path: str) -> str:
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    return os.path.join(parent, f".{name}.petcdutl-restore-{os.getpid()}")


def _rename_into_place(tmp: str, path: str) -> None:
    os.rename(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rewrite_backend(dd: DataDir, members: tuple[RestoredMember, ...], cfg: RestoreConfig) -> int:
    n = len(members)
    # Read before the Backend opens the file: LMDB forbids two environments on one file in
    # one process.
    latest = _latest_revision_main(dd.backend_path)
    try:
        backend = Backend(dd.backend_path)
    except lmdb.Error as e:
        raise SnapshotCorruptError(f"cannot open the restored backend: {e}") from None
    with backend:
        for bucket in (MEMBERS, MEMBERS_REMOVED):
            for k, _ in list(backend.iterate(bucket)):
                backend.delete(bucket, k)
        for m in members:
            backend.put(MEMBERS, int(m.id).to_bytes(8, "big"), m.context())
        raw = backend.get(META, SCHEDULED_COMPACT_KEY)
        scheduled = _Q.unpack(raw)[0] if raw is not None else 0
        revision = max(latest, scheduled, 1)
        if cfg.bump_revision > 0:
            revision += cfg.bump_revision
            backend.put(META, SCHEDULED_COMPACT_KEY, _Q.pack(revision))
        # Not through set_consistent_index: it never lowers the index, and the snapshot's
        # index belongs to the old cluster's log.
        backend.put(META, CONSISTENT_INDEX_KEY, _CI.pack(n, 1))
    return revision


def _latest_revision_main(path: str) -> int:
    """The main revision of the last record of the ``key`` bucket (0 if it is empty)."""
    # Record keys sort by revision, so the last one is the newest; LMDB finds it directly.
    env = open_readonly(path)
    try:
        db = env.open_db(KEY.encode(), create=False)
        with env.begin(db=db) as txn:
            cursor = txn.cursor()
            return int.from_bytes(cursor.key()[:8], "big") if cursor.last() else 0
    finally:
        env.close()


def _write_wal_and_snap(
    dd: DataDir, members: tuple[RestoredMember, ...], own: MemberId, cid: int
) -> None:
    n = len(members)
    term = Term(1)
    entries = [
        Entry(
            term,
            Index(i),
            EntryType.CONF_CHANGE,
            confchange.encode(ConfChange(ConfChangeType.ADD_NODE, m.id, m.context())),
        )
        for i, m in enumerate(members, start=1)
    ]
    meta = SnapshotMetadata(Index(n), term, ConfState(voters=frozenset(m.id for m in members)))
    os.makedirs(os.path.dirname(os.path.abspath(dd.wal_dir)), mode=0o700, exist_ok=True)
    wal = WAL.create(dd.wal_dir, _WAL_META.pack(own, cid))
    try:
        wal.save(HardState(term, NONE_ID, Index(n)), entries)
        wal.save_snapshot(meta)
        wal.sync()
    finally:
        wal.close()
    Snapshotter(dd.snap_dir).save_bytes(meta, b"")
