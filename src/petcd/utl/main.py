"""``petcdutl``: a drop-in for etcdutl 3.5, the offline tool on data dirs and snapshot files.

Theory of operation: :func:`run` is the whole program as a function of ``argv`` and two
binary streams, returning the exit code, so tests run it in-process. The command tree and the
cobra/pflag parsing rules are petcdctl's (:mod:`petcd.ctl.command`); what differs from
etcdctl is what etcdutl does differently: help is cobra's default usage template (etcdutl
sets its help template to the usage string), a flag or argument error prints ``Error: ...``
and that usage on stderr and exits 1, and a failed operation prints ``Error: ...`` and exits
with cobrautl's code (1, or 128 for a bad argument count, 4 for an unsupported output
format). Log lines go to stderr as zap JSON, as etcdutl's logger writes them; results go to
stdout in the ``-w`` format. The operations themselves live in :mod:`petcd.utl.snapshot`,
:mod:`petcd.utl.defrag` and :mod:`petcd.utl.hashkv`; this module only parses and prints.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

import petcd
from petcd.ctl.command import Command, Flag, FlagKind, Parsed, pflag_usages, resolve
from petcd.ctl.context import Invocation
from petcd.ctl.errors import (
    EXIT_BAD_ARGS,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    ExitError,
    FlagError,
)
from petcd.ctl.gofmt import ascii_table, humanize_bytes
from petcd.utl import defrag as defrag_mod
from petcd.utl import hashkv as hashkv_mod
from petcd.utl import snapshot as snapshot_mod
from petcd.utl.errors import UsageError, UtlError

CLI_NAME = "etcdutl"
CLI_DESCRIPTION = "An administrative command line tool for etcd3."
OUTPUT_FORMATS = ("fields", "json", "protobuf", "simple", "table")
_PROGRESS_MIN_BYTES = 64 * 1024 * 1024  # restores smaller than this print no progress


def log_line(inv: Invocation, level: str, msg: str, caller: str, **fields: Any) -> None:
    """One zap JSON log line on stderr (etcdutl logs to stderr; results go to stdout)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    record: dict[str, Any] = {
        "level": level,
        "ts": now.replace("+00:00", "Z"),
        "caller": caller,
        "msg": msg,
    }
    record.update(fields)
    inv.err(json.dumps(record, separators=(",", ":")) + "\n")


def _go_json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------- output


def _output_format(inv: Invocation) -> str:
    fmt = str(inv.values["write-out"])
    if fmt not in OUTPUT_FORMATS:
        raise ExitError(EXIT_BAD_FEATURE, "unsupported output format")
    return fmt


def print_db_status(inv: Invocation, st: snapshot_mod.SnapshotStatus) -> None:
    fmt = _output_format(inv)
    row = [f"{st.hash:x}", str(st.revision), str(st.total_key), humanize_bytes(st.total_size)]
    if fmt == "simple":
        inv.out(", ".join(row) + "\n")
    elif fmt == "table":
        inv.out(ascii_table(["hash", "revision", "total keys", "total size"], [row]))
    elif fmt == "json":
        inv.out(
            _go_json(
                {
                    "hash": st.hash,
                    "revision": st.revision,
                    "totalKey": st.total_key,
                    "totalSize": st.total_size,
                }
            )
            + "\n"
        )
    elif fmt == "fields":
        inv.out(
            f'"Hash" : {st.hash}\n"Revision" : {st.revision}\n'
            f'"Keys" : {st.total_key}\n"Size" : {st.total_size}\n'
        )
    else:
        raise ExitError(EXIT_BAD_FEATURE, f"{fmt} not supported as output format")


