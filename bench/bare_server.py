"""The bare transport: the floor under any petcd built on grpcio.

Theory of operation. This is a gRPC server on the same stack petcd serves with (grpcio's
``grpc.aio`` and the generated stubs in ``petcd.api.etcdserverpb``) whose KV handlers do no
work at all: Put, Range and Txn return an empty response at once. Whatever rate it reaches
under a given load is an upper bound for petcd on the same transport, since petcd does the
same decoding, dispatch and encoding plus the real work. bench/run.py measures it beside
real etcd and petcd in the same run.

Options:

* ``--procs N`` starts N server processes bound to the same port with SO_REUSEPORT (grpc
  option ``grpc.so_reuseport``); the kernel spreads connections over them. The parent
  re-executes this file once per child (no fork after grpc is loaded), prints ``ready``
  once every child has bound, and stops the children by pid when it gets SIGTERM/SIGINT.
* ``--uvloop`` runs the asyncio loop on uvloop.
* ``--sync N`` serves with grpcio's synchronous server and a pool of N threads instead of
  ``grpc.aio`` (for comparison; petcd uses grpc.aio).
* ``--transport native`` serves with petcd's native front end (``petcd._frontend``, Rust)
  instead of grpcio: one take/send loop on asyncio, as ``petcd.grpc.native`` drives it,
  decoding and encoding with the same generated classes. It is the bare transport of the
  native stack. ``--threads N`` sets the front end's runtime threads (default 1).
* ``--codec raw`` skips protobuf: requests are taken as bytes and the empty response is
  sent as zero bytes (an empty message is zero bytes on the wire). The difference between
  ``pb`` and ``raw`` is what protobuf decoding costs on this path.

It serves only what bench/loadgen needs (KV Put, Range, Txn); anything else is
UNIMPLEMENTED. It keeps no state and must never be mistaken for a server: it answers every
write with success without storing anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

_KV_SERVICE = "etcdserverpb.KV"


def _identity(data: bytes) -> bytes:
    return data


async def _raw_empty(_request: bytes, _context: Any) -> bytes:
    return b""


def _raw_handlers(sync: bool = False) -> Any:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _sync_raw_empty if sync else _raw_empty,
            request_deserializer=_identity,
            response_serializer=_identity,
        )
        for name in ("Put", "Range", "Txn")
    }
    return grpc.method_handlers_generic_handler(_KV_SERVICE, handlers)


def _sync_raw_empty(_request: bytes, _context: Any) -> bytes:
    return b""


def _add_pb_servicer(server: Any, sync: bool = False) -> None:
    from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    put_response = rpc_pb2.PutResponse
    range_response = rpc_pb2.RangeResponse
    txn_response = rpc_pb2.TxnResponse

    class BareKV(rpc_pb2_grpc.KVServicer):
        async def Put(self, request: Any, context: Any) -> Any:
            return put_response()

        async def Range(self, request: Any, context: Any) -> Any:
            return range_response()

        async def Txn(self, request: Any, context: Any) -> Any:
            return txn_response()

    class SyncBareKV(rpc_pb2_grpc.KVServicer):
        def Put(self, request: Any, context: Any) -> Any:
            return put_response()

        def Range(self, request: Any, context: Any) -> Any:
            return range_response()

        def Txn(self, request: Any, context: Any) -> Any:
            return txn_response()

    servicer = SyncBareKV() if sync else BareKV()
    rpc_pb2_grpc.add_KVServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


async def serve(listen: str, codec: str, reuse_port: bool, ready: Callable[[], None]) -> None:
    """Serve until cancelled; call ``ready`` once the port is bound."""
    options = [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", 8 << 20),
        ("grpc.max_concurrent_streams", 2**31 - 1),
    ]
    server = grpc.aio.server(options=options)
    if codec == "raw":
        server.add_generic_rpc_handlers((_raw_handlers(),))
    else:
        _add_pb_servicer(server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise SystemExit(f"bare_server: cannot bind {listen}")
    await server.start()
    ready()
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(grace=None)


def _serve_sync(args: argparse.Namespace) -> None:
    """grpcio's synchronous server: a thread pool, handlers run under the GIL."""
    from concurrent.futures import ThreadPoolExecutor

    options = [
        ("grpc.so_reuseport", 1 if args.procs > 1 else 0),
        ("grpc.max_receive_message_length", 8 << 20),
    ]
    server = grpc.server(ThreadPoolExecutor(max_workers=args.sync), options=options)
    if args.codec == "raw":
        server.add_generic_rpc_handlers((_raw_handlers(sync=True),))
    else:
        _add_pb_servicer(server, sync=True)
    if server.add_insecure_port(args.listen) == 0:
        raise SystemExit(f"bare_server: cannot bind {args.listen}")
    server.start()
    signal.signal(signal.SIGTERM, lambda _s, _f: server.stop(None))
    print("ready", flush=True)
    server.wait_for_termination()


