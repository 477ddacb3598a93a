"""The member's own cost per request, without gRPC: put and range, one at a time and 100 at once.

Theory of operation
-------------------
Opens a one-member ``petcd.server.member.Member`` in a temporary directory, on uvloop as the
server runs it, and drives it the way ``petcd.grpc.services.KVService`` does: protobuf request
-> ``petcd.grpc.convert`` -> member -> protobuf response -> bytes. It prints requests/s, CPU time
per request (user and system, all threads: the WAL's worker thread included) and wall time per
request, and how many fdatasync calls the WAL made. Subtracting these figures from the server's
(``bench/run.py``) separates the member from the transport. Figures only, never a pass/fail.

    .venv/bin/python bench/member_path.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import uvloop

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc import convert
from petcd.server.config import parse
from petcd.server.log import Logger
from petcd.server.member import Member

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ports import free_port


async def _measure(m: Member, n: int) -> None:
    value = b"v" * 256

    async def put(i: int) -> bytes:
        req = rpc_pb2.PutRequest(key=b"%08d" % (i % 100_000), value=value)
        resp = await m.put(convert.put_request(req))
        return bytes(convert.put_response_pb(resp).SerializeToString())

    range_pb = rpc_pb2.RangeRequest(key=b"00000001")

    async def range_(i: int) -> bytes:
        resp = await m.range(convert.range_request(range_pb))
        return bytes(convert.range_response_pb(resp).SerializeToString())

    cases: list[tuple[str, Callable[[int], Awaitable[bytes]], int]] = [
        ("put-1c", put, 1),
        ("put-100", put, 100),
        ("range-1c", range_, 1),
        ("range-100", range_, 100),
    ]
    for name, fn, clients in cases:

        async def client(
            first: int, fn: Callable[[int], Awaitable[bytes]] = fn, k: int = clients
        ) -> None:
            for i in range(first, n, k):
                await fn(i)

        syncs0 = m.wal.sync_count
        t0, c0 = time.perf_counter(), os.times()
        await asyncio.gather(*(client(k) for k in range(clients)))
        t1, c1 = time.perf_counter(), os.times()
        user_us = (c1.user - c0.user) / n * 1e6
        sys_us = (c1.system - c0.system) / n * 1e6
        print(
            f"{name:10s} {n / (t1 - t0):9,.0f}/s  cpu {user_us + sys_us:6.1f} us/req "
            f"(user {user_us:6.1f}, sys {sys_us:5.1f})  wall {(t1 - t0) / n * 1e6:7.1f} us/req  "
            f"fdatasyncs {m.wal.sync_count - syncs0}",
            flush=True,
        )


@contextlib.asynccontextmanager
async def one_member(prefix: str) -> AsyncIterator[Member]:
    """A started, ready one-member Member in a temporary directory (stopped on exit)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        url = f"http://127.0.0.1:{free_port()}"  # the member listens for peers (none come)
        parsed = parse(
            [
                *("--name", "m", "--data-dir", f"{d}/data", "--log-level", "error"),
                *("--listen-client-urls", url, "--advertise-client-urls", url),
                *("--initial-cluster", f"m={url}", "--initial-advertise-peer-urls", url),
                *("--listen-peer-urls", url),
            ],
            {},
        )
        assert parsed.config is not None
        m = Member(parsed.config, Logger("error", []))
        m.open_data()
        await m.start()
        try:
            await m.wait_ready()
            yield m
        finally:
            await m.stop()


async def _main(n: int) -> None:
    async with one_member("petcd-member-path-") as m:
        await _measure(m, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=3000, help="requests per case")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    uvloop.run(_main(args.requests))


if __name__ == "__main__":
    main()
