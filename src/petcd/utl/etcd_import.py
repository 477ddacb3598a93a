"""Import of an etcd snapshot (a bbolt file) into a petcd backend: the migration path.

Theory of operation
-------------------
``etcdctl snapshot save`` writes etcd's bbolt backend followed by its SHA-256, as petcd's
snapshot files do with LMDB. ``snapshot restore`` of such a file reads it with
``petcd.snap.bbolt`` and writes every record that petcd keeps into a fresh LMDB backend,
through petcd's own encoders, then carries on exactly as for a petcd snapshot (new
membership, WAL, consistent index). The mapping (docs/enhancements/0011-etcd-snapshots.md)::

    etcd bucket / key                  encoding in etcd          petcd (same bucket name)
    key      <main>_<sub>[t] (17/18 B) mvccpb.KeyValue           same key; encode_kv record
    meta     scheduledCompactRev,      17-byte revision          >q (main revision)
             finishedCompactRev
    meta     consistent_index, term,   the old cluster's log     not carried (a new cluster)
             confState
    lease    int64 BE id               leasepb.Lease             encode_lease_record
    auth     authEnabled, authRevision 1 byte; u64 BE            the same bytes
    authUsers name                     authpb.User               User(...).encode() (JSON)
    authRoles name                     authpb.Role               Role(...).encode() (JSON)
    alarm    etcdserverpb.AlarmMember  (the key; empty value)    encode_alarm_key (server)
    members, members_removed           the old cluster           replaced by --initial-cluster
    cluster  clusterVersion, downgrade                           not carried (petcd has none)

A tombstone (revision key ending in ``t``) holds only its key in etcd; petcd's tombstone
record also names the deletion's main revision, which the revision key gives.

Every record is checked as it is converted (revision key shape, protobuf decodes, the key of a
record is its name); the first bad one fails the import with ``EtcdImportError``, before the
result is renamed into place (``petcd.utl.snapshot.restore`` removes its temporary dirs).

What is never imported: the hash values (etcd's and petcd's records differ, so ``HashKV`` and
``snapshot status`` hashes of the restored member are petcd's), and bbolt's free pages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.auth.store import (
    AUTH_BUCKET,
    ENABLED_KEY,
    REVISION_KEY,
    ROLES_BUCKET,
    USERS_BUCKET,
    Permission,
    Role,
    User,
)
from petcd.backend import ALARM, KEY, LEASE, META, Backend
from petcd.lease.errors import LeaseDecodeError
from petcd.lease.store import decode_lease_record, encode_lease_key, encode_lease_record
from petcd.lease.types import LeaseRecord
from petcd.mvcc import crc32c
from petcd.mvcc.key_index import SUB_MASK
from petcd.mvcc.kvstore import FINISHED_COMPACT_KEY, SCHEDULED_COMPACT_KEY, encode_kv
from petcd.mvcc.requests import KeyValue
from petcd.server.member import encode_alarm_key
from petcd.snap.bbolt import BoltFile
from petcd.snap.errors import BoltError
from petcd.utl.errors import SnapshotCorruptError

_Q = struct.Struct(">q")
_REV = struct.Struct(">QcQ")
_REV_SIZE = _REV.size  # 17
_COMMIT_EVERY = 10_000  # records per LMDB transaction while importing

# Buckets of etcd that petcd deliberately does not carry (see the module docstring).
NOT_CARRIED = frozenset({b"members", b"members_removed", b"cluster"})


class EtcdImportError(SnapshotCorruptError):
    """A record of the etcd snapshot cannot be converted (the file is damaged or not etcd's)."""


@dataclass(slots=True)
class ImportSummary:
    """What was imported (for the restore's log line and the tests)."""

    revision: int = 0  # main revision of the newest record of ``key``
    compact_revision: int = -1
    records: int = 0  # records of the key bucket (every revision, tombstones too)
    leases: int = 0
    users: int = 0
    roles: int = 0
    auth_enabled: bool = False
    alarms: int = 0
    skipped_buckets: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BoltStatus:
    """etcdutl's ``snapshot status`` of a bbolt file."""

    hash: int
    revision: int
    total_key: int
    total_size: int


def bolt_status(path: str) -> BoltStatus:
    """etcdutl's status of an etcd file: CRC-32C over each top-level bucket's name and then
    its keys and values in order, the main revision of the last ``key`` record, the count of
    all records and bbolt's size (pages in use x page size, the trailer not counted)."""
    try:
        with BoltFile(path) as db:
            db.check()  # etcdutl runs bbolt's integrity check first
            h = 0
            total = 0
            revision = 0
            for name in db.buckets():
                h = crc32c.update(h, name)
                is_key = name == b"key"
                for k, v in db.items(name):
                    h = crc32c.update(h, k if v is None else k + v)
                    if is_key:
                        revision = _REV.unpack_from(k)[0] if len(k) >= _REV_SIZE else 0
                    total += 1
            return BoltStatus(h, revision, total, db.meta.size_bytes)
    except BoltError as e:
        raise SnapshotCorruptError(f"snapshot file integrity check failed: {e}") from None


def check_file(path: str) -> None:
    """Walk the whole bbolt file (every page of every bucket); SnapshotCorruptError if damaged."""
    try:
        with BoltFile(path) as db:
            db.check()
            names = set(db.buckets())
    except BoltError as e:
        raise SnapshotCorruptError(f"snapshot file integrity check failed: {e}") from None
    missing = [b.decode() for b in (b"key", b"meta") if b not in names]
    if missing:
        raise SnapshotCorruptError(
            f"{path} is a bbolt file without the {', '.join(missing)} bucket: not an etcd snapshot"
        )


def import_etcd(path: str, backend: Backend) -> ImportSummary:
    """Convert the etcd snapshot at ``path`` into ``backend`` (an empty petcd backend) and
    commit. The consistent index and membership are left to the caller (restore)."""
    summary = ImportSummary()
    done = 0

    def put(bucket: str, k: bytes, v: bytes) -> None:
        nonlocal done
        backend.put(bucket, k, v)
        done += 1
        if done % _COMMIT_EVERY == 0:
            backend.commit()

    try:
        with BoltFile(path) as db:
            for name in db.buckets():
                items = db.items(name)
                if name == b"key":
                    for k, v in items:
                        put(KEY, k, _kv_record(k, _value(name, k, v)))
                        summary.revision = _REV.unpack_from(k)[0]
                        summary.records += 1
                elif name == b"meta":
                    for k, v in items:
                        if k in (SCHEDULED_COMPACT_KEY, FINISHED_COMPACT_KEY):
                            rev = _revision_main(name, k, _value(name, k, v))
                            put(META, k, _Q.pack(rev))
                            if k == SCHEDULED_COMPACT_KEY:
                                summary.compact_revision = rev
                elif name == b"lease":
                    for k, v in items:
                        record = _lease(k, _value(name, k, v))
                        put(LEASE, encode_lease_key(record.id), encode_lease_record(record))
                        summary.leases += 1
                elif name == AUTH_BUCKET.encode():
                    for k, v in items:
                        v = _value(name, k, v)
                        if k == ENABLED_KEY:
                            summary.auth_enabled = v == b"\x01"
                            put(AUTH_BUCKET, k, b"\x01" if summary.auth_enabled else b"\x00")
                        elif k == REVISION_KEY:
                            if len(v) != 8:
                                raise _bad(name, k, f"{len(v)} bytes, expected 8")
                            put(AUTH_BUCKET, k, v)
                elif name == USERS_BUCKET.encode():
                    for k, v in items:
                        put(USERS_BUCKET, k, _user(k, _value(name, k, v)))
                        summary.users += 1
                elif name == ROLES_BUCKET.encode():
                    for k, v in items:
                        put(ROLES_BUCKET, k, _role(k, _value(name, k, v)))
                        summary.roles += 1
                elif name == b"alarm":
                    for k, _ in items:
                        put(ALARM, _alarm_key(k), b"")
                        summary.alarms += 1
                elif name not in NOT_CARRIED:
                    summary.skipped_buckets.append(name.decode(errors="backslashreplace"))
    except BoltError as e:
        raise SnapshotCorruptError(f"snapshot file integrity check failed: {e}") from None
    backend.commit()
    return summary


def _bad(bucket: bytes, k: bytes, why: str) -> EtcdImportError:
    return EtcdImportError(
        f"cannot import record {k!r} of bucket {bucket.decode(errors='backslashreplace')}: {why}"
    )


def _value(bucket: bytes, k: bytes, v: bytes | None) -> bytes:
    if v is None:
        raise _bad(bucket, k, "a nested bucket where etcd keeps a value")
    return v


def _revision_main(bucket: bytes, k: bytes, v: bytes) -> int:
    if len(v) != _REV_SIZE or v[8:9] != b"_":
        raise _bad(bucket, k, "not a 17-byte revision")
    main: int = _REV.unpack(v)[0]
    return main


def _kv_record(k: bytes, v: bytes) -> bytes:
    tomb = len(k) == _REV_SIZE + 1 and k[-1:] == b"t"
    if not (len(k) == _REV_SIZE or tomb) or k[8:9] != b"_":
        raise _bad(b"key", k, "not a revision key (8-byte main, '_', 8-byte sub[, 't'])")
    main, _, sub = _REV.unpack_from(k)
    if main >= 1 << 63 or sub > SUB_MASK:
        raise _bad(b"key", k, "revision out of range")
    try:
        kv = kv_pb2.KeyValue.FromString(v)
    except DecodeError as e:
        raise _bad(b"key", k, f"not an mvccpb.KeyValue ({e})") from None
    if not kv.key:
        raise _bad(b"key", k, "KeyValue without a key")
    if tomb:
        # etcd's tombstone holds the key only; petcd's names the deleting revision too.
        return encode_kv(KeyValue(kv.key, 0, main, 0, b"", 0))
    if kv.mod_revision != main or kv.create_revision <= 0 or kv.version <= 0:
        raise _bad(b"key", k, f"revisions do not match (mod {kv.mod_revision})")
    return encode_kv(
        KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)
    )


