"""``lock <lockname> [exec-command arg1 arg2 ...]``: etcd's client-side mutex.

Theory of operation: the same recipe as etcd's Go client (``concurrency``):
a session is a lease (``--ttl``, default 10 s) kept alive in the background;
to lock ``name``, put the key ``name/<lease id in hex>`` (only if it does not
exist) and read the oldest key under ``name/`` in the same transaction; the
holder is the key with the lowest create revision. A waiter watches, one at a
time, the newest key created before its own until it is deleted, so that
waiters are served in order without a thundering herd. Holding the lock, the
command either runs ``exec-command`` (with ``ETCD_LOCK_KEY`` and
``ETCD_LOCK_REV`` set) and then unlocks, exiting with the command's status, or
prints the lock key and holds it until SIGINT/SIGTERM, then unlocks. If the
session's lease is lost, the lock is lost: ``session expired``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import Client, ClientError
from petcd.client import requests as rq
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_BAD_ARGS, EXIT_ERROR, ExitError, SilentExit
from petcd.ctl.printer import make_printer

_CREATE, _DESCEND, _ASCEND = 2, 2, 1


class Session:
    """A lease kept alive by a background thread until closed or lost."""

    def __init__(self, client: Client, ttl_s: int) -> None:
        self.client = client
        self.lease_id = int(client.lease_grant(ttl_s).ID)
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, daemon=True)
        self._thread.start()

    def _keep_alive(self) -> None:
        try:
            for _ in self.client.lease_keep_alive(self.lease_id):
                pass
        except ClientError:
            pass
        self.lost.set()

    def close(self) -> None:
        with suppress(ClientError):
            self.client.lease_revoke(self.lease_id)


def _owner_op(prefix: bytes) -> Any:
    # clientv3.WithFirstCreate: the oldest key under the prefix.
    return rpc_pb2.RequestOp(
        request_range=rq.range_request(
            prefix, prefix=True, sort_target=_CREATE, sort_order=_ASCEND, limit=1
        )
    )


def acquire(client: Client, session: Session, name: str) -> tuple[bytes, Any]:
    """Lock ``name``; return (my key, header of the acquiring response)."""
    prefix = os.fsencode(name) + b"/"
    my_key = prefix + f"{session.lease_id:x}".encode()
    cmp = rpc_pb2.Compare(
        key=my_key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL, create_revision=0
    )
    put = rpc_pb2.RequestOp(request_put=rq.put_request(my_key, b"", lease=session.lease_id))
    get = rpc_pb2.RequestOp(request_range=rq.range_request(my_key))
    resp = client.txn([cmp], [put, _owner_op(prefix)], [get, _owner_op(prefix)], timeout_s=3600.0)
    my_rev = resp.header.revision
    if not resp.succeeded:
        my_rev = resp.responses[0].response_range.kvs[0].create_revision
    owner = resp.responses[1].response_range.kvs
    if not owner or owner[0].create_revision == my_rev:
        return my_key, resp.header
    _wait_deletes(client, prefix, my_rev - 1)
    got = client.get(my_key, timeout_s=3600.0)
    if not got.kvs:
        raise ExitError(EXIT_ERROR, "mutex: session is expired")
    return my_key, got.header


def _wait_deletes(client: Client, prefix: bytes, max_create_rev: int) -> None:
    while True:
        older = client.get(
            prefix,
            prefix=True,
            max_create_revision=max_create_rev,
            sort_target=_CREATE,
            sort_order=_DESCEND,
            limit=1,
            timeout_s=3600.0,
        )
        if not older.kvs:
            return
        key = older.kvs[0].key
        for resp in client.watch(key, start_revision=older.header.revision + 1):
            if any(ev.type == 1 for ev in resp.events):
                break


@contextmanager
def _signals_to_event(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` instead of killing the process (to unlock first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def lock_command(inv: Invocation) -> None:
    if not inv.args:
        raise ExitError(
            EXIT_BAD_ARGS, "lock takes a lock name argument and an optional command to execute"
        )
    client = inv.client()
    stop = threading.Event()
    with _signals_to_event(stop):
        try:
            session = Session(client, int(inv.values["ttl"]))
        except ClientError as exc:
            raise ExitError(EXIT_ERROR, str(exc)) from None
        try:
            my_key, header = acquire(client, session, inv.args[0])
            exec_args = inv.args[1:]
            if exec_args:
                env = {
                    "ETCD_LOCK_KEY": os.fsdecode(my_key),
                    "ETCD_LOCK_REV": str(header.revision),
                    **inv.environ,
                }
                inv.stdout.flush()
                code = subprocess.run(exec_args, env=env, check=False).returncode
                client.delete(my_key)
                if code != 0:
                    raise ExitError(code if code > 0 else EXIT_ERROR, f"exit status {code}")
                return
            got = client.get(my_key)
            if not got.kvs:
                raise ExitError(EXIT_ERROR, "lock lost on init")
            make_printer(inv).get(got)
            inv.stdout.flush()
            while not stop.wait(0.2):
                if session.lost.is_set():
                    raise ExitError(EXIT_ERROR, "session expired")
            client.delete(my_key)
        except ClientError as exc:
            raise ExitError(EXIT_ERROR, str(exc)) from None
        finally:
            session.close()
    raise SilentExit(0)


def commands() -> list[Command]:
    return [
        Command(
            "lock <lockname> [exec-command arg1 arg2 ...]",
            "Acquires a named lock",
            run=lock_command,
            flags=[Flag("ttl", FlagKind.INT64, 10, "timeout for session")],
        )
    ]
