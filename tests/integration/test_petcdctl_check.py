"""``petcdctl check perf`` and ``check datascale`` against a real petcd member.

The load models run for 60 seconds (perf); these tests shorten them in-process, except the
Ctrl-C test, which runs the installed ``petcdctl`` with etcdctl's own model and stops it.
The long test runs the full minute of ``check perf`` with petcdctl and with the real
etcdctl, both of which must pass against petcd.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from petcd.ctl import check
from petcd.ctl.main import run
from tests.integration.petcd_proc import REPO, PetcdProcess, etcdctl

PETCDCTL_BIN = str(REPO / ".venv" / "bin" / "petcdctl")


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(tmp_path_factory.mktemp("check") / "data")
    try:
        p.start()
        yield p
    finally:
        p.stop()


def petcdctl(endpoint: str, *args: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    code = run(
        ["--endpoints", endpoint, *args],
        stdin=io.BytesIO(),
        stdout=out,
        stderr=err,
        environ=env,
    )
    return code, out.getvalue().decode(), err.getvalue().decode()


def lines_after_bar(stdout: str) -> list[str]:
    """The lines after the progress report (which redraws itself with carriage returns)."""
    return stdout.split("\r")[-1].split("\n")[1:]


def left_under(endpoint: str, prefix: str) -> str:
    done = etcdctl(endpoint, "get", "--prefix", prefix, "--keys-only")
    assert done.returncode == 0, done
    return done.stdout


def test_perf_passes_and_cleans_up(member: PetcdProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(check.PERF_MODELS, "s", check.PerfModel(150, 50, 3.0))
    code, out, err = petcdctl(member.endpoint, "check", "perf", "--auto-compact", "--auto-defrag")
    assert (code, err) == (0, ""), out
    assert out.startswith("\r 0 / 3    0.00%\r 1 / 3   33.33%"), out
    assert "\r 3 / 3  100.00% 3s\n" in out, out
    lines = lines_after_bar(out)
    assert lines[0].startswith("Compacting with revision "), out
    revision = int(lines[0].rsplit(" ", 1)[1])
    assert lines[1] == f"Compacted with revision {revision}"
    assert lines[2:4] == [f'Defragmenting "{member.endpoint}"', f'Defragmented "{member.endpoint}"']
    # 150 writes/s asked; a loaded machine completes a few fewer in the 3 s (still a PASS)
    rate = re.fullmatch(r"PASS: Throughput is (\d+) writes/s", lines[4])
    assert rate is not None and 140 <= int(rate.group(1)) <= 151, out
    assert lines[5].startswith("PASS: Slowest request took 0.") and lines[5].endswith("s")
    assert lines[6].startswith("PASS: Stddev is 0.")
    assert lines[7:] == ["PASS", ""]
    assert left_under(member.endpoint, check.PERF_PREFIX) == ""
    # The compaction really happened: the revision before the delete is gone.
    old = etcdctl(member.endpoint, "get", "x", "--rev", str(revision - 1))
    assert old.returncode == 1 and "required revision has been compacted" in old.stderr, old


def test_perf_fails_when_the_rate_is_not_reached(
    member: PetcdProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A million puts a second from 2 writers: far beyond any member.
    monkeypatch.setitem(check.PERF_MODELS, "m", check.PerfModel(1_000_000, 2, 1.0))
    code, out, err = petcdctl(member.endpoint, "check", "perf", "--load", "medium")
    assert (code, err) == (1, ""), out
    lines = lines_after_bar(out)
    assert lines[0].startswith("FAIL: Throughput too low: ") and lines[0].endswith(" writes/s")
    assert lines[-2:] == ["FAIL", ""]
    assert left_under(member.endpoint, check.PERF_PREFIX) == ""


def test_datascale_reports_memory_and_cleans_up(
    member: PetcdProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(check.DATASCALE_MODELS, "s", check.DatascaleModel(2000, 1024, 20))
    code, out, err = petcdctl(member.endpoint, "check", "datascale", "--auto-compact")
    assert (code, err) == (0, ""), out
    head, _, rest = out.partition("\n")
    assert head == (
        "Start data scale check for work load "
        "[2000 key-value pairs, 1024 bytes per key-value, 20 concurrent clients]."
    )
    assert rest.startswith("\r 0 / 2000    0.00%") and "\r 2000 / 2000  100.00% " in rest, out
    lines = lines_after_bar(out)
    assert lines[0].startswith("Compacting with revision ")
    assert lines[2].startswith("PASS: Approximate system memory used : ")
    assert lines[2].endswith(" MB.") and lines[3:] == [""], out
    assert left_under(member.endpoint, check.DATASCALE_PREFIX) == ""


def test_ctrl_c_stops_the_load_and_still_cleans_up(member: PetcdProcess) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    proc = subprocess.Popen(
        [PETCDCTL_BIN, "--endpoints", member.endpoint, "check", "perf"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        time.sleep(4.0)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - started < 15.0
    assert proc.returncode == 0, (out, err)
    assert " / 60 " in out and "1m0s" not in out, out
    assert lines_after_bar(out)[-2:] == ["PASS", ""], out
    assert left_under(member.endpoint, check.PERF_PREFIX) == ""


@pytest.mark.long
def test_a_full_check_perf_passes_with_petcdctl_and_etcdctl(member: PetcdProcess) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    mine = subprocess.run(
        [PETCDCTL_BIN, "--endpoints", member.endpoint, "check", "perf"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert mine.returncode == 0, mine
    # text=True reads the progress report's carriage returns as line ends
    assert "\n 60 / 60  100.00% 1m0s\nPASS: Throughput is " in mine.stdout, mine.stdout
    assert lines_after_bar(mine.stdout)[-2:] == ["PASS", ""], mine.stdout
    theirs = etcdctl(member.endpoint, "check", "perf", timeout_s=180)
    assert theirs.returncode == 0, theirs
    assert theirs.stdout.rstrip().endswith("PASS"), theirs.stdout
    assert left_under(member.endpoint, check.PERF_PREFIX) == ""
