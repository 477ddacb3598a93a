"""In-place conversion of a stopped etcd member's data dir into a petcd member's.

Theory of operation
-------------------
``petcd`` started on etcd's ``--data-dir`` (docs/enhancements/0013-etcd-data-dir.md) finds a
bbolt ``member/snap/db`` and converts the member before it opens anything::

    <data-dir>/member/          etcd's: snap/db (bbolt), wal/*.wal (etcd's WAL), snap/*.snap
    <data-dir>/.member.petcd-convert/   built here: snap/db (LMDB), wal/ (petcd's), snap/*.snap
    then  member -> member.etcd  and  .member.petcd-convert -> member

What carries over: the db's records (``etcd_import``, the code of ``petcdutl snapshot
restore``), the membership (etcd's ``members`` buckets), the member and cluster ids (the WAL's
metadata), the raft hard state, the applied index (the db's ``consistent_index``) and every
WAL entry after it, translated into petcd's entry encoding (0003) with the same index and
term. The member then restarts as from its own data dir: a snapshot marker at the applied
index, the committed entries after it replayed, the uncommitted ones kept for raft.

Never converted, refused with ``EtcdDataDirError`` before anything is changed: entries whose
meaning petcd cannot reproduce (auth changes, writes checked under auth, ConfChangeV2, unknown
fields), a damaged WAL or db, a log that does not cover the applied index. The message names
the snapshot route, which is always safe.

Invariants: nothing under ``member`` is modified; the new dir is complete and fsynced before
the first rename; the conversion is a function of the db and WAL only, so every member of an
etcd cluster converted this way agrees with the others on every index.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import lmdb
from google.protobuf.message import DecodeError

from petcd.api.etcdserverpb import rpc_pb2
from petcd.auth.store import AuthOp, AuthRequest
from petcd.backend import MEMBERS, MEMBERS_REMOVED, META, Backend
from petcd.backend.backend import CONSISTENT_INDEX_KEY
from petcd.grpc import convert
from petcd.mvcc import crc32c
from petcd.raft import confchange
from petcd.raft.types import (
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
from petcd.server import entry as entry_codec
from petcd.server.member import MemberInfo
from petcd.snap import Snapshotter
from petcd.snap.bbolt import BoltFile
from petcd.snap.errors import BoltError
from petcd.utl import etcd_import
from petcd.utl.errors import SnapshotCorruptError, UtlError
from petcd.wal import WAL

ORIGINALS_NAME = "member.etcd"  # where etcd's member dir is kept
TEMP_NAME = ".member.petcd-convert"

_WAL_META = struct.Struct(">QQ")  # member id, cluster id (as petcd.server.member writes it)
_CI = struct.Struct(">QQ")  # petcd's consistent index record: index, term
_U64 = struct.Struct(">Q")
_I64LE = struct.Struct("<q")
_WAL_NAME = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}\.wal$")
_SECTOR = 512

# etcd's walpb.Record types (server/wal/wal.go).
_METADATA, _ENTRY, _STATE, _CRC, _SNAPSHOT = 1, 2, 3, 4, 5
# raftpb.EntryType.
_ENTRY_NORMAL, _ENTRY_CONF_CHANGE = 0, 1
_V2_METHODS = frozenset({"GET", "QGET", "PUT", "POST", "DELETE", "HEAD", "SYNC"})
_ATTRS_PATH = re.compile(r"^/0/members/([0-9a-f]{1,16})/attributes$")


class EtcdDataDirError(UtlError):
    """The etcd data dir cannot be converted safely; nothing was changed."""


def interrupted(data_dir: str) -> bool:
    """A conversion stopped between its two renames (``finish_interrupted`` completes it)."""
    return (
        not os.path.exists(os.path.join(data_dir, "member"))
        and os.path.isdir(os.path.join(data_dir, ORIGINALS_NAME))
        and os.path.isdir(os.path.join(data_dir, TEMP_NAME))
    )


def finish_interrupted(data_dir: str) -> None:
    """Complete a conversion that a crash stopped between its two renames."""
    _rename(os.path.join(data_dir, TEMP_NAME), os.path.join(data_dir, "member"))


# -- protobuf, by hand -----------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message; ValueError if malformed."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ValueError("field number 0")
        if wt == 0:
            v, pos = _varint(data, pos)
            yield num, wt, v
        elif wt == 2:
            n, pos = _varint(data, pos)
            if pos + n > len(data):
                raise ValueError("truncated field")
            yield num, wt, data[pos : pos + n]
            pos += n
        elif wt == 1:
            if pos + 8 > len(data):
                raise ValueError("truncated field")
            yield num, wt, int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wt == 5:
            if pos + 4 > len(data):
                raise ValueError("truncated field")
            yield num, wt, int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise ValueError(f"wire type {wt}")


def _message(data: bytes, ints: frozenset[int], blobs: frozenset[int]) -> dict[int, int | bytes]:
    """The last value of each known field (protobuf's rule); a known field of the wrong wire
    type is an error, unknown fields are errors too (nothing here is skipped silently)."""
    out: dict[int, int | bytes] = {}
    for num, wt, v in _fields(data):
        if (num in ints and wt == 0) or (num in blobs and wt == 2):
            out[num] = v
        else:
            raise ValueError(f"unexpected field {num} (wire type {wt})")
    return out


def _int(m: dict[int, int | bytes], num: int) -> int:
    v = m.get(num, 0)
    assert isinstance(v, int)
    return v


def _blob(m: dict[int, int | bytes], num: int) -> bytes:
    v = m.get(num, b"")
    assert isinstance(v, bytes)
    return v


# -- etcd's WAL --------------------------------------------------------------------------------


@dataclass(slots=True)
class EtcdWal:
    """What etcd's ``ReadAll`` gives for the whole WAL (entries from the oldest kept file)."""

    node_id: int = 0
    cluster_id: int = 0
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)  # raw etcd data in ``Entry.data``
    snapshots: list[tuple[int, int]] = field(default_factory=list)  # markers (index, term)
    files: int = 0


