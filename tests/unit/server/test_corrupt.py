"""petcd.server.corrupt: the comparison rules (etcd 3.5's corruption checker) with fakes, the
CORRUPT alarm on a real in-process member, and the gRPC fetcher against an in-process server."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.grpc.peer_hash import GrpcPeerHashFetcher
from petcd.mvcc.errors import CompactedError, FutureRevisionError
from petcd.mvcc.requests import (
    CompactionRequest,
    DeleteRangeRequest,
    HashKVResult,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from petcd.server import entry as entry_codec
from petcd.server.config import Action, parse
from petcd.server.corrupt import (
    CompactHashChecker,
    CompactHashVerdict,
    FailureKind,
    Finding,
    InitialCheckError,
    PeerFailure,
    PeerHash,
    PeerResult,
    PeerTarget,
    compact_hash_verdict,
    go_duration,
    initial_check,
    initial_findings,
    monitor_compact_hash,
    monitor_kv_hash,
    periodic_check,
    periodic_findings,
    refused_when_corrupt,
    unchecked_hashes,
)
from petcd.server.errors import ConfigError, CorruptError
from petcd.server.log import Logger
from tests.unit.server.solo import start_solo

LOCAL = 0x1111
A, B = 0xAAAA, 0xBBBB


def _h(hash_: int, compact: int = -1, rev: int = 10) -> HashKVResult:
    return HashKVResult(hash=hash_, compact_revision=compact, hash_revision=rev)


def _peer(mid: int, hash_: int, compact: int = -1, rev: int = 10) -> PeerHash:
    return PeerHash(mid, (f"http://127.0.0.1:{mid % 1000}",), rev, hash_, compact)


def _mismatches(fs: Sequence[Finding]) -> list[str]:
    return [f.message for f in fs if f.mismatch]


# --- initial check rules --------------------------------------------------------------------


def test_initial_equal_hashes_find_nothing() -> None:
    assert initial_findings(LOCAL, _h(7), 10, [_peer(A, 7), _peer(B, 7, rev=12)]) == []


def test_initial_different_hash_same_compaction_is_a_mismatch_naming_both() -> None:
    (f,) = initial_findings(LOCAL, _h(7, compact=3), 10, [_peer(A, 7, 3), _peer(B, 9, 3, 12)])
    assert (f.level, f.message, f.mismatch) == (
        "warn",
        "found different hash values from remote peer",
        True,
    )
    assert f.fields == {
        "local-member-id": "1111",
        "local-member-revision": 10,
        "local-member-compact-revision": 3,
        "local-member-hash": 7,
        "remote-peer-id": "bbbb",
        "remote-peer-endpoints": ["http://127.0.0.1:59"],
        "remote-peer-revision": 12,
        "remote-peer-compact-revision": 3,
        "remote-peer-hash": 9,
    }


def test_initial_different_hash_other_compaction_only_warns() -> None:
    (f,) = initial_findings(LOCAL, _h(7, compact=3), 10, [_peer(A, 9, compact=5)])
    assert f.message == "found different compact revision values from remote peer"
    assert not f.mismatch


def test_initial_failed_peers_are_skipped_with_etcds_warnings() -> None:
    eps = ("http://x:1",)
    peers: list[PeerResult] = [
        PeerFailure(A, eps, FailureKind.FUTURE_REVISION, "future"),
        PeerFailure(B, eps, FailureKind.COMPACTED, "compacted"),
        PeerFailure(3, eps, FailureKind.CLUSTER_ID_MISMATCH, "other cluster"),
        PeerFailure(4, eps, FailureKind.UNREACHABLE, "refused"),  # the fetcher logged it
    ]
    fs = initial_findings(LOCAL, _h(7), 10, peers)
    assert [(f.message, f.fields["remote-peer-id"], f.mismatch) for f in fs] == [
        ("cannot fetch hash from slow remote peer", "aaaa", False),
        ("cannot fetch hash from remote peer; local member is behind", "bbbb", False),
        ("cluster ID mismatch", "3", False),
    ]


# --- periodic check rules -------------------------------------------------------------------


def test_periodic_all_equal_only_reports_the_count() -> None:
    fs = periodic_findings(_h(7), 10, _h(7), 10, [_peer(A, 7), _peer(B, 7, rev=9)])
    assert fs == [Finding("info", "finished peer corruption check", {"number-of-peers-checked": 2})]


def test_periodic_follower_hash_differs() -> None:
    fs = periodic_findings(_h(7), 10, _h(7), 10, [_peer(A, 7), _peer(B, 8)])
    assert _mismatches(fs) == ["same compact revision then hashes must match"]
    assert fs[0].fields["follower-peer-id"] == "bbbb"
    assert (fs[0].fields["leader-hash"], fs[0].fields["follower-hash"]) == (7, 8)


def test_periodic_other_compaction_is_not_compared() -> None:
    # The follower compacted less (its compact revision is lower): hashes are not comparable.
    fs = periodic_findings(_h(7, compact=5), 10, _h(7, compact=5), 10, [_peer(A, 8, compact=2)])
    assert _mismatches(fs) == []


def test_periodic_follower_ahead_of_the_leader() -> None:
    fs = periodic_findings(_h(7), 10, _h(7), 11, [_peer(A, 7, rev=12)])
    assert _mismatches(fs) == ["revision from follower must be less than or equal to leader's"]
    fs = periodic_findings(_h(7, 3), 10, _h(7, 3), 10, [_peer(A, 9, compact=4)])
    assert _mismatches(fs) == [
        "compact revision from follower must be less than or equal to leader's"
    ]


def test_periodic_leader_hash_changed_at_the_same_revision() -> None:
    fs = periodic_findings(_h(7), 10, _h(8), 10, [])
    assert _mismatches(fs) == ["found hash mismatch"]
    # A new revision (writes meanwhile) or a compaction explains a different hash.
    assert _mismatches(periodic_findings(_h(7), 10, _h(8), 11, [])) == []
    assert _mismatches(periodic_findings(_h(7, 1), 10, _h(8, 2), 10, [])) == []


def test_periodic_failed_peers_are_not_counted() -> None:
    fail = PeerFailure(B, (), FailureKind.FUTURE_REVISION, "behind")
    fs = periodic_findings(_h(7), 10, _h(7), 10, [_peer(A, 7), fail])
    assert fs[-1].fields == {"number-of-peers-checked": 1}


# --- the drivers, with a fake member and fake peers -------------------------------------------


class FakeHasher:
    def __init__(self, hashes: list[tuple[HashKVResult, int]], leader: bool = True) -> None:
        self.hashes = hashes
        self.leader = leader
        self.calls: list[str] = []
        self.alarms: list[int] = []

    @property
    def member_id(self) -> int:
        return LOCAL

    @property
    def cluster_id(self) -> int:
        return 0xC1

    async def hash_kv(self) -> tuple[HashKVResult, int]:
        self.calls.append("hash")
        return self.hashes.pop(0) if len(self.hashes) > 1 else self.hashes[0]

    def peers(self) -> list[PeerTarget]:
        return [PeerTarget(A, ("http://a",)), PeerTarget(B, ("http://b",))]

    def is_leader(self) -> bool:
        return self.leader

    async def linearizable_read_notify(self) -> None:
        self.calls.append("barrier")

    async def trigger_corrupt_alarm(self, member_id: int) -> None:
        self.alarms.append(member_id)


class FakeFetcher:
    def __init__(self, hasher: FakeHasher, answers: dict[int, int]) -> None:
        self.hasher = hasher
        self.answers = answers  # peer id -> hash (always at compact -1)
        self.asked: list[tuple[int, list[int], int]] = []

    async def __call__(
        self, cluster_id: int, peers: Sequence[PeerTarget], revision: int
    ) -> list[PeerResult]:
        self.hasher.calls.append("fetch")
        self.asked.append((cluster_id, [p.member_id for p in peers], revision))
        return [_peer(p.member_id, self.answers[p.member_id], rev=revision) for p in peers]


def _logger() -> tuple[Logger, io.StringIO]:
    out = io.StringIO()
    return Logger("info", [out]), out


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_initial_check_refuses_on_a_mismatch() -> None:
    hasher = FakeHasher([(_h(7, rev=10), 10)])
    fetch = FakeFetcher(hasher, {A: 7, B: 9})
    log, out = _logger()
    with pytest.raises(InitialCheckError, match=r"^1111 found data inconsistency with peers$"):
        asyncio.run(initial_check(hasher, fetch, log, timeout_s=7))
    assert fetch.asked == [(0xC1, [A, B], 10)]  # the peers are asked at the local revision
    msgs = [(r["level"], r["msg"]) for r in _lines(out)]
    assert msgs == [
        ("info", "starting initial corruption check"),
        ("warn", "found different hash values from remote peer"),
    ]


def test_initial_check_passes() -> None:
    hasher = FakeHasher([(_h(7), 10)])
    log, out = _logger()
    asyncio.run(initial_check(hasher, FakeFetcher(hasher, {A: 7, B: 7}), log, timeout_s=7))
    assert _lines(out)[-1]["msg"] == "initial corruption checking passed; no corruption"


def test_periodic_check_order_and_alarm_for_member_zero() -> None:
    hasher = FakeHasher([(_h(7), 10), (_h(7), 10)])
    log, _ = _logger()
    assert asyncio.run(periodic_check(hasher, FakeFetcher(hasher, {A: 7, B: 8}), log))
    assert hasher.calls == ["hash", "fetch", "barrier", "hash"]
    assert hasher.alarms == [0]  # one alarm for the pass, for no particular member
    hasher = FakeHasher([(_h(7), 10), (_h(7), 10)])
    assert not asyncio.run(periodic_check(hasher, FakeFetcher(hasher, {A: 7, B: 7}), log))
    assert hasher.alarms == []


def test_monitor_checks_only_on_the_leader_and_survives_errors() -> None:
    hasher = FakeHasher([(_h(7), 10)], leader=False)
    fetch = FakeFetcher(hasher, {A: 7})  # B missing: the fetch raises KeyError
    log, out = _logger()
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 2:
            hasher.leader = True
        if len(slept) == 4:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(monitor_kv_hash(hasher, fetch, log, 2.5, sleep=sleep))
    assert slept == [2.5] * 4
    assert len(fetch.asked) == 2  # passes 2 and 3: leader by then
    msgs = [r["msg"] for r in _lines(out)]
    assert msgs == ["enabled corruption checking", *["failed to check hash KV"] * 2]


def test_corrupt_check_flags() -> None:
    parsed = parse(["--experimental-corrupt-check-time=2m30s"], {})
    assert parsed.action is Action.RUN and parsed.config is not None
    assert parsed.config.experimental_corrupt_check_time_s == 150.0
    assert parsed.warnings == ()  # honoured, not "accepted and ignored"
    env = {"ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME": "500ms"}
    parsed = parse([], env)
    assert parsed.config is not None and parsed.config.experimental_corrupt_check_time_s == 0.5
    parsed = parse([], {})
    assert parsed.config is not None and parsed.config.experimental_corrupt_check_time_s == 0.0
    with pytest.raises(ConfigError, match="corrupt-check-time"):
        parse(["--experimental-corrupt-check-time=-1s"], {})


# --- compaction hash check (--experimental-compact-hash-check-enabled) ----------------------


def test_unchecked_hashes_newest_first_above_the_latest_checked() -> None:
    hs = [_h(1, 2, rev=5), _h(2, 5, rev=9), _h(3, -1, rev=2), _h(4, 9, rev=12)]
    assert [h.hash_revision for h in unchecked_hashes(hs, 0)] == [12, 9, 5, 2]
    assert [h.hash_revision for h in unchecked_hashes(hs, 5)] == [12, 9]
    assert unchecked_hashes(hs, 12) == []


def _verdict_msgs(v: CompactHashVerdict) -> list[tuple[str, str]]:
    return [(f.level, f.message) for f in v.findings]


def test_compact_hash_verdict_every_peer_matches() -> None:
    v = compact_hash_verdict(_h(7, 3, rev=9), [_peer(A, 7, 3), _peer(B, 7, 3)])
    assert (v.mismatch, v.whole_cluster) == (False, True)
    assert _verdict_msgs(v) == [
        ("info", "successfully checked hash on follower"),
        ("info", "successfully checked hash on follower"),
        ("info", "successfully checked hash on whole cluster"),
    ]
    assert v.findings[0].fields == {"revision": 9, "peer-id": "aaaa"}
    assert v.findings[-1].fields == {"number-of-peers-checked": 2, "revision": 9}


def test_compact_hash_verdict_skips_other_compactions_and_failed_peers() -> None:
    """A peer at another compact revision (no record at R: restarted, or its compaction was
    interrupted) or without an answer is not compared, even with another hash."""
    failed = PeerFailure(B, ("http://b",), FailureKind.UNREACHABLE, "refused")
    v = compact_hash_verdict(_h(7, 3, rev=9), [_peer(A, 99, 9), failed])
    assert (v.mismatch, v.whole_cluster) == (False, False)
    assert _verdict_msgs(v) == [
        ("warn", "skipped revision in compaction hash check; was not able to check all peers")
    ]
    assert v.findings[0].fields == {
        "number-of-peers-checked": 0,
        "number-of-peers": 2,
        "revision": 9,
    }
    v = compact_hash_verdict(_h(7, 3, rev=9), [_peer(A, 7, 3), _peer(B, 99, 9)])
    assert (v.mismatch, v.whole_cluster) == (False, False)
    assert v.findings[-1].fields["number-of-peers-checked"] == 1


def test_compact_hash_verdict_mismatch_at_the_same_compact_revision() -> None:
    v = compact_hash_verdict(_h(7, 3, rev=9), [_peer(A, 7, 3), _peer(B, 8, 3), _peer(0xCCCC, 9, 3)])
    assert (v.mismatch, v.whole_cluster) == (True, False)
    assert _verdict_msgs(v) == [
        ("info", "successfully checked hash on follower"),
        ("error", "failed compaction hash check"),  # and no further peer looked at
    ]
    assert v.findings[-1].fields == {
        "revision": 9,
        "leader-compact-revision": 3,
        "leader-hash": 7,
        "follower-compact-revision": 3,
        "follower-hash": 8,
        "follower-peer-id": "bbbb",
    }


def test_compact_hash_verdict_without_peers_says_nothing() -> None:
    v = compact_hash_verdict(_h(7, 3, rev=9), [])
    assert (v.findings, v.mismatch, v.whole_cluster) == ([], False, False)


class CompactFetcher:
    """Peers' answers per revision: peer id -> (hash, compact revision), or missing."""

    def __init__(self, answers: dict[int, dict[int, tuple[int, int]]]) -> None:
        self.answers = answers
        self.asked: list[int] = []

    async def __call__(
        self, cluster_id: int, peers: Sequence[PeerTarget], revision: int
    ) -> list[PeerResult]:
        self.asked.append(revision)
        out: list[PeerResult] = []
        for p in peers:
            got = self.answers.get(revision, {}).get(p.member_id)
            if got is None:
                out.append(PeerFailure(p.member_id, p.endpoints, FailureKind.COMPACTED, "x"))
            else:
                out.append(_peer(p.member_id, got[0], got[1], rev=revision))
        return out


