"""Prototype member behind the native front end (bench/prototypes/native_frontend).

Theory of operation. ``native_frontend.FrontEnd`` serves gRPC on native threads and queues
decoded KV requests; it signals an eventfd when the queue becomes non-empty. This script
registers that eventfd with an asyncio loop; on wake-up it takes the whole queue in one
call and plays the member: Puts get consecutive revisions in a dict-based store, Ranges of
one key are answered from it. With ``--fsync FILE`` the batch's Put records are written to
FILE (preallocated, as etcd's WAL segments are) and fdatasync'ed in a worker thread before
the Puts are answered: one fsync per batch, the group commit petcd's WAL does; requests
that arrive meanwhile form the next batch. ``--mode raw`` hands Python the undecoded
messages, which it decodes and answers with the generated protobuf classes
(``petcd.api.etcdserverpb``). It stores nothing durable beyond the WAL file and implements
no raft: it measures what a native transport plus a batch-shaped Python member costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import native_frontend

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2

PUT, RANGE, WATCH_MSG, STREAM_END = 1, 2, 3, 4  # request kinds, as in src/lib.rs


WAL_PREALLOC_BYTES = 1 << 30
WAL_THREAD = ThreadPoolExecutor(1, thread_name_prefix="wal")
WAL_HEADER = struct.Struct(">QII")  # revision, key length, value length


def write_and_sync(fd: int, data: bytes, offset: int) -> None:
    os.pwrite(fd, data, offset)
    os.fdatasync(fd)


class Watchers:
    """Single-key watchers per Watch stream (mode "raw"): the prototype's watch hub."""

    def __init__(self) -> None:
        self.by_key: dict[bytes, dict[tuple[int, int], None]] = {}
        self.by_stream: dict[int, dict[int, bytes]] = {}  # stream -> watch id -> key
        self.next_id: dict[int, int] = {}

    def on_message(self, stream: int, msg: bytes, revision: int) -> bytes | None:
        """A WatchRequest arrived on ``stream``; returns the response to send, if any."""
        req = rpc_pb2.WatchRequest.FromString(msg)
        resp = rpc_pb2.WatchResponse()
        h = resp.header
        h.cluster_id, h.member_id, h.revision, h.raft_term = 1, 1, revision, 1
        which = req.WhichOneof("request_union")
        if which == "create_request":
            wid = self.next_id.get(stream, 0)
            self.next_id[stream] = wid + 1
            key = req.create_request.key
            self.by_key.setdefault(key, {})[(stream, wid)] = None
            self.by_stream.setdefault(stream, {})[wid] = key
            resp.watch_id, resp.created = wid, True
        elif which == "cancel_request":
            wid = req.cancel_request.watch_id
            key = self.by_stream.get(stream, {}).pop(wid, b"")
            self.by_key.get(key, {}).pop((stream, wid), None)
            resp.watch_id, resp.canceled = wid, True
        else:
            return None
        return resp.SerializeToString()

    def on_end(self, stream: int) -> None:
        for wid, key in self.by_stream.pop(stream, {}).items():
            self.by_key.get(key, {}).pop((stream, wid), None)
        self.next_id.pop(stream, None)


async def sync_wal(
    loop: asyncio.AbstractEventLoop, wal: int, data: bytes, offset: int, spin: bool
) -> None:
    """Write and fdatasync in a worker thread; with ``spin``, keep this CPU busy meanwhile.

    Spinning (sched_yield releases the GIL) tests the finding in 0004 that a blocking
    fdatasync often waits about 4 ms when the CPUs go idle on these machines. It polls the
    worker's concurrent future directly: an asyncio future would only complete once the
    loop runs again.
    """
    if not spin:
        await loop.run_in_executor(WAL_THREAD, write_and_sync, wal, data, offset)
        return
    cf = WAL_THREAD.submit(write_and_sync, wal, data, offset)
    while not cf.done():
        os.sched_yield()
    cf.result()


def serve_raw(
    store: dict[bytes, tuple[bytes, int, int, int]],
    watchers: Watchers,
    revision: int,
    ids: list[int],
    kinds: list[int],
    messages: list[bytes],
) -> tuple[int, list[int], list[bytes], list[bytes], dict[bytes, list[Any]], list[Any]]:
    """Mode "raw": decode and encode with the generated protobuf classes.

    Returns the new revision, the ids and encoded responses of the unary calls, the WAL
    records of the Puts, the watch events per watched key, and the (stream, message)
    pairs to send on Watch streams.
    """
    resp_ids: list[int] = []
    out: list[bytes] = []
    records: list[bytes] = []
    events: dict[bytes, list[Any]] = {}
    stream_out: list[Any] = []
    for rid, kind, msg in zip(ids, kinds, messages, strict=True):
        if kind == PUT:
            req = rpc_pb2.PutRequest.FromString(msg)
            revision += 1
            old = store.get(req.key)
            if old is None:
                new = (req.value, revision, revision, 1)
            else:
                new = (req.value, old[1], revision, old[3] + 1)
            store[req.key] = new
            records.append(WAL_HEADER.pack(revision, len(msg), 0) + msg)
            if req.key in watchers.by_key:
                kv = kv_pb2.KeyValue(
                    key=req.key,
                    value=new[0],
                    create_revision=new[1],
                    mod_revision=new[2],
                    version=new[3],
                )
                events.setdefault(req.key, []).append(kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv))
            resp = rpc_pb2.PutResponse()
            h = resp.header
            h.cluster_id, h.member_id, h.revision, h.raft_term = 1, 1, revision, 1
            resp_ids.append(rid)
            out.append(resp.SerializeToString())
        elif kind == RANGE:
            rreq = rpc_pb2.RangeRequest.FromString(msg)
            rresp = rpc_pb2.RangeResponse()
            h = rresp.header
            h.cluster_id, h.member_id, h.revision, h.raft_term = 1, 1, revision, 1
            cur = store.get(rreq.key)
            if cur is not None:
                rresp.kvs.add(
                    key=rreq.key,
                    value=cur[0],
                    create_revision=cur[1],
                    mod_revision=cur[2],
                    version=cur[3],
                )
                rresp.count = 1
            resp_ids.append(rid)
            out.append(rresp.SerializeToString())
        elif kind == WATCH_MSG:
            answer = watchers.on_message(rid, msg, revision)
            if answer is not None:
                stream_out.append((rid, answer))
        elif kind == STREAM_END:
            watchers.on_end(rid)
    return revision, resp_ids, out, records, events, stream_out