def read_etcd_wal(wal_dir: str) -> EtcdWal:
    """Read etcd's WAL in ``wal_dir``; EtcdDataDirError if it is missing, not etcd's or
    damaged (a torn tail of the last file ends the read, as etcd's repair would)."""
    try:
        names = sorted(n for n in os.listdir(wal_dir) if _WAL_NAME.match(n))
    except FileNotFoundError:
        names = []
    if not names:
        raise EtcdDataDirError(f"no etcd WAL file in {wal_dir}")
    out = EtcdWal(files=len(names))
    crc = 0
    metadata: bytes | None = None
    for i, name in enumerate(names):
        path = os.path.join(wal_dir, name)
        with open(path, "rb") as f:
            data = f.read()
        last_file = i == len(names) - 1
        pos = 0
        while pos + 8 <= len(data):
            length = _I64LE.unpack_from(data, pos)[0]
            if length == 0:
                break  # preallocated space
            rec_bytes = length & ((1 << 56) - 1)
            pad = (length >> 56) & 7 if length < 0 else 0
            start, end = pos + 8, pos + 8 + rec_bytes + pad
            try:
                if end > len(data):
                    raise ValueError("a record runs past the end of the file")
                rec = _message(data[start : start + rec_bytes], frozenset({1, 2}), frozenset({3}))
                rtype, rcrc, rdata = _int(rec, 1), _int(rec, 2), _blob(rec, 3)
                if rtype == _CRC:
                    if crc != 0 and rcrc != crc:
                        raise ValueError(f"CRC record {rcrc:#x} does not continue {crc:#x}")
                    crc = rcrc
                else:
                    crc = crc32c.update(crc, rdata)
                    if rcrc != crc:
                        raise ValueError("CRC mismatch")
            except ValueError as e:
                chunk = data[start:end]
                if last_file and _torn(chunk, start):
                    break
                raise EtcdDataDirError(
                    f"{path} at offset {pos} is not a whole etcd WAL record ({e}): "
                    "not etcd's WAL, or damaged"
                ) from None
            try:
                _record(out, rtype, rdata)
            except ValueError as e:
                raise EtcdDataDirError(f"{path} at offset {pos}: bad record ({e})") from None
            if rtype == _METADATA:
                if metadata is not None and rdata != metadata:
                    raise EtcdDataDirError(f"{path}: the WAL's files name different members")
                metadata = rdata
            pos = end
    if metadata is None:
        raise EtcdDataDirError(f"the WAL in {wal_dir} has no metadata record: not etcd's WAL")
    return out


