"""``watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]``.

Theory of operation: one Watch stream on the key, range or prefix, starting at
``--rev`` (history first, then live events), with etcd's "require leader"
metadata. Each response is printed as etcdctl prints a ``clientv3.WatchResponse``
(in JSON: ``{"Header":..,"Events":..,"CompactRevision":..,"Canceled":..,
"Created":..}``); progress notifications print ``progress notify: <rev>``. With
``-- cmd args``, the command runs once per event with ``ETCD_WATCH_REVISION``,
``ETCD_WATCH_EVENT_TYPE``, ``ETCD_WATCH_KEY`` and ``ETCD_WATCH_VALUE`` set.
``ETCDCTL_WATCH_KEY`` / ``ETCDCTL_WATCH_RANGE_END`` may give the key instead
of arguments. The command runs until the server cancels the watch (for
instance a compacted ``--rev``), then exits 5 with ``watch is canceled by the
server``, or until it is interrupted. Interactive mode (``-i``) reads
``watch [options] key [range_end]`` and ``progress`` lines from stdin.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from typing import Any

from petcd.api.etcdserverpb import rpc_pb2
from petcd.api.mvccpb import kv_pb2
from petcd.client import ClientError
from petcd.ctl.command import Command, Flag, FlagKind, resolve
from petcd.ctl.context import Invocation
from petcd.ctl.errors import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    ExitError,
    FlagError,
    SilentExit,
)
from petcd.ctl.gofmt import go_json, go_quote, go_quote_bytes
from petcd.ctl.kv import argify
from petcd.ctl.printer import (
    FieldsPrinter,
    JsonPrinter,
    ProtobufPrinter,
    SimplePrinter,
    make_printer,
)

WATCH_FLAGS = [
    Flag("interactive", FlagKind.BOOL, False, "Interactive mode", "i"),
    Flag("prefix", FlagKind.BOOL, False, "Watch on a prefix if prefix is set"),
    Flag("rev", FlagKind.INT64, 0, "Revision to start watching"),
    Flag(
        "prev-kv", FlagKind.BOOL, False, "get the previous key-value pair before the event happens"
    ),
    Flag(
        "progress-notify",
        FlagKind.BOOL,
        False,
        "get periodic watch progress notification from server",
    ),
]

BAD_ARGS = "bad number of arguments"
BAD_ARGS_ENV = "bad number of arguments (found conflicting environment key)"
BAD_ARGS_SEPARATOR = "bad number of arguments (found separator --, but no commands)"

_KNOWN_CANCEL_REASONS = {
    "etcdserver: mvcc: required revision has been compacted",
    "etcdserver: mvcc: required revision is a future revision",
    "etcdserver: no leader",
    "etcdserver: permission denied",
}


def parse_watch_args(inv: Invocation, env_key: str, env_range: str) -> tuple[list[str], list[str]]:
    """etcdctl's parseWatchArgs (non-interactive): (watch args, exec args)."""
    raw = list(inv.argv)
    if "watch" in raw:
        raw = raw[raw.index("watch") + 1 :]
    has_exec = "--" in raw
    exec_idx = raw.index("--") if has_exec else -1
    if has_exec and exec_idx == len(raw) - 1:
        raise ExitError(EXIT_BAD_ARGS, BAD_ARGS_SEPARATOR)
    if not has_exec and not raw and not env_key:
        raise ExitError(EXIT_BAD_ARGS, BAD_ARGS)
    exec_args = raw[exec_idx + 1 :] if has_exec else []
    watch_args = inv.args[: len(inv.args) - len(exec_args)]
    if env_key and watch_args:
        raise ExitError(EXIT_BAD_ARGS, BAD_ARGS_ENV)
    if env_key:
        watch_args = [env_key, *([env_range] if env_range else [])]
    return watch_args, exec_args


def watch_error_text(resp: Any) -> str:
    """clientv3.WatchResponse.Err() for a canceled response."""
    if resp.compact_revision != 0:
        return "etcdserver: mvcc: required revision has been compacted"
    if resp.cancel_reason:
        if resp.cancel_reason in _KNOWN_CANCEL_REASONS:
            return str(resp.cancel_reason)
        return f"rpc error: code = FailedPrecondition desc = {resp.cancel_reason}"
    return "etcdserver: mvcc: required revision is a future revision"