def print_hash_kv(inv: Invocation, h: hashkv_mod.HashKV) -> None:
    fmt = _output_format(inv)
    row = [str(h.hash), str(h.hash_revision), str(h.compact_revision)]
    if fmt == "simple":
        inv.out(", ".join(row) + "\n")
    elif fmt == "table":
        inv.out(ascii_table(["hash", "hash revision", "compact revision"], [row]))
    elif fmt == "json":
        inv.out(
            _go_json(
                {
                    "hash": h.hash,
                    "hashRevision": h.hash_revision,
                    "compactRevision": h.compact_revision,
                }
            )
            + "\n"
        )
    elif fmt == "fields":
        inv.out(
            f'"Hash" : {h.hash}\n"Hash revision" : {h.hash_revision}\n'
            f'"Compact revision" : {h.compact_revision}\n'
        )
    else:
        raise ExitError(EXIT_BAD_FEATURE, f"{fmt} not supported as output format")


# ---------------------------------------------------------------- commands


def snapshot_status_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    _output_format(inv)
    try:
        st = snapshot_mod.status(inv.args[0])
    except FileNotFoundError:
        raise ExitError(EXIT_ERROR, f"stat {inv.args[0]}: no such file or directory") from None
    except (UtlError, OSError) as e:
        raise ExitError(EXIT_ERROR, str(e)) from None
    print_db_status(inv, st)


def snapshot_restore_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "snapshot restore requires exactly one argument")
    v = inv.values
    bump = int(v["bump-revision"])
    mark = bool(v["mark-compacted"])
    if (bump == 0 and mark) or (bump > 0 and not mark):
        raise ExitError(EXIT_BAD_ARGS, "--mark-compacted required if --revision-bump > 0")
    cfg = snapshot_mod.RestoreConfig(
        snapshot_path=inv.args[0],
        name=str(v["name"]),
        data_dir=str(v["data-dir"]),
        wal_dir=str(v["wal-dir"]),
        peer_urls=str(v["initial-advertise-peer-urls"]),
        initial_cluster=str(v["initial-cluster"]),
        initial_cluster_token=str(v["initial-cluster-token"]),
        skip_hash_check=bool(v["skip-hash-check"]),
        bump_revision=bump,
        mark_compacted=mark,
    )
    dd = cfg.output_data_dir
    wal_dir = cfg.wal_dir or os.path.join(dd, "member", "wal")
    paths = {
        "path": cfg.snapshot_path,
        "wal-dir": wal_dir,
        "data-dir": dd,
        "snap-dir": os.path.join(dd, "member", "snap"),
    }
    log_line(inv, "info", "restoring snapshot", "snapshot/v3_snapshot.go:260", **paths)
    next_report = [0]

    def progress(copied: int, total: int) -> None:
        if total < _PROGRESS_MIN_BYTES:
            return
        percent = copied * 100 // total
        if percent >= next_report[0] or copied == total:
            next_report[0] = percent // 10 * 10 + 10
            log_line(
                inv,
                "info",
                "copying snapshot",
                "snapshot/v3_snapshot.go:303",
                copied=humanize_bytes(copied),
                total=humanize_bytes(total),
                percent=percent,
            )

    try:
        result = snapshot_mod.restore(cfg, progress=progress)
    except FileNotFoundError as e:
        raise ExitError(EXIT_ERROR, f"open {e.filename}: no such file or directory") from None
    except (UtlError, OSError) as e:
        raise ExitError(EXIT_ERROR, str(e)) from None
    for m in result.members:
        log_line(
            inv,
            "info",
            "added member",
            "membership/cluster.go:421",
            **{
                "cluster-id": f"{result.cluster_id:x}",
                "local-member-id": f"{result.member_id:x}",
                "added-peer-id": f"{m.id:x}",
                "added-peer-peer-urls": list(m.peer_urls),
            },
        )
    if cfg.bump_revision:
        log_line(
            inv,
            "info",
            "bumped latest revision and marked it compacted",
            "snapshot/v3_snapshot.go:355",
            revision=result.revision,
        )
    log_line(inv, "info", "restored snapshot", "snapshot/v3_snapshot.go:291", **paths)


