"""Run etcdctl and petcdctl side by side and compare what a user would see.

Theory of operation: a :class:`Differ` holds two servers that have seen the
same operations: the *reference* (always a real etcd, driven by the real
``etcdctl``) and the *target* (etcd or petcd, driven by ``petcdctl``). Each
:meth:`Differ.check` runs one command line against both, then compares exit
codes, stdout and stderr after :func:`normalise` has replaced what
legitimately differs between two clusters (cluster and member ids, raft terms
and indexes, db sizes, timings, server versions) and dropped log lines. Store
revisions are *not* normalised: both servers must agree on them exactly.
Protobuf output is decoded, its header ids cleared, and compared as messages.
"""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from petcd.ctl.main import run
from tests.compat.servers import ETCDCTL_BIN, PETCDCTL_BIN, ServerProcess

RUN_TIMEOUT_S = 30.0
# Set PETCD_COMPAT_SUBPROCESS=1 to run petcdctl as a separate process at every step.
IN_PROCESS = os.environ.get("PETCD_COMPAT_SUBPROCESS", "") != "1"

_LOG_LINE = re.compile(
    rb"^(\{\"level\":.*|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [A-Z] \| .*)$", re.MULTILINE
)
_SUBSTITUTIONS: list[tuple[re.Pattern[bytes], bytes]] = [
    # json
    (
        re.compile(
            rb'"(cluster_id|member_id|raft_term|leader|raftIndex|raftTerm|'
            rb'raftAppliedIndex|dbSize|dbSizeInUse)":\d+'
        ),
        rb'"\1":N',
    ),
    (re.compile(rb'"version":"[0-9.]+"'), rb'"version":"V"'),
    (re.compile(rb'"took":"[^"]*"'), rb'"took":"T"'),
    # fields
    (
        re.compile(
            rb'^"(ClusterID|MemberID|RaftTerm|Leader|DBSize|RaftIndex|RaftAppliedIndex)"'
            rb" : \d+$",
            re.MULTILINE,
        ),
        rb'"\1" : N',
    ),
    (re.compile(rb'^"Version" : "[0-9.]+"$', re.MULTILINE), rb'"Version" : "V"'),
    (re.compile(rb'^"Took" : .*$', re.MULTILINE), rb'"Took" : T'),
    # usage texts: etcdctl 3.4 prints its own API version
    (re.compile(rb"API VERSION:\n\t3\.[45]\n"), b"API VERSION:\n\t3.x\n"),
    # endpoint hashkv: the hash covers internal state that differs per cluster
    (re.compile(rb'"hash":\d+'), rb'"hash":H'),
    # etcd >= 3.5.6 also reports hash_revision; the 3.4 reference does not
    (re.compile(rb',"hash_revision":\d+'), b""),
    (re.compile(rb'^"Hash" : \d+$', re.MULTILINE), rb'"Hash" : H'),
    (re.compile(rb"^(\S*ENDPOINT), \d+$", re.MULTILINE), rb"\1, H"),
    # endpoint health (simple)
    (re.compile(rb"committed proposal: took = \S+"), rb"committed proposal: took = T"),
]


def _normalise_status_rows(data: bytes, endpoint: bytes) -> bytes:
    """Endpoint status rows (simple and table): keep endpoint, leader/learner, errors."""
    out = []
    for line in data.split(b"\n"):
        if endpoint in line.split(b", ")[0] and len(line.split(b", ")) >= 10:
            cells = line.split(b", ")
            cells[1:4] = [b"ID", b"V", b"SIZE"]
            cells[6:9] = [b"TERM", b"INDEX", b"APPLIED"]
            line = b", ".join(cells)
        elif line.startswith(b"| ") and endpoint in line:
            cells = line.split(b"|")
            if len(cells) == 12:  # status table
                for i in (2, 3, 4, 7, 8, 9):
                    cells[i] = b" X "
            elif len(cells) == 6:  # health table
                cells[3] = b" T "
            elif len(cells) == 4:  # hashkv table
                cells[2] = b" H "
            line = b"|".join(cells)
        elif line.startswith(b"+-") or line.startswith(b"|  "):
            line = re.sub(rb"[-+ A-Z]+", b"~", line)  # borders and headers follow cell widths
        out.append(line)
    return b"\n".join(out)


