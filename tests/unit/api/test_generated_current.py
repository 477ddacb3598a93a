"""The generated protobuf code is current, and the wire format is etcd's.

The committed ``*_pb2*.py[i]`` files must equal a fresh ``scripts/genproto.py`` run
byte for byte; the encodings below are hand-computed from etcd's field numbers,
so a renumbered field or a changed type breaks them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.mvccpb import kv_pb2
from petcd.api.v3electionpb import v3election_pb2, v3election_pb2_grpc
from petcd.api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc

REPO = Path(__file__).resolve().parents[3]


def _load_genproto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("genproto", REPO / "scripts" / "genproto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    genproto = _load_genproto()
    generated = genproto.generate(tmp_path)
    assert len(generated) == 18  # six .proto files, three outputs each
    for rel in generated:
        fresh = (tmp_path / rel).read_bytes()
        committed = (REPO / "src" / rel).read_bytes()
        assert committed == fresh, f"{rel} is stale: run `make proto` and commit the result"


def test_put_request_field_numbers() -> None:
    req = rpc_pb2.PutRequest(
        key=b"k", value=b"v", lease=7, prev_kv=True, ignore_value=True, ignore_lease=True
    )
    # tag = field_number << 3 | wire_type: key=1 (0x0a), value=2 (0x12), lease=3 (0x18),
    # prev_kv=4 (0x20), ignore_value=5 (0x28), ignore_lease=6 (0x30).
    assert req.SerializeToString() == bytes.fromhex("0a016b1201761807200128013001")


def test_range_request_field_numbers_and_enums() -> None:
    req = rpc_pb2.RangeRequest(
        key=b"a",
        range_end=b"b",
        limit=2,
        revision=3,
        sort_order=rpc_pb2.RangeRequest.DESCEND,
        sort_target=rpc_pb2.RangeRequest.MOD,
        serializable=True,
        keys_only=True,
        count_only=True,
        min_mod_revision=4,
        max_mod_revision=5,
        min_create_revision=6,
        max_create_revision=7,
    )
    expected = "0a0161 120162 1802 2003 2802 3003 3801 4001 4801"
    expected += "5004 5805 6006 6807"
    assert req.SerializeToString() == bytes.fromhex(expected)


def test_compare_oneof_and_range_end_field_64() -> None:
    cmp = rpc_pb2.Compare(
        result=rpc_pb2.Compare.NOT_EQUAL,
        target=rpc_pb2.Compare.VALUE,
        key=b"k",
        value=b"x",
        range_end=b"z",
    )
    # range_end = 64, length-delimited: tag varint 0x82 0x04.
    assert cmp.SerializeToString() == bytes.fromhex("08031003 1a016b 3a0178 8204017a")
    assert cmp.WhichOneof("target_union") == "value"
    assert [rpc_pb2.Compare.CompareTarget.Name(i) for i in range(5)] == [
        "VERSION",
        "CREATE",
        "MOD",
        "VALUE",
        "LEASE",
    ]


def test_key_value_and_response_header_decode_known_bytes() -> None:
    kv = kv_pb2.KeyValue.FromString(bytes.fromhex("0a0166 1002 1803 2004 2a0162 3005"))
    assert (kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease) == (
        b"f",
        2,
        3,
        4,
        b"b",
        5,
    )
    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4)
    assert header.SerializeToString() == bytes.fromhex("0801100218032004")


def test_watch_response_events_is_field_11() -> None:
    resp = rpc_pb2.WatchResponse(watch_id=1, events=[kv_pb2.Event(type=kv_pb2.Event.DELETE)])
    assert resp.SerializeToString() == bytes.fromhex("1001 5a020801")


def test_txn_request_op_oneof_numbers() -> None:
    txn = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"d"))],
        failure=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"p"))],
    )
    assert txn.SerializeToString() == bytes.fromhex("12051a030a0164 1a0512030a0170")


def test_auth_and_status_field_numbers() -> None:
    perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"a", range_end=b"b")
    assert perm.SerializeToString() == bytes.fromhex("0802120161 1a0162")
    status = rpc_pb2.StatusResponse(dbSizeInUse=1, isLearner=True, raftAppliedIndex=9)
    assert status.SerializeToString() == bytes.fromhex("3809 4801 5001")


@pytest.mark.parametrize(
    ("stub", "methods"),
    [
        (rpc_pb2_grpc.KVStub, ["Range", "Put", "DeleteRange", "Txn", "Compact"]),
        (rpc_pb2_grpc.WatchStub, ["Watch"]),
        (
            rpc_pb2_grpc.LeaseStub,
            ["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive", "LeaseLeases"],
        ),
        (
            rpc_pb2_grpc.ClusterStub,
            ["MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote"],
        ),
        (
            rpc_pb2_grpc.MaintenanceStub,
            [
                "Alarm",
                "Status",
                "Defragment",
                "Hash",
                "HashKV",
                "Snapshot",
                "MoveLeader",
                "Downgrade",
            ],
        ),
        (v3election_pb2_grpc.ElectionStub, ["Campaign", "Proclaim", "Leader", "Observe", "Resign"]),
        (v3lock_pb2_grpc.LockStub, ["Lock", "Unlock"]),
    ],
)
def test_services_declare_every_method(stub: type, methods: list[str]) -> None:
    service = stub.__name__.removesuffix("Stub")
    pkg = {"Election": v3election_pb2, "Lock": v3lock_pb2}.get(service, rpc_pb2)
    descriptor = pkg.DESCRIPTOR.services_by_name[service]
    assert [m.name for m in descriptor.methods] == methods


def test_auth_service_method_paths() -> None:
    service = rpc_pb2.DESCRIPTOR.services_by_name["Auth"]
    assert service.full_name == "etcdserverpb.Auth"
    assert len(service.methods) == 17
    assert service.methods_by_name["UserGrantRole"].input_type.name == "AuthUserGrantRoleRequest"
