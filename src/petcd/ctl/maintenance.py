"""``alarm list|disarm``, ``defrag``, ``move-leader`` and ``snapshot save``.

Theory of operation: thin commands over the Maintenance service, printed the
way etcdctl 3.5 prints them. ``alarm`` prints each alarm as gogoproto's compact
text (``memberID:<id> alarm:NOSPACE `` with its trailing space); ``defrag``
reports per endpoint and exits 1 if any failed; ``move-leader`` first finds
which endpoint is the leader (``Status``), then asks it to transfer;
``snapshot save`` streams one member's snapshot (etcd's bbolt format, with its
SHA-256 trailer, as the member sends it) into ``<file>.part``, fsyncs
it and renames it into place, so a partial download never has the final name.
``snapshot status|restore`` are deprecated in etcdctl 3.5, which runs
etcdutl's code for them after a deprecation line; petcdctl runs petcdutl's
(``petcd.utl.main``) the same way; ``defrag --data-dir`` likewise runs
petcdutl's offline defragmentation.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from petcd.client import ClientError
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation, zap_line
from petcd.ctl.endpoint import endpoints_from_cluster
from petcd.ctl.errors import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    ExitError,
    SilentExit,
)
from petcd.ctl.gofmt import go_json, go_quote, humanize_bytes
from petcd.ctl.printer import (
    FieldsPrinter,
    JsonPrinter,
    ProtobufPrinter,
    SimplePrinter,
    make_printer,
    print_response,
)

_ALARM_TYPES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}


def print_alarms(inv: Invocation, resp: Any) -> None:
    printer = make_printer(inv)
    if isinstance(printer, SimplePrinter):
        for alarm in resp.alarms:
            text = ""
            if alarm.memberID:
                text += f"memberID:{alarm.memberID} "
            if alarm.alarm:
                text += f"alarm:{_ALARM_TYPES.get(alarm.alarm, str(alarm.alarm))} "
            inv.out(text + "\n")
    elif isinstance(printer, JsonPrinter):
        inv.out(go_json(resp) + "\n")
    elif isinstance(printer, FieldsPrinter):
        if not resp.HasField("header"):
            # etcdctl dereferences the missing header and crashes.
            inv.err("panic: runtime error: invalid memory address or nil pointer dereference\n")
            raise SilentExit(2)
        printer.hdr(resp)
        for alarm in resp.alarms:
            printer.line("MemberID", alarm.memberID)
            printer.line("AlarmType", _ALARM_TYPES.get(alarm.alarm, str(alarm.alarm)))
            inv.out("\n")
    elif isinstance(printer, ProtobufPrinter):
        inv.out(resp.SerializeToString())
    else:
        printer.unsupported()


def alarm_list_command(inv: Invocation) -> None:
    if inv.args:
        raise ExitError(EXIT_BAD_ARGS, "alarm list command accepts no arguments")
    client = inv.client()
    try:
        resp = client.alarm_list()
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    print_alarms(inv, resp)


def alarm_disarm_command(inv: Invocation) -> None:
    if inv.args:
        raise ExitError(EXIT_BAD_ARGS, "alarm disarm command accepts no arguments")
    client = inv.client()
    try:
        resp = client.alarm_disarm()
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    print_alarms(inv, resp)


def defrag_command(inv: Invocation) -> None:
    if inv.values["data-dir"]:
        # etcdctl 3.5 warns and runs etcdutl's DefragData; petcdctl runs petcdutl's.
        from petcd.utl import defrag as utl_defrag
        from petcd.utl.errors import UtlError

        inv.err(
            "Use `etcdutl defrag` instead. The --data-dir is going to be decomissioned in v3.6.\n\n"
        )
        try:
            utl_defrag.defrag_data_dir(str(inv.values["data-dir"]))
        except (UtlError, OSError) as exc:
            raise ExitError(EXIT_ERROR, str(exc)) from None
        return
    client = inv.client()
    failures = 0
    for ep in endpoints_from_cluster(inv):
        try:
            client.defragment(ep)
        except ClientError as exc:
            inv.err(f"Failed to defragment etcd member[{ep}] ({exc})\n")
            failures += 1
        else:
            inv.out(f"Finished defragmenting etcd member[{ep}]\n")
    if failures:
        raise SilentExit(EXIT_ERROR)


def move_leader_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "move-leader command needs 1 argument")
    text = inv.args[0]
    if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ExitError(
            EXIT_BAD_ARGS, f"strconv.ParseUint: parsing {go_quote(text)}: invalid syntax"
        )
    if int(text, 16) >= 2**64:
        raise ExitError(
            EXIT_BAD_ARGS, f"strconv.ParseUint: parsing {go_quote(text)}: value out of range"
        )
    target = int(text, 16)
    client = inv.client()
    leader_ep = None
    leader_id = 0
    for ep in inv.endpoints():
        try:
            status = client.status(ep)
        except ClientError as exc:
            raise ExitError(EXIT_ERROR, str(exc)) from None
        if status.header.member_id == status.leader:
            leader_ep, leader_id = ep, status.leader
            break
    if leader_ep is None:
        eps = " ".join(inv.endpoints())
        raise ExitError(EXIT_BAD_ARGS, f"no leader endpoint given at [{eps}]")
    try:
        resp = client.move_leader(target, leader_ep)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    print_response(
        inv,
        resp,
        lambda: inv.out(f"Leadership transferred from {leader_id:x} to {target:x}\n"),
        fields=False,
    )


def snapshot_save_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "snapshot save expects one argument")
    config = inv.client_config()
    if len(config.endpoints) != 1:
        raise ExitError(
            EXIT_INTERRUPTED,
            "snapshot must be requested to one selected node, not multiple "
            f"[{' '.join(config.endpoints)}]",
        )
    path = inv.args[0]
    partial = path + ".part"
    # No timeout unless --command-timeout was given (etcdctl 3.5).
    timeout_s = float(inv.values["command-timeout"]) if "command-timeout" in inv.changed else None
    client = inv.client()
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ExitError(
            EXIT_INTERRUPTED,
            f"could not open {partial} (open {partial}: {(exc.strerror or str(exc)).lower()})",
        ) from None
    inv.err(
        zap_line("info", "created temporary db file", "snapshot/v3_snapshot.go:119", path=partial)
    )
    start = time.monotonic()
    size = 0
    try:
        inv.err(
            zap_line(
                "info",
                "fetching snapshot",
                "snapshot/v3_snapshot.go:127",
                endpoint=config.endpoints[0],
            )
        )
        for blob in client.snapshot(timeout_s=timeout_s):
            os.write(fd, blob)
            size += len(blob)
        os.fsync(fd)
    except ClientError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise ExitError(EXIT_INTERRUPTED, str(exc)) from None
    os.close(fd)
    inv.err(
        zap_line(
            "info",
            "fetched snapshot",
            "snapshot/v3_snapshot.go:142",
            endpoint=config.endpoints[0],
            size=humanize_bytes(size),
            took=f"{time.monotonic() - start:.6f}",
        )
    )
    os.replace(partial, path)
    inv.err(zap_line("info", "saved", "snapshot/v3_snapshot.go:152", path=path))
    inv.out(f"Snapshot saved at {path}\n")


def snapshot_status_command(inv: Invocation) -> None:
    # etcdctl 3.5 still has it, deprecated, and runs etcdutl's code: so do we.
    from petcd.utl import main as utl

    inv.err("Deprecated: Use `etcdutl snapshot status` instead.\n\n")
    utl.snapshot_status_command(inv)


def snapshot_restore_command(inv: Invocation) -> None:
    from petcd.utl import main as utl

    inv.err("Deprecated: Use `etcdutl snapshot restore` instead.\n\n")
    utl.snapshot_restore_command(inv)


SNAPSHOT_STATUS_LONG = """When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
The items in the lists are hash, revision, total keys, total size.