def normalise(data: bytes, endpoint: str) -> bytes:
    data = _drop_log_lines(data)
    data = data.replace(endpoint.encode(), b"ENDPOINT")
    for pattern, replacement in _SUBSTITUTIONS:
        data = pattern.sub(replacement, data)
    return _normalise_status_rows(data, b"ENDPOINT")


def _drop_log_lines(data: bytes) -> bytes:
    return b"".join(
        line for line in data.splitlines(keepends=True) if not _LOG_LINE.match(line.rstrip(b"\n"))
    )


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    code: int
    stdout: bytes
    stderr: bytes


def run_ctl(
    binary: str,
    server: ServerProcess,
    args: tuple[str, ...],
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    with_endpoint: bool = True,
    in_process: bool = True,
) -> Result:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    environ.update(env or {})
    argv = (binary, *(("--endpoints", server.endpoint) if with_endpoint else ()), *args)
    if binary == PETCDCTL_BIN and IN_PROCESS and in_process:
        return _run_in_process(argv, stdin, environ)
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, env=environ, timeout=RUN_TIMEOUT_S, check=False
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def _run_in_process(argv: tuple[str, ...], stdin: bytes, environ: Mapping[str, str]) -> Result:
    # petcdctl is the program petcd.ctl.main.run(); running it in this process
    # saves a Python start-up (about a second on a loaded 2-core machine) per step.
    # test_clients.py runs the installed console script for real.
    out, err = io.BytesIO(), io.BytesIO()
    code = run(argv[1:], stdin=io.BytesIO(stdin), stdout=out, stderr=err, environ=environ)
    return Result(argv, code, out.getvalue(), err.getvalue())


@dataclass
class Differ:
    reference: ServerProcess
    target: ServerProcess
    checked: int = 0
    # Server-chosen ids (leases, members) differ between the two servers:
    # name -> (reference id, target id). "{name}" in argv becomes each side's id
    # in hex, and both sides' ids (hex or decimal) print as "<name>".
    aliases: dict[str, tuple[int, int]] = field(default_factory=dict)

    def alias(self, name: str, ref_id: int, target_id: int) -> None:
        self.aliases[name] = (ref_id, target_id)

    def _args_for(self, args: tuple[str, ...], side: int) -> tuple[str, ...]:
        out = []
        for arg in args:
            for name, ids in self.aliases.items():
                arg = arg.replace("{" + name + "}", f"{ids[side]:x}")
            out.append(arg)
        return tuple(out)

    def _unalias(self, data: bytes, side: int) -> bytes:
        for name, ids in self.aliases.items():
            value = ids[side]
            for form in (f"{value:016x}", f"{value:x}", str(value)):
                data = re.sub(rb"\b" + form.encode() + rb"\b", f"<{name}>".encode(), data)
        return data

    def run_both(
        self,
        *args: str,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        env_endpoint: bool = False,
        with_endpoint: bool = True,
        in_process: bool = True,
    ) -> tuple[Result, Result]:
        """Run etcdctl on the reference and petcdctl on the target.

        ``in_process=False`` runs petcdctl as a process (needed when it starts
        child processes whose output must be captured).
        """

        def env_for(server: ServerProcess) -> dict[str, str]:
            e = dict(env or {})
            if env_endpoint:
                e["ETCDCTL_ENDPOINTS"] = server.endpoint
            return e

        ref = run_ctl(
            ETCDCTL_BIN,
            self.reference,
            self._args_for(args, 0),
            stdin,
            env_for(self.reference),
            with_endpoint=with_endpoint and not env_endpoint,
        )
        tgt = run_ctl(
            PETCDCTL_BIN,
            self.target,
            self._args_for(args, 1),
            stdin,
            env_for(self.target),
            with_endpoint=with_endpoint and not env_endpoint,
            in_process=in_process,
        )
        return ref, tgt

    def check(
        self,
        *args: str,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        env_endpoint: bool = False,
        proto: Any = None,
        drop_stderr: tuple[bytes, ...] = (),
        drop_stdout_lines: tuple[bytes, ...] = (),
        subs: tuple[tuple[bytes, bytes], ...] = (),
        in_process: bool = True,
    ) -> tuple[Result, Result]:
        """Run on both sides and assert the user-visible outcome is the same.

        ``subs`` are extra (regex, replacement) pairs applied to both outputs, for
        values that depend on timing (a lease's remaining TTL).
        """
        ref, tgt = self.run_both(
            *args, stdin=stdin, env=env, env_endpoint=env_endpoint, in_process=in_process
        )
        ref = self._clean(ref, 0, subs)
        tgt = self._clean(tgt, 1, subs)
        self.checked += 1
        assert ref.code == tgt.code, (
            f"exit code of {args}: etcdctl {ref.code}, petcdctl {tgt.code}\n{ref}\n{tgt}"
        )
        if drop_stdout_lines:
            # Lines that legitimately differ between etcdctl 3.4 and 3.5 (usage texts).
            def keep(result: Result) -> Result:
                kept = [
                    line
                    for line in result.stdout.split(b"\n")
                    if not any(part in line for part in drop_stdout_lines)
                ]
                return Result(result.argv, result.code, b"\n".join(kept), result.stderr)

            ref, tgt = keep(ref), keep(tgt)
        if proto is not None and ref.code == 0:
            assert _proto_normal(proto, ref.stdout) == _proto_normal(proto, tgt.stdout), args
        else:
            assert normalise(ref.stdout, self.reference.endpoint) == normalise(
                tgt.stdout, self.target.endpoint
            ), f"stdout of {args}:\n{ref.stdout!r}\n{tgt.stdout!r}"
        tgt_err = tgt.stderr
        for line in drop_stderr:
            tgt_err = tgt_err.replace(line, b"")
        ref_err = _drop_log_lines(ref.stderr)
        tgt_err = _drop_log_lines(tgt_err)
        assert normalise(ref_err, self.reference.endpoint) == normalise(
            tgt_err, self.target.endpoint
        ), f"stderr of {args}:\n{ref.stderr!r}\n{tgt.stderr!r}"
        return ref, tgt

    def _clean(self, result: Result, side: int, subs: tuple[tuple[bytes, bytes], ...]) -> Result:
        stdout = result.stdout
        if not (stdout and not stdout.isascii()) and self.aliases:
            stdout = self._unalias(stdout, side)
        stderr = self._unalias(result.stderr, side) if self.aliases else result.stderr
        return Result(result.argv, result.code, _sub_all(stdout, subs), _sub_all(stderr, subs))


