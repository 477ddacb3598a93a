"""The v3lock and v3election services of a real petcd process, with etcdctl and against etcd.

Two lock contenders (the second gets the lock after an unlock, a lease revoke, or when its
own wait is abandoned its key is gone), a full election (campaign, proclaim, leader, observe,
resign), etcdctl's client-side lock and election interoperating with the services (same
keys), and a differential run of one scripted sequence against the real etcd 3.4.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.v3electionpb import v3election_pb2, v3election_pb2_grpc
from petcd.api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from tests.integration.petcd_proc import ETCDCTL_BIN, PetcdProcess, kv_stub
from tests.ports import free_port

ETCD_BIN = "/usr/bin/etcd"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path_factory.mktemp("elect") / "data")
    p.start()
    yield p
    p.stop()


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.lock: Any = v3lock_pb2_grpc.LockStub(channel)  # type: ignore[no-untyped-call]
        self.election: Any = v3election_pb2_grpc.ElectionStub(channel)  # type: ignore[no-untyped-call]
        self.lease: Any = rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]
        self.kv: Any = kv_stub(channel)

    def grant(self, ttl: int = 60) -> int:
        lease_id: int = self.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl)).ID
        return lease_id

    def keys(self, prefix: bytes) -> list[bytes]:
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        return [kv.key for kv in self.kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end)).kvs]


def still_waiting(fut: Any, wait_s: float = 0.5) -> bool:
    with contextlib.suppress(grpc.FutureTimeoutError):
        fut.result(timeout=wait_s)
    return not fut.done()


def poll(cond: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


def test_second_contender_gets_the_lock_after_unlock(server: PetcdProcess) -> None:
    with server.channel() as ch:
        s = Stubs(ch)
        a, b = s.grant(), s.grant()
        held = s.lock.Lock(v3lock_pb2.LockRequest(name=b"it-lock", lease=a))
        assert held.key == b"it-lock/%x" % a
        waiting = s.lock.Lock.future(v3lock_pb2.LockRequest(name=b"it-lock", lease=b))
        assert still_waiting(waiting)
        assert s.keys(b"it-lock/") == sorted([held.key, b"it-lock/%x" % b])
        unlocked = s.lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key))
        got = waiting.result(timeout=10)
        assert got.key == b"it-lock/%x" % b
        assert got.header.revision >= unlocked.header.revision
        assert s.keys(b"it-lock/") == [got.key]
        s.lock.Unlock(v3lock_pb2.UnlockRequest(key=got.key))


def test_second_contender_gets_the_lock_when_the_holders_lease_is_revoked(
    server: PetcdProcess,
) -> None:
    with server.channel() as ch:
        s = Stubs(ch)
        a, b = s.grant(), s.grant()
        s.lock.Lock(v3lock_pb2.LockRequest(name=b"it-revoke", lease=a))
        waiting = s.lock.Lock.future(v3lock_pb2.LockRequest(name=b"it-revoke", lease=b))
        assert still_waiting(waiting)
        s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=a))
        assert waiting.result(timeout=10).key == b"it-revoke/%x" % b


def test_abandoned_wait_removes_the_waiters_key(server: PetcdProcess) -> None:
    with server.channel() as ch:
        s = Stubs(ch)
        a, b = s.grant(), s.grant()
        held = s.lock.Lock(v3lock_pb2.LockRequest(name=b"it-gone", lease=a))
        with pytest.raises(grpc.RpcError) as e:
            s.lock.Lock(v3lock_pb2.LockRequest(name=b"it-gone", lease=b), timeout=0.5)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        poll(lambda: s.keys(b"it-gone/") == [held.key])
        waiting = s.lock.Lock.future(v3lock_pb2.LockRequest(name=b"it-gone", lease=b))
        assert still_waiting(waiting, 0.2)
        waiting.cancel()
        poll(lambda: s.keys(b"it-gone/") == [held.key])


def test_lock_errors_and_no_lease(server: PetcdProcess) -> None:
    with server.channel() as ch:
        s = Stubs(ch)
        with pytest.raises(grpc.RpcError) as e:
            s.lock.Lock(v3lock_pb2.LockRequest(name=b"it-err", lease=123456789))
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.UNKNOWN,
            "etcdserver: requested lease not found",
        )
        with pytest.raises(grpc.RpcError) as e:
            s.lock.Unlock(v3lock_pb2.UnlockRequest())
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.UNKNOWN,
            "etcdserver: key is not provided",
        )
        got = s.lock.Lock(v3lock_pb2.LockRequest(name=b"it-nolease"))
        kv = s.kv.Range(rpc_pb2.RangeRequest(key=got.key)).kvs[0]
        ttl = s.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=kv.lease))
        assert got.key == b"it-nolease/%x" % kv.lease and ttl.grantedTTL == 60
        s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=kv.lease))


def test_election_campaign_proclaim_observe_resign(server: PetcdProcess) -> None:
    with server.channel() as ch:
        s = Stubs(ch)
        el = s.election
        with pytest.raises(grpc.RpcError) as e:
            el.Leader(v3election_pb2.LeaderRequest(name=b"it-el"))
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.UNKNOWN,
            "election: no leader",
        )
        observe = el.Observe(v3election_pb2.LeaderRequest(name=b"it-el"))
        try:
            a, b = s.grant(), s.grant()
            ca = el.Campaign(v3election_pb2.CampaignRequest(name=b"it-el", lease=a, value=b"a1"))
            assert (ca.leader.name, ca.leader.key, ca.leader.lease) == (
                b"it-el",
                b"it-el/%x" % a,
                a,
            )
            assert ca.leader.rev == ca.header.revision
            first = next(observe)
            assert (first.kv.key, first.kv.value) == (ca.leader.key, b"a1")
            second = el.Campaign.future(
                v3election_pb2.CampaignRequest(name=b"it-el", lease=b, value=b"b1")
            )
            assert still_waiting(second)
            pr = el.Proclaim(v3election_pb2.ProclaimRequest(leader=ca.leader, value=b"a2"))
            seen = next(observe)
            assert (seen.kv.value, seen.header.revision) == (b"a2", pr.header.revision)
            ld = el.Leader(v3election_pb2.LeaderRequest(name=b"it-el"))
            assert (ld.kv.key, ld.kv.value, ld.kv.create_revision) == (
                ca.leader.key,
                b"a2",
                ca.leader.rev,
            )
            el.Resign(v3election_pb2.ResignRequest(leader=ca.leader))
            cb = second.result(timeout=10)
            assert cb.leader.key == b"it-el/%x" % b
            nxt = next(observe)
            assert (nxt.kv.key, nxt.kv.value) == (cb.leader.key, b"b1")
            with pytest.raises(grpc.RpcError) as e:
                el.Proclaim(v3election_pb2.ProclaimRequest(leader=ca.leader, value=b"late"))
            assert (e.value.code(), e.value.details()) == (
                grpc.StatusCode.UNKNOWN,
                "election: not leader",
            )
            with pytest.raises(grpc.RpcError) as e:
                el.Resign(v3election_pb2.ResignRequest())
            assert e.value.details() == '"leader" field must be provided'
            el.Resign(v3election_pb2.ResignRequest(leader=cb.leader))
            assert s.keys(b"it-el/") == []
        finally:
            observe.cancel()


def test_etcdctl_lock_waits_for_a_grpc_lock_holder(server: PetcdProcess) -> None:
    with server.channel() as ch:
        s = Stubs(ch)
        held = s.lock.Lock(v3lock_pb2.LockRequest(name=b"it-ctl", lease=s.grant()))
        env = {**os.environ, "ETCDCTL_API": "3"}
        ctl = subprocess.Popen(
            [ETCDCTL_BIN, f"--endpoints={server.endpoint}", "lock", "it-ctl", "echo", "got it"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            poll(lambda: len(s.keys(b"it-ctl/")) == 2)  # etcdctl queued behind us
            assert ctl.poll() is None
            s.lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key))
            out, err = ctl.communicate(timeout=20)
            assert (ctl.returncode, out) == (0, b"got it\n"), err
        finally:
            if ctl.poll() is None:
                ctl.kill()
                ctl.wait()


def test_etcdctl_elect_and_the_election_service_share_keys(server: PetcdProcess) -> None:
    with server.channel() as ch:
        s = Stubs(ch)
        env = {**os.environ, "ETCDCTL_API": "3"}
        ctl = subprocess.Popen(
            [ETCDCTL_BIN, f"--endpoints={server.endpoint}", "elect", "it-ctlel", "from-ctl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert ctl.stdout is not None
            assert ctl.stdout.readline().startswith(b"it-ctlel/")  # elected: prints the key
            ld = s.election.Leader(v3election_pb2.LeaderRequest(name=b"it-ctlel"))
            assert ld.kv.value == b"from-ctl"
            mine = s.election.Campaign.future(
                v3election_pb2.CampaignRequest(name=b"it-ctlel", lease=s.grant(), value=b"svc")
            )
            assert still_waiting(mine)
            ctl.send_signal(signal.SIGINT)  # etcdctl resigns on interrupt
            assert mine.result(timeout=20).leader.key.startswith(b"it-ctlel/")
            ld = s.election.Leader(v3election_pb2.LeaderRequest(name=b"it-ctlel"))
            assert ld.kv.value == b"svc"
        finally:
            if ctl.poll() is None:
                ctl.kill()
            ctl.wait()


# --- differential: the same script against etcd 3.4 and petcd ----------------------------------


@contextlib.contextmanager
def real_etcd(tmp: Path) -> Iterator[str]:
    client, peer = free_port(), free_port()
    log = open(tmp / "etcd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            ETCD_BIN,
            "--name",
            "diff",
            "--data-dir",
            str(tmp / "etcd-data"),
            "--listen-client-urls",
            f"http://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"diff=http://127.0.0.1:{peer}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"127.0.0.1:{client}"
    try:
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(endpoint) as ch:
            m: Any = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, "etcd did not start"
                with contextlib.suppress(grpc.RpcError):
                    if m.Status(rpc_pb2.StatusRequest(), timeout=1).leader:
                        break
                time.sleep(0.1)
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()


def script(endpoint: str) -> list[str]:
    """One sequence of calls; each outcome normalised (ids and lease hex replaced)."""
    out: list[str] = []
    with grpc.insecure_channel(endpoint) as ch:
        s = Stubs(ch)
        names: dict[int, str] = {}

        def norm(text: str) -> str:
            for lid, alias in names.items():
                text = text.replace(str(lid), alias).replace(f"{lid:x}", alias)
            return " ".join(
                line
                for line in text.split()
                if line not in ("cluster_id:", "member_id:", "raft_term:")
            )

        def call(label: str, fn: Any) -> Any:
            try:
                r = fn()
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED or (
                    e.details() == "context deadline exceeded"  # etcd's answer may win the race
                ):
                    out.append(f"{label} ERR deadline")
                else:
                    out.append(f"{label} ERR {e.code()} {e.details()}")
                return None
            text = str(r)
            for field in ("cluster_id", "member_id", "raft_term"):
                text = "\n".join(ln for ln in text.split("\n") if field not in ln)
            out.append(f"{label} OK {norm(text)}")
            return r

        a, b = s.grant(), s.grant()
        names[a], names[b] = "LEASE_A", "LEASE_B"
        el, lk = s.election, s.lock
        call("leader-none", lambda: el.Leader(v3election_pb2.LeaderRequest(name=b"d")))
        call("proclaim-unset", lambda: el.Proclaim(v3election_pb2.ProclaimRequest(value=b"x")))
        call("resign-unset", lambda: el.Resign(v3election_pb2.ResignRequest()))
        call(
            "campaign-bad-lease",
            lambda: el.Campaign(v3election_pb2.CampaignRequest(name=b"d", lease=4242)),
        )
        ca = call(
            "campaign",
            lambda: el.Campaign(v3election_pb2.CampaignRequest(name=b"d", lease=a, value=b"v1")),
        )
        call(
            "campaign-again",
            lambda: el.Campaign(v3election_pb2.CampaignRequest(name=b"d", lease=a, value=b"v2")),
        )
        call("leader", lambda: el.Leader(v3election_pb2.LeaderRequest(name=b"d")))
        observe = el.Observe(v3election_pb2.LeaderRequest(name=b"d"))
        try:
            call("observe-current", lambda: next(observe))
            call(
                "proclaim",
                lambda: el.Proclaim(v3election_pb2.ProclaimRequest(leader=ca.leader, value=b"v3")),
            )
            call("observe-proclaimed", lambda: next(observe))
        finally:
            observe.cancel()
        stale = v3election_pb2.LeaderKey(
            name=b"d", key=ca.leader.key, rev=ca.leader.rev + 99, lease=a
        )
        call(
            "proclaim-stale",
            lambda: el.Proclaim(v3election_pb2.ProclaimRequest(leader=stale, value=b"v4")),
        )
        call("resign-stale", lambda: el.Resign(v3election_pb2.ResignRequest(leader=stale)))
        call("resign", lambda: el.Resign(v3election_pb2.ResignRequest(leader=ca.leader)))
        call("lock-bad-lease", lambda: lk.Lock(v3lock_pb2.LockRequest(name=b"m", lease=-1)))
        call("lock", lambda: lk.Lock(v3lock_pb2.LockRequest(name=b"m", lease=b)))
        call("lock-again", lambda: lk.Lock(v3lock_pb2.LockRequest(name=b"m", lease=b)))
        call(
            "lock-timeout",
            lambda: lk.Lock(v3lock_pb2.LockRequest(name=b"m", lease=a), timeout=0.5),
        )
        time.sleep(0.5)  # the abandoned waiter's key is deleted in the background
        call("keys", lambda: s.kv.Range(rpc_pb2.RangeRequest(key=b"m/", range_end=b"m0")))
        call("unlock", lambda: lk.Unlock(v3lock_pb2.UnlockRequest(key=b"m/%x" % b)))
        call("unlock-empty", lambda: lk.Unlock(v3lock_pb2.UnlockRequest()))
    return out


def test_differential_against_etcd(tmp_path: Path) -> None:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("etcd is not installed")
    p = PetcdProcess(tmp_path / "petcd-data", name="diff")
    p.start()
    try:
        got = script(p.endpoint)
    finally:
        p.stop()
    with real_etcd(tmp_path) as endpoint:
        want = script(endpoint)
    assert got == want


@pytest.mark.long
def test_three_members_lock_and_election_through_different_members(tmp_path: Path) -> None:
    members = [PetcdProcess(tmp_path / n / "data", name=n) for n in ("a", "b", "c")]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        m.extra_args = ["--initial-cluster", initial, "--initial-cluster-token", "itest-el3"]
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        with members[0].channel() as c0, members[1].channel() as c1, members[2].channel() as c2:
            s0, s1, s2 = Stubs(c0), Stubs(c1), Stubs(c2)
            a, b = s0.grant(), s1.grant()
            held = s0.lock.Lock(v3lock_pb2.LockRequest(name=b"m3", lease=a))
            waiting = s1.lock.Lock.future(v3lock_pb2.LockRequest(name=b"m3", lease=b))
            assert still_waiting(waiting)
            s2.lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key))
            assert waiting.result(timeout=20).key == b"m3/%x" % b

            observe = s2.election.Observe(v3election_pb2.LeaderRequest(name=b"e3"))
            try:
                ca = s0.election.Campaign(
                    v3election_pb2.CampaignRequest(name=b"e3", lease=a, value=b"on-a")
                )
                assert next(observe).kv.value == b"on-a"
                second = s1.election.Campaign.future(
                    v3election_pb2.CampaignRequest(name=b"e3", lease=b, value=b"on-b")
                )
                assert still_waiting(second)
                s0.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=a))  # the leader's lease ends
                cb = second.result(timeout=20)
                assert cb.leader.key == b"e3/%x" % b
                assert next(observe).kv.value == b"on-b"
                ld = s2.election.Leader(v3election_pb2.LeaderRequest(name=b"e3"))
                assert (ld.kv.key, ld.kv.create_revision) == (cb.leader.key, cb.leader.rev)
                assert ca.leader.rev < cb.leader.rev
            finally:
                observe.cancel()
    finally:
        for m in members:
            m.stop()
