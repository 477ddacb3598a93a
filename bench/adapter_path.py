"""The Python side of the native transport per request: member + adapter, without the Rust
front end and without sockets.

Theory of operation
-------------------
Opens a one-member ``petcd.server.member.Member`` in a temporary directory on uvloop (as the
server runs it), and serves it with ``petcd.grpc.native.NativeServer`` and petcd's real
services and ``RequestGuard`` (``petcd.grpc.services._add_services``), on a stand-in for
``petcd._frontend.Frontend``: its ``take()`` hands out the events the Rust front end would
(NEW with clientv3's metadata, MESSAGE, HALF_CLOSE, each a tuple as the binding builds them),
its ``fileno()`` is an eventfd, and each call's status in ``send()`` makes that client start
its next call. ``--clients`` such clients each send requests one after the other. It prints
requests/s and CPU time per request (all threads), for each variant, rounds interleaved:
``submit`` (the writes' callback forms, the default) and ``coroutine`` (the same server with
``submit=False``). Subtract ``bench/member_path.py``'s figures for the adapter alone. Figures
only, never a pass/fail.

    .venv/bin/python bench/adapter_path.py [--requests N] [--clients N] [--rounds N]
        [--workload put|txn-put|txn-update|range|range-l|delete] [--member real|fake]
        [--only submit|coroutine]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from typing import Any

import uvloop
from member_path import one_member  # bench/ is on sys.path when run as a script

from petcd.api.etcdserverpb import rpc_pb2
from petcd.grpc.interceptors import RequestGuard
from petcd.grpc.native import NativeServer
from petcd.grpc.services import GRPC_OVERHEAD_BYTES, _add_services
from petcd.mvcc.requests import (
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)
from petcd.server.log import Logger
from petcd.server.member import Member

_METADATA = (("user-agent", "grpc-go/1.59.0"), ("client-api-version", "3.5"))
_PEER = "ipv4:127.0.0.1:50000"
_VALUE = b"v" * 256


def _payload(workload: str, i: int) -> tuple[str, bytes]:
    key = b"%08d" % (i % 100_000)
    if workload == "put":
        return "/etcdserverpb.KV/Put", rpc_pb2.PutRequest(key=key, value=_VALUE).SerializeToString()
    if workload == "txn-put":
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=_VALUE))
        return "/etcdserverpb.KV/Txn", rpc_pb2.TxnRequest(success=[put]).SerializeToString()
    if workload in ("range", "range-l"):  # a Range of one key (absent: nothing is put)
        req = rpc_pb2.RangeRequest(key=key, serializable=workload == "range")
        return "/etcdserverpb.KV/Range", req.SerializeToString()
    if workload == "txn-update":  # Kubernetes' shape; the compare always holds here
        cmp = rpc_pb2.Compare(
            key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.LESS, mod_revision=1 << 62
        )
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=_VALUE))
        get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))
        txn = rpc_pb2.TxnRequest(compare=[cmp], success=[put], failure=[get])
        return "/etcdserverpb.KV/Txn", txn.SerializeToString()
    return "/etcdserverpb.KV/DeleteRange", rpc_pb2.DeleteRangeRequest(key=key).SerializeToString()


class Driver:
    """The front end's stand-in, and the clients behind it."""

    def __init__(self, listeners: list[tuple[str, int]], **options: Any) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK)
        self._events: list[tuple[Any, ...]] = []
        self._next_id = 1
        self._owner: dict[int, int] = {}  # call id -> client
        self.left = 0  # requests still to start
        self.done = 0
        self.errors = 0
        self.workload = "put"
        self.finished: asyncio.Future[None] | None = None

    def ports(self) -> list[int]:
        return [1]

    def start(self) -> None:
        pass

    def fileno(self) -> int:
        return self._fd

    def take(self) -> list[tuple[Any, ...]]:
        events, self._events = self._events, []
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd)
        return events

    def send(self, items: list[tuple[Any, ...]]) -> list[int]:
        for item in items:
            if len(item) == 4:
                client = self._owner.pop(item[0])
                self.done += 1
                if item[2] != 0:
                    self.errors += 1
                self.call(client)
        done = self.left == 0 and not self._owner
        if done and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)
        return []

    def stop_accepting(self) -> None:
        pass

    def close(self) -> None:
        os.close(self._fd)

    def call(self, client: int) -> None:
        if self.left == 0:
            return
        self.left -= 1
        call_id = self._next_id
        self._next_id += 1
        self._owner[call_id] = client
        method, payload = _payload(self.workload, call_id)
        if not self._events:
            os.eventfd_write(self._fd, 1)
        self._events += (
            (0, call_id, method, _METADATA, None, _PEER),
            (1, call_id, payload),
            (2, call_id),
        )


