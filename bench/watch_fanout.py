"""The Python cost of watch fan-out per delivered event, without the network.

Theory of operation
-------------------
Builds the watch path of a petcd member in one process: a ``WatchableStore`` (real backend in
a temporary directory), ``petcd.grpc.watch.WatchService`` registered by ``add_watch_service``
on a ``petcd.grpc.native.NativeServer`` whose front end is a counting stand-in (``take`` hands
out injected events, ``send`` only counts messages, bytes and events: no Rust, no sockets). Opens
``--streams`` Watch calls with ``--watchers`` watchers each on one key, then applies puts to
the store one after another (as the member's apply loop does) and runs the event loop until
every watcher's event for the put has been handed to ``send``; ``--lag`` puts may be
outstanding, like bench/run.py's ``watch`` workload (``--max-lag``). Prints events/s and CPU
time per event (process time: this is all Python on one thread; the stand-in's own time,
decoding messages to count their events, is subtracted). Figures only, never a
pass/fail; compare runs made close together.

    .venv/bin/python bench/watch_fanout.py [--puts N] [--streams S] [--watchers W] [--lag L]
    .venv/bin/python bench/watch_fanout.py --profile out.prof   # cProfile of the timed part
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import uvloop

from petcd.api.etcdserverpb import rpc_pb2
from petcd.backend import Backend
from petcd.grpc.native import NativeServer
from petcd.grpc.watch import WatchService, add_watch_service
from petcd.mvcc.requests import PutRequest, ResponseHeader
from petcd.mvcc.watchable_store import WatchableStore, Watcher, WatchSink
from petcd.raft.types import Index, Term

NEW, MESSAGE = 0, 1


class CountingFrontend:
    """``petcd._frontend.Frontend`` stand-in: injected events in, counted messages out."""

    def __init__(self, listeners: list[tuple[str, int]], **options: Any) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._events: list[tuple[Any, ...]] = []
        self.messages = 0
        self.events = 0  # events in the messages sent (a message may carry several)
        self.own_cpu_s = 0.0  # this stand-in's own CPU time (decoding to count events)
        self.bytes = 0
        self.sends = 0

    def ports(self) -> list[int]:
        return [0]

    def start(self) -> None:
        pass

    def fileno(self) -> int:
        return self._r

    def take(self) -> list[tuple[Any, ...]]:
        events, self._events = self._events, []
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        return events

    def send(self, items: list[tuple[Any, ...]]) -> list[int]:
        t0 = time.process_time()
        self.sends += 1
        self.messages += len(items)
        for item in items:
            if item[1] is not None:
                self.bytes += len(item[1])
                self.events += len(rpc_pb2.WatchResponse.FromString(item[1]).events)
        self.own_cpu_s += time.process_time() - t0
        return []

    def stop_accepting(self) -> None:
        pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)

    def inject(self, *events: tuple[Any, ...]) -> None:
        if not self._events:
            os.write(self._w, b"x")
        self._events.extend(events)


class StoreMember:
    """What ``WatchService`` needs of the member, over a WatchableStore."""

    def __init__(self, store: WatchableStore) -> None:
        self.store = store
        self._index = itertools.count(1)
        self._listeners: set[Callable[[], None]] = set()
        self.wake = asyncio.Event()

    async def syncer(self) -> None:
        """The member's watch sync task (``Member._watch_syncer``)."""
        while True:
            if self.store.watcher_counts()[1] == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.1)
            else:
                await asyncio.sleep(0)
            self.wake.clear()
            if self.store.has_pending_sync:
                self.store.sync()
            for cb in list(self._listeners):
                cb()

    def put(self, key: bytes, value: bytes) -> None:
        self.store.apply(PutRequest(key, value), index=Index(next(self._index)), term=Term(1))

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        sink: WatchSink,
        prev_kv: bool,
        filters: tuple[int, ...],
        watch_id: int,
    ) -> Watcher:
        return self.store.watch(
            key, range_end, start_revision, sink=sink, prev_kv=prev_kv, filters=filters,
            watch_id=watch_id,
        )  # fmt: skip

    def cancel_watch(self, w: Watcher) -> bool:
        return self.store.cancel(w)

    def watch_header(self, revision: int = 0) -> ResponseHeader:
        return ResponseHeader(0x1234, 0x5678, revision or self.store.current_revision, 2)

    def watchers_synced(self, watchers: list[Watcher]) -> bool:
        return True

    def wake_watch_sync(self) -> None:
        self.wake.set()

    @property
    def watch_progress_interval_s(self) -> float:
        return 600.0

    @property
    def auth_enabled(self) -> bool:
        return False

    def add_watch_sync_listener(self, cb: Callable[[], None]) -> None:
        self._listeners.add(cb)

    def remove_watch_sync_listener(self, cb: Callable[[], None]) -> None:
        self._listeners.discard(cb)