def snapshot_convert_command(inv: Invocation) -> None:
    if len(inv.args) != 2:
        raise ExitError(
            EXIT_BAD_ARGS, "snapshot convert requires a snapshot file and an output file"
        )
    to = str(inv.values["to"])
    if to != "etcd":
        raise ExitError(EXIT_BAD_ARGS, f'unsupported --to "{to}" (supported: etcd)')
    src, dst = inv.args
    from petcd.utl import etcd_export  # loads the server's encoders: only for this command

    size = os.stat(src).st_size if os.path.exists(src) else 0
    log_line(inv, "info", "converting snapshot", "snapshot/convert", path=src, output=dst, to=to)
    next_report = [0]

    def progress(done: int, total: int) -> None:
        if size < _PROGRESS_MIN_BYTES or total == 0:
            return
        percent = done * 100 // total
        if percent >= next_report[0]:  # every 10%, and 100% once
            next_report[0] = percent // 10 * 10 + 10
            log_line(
                inv,
                "info",
                "converting records",
                "snapshot/convert",
                converted=done,
                total=total,
                percent=percent,
            )

    try:
        s = etcd_export.convert_to_etcd(src, dst, progress=progress)
    except FileNotFoundError as e:
        raise ExitError(EXIT_ERROR, f"open {e.filename}: no such file or directory") from None
    except (UtlError, OSError) as e:
        raise ExitError(EXIT_ERROR, str(e)) from None
    log_line(
        inv,
        "info",
        "converted snapshot",
        "snapshot/convert",
        path=src,
        output=dst,
        revision=s.revision,
        **{
            "key-records": s.records,
            "leases": s.leases,
            "users": s.users,
            "roles": s.roles,
            "alarms": s.alarms,
            "size": humanize_bytes(s.size_bytes),
        },
    )


def defrag_command(inv: Invocation) -> None:
    data_dir = str(inv.values["data-dir"])

    def on_start(path: str, before: defrag_mod.DefragSizes) -> None:
        log_line(
            inv,
            "info",
            "defragmenting",
            "backend/backend.go:497",
            path=path,
            **{
                "current-db-size-bytes": before.size_bytes,
                "current-db-size": humanize_bytes(before.size_bytes),
                "current-db-size-in-use-bytes": before.in_use_bytes,
                "current-db-size-in-use": humanize_bytes(before.in_use_bytes),
            },
        )

    try:
        r = defrag_mod.defrag_data_dir(data_dir, on_start=on_start)
    except (UtlError, OSError) as e:
        raise ExitError(EXIT_ERROR, f"Failed to defragment etcd data[{data_dir}] ({e})") from None
    log_line(
        inv,
        "info",
        "finished defragmenting directory",
        "backend/backend.go:550",
        path=r.path,
        **{
            "current-db-size-bytes-diff": r.after.size_bytes - r.before.size_bytes,
            "current-db-size-bytes": r.after.size_bytes,
            "current-db-size": humanize_bytes(r.after.size_bytes),
            "current-db-size-in-use-bytes-diff": r.after.in_use_bytes - r.before.in_use_bytes,
            "current-db-size-in-use-bytes": r.after.in_use_bytes,
            "current-db-size-in-use": humanize_bytes(r.after.in_use_bytes),
            "took": f"{r.took_s:.6f}s",
        },
    )


def hashkv_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise UsageError(f"accepts 1 arg(s), received {len(inv.args)}", inv.command)
    _output_format(inv)
    try:
        h = hashkv_mod.hash_kv(inv.args[0], int(inv.values["rev"]))
    except (UtlError, OSError) as e:
        raise ExitError(EXIT_ERROR, str(e)) from None
    print_hash_kv(inv, h)


def version_command(inv: Invocation) -> None:
    major, minor = petcd.ETCD_VERSION.split(".")[:2]
    inv.out(f"etcdutl version: {petcd.ETCD_VERSION}\nAPI version: {major}.{minor}\n")


