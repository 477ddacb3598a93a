"""The real etcdctl's ``check datascale`` against petcd.

``etcdctl check datascale`` reads ``process_resident_memory_bytes`` from each endpoint's
``/metrics`` before and after its puts (the name etcd's Go process collector exports) and
fails without it. It then deletes what it wrote.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.petcd_proc import PetcdProcess, etcdctl


def test_etcdctl_check_datascale_passes(tmp_path: Path) -> None:
    p = PetcdProcess(tmp_path / "data")
    try:
        p.start()
        done = etcdctl(p.endpoint, "check", "datascale", "--load=s", timeout_s=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "PASS: Approximate system memory used : " in done.stdout, done.stdout
        left = etcdctl(p.endpoint, "get", "--prefix", "/etcdctl-check-datascale", "--keys-only")
        assert (left.returncode, left.stdout) == (0, ""), left
    finally:
        p.stop()
