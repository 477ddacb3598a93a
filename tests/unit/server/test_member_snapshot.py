"""The Snapshot RPC's file (``Member.snapshot_file``): etcd's bbolt format, built from a copy of
the backend in a worker thread (small) or a child process (large), and no temporary file left
in the member dir whatever happens: success, a failed conversion, the caller gone."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from petcd.mvcc.requests import PutRequest
from petcd.server.errors import SnapshotConvertError
from petcd.server.member import SNAPSHOT_CONVERTER, Member
from petcd.snap.bbolt import BoltFile
from petcd.utl.etcd_import import bolt_status
from tests.unit.server.solo import start_solo


def _temp_files(m: Member) -> list[str]:
    return sorted(n for n in os.listdir(m.cfg.member_dir) if n.startswith("snapshot-"))


async def _filled(tmp_path: Path) -> Member:
    m = await start_solo(tmp_path)
    for i in range(50):
        await m.put(PutRequest(b"k%02d" % i, b"v%d" % i))
    return m


def _check(path: str, m: Member) -> None:
    with BoltFile(path) as db:
        db.check()
        keys = [k for k, _ in db.items(b"key")]
        assert len(keys) == 50
        assert set(db.buckets()) >= {b"key", b"meta", b"lease", b"members", b"cluster"}
    assert bolt_status(path).revision == m.kv.current_revision


@pytest.mark.parametrize("converter", ["thread", "process"])
def test_the_snapshot_is_etcds_format_and_only_the_returned_file_is_left(
    tmp_path: Path, converter: str
) -> None:
    asyncio.run(_snapshot_of_each_converter(tmp_path, converter))


async def _snapshot_of_each_converter(tmp_path: Path, converter: str) -> None:
    m = await _filled(tmp_path)
    try:
        if converter == "process":
            m._snapshot_thread_bytes_max = 0
        path = await m.snapshot_file()
        try:
            assert _temp_files(m) == [os.path.basename(path)]
            _check(path, m)
        finally:
            os.remove(path)
        assert _temp_files(m) == []
    finally:
        await m.stop()


def test_a_failed_conversion_is_an_error_with_its_reason_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    asyncio.run(_failed_conversion(tmp_path))


async def _failed_conversion(tmp_path: Path) -> None:
    m = await _filled(tmp_path)
    try:
        m._snapshot_thread_bytes_max = 0
        fail = (
            "import sys; sys.stderr.write('some detail\\nno space left on device\\n'); sys.exit(1)"
        )
        m._snapshot_converter = (sys.executable, "-c", fail)
        with pytest.raises(SnapshotConvertError, match=r"no space left on device$"):
            await m.snapshot_file()
        assert _temp_files(m) == []
        # the member goes on serving, and the next snapshot works
        m._snapshot_converter = SNAPSHOT_CONVERTER
        path = await m.snapshot_file()
        _check(path, m)
        os.remove(path)
    finally:
        await m.stop()


def test_a_caller_gone_mid_conversion_stops_the_child_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    asyncio.run(_caller_gone(tmp_path))


async def _caller_gone(tmp_path: Path) -> None:
    m = await _filled(tmp_path)
    try:
        m._snapshot_thread_bytes_max = 0
        pid_file = tmp_path / "child.pid"
        hang = (
            f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
        )
        m._snapshot_converter = (sys.executable, "-c", hang)
        task = asyncio.create_task(m.snapshot_file())
        for _ in range(500):
            if pid_file.exists() and pid_file.read_text():
                break
            await asyncio.sleep(0.02)
        pid = int(pid_file.read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _temp_files(m) == []
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(pid, 0)
    finally:
        await m.stop()