def snapshot_save_command(inv: Invocation) -> None:
    # cobra announces a deprecated command before running it.
    inv.err('Command "save" is deprecated, Use `etcdctl snapshot save` to download snapshot\n')
    raise ExitError(EXIT_BAD_ARGS, "In order to download snapshot use: `etcdctl snapshot save ...`")


# ---------------------------------------------------------------- the tree

_HIDDEN: set[str] = {"save"}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "defrag": ("data-dir",),
    "restore": ("data-dir",),
    "convert": ("to",),
}


def build_root() -> Command:
    root = Command(
        CLI_NAME,
        CLI_DESCRIPTION,
        persistent_flags=[
            Flag(
                "write-out",
                FlagKind.STRING,
                "simple",
                "set the output format (fields, json, protobuf, simple, table)",
                "w",
            )
        ],
    )
    defrag = Command(
        "defrag",
        "Defragments the storage of the etcd",
        run=defrag_command,
        flags=[
            Flag(
                "data-dir",
                FlagKind.STRING,
                "",
                "Required. Defragments a data directory not in use by etcd.",
            )
        ],
    )
    hashkv = Command(
        "hashkv <filename>",
        "Prints the KV history hash of a given file",
        run=hashkv_command,
        flags=[
            Flag(
                "rev",
                FlagKind.INT64,
                0,
                "maximum revision to hash (default: latest revision)",
            )
        ],
    )
    snapshot = Command("snapshot <subcommand>", "Manages etcd node snapshots")
    snapshot.add(
        Command(
            "save <filename>",
            "Stores an etcd node backend snapshot to a given file",
            run=snapshot_save_command,
        ),
        Command(
            "restore <filename> --data-dir {output dir} [options]",
            "Restores an etcd member snapshot to an etcd directory",
            run=snapshot_restore_command,
            flags=[
                Flag("data-dir", FlagKind.STRING, "", "Path to the output data directory"),
                Flag(
                    "wal-dir",
                    FlagKind.STRING,
                    "",
                    "Path to the WAL directory (use --data-dir if none given)",
                ),
                Flag(
                    "initial-cluster",
                    FlagKind.STRING,
                    snapshot_mod.RestoreConfig.__dataclass_fields__["initial_cluster"].default,
                    "Initial cluster configuration for restore bootstrap",
                ),
                Flag(
                    "initial-cluster-token",
                    FlagKind.STRING,
                    snapshot_mod.DEFAULT_CLUSTER_TOKEN,
                    "Initial cluster token for the etcd cluster during restore bootstrap",
                ),
                Flag(
                    "initial-advertise-peer-urls",
                    FlagKind.STRING,
                    snapshot_mod.DEFAULT_PEER_URLS,
                    "List of this member's peer URLs to advertise to the rest of the cluster",
                ),
                Flag(
                    "name",
                    FlagKind.STRING,
                    snapshot_mod.DEFAULT_NAME,
                    "Human-readable name for this member",
                ),
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
                    "Mark the latest revision after restore as the point of scheduled "
                    "compaction (required if --bump-revision > 0, disallowed otherwise)",
                ),
            ],
        ),
        Command(
            "convert <filename> <output filename> --to etcd",
            "Converts a petcd snapshot into another store's snapshot file",
            run=snapshot_convert_command,
            long=(
                "Writes the snapshot file of a petcd member (from petcdctl snapshot save, or a "
                "stopped member's member/snap/db) as an etcd 3.5 snapshot file: a bbolt "
                "database with etcd's buckets and a sha256 trailer, which etcdutl (or etcdctl) "
                "snapshot restore takes. Keys with their revisions and history, the compaction, "
                "leases, users, roles, the auth flag and alarms are carried. The output file "
                "must not exist.\n"
            ),
            flags=[Flag("to", FlagKind.STRING, "", "Required. The format to write: etcd")],
        ),
        Command(
            "status <filename>",
            "Gets backend snapshot status of a given file",
            run=snapshot_status_command,
            long=(
                "When --write-out is set to simple, this command prints out comma-separated "
                "status lists for each endpoint.\n"
                "The items in the lists are hash, revision, total keys, total size.\n"
            ),
        ),
    )
    version = Command("version", "Prints the version of etcdutl", run=version_command)
    root.add(defrag, hashkv, snapshot, version)
    root.add(Command("help [command]", "Help about any command", run=lambda inv: None))
    return root


