"""petcd.utl.etcd_import on small bbolt files laid out here with etcd's encodings: every record
kind is converted into petcd's encoding, a record that is not etcd's is refused by name. The
real etcd's files are restored in tests/compat/test_etcd_snapshot_import_compat.py."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.auth.store import Role, User
from petcd.backend import ALARM, AUTH, AUTH_ROLES, AUTH_USERS, KEY, LEASE, META, Backend
from petcd.lease.store import decode_lease_record
from petcd.lease.types import LeaseRecord
from petcd.mvcc.kvstore import decode_kv
from petcd.mvcc.requests import KeyValue
from petcd.utl.etcd_import import EtcdImportError, bolt_status, import_etcd
from tests.unit.snap.test_bbolt import BUCKET_LEAF, PAGE, inline_bucket, leaf, meta_page, write


def rev(main: int, sub: int = 0, tomb: bool = False) -> bytes:
    return struct.pack(">QcQ", main, b"_", sub) + (b"t" if tomb else b"")


def kv(key: bytes, create: int, mod: int, version: int, value: bytes, lease: int = 0) -> bytes:
    return kv_pb2.KeyValue(
        key=key, create_revision=create, mod_revision=mod, version=version, value=value, lease=lease
    ).SerializeToString()


LEASE_ID = 0x1234
USER = auth_pb2.User(name=b"u1", password=b"$2a$10$hash", roles=["r2", "r1"])
ROLE = auth_pb2.Role(
    name=b"r1", keyPermission=[auth_pb2.Permission(permType=2, key=b"a", range_end=b"z")]
)
ALARM_KEY = rpc_pb2.AlarmMember(memberID=0xABC, alarm=1).SerializeToString()


def buckets(
    **override: list[tuple[bytes, bytes, int]],
) -> dict[str, list[tuple[bytes, bytes, int]]]:
    b: dict[str, list[tuple[bytes, bytes, int]]] = {
        "alarm": [(ALARM_KEY, b"", 0)],
        "auth": [(b"authEnabled", b"\x01", 0), (b"authRevision", (7).to_bytes(8, "big"), 0)],
        "authRoles": [(b"r1", ROLE.SerializeToString(), 0)],
        "authUsers": [(b"u1", USER.SerializeToString(), 0)],
        "cluster": [(b"clusterVersion", b"3.4.0", 0)],
        "key": [
            (rev(2), kv(b"a", 2, 2, 1, b"v1", LEASE_ID), 0),
            (rev(3), kv(b"a", 2, 3, 2, b"v2", LEASE_ID), 0),
            (rev(4, 0, tomb=True), kv(b"b", 0, 0, 0, b""), 0),
        ],
        "lease": [(LEASE_ID.to_bytes(8, "big"), b"\x08\xb4\x24\x10\x3c", 0)],
        "members": [(b"abc", b'{"id":2748}', 0)],
        "meta": [
            (b"consistent_index", (99).to_bytes(8, "big"), 0),
            (b"finishedCompactRev", rev(3), 0),
            (b"scheduledCompactRev", rev(3), 0),
        ],
        "test": [(b"x", b"y", 0)],
    }
    b.update(override)
    return b


def etcd_file(path: Path, b: dict[str, list[tuple[bytes, bytes, int]]]) -> str:
    root = leaf(
        3, [(name.encode(), inline_bucket(items), BUCKET_LEAF) for name, items in sorted(b.items())]
    )
    assert len(root) <= PAGE
    return write(path, {0: meta_page(0, 3, 8, txid=2), 1: meta_page(1, 3, 8, txid=1), 3: root})


def test_every_record_kind_is_converted_to_petcds_encoding(tmp_path: Path) -> None:
    path = etcd_file(tmp_path / "etcd.db", buckets())
    with Backend(str(tmp_path / "db")) as be:
        summary = import_etcd(path, be)
        records = [decode_kv(v) for _, v in be.iterate(KEY)]
        assert [k for k, _ in be.iterate(KEY)] == [rev(2), rev(3), rev(4, 0, tomb=True)]
        assert records == [
            KeyValue(b"a", 2, 2, 1, b"v1", LEASE_ID),
            KeyValue(b"a", 2, 3, 2, b"v2", LEASE_ID),
            KeyValue(b"b", 0, 4, 0, b"", 0),  # petcd's tombstone names its revision
        ]
        assert be.get(META, b"scheduledCompactRev") == struct.pack(">q", 3)
        assert be.get(META, b"finishedCompactRev") == struct.pack(">q", 3)
        assert be.get(META, b"consistent_index") is None  # the restore writes the new one
        assert [decode_lease_record(v) for _, v in be.iterate(LEASE)] == [LeaseRecord(LEASE_ID, 60)]
        assert be.get(AUTH, b"authEnabled") == b"\x01"
        assert be.get(AUTH, b"authRevision") == (7).to_bytes(8, "big")
        ((name, raw),) = be.iterate(AUTH_USERS)
        assert User.decode(bytes(name).decode(), bytes(raw)) == User(
            "u1", b"$2a$10$hash", ["r1", "r2"], False
        )
        ((name, raw),) = be.iterate(AUTH_ROLES)
        role = Role.decode(bytes(name).decode(), bytes(raw))
        assert [(p.perm_type, p.key, p.range_end) for p in role.perms] == [(2, b"a", b"z")]
        assert [k for k, _ in be.iterate(ALARM)] == [
            (0xABC).to_bytes(8, "big") + (1).to_bytes(4, "big")
        ]
    assert summary.revision == 4 and summary.compact_revision == 3 and summary.records == 3
    assert (summary.leases, summary.users, summary.roles, summary.alarms) == (1, 1, 1, 1)
    assert summary.auth_enabled and summary.skipped_buckets == ["test"]


def test_status_is_etcdutls_over_etcds_buckets(tmp_path: Path) -> None:
    from petcd.mvcc import crc32c

    b = buckets()
    st = bolt_status(etcd_file(tmp_path / "etcd.db", b))
    h = 0
    for name, items in sorted(b.items()):
        h = crc32c.update(h, name.encode())
        for k, v, _ in items:
            h = crc32c.update(h, k + v)
    assert st.hash == h
    assert st.revision == 4
    assert st.total_key == sum(len(items) for items in b.values())
    assert st.total_size == 8 * PAGE


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"key": [(b"\x00" * 16, kv(b"a", 1, 1, 1, b""), 0)]}, "not a revision key"),
        ({"key": [(rev(2), b"\xff\xff", 0)]}, "not an mvccpb.KeyValue"),
        ({"key": [(rev(2), kv(b"a", 2, 5, 1, b""), 0)]}, "revisions do not match"),
        ({"key": [(rev(2, 1 << 40), kv(b"a", 2, 2, 1, b""), 0)]}, "revision out of range"),
        ({"meta": [(b"scheduledCompactRev", b"\x00" * 8, 0)]}, "not a 17-byte revision"),
        ({"lease": [((5).to_bytes(8, "big"), b"\x08\x06", 0)]}, "holds lease 6"),
        ({"authUsers": [(b"u2", USER.SerializeToString(), 0)]}, "holds user b'u1'"),
        ({"authRoles": [(b"r1", b"\x0a\xff", 0)]}, "not an authpb.Role"),
        ({"auth": [(b"authRevision", b"\x01", 0)]}, "1 bytes, expected 8"),
    ],
)
def test_a_record_that_is_not_etcds_is_refused_by_name(
    tmp_path: Path, override: dict[str, list[tuple[bytes, bytes, int]]], message: str
) -> None:
    path = etcd_file(tmp_path / "etcd.db", buckets(**override))
    with Backend(str(tmp_path / "db")) as be, pytest.raises(EtcdImportError, match=message):
        import_etcd(path, be)


def test_hashkv_converts_etcds_files_and_defrag_refuses_them_leaving_nothing(
    tmp_path: Path,
) -> None:
    from petcd.utl import EtcdFileError, defrag_data_dir, hash_kv

    path = etcd_file(tmp_path / "etcd.db", buckets())
    # hashkv hashes the converted records: what a petcd member restored from it would answer
    with Backend(str(tmp_path / "imported.db")) as be:
        import_etcd(path, be)
    assert hash_kv(path) == hash_kv(str(tmp_path / "imported.db"))
    assert hash_kv(path).hash_revision > 0
    (tmp_path / "imported.db").unlink()
    for leftover in tmp_path.glob("imported.db*"):
        leftover.unlink()
    snap_dir = tmp_path / "data" / "member" / "snap"
    snap_dir.mkdir(parents=True)
    etcd_file(snap_dir / "db", buckets())
    with pytest.raises(EtcdFileError, match="petcdutl snapshot restore"):
        defrag_data_dir(str(tmp_path / "data"))
    assert sorted(p.name for p in snap_dir.iterdir()) == ["db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "etcd.db"]
