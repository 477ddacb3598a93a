"""``make-mirror``: petcdctl copies a prefix to another cluster and follows it."""

from __future__ import annotations

import subprocess
import time

import pytest

from petcd.client import Client
from tests.compat.harness import Differ
from tests.compat.servers import PETCDCTL_BIN, ServerProcess


def test_make_mirror_argument_errors(differ: Differ) -> None:
    differ.check("make-mirror")
    differ.check("make-mirror", "a", "b")
    differ.check("make-mirror", "--help", drop_stdout_lines=(b"--dest-password", b"--dest-user"))


@pytest.mark.long  # a mirror process and a second server
def test_mirror_copies_the_base_then_follows_updates(
    differ: Differ, lone_target: ServerProcess
) -> None:
    # The differ's servers live for the whole session and lone_target for the module, and this
    # test runs once per (source, destination) pair: start from empty prefixes on both sides, or
    # the previous pair's mm/c is part of the base copy.
    differ.check("del", "--prefix", "mm/")
    with Client([lone_target.endpoint]) as dest:
        dest.delete(b"copy/", prefix=True)
    differ.check("put", "mm/a", "1")
    differ.check("put", "mm/b", "2")
    proc = subprocess.Popen(
        [
            PETCDCTL_BIN,
            "--endpoints",
            differ.target.endpoint,
            "make-mirror",
            "--prefix",
            "mm/",
            "--dest-prefix",
            "copy/",
            lone_target.endpoint,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with Client([lone_target.endpoint]) as dest:

            def copied() -> list[tuple[bytes, bytes]]:
                return [(kv.key, kv.value) for kv in dest.get(b"copy/", prefix=True).kvs]

            def wait_for(expected: list[tuple[bytes, bytes]]) -> None:
                deadline = time.monotonic() + 20
                while copied() != expected and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert copied() == expected

            wait_for([(b"copy/a", b"1"), (b"copy/b", b"2")])
            differ.check("put", "mm/c", "3")
            differ.check("del", "mm/a")
            differ.check("put", "other", "not mirrored")
            wait_for([(b"copy/b", b"2"), (b"copy/c", b"3")])
    finally:
        proc.kill()
        proc.wait()
