"""``elect <election-name> [proposal]``: etcd's client-side leader election.

Theory of operation: the recipe of etcd's Go client (``concurrency.Election``).
A campaigner puts ``<name>/<lease id in hex>`` = proposal under its session
lease (re-proclaiming if the key already exists with another value) and waits,
like a lock waiter, until every key created before its own is gone; then it is
the leader, prints its key and value, and holds leadership until SIGINT or
SIGTERM (then resigns: deletes its key if it is still the one it created) or
until its session is lost (``elect: session expired``). An observer (``-l``)
prints the current leader's key and value, then every new proclamation, and
follows leadership as leaders resign, until interrupted.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.client import Client, ClientError
from petcd.client import requests as rq
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_BAD_ARGS, EXIT_ERROR, ExitError, SilentExit
from petcd.ctl.lock import Session, _signals_to_event, _wait_deletes
from petcd.ctl.printer import make_printer

_CREATE, _ASCEND = 2, 1


def campaign(client: Client, session: Session, name: str, proposal: bytes) -> tuple[bytes, int]:
    """Become leader of ``name``; return (my key, its create revision)."""
    prefix = os.fsencode(name) + b"/"
    key = prefix + f"{session.lease_id:x}".encode()
    cmp = rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL, create_revision=0
    )
    put = rpc_pb2.RequestOp(request_put=rq.put_request(key, proposal, lease=session.lease_id))
    get = rpc_pb2.RequestOp(request_range=rq.range_request(key))
    resp = client.txn([cmp], [put], [get], timeout_s=3600.0)
    rev = resp.header.revision
    if not resp.succeeded:
        kv = resp.responses[0].response_range.kvs[0]
        rev = kv.create_revision
        if kv.value != proposal:
            client.put(key, proposal, lease=session.lease_id)
    _wait_deletes(client, prefix, rev - 1)
    return key, rev


def resign(client: Client, key: bytes, rev: int) -> None:
    cmp = rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL, create_revision=rev
    )
    delete = rpc_pb2.RequestOp(request_delete_range=rq.delete_request(key))
    client.txn([cmp], [delete], [])


def _leader_response(header: Any, kv: Any) -> Any:
    return rpc_pb2.RangeResponse(header=header, kvs=[kv])


def observe(inv: Invocation, client: Client, name: str, stop: threading.Event) -> None:
    prefix = os.fsencode(name) + b"/"
    printer = make_printer(inv)

    def show(resp: Any) -> None:
        printer.get(resp)
        inv.stdout.flush()

    while not stop.is_set():
        first = client.get(prefix, prefix=True, sort_target=_CREATE, sort_order=_ASCEND, limit=1)
        if first.kvs:
            header, kv = first.header, first.kvs[0]
        else:
            header, kv = None, None
            for wr in client.watch(prefix, prefix=True, start_revision=first.header.revision):
                puts = [ev for ev in wr.events if ev.type == kv_pb2.Event.PUT]
                if puts:
                    header, kv = wr.header, puts[0].kv
                    header.revision = kv.mod_revision
                    break
            if kv is None:
                return
        show(_leader_response(header, kv))
        for wr in client.watch(kv.key, start_revision=header.revision + 1):
            deleted = False
            for ev in wr.events:
                if ev.type == kv_pb2.Event.DELETE:
                    deleted = True
                    break
                show(_leader_response(wr.header, ev.kv))
            if deleted:
                break


def elect_command(inv: Invocation) -> None:
    if len(inv.args) not in (1, 2):
        raise ExitError(
            EXIT_BAD_ARGS,
            "elect takes one election name argument and an optional proposal argument",
        )
    listen = bool(inv.values["listen"])
    if len(inv.args) == 1 and not listen:
        raise ExitError(EXIT_BAD_ARGS, "no proposal argument but -l not set")
    if len(inv.args) == 2 and listen:
        raise ExitError(EXIT_BAD_ARGS, "proposal given but -l is set")
    client = inv.client()
    stop = threading.Event()
    with _signals_to_event(stop):
        try:
            if listen:

                def run_observer() -> None:
                    # Closing the client on exit ends this thread with an
                    # error; only a failure while still running matters.
                    try:
                        observe(inv, client, inv.args[0], stop)
                    except Exception:
                        if not stop.is_set():
                            raise

                watcher = threading.Thread(target=run_observer, daemon=True)
                watcher.start()
                while not stop.wait(0.2):
                    if not watcher.is_alive():
                        raise ExitError(EXIT_ERROR, "elect: observer lost")
                raise SilentExit(0)
            session = Session(client, 60)
            try:
                key, rev = campaign(client, session, inv.args[0], os.fsencode(inv.args[1]))
                got = client.get(key)
                if not got.kvs:
                    raise ExitError(EXIT_ERROR, "elect: session expired")
                make_printer(inv).get(got)
                inv.stdout.flush()
                while not stop.wait(0.2):
                    if session.lost.is_set():
                        raise ExitError(EXIT_ERROR, "elect: session expired")
                resign(client, key, rev)
            finally:
                session.close()
        except ClientError as exc:
            raise ExitError(EXIT_ERROR, str(exc)) from None


def commands() -> list[Command]:
    return [
        Command(
            "elect <election-name> [proposal]",
            "Observes and participates in leader election",
            run=elect_command,
            flags=[Flag("listen", FlagKind.BOOL, False, "observation mode", "l")],
        )
    ]