class CompactHasher(FakeHasher):
    def __init__(self, records: list[HashKVResult]) -> None:
        super().__init__([])
        self.records = records

    def compaction_hashes(self) -> list[HashKVResult]:
        return list(self.records)


def test_compact_hash_check_newest_first_until_the_whole_cluster_matched() -> None:
    records = [_h(1, -1, rev=5), _h(2, 5, rev=9), _h(3, 9, rev=12)]
    hasher = CompactHasher(records)
    # At 12, B has no record (it restarted): skipped; at 9 both match; 5 is not asked.
    fetch = CompactFetcher({12: {A: (3, 9), B: (30, 12)}, 9: {A: (2, 5), B: (2, 5)}})
    log, out = _logger()
    checker = CompactHashChecker(hasher, fetch, log, timeout_s=7)
    assert not asyncio.run(checker.check())
    assert fetch.asked == [12, 9] and checker.latest_revision_checked == 9
    lines = _lines(out)
    assert (lines[0]["msg"], lines[0]["local-member-id"], lines[0]["timeout"]) == (
        "starting compact hash check",
        "1111",
        "7s",
    )
    assert (lines[-1]["msg"], lines[-1]["number-of-hashes-checked"]) == (
        "finished compaction hash check",
        2,
    )
    assert hasher.alarms == []
    # The next pass looks only at records above 9; none answered by everyone: all of them.
    fetch.asked.clear()
    assert not asyncio.run(checker.check())
    assert fetch.asked == [12]
    assert _lines(out)[-1]["number-of-hashes-checked"] == 1
    assert checker.latest_revision_checked == 9
    # A new record, matched: checked; 12 is then below the latest checked.
    hasher.records.append(_h(4, 12, rev=15))
    fetch.answers[15] = {A: (4, 12), B: (4, 12)}
    fetch.asked.clear()
    asyncio.run(checker.check())
    assert fetch.asked == [15] and checker.latest_revision_checked == 15
    fetch.asked.clear()
    asyncio.run(checker.check())
    assert fetch.asked == [] and _lines(out)[-1]["number-of-hashes-checked"] == 0


