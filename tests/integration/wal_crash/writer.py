"""Child process of test_wal_crash.py: appends to a WAL forever, reporting on stdout.

Protocol (one line each, flushed before the action it announces):

    O <snapshot index> <last index>     opened (or created) the WAL
    E <index> <term>                    an entry about to be saved
    H <term> <commit>                   a hard state about to be saved
    M <index> <term>                    a snapshot marker about to be saved
    S                                   sync() returned: every line before it is acknowledged

The parent kills this process with SIGKILL at random moments. With ``--torn-per-mille N`` the
child also kills itself, with probability N/1000 per write, in the middle of the batch's pwrite
after writing a random prefix of it (a torn write at a random byte), or all of it but a hole (a
power cut that persisted the batch's pages out of order), deterministically.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sys

from petcd.raft.types import Entry, HardState, Index, MemberId, SnapshotMetadata, Term
from petcd.wal import WAL, exists, snapshot_markers
from petcd.wal import wal as wal_module
from petcd.wal.fileutil import pwrite_all


def payload(term: int, index: int) -> bytes:
    """The data of entry (term, index): its length and content follow from both."""
    size = (index * 31 + term * 17) % 700
    block = hashlib.sha256(f"{term}:{index}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--segment-size", type=int, required=True)
    ap.add_argument("--torn-per-mille", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    if exists(args.dir):
        markers = snapshot_markers(args.dir)
        snap = markers[-1] if markers else SnapshotMetadata()
        wal, state = WAL.open(args.dir, snap, segment_size_bytes=args.segment_size)
        terms: list[int] = [e.term for e in state.entries]  # of indexes snap.index+1 ...
        term: int = max([state.hard_state.term, snap.term, *terms])
    else:
        wal = WAL.create(args.dir, b"crash-test", segment_size_bytes=args.segment_size)
        snap = SnapshotMetadata()
        terms = []
        term = 1
    say(f"O {snap.index} {snap.index + len(terms)}")

    if args.torn_per_mille:
        real_pwrite_all = pwrite_all

        def torn_pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
            if rng.randrange(1000) < args.torn_per_mille:
                mv = memoryview(data)
                cut = rng.randrange(len(mv) + 1)
                if rng.random() < 0.5:
                    # A torn write: a prefix of the batch reached the file.
                    real_pwrite_all(fd, mv[:cut], offset)
                else:
                    # A power cut persisting pages out of order: all of the batch but a hole
                    # (the file was zero-filled there) reached the disk.
                    end = min(len(mv), cut + rng.choice((1, 512, 4096, 20000)))
                    real_pwrite_all(fd, mv[:cut], offset)
                    real_pwrite_all(fd, mv[end:], offset + end)
                os.kill(os.getpid(), signal.SIGKILL)
            real_pwrite_all(fd, data, offset)

        setattr(wal_module, "pwrite_all", torn_pwrite_all)  # noqa: B010

    while True:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):  # several saves per sync: group commit
            last = snap.index + len(terms)
            op = rng.random()
            if op < 0.1 and terms:
                # A new leader overwrites the tail (never below the snapshot).
                term += rng.randint(1, 3)
                first = max(snap.index + 1, last + 1 - rng.randint(0, 30))
                count = rng.randint(1, 5)
            else:
                first = last + 1
                count = rng.choice((1, 5, 20, 100, 400))
            del terms[first - snap.index - 1 :]
            entries = [
                Entry(Term(term), Index(i), data=payload(term, i))
                for i in range(first, first + count)
            ]
            terms.extend(term for _ in entries)
            commit = max(snap.index, first + count - 1 - rng.randint(0, 10))
            for e in entries:
                say(f"E {e.index} {e.term}")
            say(f"H {term} {commit}")
            wal.save(HardState(Term(term), MemberId(1), Index(commit)), entries)
            if rng.random() < 0.3:
                # Written, its writeback started, not yet synced (the server's lone-proposal
                # path): not acknowledged until the next sync; later saves, cuts and
                # release_to must sync it first.
                wal.write()
            if rng.random() < 0.03:
                # The leader's snapshot (a newer term) replaces this member's log.
                term += 1
                last = snap.index + len(terms)
                index = max(snap.index + 1, last + rng.randint(-5, 5))
                new_snap = SnapshotMetadata(Index(index), Term(term))
                say(f"M {index} {term}")
                wal.save_snapshot(new_snap)
                wal.sync()
                say("S")
                if rng.random() < 0.5:
                    wal.release_to(new_snap.index)
                terms = []
                snap = new_snap
            elif rng.random() < 0.08 and len(terms) > 1:
                index = snap.index + rng.randint(1, len(terms) - 1)
                new_snap = SnapshotMetadata(Index(index), Term(terms[index - snap.index - 1]))
                say(f"M {new_snap.index} {new_snap.term}")
                wal.save_snapshot(new_snap)
                wal.sync()
                say("S")
                wal.release_to(new_snap.index)
                del terms[: index - snap.index]
                snap = new_snap
        wal.sync()
        say("S")


if __name__ == "__main__":
    main()
