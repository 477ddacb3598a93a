"""Benchmark of the Snapshot RPC's conversion: a petcd backend (LMDB) to etcd's bbolt format.

    PYTHONPATH=src .venv/bin/python bench/snapshot_convert.py [--keys 100000,1000000]
        [--rounds 1] [--profile] [--dir DIR] [--seed 1]

For each N in ``--keys`` it writes a petcd backend of N ``key`` records (deterministic for a
seed: 8-32-byte user keys, ~100-byte values; about 1 record in 10 updates an existing key
(history), 1 in 50 deletes one (a tombstone), 1 in 20 is attached to one of 100 leases), with
the other buckets non-empty (meta with a compaction, leases, auth on, users, roles, an alarm,
members, a removed member), then times ``petcd.utl.rpc_snapshot.convert`` on it in this
process (what the member's worker thread or child runs): wall and CPU seconds, CPU seconds per
1,000,000 records, and the SHA-256 of the bbolt file (the same seed and N give the same digest
on every version of the converter: the conversion's output must not change).

``--profile`` runs the last round under cProfile and prints the 25 functions with the most
time of their own. Building the backend is not timed. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import random
import shutil
import struct
import sys
import tempfile
import time

from petcd.auth.store import Permission, Role, User
from petcd.backend import (
    ALARM,
    AUTH,
    AUTH_ROLES,
    AUTH_USERS,
    CONSISTENT_INDEX_KEY,
    KEY,
    LEASE,
    MEMBERS,
    MEMBERS_REMOVED,
    META,
    Backend,
)
from petcd.lease.store import encode_lease_key, encode_lease_record
from petcd.lease.types import LeaseId, LeaseRecord
from petcd.mvcc.kvstore import encode_kv, rev_key
from petcd.mvcc.requests import KeyValue
from petcd.raft.types import MemberId
from petcd.server.member import MemberInfo, encode_alarm_key
from petcd.utl.rpc_snapshot import convert

LEASES = 100
COMMIT_EVERY = 100_000
SUB_BITS = 32  # petcd's packed revision: main << 32 | sub (rev_key's argument)


def build_backend(path: str, records: int, seed: int) -> None:
    """Write a petcd backend of ``records`` key records (and every other bucket) at ``path``."""
    rng = random.Random(seed)
    lease_ids = [0x7000_0000_0000 + i for i in range(LEASES)]
    live: list[bytes] = []  # user keys that exist
    state: dict[bytes, tuple[int, int]] = {}  # key -> (create revision, version)
    with Backend(path, unsafe_no_fsync=True, batch_limit=COMMIT_EVERY + 1) as be:
        main = 1
        for n in range(records):
            main += 1
            roll = rng.random()
            if live and roll < 0.02:  # a delete: the tombstone holds the key only
                i = rng.randrange(len(live))
                key = live[i]
                live[i] = live[-1]
                live.pop()
                del state[key]
                kv = KeyValue(key, 0, main, 0, b"", 0)
                be.put(KEY, rev_key(-(main << SUB_BITS)), encode_kv(kv))
            else:
                if live and roll < 0.12:  # an update: history of an existing key
                    key = live[rng.randrange(len(live))]
                    create, version = state[key]
                else:
                    key = b"/registry/%d/" % n
                    key += b"k" * max(0, rng.randrange(8, 33) - len(key))
                    create, version = main, 0
                    live.append(key)
                state[key] = (create, version + 1)
                lease = lease_ids[rng.randrange(LEASES)] if rng.random() < 0.05 else 0
                value = rng.randbytes(rng.randrange(80, 121))
                kv = KeyValue(key, create, main, version + 1, value, lease)
                be.put(KEY, rev_key(main << SUB_BITS), encode_kv(kv))
            if (n + 1) % COMMIT_EVERY == 0:
                be.commit()
        compact = max(2, main // 2)
        be.put(META, CONSISTENT_INDEX_KEY, struct.pack(">QQ", main + 10, 3))
        be.put(META, b"scheduledCompactRev", struct.pack(">q", compact))
        be.put(META, b"finishedCompactRev", struct.pack(">q", compact))
        for lease_id in lease_ids:
            record = LeaseRecord(LeaseId(lease_id), rng.randrange(60, 3600))
            be.put(LEASE, encode_lease_key(LeaseId(lease_id)), encode_lease_record(record))
        be.put(AUTH, b"authEnabled", b"\x01")
        be.put(AUTH, b"authRevision", (17).to_bytes(8, "big"))
        be.put(AUTH_USERS, b"root", User("root", b"$2a$10$" + b"h" * 53, ["root"]).encode())
        be.put(AUTH_USERS, b"app", User("app", b"", ["reader", "writer"], True).encode())
        be.put(AUTH_ROLES, b"reader", Role("reader", [Permission(0, b"/a", b"/b")]).encode())
        be.put(AUTH_ROLES, b"writer", Role("writer", [Permission(2, b"/registry/", b"")]).encode())
        be.put(ALARM, encode_alarm_key(0xABC, 1), b"")
        for i, member in enumerate((0xABC, 0x123, 0xFEDCBA)):
            info = MemberInfo(
                MemberId(member),
                f"m{i}",
                (f"http://127.0.0.1:{2380 + 10 * i}",),
                (f"http://127.0.0.1:{2379 + 10 * i}",),
            )
            be.put(MEMBERS, member.to_bytes(8, "big"), info.encode())
        be.put(MEMBERS_REMOVED, (0xDEF).to_bytes(8, "big"), b"removed")
        be.commit()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run(directory: str, records: int, rounds: int, profile: bool, seed: int) -> None:
    src = os.path.join(directory, f"petcd-{records}.lmdb")
    dst = os.path.join(directory, f"etcd-{records}.bolt")
    started = time.perf_counter()
    build_backend(src, records, seed)
    print(
        f"keys={records:,}: backend {os.path.getsize(src) / 1e6:.1f} MB built in "
        f"{time.perf_counter() - started:.1f} s"
    )
    for r in range(rounds):
        open(dst, "wb").close()  # the member creates the (empty) output file
        profiler = cProfile.Profile() if profile and r == rounds - 1 else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        pages = convert(src, dst)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"  round {r + 1}{' (profiled)' if profiler else ''}: {wall:.2f} s wall, "
            f"{cpu:.2f} s CPU = {cpu / records * 1e6:.2f} s CPU per 1,000,000 records; "
            f"{pages:,} pages"
        )
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    print(f"  sha256 {sha256_file(dst)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keys", default="100000,1000000", help="comma-separated record counts")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="cProfile the last round")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="where to build (default: a temporary dir, removed after)")
    args = p.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="petcd-bench-snapshot-")
    try:
        for records in (int(k) for k in args.keys.split(",")):
            run(directory, records, args.rounds, args.profile, args.seed)
    finally:
        if args.dir is None:
            shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
