"""Runtime membership with real processes and the real etcdctl: add a learner, let it catch up
(by snapshot: the leader compacts its log), promote it, update peer URLs, remove a member (it
stops), replace a member whose disk was lost, and etcd's refusals with etcd's texts."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.server.ids import member_id
from tests.integration.petcd_proc import PetcdProcess, etcdctl, kv_stub
from tests.ports import free_port

TOKEN = "itest-membership"


def _first(base: Path) -> PetcdProcess:
    a = PetcdProcess(base / "a" / "data", name="a")
    a.extra_args = [
        "--initial-cluster-token",
        TOKEN,
        "--snapshot-count",
        "20",
        "--experimental-snapshot-catchup-entries",
        "5",
    ]
    return a


def _joiner(base: Path, name: str, initial_cluster: str, peer_port: int) -> PetcdProcess:
    # Not the cluster's token (as etcd, joining does not need it): PetcdProcess's own.
    p = PetcdProcess(base / name / "data", name=name, peer_port=peer_port)
    p.extra_args = [
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-state",
        "existing",
        "--snapshot-count",
        "20",
    ]
    return p


def _ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def _wait(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _get_serializable(p: PetcdProcess, key: str) -> str:
    out = etcdctl(p.endpoint, "get", key, "--print-value-only", "--consistency=s")
    return out.stdout.strip()


@pytest.fixture
def procs() -> Iterator[list[PetcdProcess]]:
    started: list[PetcdProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def test_learner_join_promote_update_remove_replace(
    tmp_path: Path, procs: list[PetcdProcess]
) -> None:
    a = _first(tmp_path)
    procs.append(a)
    a.start()
    with a.channel() as ch:
        kv = kv_stub(ch)
        for i in range(60):
            kv.Put(rpc_pb2.PutRequest(key=f"k{i}".encode(), value=f"v{i}".encode()), timeout=5)
    a_peer = f"http://127.0.0.1:{a.peer_port}"

    # Add a learner with the real etcdctl; it is not started yet.
    b_port, b_port2 = free_port(), free_port()
    b_peer = f"http://127.0.0.1:{b_port}"
    out = _ok(etcdctl(a.endpoint, "member", "add", "b", f"--peer-urls={b_peer}", "--learner"))
    m = re.search(r"Member +([0-9a-f]+) added to cluster +([0-9a-f]+)", out)
    assert m, out
    b_id = m.group(1)
    assert re.search(r'ETCD_INITIAL_CLUSTER="(.*)"', out) is not None, out
    assert set(re.findall(r'ETCD_INITIAL_CLUSTER="(.*)"', out)[0].split(",")) == {
        f"a={a_peer}",
        f"b={b_peer}",
    }, out
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out, out
    listed = _ok(etcdctl(a.endpoint, "member", "list"))
    assert f"{b_id}, unstarted, , {b_peer}, , true" in listed, listed

    # etcd's refusals, with etcd's texts.
    out2 = etcdctl(a.endpoint, "member", "add", "x", f"--peer-urls={b_peer}")
    assert "etcdserver: Peer URLs already exists" in out2.stderr, out2.stderr
    out2 = etcdctl(
        a.endpoint, "member", "add", "x", f"--peer-urls=http://127.0.0.1:{free_port()}", "--learner"
    )
    assert "etcdserver: too many learner members in cluster" in out2.stderr, out2.stderr
    out2 = etcdctl(a.endpoint, "member", "remove", "1234")
    assert "etcdserver: member not found" in out2.stderr, out2.stderr
    a_id = f"{_member_ids(a)['a']:x}"
    out2 = etcdctl(a.endpoint, "member", "promote", a_id)
    assert "etcdserver: can only promote a learner member" in out2.stderr, out2.stderr
    out2 = etcdctl(a.endpoint, "member", "promote", b_id)
    assert (
        "etcdserver: can only promote a learner member which is in sync with leader" in out2.stderr
    ), out2.stderr

    # Start it as etcd's output says; it also listens on a second peer URL (for the update).
    b = _joiner(tmp_path, "b", f"a={a_peer},b={b_peer}", b_port)
    b.extra_args += ["--listen-peer-urls", f"{b_peer},http://127.0.0.1:{b_port2}"]
    procs.append(b)
    b.start()
    _wait(lambda: _get_serializable(b, "k59") == "v59", "the learner to catch up")
    assert any(r.get("msg") == "applying snapshot" for r in b.log_records()), b.log_tail()
    _wait(
        lambda: any(
            r.get("msg") == "published local member to cluster through raft"
            for r in b.log_records()
        ),
        "the learner to publish its name",
    )

    # Promote once in sync (etcdctl retries nothing: poll).
    def promoted() -> bool:
        return etcdctl(a.endpoint, "member", "promote", b_id).returncode == 0

    _wait(promoted, "the promotion")
    listed = _ok(etcdctl(a.endpoint, "member", "list", "-w", "json"))
    assert '"isLearner"' not in listed, listed
    assert _ok(etcdctl(b.endpoint, "put", "after", "promote")) == "OK\n"
    assert _ok(etcdctl(a.endpoint, "get", "after", "--print-value-only")) == "promote\n"

    # Update b's peer URL to its second listener; the cluster keeps replicating.
    b_peer2 = f"http://127.0.0.1:{b_port2}"
    out = _ok(etcdctl(a.endpoint, "member", "update", b_id, f"--peer-urls={b_peer2}"))
    assert re.match(rf"Member +{b_id} updated in cluster", out), out
    # etcdctl 3.4 has no --consistency for member list: etcd 3.5's linearizable MemberList.
    assert _members(b, linearizable=True)["b"] == (b_peer2,)
    assert _ok(etcdctl(a.endpoint, "put", "after", "update")) == "OK\n"
    _wait(lambda: _get_serializable(b, "after") == "update", "replication after the update")

    # Remove b: it learns it and stops (exit 0, etcd's message).
    out = _ok(etcdctl(a.endpoint, "member", "remove", b_id))
    assert re.match(rf"Member +{b_id} removed from cluster", out), out
    assert b.proc is not None
    assert b.proc.wait(timeout=20) == 0, b.log_tail()
    assert "the member has been permanently removed from the cluster" in b.log_tail()
    assert b_id not in _ok(etcdctl(a.endpoint, "member", "list"))
    assert _ok(etcdctl(a.endpoint, "put", "alone", "again")) == "OK\n"

    # Replace it by a fresh member on the same peer URL (its disk was lost): new id, snapshot.
    out = _ok(etcdctl(a.endpoint, "member", "add", "c", f"--peer-urls={b_peer}"))
    c_id = re.search(r"Member +([0-9a-f]+) added", out)
    assert c_id and c_id.group(1) != b_id, out
    c = _joiner(tmp_path, "c", f"a={a_peer},c={b_peer}", b_port)
    procs.append(c)
    c.start()
    _wait(lambda: _get_serializable(c, "alone") == "again", "the replacement to catch up")
    assert _get_serializable(c, "k0") == "v0"
    assert _ok(etcdctl(c.endpoint, "put", "via", "c")) == "OK\n"
    assert _ok(etcdctl(a.endpoint, "get", "via", "--print-value-only")) == "c\n"
    # Both members are voters now: the cluster survives a restart of the leader.
    listed = _ok(etcdctl(a.endpoint, "member", "list"))
    assert len(listed.splitlines()) == 2 and listed.count("started") == 2, listed

    # A third member, promoted through the follower: it forwards the call to the leader.
    d_port = free_port()
    d_peer = f"http://127.0.0.1:{d_port}"
    out = _ok(etcdctl(c.endpoint, "member", "add", "d", f"--peer-urls={d_peer}", "--learner"))
    d_id = re.search(r"Member +([0-9a-f]+) added", out)
    assert d_id, out
    d = _joiner(tmp_path, "d", f"a={a_peer},c={b_peer},d={d_peer}", d_port)
    procs.append(d)
    d.start()
    _wait(lambda: _get_serializable(d, "via") == "c", "the third member to catch up")
    leader = _status_leader(a)
    follower = c if leader == _member_ids(a)["a"] else a

    def promoted_d() -> bool:
        return etcdctl(follower.endpoint, "member", "promote", d_id.group(1)).returncode == 0

    _wait(promoted_d, "the promotion through a follower")
    assert not any(m.isLearner for m in _member_list(a, linearizable=True))
    assert len(_member_list(d)) == 3


def _member_list(p: PetcdProcess, linearizable: bool = False) -> list[Any]:
    with p.channel() as ch:
        stub = rpc_pb2_grpc.ClusterStub(ch)  # type: ignore[no-untyped-call]
        req = rpc_pb2.MemberListRequest(linearizable=linearizable)
        return list(stub.MemberList(req, timeout=5).members)


def _status_leader(p: PetcdProcess) -> int:
    with p.channel() as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)  # type: ignore[no-untyped-call]
        return int(stub.Status(rpc_pb2.StatusRequest(), timeout=5).leader)


def _member_ids(p: PetcdProcess) -> dict[str, int]:
    return {m.name: m.ID for m in _member_list(p)}


def _members(p: PetcdProcess, linearizable: bool = False) -> dict[str, tuple[str, ...]]:
    return {m.name: tuple(m.peerURLs) for m in _member_list(p, linearizable)}


def test_member_removed_while_down_stops_when_it_restarts(
    tmp_path: Path, procs: list[PetcdProcess]
) -> None:
    a = _first(tmp_path)
    procs.append(a)
    a.start()
    a_peer = f"http://127.0.0.1:{a.peer_port}"
    b_port = free_port()
    b_peer = f"http://127.0.0.1:{b_port}"
    out = _ok(etcdctl(a.endpoint, "member", "add", "b", f"--peer-urls={b_peer}", "--learner"))
    b_id = re.search(r"Member +([0-9a-f]+) added", out)
    assert b_id, out
    b = _joiner(tmp_path, "b", f"a={a_peer},b={b_peer}", b_port)
    procs.append(b)
    b.start()
    assert _ok(etcdctl(a.endpoint, "put", "k", "v")) == "OK\n"
    _wait(lambda: _get_serializable(b, "k") == "v", "the learner to catch up")
    b.kill()
    # A learner that is down can be removed (a voter could not: no quorum of two).
    out = _ok(etcdctl(a.endpoint, "member", "remove", b_id.group(1)))
    assert "removed from cluster" in out, out
    assert _ok(etcdctl(a.endpoint, "put", "k", "v2")) == "OK\n"
    # b never saw its removal; its peer refuses it as removed, and it stops (exit 0).
    b.start(wait=False)
    assert b.proc is not None
    assert b.proc.wait(timeout=30) == 0, b.log_tail()
    assert "the member has been permanently removed from the cluster" in b.log_tail()


def test_etcd_procedure_member_add_then_start_with_the_printed_environment(
    tmp_path: Path, procs: list[PetcdProcess]
) -> None:
    """etcd's documented way to grow a cluster: ``etcdctl member add`` (a voter), then start the
    new member with the ``ETCD_*`` lines it printed. The new member is not given the cluster's
    token (etcd prints none): its id comes from the cluster, by its peer URLs."""
    a = _first(tmp_path)
    procs.append(a)
    a.start()
    assert _ok(etcdctl(a.endpoint, "put", "before", "add")) == "OK\n"
    b_port, b_client = free_port(), free_port()
    b_peer = f"http://127.0.0.1:{b_port}"
    before_s = int(time.time())
    out = _ok(etcdctl(a.endpoint, "member", "add", "b", f"--peer-urls={b_peer}"))
    after_s = int(time.time())
    m = re.search(r"Member +([0-9a-f]+) added to cluster +([0-9a-f]+)", out)
    assert m, out
    b_id = int(m.group(1), 16)
    # etcd's id for a member added at run time: its peer URLs and the time of the addition.
    assert b_id in {member_id([b_peer], "", t) for t in range(before_s - 1, after_s + 2)}
    env = dict(re.findall(r'^(ETCD_[A-Z_]+)="(.*)"$', out, re.M))
    assert set(env) == {
        "ETCD_NAME",
        "ETCD_INITIAL_CLUSTER",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        "ETCD_INITIAL_CLUSTER_STATE",
    }, out
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    client_url = f"http://127.0.0.1:{b_client}"
    b = PetcdProcess(
        tmp_path / "b" / "data",
        name="b",
        client_port=b_client,
        peer_port=b_port,
        args=[
            "--data-dir",
            str(tmp_path / "b" / "data"),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            b_peer,
        ],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}, **env},
    )
    procs.append(b)
    b.start()
    assert any(
        r.get("msg") == "joining an existing cluster" and r.get("local-member-id") == f"{b_id:x}"
        for r in b.log_records()
    ), b.log_tail()
    assert _ok(etcdctl(b.endpoint, "put", "through", "b")) == "OK\n"
    assert _ok(etcdctl(a.endpoint, "get", "through", "--print-value-only")) == "b\n"
    assert _get_serializable(b, "before") == "add"
    _wait(
        lambda: {m.name: m.ID for m in _member_list(a, linearizable=True)}.get("b") == b_id,
        "the new member to publish its name",
    )
    listed = _ok(etcdctl(a.endpoint, "member", "list"))
    assert len(listed.splitlines()) == 2 and listed.count(", started, ") == 2, listed
