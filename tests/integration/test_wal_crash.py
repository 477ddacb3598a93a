"""Crash tests of petcd.wal and petcd.snap: SIGKILL a writer at random moments, check durability.

A child process (wal_crash/writer.py) appends batches to a WAL with small segments (so that
segment cuts and release_to happen often), with conflicting rewrites, snapshot markers and
group commit. Before each save it announces the records on a pipe; after each sync it writes
``S``. Everything announced before an ``S`` is acknowledged. The test kills the child with
SIGKILL (at a random moment, or the child kills itself half-way through a batch's pwrite),
reads the WAL back and checks that it equals the acknowledged records plus a prefix of the
in-flight ones: nothing acknowledged is lost, nothing half-written is returned, every entry's
data is exactly what was written. Then it starts the next child on the same directory.

The snapshot test does the same with a child saving snapshot files: after every kill the newest
snapshot file is whole, at least as new as the last acknowledged one, and none is corrupt.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from petcd.raft.types import HardState, SnapshotMetadata
from petcd.snap import SnapCorruptError, Snapshotter
from petcd.wal import read_all, snapshot_markers
from tests.integration.wal_crash.snap_writer import metadata as snap_metadata
from tests.integration.wal_crash.snap_writer import snapshot_data
from tests.integration.wal_crash.writer import payload

HERE = Path(__file__).parent
WRITER = HERE / "wal_crash" / "writer.py"
SEGMENT_SIZE = 128 * 1024


@dataclass
class Model:
    """The WAL as the records say it should be."""

    terms: list[int] = field(default_factory=list)  # terms[i] is the term of index i + 1
    hard_state: tuple[int, int] = (0, 0)
    marker: tuple[int, int] = (0, 0)

    def apply(self, rec: tuple[str, int, int]) -> None:
        kind, a, b = rec
        if kind == "E":
            assert a <= len(self.terms) + 1, f"writer announced a gap at {a}"
            del self.terms[a - 1 :]
            self.terms.append(b)
        elif kind == "H":
            self.hard_state = (a, b)
        else:
            self.marker = (a, b)
            if not (a <= len(self.terms) and self.terms[a - 1] == b):
                # An installed snapshot: it replaces the log (indexes up to `a` are compacted).
                del self.terms[a:]
                self.terms.extend(b for _ in range(len(self.terms), a))

    def copy(self) -> Model:
        return Model(list(self.terms), self.hard_state, self.marker)


@dataclass
class Stats:
    kills: int = 0
    self_torn: int = 0
    lost_inflight: int = 0  # in-flight records existed; none survived
    partial_inflight: int = 0  # some but not all survived
    whole_inflight: int = 0  # all survived although unacknowledged
    records_acked: int = 0


def _parse(lines: list[bytes]) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """Split the child's output into acknowledged and in-flight records."""
    acked: list[tuple[str, int, int]] = []
    pending: list[tuple[str, int, int]] = []
    for raw in lines:
        if not raw.endswith(b"\n"):
            break  # a line cut by the kill: not acknowledged
        parts = raw.decode().split()
        if parts[0] == "S":
            acked.extend(pending)
            pending = []
        elif parts[0] in ("E", "H", "M"):
            pending.append((parts[0], int(parts[1]), int(parts[2])))
    return acked, pending


def _check(d: Path, base: Model, inflight: list[tuple[str, int, int]]) -> tuple[Model, int]:
    """Read the WAL; it must equal ``base`` plus a prefix of ``inflight``. Returns that model
    and the prefix length."""
    markers = snapshot_markers(d)
    latest = markers[-1] if markers else SnapshotMetadata()
    state = read_all(d, latest)
    for e in state.entries:
        assert e.data == payload(e.term, e.index), f"entry {e.index} has damaged data"
    got_terms = [e.term for e in state.entries]
    got_hs = (state.hard_state.term, state.hard_state.commit)
    got_marker = (state.snapshot.index, state.snapshot.term)
    assert state.hard_state == HardState() or state.hard_state.vote == 1
    model = base.copy()
    for p in range(len(inflight) + 1):
        if p:
            model.apply(inflight[p - 1])
        if (
            model.marker == got_marker
            and model.hard_state == got_hs
            and len(model.terms) == latest.index + len(got_terms)
            and model.terms[latest.index :] == got_terms
        ):
            return model, p
    raise AssertionError(
        f"WAL does not match the acknowledged records plus a prefix of the in-flight ones: "
        f"marker {got_marker} hs {got_hs} last index {latest.index + len(got_terms)}; "
        f"acknowledged: marker {base.marker} hs {base.hard_state} last {len(base.terms)}; "
        f"{len(inflight)} in flight"
    )


