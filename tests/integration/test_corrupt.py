"""Corruption checks on a real 3-member cluster (petcd.server.corrupt).

One member is stopped, one stored value in its backend is changed offline (its consistent
index untouched, so raft replays nothing over it), and it is started again:

- with ``--experimental-initial-corrupt-check`` it refuses to start, naming itself, its peers
  and the differing hashes; without the flag it starts (nothing else looks at the hashes);
- with ``--experimental-corrupt-check-time`` the leader notices, raises the CORRUPT alarm
  (``etcdctl alarm list``), writes fail with etcd's ``etcdserver: corrupt cluster``, reads
  work, and ``etcdctl alarm disarm`` clears it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.backend import KEY, Backend
from petcd.backend.backend import read_consistent_index
from petcd.mvcc.kvstore import decode_kv, encode_kv
from tests.integration.petcd_proc import etcdctl, kv_stub, maintenance_stub
from tests.robustness.cluster import ETCD_BIN, Cluster, Member

CHECK_FLAG = "--experimental-initial-corrupt-check"


def _backend_path(m: Member) -> str:
    return str(m.data_dir / "member" / "snap" / "db")


def corrupt_value(m: Member, key: bytes) -> tuple[bytes, bytes]:
    """Change the newest stored value of ``key`` in the stopped member's backend, in place.

    Returns (old value, new value). The consistent index is left as it was: raft will not
    replay (and so repair) anything.
    """
    path = _backend_path(m)
    ci_before = read_consistent_index(path)
    backend = Backend(path)
    try:
        found = [(k, decode_kv(v)) for k, v in backend.iterate(KEY) if decode_kv(v).key == key]
        assert found, f"{key!r} is not in {path}"
        rev_key, kv = found[-1]
        new = bytes(b ^ 0x20 for b in kv.value)  # same length, every byte different
        assert new != kv.value
        backend.put(KEY, rev_key, encode_kv(dataclasses.replace(kv, value=new)))
        backend.commit()
    finally:
        backend.close()
    assert read_consistent_index(path) == ci_before
    return kv.value, new


def _status(m: Member) -> rpc_pb2.StatusResponse:
    with grpc.insecure_channel(m.endpoint) as ch:
        resp: rpc_pb2.StatusResponse = maintenance_stub(ch).Status(
            rpc_pb2.StatusRequest(), timeout=5
        )
        return resp


def _put(m: Member, key: bytes, value: bytes, timeout_s: float = 30.0) -> None:
    """Put, retried while the cluster is electing a leader (a member was just stopped)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(m.endpoint) as ch:
        while True:
            try:
                kv_stub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _records(m: Member, msg: str, since: int = 0) -> list[dict[str, object]]:
    """The log records with message ``msg``, from the ``since``-th record on."""
    return [r for r in m.log_records()[since:] if r.get("msg") == msg]


def _wait_exit(m: Member, timeout_s: float) -> int:
    assert m.proc is not None
    return m.proc.wait(timeout=timeout_s)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[list[Cluster]]:
    made: list[Cluster] = []
    try:
        yield made
    finally:
        for c in made:
            c.stop()


def _start(made: list[Cluster], base: Path, *extra: str) -> Cluster:
    c = Cluster(base, size=3, extra_args=list(extra))
    made.append(c)
    c.start()
    for i in range(5):
        _put(c.members[0], f"key-{i}".encode(), f"value-{i}".encode())
    _put(c.members[0], b"corrupt-me", b"the original value")
    return c


def _leader(c: Cluster) -> Member:
    ids = {_status(m).header.member_id: m for i, m in enumerate(c.members) if c.running(i)}
    return ids[_status(next(iter(ids.values()))).leader]


def _follower(c: Cluster) -> int:
    """A follower to stop: stopping the leader would cost an election (and a put's timeout)."""
    leader = _leader(c)
    return next(i for i, m in enumerate(c.members) if m is not leader)


def _hex(mid: int) -> str:
    return f"{mid:x}"