def _sub_all(data: bytes, subs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    for pattern, replacement in subs:
        data = re.sub(pattern, replacement, data, flags=re.MULTILINE)
    return data


def _proto_normal(message_type: Any, data: bytes) -> Any:
    message = message_type.FromString(data)

    def clear(msg: Any) -> None:
        if "cluster_id" in msg.DESCRIPTOR.fields_by_name:
            msg.cluster_id = msg.member_id = msg.raft_term = 0
        elif msg.HasField("header"):
            msg.header.cluster_id = 0
            msg.header.member_id = 0
            msg.header.raft_term = 0

    clear(message)
    for op in getattr(message, "responses", []):
        which = op.WhichOneof("response")
        if which:
            clear(getattr(op, which))
    return message


def run_streaming(
    binary: str,
    server: ServerProcess,
    args: tuple[str, ...],
    until: bytes,
    timeout_s: float = 20.0,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run a command that does not end by itself (watch, keep-alive) as a process.

    Read its stdout until ``until`` has appeared (or the process exits, or the
    time is up), then kill it by pid and return what it printed.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    environ.update(env or {})
    argv = (binary, "--endpoints", server.endpoint, *args)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, start_new_session=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while until not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.1)
            if ready:
                chunk = proc.stdout.read()
                if not chunk:
                    break  # EOF: the process ended
                out += chunk
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.set_blocking(proc.stdout.fileno(), True)
        out += proc.stdout.read()
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code = proc.returncode if proc.returncode >= 0 else -1  # -1: killed by us
    return Result(argv, code, out, err)


def revoke_new_leases(server: ServerProcess, before: set[int]) -> None:
    """Revoke leases granted on ``server`` since ``before`` (a lease list).

    etcdctl's elect and lock leave their session lease to expire by itself;
    tests that run them against the target revoke it, so that later lease
    listings on the two servers still agree.
    """
    from petcd.client import Client

    with Client([server.endpoint]) as client:
        for item in client.lease_leases().leases:
            if item.ID not in before:
                client.lease_revoke(item.ID)


def lease_ids(server: ServerProcess) -> set[int]:
    from petcd.client import Client

    with Client([server.endpoint]) as client:
        return {item.ID for item in client.lease_leases().leases}
