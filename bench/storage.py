"""Benchmark of petcd's durable storage: WAL appends with fsync, WAL replay, snapshot files.

    .venv/bin/python bench/storage.py [--dir DIR] [--seconds S] [--batches 1,10,100,1000]

Figures printed (256-byte entries, as etcd's benchmark uses by default):

- the disk's floor: a bare ``os.pwrite`` of one record plus ``os.fdatasync`` per call, the most
  syncs per second any WAL can do on this disk (measured before each case, with the ratio);
- WAL appends: ``save`` of a batch of B entries then ``sync`` (one pwrite + one fdatasync), in
  entries/s and syncs/s, for each batch size B;
- group commit: one thread saving single entries as fast as it can while another thread syncs
  in a loop (how the server uses the WAL: event loop + fsync worker);
- WAL replay (``read_all``) and snapshot save/load throughput.

If ``bench/storage_mvcc.py`` exists (the MVCC benchmark), its ``main()`` runs at the end.
Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from petcd.raft.types import Entry, HardState, Index, SnapshotMetadata, Term
from petcd.snap import Snapshotter
from petcd.wal import WAL, read_all

ENTRY_BYTES = 256


def _entries(first: int, count: int, data: bytes) -> list[Entry]:
    return [Entry(Term(1), Index(i), data=data) for i in range(first, first + count)]


def bench_disk_floor(d: Path, seconds: float) -> float:
    path = d / "floor"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, 64 << 20)
        rec = os.urandom(ENTRY_BYTES + 32)
        n = 0
        offset = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.pwrite(fd, rec, offset)
            os.fdatasync(fd)
            offset += len(rec)
            n += 1
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


def bench_wal(d: Path, batch: int, seconds: float) -> tuple[float, float, int]:
    """Returns (entries/s, syncs/s, entries written)."""
    wdir = d / f"wal-{batch}"
    wal = WAL.create(wdir)
    data = os.urandom(ENTRY_BYTES)
    next_index = 1
    syncs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        ents = _entries(next_index, batch, data)
        next_index += batch
        wal.save(HardState(Term(1), commit=Index(next_index - 1)), ents)
        wal.sync()
        syncs += 1
    elapsed = time.perf_counter() - start
    wal.close()
    written = next_index - 1
    if batch < 1000:  # the biggest run is kept for the replay benchmark
        shutil.rmtree(wdir)
    return written / elapsed, syncs / elapsed, written


def bench_group_commit(d: Path, seconds: float) -> tuple[float, float]:
    """One thread saves single entries; another syncs in a loop. Returns (entries/s, syncs/s)."""
    wdir = d / "wal-group"
    wal = WAL.create(wdir)
    data = os.urandom(ENTRY_BYTES)
    stop = threading.Event()

    def syncer() -> None:
        while not stop.is_set():
            wal.sync()

    t = threading.Thread(target=syncer)
    t.start()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            n += 1
            wal.save(None, [Entry(Term(1), Index(n), data=data)])
    wal.sync()
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    syncs = wal.sync_count
    wal.close()
    shutil.rmtree(wdir)
    return n / elapsed, syncs / elapsed


def bench_replay(d: Path, batch: int) -> tuple[float, int]:
    wdir = d / f"wal-{batch}"
    start = time.perf_counter()
    state = read_all(wdir)
    elapsed = time.perf_counter() - start
    shutil.rmtree(wdir)
    return len(state.entries) / elapsed, len(state.entries)


def bench_snapshot(d: Path, size_bytes: int) -> tuple[float, float]:
    snaps = Snapshotter(d / "snap")
    data = os.urandom(1 << 20) * (size_bytes >> 20)
    start = time.perf_counter()
    snaps.save_bytes(SnapshotMetadata(Index(1), Term(1)), data)
    save_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded = snaps.load_newest()
    assert loaded is not None
    out = d / "restored.db"
    loaded.extract_to(out)
    load_s = time.perf_counter() - start
    shutil.rmtree(d / "snap")
    out.unlink()
    return size_bytes / save_s / 1e6, size_bytes / load_s / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", help="where to write (default: a temporary directory in bench/)")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each case")
    ap.add_argument("--batches", default="1,10,100,1000")
    ap.add_argument("--snapshot-mb", type=int, default=64)
    args = ap.parse_args()
    base = Path(args.dir) if args.dir else Path(__file__).parent
    d = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=base))
    try:
        print(f"petcd storage benchmark in {d} ({ENTRY_BYTES}-byte entries)")
        print(f"machine load average (1 min) {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
        # The disk floor is measured right before each case (shared disks are noisy); the
        # last column is the WAL's syncs/s as a fraction of it.
        print(
            f"{'WAL save+sync, batch':<28}{'entries/s':>14}{'syncs/s':>12}"
            f"{'floor syncs/s':>15}{'of floor':>10}"
        )
        for batch in (int(b) for b in args.batches.split(",")):
            floor = bench_disk_floor(d, args.seconds / 2)
            eps, sps, _ = bench_wal(d, batch, args.seconds)
            print(f"  batch {batch:<20}{eps:14,.0f}{sps:12,.0f}{floor:15,.0f}{sps / floor:10.2f}")
        eps, sps = bench_group_commit(d, args.seconds)
        print(f"group commit (saver + sync thread) {eps:14,.0f}{sps:12,.0f}")
        biggest = max(int(b) for b in args.batches.split(","))
        if (d / f"wal-{biggest}").exists():
            rate, n = bench_replay(d, biggest)
            print(f"WAL replay (read_all of {n:,} entries)    {rate:12,.0f} entries/s")
        save_mbs, load_mbs = bench_snapshot(d, args.snapshot_mb << 20)
        print(
            f"snapshot {args.snapshot_mb} MB: save {save_mbs:,.0f} MB/s, "
            f"load+extract {load_mbs:,.0f} MB/s"
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    mvcc = Path(__file__).parent / "storage_mvcc.py"
    if mvcc.exists():
        spec = importlib.util.spec_from_file_location("storage_mvcc", mvcc)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["storage_mvcc"] = module
        spec.loader.exec_module(module)
        print()
        sys.argv = [str(mvcc)]
        module.main()


if __name__ == "__main__":
    main()
