"""``--unsafe-no-fsync``, as throw-away test set-ups (envtest and others) start etcd.

The same writes run against a member with the flag and one without: the real etcdctl's puts
one after the other, then concurrent puts (the batched path), and the member's own
``etcd_disk_wal_fsync_duration_seconds`` tells whether the WAL was fdatasynced (etcd observes
it only for a real fdatasync). Without fsync, a killed process still loses nothing (the
kernel has the written pages): after SIGKILL and a restart (the flag now from
``ETCD_UNSAFE_NO_FSYNC``) every acknowledged value is there with its revision.
"""

from __future__ import annotations

import os
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from tests.integration.petcd_proc import PetcdProcess, assert_acknowledged, etcdctl, kv_stub

_FSYNC_COUNT = re.compile(r"^etcd_disk_wal_fsync_duration_seconds_count (\S+)$", re.M)


def _wal_fsyncs(p: PetcdProcess) -> float:
    with urllib.request.urlopen(f"http://{p.endpoint}/metrics", timeout=10) as resp:
        m = _FSYNC_COUNT.search(resp.read().decode())
    assert m is not None
    return float(m.group(1))


def _write(p: PetcdProcess, acked: dict[bytes, tuple[bytes, int]], tag: str) -> None:
    for i in range(10):
        key, value = f"seq{i}", f"{tag}-{i}"
        done = etcdctl(p.endpoint, "put", key, value, "-w", "json")
        assert done.returncode == 0, done.stderr
        revision = int(re.search(r'"revision":(\d+)', done.stdout).group(1))  # type: ignore[union-attr]
        acked[key.encode()] = (value.encode(), revision)

    def put(i: int) -> None:
        with p.channel() as ch:
            kv = kv_stub(ch)
            for j in range(20):  # each thread its own keys: the last answer per key stands
                key, value = b"c%d-%d" % (i, j % 5), f"{tag}-{i}-{j}".encode()
                resp = kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
                acked[key] = (value, resp.header.revision)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(8)))


def _check(p: PetcdProcess, acked: dict[bytes, tuple[bytes, int]]) -> None:
    with p.channel() as ch:
        assert_acknowledged(ch, acked)


@pytest.mark.parametrize("no_fsync", [False, True], ids=["fsync", "unsafe-no-fsync"])
def test_unsafe_no_fsync_skips_the_wal_fsync_and_survives_sigkill(
    tmp_path: Path, no_fsync: bool
) -> None:
    p = PetcdProcess(tmp_path / "data", extra_args=["--unsafe-no-fsync"] if no_fsync else [])
    acked: dict[bytes, tuple[bytes, int]] = {}
    try:
        p.start()
        before = _wal_fsyncs(p)
        _write(p, acked, "a")
        assert (_wal_fsyncs(p) == before) is no_fsync
        warned = [r for r in p.log_records() if "--unsafe-no-fsync is set" in str(r.get("msg", ""))]
        assert bool(warned) is no_fsync
        assert all(r["level"] == "warn" for r in warned)
        p.kill()  # at once after the last answer
        # The second start takes the flag from the environment.
        p.extra_args = []
        if no_fsync:
            p.env = {**os.environ, "ETCD_UNSAFE_NO_FSYNC": "true"}
        p.start()
        _check(p, acked)
        before = _wal_fsyncs(p)
        _write(p, acked, "b")
        assert (_wal_fsyncs(p) == before) is no_fsync
        p.kill()
        p.start()
        _check(p, acked)
    finally:
        p.stop()