def _torn(chunk: bytes, offset: int) -> bool:
    """etcd's torn-write test: some sector-aligned piece of the record is all zeros."""
    cur = 0
    while cur < len(chunk):
        n = min(_SECTOR - (offset + cur) % _SECTOR, len(chunk) - cur)
        if not any(chunk[cur : cur + n]):
            return True
        cur += n
    return not chunk


def _record(out: EtcdWal, rtype: int, data: bytes) -> None:
    if rtype == _METADATA:
        m = _message(data, frozenset({1, 2}), frozenset())
        out.node_id, out.cluster_id = _int(m, 1), _int(m, 2)
    elif rtype == _STATE:
        m = _message(data, frozenset({1, 2, 3}), frozenset())
        out.hard_state = HardState(Term(_int(m, 1)), MemberId(_int(m, 2)), Index(_int(m, 3)))
    elif rtype == _SNAPSHOT:
        m = _message(data, frozenset({1, 2}), frozenset({3}))
        index = _int(m, 1)
        out.snapshots.append((index, _int(m, 2)))
        ents = out.entries
        if ents:
            # The state up to the marker is the snapshot's: a follower's entries at or below a
            # snapshot it received from the leader may be stale (another term at an index).
            del ents[: max(0, min(len(ents), index - ents[0].index + 1))]
    elif rtype == _ENTRY:
        m = _message(data, frozenset({1, 2, 3}), frozenset({4}))
        etype = _int(m, 1)
        if etype not in (_ENTRY_NORMAL, _ENTRY_CONF_CHANGE):
            raise ValueError(f"entry type {etype} (ConfChangeV2) is not supported")
        e = Entry(
            Term(_int(m, 2)),
            Index(_int(m, 3)),
            EntryType.CONF_CHANGE if etype == _ENTRY_CONF_CHANGE else EntryType.NORMAL,
            _blob(m, 4),
        )
        ents = out.entries
        if ents and e.index <= ents[-1].index:
            # A new leader's entry replaces the log from its index on (etcd's ReadAll).
            del ents[max(e.index - ents[0].index, 0) :]
        elif ents and e.index != ents[-1].index + 1:
            raise ValueError(f"entry {e.index} does not follow entry {ents[-1].index}")
        elif not ents and out.snapshots and e.index != out.snapshots[-1][0] + 1:
            raise ValueError(
                f"entry {e.index} does not follow the snapshot at {out.snapshots[-1][0]}"
            )
        ents.append(e)
    elif rtype != _CRC:
        raise ValueError(f"unknown record type {rtype}")


# -- entries ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Translation:
    """Counts of what the translation of the log tail did (for the log line)."""

    requests: int = 0  # entries that carry a request petcd applies
    empty: int = 0  # entries carried as empty entries (nothing to apply)
    conf_changes: int = 0
    v2_writes_dropped: int = 0  # v2 store writes (the v2 store is not carried)


class _Refused(Exception):
    pass


_AUTH_CHANGES = {
    1011: "auth disable",
    1100: "user add",
    1101: "user delete",
    1103: "user change password",
    1104: "user grant role",
    1105: "user revoke role",
    1200: "role add",
    1201: "role delete",
    1203: "role grant permission",
    1204: "role revoke permission",
}
# Requests that change nothing petcd keeps: the entry is carried empty.
_NO_STATE = frozenset({3, 1012, 1013, 1102, 1106, 1107, 1202, 1300, 1302})
_CHECKED_UNDER_AUTH = frozenset({4, 5, 6, 9})  # put, delete_range, txn, lease_revoke