# ---------------------------------------------------------------- cobra's usage


def _visible(command: Command) -> list[Command]:
    return [c for c in command.subcommands if c.name not in _HIDDEN]


def usage(command: Command) -> str:
    """cobra's default usage template (etcdutl's help shows just this)."""
    path = command.path()
    subs = _visible(command)
    out = "Usage:"
    if command.runnable:
        line = f"{command.parent.path()} {command.use}" if command.parent else command.use
        if "[flags]" not in line:
            line += " [flags]"
        out += f"\n  {line}"
    if subs:
        out += f"\n  {path} [command]"
    if subs:
        pad = max(11, *(len(c.name) for c in subs))
        out += "\n\nAvailable Commands:"
        for c in subs:
            out += f"\n  {c.name.ljust(pad)} {c.short}"
    local = command.local_flags()
    out += "\n\nFlags:\n" + pflag_usages(local).rstrip()
    inherited = command.inherited_flags()
    if inherited:
        out += "\n\nGlobal Flags:\n" + pflag_usages(inherited).rstrip()
    if subs:
        out += f'\n\nUse "{path} [command] --help" for more information about a command.'
    return out + "\n"


def run(
    argv: Sequence[str],
    *,
    stdout: IO[bytes],
    stderr: IO[bytes],
    stdin: IO[bytes] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run petcdutl; return the exit code."""
    root = build_root()

    def fail_usage(message: str, command: Command) -> int:
        stderr.write(os.fsencode(f"Error: {message}\n"))
        stderr.write(os.fsencode(usage(command) + "\n"))
        return EXIT_ERROR

    try:
        parsed: Parsed = resolve(root, argv)
    except FlagError as exc:
        return fail_usage(exc.message, getattr(exc, "command", root))
    command = parsed.command
    if parsed.unknown_command is not None:
        stderr.write(
            os.fsencode(
                f'Error: unknown command "{parsed.unknown_command}" for "{CLI_NAME}"\n'
                f"Run '{CLI_NAME} --help' for usage.\n"
            )
        )
        return EXIT_ERROR
    if command.name == "help" and command.parent is root:
        stdout.write(usage(root.help_target(parsed.args)).encode())
        return 0
    if parsed.help_requested or command.run is None:
        stdout.write(usage(command).encode())
        return 0
    missing = [f for f in _REQUIRED.get(command.name, ()) if f not in parsed.changed]
    if missing:
        names = " ".join(f'"{f}"' for f in missing)
        return fail_usage(f"required flag(s) {names} not set", command)
    inv = Invocation(
        command=command,
        args=parsed.args,
        values=parsed.values,
        changed=parsed.changed,
        stdin=stdin if stdin is not None else sys.stdin.buffer,
        stdout=stdout,
        stderr=stderr,
        environ=dict(environ) if environ is not None else {},
        argv=list(argv),
    )
    try:
        command.run(inv)
    except UsageError as exc:
        return fail_usage(exc.message, exc.command)
    except ExitError as exc:
        stdout.flush()
        stderr.write(os.fsencode(f"Error: {exc.message}\n"))
        return exc.code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``petcdutl``)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # SIGINT stays Python's KeyboardInterrupt: an interrupted restore removes its temporary
    # dirs on the way out, then the process exits as a Go program killed by SIGINT would.
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = run(args, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer, environ=os.environ)
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
