"""Does a zero-filled WAL segment make fdatasync cheaper than a posix_fallocate'd one?

Theory of operation
-------------------
``posix_fallocate`` on ext4 reserves *unwritten* extents. The first write into such a block
turns (part of) the extent into a written one at I/O completion, a metadata change, so the
fdatasync after it waits for a journal commit. A segment whose blocks were all written once
(zeros, then fsync) has no unwritten extents, and a later fdatasync only flushes data.
docs/enhancements/0004-transport.md (hypothesis H-e) found this worth 0.1 ms p50 in one run;
this script measures it again, in two ways, figures only (never a pass/fail):

``standalone``
    Files of 64 MiB prepared as ``fallocate``, ``zero`` (1 MiB blocks of real zeros, fsync),
    ``falloc+zero`` (both), ``ftruncate`` (sparse). Then ``--writes`` writes of 300 bytes at
    the next offset (304 bytes on: a WAL record's 8-byte alignment), each followed by an
    fdatasync, in runs of ``--block`` writes per file, the files in a random order per turn.
    Reports p50/p90/mean over all writes, over the writes that touch a new 4 KiB block (the
    ones that can need a journal commit) and over the others. ``--meta-noise N`` runs N
    processes that create, fsync and rename small files meanwhile (other work committing the
    same ext4 journal, as other test runs on a shared machine do).

``server``
    Two petcd members running the same binary. Both are started once (making
    their first 64 MiB segment with posix_fallocate) and stopped; the WAL segments of the
    second (``zero``) are then rewritten in place as fully written files (same bytes, same
    size, so the on-disk format is the same: only the extents differ) and both are started
    again. Then put with 1 client and with 100 clients / 10 connections, interleaved, for
    ``--rounds`` rounds; per measurement requests/s, p50/p99 from the load generator, the
    server's CPU time per request and the mean of ``etcd_disk_wal_fsync_duration_seconds``
    from /metrics (difference of _sum / _count around the measurement). JSON with ``--out``.
    ``--petcd`` picks the binary (default: this tree's .venv). With ``--before PETCD`` the two
    members are instead that binary (``before``) and ``--petcd`` (``after``), nothing
    rewritten: for an implementation against main. ``--warmup S`` first runs S seconds of
    unrecorded put against each member (so that an implementation's one-off work is over).

Every process started here is stopped by pid in a ``finally``; data lives in a temporary
directory under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))
from tests.ports import free_port  # noqa: E402  (the tests' rule: never an ephemeral port)

LOADGEN = BENCH_DIR / "bin" / "loadgen"
PETCD = REPO_DIR / ".venv" / "bin" / "petcd"
SEGMENT = 64 << 20
CHUNK = 1 << 20
ALIGN = 304  # a 300-byte record padded to 8 bytes


# -- helpers ------------------------------------------------------------------------------


def load1() -> float:
    return os.getloadavg()[0]


def stats_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    n = len(v)
    return {
        "n": n,
        "p50_ms": round(v[n // 2] * 1e3, 4),
        "p90_ms": round(v[int(n * 0.9)] * 1e3, 4),
        "mean_ms": round(statistics.fmean(v) * 1e3, 4),
    }


def fill_written(path: Path) -> None:
    """Rewrite ``path`` so that every block of it is written: same bytes, same size."""
    data = path.read_bytes()
    tmp = path.with_name(path.name + ".zf")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for off in range(0, len(data), CHUNK):
            os.pwrite(fd, data[off : off + CHUNK], off)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def unwritten_extents(path: Path) -> int | None:
    """How many extents ``filefrag -v`` flags unwritten (None: filefrag unavailable)."""
    try:
        out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    if out.returncode != 0:
        return None
    return sum(1 for line in out.stdout.splitlines() if "unwritten" in line)


def wal_segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "member" / "wal").glob("*.wal"))


def start_meta_noise(n: int, base: Path) -> list[subprocess.Popen[bytes]]:
    code = (
        "import os, sys, time\n"
        "d = sys.argv[1]; os.makedirs(d, exist_ok=True); i = 0\n"
        "while True:\n"
        "    p = f'{d}/f{i % 50}'\n"
        "    fd = os.open(p + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
        "    os.write(fd, b'x' * 5000); os.fsync(fd); os.close(fd); os.rename(p + '.tmp', p)\n"
        "    dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd); i += 1\n"
        "    time.sleep(0.002)\n"
    )
    return [
        subprocess.Popen([sys.executable, "-c", code, str(base / f"noise{k}")]) for k in range(n)
    ]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- standalone ---------------------------------------------------------------------------

KINDS = ("fallocate", "zero", "falloc+zero", "ftruncate")


def prepare(kind: str, path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    if kind in ("fallocate", "falloc+zero"):
        os.posix_fallocate(fd, 0, SEGMENT)
    if kind in ("zero", "falloc+zero"):
        zero = bytes(CHUNK)
        for off in range(0, SEGMENT, CHUNK):
            os.pwrite(fd, zero, off)
    if kind == "ftruncate":
        os.ftruncate(fd, SEGMENT)
    os.fsync(fd)
    return fd


def run_standalone(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    record = rng.randbytes(300)
    fds: dict[str, int] = {}
    prep_s: dict[str, float] = {}
    for kind in KINDS:
        t = time.perf_counter()
        fds[kind] = prepare(kind, work / kind)
        prep_s[kind] = time.perf_counter() - t
    offsets = dict.fromkeys(KINDS, 0)
    every: dict[str, list[float]] = {k: [] for k in KINDS}
    new_block: dict[str, list[float]] = {k: [] for k in KINDS}
    same_block: dict[str, list[float]] = {k: [] for k in KINDS}
    load_before = load1()
    try:
        for _ in range(args.writes // args.block):
            order = list(KINDS)
            rng.shuffle(order)
            for kind in order:
                fd = fds[kind]
                for _ in range(args.block):
                    off = offsets[kind]
                    t = time.perf_counter()
                    os.pwrite(fd, record, off)
                    os.fdatasync(fd)
                    dt = time.perf_counter() - t
                    every[kind].append(dt)
                    fresh = off % 4096 == 0 or off // 4096 != (off + len(record) - 1) // 4096
                    (new_block if fresh else same_block)[kind].append(dt)
                    offsets[kind] = off + ALIGN
    finally:
        for fd in fds.values():
            os.close(fd)
    return {
        "load1_before": load_before,
        "load1_after": load1(),
        "prepare_ms": {k: round(v * 1e3, 1) for k, v in prep_s.items()},
        "all": {k: stats_ms(v) for k, v in every.items()},
        "new_block": {k: stats_ms(v) for k, v in new_block.items()},
        "same_block": {k: stats_ms(v) for k, v in same_block.items()},
    }


def print_standalone(res: dict[str, Any]) -> None:
    print(f"load1 {res['load1_before']:.2f} -> {res['load1_after']:.2f}")
    for kind in KINDS:
        parts = []
        for part in ("all", "new_block", "same_block"):
            s = res[part][kind]
            parts.append(
                f"{part} p50 {s['p50_ms']:.3f} p90 {s['p90_ms']:.3f} mean {s['mean_ms']:.3f}"
            )
        print(f"  {kind:12s} " + " | ".join(parts) + f"  (prepare {res['prepare_ms'][kind]} ms)")


# -- server -------------------------------------------------------------------------------


class Member:
    def __init__(self, name: str, work: Path, binary: Path = PETCD) -> None:
        self.name = name
        self.binary = binary
        self.data_dir = work / name
        self.log = work / f"{name}.log"
        self.port, self.peer, self.metrics = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer}"
        return [
            str(self.binary),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{self.name}={peer}",
            "--quota-backend-bytes",
            str(8 << 30),
            "--listen-metrics-urls",
            f"http://127.0.0.1:{self.metrics}",
        ]

    def start(self) -> float:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/health", timeout=1):
                    return time.monotonic() - t0
            except OSError:
                if self.proc.poll() is not None or time.monotonic() - t0 > 60:
                    raise RuntimeError(f"{self.name} did not start; see {self.log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop([self.proc])
            self.proc = None

    def fsync_sum_count(self) -> tuple[float, float]:
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        name = "etcd_disk_wal_fsync_duration_seconds"
        s = re.search(rf"^{name}_sum (\S+)$", text, re.M)
        c = re.search(rf"^{name}_count (\S+)$", text, re.M)
        assert s and c, "no WAL fsync histogram on /metrics"
        return float(s.group(1)), float(c.group(1))

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WORKLOADS = {
    "put-1c": ["--clients", "1", "--conns", "1", "--total", "8000"],
    "put": ["--clients", "100", "--conns", "10", "--total", "40000"],
}


def measure(m: Member, workload: str, seconds: float) -> dict[str, Any]:
    load_before = load1()
    s0, c0 = m.fsync_sum_count()
    cpu0 = m.cpu_seconds()
    argv = [str(LOADGEN), "put", *WORKLOADS[workload], "--key-size", "8", "--val-size", "256"]
    argv += ["--key-space-size", "100000", "--endpoints", f"127.0.0.1:{m.port}", "--json"]
    argv += ["--duration", f"{seconds}s", "--timeout", "10s"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=True)
    res = json.loads(done.stdout)
    s1, c1 = m.fsync_sum_count()
    cpu = m.cpu_seconds() - cpu0
    requests = res["requests_per_s"] * res["seconds"]
    fsyncs = c1 - c0
    return {
        "target": m.name,
        "workload": workload,
        "load1_before": load_before,
        "requests_per_s": res["requests_per_s"],
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "errors": res["errors"],
        "cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
        "wal_fsyncs": fsyncs,
        "wal_fsync_mean_ms": round((s1 - s0) / max(fsyncs, 1) * 1e3, 4),
        "loadgen": res,
    }


def run_server(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.before:
        # Two builds: `before` (another tree's petcd) and this tree's; no rewriting.
        members = [
            Member("before", work, Path(args.before)),
            Member("after", work, Path(args.petcd)),
        ]
    else:
        petcd = Path(args.petcd)
        members = [Member("fallocate", work, petcd), Member("zero", work, petcd)]
    out: dict[str, Any] = {"start_s": {}, "unwritten_extents": {}, "measurements": []}
    try:
        for m in members:
            m.start()
            m.stop()
        if not args.before:
            for seg in wal_segments(members[1].data_dir):
                fill_written(seg)
        for m in members:
            out["unwritten_extents"][m.name] = [
                unwritten_extents(p) for p in wal_segments(m.data_dir)
            ]
            out["start_s"][m.name] = round(m.start(), 3)
        for m in members:
            if args.warmup:
                # Not recorded: lets a zero-filling implementation finish its first segment.
                measure(m, "put", args.warmup)
        if args.warmup:
            time.sleep(3)
        for r in range(args.rounds):
            for wl in args.workloads.split(","):
                order = members if r % 2 == 0 else members[::-1]
                for m in order:
                    row = measure(m, wl, args.seconds)
                    row["round"] = r
                    out["measurements"].append(row)
                    print(
                        f"r{r} {wl:6s} {m.name:9s} load {row['load1_before']:5.2f} "
                        f"{row['requests_per_s']:7.0f}/s p50 {row['p50_ms']:7.3f} "
                        f"p99 {row['p99_ms']:8.3f} ms  cpu/req {row['cpu_us_per_request']:6.0f} us"
                        f"  fsyncs {row['wal_fsyncs']:6.0f} mean {row['wal_fsync_mean_ms']:.3f} ms",
                        file=sys.stderr,
                    )
        out["unwritten_extents_end"] = {
            m.name: [unwritten_extents(p) for p in wal_segments(m.data_dir)] for m in members
        }
    finally:
        for m in members:
            m.stop()
    summary: dict[str, Any] = {}
    for wl in args.workloads.split(","):
        for m in members:
            rows = [x for x in out["measurements"] if x["workload"] == wl and x["target"] == m.name]
            summary[f"{wl}/{m.name}"] = {
                key: round(statistics.median(x[key] for x in rows), 4)
                for key in (
                    "requests_per_s",
                    "p50_ms",
                    "p99_ms",
                    "cpu_us_per_request",
                    "wal_fsync_mean_ms",
                )
            } | {
                "load1": [
                    min(x["load1_before"] for x in rows),
                    max(x["load1_before"] for x in rows),
                ]
            }
    out["summary_medians"] = summary
    return out


# -- main ---------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=("standalone", "server"))
    p.add_argument("--writes", type=int, default=1500, help="standalone: writes per file")
    p.add_argument("--block", type=int, default=100, help="standalone: writes per file per turn")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=1, help="standalone: runs, each on new files")
    p.add_argument("--rounds", type=int, default=3, help="server: rounds")
    p.add_argument("--seconds", type=float, default=5.0, help="server: seconds per measurement")
    p.add_argument("--workloads", default="put-1c,put", help="server: of put-1c, put")
    p.add_argument(
        "--before",
        help="server: compare this petcd binary ('before') with this tree's ('after') "
        "instead of fallocate'd vs rewritten segments",
    )
    p.add_argument("--petcd", default=str(PETCD), help="server: the petcd binary ('after')")
    p.add_argument(
        "--warmup", type=float, default=0.0, help="server: seconds of unrecorded put first"
    )
    p.add_argument("--meta-noise", type=int, default=0, help="processes committing the journal")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    results: dict[str, Any] = {
        "mode": args.mode,
        "args": vars(args),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
    }
    with tempfile.TemporaryDirectory(prefix="wal-zero-fill-", dir="/tmp") as tmp:
        work = Path(tmp)
        noise = start_meta_noise(args.meta_noise, work)
        try:
            if args.mode == "standalone":
                runs = []
                for k in range(args.repeat):
                    args.seed += k
                    res = run_standalone(args, work)
                    print_standalone(res)
                    runs.append(res)
                results["runs"] = runs
            else:
                if not LOADGEN.exists():
                    raise SystemExit(f"{LOADGEN} missing: make -C bench loadgen")
                results.update(run_server(args, work))
                print(json.dumps(results["summary_medians"], indent=1))
        finally:
            stop(noise)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
