"""Export of a petcd snapshot into an etcd snapshot file (bbolt): the migration back to etcd.

Theory of operation
-------------------
``petcdutl snapshot convert --to etcd <petcd file> <etcd file>`` reads a petcd snapshot (or a
data dir's LMDB backend) in one read transaction, decodes each record with petcd's own
decoders and writes etcd 3.5's record for it with ``petcd.snap.bbolt_write``, bucket by
bucket in name order, each bucket's records in key order; then it appends the SHA-256 of the
bbolt bytes, as ``etcdctl snapshot save`` does. The mapping is import's
(``petcd.utl.etcd_import``) reversed (docs/enhancements/0011-etcd-snapshots.md)::

    petcd bucket / key                  petcd record               etcd record
    key      <main>_<sub>[t] (17/18 B)  encode_kv                  same key; mvccpb.KeyValue
                                                                    (a tombstone: the key only)
    meta     consistent_index           >QQ (index, term)          consistent_index, term (u64 BE)
    meta     scheduled/finishedCompact  >q main revision           17-byte revision (sub 0)
    lease    int64 BE id                leasepb.Lease              the same bytes (checked)
    auth     authEnabled, authRevision  1 byte; u64 BE             the same bytes
    authUsers, authRoles  name          JSON (0010)                authpb.User, authpb.Role
    alarm    member u64, type u32       (key; empty value)         etcdserverpb.AlarmMember key
    members  member id u64              JSON (name, peerURLs, ..)  hex id; etcd's Member JSON
    members_removed  member id u64      anything                   hex id; "removed"
    cluster                             (none)                     clusterVersion "3.5.0"

Every etcd 3.5 bucket is written, empty ones too. Keys whose order changes with the mapping
(members' and alarms' keys) are few and sorted in memory; everything else streams.

Nothing is written where the output should be until the whole file is done: the file is built
under a temporary name beside it and renamed last; a damaged input (a SHA-256 trailer that
does not match, a file that is not LMDB, a record that does not decode) fails with
``SnapshotCorruptError`` and leaves no file. An existing output file is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import lmdb

import petcd
from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2
from petcd.auth.store import (
    AUTH_BUCKET,
    ENABLED_KEY,
    REVISION_KEY,
    ROLES_BUCKET,
    USERS_BUCKET,
    Role,
    User,
)
from petcd.backend import (
    ALARM,
    BUCKETS,
    CONSISTENT_INDEX_KEY,
    KEY,
    LEASE,
    MEMBERS,
    MEMBERS_REMOVED,
    META,
    V2,
)
from petcd.lease.errors import LeaseDecodeError
from petcd.lease.store import decode_lease_record, encode_lease_key, encode_lease_record
from petcd.mvcc.kvstore import FINISHED_COMPACT_KEY, RECORD_HEADER, SCHEDULED_COMPACT_KEY
from petcd.raft.types import MemberId
from petcd.server.ids import format_id
from petcd.server.member import MemberInfo, decode_alarm_key
from petcd.snap import bbolt
from petcd.snap.bbolt_write import BoltWriter
from petcd.utl.errors import SnapshotCorruptError, UtlError
from petcd.utl.snapshot import SHA256_SIZE, open_readonly, verify_trailer

_REV = struct.Struct(">QcQ")
_REV_SIZE = _REV.size  # 17
_REV_MAIN = struct.Struct(">Q")
_SEP = ord("_")
_T = ord("t")
_CI = struct.Struct(">QQ")
_Q = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_CHUNK_BYTES = 4 * 1024 * 1024
TERM_KEY = b"term"
CLUSTER_VERSION_KEY = b"clusterVersion"
# etcd 3.5's buckets, in bbolt's (byte) order: every one is written.
ETCD_BUCKETS = (
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
)

Progress = Callable[[int, int], None]  # (records converted, records in all)


class EtcdExportError(SnapshotCorruptError):
    """A record of the petcd snapshot cannot be converted (the file is damaged)."""


class OutputExistsError(UtlError):
    def __init__(self, path: str) -> None:
        super().__init__(f"output file {path} already exists")


@dataclass
class ExportSummary:
    """What was written (for the command's log line and the tests)."""

    revision: int = 0  # main revision of the last ``key`` record
    records: int = 0  # records of the key bucket
    leases: int = 0
    users: int = 0
    roles: int = 0
    alarms: int = 0
    members: int = 0
    pages: int = 0
    size_bytes: int = 0  # the bbolt file without the trailer
    skipped: list[str] = field(default_factory=list)  # petcd records etcd has no place for


def _bad(bucket: str, k: bytes, why: str) -> EtcdExportError:
    return EtcdExportError(f"cannot convert record {k!r} of bucket {bucket}: {why}")


class _Reader:
    """petcd's buckets in one LMDB read transaction."""

    def __init__(self, env: lmdb.Environment, txn: lmdb.Transaction) -> None:
        self._env = env
        self._txn = txn
        self.names = {bytes(k) for k, _ in txn.cursor()}

    def items(self, bucket: str) -> Iterator[tuple[bytes, bytes]]:
        if bucket.encode() not in self.names:
            return
        db = self._env.open_db(bucket.encode(), txn=self._txn, create=False)
        # bytes, never memoryviews: the transaction is not opened with buffers=True
        yield from cast(Iterator[tuple[bytes, bytes]], self._txn.cursor(db=db))

    def count(self, bucket: str) -> int:
        if bucket.encode() not in self.names:
            return 0
        db = self._env.open_db(bucket.encode(), txn=self._txn, create=False)
        entries: int = self._txn.stat(db)["entries"]
        return entries


def _key_records(r: _Reader, s: ExportSummary) -> Iterator[tuple[bytes, bytes]]:
    # The hot loop of a conversion (one pass per record of the store): the petcd record's
    # header is unpacked in place (``decode_kv``'s layout) and etcd's record encoded from its
    # fields, with no KeyValue and no message object; the counters are set once at the end.
    unpack = RECORD_HEADER.unpack_from
    h = RECORD_HEADER.size
    records = 0
    main = 0
    for k, v in r.items(KEY):
        tomb = len(k) == _REV_SIZE + 1 and k[-1] == _T
        if not (len(k) == _REV_SIZE or tomb) or k[8] != _SEP:
            raise _bad(KEY, k, "not a revision key (8-byte main, '_', 8-byte sub[, 't'])")
        main = _REV_MAIN.unpack_from(k)[0]
        try:
            create, mod, version, lease, n = unpack(v)
        except struct.error as e:
            raise _bad(KEY, k, f"not a petcd key record ({e})") from None
        end = h + n
        key = v[h:end]
        if not key or mod != main:
            raise _bad(KEY, k, f"record of revision {mod} under revision {main}")
        if tomb:  # etcd's tombstone holds the key only
            out = encode_etcd_kv(key, 0, 0, 0, b"", 0)
        else:
            out = encode_etcd_kv(key, create, mod, version, v[end:], lease)
        records += 1
        yield k, out
    s.revision = main
    s.records += records


# protobuf's base-128 varints: 7 bits a byte, low bits first, the high bit set on every byte
# but the last. _VARINT holds those of 0 to 2**14 - 1 (1 or 2 bytes: lengths, versions);
# _VARINT_LOW the first two bytes of a longer one, by its low 14 bits.
_VARINT_TABLE = 1 << 14
_VARINT = [bytes((n,)) for n in range(0x80)] + [
    bytes((n & 0x7F | 0x80, n >> 7)) for n in range(0x80, _VARINT_TABLE)
]
_VARINT_LOW = [bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(_VARINT_TABLE)]
_U64_MASK = (1 << 64) - 1


def _varint(n: int) -> bytes:
    """The varint of an int64 (a negative one as its 64-bit two's complement: 10 bytes)."""
    if 0 <= n < _VARINT_TABLE:
        return _VARINT[n]
    if 0 < n < _VARINT_TABLE * _VARINT_TABLE:  # 3 or 4 bytes: revisions below 2**28
        return _VARINT_LOW[n & (_VARINT_TABLE - 1)] + _VARINT[n >> 14]
    n &= _U64_MASK
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_etcd_kv(
    key: bytes, create_revision: int, mod_revision: int, version: int, value: bytes, lease: int
) -> bytes:
    """etcd's record, ``mvccpb.KeyValue``, byte for byte as protobuf's ``SerializeToString``
    writes it: the fields in number order, a field of 0 or empty left out (proto3); the tests
    check it against protobuf. A message object per record costs a fifth more (0.9 µs)."""
    table, varint, varints = _VARINT_TABLE, _VARINT, _varint
    n = len(key)
    parts = [b"\x0a", varint[n] if n < table else varints(n), key]  # 1 key: bytes
    if create_revision:  # 2 create_revision: int64, and so are 3, 4 and 6
        parts += (b"\x10", varints(create_revision))
    if mod_revision:
        parts += (b"\x18", varints(mod_revision))
    if version:
        parts += (b"\x20", varint[version] if 0 < version < table else varints(version))
    if value:  # 5 value: bytes
        n = len(value)
        parts += (b"\x2a", varint[n] if n < table else varints(n), value)
    if lease:
        parts += (b"\x30", varints(lease))
    return b"".join(parts)


def _rev_bytes(main: int) -> bytes:
    return _REV.pack(main, b"_", 0)


def _meta_records(r: _Reader, s: ExportSummary) -> list[tuple[bytes, bytes]]:
    out: dict[bytes, bytes] = {}
    for k, v in r.items(META):
        if k == CONSISTENT_INDEX_KEY:
            if len(v) != _CI.size:
                raise _bad(META, k, f"{len(v)} bytes, expected {_CI.size}")
            index, term = _CI.unpack(v)
            if index:  # etcd never stores 0 (its "not loaded yet")
                out[k] = _U64.pack(index)
                if term:
                    out[TERM_KEY] = _U64.pack(term)
        elif k in (SCHEDULED_COMPACT_KEY, FINISHED_COMPACT_KEY):
            if len(v) != _Q.size:
                raise _bad(META, k, f"{len(v)} bytes, expected {_Q.size}")
            out[k] = _rev_bytes(_Q.unpack(v)[0])
        else:
            s.skipped.append(f"meta/{k.decode(errors='backslashreplace')}")
    return sorted(out.items())


def _lease_records(r: _Reader, s: ExportSummary) -> Iterator[tuple[bytes, bytes]]:
    for k, v in r.items(LEASE):
        try:
            record = decode_lease_record(v)
        except LeaseDecodeError as e:
            raise _bad(LEASE, k, str(e)) from None
        if encode_lease_key(record.id) != k:
            raise _bad(LEASE, k, f"holds lease {record.id:x}")
        s.leases += 1
        yield k, encode_lease_record(record)  # petcd keeps leasepb.Lease's own bytes


def _auth_records(r: _Reader, s: ExportSummary) -> Iterator[tuple[bytes, bytes]]:
    for k, v in r.items(AUTH_BUCKET):
        if k == ENABLED_KEY:
            yield k, b"\x01" if v == b"\x01" else b"\x00"
        elif k == REVISION_KEY:
            if len(v) != 8:
                raise _bad(AUTH_BUCKET, k, f"{len(v)} bytes, expected 8")
            yield k, v
        else:
            s.skipped.append(f"auth/{k.decode(errors='backslashreplace')}")


def _name(bucket: str, k: bytes) -> str:
    try:
        return k.decode()
    except UnicodeDecodeError:
        raise _bad(bucket, k, "name is not UTF-8") from None


def _user_records(r: _Reader, s: ExportSummary) -> Iterator[tuple[bytes, bytes]]:
    for k, v in r.items(USERS_BUCKET):
        try:
            u = User.decode(_name(USERS_BUCKET, k), v)
        except (ValueError, KeyError, TypeError) as e:
            raise _bad(USERS_BUCKET, k, f"not a petcd user record ({e})") from None
        s.users += 1
        yield (
            k,
            auth_pb2.User(
                name=k,
                password=u.password,
                roles=sorted(u.roles),
                options=auth_pb2.UserAddOptions(no_password=u.no_password),
            ).SerializeToString(),
        )


def _role_records(r: _Reader, s: ExportSummary) -> Iterator[tuple[bytes, bytes]]:
    for k, v in r.items(ROLES_BUCKET):
        try:
            role = Role.decode(_name(ROLES_BUCKET, k), v)
        except (ValueError, KeyError, TypeError) as e:
            raise _bad(ROLES_BUCKET, k, f"not a petcd role record ({e})") from None
        perms = [
            auth_pb2.Permission(permType=p.perm_type, key=p.key, range_end=p.range_end)  # type: ignore[arg-type]
            for p in role.perms
        ]
        s.roles += 1
        yield k, auth_pb2.Role(name=k, keyPermission=perms).SerializeToString()


def _alarm_records(r: _Reader, s: ExportSummary) -> list[tuple[bytes, bytes]]:
    out = []
    for k, _ in r.items(ALARM):
        if len(k) != 12:
            raise _bad(ALARM, k, f"{len(k)} bytes, expected 12")
        member, alarm = decode_alarm_key(k)
        out.append(
            (rpc_pb2.AlarmMember(memberID=member, alarm=alarm).SerializeToString(), b"")  # type: ignore[arg-type]
        )
        s.alarms += 1
    return sorted(out)


def _member_id(bucket: str, k: bytes) -> int:
    if len(k) != 8:
        raise _bad(bucket, k, f"{len(k)} bytes, expected an 8-byte member id")
    return int.from_bytes(k, "big")


def _member_records(r: _Reader, s: ExportSummary) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in r.items(MEMBERS):
        id_ = _member_id(MEMBERS, k)
        try:
            m = MemberInfo.decode(MemberId(id_), v)
        except (ValueError, TypeError) as e:
            raise _bad(MEMBERS, k, f"not a member record ({e})") from None
        # etcd's membership.Member as Go's encoding/json writes it (field order, omitempty).
        obj: dict[str, Any] = {"id": id_, "peerURLs": list(m.peer_urls)}
        if m.is_learner:
            obj["isLearner"] = True
        if m.name:
            obj["name"] = m.name
        if m.client_urls:
            obj["clientURLs"] = list(m.client_urls)
        out.append((format_id(id_).encode(), json.dumps(obj, separators=(",", ":")).encode()))
        s.members += 1
    return sorted(out)


def _removed_records(r: _Reader) -> list[tuple[bytes, bytes]]:
    return sorted(
        (format_id(_member_id(MEMBERS_REMOVED, k)).encode(), b"removed")
        for k, _ in r.items(MEMBERS_REMOVED)
    )


def _cluster_records() -> list[tuple[bytes, bytes]]:
    major, minor = petcd.ETCD_VERSION.split(".")[:2]
    return [(CLUSTER_VERSION_KEY, f"{major}.{minor}.0".encode())]


def _write(r: _Reader, f: Any, s: ExportSummary, progress: Progress | None) -> None:
    # etcd's v2 store is not exported (0014): its records are not counted either.
    total = sum(r.count(b) for b in BUCKETS if b != V2) + len(_cluster_records())
    done = 0
    every = max(1, total // 100)
    next_report = every

    def on_items(count: int) -> None:  # after each page: about every 1% of the records
        nonlocal done, next_report
        done = min(done + count, total)
        if progress is not None and (done >= next_report or done == total):
            next_report = (done // every + 1) * every
            progress(done, total)

    w = BoltWriter(f, on_items=on_items)
    sources: dict[bytes, Callable[[], Any]] = {
        b"alarm": lambda: _alarm_records(r, s),
        b"auth": lambda: _auth_records(r, s),
        b"authRoles": lambda: _role_records(r, s),
        b"authUsers": lambda: _user_records(r, s),
        b"cluster": _cluster_records,
        b"key": lambda: _key_records(r, s),
        b"lease": lambda: _lease_records(r, s),
        b"members": lambda: _member_records(r, s),
        b"members_removed": lambda: _removed_records(r),
        b"meta": lambda: _meta_records(r, s),
    }
    for name in ETCD_BUCKETS:
        w.bucket(name, sources[name]())
    s.pages = w.finish()
    s.size_bytes = s.pages * w.page_size


def convert_to_etcd(src: str, dst: str, *, progress: Progress | None = None) -> ExportSummary:
    """Write the etcd snapshot file ``dst`` from the petcd snapshot or backend file ``src``."""
    if bbolt.sniff(src):
        raise SnapshotCorruptError(f"{src} is already an etcd (bbolt) file")
    os.stat(src)  # FileNotFoundError before anything else
    if os.path.lexists(dst):
        raise OutputExistsError(dst)
    directory = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(directory, f".{os.path.basename(dst)}.petcdutl-convert-{os.getpid()}")
    try:
        with open(tmp, "w+b") as f:
            s = write_etcd_bolt(src, f, progress=progress)
            _append_sha256(f, s.size_bytes)
            f.flush()
            os.fsync(f.fileno())
        if os.path.lexists(dst):
            raise OutputExistsError(dst)
        os.rename(tmp, dst)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return s


def write_etcd_bolt(src: str, f: Any, *, progress: Progress | None = None) -> ExportSummary:
    """Write the bbolt file (no SHA-256 trailer) converted from ``src`` to the open ``f``.

    ``src`` is a petcd snapshot (its trailer is checked) or an LMDB backend file. The
    Snapshot RPC's conversion (``petcd.utl.rpc_snapshot``) streams what this writes."""
    verify_trailer(src)
    env = open_readonly(src)
    s = ExportSummary()
    try:
        with env.begin() as txn:
            r = _Reader(env, txn)
            missing = [b for b in (KEY, META) if b.encode() not in r.names]
            if missing:
                raise SnapshotCorruptError(
                    f"{src} has no {', '.join(missing)} bucket: it is not a petcd snapshot"
                )
            _write(r, f, s, progress)
    except lmdb.Error as e:
        raise SnapshotCorruptError(f"snapshot file integrity check failed: {e}") from None
    finally:
        env.close()
    return s


def _append_sha256(f: Any, size: int) -> None:
    f.seek(0)
    digest = hashlib.sha256()
    left = size
    while left > 0:
        chunk = f.read(min(_CHUNK_BYTES, left))
        assert chunk, "bbolt file shorter than its pages"
        digest.update(chunk)
        left -= len(chunk)
    f.seek(size)
    f.write(digest.digest())
    assert f.tell() == size + SHA256_SIZE


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