def run_crashes(d: Path, kills: int, seed: int) -> Stats:
    print(f"wal crash test seed {seed}")  # shown with a failure: run_crashes(..., seed) replays
    rng = random.Random(seed)
    model = Model()
    stats = Stats()
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    for k in range(kills):
        torn = rng.random() < 0.35
        cmd = [
            sys.executable,
            str(WRITER),
            str(d),
            "--seed",
            str(rng.getrandbits(32)),
            "--segment-size",
            str(SEGMENT_SIZE),
            "--torn-per-mille",
            str(150 if torn else 0),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert proc.stdout is not None
            lines: list[bytes] = []
            syncs_to_wait = rng.randint(1, 12)
            syncs = 0
            while syncs < syncs_to_wait:
                line = proc.stdout.readline()
                if not line:
                    break  # the child killed itself (torn write) or failed
                lines.append(line)
                if line == b"S\n":
                    syncs += 1
            if proc.poll() is None:
                time.sleep(rng.random() * 0.004)  # land anywhere: save, pwrite, fsync, cut
                proc.send_signal(signal.SIGKILL)
            lines.extend(proc.stdout.readlines())
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, f"writer {k} failed:\n{err}"
        assert lines and lines[0].startswith(b"O "), f"writer {k} did not open:\n{err}"
        acked, inflight = _parse(lines[1:])
        for rec in acked:
            model.apply(rec)
        stats.records_acked += len(acked)
        model, p = _check(d, model, inflight)
        stats.kills += 1
        if syncs < syncs_to_wait:
            stats.self_torn += 1
        if inflight:
            if p == 0:
                stats.lost_inflight += 1
            elif p < len(inflight):
                stats.partial_inflight += 1
            else:
                stats.whole_inflight += 1
    return stats


def test_sigkill_never_loses_acknowledged_records(tmp_path: Path) -> None:
    stats = run_crashes(tmp_path / "wal", kills=24, seed=20261127)
    print(stats)
    assert stats.kills == 24
    assert stats.records_acked > 0
    assert stats.self_torn > 0  # some kills were torn writes in the middle of a batch
    assert len(list((tmp_path / "wal").glob("*.wal"))) >= 1


@pytest.mark.long
def test_sigkill_soak_200_kills(tmp_path: Path) -> None:
    stats = run_crashes(tmp_path / "wal", kills=200, seed=int.from_bytes(os.urandom(4), "big"))
    print(stats)
    assert stats.kills == 200
    assert stats.self_torn > 0 and stats.partial_inflight > 0


SNAP_WRITER = HERE / "wal_crash" / "snap_writer.py"


def run_snapshot_crashes(d: Path, kills: int, seed: int) -> int:
    """Kill a snapshot writer at random moments; after each kill the newest snapshot must be
    whole, at least as new as the last acknowledged one, and no file may be corrupt."""
    print(f"snapshot crash test seed {seed}")
    rng = random.Random(seed)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    next_index = 1
    acked_total = 0
    mid_save = 0  # kills that left a half-written temporary file
    d.mkdir(parents=True, exist_ok=True)
    for k in range(kills):
        cmd = [sys.executable, str(SNAP_WRITER), str(d), "--start", str(next_index)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            acked = next_index - 1
            for _ in range(rng.randint(0, 4)):
                line = proc.stdout.readline()
                if not line:
                    break
                acked = int(line.split()[1])
            time.sleep(rng.random() * 0.02)
            proc.send_signal(signal.SIGKILL)
            for line in proc.stdout.readlines():
                if line.endswith(b"\n"):
                    acked = int(line.split()[1])
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, f"snapshot writer {k} failed:\n{err}"
        mid_save += any(p.endswith(".tmp") for p in os.listdir(d))
        corrupt: list[SnapCorruptError] = []
        snaps = Snapshotter(d, keep=3, on_corrupt=corrupt.append)
        assert not [p for p in os.listdir(d) if p.endswith(".tmp")]
        loaded = snaps.load_newest()
        assert not corrupt, corrupt
        if acked == 0 and loaded is None:
            continue
        assert loaded is not None, f"acknowledged snapshot {acked} is gone"
        index = loaded.metadata.index
        assert index >= acked, f"snapshot {index} loaded, {acked} was acknowledged"
        assert loaded.metadata == snap_metadata(index)
        assert loaded.read_data() == snapshot_data(index)
        acked_total += acked - (next_index - 1)
        next_index = index + 1
    print(f"{kills} kills, {mid_save} in the middle of a save, {acked_total} snapshots acked")
    return acked_total


def test_sigkill_during_snapshot_saves_leaves_whole_files(tmp_path: Path) -> None:
    acked = run_snapshot_crashes(tmp_path / "snap", kills=10, seed=271828)
    assert acked > 0


@pytest.mark.long
def test_sigkill_during_snapshot_saves_soak(tmp_path: Path) -> None:
    run_snapshot_crashes(tmp_path / "snap", kills=60, seed=int.from_bytes(os.urandom(4), "big"))
