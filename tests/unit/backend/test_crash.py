"""Crash consistency: SIGKILL a child process mid-batch; the data equals the consistent index.

The child applies puts ``k000001``, ``k000002``, ... with raft indexes 1, 2, ... through the
mvcc store (small batches) and reports every commit on stdout. The parent kills it with
SIGKILL, reopens the file and checks that the store holds exactly the writes of entries
``1..consistent_index`` — nothing more (a half batch) and nothing less.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from petcd.backend import Backend
from petcd.mvcc import KVStore, RangeRequest

CHILD = r"""
import sys
from petcd.backend import Backend
from petcd.mvcc import KVStore, PutRequest
from petcd.raft.types import Index, Term

path, mode = sys.argv[1], sys.argv[2]
backend = Backend(path, batch_limit=37)
store = KVStore(backend)
commits = 0
i = 0
while True:
    i += 1
    store.apply(PutRequest(b"k%06d" % i, b"v%d" % i), index=Index(i), term=Term(3))
    if backend.commits != commits:
        commits = backend.commits
        print("committed", backend.consistent_index()[0], flush=True)
        if mode == "handshake" and commits == 5:
            # leave a half batch pending, then wait to be killed
            for j in range(i + 1, i + 8):
                store.apply(PutRequest(b"k%06d" % j, b"v"), index=Index(j), term=Term(3))
            print("ready", flush=True)
            sys.stdin.readline()
"""


def run_child_and_kill(db: Path, mode: str, wait_lines: int) -> int:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    last_committed = 0
    try:
        assert proc.stdout is not None
        for _ in range(wait_lines):
            line = proc.stdout.readline().decode().split()
            assert line, "child exited early"
            if line[0] == "committed":
                last_committed = int(line[1])
            if line[0] == "ready":
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return last_committed


def check_store_matches_consistent_index(db: Path, at_least: int) -> int:
    backend = Backend(str(db))
    try:
        index, term = backend.consistent_index()
        assert index >= at_least and term == 3
        store = KVStore(backend)
        kvs = store.range(RangeRequest(b"\x00", b"\x00")).kvs
        assert [kv.key for kv in kvs] == [b"k%06d" % i for i in range(1, index + 1)]
        assert store.current_revision == index + 1
        return int(index)
    finally:
        backend.close()


def test_sigkill_with_a_pending_half_batch_loses_exactly_that_batch(tmp_path: Path) -> None:
    db = tmp_path / "db"
    committed = run_child_and_kill(db, "handshake", wait_lines=100)
    assert committed > 0
    assert check_store_matches_consistent_index(db, committed) == committed


@pytest.mark.parametrize("wait_lines", [3, 11])
def test_sigkill_at_an_arbitrary_moment_leaves_a_consistent_prefix(
    tmp_path: Path, wait_lines: int
) -> None:
    db = tmp_path / "db"
    committed = run_child_and_kill(db, "free", wait_lines=wait_lines)
    check_store_matches_consistent_index(db, committed)


@pytest.mark.long
@pytest.mark.parametrize("wait_lines", range(1, 41))
def test_sigkill_many_moments_long(tmp_path: Path, wait_lines: int) -> None:
    db = tmp_path / "db"
    committed = run_child_and_kill(db, "free", wait_lines=wait_lines)
    check_store_matches_consistent_index(db, committed)
