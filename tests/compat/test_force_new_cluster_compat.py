"""``--force-new-cluster``: a member of a cluster that lost its quorum restarted alone, etcd 3.4
against petcd.

The same three-member cluster (same names, ports and token, hence the same member ids) is run
with etcd and then with petcd: three keys are written through member ``a`` and seen applied on
every member; all three are killed (-9), so the quorum is gone for good; ``a`` is restarted
with ``--force-new-cluster``. What must hold, as with etcd: ``a`` alone is the cluster (the
member list holds only ``a``, with its id), it takes writes at once, and it is still a
one-member cluster when restarted without the flag. And, better than etcd: it keeps every key
it acknowledged, with its revision (etcd 3.4 loses the last one here, see below).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.compat.procs import Proc, member_list, wait_leader
from tests.compat.servers import ETCD_BIN, PETCD_BIN
from tests.ports import free_port

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BIN), reason="needs etcd 3.4")

NAMES = ("a", "b", "c")


def _argv(
    binary: str, name: str, ports: dict[str, tuple[int, int]], data: Path, *extra: str
) -> list[str]:
    client, peer = ports[name]
    cluster = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in NAMES)
    argv = [binary, "--name", name, "--data-dir", str(data / name)]
    argv += ["--listen-client-urls", f"http://127.0.0.1:{client}"]
    argv += ["--advertise-client-urls", f"http://127.0.0.1:{client}"]
    argv += ["--listen-peer-urls", f"http://127.0.0.1:{peer}"]
    argv += ["--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"]
    argv += ["--initial-cluster", cluster, "--initial-cluster-token", "force-new-cluster"]
    if binary == ETCD_BIN:
        argv += ["--logger", "zap"]
    return [*argv, *extra]


def _keys(endpoint: str, serializable: bool = False) -> list[tuple[bytes, bytes, int]]:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        got = kv.Range(
            rpc_pb2.RangeRequest(key=b"k", range_end=b"l", serializable=serializable), timeout=10
        )
    return [(x.key, x.value, x.mod_revision) for x in got.kvs]


def _put(endpoint: str, key: bytes, value: bytes) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        resp = kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
    return int(resp.header.revision)


def _scenario(binary: str, ports: dict[str, tuple[int, int]], tmp: Path) -> dict[str, Any]:
    data = tmp / os.path.basename(binary)
    endpoint = {n: f"127.0.0.1:{ports[n][0]}" for n in NAMES}
    procs = {n: Proc(_argv(binary, n, ports, data), tmp / f"{binary[-5:]}-{n}.log") for n in NAMES}
    seen: dict[str, Any] = {}
    try:
        for p in procs.values():
            p.start()
        for n in NAMES:
            wait_leader(endpoint[n], procs[n])
        seen["before"] = member_list(endpoint["a"])
        for i in (1, 2, 3):
            _put(endpoint["a"], f"k{i}".encode(), f"v{i}".encode())
        written = _keys(endpoint["a"])
        for n in NAMES:  # applied everywhere before the quorum is lost
            for _ in range(100):
                if _keys(endpoint[n], serializable=True) == written:
                    break
                os.sched_yield()
        for p in procs.values():
            p.stop()  # kill -9: the quorum is gone

        forced = Proc(
            _argv(binary, "a", ports, data, "--force-new-cluster"), tmp / f"{binary[-5:]}-a2.log"
        )
        procs["a"] = forced
        forced.start()
        wait_leader(endpoint["a"], forced)
        seen["forced"] = member_list(endpoint["a"])
        seen["keys"] = _keys(endpoint["a"])
        seen["put"] = _put(endpoint["a"], b"k4", b"v4")
        forced.stop()

        again = Proc(_argv(binary, "a", ports, data), tmp / f"{binary[-5:]}-a3.log")
        procs["a"] = again
        again.start()
        wait_leader(endpoint["a"], again)
        seen["restarted"] = member_list(endpoint["a"])
        seen["keys_after"] = _keys(endpoint["a"])
    finally:
        for p in procs.values():
            p.stop()
    return seen


def test_a_member_restarted_with_force_new_cluster_is_the_cluster_as_in_etcd(
    tmp_path: Path,
) -> None:
    ports = {n: (free_port(), free_port()) for n in NAMES}
    on_etcd = _scenario(ETCD_BIN, ports, tmp_path)
    on_petcd = _scenario(PETCD_BIN, ports, tmp_path)

    _, members = on_petcd["before"]
    assert [name for _, name, _ in members] != ["a"] and len(members) == 3
    a_id = next(mid for mid, name, _ in members if name == "a")
    _, forced = on_petcd["forced"]
    assert [(mid, name) for mid, name, _ in forced] == [(a_id, "a")]
    assert on_petcd["keys"] == [(b"k1", b"v1", 2), (b"k2", b"v2", 3), (b"k3", b"v3", 4)]
    assert on_petcd["put"] == 5
    assert on_petcd["restarted"][1] == forced
    assert on_petcd["keys_after"] == [*on_petcd["keys"], (b"k4", b"v4", 5)]

    for what in ("before", "forced", "restarted"):
        assert on_petcd[what] == on_etcd[what], what
    # etcd drops the entries after its WAL's commit index, which it writes lazily (a commit-only
    # hard state stays in its write buffer until the next fsync): after a kill -9 it can lose
    # the last writes it acknowledged (it loses k3 here, most runs). petcd keeps them.
    assert on_etcd["keys"] == on_petcd["keys"][: len(on_etcd["keys"])]
