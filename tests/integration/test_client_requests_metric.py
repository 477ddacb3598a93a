"""``etcd_server_client_requests_total`` and go-grpc-prometheus' ``grpc_server_*`` counters
count what the real etcd counts for the same etcdctl.

One real etcd and one petcd, each with ``--listen-metrics-urls``; the same etcdctl commands
(unary calls, a watch stream) against both; the counters' increases must be the same: per
(type, client_api_version), with etcdctl 3.4's ``client-api-version`` label, and per method
(and code) for calls started, handled, messages received and sent.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.petcd_proc import PETCD_BIN, etcdctl
from tests.ports import free_port
from tests.robustness.cluster import ETCD_BIN, Member

_SAMPLE = re.compile(
    r'^etcd_server_client_requests_total\{client_api_version="([^"]*)",type="(\w+)"\} ([0-9.e+]+)$',
    re.MULTILINE,
)

WATCH_TIMEOUT_S = 15.0


def _member(base: Path, binary: str) -> tuple[Member, str]:
    client, peer, metrics = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
    data_dir = base / "data"
    args = [
        "--name", "m", "--data-dir", str(data_dir),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"m={peer}", "--listen-metrics-urls", metrics,
    ]  # fmt: skip
    m = Member(data_dir, name="m", args=args, binary=binary)
    m.client_port = int(client.rsplit(":", 1)[1])
    return m, metrics


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[tuple[Member, str]]]:
    if not os.path.exists(ETCD_BIN):
        pytest.skip("real etcd not installed")
    started = [_member(tmp_path / "etcd", ETCD_BIN), _member(tmp_path / "petcd", PETCD_BIN)]
    try:
        for m, _ in started:
            m.start()
        yield started
    finally:
        for m, _ in started:
            m.stop()


def _counts(metrics_url: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(t, v): float(n) for v, t, n in _SAMPLE.findall(text)}


def _drive(endpoint: str) -> None:
    assert etcdctl(endpoint, "put", "k", "v").returncode == 0
    assert etcdctl(endpoint, "get", "k").returncode == 0
    assert etcdctl(endpoint, "endpoint", "status").returncode == 0
    env = {**os.environ, "ETCDCTL_API": "3"}
    # From revision 1: the put above is replayed, so the first line proves the stream is open.
    watch = subprocess.Popen(
        ["/usr/bin/etcdctl", f"--endpoints={endpoint}", "watch", "k", "--rev=1"],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert watch.stdout is not None
        ready, _, _ = select.select([watch.stdout], [], [], WATCH_TIMEOUT_S)
        assert ready, "no watch event"
        assert watch.stdout.readline() == b"PUT\n"
    finally:
        watch.kill()
        watch.wait(timeout=10)


def test_the_counter_grows_as_etcds_for_the_same_commands(
    servers: list[tuple[Member, str]],
) -> None:
    deltas = []
    for m, metrics_url in servers:
        before = _counts(metrics_url)
        _drive(m.endpoint)
        after = _counts(metrics_url)
        deltas.append({k: n - before.get(k, 0.0) for k, n in after.items() if n != before.get(k)})
    reference, target = deltas
    assert reference == {("unary", "3.4"): 3.0, ("stream", "3.4"): 1.0}, reference
    assert target == reference


_GRPC_SAMPLE = re.compile(
    r"^grpc_server_(started|handled|msg_received|msg_sent)_total\{([^}]*)\} ([0-9.e+]+)$",
    re.MULTILINE,
)


def _grpc_counts(metrics_url: str) -> dict[tuple[str, str], float]:
    """(counter, its labels) -> value, for the grpc_server_* counters."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = {}
    for name, labels, n in _GRPC_SAMPLE.findall(text):
        ordered = ",".join(sorted(labels.split(",")))  # label order is the exporter's
        found[(name, ordered)] = float(n)
    return found


def test_grpc_server_counters_grow_as_etcds_for_the_same_commands(
    servers: list[tuple[Member, str]],
) -> None:
    deltas = []
    for m, metrics_url in servers:
        before = _grpc_counts(metrics_url)
        _drive(m.endpoint)
        # The watch stream ends (etcdctl was killed) a moment later: wait for its status.
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        while True:
            after = _grpc_counts(metrics_url)
            watch_ended = any(
                name == "handled" and 'grpc_method="Watch"' in labels for name, labels in after
            )
            if watch_ended or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        deltas.append({k: n - before.get(k, 0.0) for k, n in after.items() if n != before.get(k)})
    reference, target = deltas
    # put, get, endpoint status (a Status call), then a watch with one event: the stream's
    # create request in, its created answer and the event out.
    watch = 'grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"'
    assert reference[("msg_received", watch)] == 1.0, reference
    assert reference[("msg_sent", watch)] == 2.0, reference
    assert target == reference
