"""Requests whose enum fields are out of their enums: answered as etcd does, and replayed.

(Maintenance.Alarm's action and alarm type too: see the last test.)

protobuf's enums are open: a client may send any int32 in a Compare's target or result and a
RangeRequest's sort order, negative ones too. etcd compares nothing for an unknown target,
takes an unknown result as true, and sorts nothing for an unknown order. A txn holding them is
a raft entry: the member that wrote it must read it back after a restart (found by
tests/compat/test_differential_fuzz.py: a negative compare target stopped the member on an
assertion in the entry encoder; a positive unknown one was written, and refused when read).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from tests.integration.petcd_proc import PetcdProcess, kv_stub, maintenance_stub


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path_factory.mktemp("enums") / "data")
    p.start()
    yield p
    p.stop()


def _compare(target: int, result: int) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(key=b"k", target=target, result=result, version=5)  # type: ignore[arg-type]


def test_out_of_enum_compares_and_sorts_are_answered_and_survive_a_restart(
    server: PetcdProcess,
) -> None:
    with server.channel() as channel:
        kv = kv_stub(channel)
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
        cases = [
            # (target, result) -> etcd's outcome for an existing key
            ((-1, rpc_pb2.Compare.EQUAL), True),  # nothing compared: equal
            ((7, rpc_pb2.Compare.GREATER), False),
            ((-1, rpc_pb2.Compare.NOT_EQUAL), False),
            ((rpc_pb2.Compare.VERSION, -2), True),  # an unknown result holds
            ((rpc_pb2.Compare.VERSION, 9), True),
        ]
        for (target, result), succeeded in cases:
            sorted_range = rpc_pb2.RangeRequest(
                key=b"a",
                range_end=b"\x00",
                sort_order=-1,  # type: ignore[arg-type]
                sort_target=rpc_pb2.RangeRequest.VALUE,
            )
            answer = kv.Txn(
                rpc_pb2.TxnRequest(
                    compare=[_compare(target, result)],
                    success=[
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"ok", value=b"1")),
                        rpc_pb2.RequestOp(request_range=sorted_range),
                    ],
                )
            )
            assert answer.succeeded is succeeded, (target, result)
        revision = kv.Range(rpc_pb2.RangeRequest(key=b"k")).header.revision
        assert revision == 5  # the put, then a put in each of the three succeeding txns
    server.kill()
    server.start()  # replays the entries from the WAL
    with server.channel() as channel:
        got = kv_stub(channel).Range(rpc_pb2.RangeRequest(key=b"ok"))
        assert got.header.revision == 5 and got.kvs[0].version == 3


def test_alarm_actions_and_types_out_of_their_enums_change_nothing(server: PetcdProcess) -> None:
    # etcd 3.5 changes nothing for an unknown action and stops on an unknown alarm to
    # activate (3.4 crashed on both); petcd stopped on a negative one (the entry encoder's
    # assert) and took any action other than ACTIVATE for DEACTIVATE.
    with server.channel() as channel:
        maintenance = maintenance_stub(channel)
        activate = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE
        )
        assert len(maintenance.Alarm(activate).alarms) == 1
        for action, alarm in (
            (-1, rpc_pb2.NOSPACE),
            (5, rpc_pb2.NOSPACE),
            (1, -1),
            (1, 9),
            (2, -3),
        ):
            request = rpc_pb2.AlarmRequest(action=action, memberID=1, alarm=alarm)  # type: ignore[arg-type]
            answer = maintenance.Alarm(request)
            assert list(answer.alarms) == [] and answer.header.revision == 1, (action, alarm)
        active = maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
        assert [(a.memberID, a.alarm) for a in active.alarms] == [(1, rpc_pb2.NOSPACE)]
        deactivate = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE
        )
        assert len(maintenance.Alarm(deactivate).alarms) == 1