def test_compact_hash_check_mismatch_raises_the_alarm_for_member_zero() -> None:
    hasher = CompactHasher([_h(1, -1, rev=5), _h(2, 5, rev=9)])
    fetch = CompactFetcher({9: {A: (2, 5), B: (6, 5)}, 5: {A: (1, -1), B: (1, -1)}})
    log, out = _logger()
    checker = CompactHashChecker(hasher, fetch, log, timeout_s=7)
    assert asyncio.run(checker.check())
    assert hasher.alarms == [0]  # etcd 3.5 blames no member
    assert fetch.asked == [9]  # stops at the mismatch
    msgs = [r["msg"] for r in _lines(out)]
    assert msgs == [
        "starting compact hash check",
        "successfully checked hash on follower",
        "failed compaction hash check",
    ]
    assert _lines(out)[-1]["level"] == "error"
    assert checker.latest_revision_checked == 0


def test_compact_hash_monitor_checks_only_on_the_leader() -> None:
    hasher = CompactHasher([_h(1, -1, rev=5)])
    hasher.leader = False
    fetch = CompactFetcher({5: {A: (1, -1), B: (1, -1)}})
    log, out = _logger()
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 2:
            hasher.leader = True
        if len(slept) == 3:
            raise asyncio.CancelledError

    checker = CompactHashChecker(hasher, fetch, log, timeout_s=7)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(monitor_compact_hash(hasher, checker, log, 1.5, sleep=sleep))
    assert slept == [1.5] * 3 and fetch.asked == [5]
    assert [r["msg"] for r in _lines(out)][-1] == "finished compaction hash check"


