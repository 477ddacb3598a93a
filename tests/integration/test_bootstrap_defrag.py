"""etcd's --experimental-bootstrap-defrag-threshold-megabytes: defragment the backend at start
when that frees at least the threshold, else log "Skipping defragmentation" (etcd's e2e
TestBootstrapDefragFlag waits for that line)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.petcd_proc import PetcdProcess, etcdctl


def _messages(p: PetcdProcess) -> list[str]:
    return [str(r.get("msg")) for r in p.log_records()]


def _db_size(p: PetcdProcess) -> int:
    out = etcdctl(p.endpoint, "endpoint", "status", "-w", "json")
    return int(json.loads(out.stdout)[0]["Status"]["dbSize"])


def test_defragment_at_start_only_above_the_threshold(tmp_path: Path) -> None:
    p = PetcdProcess(tmp_path / "data")
    p.start()
    try:
        value = "x" * 65536
        for i in range(64):  # 4 MiB of values, then nothing of them left after compaction
            assert etcdctl(p.endpoint, "put", f"k{i}", value).returncode == 0
        assert etcdctl(p.endpoint, "del", "k", "--prefix").returncode == 0
        rev = json.loads(etcdctl(p.endpoint, "endpoint", "status", "-w", "json").stdout)[0]
        revision = rev["Status"]["header"]["revision"]
        assert etcdctl(p.endpoint, "compact", str(revision), "--physical").returncode == 0
        p.terminate()

        p.extra_args = ["--experimental-bootstrap-defrag-threshold-megabytes", "1000"]
        p.start()
        assert "Skipping defragmentation" in _messages(p)
        before = _db_size(p)
        p.terminate()

        p.extra_args = ["--experimental-bootstrap-defrag-threshold-megabytes", "1"]
        p.start()
        assert "finished defragmenting directory" in _messages(p)
        after = _db_size(p)
        assert after < before - (1 << 20), (before, after)
        assert etcdctl(p.endpoint, "put", "still", "works").returncode == 0
    finally:
        p.stop()