def _event_type(event: Any) -> str:
    return str(kv_pb2.Event.EventType.Name(event.type))


def print_watch(inv: Invocation, printer: Any, resp: Any) -> None:
    if isinstance(printer, SimplePrinter):
        for ev in resp.events:
            inv.out(_event_type(ev) + "\n")
            if ev.HasField("prev_kv"):
                printer.kv(ev.prev_kv)
            printer.kv(ev.kv)
    elif isinstance(printer, JsonPrinter):
        # clientv3 always makes a (possibly empty) slice: "[]", never null.
        events = "[" + ",".join(go_json(ev) for ev in resp.events) + "]"
        inv.out(
            f'{{"Header":{go_json(resp.header)},"Events":{events},'
            f'"CompactRevision":{resp.compact_revision},'
            f'"Canceled":{"true" if resp.canceled else "false"},'
            f'"Created":{"true" if resp.created else "false"}}}\n'
        )
    elif isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        for ev in resp.events:
            printer.line("Type", _event_type(ev))
            if ev.HasField("prev_kv"):
                printer.kv("Prev", ev.prev_kv)
            printer.kv("", ev.kv)
    elif isinstance(printer, ProtobufPrinter):
        copy = rpc_pb2.WatchResponse(
            header=resp.header,
            events=resp.events,
            compact_revision=resp.compact_revision,
            canceled=resp.canceled,
            created=resp.created,
        )
        inv.out(copy.SerializeToString())
    else:
        printer.unsupported()
    inv.stdout.flush()


def _run_exec(inv: Invocation, exec_args: list[str], resp: Any) -> None:
    for ev in resp.events:
        env = dict(inv.environ)
        env["ETCD_WATCH_REVISION"] = str(resp.header.revision)
        env["ETCD_WATCH_EVENT_TYPE"] = go_quote(_event_type(ev))
        env["ETCD_WATCH_KEY"] = go_quote_bytes(ev.kv.key)
        env["ETCD_WATCH_VALUE"] = go_quote_bytes(ev.kv.value)
        inv.stdout.flush()
        try:
            code = subprocess.run(exec_args, env=env, check=False).returncode
            error = None if code == 0 else f"exit status {code}"
        except OSError as exc:
            error = f'exec: "{exec_args[0]}": {exc.strerror}'
        if error is not None:
            quoted = "[" + " ".join(go_quote(a) for a in exec_args) + "]"
            inv.err(f"command {quoted} error ({error})\n")
            raise SilentExit(EXIT_ERROR)


def watch_command(inv: Invocation) -> None:
    env_key = inv.environ.get("ETCDCTL_WATCH_KEY", "")
    env_range = inv.environ.get("ETCDCTL_WATCH_RANGE_END", "")
    if not env_key and env_range:
        raise ExitError(
            EXIT_BAD_ARGS,
            f"ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={go_quote(env_range)}",
        )
    if inv.values["interactive"]:
        interactive_watch(inv, env_key, env_range)
        return
    watch_args, exec_args = parse_watch_args(inv, env_key, env_range)
    # ETCDCTL_WATCH_* are the watch command's own variables, not unknown ones.
    inv.environ = {
        k: v
        for k, v in inv.environ.items()
        if k not in ("ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END")
    }
    client = inv.client()
    if not watch_args:
        raise ExitError(EXIT_BAD_ARGS, BAD_ARGS)
    key = os.fsencode(watch_args[0])
    range_end = b""
    if len(watch_args) == 2:
        if inv.values["prefix"]:
            raise ExitError(EXIT_BAD_ARGS, "`range_end` and `--prefix` are mutually exclusive")
        range_end = os.fsencode(watch_args[1])
    printer = make_printer(inv)
    try:
        for resp in client.watch(
            key,
            range_end,
            prefix=bool(inv.values["prefix"]),
            start_revision=int(inv.values["rev"]),
            prev_kv=bool(inv.values["prev-kv"]),
            progress_notify=bool(inv.values["progress-notify"]),
        ):
            if resp.canceled:
                inv.err(f"watch was canceled ({watch_error_text(resp)})\n")
            progress = not resp.events and not resp.canceled and not resp.created
            if progress and resp.compact_revision == 0 and resp.header.revision != 0:
                inv.out(f"progress notify: {resp.header.revision}\n")
            print_watch(inv, printer, resp)
            if exec_args:
                _run_exec(inv, exec_args, resp)
    except ClientError as exc:
        inv.err(f"watch was canceled ({exc})\n")
    raise ExitError(EXIT_INTERRUPTED, "watch is canceled by the server")


