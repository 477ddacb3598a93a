"""``petcdctl``: a drop-in for etcdctl v3 (3.5).

Theory of operation: :func:`run` is the whole program as a function of
``argv``, the environment and three binary streams, returning the exit code,
so tests run it in-process. It builds the command tree (one module per
command group contributes its commands through ``commands()``; add a module to
``COMMAND_GROUPS`` to add a group), resolves ``argv`` to a command with the
cobra/pflag rules of :mod:`petcd.ctl.command`, and runs it. Errors follow
etcdctl: ``Error: <message>`` on stderr with etcdctl's exit code; a bad flag
prints the message, the command's usage on stdout, and the message again
(exit 1); ``--help`` and commands that only group others print usage (exit 0).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from petcd.client import Client
from petcd.ctl import (
    auth,
    check,
    completion,
    elect,
    endpoint,
    kv,
    lease,
    lock,
    maintenance,
    member,
    mirror,
    version,
    watch,
)
from petcd.ctl.command import Command, Parsed, resolve, suggestions_for, usage
from petcd.ctl.context import GLOBAL_FLAGS, ClientConfig, Invocation, default_client_factory
from petcd.ctl.errors import EXIT_ERROR, ExitError, FlagError, SilentExit

CLI_NAME = "etcdctl"
COMMAND_GROUPS = [
    kv,
    endpoint,
    lease,
    maintenance,
    member,
    auth,
    check,
    completion,
    lock,
    elect,
    mirror,
    version,
    watch,
]


def build_root() -> Command:
    root = Command(
        CLI_NAME, "A simple command line client for etcd3.", persistent_flags=GLOBAL_FLAGS
    )
    for group in COMMAND_GROUPS:
        root.add(*group.commands())
    root.add(Command("help [command]", "Help about any command", run=lambda inv: None))
    return root


def _usage(command: Command) -> str:
    import petcd

    return usage(command, petcd.ETCD_VERSION, version.api_version())


def run(
    argv: Sequence[str],
    *,
    stdin: IO[bytes],
    stdout: IO[bytes],
    stderr: IO[bytes],
    environ: Mapping[str, str],
    client_factory: Callable[[ClientConfig], Client] = default_client_factory,
) -> int:
    """Run petcdctl; return the exit code."""
    env = dict(environ)
    api = env.pop("ETCDCTL_API", "")
    if api not in ("", "3"):
        stderr.write(f"unsupported API version: {api}\n".encode())
        return EXIT_ERROR
    root = build_root()
    if argv and argv[0] in (completion.COMPLETE, completion.COMPLETE_NO_DESC):
        return completion.run_complete(
            root,
            argv[1:],
            lambda text: stdout.write(os.fsencode(text)),
            descriptions=argv[0] == completion.COMPLETE,
        )

    def error(message: str) -> None:
        stderr.write(os.fsencode(f"Error: {message}\n"))

    try:
        parsed: Parsed = resolve(root, argv)
    except FlagError as exc:
        command: Command = getattr(exc, "command", root)
        error(exc.message)
        stdout.write(_usage(command).encode())
        stderr.write(b"\n")
        error(exc.message)
        return EXIT_ERROR
    command = parsed.command
    if parsed.unknown_command is not None:
        message = f'unknown command "{parsed.unknown_command}" for "{CLI_NAME}"'
        suggestions = suggestions_for(root, parsed.unknown_command)
        if suggestions:
            message += "\n\nDid you mean this?\n" + "".join(f"\t{s}\n" for s in suggestions)
        error(message)
        stderr.write(f"Run '{CLI_NAME} --help' for usage.\n".encode())
        error(message)
        return EXIT_ERROR
    if command.name == "help" and command.parent is root:
        stdout.write(_usage(root.help_target(parsed.args)).encode())
        return 0
    if parsed.help_requested or command.run is None:
        stdout.write(_usage(command).encode())
        return 0
    inv = Invocation(
        command=command,
        args=parsed.args,
        values=parsed.values,
        changed=parsed.changed,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        environ=env,
        client_factory=client_factory,
        argv=list(argv),
    )
    try:
        command.run(inv)
    except ExitError as exc:
        stdout.flush()
        error(exc.message)
        return exc.code
    except SilentExit as exc:
        return exc.code
    finally:
        inv.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``petcdctl``)."""
    # Die on SIGPIPE and SIGINT the way a Go program does (exit by signal, no
    # traceback): `petcdctl get "" --prefix | head -1` must end quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    args = sys.argv[1:] if argv is None else list(argv)
    code = run(
        args,
        stdin=sys.stdin.buffer,
        stdout=sys.stdout.buffer,
        stderr=sys.stderr.buffer,
        environ=os.environ,
    )
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
