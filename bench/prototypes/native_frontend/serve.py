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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import native_frontend

from petcd.api.etcdserverpb import rpc_pb2

PUT = 1


WAL_PREALLOC_BYTES = 1 << 30
WAL_HEADER = struct.Struct(">QII")  # revision, key length, value length


def write_and_sync(fd: int, data: bytes, offset: int) -> None:
    os.pwrite(fd, data, offset)
    os.fdatasync(fd)


def serve_raw(
    store: dict[bytes, tuple[bytes, int, int, int]],
    revision: int,
    ids: list[int],
    kinds: list[int],
    messages: list[bytes],
) -> tuple[int, list[bytes], list[bytes]]:
    """Mode "raw": decode and encode with the generated protobuf classes.

    Returns the new revision, the encoded responses and the WAL records of the Puts.
    """
    out: list[bytes] = []
    records: list[bytes] = []
    for kind, msg in zip(kinds, messages, strict=True):
        if kind == PUT:
            req = rpc_pb2.PutRequest.FromString(msg)
            revision += 1
            old = store.get(req.key)
            if old is None:
                store[req.key] = (req.value, revision, revision, 1)
            else:
                store[req.key] = (req.value, old[1], revision, old[3] + 1)
            records.append(WAL_HEADER.pack(revision, len(msg), 0) + msg)
            resp = rpc_pb2.PutResponse()
            h = resp.header
            h.cluster_id, h.member_id, h.revision, h.raft_term = 1, 1, revision, 1
            out.append(resp.SerializeToString())
        else:
            rreq = rpc_pb2.RangeRequest.FromString(msg)
            rresp = rpc_pb2.RangeResponse()
            h = rresp.header
            h.cluster_id, h.member_id, h.revision, h.raft_term = 1, 1, revision, 1
            kv = store.get(rreq.key)
            if kv is not None:
                rresp.kvs.add(
                    key=rreq.key,
                    value=kv[0],
                    create_revision=kv[1],
                    mod_revision=kv[2],
                    version=kv[3],
                )
                rresp.count = 1
            out.append(rresp.SerializeToString())
    return revision, out, records


async def member(fe: native_frontend.FrontEnd, fsync_path: str | None, raw: bool) -> None:
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
            revision, out, records = serve_raw(store, revision, ids, kinds, keys)
            if wal >= 0 and records:
                data = b"".join(records)
                assert wal_offset + len(data) <= WAL_PREALLOC_BYTES, "prototype WAL is full"
                await loop.run_in_executor(None, write_and_sync, wal, data, wal_offset)
                wal_offset += len(data)
            fe.respond_raw(ids, out)
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
                await loop.run_in_executor(None, write_and_sync, wal, data, wal_offset)
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
    args = p.parse_args()
    fe = native_frontend.FrontEnd(args.listen, threads=args.threads, mode=args.mode)
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(member(fe, args.fsync, args.mode == "raw"))


if __name__ == "__main__":
    main()