class FakeMember:
    """``--member fake``: answers every write with one prebuilt response, all the writes
    submitted in one loop iteration together on the next (a batch, as raft's Ready), so
    the figures are the adapter's alone."""

    def __init__(self, member: Member) -> None:
        self.cfg = member.cfg
        self.metrics = member.metrics
        self.leader = 1
        self.is_learner = False
        self._pending: list[asyncio.Future[Any]] = []
        self._put = PutResponse(ResponseHeader(1, 1, 2, 3), None)
        self._txn = TxnResponse(ResponseHeader(1, 1, 2, 3), True, ())
        self._delete = DeleteRangeResponse(ResponseHeader(1, 1, 2, 3), 1, ())

    def _resolve(self) -> None:
        pending, self._pending = self._pending, []
        for fut in pending:
            if not fut.done():
                fut.set_result(fut.answer)  # type: ignore[attr-defined]

    def submit(self, req: Any) -> asyncio.Future[Any]:
        fut: Any = asyncio.get_running_loop().create_future()
        if type(req) is PutRequest:
            fut.answer = self._put
        elif type(req) is TxnRequest:
            fut.answer = self._txn
        else:
            fut.answer = self._delete
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._resolve)
        self._pending.append(fut)
        return fut

    def add_answers_listener(self, listener: Any) -> None:
        """Its answers are asyncio futures, flushed by the adapter's own scheduled flush:
        it never tells a listener."""

    async def put(self, req: Any) -> Any:
        return await self.submit(req)

    async def txn(self, req: Any) -> Any:
        return await self.submit(req)

    async def delete_range(self, req: Any) -> Any:
        return await self.submit(req)


async def _measure(real: Member, args: argparse.Namespace) -> None:
    member: Any = real if args.member == "real" else FakeMember(real)
    servers = {}
    variants = [("submit", True), ("coroutine", False)]
    for name, submit in [v for v in variants if args.only in (None, v[0])]:
        server = NativeServer(
            [("127.0.0.1", 0)],
            max_recv_bytes=member.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
            max_send_bytes=2**31 - 1,
            interceptors=[RequestGuard(member, 1.0)],
            keepalive_min_time_ms=5_000,
            keepalive_interval_ms=7_200_000,
            keepalive_timeout_ms=20_000,
            frontend_class=Driver,
            submit=submit,
        )
        _add_services(server, member, member.cfg.max_request_bytes, Logger("error", []))
        await server.start()
        servers[name] = server
    try:
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                drv: Any = server._fe
                drv.workload = args.workload
                drv.left, drv.done, drv.errors = args.requests, 0, 0
                drv.finished = asyncio.get_running_loop().create_future()
                t0, c0 = time.perf_counter(), os.times()
                for client in range(args.clients):
                    drv.call(client)
                await drv.finished
                t1, c1 = time.perf_counter(), os.times()
                assert drv.errors == 0, f"{drv.errors} requests failed"
                cpu = (c1.user - c0.user + c1.system - c0.system) / drv.done * 1e6
                results[name].append((drv.done / (t1 - t0), cpu))
                rate = drv.done / (t1 - t0)
                print(f"{name:10s} {rate:9,.0f}/s  cpu {cpu:6.1f} us/req", flush=True)
        for name, rows in results.items():
            cpus = sorted(c for _, c in rows)
            rates = sorted(r for r, _ in rows)
            print(
                f"median {name:10s} {rates[len(rates) // 2]:9,.0f}/s  "
                f"cpu {cpus[len(cpus) // 2]:6.1f} us/req"
            )
    finally:
        for server in servers.values():
            await server.stop(None)


async def _main(args: argparse.Namespace) -> None:
    async with one_member("petcd-adapter-path-") as m:
        await _measure(m, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=20000, help="requests per measurement")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--workload",
        choices=("put", "txn-put", "txn-update", "range", "range-l", "delete"),
        default="put",
    )
    p.add_argument(
        "--member", choices=("real", "fake"), default="real", help="fake: the adapter alone"
    )
    p.add_argument("--only", choices=("submit", "coroutine"), help="run one variant")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    uvloop.run(_main(args))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