def translate_entry(e: Entry, counts: Translation) -> Entry:
    """etcd's entry as petcd's (same index and term); _Refused or ValueError if impossible."""
    if e.type == EntryType.CONF_CHANGE:
        counts.conf_changes += 1
        return Entry(e.term, e.index, EntryType.CONF_CHANGE, _conf_change(e.data))
    if not e.data:
        counts.empty += 1
        return e
    request = _request(e.data, counts)
    if request is None:
        counts.empty += 1
        return Entry(e.term, e.index)
    counts.requests += 1
    return Entry(e.term, e.index, EntryType.NORMAL, entry_codec.encode(0, request))


def _conf_change(data: bytes) -> bytes:
    m = _message(data, frozenset({1, 2, 3}), frozenset({4}))
    cc_type = ConfChangeType(_int(m, 2))
    node = MemberId(_int(m, 3))
    ctx = _blob(m, 4)
    if ctx:
        info = _member_info(node, ctx)
        ctx = info.encode()
    return confchange.encode(ConfChange(cc_type, node, ctx))


def _member_info(node: int, ctx: bytes) -> MemberInfo:
    """etcd's membership.Member JSON (id, peerURLs, name, clientURLs, isLearner)."""
    try:
        obj = json.loads(ctx)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"member {node:x}: not etcd's member JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"member {node:x}: not etcd's member JSON")
    return MemberInfo(
        MemberId(node),
        str(obj.get("name") or ""),
        tuple(str(u) for u in obj.get("peerURLs") or ()),
        tuple(str(u) for u in obj.get("clientURLs") or ()),
        bool(obj.get("isLearner", False)),
    )


def _is_v2(data: bytes) -> bool:
    """etcd tries InternalRaftRequest first and falls back to a bare v2 ``Request``; the two
    differ in field 2: v2's Method string, InternalRaftRequest's v2 message."""
    try:
        got = {num: v for num, _, v in _fields(data)}
    except ValueError:
        return False
    method, path = got.get(2), got.get(3)
    if not isinstance(method, bytes) or not isinstance(path, bytes):
        return False
    return method.decode(errors="replace") in _V2_METHODS and path.startswith(b"/")


def _v2(data: bytes, counts: Translation) -> entry_codec.EntryRequest | None:
    m: dict[int, bytes] = {num: v for num, wt, v in _fields(data) if isinstance(v, bytes)}
    method = m.get(2, b"").decode(errors="replace")
    path = m.get(3, b"").decode(errors="replace")
    match = _ATTRS_PATH.match(path)
    if method == "PUT" and match:
        obj = json.loads(m.get(4, b"{}"))
        if not isinstance(obj, dict):
            raise ValueError(f"member attributes of {path}: not a JSON object")
        return entry_codec.MemberAttributes(
            int(match.group(1), 16),
            str(obj.get("name") or ""),
            tuple(str(u) for u in obj.get("clientURLs") or ()),
        )
    if method in ("PUT", "POST", "DELETE") and not path.startswith("/0/"):
        counts.v2_writes_dropped += 1
    return None  # cluster version, v2 reads and SYNC, the v2 store: nothing petcd keeps


