"""Reading etcd's WAL and translating its entries for the in-place conversion (0013).

The WAL files here are laid out by hand from etcd's format (frames of a little-endian length
with padding bits, ``walpb.Record`` protobufs, CRC-32C rolling over the records' data, a CRC
record opening each file), so the reader is checked against the format, not against itself.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.auth.store import AuthOp, AuthRequest
from petcd.mvcc import crc32c
from petcd.mvcc.requests import CompactionRequest, DeleteRangeRequest, PutRequest, TxnRequest
from petcd.raft import confchange
from petcd.raft.types import ConfChangeType, Entry, EntryType, HardState, Index, Term
from petcd.server import entry as entry_codec
from petcd.server.member import MemberInfo
from petcd.utl import etcd_datadir
from petcd.utl.etcd_datadir import EtcdDataDirError, Translation, read_etcd_wal, translate_entry


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb(*fields: tuple[int, int | bytes]) -> bytes:
    out = bytearray()
    for num, v in fields:
        if isinstance(v, int):
            out += uvarint(num << 3) + uvarint(v)
        else:
            out += uvarint(num << 3 | 2) + uvarint(len(v)) + v
    return bytes(out)


class WalWriter:
    """etcd's encoder: each record padded to 8 bytes, the padding in the length's top byte."""

    def __init__(self) -> None:
        self.crc = 0
        self.files: list[bytearray] = []

    def new_file(self) -> None:
        self.files.append(bytearray())
        self.record(4, b"", crc=self.crc)

    def record(self, rtype: int, data: bytes, crc: int | None = None) -> None:
        if crc is None:
            self.crc = crc32c.update(self.crc, data)
            crc = self.crc
        rec = pb((1, rtype), (2, crc), (3, data)) if rtype != 4 else pb((1, rtype), (2, crc))
        pad = (8 - len(rec) % 8) % 8
        length = len(rec) | ((0x80 | pad) << 56 if pad else 0)
        self.files[-1] += struct.pack("<Q", length) + rec + bytes(pad)

    def metadata(self, node: int, cluster: int) -> None:
        self.record(1, pb((1, node), (2, cluster)))

    def entry(self, index: int, term: int, data: bytes = b"", conf: bool = False) -> None:
        fields: list[tuple[int, int | bytes]] = [(1, 1 if conf else 0), (2, term), (3, index)]
        if data:
            fields.append((4, data))
        self.record(2, pb(*fields))

    def state(self, term: int, vote: int, commit: int) -> None:
        self.record(3, pb((1, term), (2, vote), (3, commit)))

    def snapshot(self, index: int, term: int) -> None:
        self.record(5, pb((1, index), (2, term)))

    def write(self, wal_dir: Path, preallocate: int = 0) -> None:
        wal_dir.mkdir(parents=True, exist_ok=True)
        for seq, data in enumerate(self.files):
            (wal_dir / f"{seq:016x}-{0:016x}.wal").write_bytes(bytes(data) + bytes(preallocate))


def two_files() -> WalWriter:
    w = WalWriter()
    w.new_file()
    w.metadata(0xAB, 0xCD)
    w.snapshot(0, 0)
    for i in range(1, 4):
        w.entry(i, 1, b"x" * i)
    w.state(1, 0xAB, 3)
    w.new_file()
    w.metadata(0xAB, 0xCD)
    w.state(1, 0xAB, 3)
    w.entry(4, 2)
    w.entry(3, 3, b"new")  # a new leader's entry replaces 3 and 4
    w.state(3, 0xAB, 3)
    return w


def test_the_wal_is_read_across_files_with_crc_padding_and_overwrites(tmp_path: Path) -> None:
    two_files().write(tmp_path / "wal", preallocate=4096)
    wal = read_etcd_wal(str(tmp_path / "wal"))
    assert (wal.node_id, wal.cluster_id, wal.files) == (0xAB, 0xCD, 2)
    assert wal.hard_state == HardState(Term(3), 0xAB, Index(3))  # type: ignore[arg-type]
    assert [(e.index, e.term, e.data) for e in wal.entries] == [
        (1, 1, b"x"),
        (2, 1, b"xx"),
        (3, 3, b"new"),
    ]
    assert wal.snapshots == [(0, 0)]


def test_a_torn_tail_of_the_last_file_ends_the_read(tmp_path: Path) -> None:
    w = two_files()
    w.entry(4, 3, b"y" * 600)
    last = w.files[-1]
    assert len(last) > 600  # the record crosses the sector at 512: that sector never written
    last[512:] = bytes(len(last) - 512)
    w.write(tmp_path / "wal")
    wal = read_etcd_wal(str(tmp_path / "wal"))
    assert wal.entries[-1].index == 3


def test_a_bad_crc_is_refused(tmp_path: Path) -> None:
    w = two_files()
    first = w.files[0]
    i = first.index(b"xx")
    first[i] = ord("z")
    w.write(tmp_path / "wal")
    with pytest.raises(EtcdDataDirError, match="CRC mismatch"):
        read_etcd_wal(str(tmp_path / "wal"))


def test_petcds_own_wal_and_no_wal_are_refused(tmp_path: Path) -> None:
    from petcd.wal import WAL

    w = WAL.create(str(tmp_path / "petcd"), b"meta")
    w.save(HardState(Term(1), 0, Index(0)), [])  # type: ignore[arg-type]
    w.sync()
    w.close()
    with pytest.raises(EtcdDataDirError, match="not etcd's WAL"):
        read_etcd_wal(str(tmp_path / "petcd"))
    with pytest.raises(EtcdDataDirError, match="no etcd WAL file"):
        read_etcd_wal(str(tmp_path / "none"))


def irr(num: int, body: bytes, username: str = "") -> bytes:
    fields: list[tuple[int, int | bytes]] = [(1, 77)]
    if username:
        fields.append((100, pb((1, 77), (2, username.encode()), (3, 5))))
    fields.append((num, body))
    return pb(*fields)


def translated(data: bytes) -> entry_codec.EntryRequest | None:
    e = translate_entry(Entry(Term(2), Index(9), EntryType.NORMAL, data), Translation())
    assert (e.term, e.index, e.type) == (2, 9, EntryType.NORMAL)
    return entry_codec.decode(e.data).request if e.data else None


def test_requests_become_petcds() -> None:
    put = rpc_pb2.PutRequest(key=b"k", value=b"v", lease=7, prev_kv=True)
    assert translated(irr(4, put.SerializeToString())) == PutRequest(b"k", b"v", 7, True)
    dr = rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b")
    assert translated(irr(5, dr.SerializeToString())) == DeleteRangeRequest(b"a", b"b")
    txn = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=put)])
    got = translated(irr(6, txn.SerializeToString()))
    assert isinstance(got, TxnRequest) and got.success[0].request_put == PutRequest(
        b"k", b"v", 7, True
    )
    comp = rpc_pb2.CompactionRequest(revision=5, physical=True)
    assert translated(irr(7, comp.SerializeToString())) == CompactionRequest(5, True)
    grant = rpc_pb2.LeaseGrantRequest(ID=11, TTL=60)
    assert translated(irr(8, grant.SerializeToString())) == entry_codec.LeaseGrant(11, 60)
    assert translated(
        irr(9, rpc_pb2.LeaseRevokeRequest(ID=11).SerializeToString())
    ) == entry_codec.LeaseRevoke(11)
    alarm = rpc_pb2.AlarmRequest(action=1, memberID=3, alarm=1)
    assert translated(irr(10, alarm.SerializeToString())) == entry_codec.AlarmChange(1, 3, 1)
    cp = rpc_pb2.LeaseCheckpointRequest(
        checkpoints=[rpc_pb2.LeaseCheckpoint(ID=11, remaining_TTL=30)]
    )
    assert translated(irr(11, cp.SerializeToString())) == entry_codec.LeaseCheckpoints(((11, 30),))
    assert translated(irr(1000, b"")) == AuthRequest(AuthOp.ENABLE)
    attrs = pb((1, 0x1234), (2, pb((1, b"n1"), (2, b"http://a:1"), (2, b"http://b:2"))))
    assert translated(irr(1301, attrs)) == entry_codec.MemberAttributes(
        0x1234, "n1", ("http://a:1", "http://b:2")
    )
    # A lease grant under auth is not checked when etcd applies it: carried.
    assert translated(irr(8, grant.SerializeToString(), "u1")) == entry_codec.LeaseGrant(11, 60)


def test_etcd_34s_v2_publish_becomes_member_attributes_and_other_v2_requests_nothing() -> None:
    val = json.dumps({"name": "m1", "clientURLs": ["http://127.0.0.1:2379"]}).encode()
    publish = pb((1, 5), (2, b"PUT"), (3, b"/0/members/8e9e05c52164694d/attributes"), (4, val))
    assert translated(publish) == entry_codec.MemberAttributes(
        0x8E9E05C52164694D, "m1", ("http://127.0.0.1:2379",)
    )
    counts = Translation()
    version = pb((1, 6), (2, b"PUT"), (3, b"/0/version"), (4, b"3.4.0"))
    store = pb((1, 7), (2, b"PUT"), (3, b"/1/foo"), (4, b"bar"))
    for data in (version, store):
        e = translate_entry(Entry(Term(2), Index(9), EntryType.NORMAL, data), counts)
        assert e == Entry(Term(2), Index(9))
    assert (counts.empty, counts.v2_writes_dropped) == (2, 1)
    # Inside an InternalRaftRequest too.
    assert translated(irr(2, publish)) == entry_codec.MemberAttributes(
        0x8E9E05C52164694D, "m1", ("http://127.0.0.1:2379",)
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        irr(3, rpc_pb2.RangeRequest(key=b"k").SerializeToString()),
        irr(1012, pb((1, b"root"), (3, b"token"))),
        irr(1300, pb((1, b"3.5.0"))),
        irr(10, rpc_pb2.AlarmRequest(action=0).SerializeToString()),
        pb((1, 5)),
    ],
)
def test_requests_without_state_become_empty_entries(data: bytes) -> None:
    assert translated(data) is None


def test_conf_changes_carry_the_member_as_petcds_json() -> None:
    member = {"id": 0x10, "peerURLs": ["http://p:2380"], "name": "", "isLearner": True}
    data = pb((1, 3), (2, int(ConfChangeType.ADD_LEARNER_NODE)), (3, 0x10))
    data += pb((4, json.dumps(member).encode()))
    e = translate_entry(Entry(Term(1), Index(4), EntryType.CONF_CHANGE, data), Translation())
    cc = confchange.decode(e.data)
    assert (cc.type, cc.node_id) == (ConfChangeType.ADD_LEARNER_NODE, 0x10)
    assert MemberInfo.decode(cc.node_id, cc.context) == MemberInfo(
        0x10,  # type: ignore[arg-type]
        "",
        ("http://p:2380",),
        (),
        True,
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (irr(1100, pb((1, b"u"), (2, b"pw"))), "an auth change (user add)"),
        (irr(1203, pb((1, b"r"))), "an auth change (role grant permission)"),
        (irr(1011, b""), "an auth change (auth disable)"),
        (irr(4, rpc_pb2.PutRequest(key=b"k").SerializeToString(), "u1"), "by user 'u1'"),
        (irr(9, rpc_pb2.LeaseRevokeRequest(ID=1).SerializeToString(), "u1"), "by user 'u1'"),
        (irr(2000, b""), "does not know"),
    ],
)
def test_what_petcd_cannot_apply_as_etcd_would_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(etcd_datadir._Refused, match=re.escape(why)):
        translated(data)


def test_a_malformed_request_is_an_error() -> None:
    with pytest.raises(ValueError):
        translated(irr(4, b"\xff\xff"))


def wal_of(
    entries: list[Entry], commit: int, snapshots: list[tuple[int, int]] | None = None
) -> Any:
    return etcd_datadir.EtcdWal(
        node_id=1,
        cluster_id=9,
        hard_state=HardState(Term(4), 1, Index(commit)),  # type: ignore[arg-type]
        entries=entries,
        snapshots=snapshots or [(0, 0)],
    )


MEMBERS = {
    1: MemberInfo(1, "a", ("http://a",)),  # type: ignore[arg-type]
    2: MemberInfo(2, "b", ("http://b",), (), True),  # type: ignore[arg-type]
}
LEASE_GRANT = irr(8, rpc_pb2.LeaseGrantRequest(ID=5, TTL=9).SerializeToString())


def test_the_plan_starts_at_the_applied_index_and_keeps_the_log_after_it() -> None:
    ents = [
        Entry(Term(i), Index(i), EntryType.NORMAL, LEASE_GRANT if i > 2 else b"")
        for i in (1, 2, 3, 4)
    ]
    plan = etcd_datadir._plan(wal_of(ents, commit=1), 2, 0, MEMBERS, set())
    assert (plan.applied, plan.applied_term) == (2, 2)
    assert plan.hard_state == HardState(Term(4), 1, Index(2))  # type: ignore[arg-type]
    assert [e.index for e in plan.entries] == [3, 4]
    assert entry_codec.decode(plan.entries[0].data).request == entry_codec.LeaseGrant(5, 9)
    assert plan.conf.voters == {1} and plan.conf.learners == {2}
    # Applied at a snapshot marker whose entry is gone: the marker's term.
    plan = etcd_datadir._plan(wal_of(ents[3:], commit=4, snapshots=[(3, 3)]), 3, 0, MEMBERS, set())
    assert (plan.applied, plan.applied_term, len(plan.entries)) == (3, 3, 1)


@pytest.mark.parametrize(
    ("ci", "removed", "first", "why"),
    [
        (9, set(), 1, "consistent index 9 is beyond the WAL's last entry 4"),
        (1, set(), 3, "the WAL starts at entry 3, after the db's consistent index 1"),
        (2, {1}, 1, "member 1 was removed from its cluster"),
    ],
)
def test_the_plan_refuses_what_does_not_fit(
    ci: int, removed: set[int], first: int, why: str
) -> None:
    ents = [Entry(Term(1), Index(i)) for i in range(first, 5)]
    with pytest.raises(EtcdDataDirError, match=re.escape(why)):
        etcd_datadir._plan(wal_of(ents, commit=4), ci, 0, MEMBERS, removed)


def test_an_uncommitted_auth_change_is_refused_too() -> None:
    ents = [Entry(Term(1), Index(1)), Entry(Term(1), Index(2), EntryType.NORMAL, irr(1101, b""))]
    with pytest.raises(etcd_datadir._Refused, match=r"uncommitted entry 2 .*user delete"):
        etcd_datadir._plan(wal_of(ents, commit=1), 1, 0, MEMBERS, set())


def test_a_snapshot_received_from_the_leader_supersedes_the_entries_below_it(
    tmp_path: Path,
) -> None:
    w = WalWriter()
    w.new_file()
    w.metadata(0xAB, 0xCD)
    w.snapshot(0, 0)
    for i in range(1, 4):
        w.entry(i, 1, b"old")  # entry 3 of term 1 was never committed
    w.snapshot(5, 2)  # the leader's snapshot at 5 (its entry 3 had term 2)
    w.entry(6, 2)
    w.state(2, 0, 6)
    w.write(tmp_path / "wal")
    wal = read_etcd_wal(str(tmp_path / "wal"))
    assert [(e.index, e.term) for e in wal.entries] == [(6, 2)]
    plan = etcd_datadir._plan(wal, 5, 0, {0xAB: MEMBERS[1]}, set())
    assert (plan.applied, plan.applied_term, [e.index for e in plan.entries]) == (5, 2, [6])
    w.entry(8, 2)  # a gap
    w.write(tmp_path / "wal")
    with pytest.raises(EtcdDataDirError, match="entry 8 does not follow entry 6"):
        read_etcd_wal(str(tmp_path / "wal"))


def test_a_member_not_yet_in_the_db_is_added_by_its_conf_change() -> None:
    ctx = json.dumps({"id": 1, "peerURLs": ["http://a"], "name": "a"}).encode()
    add = pb((1, 1), (2, int(ConfChangeType.ADD_NODE)), (3, 1), (4, ctx))
    ents = [Entry(Term(1), Index(1), EntryType.CONF_CHANGE, add), Entry(Term(2), Index(2))]
    plan = etcd_datadir._plan(wal_of(ents, commit=2), 0, 0, {}, set())
    assert (plan.applied, [e.index for e in plan.entries]) == (0, [1, 2])
    with pytest.raises(EtcdDataDirError, match="neither in the db's members bucket nor added"):
        etcd_datadir._plan(wal_of(ents[1:], commit=2, snapshots=[(1, 1)]), 1, 0, {}, set())