def send_events(
    fe: native_frontend.FrontEnd,
    watchers: Watchers,
    revision: int,
    events: dict[bytes, list[Any]],
) -> None:
    """One WatchResponse per watched key, encoded once, copied to every watcher natively."""
    for key, evs in events.items():
        targets = watchers.by_key.get(key)
        if not targets:
            continue
        resp = rpc_pb2.WatchResponse(events=evs)
        h = resp.header
        h.cluster_id, h.member_id, h.revision, h.raft_term = 1, 1, revision, 1
        fe.fanout(resp.SerializeToString(), [t[0] for t in targets], [t[1] for t in targets])


async def member(
    fe: native_frontend.FrontEnd, fsync_path: str | None, raw: bool, spin: bool
) -> None:
    loop = asyncio.get_running_loop()
    efd = fe.fileno()
    wake = asyncio.Event()

    def on_readable() -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(efd, 8)
        wake.set()

    loop.add_reader(efd, on_readable)
    wal = os.open(fsync_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if fsync_path else -1
    if wal >= 0:
        # Preallocated, as etcd's WAL segments are, so that fdatasync rarely has file-size
        # metadata to write. A prototype: it does not roll over past this size.
        os.posix_fallocate(wal, 0, WAL_PREALLOC_BYTES)
        os.fsync(wal)
    wal_offset = 0
    store: dict[bytes, tuple[bytes, int, int, int]] = {}
    watchers = Watchers()
    revision = 1
    pack = WAL_HEADER.pack
    batches = requests = 0
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    while not stop.is_set():
        waiter = asyncio.ensure_future(wake.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        wake.clear()
        ids, kinds, keys, values = fe.take()
        if not ids:
            continue
        batches += 1
        requests += len(ids)
        if raw:
            revision, resp_ids, out, records, events, stream_out = serve_raw(
                store, watchers, revision, ids, kinds, keys
            )
            if stream_out:
                fe.stream_send([s[0] for s in stream_out], [s[1] for s in stream_out])
            if wal >= 0 and records:
                data = b"".join(records)
                assert wal_offset + len(data) <= WAL_PREALLOC_BYTES, "prototype WAL is full"
                await sync_wal(loop, wal, data, wal_offset, spin)
                wal_offset += len(data)
            if resp_ids:
                fe.respond_raw(resp_ids, out)
            if events:
                send_events(fe, watchers, revision, events)
            continue
        put_ids: list[int] = []
        put_revs: list[int] = []
        range_ids: list[int] = []
        range_kvs: list[tuple[bytes, bytes, int, int, int, int] | None] = []
        records: list[bytes] = []
        for rid, kind, key, value in zip(ids, kinds, keys, values, strict=True):
            if kind == PUT:
                revision += 1
                old = store.get(key)
                if old is None:
                    store[key] = (value, revision, revision, 1)
                else:
                    store[key] = (value, old[1], revision, old[3] + 1)
                put_ids.append(rid)
                put_revs.append(revision)
                if wal >= 0:
                    records.append(pack(revision, len(key), len(value)) + key + value)
            else:
                kv = store.get(key)
                range_ids.append(rid)
                range_kvs.append(None if kv is None else (key, kv[0], kv[1], kv[2], kv[3], 0))
        if range_ids:
            fe.respond_range(range_ids, revision, range_kvs)
        if put_ids:
            if wal >= 0:
                data = b"".join(records)
                assert wal_offset + len(data) <= WAL_PREALLOC_BYTES, "prototype WAL is full"
                await sync_wal(loop, wal, data, wal_offset, spin)
                wal_offset += len(data)
            fe.respond_put(put_ids, put_revs)
    print(f"batches {batches} requests {requests}", file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:2379")
    p.add_argument("--threads", type=int, default=1, help="native (tokio) threads")
    p.add_argument("--mode", choices=("python", "raw", "echo"), default="python")
    p.add_argument("--fsync", metavar="FILE", help="append + fdatasync each batch of puts")
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--fsync-spin", action="store_true", help="busy-wait while fsync runs")
    args = p.parse_args()
    fe = native_frontend.FrontEnd(args.listen, threads=args.threads, mode=args.mode)
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(member(fe, args.fsync, args.mode == "raw", args.fsync_spin))


if __name__ == "__main__":
    main()
