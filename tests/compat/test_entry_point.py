"""The installed ``petcdctl`` console script behaves like ``etcdctl`` end to end."""

from __future__ import annotations

import subprocess

from tests.compat.harness import Differ, run_ctl
from tests.compat.servers import PETCDCTL_BIN


def test_console_script_against_etcdctl(differ: Differ) -> None:
    ref = run_ctl("/usr/bin/etcdctl", differ.reference, ("put", "entry", "point"))
    tgt = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "put", "entry", "point"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert (ref.code, ref.stdout) == (tgt.returncode, tgt.stdout) == (0, b"OK\n")
    tgt = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "get", "entry", "-w", "table"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert tgt.returncode == 4
    assert tgt.stderr == b"Error: table not supported as output format\n"
    piped = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "put", "entry"],
        input=b"from a pipe",
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert piped.returncode == 0
    got = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", differ.target.endpoint, "get", "entry", "--print-value-only"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert got.stdout == b"from a pipe\n"