def test_compact_hash_check_flags() -> None:
    parsed = parse([], {})
    assert parsed.config is not None
    cfg = parsed.config
    assert (
        cfg.experimental_compact_hash_check_enabled,
        cfg.experimental_compact_hash_check_time_s,
        cfg.experimental_compaction_batch_limit,
    ) == (False, 60.0, 1000)
    parsed = parse(
        [
            "--experimental-compact-hash-check-enabled",
            "--experimental-compact-hash-check-time=1s",
            "--experimental-compaction-batch-limit=1",
        ],
        {},
    )
    assert parsed.config is not None and parsed.warnings == ()  # honoured, not ignored
    cfg = parsed.config
    assert (
        cfg.experimental_compact_hash_check_enabled,
        cfg.experimental_compact_hash_check_time_s,
        cfg.experimental_compaction_batch_limit,
    ) == (True, 1.0, 1)
    env = {"ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED": "true"}
    parsed = parse([], env)
    assert parsed.config is not None and parsed.config.experimental_compact_hash_check_enabled
    with pytest.raises(
        ConfigError, match=r"^--experimental-compact-hash-check-time must be >0 \(set to 0s\)$"
    ):
        parse(["--experimental-compact-hash-check-time=0"], {})
    with pytest.raises(ConfigError, match="compaction-batch-limit must be >=0"):
        parse(["--experimental-compaction-batch-limit=-1"], {})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.000000512, "512ns"),
        (0.0000015, "1.5µs"),
        (0.012034, "12.034ms"),
        (1.5, "1.5s"),
        (60, "1m0s"),
        (3725.25, "1h2m5.25s"),
    ],
)
def test_go_duration_as_etcd_logs_took(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_member_logs_finished_compactions_and_answers_the_recorded_hash(tmp_path: Path) -> None:
    """A member's compaction ends with etcd's ``finished scheduled compaction`` and ``storing
    new hash``; HashKV at that revision then answers the record (what peers compare)."""

    async def run() -> None:
        log, out = _logger()
        m = await start_solo(tmp_path, log)
        try:
            for i in range(30):
                await m.put(PutRequest(b"k%d" % (i % 4), b"v%d" % i))
            rev = m.kv.current_revision
            _, before = await m.hash_kv(rev)
            await m.compact(CompactionRequest(rev, physical=True))
            for _ in range(100):
                if any(r["msg"] == "storing new hash" for r in _lines(out)):
                    break
                await asyncio.sleep(0.05)
            _, after = await m.hash_kv(rev)
        finally:
            await m.stop()
        assert after == before and before.compact_revision == -1
        lines = {r["msg"]: r for r in _lines(out)}
        done = lines["finished scheduled compaction"]
        assert (done["compact-revision"], done["hash"]) == (rev, before.hash)
        stored = lines["storing new hash"]
        assert (stored["hash"], stored["revision"], stored["compact-revision"]) == (
            before.hash,
            rev,
            -1,
        )

    asyncio.run(run())


# --- what the CORRUPT alarm refuses -----------------------------------------------------------


def test_refused_when_corrupt_as_etcds_corrupt_applier() -> None:
    rng = RequestOp(request_range=RangeRequest(b"k"))
    put = RequestOp(request_put=PutRequest(b"k", b"v"))
    nested = RequestOp(request_txn=TxnRequest(success=(rng,)))
    refused = [
        PutRequest(b"k", b"v"),
        DeleteRangeRequest(b"k"),
        TxnRequest(success=(rng,), failure=(put,)),
        TxnRequest(success=(nested,)),  # etcd's isTxnReadonly: a nested txn is not read-only
        CompactionRequest(5),
        entry_codec.LeaseGrant(1, 10),
        entry_codec.LeaseRevoke(1),
    ]
    allowed = [
        TxnRequest(success=(rng,), failure=(rng,)),
        TxnRequest(),
        entry_codec.LeaseCheckpoints(((1, 5),)),
        entry_codec.AlarmChange(2, 0, 2),
        entry_codec.MemberAttributes(1, "m", ()),
    ]
    assert [refused_when_corrupt(r) for r in refused] == [True] * len(refused)
    assert [refused_when_corrupt(r) for r in allowed] == [False] * len(allowed)


def test_member_refuses_writes_while_corrupt_and_after_restart(tmp_path: Path) -> None:
    from petcd.server.member import ALARM_ACTIVATE, ALARM_CORRUPT, ALARM_DEACTIVATE

    async def run(step: int) -> None:
        log, _ = _logger()
        m = await start_solo(tmp_path, log)
        try:
            if step == 1:
                await m.put(PutRequest(b"k", b"v1"))
                await m.alarm_change(ALARM_ACTIVATE, 0, ALARM_CORRUPT)
            rev = m.kv.current_revision
            # Refused on the apply path, with nothing changed (also after a restart).
            writes: list[Callable[[], Awaitable[object]]] = [
                lambda: m.put(PutRequest(b"k", b"v2")),
                lambda: m.delete_range(DeleteRangeRequest(b"k")),
                lambda: m.txn(
                    TxnRequest(success=(RequestOp(request_put=PutRequest(b"k", b"v3")),))
                ),
                lambda: m.compact(CompactionRequest(1)),
                lambda: m.lease_grant(0, 60),
            ]
            for write in writes:
                with pytest.raises(CorruptError):
                    await write()
            assert m.kv.current_revision == rev
            got = await m.range(RangeRequest(b"k"))
            assert [kv.value for kv in got.kvs] == [b"v1"]
            ro = await m.txn(TxnRequest(success=(RequestOp(request_range=RangeRequest(b"k")),)))
            assert ro.responses[0].response_range is not None
            assert m.alarms()[1] == ((0, ALARM_CORRUPT),)
            if step == 2:
                await m.alarm_change(ALARM_DEACTIVATE, 0, ALARM_CORRUPT)
                await m.put(PutRequest(b"k", b"v4"))
                assert [kv.value for kv in (await m.range(RangeRequest(b"k"))).kvs] == [b"v4"]
        finally:
            await m.stop()

    asyncio.run(run(1))
    asyncio.run(run(2))  # the alarm is in the backend: still refused after a restart


# --- the gRPC fetcher against an in-process Maintenance server ------------------------------


class _Maintenance(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, cluster_id: int, member_id: int, answer: Any) -> None:
        self.cluster_id, self.member_id, self.answer = cluster_id, member_id, answer
        self.revisions: list[int] = []

    async def HashKV(self, request: Any, context: Any) -> Any:
        self.revisions.append(request.revision)
        if isinstance(self.answer, Exception):
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, self.answer.message)
        return rpc_pb2.HashKVResponse(
            header=rpc_pb2.ResponseHeader(
                cluster_id=self.cluster_id, member_id=self.member_id, revision=42
            ),
            hash=self.answer,
            compact_revision=3,
        )


