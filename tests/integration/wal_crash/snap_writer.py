"""Child process of test_wal_crash.py: saves snapshot files forever, reporting on stdout.

Each snapshot ``i`` (term 1, index ``i``) holds ``snapshot_data(i)``, written in chunks through
the file object the Snapshotter gives. After ``save`` returns the child writes ``S <i>``: that
snapshot is acknowledged. The parent kills the child with SIGKILL at random moments.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import BinaryIO

from petcd.raft.types import ConfState, Index, MemberId, SnapshotMetadata, Term
from petcd.snap import Snapshotter


def snapshot_data(index: int) -> bytes:
    size = (index * 7919) % (3 << 20)
    block = hashlib.sha256(str(index).encode()).digest() * 256
    return (block * (size // len(block) + 1))[:size]


def metadata(index: int) -> SnapshotMetadata:
    return SnapshotMetadata(Index(index), Term(1), ConfState(frozenset({MemberId(1)})))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--start", type=int, required=True)
    args = ap.parse_args()
    snaps = Snapshotter(args.dir, keep=3)
    i = args.start
    while True:
        data = snapshot_data(i)

        def write(f: BinaryIO, data: bytes = data) -> None:
            for k in range(0, len(data), 1 << 16):
                f.write(data[k : k + (1 << 16)])

        snaps.save(metadata(i), write)
        sys.stdout.write(f"S {i}\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    main()