def _request(data: bytes, counts: Translation) -> entry_codec.EntryRequest | None:
    if _is_v2(data):
        return _v2(data, counts)
    username = ""
    which: list[tuple[int, bytes]] = []
    for num, wt, v in _fields(data):
        if num == 100 and isinstance(v, bytes):
            hdr = _message(v, frozenset({1, 3}), frozenset({2}))
            username = _blob(hdr, 2).decode(errors="replace")
        elif num == 1 and wt == 0:
            pass  # the proposer's request id: nobody waits for it here
        elif isinstance(v, bytes) and wt == 2:
            which.append((num, v))
        else:
            raise ValueError(f"unexpected field {num} of InternalRaftRequest")
    if not which:
        return None
    if len(which) > 1:
        raise ValueError("InternalRaftRequest with more than one request")
    num, body = which[0]
    if num in _AUTH_CHANGES:
        raise _Refused(f"an auth change ({_AUTH_CHANGES[num]})")
    if username and num in _CHECKED_UNDER_AUTH:
        raise _Refused(f"a write by user {username!r} that etcd checks when it applies")
    if num in _NO_STATE:
        return None
    if num == 1000:  # etcd 3.4 saves no consistent index for it: follows it after a clean stop
        return AuthRequest(AuthOp.ENABLE)
    try:
        if num == 2:
            return _v2(body, counts)
        if num == 4:
            return convert.put_request(rpc_pb2.PutRequest.FromString(body))
        if num == 5:
            return convert.delete_range_request(rpc_pb2.DeleteRangeRequest.FromString(body))
        if num == 6:
            return convert.txn_request(rpc_pb2.TxnRequest.FromString(body))
        if num == 7:
            return convert.compaction_request(rpc_pb2.CompactionRequest.FromString(body))
        if num == 8:
            g = rpc_pb2.LeaseGrantRequest.FromString(body)
            return entry_codec.LeaseGrant(g.ID, g.TTL)
        if num == 9:
            return entry_codec.LeaseRevoke(rpc_pb2.LeaseRevokeRequest.FromString(body).ID)
        if num == 10:
            a = rpc_pb2.AlarmRequest.FromString(body)
            if a.action == rpc_pb2.AlarmRequest.GET:
                return None
            return entry_codec.AlarmChange(int(a.action), a.memberID, int(a.alarm))
        if num == 11:
            c = rpc_pb2.LeaseCheckpointRequest.FromString(body)
            return entry_codec.LeaseCheckpoints(
                tuple((cp.ID, cp.remaining_TTL) for cp in c.checkpoints)
            )
    except DecodeError as e:
        raise ValueError(f"field {num}: {e}") from None
    if num == 1301:
        m = _message(body, frozenset({1}), frozenset({2}))
        attrs = _message(_blob(m, 2), frozenset(), frozenset({1, 2}))
        urls = [v for n, _, v in _fields(_blob(m, 2)) if n == 2 and isinstance(v, bytes)]
        return entry_codec.MemberAttributes(
            _int(m, 1), _blob(attrs, 1).decode(), tuple(u.decode() for u in urls)
        )
    raise _Refused(f"a request petcd does not know (InternalRaftRequest field {num})")


# -- the conversion --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Converted:
    member_id: int
    cluster_id: int
    applied_index: int
    commit_index: int
    last_index: int
    members: int
    originals: str
    revision: int
    counts: Translation


Hint = Callable[[str], str]  # reason -> the full message with the way out


def convert_data_dir(data_dir: str, hint: Hint) -> Converted:
    """Convert the stopped etcd member in ``data_dir``; EtcdDataDirError (nothing changed) if
    it cannot be done safely. ``hint`` turns a reason into the message the user sees."""
    member_dir = os.path.join(data_dir, "member")
    originals = os.path.join(data_dir, ORIGINALS_NAME)
    temp = os.path.join(data_dir, TEMP_NAME)
    db_path = os.path.join(member_dir, "snap", "db")
    if os.path.exists(originals):
        raise EtcdDataDirError(
            hint(f"{originals} already exists (an earlier conversion's originals?); move it away")
        )
    with _etcd_stopped(member_dir, hint):
        return _convert(data_dir, member_dir, originals, temp, db_path, hint)


@contextlib.contextmanager
def _etcd_stopped(member_dir: str, hint: Hint) -> Iterator[None]:
    """Hold the locks a running etcd holds (bbolt's flock on the db, the WAL's lock on its
    last file, an fcntl lock on Linux), so that etcd cannot be running or start meanwhile."""
    fds: list[int] = []
    try:
        paths = [os.path.join(member_dir, "snap", "db")]
        wal_dir = os.path.join(member_dir, "wal")
        with contextlib.suppress(FileNotFoundError):
            wals = sorted(n for n in os.listdir(wal_dir) if _WAL_NAME.match(n))
            if wals:
                paths.append(os.path.join(wal_dir, wals[-1]))
        for path in paths:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            fds.append(fd)
            try:
                if path.endswith("db"):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise EtcdDataDirError(
                    hint(f"{path} is locked: is etcd still running on it? Stop it first")
                ) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)


