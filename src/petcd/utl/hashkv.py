"""``hashkv``: the KV history hash of a backend file, snapshot file or stopped data dir.

Theory of operation: the hash is the one ``Maintenance.HashKV`` answers with
(``petcd.mvcc.KVStore.hash_kv``: CRC-32C over the ``key`` bucket up to a revision, skipping
what compaction removes), so an offline file can be compared with a live member's
``petcdctl endpoint hashkv``. The store is never opened on the user's file: a compacted copy
is made from a read-only LMDB transaction into a temporary directory, and mvcc opens that
(opening a store may resume a pending compaction, which writes). A snapshot file's SHA-256
trailer is not part of the copy. A data dir of a running member can be hashed too: the copy
is a consistent point-in-time view.

An etcd (bbolt) snapshot file, which is what ``Maintenance.Snapshot`` sends
(docs/enhancements/0012-snapshot-rpc-bbolt.md), is checked (its SHA-256 trailer when it has
one, then every page) and its records converted into a temporary petcd backend with
``petcd.utl.etcd_import``, as restore does. A snapshot of a petcd member converts back into the
member's own key records byte for byte, so its hash is the member's ``HashKV`` at that
revision; a snapshot of a real etcd gets petcd's hash of its history, not etcd's.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import lmdb

from petcd.backend import Backend
from petcd.mvcc.errors import CompactedError, FutureRevisionError
from petcd.mvcc.kvstore import KVStore
from petcd.snap import bbolt
from petcd.utl.datadir import backend_file
from petcd.utl.errors import EtcdFileError, RevisionError, SnapshotCorruptError
from petcd.utl.snapshot import verify_trailer

_MAX_DBS = 16


@dataclass(frozen=True, slots=True)
class HashKV:
    """etcdutl's HashKV result."""

    hash: int
    hash_revision: int
    compact_revision: int


def _source(path: str) -> tuple[str, bool]:
    """The backend file behind ``path`` and whether it belongs to a data dir (locked LMDB)."""
    if os.path.isdir(path):
        return backend_file(path), True
    if not os.path.exists(path):
        raise SnapshotCorruptError(f"stat {path}: no such file or directory")
    return path, False


def copy_backend(path: str, dst_path: str) -> None:
    """A compacted copy of the backend file ``path`` (snapshot trailer excluded)."""
    src, _ = _source(path)
    # A backend in use has LMDB's lock file beside it: join its reader table so that the
    # member does not reuse the pages being copied. A snapshot file has none.
    shared = os.path.exists(src + "-lock")
    if bbolt.sniff(src):  # callers convert etcd's files themselves (hash_kv)
        raise EtcdFileError(src)
    try:
        env = lmdb.open(
            src,
            subdir=False,
            readonly=True,
            lock=shared,
            max_dbs=_MAX_DBS,
            readahead=False,
        )
    except lmdb.Error as e:
        raise SnapshotCorruptError(f"{src} is not a petcd backend ({e})") from None
    try:
        with open(dst_path, "wb") as f:
            env.copyfd(f.fileno(), compact=True)
    finally:
        env.close()


def _import_etcd(src: str, dst_path: str) -> None:
    from petcd.utl import etcd_import  # only for etcd's files: it loads the server too

    verify_trailer(src)
    etcd_import.check_file(src)
    with Backend(dst_path) as backend:
        etcd_import.import_etcd(src, backend)


def hash_kv(path: str, revision: int = 0) -> HashKV:
    """The KV hash at ``revision`` (0: the latest) of a file or data dir."""
    with tempfile.TemporaryDirectory(prefix="petcdutl-hashkv-") as tmp:
        copy = os.path.join(tmp, "db")
        src, _ = _source(path)
        if bbolt.sniff(src):
            _import_etcd(src, copy)
        else:
            copy_backend(path, copy)
        backend = Backend(copy)
        try:
            store = KVStore(backend)
            try:
                result = store.hash_kv(revision)
            except CompactedError:
                raise RevisionError("mvcc: required revision has been compacted") from None
            except FutureRevisionError:
                raise RevisionError("mvcc: required revision is a future revision") from None
        finally:
            backend.close()
    return HashKV(result.hash, result.hash_revision, result.compact_revision)