async def _run(args: argparse.Namespace, data_dir: str) -> None:
    backend = Backend(os.path.join(data_dir, "db"))
    store = WatchableStore(backend)
    member = StoreMember(store)
    server = NativeServer(
        [("127.0.0.1", 0)],
        max_recv_bytes=1 << 21,
        max_send_bytes=1 << 31,
        keepalive_min_time_ms=5000,
        keepalive_interval_ms=7_200_000,
        keepalive_timeout_ms=20_000,
        frontend_class=CountingFrontend,
    )
    add_watch_service(WatchService(member), server)
    fe: CountingFrontend = server._fe  # type: ignore[assignment]
    await server.start()
    syncer = asyncio.create_task(member.syncer())
    key = b"%08d" % 1
    create = rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(key=key)
    ).SerializeToString()
    for s in range(args.streams):
        fe.inject((NEW, s + 1, "/etcdserverpb.Watch/Watch", (), None, "ipv4:127.0.0.1:1"))
        fe.inject(*[(MESSAGE, s + 1, create)] * args.watchers)
    fanout = args.streams * args.watchers
    for _ in range(1000):
        await asyncio.sleep(0)
        if fe.messages >= fanout:
            break
    assert fe.messages == fanout, f"created {fe.messages} of {fanout}"
    value = b"v" * args.val_size

    async def deliver(puts: int) -> None:
        base = fe.events
        for i in range(puts):
            member.put(key, value)
            await asyncio.sleep(0)  # one apply per loop iteration, as puts come from raft
            # at most `lag` puts not yet fully handed to the front end
            while fe.events < base + (i + 1 - args.lag) * fanout:
                await asyncio.sleep(0)
        while fe.events < base + puts * fanout:
            await asyncio.sleep(0)

    await deliver(args.warmup)
    prof = cProfile.Profile() if args.profile else None
    t0, c0, e0, m0, b0, s0 = (
        time.perf_counter(),
        time.process_time(),
        fe.events,
        fe.messages,
        fe.bytes,
        fe.sends,
    )
    own0 = fe.own_cpu_s
    if prof is not None:
        prof.enable()
    await deliver(args.puts)
    if prof is not None:
        prof.disable()
        prof.dump_stats(args.profile)
    t1, c1 = time.perf_counter(), time.process_time()
    events, messages, own = fe.events - e0, fe.messages - m0, fe.own_cpu_s - own0
    print(
        f"streams {args.streams} x watchers {args.watchers}, lag {args.lag}: "
        f"{events / (t1 - t0 - own):10,.0f} events/s  "
        f"cpu {(c1 - c0 - own) / events * 1e6:6.2f} us/event  "
        f"{events / messages:5.2f} events/message  {(fe.bytes - b0) / messages:5.0f} B/message  "
        f"{messages / (fe.sends - s0):6.1f} "
        "messages/send()",
        flush=True,
    )
    syncer.cancel()
    await server.stop(None)
    backend.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--puts", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--lag", type=int, default=10)
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="measurements, each on a fresh store")
    p.add_argument("--profile", default="", help="write a cProfile of the (last) timed part")
    args = p.parse_args()
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="petcd-watch-fanout-") as d:
            uvloop.run(_run(args, d))


if __name__ == "__main__":
    main()
