"""Differential tests of ``lease grant|revoke|timetolive|list|keep-alive``.

Lease ids are chosen by each server, so the test learns both ids and lets the
harness print them as ``<L1>``..; a lease's remaining TTL depends on timing and
is normalised where it is printed.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import Client
from tests.compat.harness import Differ
from tests.compat.servers import PETCDCTL_BIN

REMAINING = (
    (rb"remaining\(\d+s\)", b"remaining(Ns)"),
    (rb'"ttl":\d+', b'"ttl":N'),
    (rb'^"TTL" : \d+$', b'"TTL" : N'),
)


def _grant(differ: Differ, name: str, ttl: str) -> None:
    ref, tgt = differ.run_both("lease", "grant", ttl)
    assert ref.code == tgt.code == 0, (ref, tgt)
    ids = [int(re.match(rb"lease ([0-9a-f]+) granted", r.stdout).group(1), 16) for r in (ref, tgt)]  # type: ignore[union-attr]
    differ.alias(name, ids[0], ids[1])
    assert ref.stdout.replace(b"%016x" % ids[0], b"L") == tgt.stdout.replace(
        b"%016x" % ids[1], b"L"
    )


def test_lease_lifecycle(differ: Differ) -> None:
    _grant(differ, "L1", "100")
    _grant(differ, "L2", "60")
    differ.check("put", "lk/a", "1", "--lease", "{L1}")
    # (one key per lease: etcd lists a lease's keys in map order)
    differ.check("put", "lk/b", "2", "--lease", "{L2}")
    differ.check("lease", "timetolive", "{L1}", subs=REMAINING)
    differ.check("lease", "timetolive", "{L1}", "--keys", subs=REMAINING)
    differ.check("lease", "timetolive", "{L1}", "--keys", "-w", "json", subs=REMAINING)
    differ.check("lease", "timetolive", "{L2}", "-w", "json", subs=REMAINING)
    differ.check("lease", "timetolive", "{L1}", "--keys", "-w", "fields", subs=REMAINING)
    differ.check("lease", "timetolive", "{L1}", "-w", "table")
    differ.check("lease", "list", subs=((rb"^<L2>\n<L1>\n", b"<L1>\n<L2>\n"),))
    differ.check("lease", "keep-alive", "--once", "{L1}")
    differ.check("lease", "keep-alive", "--once", "{L1}", "-w", "json")
    differ.check("lease", "keep-alive", "--once", "{L2}", "-w", "fields")
    differ.check(
        "lease", "keep-alive", "--once", "{L2}", "-w", "protobuf", proto=rpc_pb2.ResponseHeader
    )
    differ.check("get", "lk/", "--prefix", "-w", "json")
    differ.check("put", "lk/a", "3", "--ignore-lease")
    differ.check("get", "lk/a", "-w", "fields")
    differ.check("lease", "revoke", "{L1}")
    differ.check("get", "lk/", "--prefix")
    differ.check("lease", "revoke", "{L1}")
    differ.check("lease", "timetolive", "{L1}")
    differ.check("lease", "timetolive", "{L1}", "-w", "json")
    differ.check("lease", "keep-alive", "--once", "{L1}")
    differ.check("lease", "revoke", "{L2}", "-w", "json")
    differ.check("lease", "list", "-w", "json")
    differ.check("lease", "list", "-w", "fields")
    _grant(differ, "L3", "5")
    differ.check("lease", "grant", "30", "-w", "table")


def test_lease_argument_errors(differ: Differ) -> None:
    differ.check("lease", "grant")
    differ.check("lease", "grant", "ten")
    differ.check("lease", "revoke")
    differ.check("lease", "revoke", "xyz")
    differ.check("lease", "timetolive")
    differ.check("lease", "timetolive", "0x12")
    differ.check("lease", "keep-alive")
    differ.check("lease", "keep-alive", "nothex", "--once")
    differ.check("lease")
    differ.check("lease", "grant", "--help")
    # etcdctl 3.5's help for --once reads "...and cobrautl.Exits immediately" (sic).
    differ.check("lease", "keep-alive", "--help", drop_stdout_lines=(b"--once[=false]",))


@pytest.mark.long  # a few seconds: many processes, see README
def test_keep_alive_runs_until_the_lease_is_revoked(differ: Differ) -> None:
    # etcdctl 3.4 and 3.5 print the same; run petcdctl for real and revoke midway.
    with Client([differ.target.endpoint]) as client:
        lease_id = client.lease_grant(3).ID
        proc = subprocess.Popen(
            [
                PETCDCTL_BIN,
                "--endpoints",
                differ.target.endpoint,
                "lease",
                "keep-alive",
                f"{lease_id:x}",
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first == f"lease {lease_id:016x} keepalived with TTL(3)\n".encode()
            client.lease_revoke(lease_id)
            rest = proc.stdout.read()
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
    assert rest.endswith(f"lease {lease_id:016x} expired or revoked.\n".encode())