def test_initial_check_refuses_a_corrupt_member(
    tmp_path: Path, cluster_factory: list[Cluster]
) -> None:
    c = _start(cluster_factory, tmp_path)
    i2 = _follower(c)
    victim, others = c.members[i2], [m for m in c.members if m is not c.members[i2]]
    ids = {m.name: _status(m).header.member_id for m in c.members}
    # The member with a changed value refuses, naming itself, the peers and the hashes.
    victim.terminate()
    _put(others[0], b"after", b"x")  # the peers are ahead: asked at victim's revision
    corrupt_value(victim, b"corrupt-me")
    victim.args = [*(victim.args or []), CHECK_FLAG]
    since = len(victim.log_records())
    victim.start(wait=False)
    assert _wait_exit(victim, 30) == 1, victim.log_tail()
    want = f"{_hex(ids[victim.name])} found data inconsistency with peers"
    failed = _records(victim, "checkInitialHashKV failed", since)
    assert [r["error"] for r in failed] == [want], victim.log_tail()
    fatal = _records(victim, "discovery failed", since)
    assert [(r["level"], r["error"]) for r in fatal] == [("fatal", want)]
    diffs = _records(victim, "found different hash values from remote peer", since)
    assert sorted(str(r["remote-peer-id"]) for r in diffs) == sorted(
        [_hex(ids[m.name]) for m in others]
    )
    for r in diffs:
        assert r["level"] == "warn"
        assert r["local-member-id"] == _hex(ids[victim.name])
        assert r["local-member-hash"] != r["remote-peer-hash"]
        assert r["local-member-revision"] < r["remote-peer-revision"]
        assert r["local-member-compact-revision"] == r["remote-peer-compact-revision"] == -1
    assert not _records(victim, "ready to serve client requests", since)
    assert not _records(victim, "starting peer transport", since)  # nothing was served
    # Without the flag nothing looks at the hashes: the member starts and serves.
    victim.args = [a for a in victim.args if a != CHECK_FLAG]
    c.restart(i2)
    got = etcdctl(victim.endpoint, "get", "corrupt-me", "--consistency=s", "--print-value-only")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() != "the original value"  # what was changed is served as is


def _wait_alarm(m: Member, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    out = ""
    while time.monotonic() < deadline:
        res = etcdctl(m.endpoint, "alarm", "list")
        out = res.stdout
        if "CORRUPT" in out:
            return out
        time.sleep(0.3)
    raise AssertionError(f"no CORRUPT alarm after {timeout_s}s: {out!r}")


def _wait_check_pass(c: Cluster, peers_checked: int, timeout_s: float = 20.0) -> None:
    """Until a periodic check that starts from now finishes having checked ``peers_checked``."""
    since = {m.name: len(m.log_records()) for m in c.members}
    deadline = time.monotonic() + timeout_s
    seen: dict[str, list[object]] = {}
    while time.monotonic() < deadline:
        for m in c.members:
            recs = _records(m, "finished peer corruption check", since[m.name])
            seen[m.name] = [r["number-of-peers-checked"] for r in recs]
            # The first pass after ``since`` may have begun before: wait for a second one.
            if len(recs) >= 2 and recs[-1]["number-of-peers-checked"] == peers_checked:
                return
        time.sleep(0.2)
    raise AssertionError(f"no check pass over {peers_checked} peers in {timeout_s}s: {seen}")


def _alarms(m: Member) -> list[tuple[int, int]]:
    with grpc.insecure_channel(m.endpoint) as ch:
        resp = maintenance_stub(ch).Alarm(
            rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=5
        )
    return [(a.memberID, a.alarm) for a in resp.alarms]


def test_periodic_check_raises_the_corrupt_alarm(
    tmp_path: Path, cluster_factory: list[Cluster]
) -> None:
    c = _start(cluster_factory, tmp_path, "--experimental-corrupt-check-time=1s")
    i2 = _follower(c)
    lead, victim = _leader(c), c.members[i2]
    # Healthy: the leader checks both followers and finds nothing.
    _wait_check_pass(c, 2)
    assert etcdctl(lead.endpoint, "alarm", "list").stdout == ""
    assert all(not _records(m, "found different hash values from remote peer") for m in c.members)
    # victim's data changed behind raft's back; it starts (without the initial check).
    victim.terminate()
    corrupt_value(victim, b"corrupt-me")
    c.restart(i2)
    out = _wait_alarm(lead, 30)
    assert out.split() == ["alarm:CORRUPT"], out  # etcdctl leaves out the member id 0
    assert _alarms(lead) == [(0, rpc_pb2.CORRUPT)]  # etcd 3.5 blames no member: id 0
    leader = _leader(c)
    assert _records(leader, "same compact revision then hashes must match")
    assert "alarm:CORRUPT" in " ".join(_status(lead).errors)
    # Writes fail with etcd's error and etcdctl's exit code, on every member.
    for m in c.members:
        put = etcdctl(m.endpoint, "put", "foo", "bar")
        assert (put.returncode, put.stdout) == (1, ""), (put.stdout, put.stderr)
        assert put.stderr.strip().endswith("Error: etcdserver: corrupt cluster"), put.stderr
    with grpc.insecure_channel(lead.endpoint) as ch, pytest.raises(grpc.RpcError) as ei:
        kv_stub(ch).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"key-1"), timeout=10)
    assert ei.value.code() == grpc.StatusCode.DATA_LOSS
    assert ei.value.details() == "etcdserver: corrupt cluster"
    # Reads (also a read-only txn) still work.
    got = etcdctl(lead.endpoint, "get", "corrupt-me", "--print-value-only")
    assert (got.returncode, got.stdout.strip()) == (0, "the original value"), got.stderr
    with grpc.insecure_channel(lead.endpoint) as ch:
        txn = kv_stub(ch).Txn(
            rpc_pb2.TxnRequest(
                success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"key-2"))]
            ),
            timeout=10,
        )
    assert txn.responses[0].response_range.kvs[0].value == b"value-2"
    # The corrupt member gone, the alarm can be disarmed and stays cleared.
    c.kill(i2)
    _wait_check_pass(c, 1)  # victim unreachable now: skipped
    disarm = etcdctl(lead.endpoint, "alarm", "disarm")
    assert (disarm.returncode, disarm.stdout.split()) == (0, ["alarm:CORRUPT"]), disarm.stderr
    assert etcdctl(lead.endpoint, "alarm", "list").stdout == ""
    put = etcdctl(lead.endpoint, "put", "foo", "bar")
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    _wait_check_pass(c, 1)
    assert etcdctl(lead.endpoint, "alarm", "list").stdout == ""


