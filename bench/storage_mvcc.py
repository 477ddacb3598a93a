"""Benchmark of the MVCC store over the LMDB backend, in process (no raft, no network).

Measures, for N keys (default 1,000,000) of 8 bytes with 256-byte values:
- put: KVStore.apply(PutRequest) per put, batches committed as in the server (10,000 writes);
- range: single-key RangeRequest at the current revision, random existing keys;
- memory: anonymous RSS added by the index (LMDB's mapped file pages reported apart);
- start-up: reopening the store (rebuilding the key index from the backend).

Targets (issue 3): put < 20 us, single-key range < 10 us, start-up with 1M keys < 10 s.
Run: ``.venv/bin/python bench/storage_mvcc.py [--keys N]``. A timing never fails anything.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import tempfile
import time

from petcd.backend import Backend
from petcd.mvcc import KVStore, PutRequest, RangeRequest
from petcd.raft.types import Index, Term


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def run(keys: int, ranges: int, workdir: str) -> dict[str, float]:
    path = workdir + "/db"
    value = b"v" * 256
    gc.collect()
    anon0 = _status_kib("RssAnon")
    backend = Backend(path)
    store = KVStore(backend)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(keys):
        store.apply(PutRequest(i.to_bytes(8, "big"), value), index=Index(i + 1), term=Term(1))
    backend.commit()
    put_s, put_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    gc.collect()
    anon1 = _status_kib("RssAnon")
    file_kib = _status_kib("RssFile")

    rng = random.Random(1)
    reqs = [RangeRequest(rng.randrange(keys).to_bytes(8, "big")) for _ in range(ranges)]
    t0, c0 = time.perf_counter(), time.process_time()
    for r in reqs:
        store.range(r)
    range_s, range_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    size = backend.size_bytes()
    backend.close()
    del store

    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    backend = Backend(path)
    store = KVStore(backend)
    startup_s, startup_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    assert store.current_revision == keys + 1
    backend.close()
    return {
        "keys": keys,
        "put_us": put_s / keys * 1e6,
        "put_per_s": keys / put_s,
        "put_cpu_us": put_cpu_s / keys * 1e6,
        "range_us": range_s / ranges * 1e6,
        "range_per_s": ranges / range_s,
        "range_cpu_us": range_cpu_s / ranges * 1e6,
        "index_anon_bytes_per_key": (anon1 - anon0) * 1024 / keys,
        "mapped_file_mib": file_kib / 1024,
        "db_file_mib": size / 2**20,
        "startup_s": startup_s,
        "startup_cpu_s": startup_cpu_s,
        "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--ranges", type=int, default=200_000)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    workdir = args.dir or tempfile.mkdtemp(prefix="petcd-bench-mvcc-")
    try:
        res = run(args.keys, args.ranges, workdir)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"machine load average (1 min) {res['loadavg_1m']:.1f}: wall times include waiting")
    print(
        f"mvcc put           {res['put_us']:8.2f} us/op wall, {res['put_cpu_us']:6.2f} us CPU"
        f"  ({res['put_per_s']:,.0f}/s)  target < 20 us"
    )
    print(
        f"mvcc range 1 key   {res['range_us']:8.2f} us/op wall, {res['range_cpu_us']:6.2f} us CPU"
        f"  ({res['range_per_s']:,.0f}/s)  target < 10 us"
    )
    print(
        f"index memory       {res['index_anon_bytes_per_key']:8.0f} B/key (anonymous RSS; "
        f"LMDB mapped {res['mapped_file_mib']:.0f} MiB, file {res['db_file_mib']:.0f} MiB)"
    )
    print(
        f"start-up           {res['startup_s']:8.2f} s wall, {res['startup_cpu_s']:.2f} s CPU"
        f" for {res['keys']:,} keys  target < 10 s"
    )


if __name__ == "__main__":
    main()