def _lease(k: bytes, v: bytes) -> LeaseRecord:
    try:
        record = decode_lease_record(v)
    except LeaseDecodeError as e:
        raise _bad(b"lease", k, str(e)) from None
    if encode_lease_key(record.id) != k:
        raise _bad(b"lease", k, f"holds lease {record.id:x}")
    return record


def _auth_record(bucket: bytes, k: bytes, v: bytes, message: Any) -> tuple[Any, str]:
    """The ``authpb`` ``message`` (User, Role) stored at ``k`` and its name: the key, which
    must be the message's own name and UTF-8."""
    kind = message.__name__
    try:
        record = message.FromString(v)
    except DecodeError as e:
        raise _bad(bucket, k, f"not an authpb.{kind} ({e})") from None
    if record.name != k:
        raise _bad(bucket, k, f"holds {kind.lower()} {record.name!r}")
    try:
        name = k.decode()
    except UnicodeDecodeError:
        raise _bad(bucket, k, "name is not UTF-8") from None
    return record, name


def _user(k: bytes, v: bytes) -> bytes:
    u, name = _auth_record(b"authUsers", k, v, auth_pb2.User)
    return User(name, u.password, sorted(u.roles), u.options.no_password).encode()


def _role(k: bytes, v: bytes) -> bytes:
    r, name = _auth_record(b"authRoles", k, v, auth_pb2.Role)
    perms = [Permission(int(p.permType), p.key, p.range_end) for p in r.keyPermission]
    return Role(name, perms).encode()


def _alarm_key(k: bytes) -> bytes:
    try:
        a = rpc_pb2.AlarmMember.FromString(k)
    except DecodeError as e:
        raise _bad(b"alarm", k, f"not an AlarmMember ({e})") from None
    return encode_alarm_key(a.memberID, int(a.alarm))