@pytest.mark.long  # ~17 s on a loaded machine: an extra case, the main ones run by default
def test_periodic_check_on_a_corrupt_leader(tmp_path: Path, cluster_factory: list[Cluster]) -> None:
    """The bad member leads and checks (only it has the flag): the alarm is raised all the same."""
    c = _start(cluster_factory, tmp_path)
    i2 = _follower(c)
    victim = c.members[i2]
    victim_id = _status(victim).header.member_id
    victim.terminate()
    corrupt_value(victim, b"corrupt-me")
    victim.args = [*(victim.args or []), "--experimental-corrupt-check-time=1s"]
    c.restart(i2)
    moved = etcdctl(_leader(c).endpoint, "move-leader", f"{victim_id:x}")
    assert moved.returncode == 0, moved.stderr
    assert _leader(c) is victim
    out = _wait_alarm(victim, 30)
    assert out.split() == ["alarm:CORRUPT"], out
    mismatches = _records(victim, "same compact revision then hashes must match")
    assert mismatches and {r["leader-hash"] for r in mismatches} != {
        r["follower-hash"] for r in mismatches
    }
    put = etcdctl(c.members[(i2 + 1) % 3].endpoint, "put", "foo", "bar")
    assert (put.returncode, put.stderr.strip().splitlines()[-1]) == (
        1,
        "Error: etcdserver: corrupt cluster",
    )


def test_initial_check_passes_on_healthy_members(
    tmp_path: Path, cluster_factory: list[Cluster]
) -> None:
    c = _start(cluster_factory, tmp_path, CHECK_FLAG)
    lead = _leader(c)
    i1, i_down = (i for i, m in enumerate(c.members) if m is not lead)
    member, down = c.members[i1], c.members[i_down]
    # New members have nothing to compare yet: no initial check (as etcd).
    assert not any(_records(m, "starting initial corruption check") for m in c.members)
    member.terminate()
    _put(lead, b"after", b"x")  # the peers are ahead: they answer at the member's revision
    down.terminate()  # an unreachable peer is skipped with a warning
    since = len(member.log_records())
    c.restart(i1)
    assert _records(member, "starting initial corruption check", since)
    failed = _records(member, "failed hash kv request", since)
    assert failed and {r["remote-peer-endpoint"] for r in failed} == {
        f"http://127.0.0.1:{down.client_port}"
    }
    assert _records(member, "initial corruption checking passed; no corruption", since)
    assert not _records(member, "found different hash values from remote peer", since)
    got = etcdctl(member.endpoint, "get", "after", "--print-value-only")
    assert (got.returncode, got.stdout.strip()) == (0, "x"), got.stderr