Moved to 'etcdutl snapshot status ...'
"""  # noqa: E501

RESTORE_FLAGS = [
    Flag("data-dir", FlagKind.STRING, "", "Path to the data directory"),
    Flag(
        "wal-dir", FlagKind.STRING, "", "Path to the WAL directory (use --data-dir if none given)"
    ),
    Flag(
        "initial-cluster",
        FlagKind.STRING,
        "default=http://localhost:2380",
        "Initial cluster configuration for restore bootstrap",
    ),
    Flag(
        "initial-cluster-token",
        FlagKind.STRING,
        "etcd-cluster",
        "Initial cluster token for the etcd cluster during restore bootstrap",
    ),
    Flag(
        "initial-advertise-peer-urls",
        FlagKind.STRING,
        "http://localhost:2380",
        "List of this member's peer URLs to advertise to the rest of the cluster",
    ),
    Flag("name", FlagKind.STRING, "default", "Human-readable name for this member"),
    Flag(
        "skip-hash-check",
        FlagKind.BOOL,
        False,
        "Ignore snapshot integrity hash value (required if copied from data directory)",
    ),
    Flag(
        "bump-revision",
        FlagKind.UINT64,
        0,
        "How much to increase the latest revision after restore",
    ),
    Flag(
        "mark-compacted",
        FlagKind.BOOL,
        False,
        "Mark the latest revision after restore as the point of scheduled compaction (required "
        "if --bump-revision > 0, disallowed otherwise)",
    ),
    Flag(
        "initial-memory-map-size",
        FlagKind.UINT64,
        0,
        "Initial memory map size of the database in bytes. It uses the default value if not "
        "defined or defined to 0",
    ),
]


def commands() -> list[Command]:
    alarm = Command("alarm <subcommand>", "Alarm related commands")
    alarm.add(
        Command("disarm", "Disarms all alarms", run=alarm_disarm_command),
        Command("list", "Lists all alarms", run=alarm_list_command),
    )
    defrag = Command(
        "defrag",
        "Defragments the storage of the etcd members with given endpoints",
        run=defrag_command,
        flags=[
            Flag(
                "data-dir",
                FlagKind.STRING,
                "",
                "Optional. If present, defragments a data directory not in use by etcd.",
            )
        ],
        persistent_flags=[
            Flag("cluster", FlagKind.BOOL, False, "use all endpoints from the cluster member list")
        ],
    )
    move_leader = Command(
        "move-leader <transferee-member-id>",
        "Transfers leadership to another etcd cluster member.",
        run=move_leader_command,
    )
    snapshot = Command("snapshot <subcommand>", "Manages etcd node snapshots")
    snapshot.add(
        Command(
            "save <filename>",
            "Stores an etcd node backend snapshot to a given file",
            run=snapshot_save_command,
        ),
        Command(
            "status <filename>",
            "[deprecated] Gets backend snapshot status of a given file",
            run=snapshot_status_command,
            long=SNAPSHOT_STATUS_LONG,
        ),
        Command(
            "restore <filename> [options]",
            "Restores an etcd member snapshot to an etcd directory",
            run=snapshot_restore_command,
            long="Moved to `etcdutl snapshot restore ...`\n",
            flags=RESTORE_FLAGS,
        ),
    )
    return [alarm, defrag, move_leader, snapshot]
