"""The peer transport's own cost per hop: CPU time per MsgApp/MsgAppResp round trip.

Two ``PeerTransport`` instances on one event loop (uvloop, as ``petcd`` runs) and real loopback
TCP: A sends a MsgApp with one 300-byte entry, B's delivery callback answers with a MsgAppResp,
A's sends the next. One round trip is two sends, two socket writes, two reads and two decodes:
what every replicated write pays per follower, minus raft. One process, one thread, so the
figure moves little with the machine's load (the wall time does).

    .venv/bin/python bench/peer_hop.py [--round-trips N]
    PYTHONPATH=/work/main/src .venv/bin/python bench/peer_hop.py   # main's transport, for A/B
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import uvloop

import petcd.peer
from petcd.peer import PeerTransport, TransportConfig
from petcd.raft.types import Entry, Index, MemberId, Message, MessageType, Term

A, B = MemberId(1), MemberId(2)


async def measure(round_trips: int, tmp: Path) -> tuple[float, float]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    count = 0
    entry = (Entry(Term(1), Index(1), data=b"x" * 300),)

    def on_a(_ms: list[Message]) -> None:
        nonlocal count
        count += 1
        if count >= round_trips:
            if not done.done():
                done.set_result(None)
            return
        i = Index(count)
        a.send([Message(MessageType.APP, B, A, Term(1), index=i, entries=entry, commit=i)])

    def on_b(ms: list[Message]) -> None:
        b.send([Message(MessageType.APP_RESP, A, B, Term(1), index=Index(ms[-1].index + 1))])

    def make(mid: MemberId, on: object) -> PeerTransport:
        return PeerTransport(
            TransportConfig(cluster_id=7, member_id=mid, snapshot_dir=tmp),
            on_messages=on,  # type: ignore[arg-type]
            report_unreachable=lambda _i: None,
            report_snapshot=lambda _i, _f: None,
        )

    a, b = make(A, on_a), make(B, on_b)
    await a.start(["http://127.0.0.1:0"])
    await b.start(["http://127.0.0.1:0"])
    try:
        a.add_peer(B, [f"http://127.0.0.1:{b.listen_addresses[0][1]}"])
        b.add_peer(A, [f"http://127.0.0.1:{a.listen_addresses[0][1]}"])
        while not (a.is_connected(B) and b.is_connected(A)):
            await asyncio.sleep(0.01)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        on_a([])
        await done
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await a.stop()
        await b.stop()
    return cpu_s * 1e6 / round_trips, wall_s * 1e6 / round_trips


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--round-trips", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="petcd-peer-hop-"))
    try:
        cpus = []
        for _ in range(args.repeat):
            cpu_us, wall_us = uvloop.run(measure(args.round_trips, tmp))
            cpus.append(cpu_us)
            print(f"  cpu {cpu_us:6.1f} µs/round trip  wall {wall_us:6.1f} µs/round trip")
        cpus.sort()
        print(
            f"{petcd.peer.__file__}: median cpu {cpus[len(cpus) // 2]:.1f} µs, "
            f"min {cpus[0]:.1f} µs per round trip"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
