"""Differential tests of ``watch``: history replay, live events, exec, errors.

``watch`` does not end by itself, so both CLIs run as processes that are read
until a sentinel event has been printed and then killed. Events are replayed
from a past ``--rev`` so that nothing depends on when a watch registers.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from tests.compat.harness import Differ, normalise, run_streaming
from tests.compat.servers import ETCDCTL_BIN, PETCDCTL_BIN


def _revision(differ: Differ) -> int:
    ref, _ = differ.check("get", "w/none", "-w", "json")
    return int(ref.stdout.split(b'"revision":')[1].split(b",")[0])


def _watch_both(
    differ: Differ, *args: str, until: bytes, env: dict[str, str] | None = None
) -> None:
    ref = run_streaming(ETCDCTL_BIN, differ.reference, args, until, env=env)
    tgt = run_streaming(PETCDCTL_BIN, differ.target, args, until, env=env)
    assert ref.code == tgt.code, (ref, tgt)
    assert normalise(ref.stdout, differ.reference.endpoint) == normalise(
        tgt.stdout, differ.target.endpoint
    ), (ref.stdout, tgt.stdout)
    assert normalise(ref.stderr, differ.reference.endpoint) == normalise(
        tgt.stderr, differ.target.endpoint
    ), (ref.stderr, tgt.stderr)


@pytest.mark.long  # a few seconds: many processes, see README
def test_watch_history_and_formats(differ: Differ) -> None:
    start = _revision(differ) + 1
    differ.check("put", "w/k", "v1")
    differ.check("put", "w/k", "v2")
    differ.check("del", "w/k")
    differ.check("put", "w/single", "only")
    differ.check("put", "w/zz", "sentinel")
    _watch_both(differ, "watch", "w/", "--prefix", "--rev", str(start), until=b"sentinel\n")
    _watch_both(
        differ, "watch", "w/", "--prefix", "--prev-kv", "--rev", str(start), until=b"sentinel\n"
    )
    _watch_both(differ, "watch", "w/k", "w/l", "--rev", str(start), until=b"DELETE\nw/k\n\n")
    single = str(start + 3)
    _watch_both(differ, "watch", "w/single", "--rev", single, "-w", "json", until=b"}\n")
    _watch_both(differ, "watch", "w/single", "--rev", single, "-w", "fields", until=b'"Lease"')
    ref = run_streaming(
        ETCDCTL_BIN,
        differ.reference,
        ("watch", "w/single", "--rev", single, "-w", "protobuf"),
        b"only",
    )
    tgt = run_streaming(
        PETCDCTL_BIN,
        differ.target,
        ("watch", "w/single", "--rev", single, "-w", "protobuf"),
        b"only",
    )
    events = [rpc_pb2.WatchResponse.FromString(r.stdout).events for r in (ref, tgt)]
    assert events[0] == events[1] and events[0][0].kv.value == b"only"
    _watch_both(differ, "watch", "w/single", "--rev", single, "-w", "table", until=b"\n")


@pytest.mark.long  # a few seconds: many processes, see README
def test_watch_exec_and_environment(differ: Differ) -> None:
    start = _revision(differ) + 1
    differ.check("put", "w/e", "hello world")
    script = 'echo "$ETCD_WATCH_EVENT_TYPE|$ETCD_WATCH_KEY|$ETCD_WATCH_VALUE|$ETCD_WATCH_REVISION"'
    _watch_both(differ, "watch", "w/e", "--rev", str(start), "--", "sh", "-c", script, until=b"|")
    _watch_both(
        differ, "watch", "--rev", str(start), until=b"world\n", env={"ETCDCTL_WATCH_KEY": "w/e"}
    )
    _watch_both(differ, "watch", "w/e", "--rev", str(start), "--", "false", until=b"\x00")


def test_watch_errors(differ: Differ) -> None:
    differ.check("watch")
    differ.check("watch", "--rev", "3")
    differ.check("watch", "a", "b", "--prefix")
    differ.check("watch", "a", "--")
    differ.check("watch", "a", env={"ETCDCTL_WATCH_KEY": "b"})
    differ.check("watch", "a", env={"ETCDCTL_WATCH_RANGE_END": "b"})
    # --progress-notify is new in etcdctl 3.5
    differ.check("watch", "--help", drop_stdout_lines=(b"--progress-notify",))
    # a compacted start revision: the server cancels the watch and both exit 5
    current = _revision(differ)
    differ.check("put", "w/c", "1")
    differ.check("compaction", str(current + 1))
    _watch_both(differ, "watch", "w/c", "--rev", "2", until=b"\x00")
    _watch_both(differ, "watch", "w/c", "--rev", "2", "-w", "json", until=b"\x00")


def _interactive(
    binary: str, endpoint: str, lines: bytes, until: tuple[bytes, ...]
) -> tuple[int, bytes, bytes]:
    proc = subprocess.Popen(
        [binary, "--endpoints", endpoint, "watch", "-i"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(lines)
    proc.stdin.flush()
    out = b""
    while not all(marker in out for marker in until):
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        out += chunk
    proc.stdin.close()  # end of input ends the command, as in etcdctl
    try:
        out += proc.stdout.read()
        err = proc.stderr.read()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, out, err


@pytest.mark.long  # CLI processes fed line by line
def test_interactive_watch(differ: Differ) -> None:
    start = _revision(differ) + 1
    differ.check("put", "wi/a", "1")
    differ.check("put", "wi/b", "2")
    lines = (
        f"watch wi/a --rev {start}\n".encode()
        + b"bogus\nwatch\nwatch a b --prefix\n"
        + f"watch wi/ --prefix --rev {start + 1}\n".encode()
    )
    both = (b"wi/a\n1\n", b"wi/b\n2\n")
    results = [
        _interactive(ETCDCTL_BIN, differ.reference.endpoint, lines, both),
        _interactive(PETCDCTL_BIN, differ.target.endpoint, lines, both),
    ]
    (ref_code, ref_out, ref_err), (tgt_code, tgt_out, tgt_err) = results
    assert ref_code == tgt_code == 3
    # Each watch prints from its own goroutine in etcdctl, line by line: the two events' lines
    # may interleave ("PUT\nPUT\nwi/a\n1\n..."), so the lines are compared, not the blocks.
    assert sorted(ref_out.splitlines()) == sorted(tgt_out.splitlines())
    assert tgt_out.count(b"PUT\n") == 2
    # etcdctl 3.5 lower-cased the EOF message ("Error reading" in 3.4)
    assert tgt_err.endswith(b"Error: error reading watch request line: EOF\n")
    assert ref_err.replace(b"Error reading", b"error reading") == tgt_err
