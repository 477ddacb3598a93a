"""petcd.utl.etcd_export on petcd backends written here with every record kind: the etcd file
holds etcd 3.5's encodings, and importing it back (petcd.utl.etcd_import) gives the same
records. The real etcd restores converted files in
tests/compat/test_etcd_snapshot_export_compat.py."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.auth.store import Permission, Role, User
from petcd.backend import (
    ALARM,
    AUTH,
    AUTH_ROLES,
    AUTH_USERS,
    CONSISTENT_INDEX_KEY,
    KEY,
    LEASE,
    MEMBERS,
    MEMBERS_REMOVED,
    META,
    Backend,
)
from petcd.lease.store import encode_lease_key, encode_lease_record
from petcd.lease.types import LeaseId, LeaseRecord
from petcd.mvcc.kvstore import encode_kv
from petcd.mvcc.requests import KeyValue
from petcd.raft.types import MemberId
from petcd.server.member import MemberInfo, encode_alarm_key
from petcd.snap.bbolt import BoltFile
from petcd.utl.errors import SnapshotHashMismatchError
from petcd.utl.etcd_export import ETCD_BUCKETS, EtcdExportError, OutputExistsError, convert_to_etcd
from petcd.utl.etcd_import import import_etcd

LEASE_ID = 0x1234


def rev(main: int, sub: int = 0, tomb: bool = False) -> bytes:
    return struct.pack(">QcQ", main, b"_", sub) + (b"t" if tomb else b"")


KEYS = [
    (rev(2), KeyValue(b"a", 2, 2, 1, b"v1", LEASE_ID)),
    (rev(3), KeyValue(b"a", 2, 3, 2, b"v2", LEASE_ID)),
    (rev(3, 1), KeyValue(b"c", 3, 3, 1, b"x" * 10_000, 0)),
    (rev(4, 0, tomb=True), KeyValue(b"b", 0, 4, 0, b"", 0)),
]


def petcd_snapshot(tmp_path: Path, **override: list[tuple[str, bytes, bytes]]) -> Path:
    with Backend(str(tmp_path / "src.db")) as be:
        for k, kv in KEYS:
            be.put(KEY, k, encode_kv(kv))
        be.put(META, CONSISTENT_INDEX_KEY, struct.pack(">QQ", 42, 5))
        be.put(META, b"scheduledCompactRev", struct.pack(">q", 3))
        be.put(META, b"finishedCompactRev", struct.pack(">q", 3))
        be.put(
            LEASE,
            encode_lease_key(LeaseId(LEASE_ID)),
            encode_lease_record(LeaseRecord(LeaseId(LEASE_ID), 60)),
        )
        be.put(AUTH, b"authEnabled", b"\x01")
        be.put(AUTH, b"authRevision", (7).to_bytes(8, "big"))
        be.put(AUTH_USERS, b"u1", User("u1", b"$2a$10$hash", ["r1", "r2"]).encode())
        be.put(AUTH_USERS, b"u2", User("u2", b"", [], True).encode())
        be.put(AUTH_ROLES, b"r1", Role("r1", [Permission(2, b"a", b"z")]).encode())
        be.put(ALARM, encode_alarm_key(0xABC, 1), b"")
        be.put(
            MEMBERS,
            (0xABC).to_bytes(8, "big"),
            MemberInfo(
                MemberId(0xABC), "m1", ("http://127.0.0.1:2380",), ("http://127.0.0.1:2379",)
            ).encode(),
        )
        be.put(MEMBERS_REMOVED, (0xDEF).to_bytes(8, "big"), b"removed")
        for bucket, k, v in override.get("puts", []):
            be.put(bucket, k, v)
        be.commit()
        snap = tmp_path / "petcd.snapshot"
        with open(snap, "wb") as f:
            be.copy_to(f)
    data = snap.read_bytes()
    snap.write_bytes(data + hashlib.sha256(data).digest())
    return snap


def test_every_record_kind_is_written_in_etcds_encoding(tmp_path: Path) -> None:
    out = tmp_path / "etcd.db"
    s = convert_to_etcd(str(petcd_snapshot(tmp_path)), str(out))
    data = out.read_bytes()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    assert len(data) - 32 == s.size_bytes == s.pages * 4096
    with BoltFile(str(out)) as db:
        assert db.buckets() == list(ETCD_BUCKETS)
        items = {name: dict(db.items(name)) for name in ETCD_BUCKETS}
    key = items[b"key"]
    assert list(key) == [k for k, _ in KEYS]
    assert kv_pb2.KeyValue.FromString(key[rev(2)]) == kv_pb2.KeyValue(
        key=b"a", create_revision=2, mod_revision=2, version=1, value=b"v1", lease=LEASE_ID
    )
    assert len(kv_pb2.KeyValue.FromString(key[rev(3, 1)]).value) == 10_000
    assert key[rev(4, 0, tomb=True)] == kv_pb2.KeyValue(key=b"b").SerializeToString()
    assert items[b"meta"] == {
        b"consistent_index": (42).to_bytes(8, "big"),
        b"term": (5).to_bytes(8, "big"),
        b"scheduledCompactRev": rev(3),
        b"finishedCompactRev": rev(3),
    }
    assert items[b"lease"] == {(LEASE_ID).to_bytes(8, "big"): b"\x08\xb4\x24\x10\x3c"}
    assert items[b"auth"] == {b"authEnabled": b"\x01", b"authRevision": (7).to_bytes(8, "big")}
    u1 = auth_pb2.User.FromString(items[b"authUsers"][b"u1"])
    assert (u1.name, u1.password, list(u1.roles), u1.options.no_password) == (
        b"u1",
        b"$2a$10$hash",
        ["r1", "r2"],
        False,
    )
    assert auth_pb2.User.FromString(items[b"authUsers"][b"u2"]).options.no_password
    r1 = auth_pb2.Role.FromString(items[b"authRoles"][b"r1"])
    assert [(p.permType, p.key, p.range_end) for p in r1.keyPermission] == [(2, b"a", b"z")]
    assert items[b"alarm"] == {
        rpc_pb2.AlarmMember(memberID=0xABC, alarm=1).SerializeToString(): b""  # type: ignore[arg-type]
    }
    assert json.loads(items[b"members"][b"abc"]) == {
        "id": 0xABC,
        "peerURLs": ["http://127.0.0.1:2380"],
        "name": "m1",
        "clientURLs": ["http://127.0.0.1:2379"],
    }
    assert items[b"members_removed"] == {b"def": b"removed"}
    assert items[b"cluster"] == {b"clusterVersion": b"3.5.0"}
    assert (s.revision, s.records, s.leases, s.users, s.roles, s.alarms, s.members) == (
        4,
        4,
        1,
        2,
        1,
        1,
        1,
    )


def test_importing_the_etcd_file_gives_back_the_same_records(tmp_path: Path) -> None:
    src = petcd_snapshot(tmp_path)
    out = tmp_path / "etcd.db"
    convert_to_etcd(str(src), str(out))
    with Backend(str(tmp_path / "back.db")) as back, Backend(str(tmp_path / "src.db")) as orig:
        import_etcd(str(out), back)
        for bucket in (KEY, LEASE, AUTH, AUTH_USERS, AUTH_ROLES, ALARM):
            assert list(back.iterate(bucket)) == list(orig.iterate(bucket)), bucket
        for k in (b"scheduledCompactRev", b"finishedCompactRev"):
            assert back.get(META, k) == orig.get(META, k)
    # a stopped member's backend file (no trailer) converts to the same etcd file
    out2 = tmp_path / "from-backend.db"
    convert_to_etcd(str(tmp_path / "src.db"), str(out2))
    assert out2.read_bytes() == out.read_bytes()


def test_a_damaged_input_is_refused_and_no_output_is_left(tmp_path: Path) -> None:
    src = petcd_snapshot(tmp_path)
    out = tmp_path / "etcd.db"
    data = bytearray(src.read_bytes())
    data[100] ^= 1
    bad = tmp_path / "bad.snapshot"
    bad.write_bytes(bytes(data))
    with pytest.raises(SnapshotHashMismatchError, match=r"^expected sha256 \["):
        convert_to_etcd(str(bad), str(out))
    # a record that is not petcd's (a key record under the wrong revision)
    src2 = petcd_snapshot(
        tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path,
        puts=[(KEY, rev(9), encode_kv(KeyValue(b"z", 9, 8, 1, b"", 0)))],
    )
    with pytest.raises(EtcdExportError, match=r"record .* of bucket key: record of revision 8"):
        convert_to_etcd(str(src2), str(out))
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if "convert" in p]
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        convert_to_etcd(str(src), str(out))
    assert out.read_bytes() == b"keep"
