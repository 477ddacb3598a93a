"""petcd.server.compactor: when auto compaction fires and at which revision."""

from __future__ import annotations

from petcd.server.compactor import Compactor
from petcd.server.config import CompactionMode, parse


def test_disabled_by_default() -> None:
    cfg = parse([], {}).config
    assert cfg is not None
    c = Compactor.from_config(cfg)
    assert not c.enabled
    assert c.observe(1e9, 1000) is None


def test_periodic_keeps_the_retention_window() -> None:
    c = Compactor(CompactionMode.PERIODIC, retention=600.0)
    assert c.interval_s == 600.0
    assert c.observe(0.0, 10) is None  # first sample, nothing old enough
    assert c.observe(600.0, 50) == 10  # the revision current 10 minutes ago
    assert c.observe(1200.0, 50) == 50
    assert c.observe(1800.0, 80) is None  # 50 already compacted
    assert c.observe(2400.0, 90) == 80


def test_periodic_long_retention_samples_hourly() -> None:
    c = Compactor(CompactionMode.PERIODIC, retention=10 * 3600.0)
    assert c.interval_s == 3600.0
    revs = [c.observe(h * 3600.0, 100 * h + 1) for h in range(12)]
    assert revs[:10] == [None] * 10
    assert revs[10] == 1 and revs[11] == 101


def test_revision_mode() -> None:
    c = Compactor(CompactionMode.REVISION, retention=100.0, revision_interval_s=1.0)
    assert c.interval_s == 1.0
    assert c.observe(0.0, 50) is None
    assert c.observe(1.0, 150) == 50
    assert c.observe(2.0, 150) is None
    c.compacted(120)
    assert c.observe(3.0, 210) is None
    assert c.observe(4.0, 230) == 130


def test_from_config_revision() -> None:
    cfg = parse(["--auto-compaction-mode=revision", "--auto-compaction-retention=1000"], {}).config
    assert cfg is not None
    c = Compactor.from_config(cfg)
    assert c.enabled and c.retention == 1000 and c.mode is CompactionMode.REVISION