def _serve_native(args: argparse.Namespace) -> None:
    """The native front end: take every queued event on the eventfd's wake-up, answer the
    batch's requests in one send()."""
    from petcd._frontend import Frontend

    if args.uvloop:
        import uvloop

        uvloop.install()
    handlers: dict[str, tuple[Callable[[bytes], Any], Callable[[], bytes]]] = {}
    for name in ("Put", "Range", "Txn"):
        if args.codec == "raw":
            handlers[f"/{_KV_SERVICE}/{name}"] = (_identity, bytes)
        else:
            from petcd.api.etcdserverpb import rpc_pb2

            req = getattr(rpc_pb2, f"{name}Request").FromString
            resp: Any = getattr(rpc_pb2, f"{name}Response")

            def encode(r: Any = resp) -> bytes:
                return bytes(r().SerializeToString())

            handlers[f"/{_KV_SERVICE}/{name}"] = (req, encode)
    host, _, port = args.listen.rpartition(":")
    fe = Frontend(
        [(host.strip("[]"), int(port))],
        max_recv_bytes=8 << 20,
        max_send_bytes=2**31 - 1,
        keepalive_min_time_ms=5000,
        keepalive_interval_ms=2 * 3600 * 1000,
        keepalive_timeout_ms=20000,
        threads=args.threads,
    )
    methods: dict[int, str] = {}

    def on_events() -> None:
        out: list[Any] = []
        events: list[Any] = fe.take()
        for ev in events:
            kind, call_id = ev[0], ev[1]
            if kind == 0:
                if ev[2] in handlers:
                    methods[call_id] = ev[2]
                else:
                    out.append((call_id, None, 12, f"unknown method {ev[2]}"))
            elif kind == 1:
                handler = handlers.get(methods.pop(call_id, ""))
                if handler is not None:
                    handler[0](ev[2])
                    out.append((call_id, handler[1](), 0, ""))
            elif kind == 3:
                methods.pop(call_id, None)
        if out:
            fe.send(out)

    loop = asyncio.new_event_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    fe.start()
    loop.add_reader(fe.fileno(), on_events)
    print("ready", flush=True)
    try:
        loop.run_until_complete(stopped.wait())
    finally:
        loop.remove_reader(fe.fileno())
        fe.close()
        loop.close()


def _run_child(args: argparse.Namespace) -> None:
    if args.transport == "native":
        _serve_native(args)
        return
    if args.sync:
        _serve_sync(args)
        return
    if args.uvloop:
        import uvloop

        uvloop.install()

    def ready() -> None:
        print("ready", flush=True)

    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(args.listen, args.codec, args.procs > 1, ready))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()


def _run_parent(args: argparse.Namespace, argv: Sequence[str]) -> int:
    children: list[subprocess.Popen[str]] = []
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for _ in range(args.procs):
            child = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child", *argv],
                stdout=subprocess.PIPE,
                text=True,
            )
            children.append(child)
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                print(f"bare_server: child {child.pid} failed to start", file=sys.stderr)
                return 1
        print("ready", flush=True)
        while not stop:
            for child in children:
                if child.poll() is not None:
                    print(f"bare_server: child {child.pid} exited", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:2379", help="host:port to serve on")
    parser.add_argument("--procs", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--uvloop", action="store_true", help="run asyncio on uvloop")
    parser.add_argument("--codec", choices=("pb", "raw"), default="pb")
    parser.add_argument("--sync", type=int, default=0, metavar="THREADS", help="sync server")
    parser.add_argument("--transport", choices=("grpcio", "native"), default="grpcio")
    parser.add_argument("--threads", type=int, default=1, help="--transport native: threads")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.procs < 1:
        parser.error("--procs must be >= 1")
    if args.transport == "native" and (args.procs > 1 or args.sync):
        parser.error("--transport native serves in one process, without --sync")
    if args.child or args.procs == 1:
        _run_child(args)
        return 0
    return _run_parent(args, [a for a in argv if a != "--child"])


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    sys.exit(main())
