"""Benchmark of the Raft core alone: a 3-member cluster in one process, no I/O.

Every member has a ``MemoryStorage``; messages go through an in-memory list. The leader proposes
256-byte entries in batches (``propose_many``); each round runs every member's Ready cycle
(persist to memory, send, apply, advance) and delivers the messages. The figure printed is the
number of entries committed and applied on every member per second of wall time on one core,
and per CPU second of this process (the fairer figure on a shared, busy machine).

    .venv/bin/python bench/raft_core.py [--entries N] [--batch B] [--payload BYTES]
"""

from __future__ import annotations

import argparse
import random
import time

from petcd.raft import Config, MemberId, MemoryStorage, Message, RawNode, Role


def run(entries_total: int, batch: int, payload_bytes: int) -> tuple[float, float, int]:
    """Return (entries per wall second, entries per CPU second of this process, entries)."""
    ids = [MemberId(1), MemberId(2), MemberId(3)]
    nodes: dict[MemberId, RawNode] = {}
    stores: dict[MemberId, MemoryStorage] = {}
    applied: dict[MemberId, int] = {}
    for i in ids:
        stores[i] = MemoryStorage.bootstrap(ids)
        nodes[i] = RawNode(Config(i, rand=random.Random(i)), stores[i])
        applied[i] = 0
    outbox: list[Message] = []

    def cycle() -> None:
        for i, n in nodes.items():
            if not n.has_ready():
                continue
            rd = n.ready()
            st = stores[i]
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            if rd.entries:
                st.append(rd.entries)
            outbox.extend(rd.messages)
            applied[i] += len(rd.committed_entries)
            n.advance(rd)

    def deliver() -> None:
        nonlocal outbox
        msgs, outbox = outbox, []
        for m in msgs:
            nodes[m.to].step(m)

    cycle()  # apply the bootstrap conf-change entries; a member does not campaign before
    nodes[ids[0]].campaign()
    for _ in range(20):
        cycle()
        deliver()
    leader = nodes[ids[0]]
    assert leader.raft.role is Role.LEADER
    base = dict(applied)
    payload = b"x" * payload_bytes
    datas = [payload] * batch
    proposed = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while min(applied[i] - base[i] for i in ids) < entries_total:
        if proposed < entries_total:
            leader.propose_many(datas)
            proposed += batch
        cycle()
        deliver()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    done = min(applied[i] - base[i] for i in ids)
    return done / elapsed, done / cpu, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--payload", type=int, default=256)
    args = ap.parse_args()
    rate, cpu_rate, done = run(args.entries, args.batch, args.payload)
    print(
        f"raft core, 3 members in one process: {done} entries of {args.payload} bytes "
        f"in batches of {args.batch}: {rate:,.0f} committed entries/s "
        f"({cpu_rate:,.0f} per CPU second; they differ when the machine is busy)"
    )


if __name__ == "__main__":
    main()