def _corrupt_alarm_session(m: Member) -> list[tuple[int, str, list[str]]]:
    """Raise CORRUPT by hand (Maintenance.Alarm ACTIVATE), then what etcdctl users see."""
    with grpc.insecure_channel(m.endpoint) as ch:
        maintenance_stub(ch).Alarm(
            rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=0, alarm=rpc_pb2.CORRUPT
            ),
            timeout=10,
        )
    out = []
    for args, stdin in [
        (["alarm", "list"], None),
        (["put", "a", "b"], None),
        (["get", "a"], None),
        (["txn"], "\nget a\n\n"),
        (["lease", "grant", "60"], None),
        (["alarm", "disarm"], None),
        (["alarm", "list"], None),
        (["put", "a", "c"], None),
        (["get", "a", "--print-value-only"], None),
    ]:
        res = _etcdctl_input(m.endpoint, args, stdin)
        errors = [line for line in res.stderr.splitlines() if line.startswith("Error")]
        out.append((res.returncode, res.stdout, errors))
    return out


def _etcdctl_input(endpoint: str, args: list[str], stdin: str | None) -> Any:
    if stdin is None:
        return etcdctl(endpoint, *args)
    return subprocess.run(
        ["/usr/bin/etcdctl", f"--endpoints={endpoint}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=False,
    )


@pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="the real etcd is not installed")
def test_corrupt_alarm_as_real_etcd(tmp_path: Path, cluster_factory: list[Cluster]) -> None:
    """The same session against the real etcd and petcd: same outputs and exit codes."""
    got = {}
    for target in ("etcd", "petcd"):
        c = Cluster(tmp_path / target, target=target, size=1)
        cluster_factory.append(c)
        c.start()
        got[target] = _corrupt_alarm_session(c.members[0])
        c.stop()
    assert got["petcd"] == got["etcd"]
    assert got["petcd"][1] == (1, "", ["Error: etcdserver: corrupt cluster"])
    assert got["petcd"][4] == (
        1,
        "",
        ["Error: failed to grant lease (etcdserver: corrupt cluster)"],
    )


# --- the compaction hash check (--experimental-compact-hash-check-enabled) --------------------

COMPACT_CHECK = (
    "--experimental-compact-hash-check-enabled",
    "--experimental-compact-hash-check-time=1s",
)


def _compact(m: Member) -> int:
    rev = _status(m).header.revision
    res = etcdctl(m.endpoint, "compact", str(rev))
    assert res.returncode == 0, res.stderr
    return rev


