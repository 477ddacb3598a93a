"""The member's Prometheus metrics, under etcd's metric names.

Theory of operation
-------------------
Dashboards and alerts written for etcd look for ``etcd_server_has_leader``,
``etcd_server_proposals_committed_total``, ``etcd_disk_wal_fsync_duration_seconds`` and so on;
petcd exports the same names, with etcd's help texts in spirit and the same labels, for what it
measures, and the standard ``process_*`` metrics (RSS, CPU seconds, open fds) that etcd's
process collector exports. ``ServerMetrics`` owns one ``CollectorRegistry`` per member (not the
process-global default registry), so that several members in one test process do not collide;
``petcd.http`` serves ``render()`` on ``/metrics``.

The member updates the metrics from its event loop; nothing here does I/O but ``render()``,
whose process metrics read ``/proc/self`` (a few small files, once per scrape).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from petcd import ETCD_CLUSTER_VERSION, ETCD_VERSION

_DISK_BUCKETS = tuple(0.001 * 2**i for i in range(14))  # 1 ms .. 8 s, as etcd's


class ServerMetrics:
    def __init__(self) -> None:
        r = CollectorRegistry(auto_describe=True)
        self.registry = r
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ... under
        # the names etcd's Go process collector uses: `etcdctl check datascale` reads the RSS.
        ProcessCollector(registry=r)

        def gauge(name: str, text: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, text, labels, registry=r)

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, registry=r)

        def disk_histogram(name: str, text: str) -> Histogram:
            return Histogram(name, text, buckets=_DISK_BUCKETS, registry=r)

        self.has_leader = gauge(
            "etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."
        )
        self.is_leader = gauge(
            "etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."
        )
        self.leader_changes = counter(
            "etcd_server_leader_changes_seen", "The number of leader changes seen."
        )
        self.proposals_committed = gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
        )
        self.proposals_applied = gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
        )
        self.proposals_pending = gauge(
            "etcd_server_proposals_pending", "The current number of pending proposals to commit."
        )
        self.proposals_failed = counter(
            "etcd_server_proposals_failed", "The total number of failed proposals seen."
        )
        self.slow_read_indexes = counter(
            "etcd_server_slow_read_indexes",
            "The total number of pending read indexes not in sync with leader's or timed out "
            "read index requests.",
        )
        self.server_id = gauge(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            ["server_id"],
        )
        self.server_version = gauge(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            ["server_version"],
        )
        self.server_version.labels(ETCD_VERSION).set(1)
        self.cluster_version = gauge(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            ["cluster_version"],
        )
        # etcd labels it with the major.minor only (version.Cluster: "3.5").
        self.cluster_version.labels(ETCD_CLUSTER_VERSION.rsplit(".", 1)[0]).set(1)
        self.go_info = gauge("petcd_python_info", "Python runtime version.", ["version"])
        self.go_info.labels(platform.python_version()).set(1)
        self.wal_fsync_seconds = disk_histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
        )
        self.backend_commit_seconds = disk_histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
        )
        self.db_total_size_bytes = gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
        )
        self.db_in_use_bytes = gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
        )
        self.auth_revision = gauge(
            "etcd_debugging_auth_revision", "The current revision of auth store."
        )
        self.snapshot_save_seconds = disk_histogram(
            "etcd_debugging_snap_save_total_duration_seconds",
            "The total latency distributions of save called by snapshot.",
        )

        self._mvcc: Callable[[], tuple[int, int, int, int, int]] | None = None
        self._watch: Callable[[], tuple[int, int, int]] | None = None
        r.register(_MvccMetrics(self))

    def set_mvcc_source(self, source: Callable[[], tuple[int, int, int, int, int]]) -> None:
        """Where the mvcc counters come from at each scrape: (puts, deletes, ranges, txns,
        live keys)."""
        self._mvcc = source

    def set_watch_source(self, source: Callable[[], tuple[int, int, int]]) -> None:
        """Where the watch gauges come from at each scrape: (watch streams, watchers, slow
        watchers)."""
        self._watch = source

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))


class _MvccMetrics:
    """etcd's ``etcd_mvcc_{put,delete,range,txn}_total``, ``etcd_debugging_mvcc_keys_total``
    and the watch gauges ``etcd_debugging_mvcc_{watch_stream,watcher,slow_watcher}_total``,
    read from the store at each scrape (the store keeps plain counts: no metric object on the
    write path)."""

    _WATCH_GAUGES = (
        ("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams."),
        ("etcd_debugging_mvcc_watcher_total", "Total number of watchers."),
        ("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers."),
    )

    _COUNTERS = (
        ("etcd_mvcc_put", "Total number of puts seen by this member."),
        ("etcd_mvcc_delete", "Total number of deletes seen by this member."),
        ("etcd_mvcc_range", "Total number of ranges seen by this member."),
        ("etcd_mvcc_txn", "Total number of txns seen by this member."),
    )

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        watch = self._metrics._watch
        if watch is not None:
            for (name, text), n in zip(self._WATCH_GAUGES, watch(), strict=True):
                yield GaugeMetricFamily(name, text, value=n)
        source = self._metrics._mvcc
        if source is None:
            return
        *counts, keys = source()
        for (name, text), n in zip(self._COUNTERS, counts, strict=True):
            yield CounterMetricFamily(name, text, value=n)
        yield GaugeMetricFamily("etcd_debugging_mvcc_keys_total", "Total number of keys.", keys)
