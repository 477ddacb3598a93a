"""``make-mirror [options] <destination>``: copy a key range to another cluster and follow it.

Theory of operation: etcd's mirror recipe. First the base: every key under
``--prefix`` as of one revision, read in pages of 1000 keys, is put into the
destination (under ``--dest-prefix``, the same prefix by default, or the root
with ``--no-dest-prefix``). Then the updates: a watch from that revision + 1
replays every later change; the events of one source revision are applied to
the destination in one transaction, so the destination never shows half a
source transaction. A running count of copied keys and events is printed every
30 seconds. The command runs until interrupted, or until the source compacts
past the watch (``etcdserver: mvcc: required revision has been compacted``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import ClientError, TLSConfig
from petcd.client import requests as rq
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import ClientConfig, Invocation
from petcd.ctl.errors import EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR, ExitError

BATCH_KEYS = 1000
COUNT_INTERVAL_S = 30.0


def _dest_config(inv: Invocation) -> ClientConfig:
    v = inv.values
    tls = None
    if v["dest-cert"] or v["dest-key"] or v["dest-cacert"]:
        tls = TLSConfig(
            ca_file=v["dest-cacert"] or None,
            cert_file=v["dest-cert"] or None,
            key_file=v["dest-key"] or None,
        )
    user, password = str(v["dest-user"]), str(v["dest-password"])
    if user and not password:
        name, colon, inline = user.partition(":")
        if colon:
            user, password = name, inline
        else:
            inv.out("Destination Password: ")
            inv.stdout.flush()
            password = os.fsdecode(inv.stdin.readline()).rstrip("\r\n")
    return ClientConfig(
        endpoints=(inv.args[0],),
        dial_timeout_s=float(v["dial-timeout"]),
        command_timeout_s=float(v["command-timeout"]),
        keepalive_time_s=float(v["keepalive-time"]),
        keepalive_timeout_s=float(v["keepalive-timeout"]),
        insecure_transport=bool(v["dest-insecure-transport"]),
        tls=tls,
        user=user,
        password=password,
    )


def make_mirror_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "make-mirror takes one destination argument")
    prefix = os.fsencode(str(inv.values["prefix"]))
    dest_prefix = os.fsencode(str(inv.values["dest-prefix"]))
    dest_config = _dest_config(inv)
    dest = inv.client_factory(dest_config)
    if dest_config.user:
        try:
            dest.authenticate()
        except ClientError as exc:
            raise ExitError(EXIT_BAD_CONNECTION, str(exc)) from None
    source = inv.client()
    if inv.values["no-dest-prefix"] and dest_prefix:
        raise ExitError(
            EXIT_BAD_ARGS,
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
        )
    if not inv.values["no-dest-prefix"] and not dest_prefix:
        dest_prefix = prefix

    def rename(key: bytes) -> bytes:
        return dest_prefix + key[len(prefix) :]

    total = 0
    lock = threading.Lock()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(COUNT_INTERVAL_S):
            with lock:
                inv.out(f"{total}\n")
            inv.stdout.flush()

    threading.Thread(target=report, daemon=True).start()
    try:
        # the base, as of one revision, a page at a time
        range_end = rq.prefix_range_end(prefix) if prefix else b"\x00"
        key = prefix or b"\x00"
        first = source.get(key, range_end, limit=1, keys_only=True)
        revision = int(first.header.revision)
        while True:
            page = source.get(key, range_end, revision=revision, limit=BATCH_KEYS)
            for kv in page.kvs:
                dest.put(rename(kv.key), kv.value)
                with lock:
                    total += 1
            if not page.more:
                break
            key = page.kvs[-1].key + b"\x00"
        # then every change after it, one source revision per destination txn
        for resp in source.watch(prefix or b"\x00", range_end, start_revision=revision + 1):
            if resp.compact_revision:
                raise ExitError(
                    EXIT_ERROR, "etcdserver: mvcc: required revision has been compacted"
                )
            ops: list[Any] = []
            last_rev = 0
            for ev in resp.events:
                if last_rev and ev.kv.mod_revision > last_rev:
                    dest.txn((), ops, ())
                    ops = []
                last_rev = ev.kv.mod_revision
                if ev.type == 0:
                    op = rpc_pb2.RequestOp(
                        request_put=rq.put_request(rename(ev.kv.key), ev.kv.value)
                    )
                else:
                    op = rpc_pb2.RequestOp(
                        request_delete_range=rq.delete_request(rename(ev.kv.key))
                    )
                ops.append(op)
                with lock:
                    total += 1
            if ops:
                dest.txn((), ops, ())
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    finally:
        stop.set()
        dest.close()
    raise ExitError(EXIT_ERROR, "watch is canceled by the server")


def commands() -> list[Command]:
    s, b = FlagKind.STRING, FlagKind.BOOL
    return [
        Command(
            "make-mirror [options] <destination>",
            "Makes a mirror at the destination etcd cluster",
            run=make_mirror_command,
            flags=[
                Flag("prefix", s, "", "Key-value prefix to mirror"),
                Flag(
                    "dest-prefix",
                    s,
                    "",
                    "destination prefix to mirror a prefix to a different prefix in the "
                    "destination cluster",
                ),
                Flag(
                    "no-dest-prefix",
                    b,
                    False,
                    "mirror key-values to the root of the destination cluster",
                ),
                Flag(
                    "dest-cert",
                    s,
                    "",
                    "Identify secure client using this TLS certificate file for the destination "
                    "cluster",
                ),
                Flag("dest-key", s, "", "Identify secure client using this TLS key file"),
                Flag(
                    "dest-cacert",
                    s,
                    "",
                    "Verify certificates of TLS enabled secure servers using this CA bundle",
                ),
                Flag(
                    "dest-insecure-transport",
                    b,
                    True,
                    "Disable transport security for client connections",
                ),
                Flag(
                    "dest-user",
                    s,
                    "",
                    "Destination username[:password] for authentication (prompt if password is "
                    "not supplied)",
                ),
                Flag(
                    "dest-password",
                    s,
                    "",
                    "Destination password for authentication (if this option is used, --user "
                    "option shouldn't include password)",
                ),
            ],
        )
    ]