def _convert(
    data_dir: str, member_dir: str, originals: str, temp: str, db_path: str, hint: Hint
) -> Converted:
    try:
        wal = read_etcd_wal(os.path.join(member_dir, "wal"))
        etcd_import.check_file(db_path)
        ci, db_term, members, removed = _read_db(db_path)
        plan = _plan(wal, ci, db_term, members, removed)
    except (EtcdDataDirError, SnapshotCorruptError, _Refused, ValueError) as e:
        raise EtcdDataDirError(hint(str(e))) from None
    shutil.rmtree(temp, ignore_errors=True)  # a conversion interrupted before its renames
    try:
        summary = _build(temp, db_path, wal, plan, members, removed)
        _rename(member_dir, originals)
        _rename(temp, member_dir)
    except BaseException:
        if not os.path.exists(member_dir) and os.path.isdir(originals):
            with contextlib.suppress(OSError):
                _rename(originals, member_dir)
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return Converted(
        wal.node_id,
        wal.cluster_id,
        plan.applied,
        plan.hard_state.commit,
        plan.entries[-1].index if plan.entries else plan.applied,
        len(members),
        originals,
        summary.revision,
        plan.counts,
    )


def _read_db(path: str) -> tuple[int, int, dict[int, MemberInfo], set[int]]:
    """The consistent index and term (0 if absent) and the membership of etcd's db."""
    ci = term = 0
    members: dict[int, MemberInfo] = {}
    removed: set[int] = set()
    try:
        with BoltFile(path) as db:
            names = set(db.buckets())
            for k, v in db.items(b"meta"):
                if k == b"consistent_index" and v is not None and len(v) == 8:
                    ci = _U64.unpack(v)[0]
                elif k == b"term" and v is not None and len(v) == 8:
                    term = _U64.unpack(v)[0]
            if b"members" in names:
                for k, v in db.items(b"members"):
                    mid = int(k, 16)
                    members[mid] = _member_info(mid, v or b"")
            if b"members_removed" in names:
                removed = {int(k, 16) for k, _ in db.items(b"members_removed")}
    except BoltError as e:
        raise EtcdDataDirError(f"{path}: {e}") from None
    return ci, term, members, removed


@dataclass(slots=True)
class _Plan:
    applied: Index
    applied_term: Term
    hard_state: HardState
    conf: ConfState
    entries: list[Entry]
    counts: Translation