def test_grpc_fetcher_classifies_answers() -> None:
    async def main() -> tuple[list[PeerResult], list[list[int]], str]:
        servers, urls, svcs = [], [], []
        answers: list[Any] = [1234, FutureRevisionError(), CompactedError(3), 99]
        cluster_ids = [0xC1, 0xC1, 0xC1, 0xD2]
        for i, answer in enumerate(answers):
            server = grpc.aio.server()
            svc = _Maintenance(cluster_ids[i], 100 + i, answer)
            rpc_pb2_grpc.add_MaintenanceServicer_to_server(svc, server)  # type: ignore[no-untyped-call]
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            svcs.append(svc)
            urls.append(f"http://127.0.0.1:{port}")
        # A closed port, then a working URL: the second endpoint of the same peer answers.
        with socket.socket() as sock:  # a port nobody listens on: connections are refused
            sock.bind(("127.0.0.1", 0))
            dead_port = sock.getsockname()[1]
        log, out = _logger()
        fetch = GrpcPeerHashFetcher(LOCAL, log, timeout_s=5)
        try:
            peers = [PeerTarget(100 + i, (u,)) for i, u in enumerate(urls)]
            peers.append(PeerTarget(7, (f"http://127.0.0.1:{dead_port}", urls[0])))
            peers.append(PeerTarget(8, ("https://127.0.0.1:1",)))
            peers.append(PeerTarget(9, ()))
            got = await fetch(0xC1, peers, 17)
        finally:
            for s in servers:
                await s.stop(None)
        return got, [s.revisions for s in svcs], out.getvalue()

    got, asked, logged = asyncio.run(main())
    assert asked == [[17, 17], [17], [17], [17]]  # the first server also answered peer 7
    assert got[0] == PeerHash(100, got[0].endpoints, revision=42, hash=1234, compact_revision=3)
    kinds = [g.kind if isinstance(g, PeerFailure) else None for g in got]
    assert kinds == [
        None,
        FailureKind.FUTURE_REVISION,
        FailureKind.COMPACTED,
        FailureKind.CLUSTER_ID_MISMATCH,
        None,  # the second URL answered
        FailureKind.UNREACHABLE,
        FailureKind.UNREACHABLE,
    ]
    assert isinstance(got[4], PeerHash) and got[4].member_id == 7 and got[4].hash == 1234
    assert "failed hash kv request" in logged