def _wait_record(m: Member, msg: str, since: int, timeout_s: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recs = _records(m, msg, since)
        if recs:
            return recs[0]
        time.sleep(0.2)
    raise AssertionError(f"{m.name} did not log {msg!r} in {timeout_s}s:\n{m.log_tail()}")


def test_compaction_hash_check_raises_the_corrupt_alarm(
    tmp_path: Path, cluster_factory: list[Cluster]
) -> None:
    """Every member records a hash when it finishes a compaction; the leader compares them.
    Healthy: the whole cluster is checked at the compact revision, no alarm. A follower whose
    stored value changed behind raft's back: after the next compaction, CORRUPT (member 0)."""
    c = _start(cluster_factory, tmp_path, *COMPACT_CHECK)
    i2 = _follower(c)
    lead, victim = _leader(c), c.members[i2]
    since = {m.name: len(m.log_records()) for m in c.members}
    rev = _compact(lead)
    for m in c.members:
        done = _wait_record(m, "finished scheduled compaction", since[m.name])
        assert done["compact-revision"] == rev
        stored = _wait_record(m, "storing new hash", since[m.name])
        assert (stored["revision"], stored["compact-revision"]) == (rev, -1)
    hashes = {str(_wait_record(m, "storing new hash", since[m.name])["hash"]) for m in c.members}
    assert len(hashes) == 1  # the same data: the same hash on every member
    whole = _wait_record(lead, "successfully checked hash on whole cluster", since[lead.name])
    assert (whole["revision"], whole["number-of-peers-checked"]) == (rev, 2)
    # Every check (each second) ends with this line: the one of the round that checked the
    # hash comes after ``whole``; an earlier round, before the hash was stored, checked none.
    after_whole = lead.log_records().index(whole, since[lead.name]) + 1
    fin = _wait_record(lead, "finished compaction hash check", after_whole)
    assert fin["number-of-hashes-checked"] == 1
    assert etcdctl(lead.endpoint, "alarm", "list").stdout == ""
    # victim's data changed behind raft's back; it starts again (its records are gone).
    victim.terminate()
    corrupt_value(victim, b"corrupt-me")
    c.restart(i2)
    _put(lead, b"after", b"x")
    assert etcdctl(lead.endpoint, "alarm", "list").stdout == ""  # nothing compared it yet
    since = {m.name: len(m.log_records()) for m in c.members}
    rev2 = _compact(lead)
    out = _wait_alarm(lead, 30)
    assert out.split() == ["alarm:CORRUPT"], out
    assert _alarms(lead) == [(0, rpc_pb2.CORRUPT)]  # etcd 3.5 blames no member: id 0
    failed = _wait_record(lead, "failed compaction hash check", since[lead.name])
    assert failed["level"] == "error"
    assert failed["revision"] == rev2
    assert failed["leader-compact-revision"] == failed["follower-compact-revision"] == rev
    assert failed["leader-hash"] != failed["follower-hash"]
    assert failed["follower-peer-id"] == _hex(_status(victim).header.member_id)
    put = etcdctl(lead.endpoint, "put", "foo", "bar")
    assert put.stderr.strip().endswith("Error: etcdserver: corrupt cluster"), put.stderr


def test_compaction_hash_check_after_an_interrupted_compaction(
    tmp_path: Path, cluster_factory: list[Cluster]
) -> None:
    """etcd's e2e TestCompactHashCheckDetectCorruptionInterrupt, watched more closely: a
    follower restarted during its compaction (one record per step) resumes it, finishes it
    without recording its hash; the leader skips that follower and raises no alarm."""
    c = _start(cluster_factory, tmp_path, *COMPACT_CHECK, "--experimental-compaction-batch-limit=1")
    i2 = _follower(c)
    lead, victim = _leader(c), c.members[i2]
    with grpc.insecure_channel(lead.endpoint) as ch:
        for i in range(200):
            kv_stub(ch).Put(rpc_pb2.PutRequest(key=b"key", value=b"%d" % i), timeout=10)
    since = {m.name: len(m.log_records()) for m in c.members}
    rev = _compact(lead)
    # Once victim has applied the compaction (reads below it fail), interrupt it.
    with grpc.insecure_channel(victim.endpoint) as ch:
        deadline = time.monotonic() + 10
        while True:
            try:
                kv_stub(ch).Range(
                    rpc_pb2.RangeRequest(key=b"key", revision=rev - 1, serializable=True),
                    timeout=5,
                )
            except grpc.RpcError as e:
                assert "compacted" in (e.details() or ""), e
                break
            assert time.monotonic() < deadline, "victim did not apply the compaction"
            time.sleep(0.01)
    victim.terminate()
    assert not _records(victim, "finished scheduled compaction", since[victim.name])
    c.restart(i2)
    resumed = _wait_record(victim, "resume scheduled compaction", since[victim.name])
    _wait_record(victim, "finished scheduled compaction", since[victim.name])
    _wait_record(
        victim,
        "previous compaction was interrupted, skip storing compaction hash value",
        since[victim.name],
    )
    assert resumed["scheduled-compact-revision"] == rev
    # A pass may come before the healthy follower finished its own compaction (0 checked):
    # the leader goes on checking until that follower answers for rev.
    skip_msg = "skipped revision in compaction hash check; was not able to check all peers"
    deadline = time.monotonic() + 30
    while not any(
        (r["revision"], r["number-of-peers-checked"]) == (rev, 1)
        for r in _records(lead, skip_msg, since[lead.name])
    ):
        assert time.monotonic() < deadline, lead.log_tail()
        time.sleep(0.2)
    _wait_record(lead, "finished compaction hash check", since[lead.name])
    assert etcdctl(lead.endpoint, "alarm", "list").stdout == ""
    assert not _records(lead, "failed compaction hash check", since[lead.name])
