"""Differential tests of ``elect``, and petcdctl's election against etcdctl's."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.compat.harness import Differ, lease_ids, revoke_new_leases, run_ctl
from tests.compat.servers import ETCDCTL_BIN, PETCDCTL_BIN


def test_elect_argument_errors(differ: Differ) -> None:
    differ.check("elect")
    differ.check("elect", "e")
    differ.check("elect", "e", "v", "-l")
    differ.check("elect", "a", "b", "c")
    differ.check("elect", "--help")


@pytest.mark.long  # a few seconds: several CLI processes
def test_leadership_passes_between_petcdctl_and_etcdctl(differ: Differ) -> None:
    ep = differ.target.endpoint

    def start(binary: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [binary, "--endpoints", ep, "elect", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    leases_before = lease_ids(differ.target)
    observer = start(PETCDCTL_BIN, "-l", "el")
    first = start(PETCDCTL_BIN, "el", "alpha")
    second = None
    try:
        assert first.stdout is not None and observer.stdout is not None
        assert first.stdout.readline().startswith(b"el/")
        assert first.stdout.readline() == b"alpha\n"
        assert observer.stdout.readline().startswith(b"el/")
        assert observer.stdout.readline() == b"alpha\n"
        second = start(ETCDCTL_BIN, "el", "beta")
        first.send_signal(signal.SIGINT)  # resign
        assert first.wait(timeout=30) == 0
        assert second.stdout is not None
        assert second.stdout.readline().startswith(b"el/")
        assert second.stdout.readline() == b"beta\n"
        assert observer.stdout.readline().startswith(b"el/")
        assert observer.stdout.readline() == b"beta\n"
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=30) == 0
        observer.send_signal(signal.SIGINT)
        assert observer.wait(timeout=30) == 0
    finally:
        for proc in (observer, first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    revoke_new_leases(differ.target, leases_before)
    # the two campaigns each put and deleted one key on the target
    for _ in range(2):
        assert run_ctl(ETCDCTL_BIN, differ.reference, ("put", "el/x", "")).code == 0
        assert run_ctl(ETCDCTL_BIN, differ.reference, ("del", "el/x")).code == 0
    differ.check("get", "el/", "--prefix", "-w", "fields")
