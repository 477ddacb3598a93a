"""Differential tests of ``endpoint health``, ``endpoint status`` and ``version``."""

from __future__ import annotations

import re

import petcd
from tests.compat.harness import Differ, normalise


def test_endpoint_status_every_format(differ: Differ) -> None:
    differ.check("endpoint", "status")
    differ.check("endpoint", "status", "-w", "json")
    differ.check("endpoint", "status", "-w", "fields")
    differ.check("endpoint", "status", "-w", "table")
    differ.check("endpoint", "status", "-w", "protobuf")
    differ.check("endpoint", "status", "--cluster")


def test_endpoint_health_every_format(differ: Differ) -> None:
    # etcdctl 3.4 prints "is healthy" on stderr, 3.5 on stdout.
    ref, tgt = differ.run_both("endpoint", "health")
    assert ref.code == tgt.code == 0
    assert normalise(ref.stderr, differ.reference.endpoint) == normalise(
        tgt.stdout, differ.target.endpoint
    )
    assert tgt.stderr == b""
    differ.check("endpoint", "health", "-w", "json")
    differ.check("endpoint", "health", "-w", "fields")
    differ.check("endpoint", "health", "-w", "table")
    differ.check("endpoint", "health", "-w", "protobuf")
    differ.check("endpoint", "health", "--cluster", "-w", "json")


def test_endpoint_errors(differ: Differ) -> None:
    ref, tgt = differ.run_both(
        "--endpoints",
        "127.0.0.1:1",
        "--command-timeout=500ms",
        "endpoint",
        "status",
        with_endpoint=False,
    )
    assert ref.code == tgt.code == 1
    expected = b"Failed to get the status of endpoint 127.0.0.1:1 (context deadline exceeded)\n"
    assert expected in ref.stderr and expected in tgt.stderr
    ref, tgt = differ.run_both(
        "--endpoints",
        "127.0.0.1:1",
        "--command-timeout=500ms",
        "endpoint",
        "health",
        with_endpoint=False,
    )
    assert ref.code == tgt.code == 1
    unhealthy = b"127.0.0.1:1 is unhealthy: failed to commit proposal: context deadline exceeded\n"
    assert unhealthy in ref.stderr and unhealthy in tgt.stderr
    assert tgt.stderr.endswith(b"Error: unhealthy cluster\n")
    differ.check("endpoint")
    differ.check("endpoint", "bogus")


def test_endpoint_hashkv(differ: Differ) -> None:
    differ.check("put", "h/k", "v")
    differ.check("endpoint", "hashkv")
    differ.check("endpoint", "hashkv", "-w", "json")
    differ.check("endpoint", "hashkv", "-w", "fields")
    differ.check("endpoint", "hashkv", "-w", "table")
    differ.check("endpoint", "hashkv", "--rev", "2")
    differ.check("endpoint", "hashkv", "--rev", "100000")


def test_version_reports_etcdctl_3_5(differ: Differ) -> None:
    ref, tgt = differ.run_both("version")
    assert re.fullmatch(rb"etcdctl version: 3\.4\.\d+\nAPI version: 3\.4\n", ref.stdout)
    assert tgt.stdout == f"etcdctl version: {petcd.ETCD_VERSION}\nAPI version: 3.5\n".encode()
    assert tgt.code == 0
