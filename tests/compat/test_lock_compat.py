"""Differential tests of ``lock``, and petcdctl's lock interoperating with etcdctl's."""

from __future__ import annotations

import signal
import subprocess

from tests.compat.harness import Differ, lease_ids, revoke_new_leases, run_ctl
from tests.compat.servers import ETCDCTL_BIN, PETCDCTL_BIN

LEASE_IN_KEY = ((rb"/[0-9a-f]{12,16}\b", b"/LEASE"),)


def test_lock_runs_a_command_while_holding_the_lock(differ: Differ) -> None:
    script = 'echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV"'
    differ.check("lock", "lk1", "--", "sh", "-c", script, subs=LEASE_IN_KEY, in_process=False)
    # etcdctl 3.5 exits with the command's status; 3.4 always exits 1.
    ref, tgt = differ.run_both("lock", "lk1", "--ttl", "5", "--", "sh", "-c", "exit 3")
    assert (ref.code, tgt.code) == (1, 3)
    assert ref.stderr == tgt.stderr == b"Error: exit status 3\n"
    differ.check("lock")
    differ.check("get", "lk1/", "--prefix")


def test_waiter_gets_the_lock_when_the_holder_is_interrupted(differ: Differ) -> None:
    leases_before = lease_ids(differ.target)
    endpoint = differ.target.endpoint
    holder = subprocess.Popen(
        [PETCDCTL_BIN, "--endpoints", endpoint, "lock", "lk2"], stdout=subprocess.PIPE
    )
    waiter = None
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.startswith(b"lk2/")
        waiter = subprocess.Popen(
            [ETCDCTL_BIN, "--endpoints", endpoint, "lock", "lk2", "--", "echo", "acquired"],
            stdout=subprocess.PIPE,
        )
        holder.send_signal(signal.SIGINT)
        assert holder.wait(timeout=30) == 0
        out, _ = waiter.communicate(timeout=30)
        assert (waiter.returncode, out) == (0, b"acquired\n")
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    revoke_new_leases(differ.target, leases_before)
    # keep the reference in step with the target: the same number of writes
    # (each of the two locks put its key and deleted it)
    for _ in range(2):
        assert run_ctl(ETCDCTL_BIN, differ.reference, ("put", "lk2/x", "")).code == 0
        assert run_ctl(ETCDCTL_BIN, differ.reference, ("del", "lk2/x")).code == 0
    differ.check("get", "lk2/", "--prefix", "-w", "fields")
