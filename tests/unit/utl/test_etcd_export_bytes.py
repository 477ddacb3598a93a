"""The bytes of petcd.utl.etcd_export's bbolt file are pinned: a deterministic backend with
every record kind and the encodings' edge cases (varint widths, zero fields proto3 leaves out,
a negative int64, empty and multi-page values, keys of every length up to 300 bytes, branch
levels) converts to the file whose SHA-256 was taken from the converter before it was
optimised. A faster converter must write the same file (docs/enhancements/0012)."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

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
from petcd.utl.etcd_export import encode_etcd_kv
from petcd.utl.rpc_snapshot import convert

RECORDS = 20_000
# SHA-256 of the converted file of generated_backend(), from the converter of commit 314fe9b
# (before the conversion was made faster).
PINNED_SHA256 = "5084489ab6be30a8b187cb1ff560ec84400592758757dc607a7044583be8aa4a"


def rev(main: int, sub: int = 0, tomb: bool = False) -> bytes:
    return struct.pack(">QcQ", main, b"_", sub) + (b"t" if tomb else b"")


def _int64(rng: random.Random) -> int:
    """An int64 of a random varint width (1 to 10 bytes), sometimes 0."""
    bits = rng.choice((0, 1, 7, 8, 14, 15, 21, 28, 35, 42, 49, 56, 62, 63))
    return rng.randrange(1 << bits) if bits else 0


def generated_backend(path: Path) -> None:
    rng = random.Random(12)
    with Backend(str(path), unsafe_no_fsync=True, batch_limit=RECORDS + 1) as be:
        main = 1
        for n in range(RECORDS):
            main += rng.choice((1, 1, 1, 2, 1000, 1 << 20))
            for sub in range(rng.choice((1, 1, 1, 2, 3))):
                size = rng.choice((1, 7, 8, 16, 32, 127, 128, 300))
                key = (b"k%d-%d/" % (n, sub)) * (size // 4 + 1)
                key = key[:size]
                if rng.random() < 0.03:  # a tombstone
                    be.put(KEY, rev(main, sub, tomb=True), encode_kv(KeyValue(key, 0, main)))
                    continue
                vsize = rng.choice((0, 1, 100, 100, 127, 128, 2000))
                if rng.random() < 0.002:
                    vsize = rng.choice((4000, 70_000))  # an overflow page, several
                kv = KeyValue(
                    key,
                    create_revision=rng.choice((main, _int64(rng))),
                    mod_revision=main,
                    version=_int64(rng),
                    value=rng.randbytes(vsize),
                    lease=-_int64(rng) if rng.random() < 0.01 else _int64(rng),
                )
                be.put(KEY, rev(main, sub), encode_kv(kv))
        be.put(META, CONSISTENT_INDEX_KEY, struct.pack(">QQ", main + 5, 4))
        be.put(META, b"scheduledCompactRev", struct.pack(">q", main // 3))
        be.put(META, b"finishedCompactRev", struct.pack(">q", main // 3))
        for _ in range(300):
            lease_id = LeaseId(_int64(rng) or 1)
            record = LeaseRecord(lease_id, rng.randrange(1, 10_000), rng.randrange(0, 100))
            be.put(LEASE, encode_lease_key(lease_id), encode_lease_record(record))
        be.put(AUTH, b"authEnabled", b"\x01")
        be.put(AUTH, b"authRevision", (99).to_bytes(8, "big"))
        for i in range(40):
            roles = sorted({f"r{rng.randrange(10)}" for _ in range(rng.randrange(4))})
            user = User(f"u{i}", b"$2a$10$" + b"x" * 53, roles, i % 7 == 0)
            be.put(AUTH_USERS, f"u{i}".encode(), user.encode())
        for i in range(10):
            perms = [Permission(rng.randrange(3), b"/p%d" % j, b"/q%d" % j) for j in range(i)]
            be.put(AUTH_ROLES, f"r{i}".encode(), Role(f"r{i}", perms).encode())
        be.put(ALARM, encode_alarm_key(0xABC, 1), b"")
        be.put(ALARM, encode_alarm_key(0x1, 2), b"")
        for i, member in enumerate((0xABC, 0x1, 0xFFFF_FFFF_FFFF)):
            info = MemberInfo(
                MemberId(member),
                f"m{i}",
                (f"http://10.0.0.{i}:2380",),
                (f"http://10.0.0.{i}:2379",),
            )
            be.put(MEMBERS, member.to_bytes(8, "big"), info.encode())
        be.put(MEMBERS_REMOVED, (0xDEF).to_bytes(8, "big"), b"removed")
        be.commit()


def test_the_converted_file_is_the_pinned_one(tmp_path: Path) -> None:
    src = tmp_path / "petcd.lmdb"
    generated_backend(src)
    dst = tmp_path / "etcd.bolt"
    dst.touch()
    pages = convert(str(src), str(dst))
    data = dst.read_bytes()
    assert len(data) == pages * 4096
    assert hashlib.sha256(data).hexdigest() == PINNED_SHA256


def test_key_records_are_protobufs_encoding() -> None:
    rng = random.Random(3)
    for _ in range(20_000):
        create, mod, version, lease = (_int64(rng) * rng.choice((1, 1, -1)) for _ in range(4))
        key = rng.randbytes(rng.choice((1, 2, 127, 128, 300, 20_000)))
        value = rng.randbytes(rng.choice((0, 1, 127, 128, 16_383, 16_384, 70_000)))
        expected = kv_pb2.KeyValue(
            key=key,
            create_revision=create,
            mod_revision=mod,
            version=version,
            value=value,
            lease=lease,
        ).SerializeToString()
        assert encode_etcd_kv(key, create, mod, version, value, lease) == expected
    for n in (0, 1, 127, 128, 16_383, 16_384, 2**21, 2**28 - 1, 2**28, 2**63 - 1, -1, -(2**63)):
        expected = kv_pb2.KeyValue(key=b"k", mod_revision=n, lease=n).SerializeToString()
        assert encode_etcd_kv(b"k", 0, n, 0, b"", n) == expected