def interactive_watch(inv: Invocation, env_key: str, env_range: str) -> None:
    """``watch -i``: read ``watch ...`` and ``progress`` lines from stdin.

    Each ``watch`` line starts a watcher (its own stream, printed from its own
    thread); ``progress`` asks every stream for a progress notification. As in
    etcdctl, the end of stdin ends the command (exit 3).
    """
    inv.environ = {
        k: v
        for k, v in inv.environ.items()
        if k not in ("ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END")
    }
    client = inv.client()
    printer = make_printer(inv)
    out_lock = threading.Lock()
    controls: list[queue.Queue[Any]] = []
    progress_notify = bool(inv.values["progress-notify"])

    def run_watcher(args: list[str], values: dict[str, Any], control: queue.Queue[Any]) -> None:
        key = os.fsencode(args[0])
        range_end = os.fsencode(args[1]) if len(args) == 2 else b""
        try:
            for resp in client.watch(
                key,
                range_end,
                control=control,
                prefix=bool(values["prefix"]),
                start_revision=int(values["rev"]),
                prev_kv=bool(values["prev-kv"]),
                progress_notify=progress_notify,
            ):
                with out_lock:
                    if resp.canceled:
                        inv.err(f"watch was canceled ({watch_error_text(resp)})\n")
                    progress = not resp.events and not resp.canceled and not resp.created
                    if progress and resp.compact_revision == 0 and resp.header.revision != 0:
                        inv.out(f"progress notify: {resp.header.revision}\n")
                    print_watch(inv, printer, resp)
        except (ClientError, ValueError):
            return

    while True:
        raw = inv.stdin.readline()
        if not raw.endswith(b"\n"):
            raise ExitError(EXIT_INVALID_INPUT, "error reading watch request line: EOF")
        line = os.fsdecode(raw[:-1])
        args = argify(line)
        if not args:
            inv.err(f"Invalid command: {line} (watch and progress supported)\n")
            continue
        if args[0] == "progress":
            for each in controls:
                each.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
            continue
        if args[0] != "watch":
            inv.err(f"Invalid command {line} (only support watch)\n")
            continue
        if len(args) < 2 and not env_key:
            inv.err(f"Invalid command {line} (command type or key is not provided)\n")
            continue
        words = args[1:]
        if "--" in words:
            words = words[: words.index("--")]
        root = Command("", "")
        root.add(Command("watch", "", run=lambda _: None, flags=WATCH_FLAGS))
        try:
            parsed = resolve(root, ["watch", *words])
        except FlagError as exc:
            raise ExitError(EXIT_BAD_ARGS, exc.message) from None
        watch_args = parsed.args
        if env_key:
            watch_args = [env_key, *([env_range] if env_range else []), *watch_args]
        if not watch_args:
            inv.err(f"Invalid command {line} ({BAD_ARGS})\n")
            continue
        if len(watch_args) == 2 and parsed.values["prefix"]:
            inv.err(f"Invalid command {line} (`range_end` and `--prefix` are mutually exclusive)\n")
            continue
        control: queue.Queue[Any] = queue.Queue()
        controls.append(control)
        threading.Thread(
            target=run_watcher, args=(watch_args[:2], parsed.values, control), daemon=True
        ).start()


def commands() -> list[Command]:
    return [
        Command(
            "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
            "Watches events stream on keys or prefixes",
            run=watch_command,
            flags=WATCH_FLAGS,
        )
    ]