def _plan(
    wal: EtcdWal, ci: int, db_term: int, members: dict[int, MemberInfo], removed: set[int]
) -> _Plan:
    own = wal.node_id
    if own in removed:
        raise EtcdDataDirError(f"member {own:x} was removed from its cluster")
    ents = wal.entries
    if own not in members and own not in _added_after(ents, ci):
        # An etcd killed before its db's first commit has an empty members bucket: its own
        # conf changes, replayed, fill it.
        raise EtcdDataDirError(
            f"member {own:x} is neither in the db's members bucket nor added by the WAL"
        )
    first = ents[0].index if ents else None
    last = ents[-1].index if ents else max((s[0] for s in wal.snapshots), default=0)
    if ci > last:
        raise EtcdDataDirError(
            f"the db's consistent index {ci} is beyond the WAL's last entry {last}"
        )
    if first is not None and ci + 1 < first:
        raise EtcdDataDirError(
            f"the WAL starts at entry {first}, after the db's consistent index {ci}"
        )
    term: int | None = None
    if first is not None and first <= ci:
        term = ents[ci - first].term
    else:
        term = next((t for i, t in reversed(wal.snapshots) if i == ci), None)
        if term is None and db_term:
            term = db_term
        if term is None and ci == 0:
            term = 0
    if term is None:
        raise EtcdDataDirError(f"the term of the applied entry {ci} is not known")
    tail = [e for e in ents if e.index > ci]
    counts = Translation()
    translated: list[Entry] = []
    for e in tail:
        try:
            translated.append(translate_entry(e, counts))
        except _Refused as r:
            kind = "committed" if e.index <= wal.hard_state.commit else "uncommitted"
            raise _Refused(
                f"the WAL holds {kind} entry {e.index} (term {e.term}), {r}, that etcd has "
                f"not applied to its db (applied index {ci}); petcd cannot apply it as etcd "
                "would"
            ) from None
        except ValueError as err:
            raise EtcdDataDirError(f"entry {e.index} of the WAL: {err}") from None
    hs = wal.hard_state
    commit = max(hs.commit, Index(ci))
    new_last = translated[-1].index if translated else ci
    if commit > new_last:
        raise EtcdDataDirError(f"the WAL's commit index {commit} is beyond its last entry")
    voters = frozenset(MemberId(m) for m, info in members.items() if not info.is_learner)
    learners = frozenset(MemberId(m) for m, info in members.items() if info.is_learner)
    return _Plan(
        Index(ci),
        Term(term),
        HardState(hs.term, hs.vote, commit),
        ConfState(voters=voters, learners=learners),
        translated,
        counts,
    )


def _added_after(ents: list[Entry], ci: int) -> set[int]:
    """The members that conf changes after the applied index add."""
    out = set()
    for e in ents:
        if e.index > ci and e.type == EntryType.CONF_CHANGE:
            try:
                m = _message(e.data, frozenset({1, 2, 3}), frozenset({4}))
            except ValueError:
                continue  # refused with its index by the translation
            if _int(m, 2) in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
                out.add(_int(m, 3))
    return out


def _build(
    temp: str,
    db_path: str,
    wal: EtcdWal,
    plan: _Plan,
    members: dict[int, MemberInfo],
    removed: set[int],
) -> etcd_import.ImportSummary:
    snap_dir = os.path.join(temp, "snap")
    os.mkdir(temp, mode=0o700)  # as etcd's member dir
    os.mkdir(snap_dir, mode=0o700)
    try:
        backend = Backend(os.path.join(snap_dir, "db"))
    except lmdb.Error as e:
        raise EtcdDataDirError(f"cannot create the petcd backend: {e}") from None
    with backend:
        summary = etcd_import.import_etcd(db_path, backend)
        for mid, info in sorted(members.items()):
            backend.put(MEMBERS, mid.to_bytes(8, "big"), info.encode())
        for mid in sorted(removed):
            backend.put(MEMBERS_REMOVED, mid.to_bytes(8, "big"), b"removed")
        if plan.applied:
            backend.put(META, CONSISTENT_INDEX_KEY, _CI.pack(plan.applied, plan.applied_term))
        backend.commit()
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(snap_dir, "db-lock"))  # LMDB's reader table; petcd makes its own
    marker = SnapshotMetadata(plan.applied, plan.applied_term, plan.conf)
    w = WAL.create(os.path.join(temp, "wal"), _WAL_META.pack(wal.node_id, wal.cluster_id))
    try:
        if plan.applied:
            w.save_snapshot(marker)
        w.save(plan.hard_state, plan.entries)
        w.sync()
    finally:
        w.close()
    if plan.applied:
        Snapshotter(snap_dir).save_bytes(marker, b"")
    _fsync_dir(snap_dir)
    _fsync_dir(temp)
    return summary


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(src: str, dst: str) -> None:
    os.rename(src, dst)
    _fsync_dir(os.path.dirname(os.path.abspath(dst)))


__all__ = [
    "ORIGINALS_NAME",
    "TEMP_NAME",
    "Converted",
    "EtcdDataDirError",
    "EtcdWal",
    "Translation",
    "convert_data_dir",
    "finish_interrupted",
    "interrupted",
    "read_etcd_wal",
    "translate_entry",
]
