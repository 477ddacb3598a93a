"""petcd's benchmark orchestrator: real etcd, petcd and the bare transport, in one run.

Theory of operation. Machines are shared and noisy, so a figure means something only as a
ratio against real etcd measured on the same machine in the same run. This script starts,
one after the other on free loopback ports, the targets

* ``etcd``  Debian's ``/usr/bin/etcd`` (data in a temporary directory),
* ``petcd`` ``.venv/bin/petcd`` with the same flags (reported as n/a, with the reason, when
  it does not start or does not serve),
* ``bare``  ``bench/bare_server.py``: grpc.aio answering Put/Range/Txn with an empty
  response, the floor of any petcd on grpcio,

keeps them running side by side (idle while another is measured), and runs every chosen
workload against every target with ``bench/bin/loadgen``, interleaved so that drift of
the machine hits all targets alike: round 1 = (w1: etcd petcd bare) (w2: etcd petcd bare)
..., then round 2 the same, and so on. Each measurement stops after ``--total`` requests or
``--seconds`` seconds, whichever comes first. The table gives, per workload, the median over
rounds of each target's rate (requests/s; events delivered/s for watch), the ratios
petcd/etcd, petcd/bare and bare/etcd, and p50/p99 latency (ms; put-to-delivery delay for
watch). Everything, raw per-round results included, is written as JSON under
``bench/results/``.

For the watch workloads the rate is events delivered/s and the latency the
put-to-last-delivery delay (``watch``, ``watch-lockstep``: the latest delivery of a put among
the 1,000 watchers) or the per-event delay (``watch-10x10``); for ``lease-keepalive`` the rate
is keep-alive answers/s and the time to grant the leases is reported beside it.

``--scale`` is a separate mode: for etcd and petcd in turn, load ``--scale-keys`` keys,
then record the load rate, the server's RSS, the data directory's size on disk, and after
a restart the time until it serves a linearizable read, and the RSS again; then, for
``--scale-update-seconds``, puts to random keys of those loaded (100 clients): rate, p99 and
max latency (what a stop-the-world pause shows up in), and the RSS after them.

``--watch-memory`` is another: for etcd and petcd in turn, each freshly started (a server's
allocator keeps what it once used, so only a first measurement is clean), the RSS before,
with 10,000 idle watchers on distinct keys held open by ``loadgen watch-idle``, and after
they are closed.

``--cluster N`` runs the matrix against N-member clusters of etcd and petcd instead of
single members; a target's endpoint lists all members, its CPU time and RSS are the sums.

Every process this script starts is stopped by pid (SIGTERM, then SIGKILL of its own
process group after a grace period) in a ``finally``, whatever happens. A timing never
fails anything: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))
from tests.ports import free_port  # noqa: E402  (the tests' rule: never an ephemeral port)

LOADGEN = BENCH_DIR / "bin" / "loadgen"
RESULTS_DIR = BENCH_DIR / "results"
# "petcd" and "bare" are petcd on its default client transport (the native front end) and that
# transport's floor; "petcd-grpcio" and "bare-grpcio" the same on the grpc.aio fallback.
TARGETS = ("etcd", "petcd", "bare", "petcd-grpcio", "bare-grpcio")
# --tls: the certificate files (made by tests/tlsfiles.py in the work dir), by name.
TLS_FILES: dict[str, str] = {}


def loadgen_tls() -> list[str]:
    """loadgen's TLS flags under --tls (a client certificate the servers require)."""
    if not TLS_FILES:
        return []
    f = TLS_FILES
    return ["--cacert", f["ca"], "--cert", f["client"], "--key", f["client_key"]]


BARE_TRANSPORT = {"bare": "native", "bare-grpcio": "grpcio"}

# The standard load: 8-byte keys, 256-byte values, 100 clients over 10 connections.
_STD = ["--key-size", "8", "--val-size", "256", "--key-space-size", "100000"]
_MANY = ["--clients", "100", "--conns", "10"]
_ONE = ["--clients", "1", "--conns", "1"]
# range-5mb: etcd's e2e read load (10 clients on one connection, 100 keys of 50,000 bytes).
_BIG = ["--clients", "10", "--conns", "1", "--key-size", "8", "--val-size", "50000"]
_WATCH = ["watch", "--conns", "10", "--streams", "10", "--key-size", "8", "--val-size", "256"]


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    name: str
    loadgen_args: tuple[str, ...]
    description: str
    total_scale: float = 1.0  # fraction of --total this workload issues
    needs_full_server: bool = False  # not run on bare, nor on --extra unless it serves watch
    # The result fields the table's p50/p99 come from ("p" -> p50_ms, "last_p" -> last_p50_ms).
    latency_prefix: str = "p"
    # loadgen arguments run once per target before its first measurement of this workload
    # (untimed), with the --total given: e.g. the keys a Range of many keys reads.
    setup: tuple[str, ...] = ()
    setup_total: int = 0


_LISTING_KEYS = 10_000  # what the listing workloads read, put by their set-up step


def _listing(name: str, flags: tuple[str, ...], description: str) -> Workload:
    """A linearizable Range of many keys over keys 0-9,999 (256-byte values), 100 clients,
    with ``flags`` saying which keys; not run on bare (an empty answer is no floor for it)."""
    return Workload(
        name,
        ("range", *_MANY, "--key-size", "8", "--val-size", "256",
         "--key-space-size", str(_LISTING_KEYS), *flags, "--consistency", "l"),
        description,
        total_scale=0.2,
        needs_full_server=True,
        setup=("load", *_MANY, "--key-size", "8", "--val-size", "256"),
        setup_total=_LISTING_KEYS,
    )  # fmt: skip


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("put", ("put", *_MANY, *_STD), "Put, 100 clients / 10 conns"),
        Workload("put-1c", ("put", *_ONE, *_STD), "Put, 1 client", total_scale=0.2),
        Workload(
            "range-l",
            ("range", *_MANY, *_STD, "--consistency", "l"),
            "linearizable Range of one key, 100 clients / 10 conns",
        ),
        Workload(
            "range-1c",
            ("range", *_ONE, *_STD, "--consistency", "l"),
            "linearizable Range of one key, 1 client",
            total_scale=0.2,
        ),
        Workload(
            "range-s",
            ("range", *_MANY, *_STD, "--consistency", "s"),
            "serializable Range of one key, 100 clients / 10 conns",
        ),
        Workload("txn-put", ("txn-put", *_MANY, *_STD), "Txn with one Put, 100 clients / 10 conns"),
        Workload(
            "txn-update",
            ("txn-update", *_MANY, *_STD[:4], "--key-space-size", "1000"),
            "Kubernetes' optimistic update: Txn(if mod_revision(k) = the revision last seen, "
            "put k, else get k) over 1,000 keys, each client updating its own 10, "
            "100 clients / 10 conns",
            needs_full_server=True,
        ),
        _listing(
            "range-100",
            ("--range-keys", "100"),
            "linearizable Range of 100 consecutive keys (256-byte values; a page of a list), "
            "100 clients / 10 conns; keys 0-9,999 put first",
        ),
        _listing(
            "range-page",
            ("--range-limit", "100"),
            "linearizable Range from a random key to the end of 10,000 keys with limit 100 "
            "(a page of a long list: the count covers the rest), 100 clients / 10 conns; "
            "keys 0-9,999 put first",
        ),
        _listing(
            "range-page-past",
            ("--range-limit", "100", "--range-past-rev"),
            "range-page at a revision that is not the newest (the revision before one more "
            "put): a later page of a listing while others write",
        ),
        Workload(
            "range-5mb",
            (
                "range",
                *_BIG,
                "--key-space-size",
                "100",
                "--range-keys",
                "100",
                "--consistency",
                "l",
            ),
            "linearizable Range of all 100 keys of 50,000 bytes (5 MB answers), 10 clients on "
            "one connection, as etcd's e2e TestWatchDelay* tests read; keys 0-99 put first. "
            "Its keys overlap the listing workloads': run it without them",
            total_scale=0.01,
            needs_full_server=True,
            setup=("load", *_BIG),
            setup_total=100,
        ),
        Workload(
            "watch",
            (*_WATCH, "--watchers-per-stream", "100", "--max-lag", "10"),
            "10 streams x 100 watchers on one key, 1 writer at most 10 puts ahead: "
            "events/s, put-to-last-delivery delay",
            total_scale=0.1,
            needs_full_server=True,
            latency_prefix="last_p",
        ),
        Workload(
            "watch-lockstep",
            (*_WATCH, "--watchers-per-stream", "100", "--max-lag", "1"),
            "10 streams x 100 watchers on one key, 1 writer waiting for each put to reach all "
            "1,000 watchers: put-to-last-delivery delay without a backlog",
            total_scale=0.1,
            needs_full_server=True,
            latency_prefix="last_p",
        ),
        Workload(
            "watch-10x10",
            (*_WATCH, "--watchers-per-stream", "10"),
            "10 streams x 10 watchers on one key, 1 writer back to back (the standard watch "
            "workload until 2026-11-27 18:30): events/s, put-to-delivery delay",
            total_scale=0.1,
            needs_full_server=True,
        ),
        Workload(
            "lease-keepalive",
            ("lease-keepalive", *_MANY, "--streams", "100", "--leases", "10000"),
            "grant 10,000 leases (100 clients), then 100 LeaseKeepAlive streams cycle through "
            "them: keep-alives/s; grant time",
            needs_full_server=True,
        ),
    )
}
DEFAULT_WORKLOADS = (
    "put",
    "put-1c",
    "range-l",
    "range-1c",
    "range-s",
    "txn-put",
    "txn-update",
    "range-100",
    "range-page",
    "watch",
    "lease-keepalive",
)
# --cluster N: the workloads run unless --workloads is given.
CLUSTER_WORKLOADS = ("put", "put-1c", "range-l")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and its descendants."""
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_seconds(root: int) -> float:
    """User + system CPU time of ``root`` and its live descendants."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Server:
    """One target process: started in its own process group, stopped by pid."""

    def __init__(self, name: str, argv: list[str], client_port: int, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.client_port = client_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0
        self.t0 = 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return 0.0 if self.proc is None else cpu_seconds(self.proc.pid)

    def rss_bytes(self) -> int:
        return 0 if self.proc is None else rss_bytes(self.proc.pid)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, ready_timeout_s: float) -> None:
        self.launch()
        self.wait_ready(ready_timeout_s)

    def launch(self) -> None:
        self.t0 = time.monotonic()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO_DIR,
            )

    def wait_ready(self, ready_timeout_s: float) -> None:
        assert self.proc is not None
        deadline = self.t0 + ready_timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: {self.tail_log()}"
                )
            ok, last = probe(self.endpoint)
            if ok:
                self.startup_s = time.monotonic() - self.t0
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not serving after {ready_timeout_s:.0f}s: {last}")

    def tail_log(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-600:]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Anything it left behind in the process group it was started in.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class ClusterServer:
    """Members started together (``--initial-cluster`` names them all), used as one target:
    its endpoint lists every member (the client balances over them), its CPU time and RSS
    are the members' sums."""

    def __init__(self, name: str, members: list[Server]) -> None:
        self.name = name
        self.members = members
        self.startup_s = 0.0

    @property
    def endpoint(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    @property
    def argv(self) -> list[list[str]]:
        return [m.argv for m in self.members]

    def start(self, ready_timeout_s: float) -> None:
        t0 = time.monotonic()
        for m in self.members:
            m.launch()
        for m in self.members:
            m.wait_ready(ready_timeout_s)
        self.startup_s = time.monotonic() - t0

    def alive(self) -> bool:
        return all(m.alive() for m in self.members)

    def cpu_seconds(self) -> float:
        return sum(m.cpu_seconds() for m in self.members)

    def rss_bytes(self) -> int:
        return sum(m.rss_bytes() for m in self.members)

    def tail_log(self, lines: int = 5) -> str:
        return " || ".join(f"{m.name}: {m.tail_log(lines)}" for m in self.members if not m.alive())

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def probe(endpoint: str) -> tuple[bool, str]:
    """Does ``endpoint`` answer a linearizable Range (that is, has it a leader)?"""
    host, port = endpoint.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            pass
    except OSError as e:
        return False, str(e)
    try:
        done = subprocess.run(
            [
                *(str(LOADGEN), "range", "--endpoints", endpoint),
                *("--total", "1", "--timeout", "2s", *loadgen_tls()),
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return False, "probe timed out"
    return done.returncode == 0, (done.stderr or done.stdout).strip()[-300:]


def etcd_argv(
    name: str, data_dir: Path, client_port: int, peer_port: int, initial_cluster: str = ""
) -> list[str]:
    client = f"{'https' if TLS_FILES else 'http'}://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    tls: list[str] = []
    if TLS_FILES:  # etcd's flags; the trusted CA makes both require client certificates
        f = TLS_FILES
        tls = ["--cert-file", f["server"], "--key-file", f["server_key"]]
        tls += ["--trusted-ca-file", f["ca"], "--client-cert-auth"]
    return [
        *tls,
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        initial_cluster or f"{name}={peer}",
    ]


def make_cluster(target: str, args: argparse.Namespace, work: Path) -> ClusterServer:
    """``args.cluster`` members of etcd or petcd on loopback, data under ``work``."""
    names = [f"{target}-m{i}" for i in range(args.cluster)]
    peers = {n: free_port() for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in peers.items())
    binary = args.etcd if target == "etcd" else args.alt_petcd.get(target, args.petcd)
    members = []
    for n in names:
        port = free_port()
        argv = [binary, *etcd_argv(n, work / f"{n}.data", port, peers[n], initial)]
        argv += ["--initial-cluster-state", "new", "--initial-cluster-token", f"bench-{target}"]
        argv += ["--quota-backend-bytes", str(8 << 30)]
        members.append(Server(n, argv, port, work / f"{n}.log"))
    return ClusterServer(target, members)


def make_server(target: str, args: argparse.Namespace, work: Path, data_dir: Path) -> Server:
    port = free_port()
    logf = work / f"{target}.log"
    if target == "etcd":
        argv = [args.etcd, *etcd_argv("bench", data_dir, port, free_port())]
        argv += ["--quota-backend-bytes", str(8 << 30)]
    elif target in ("petcd", "petcd-grpcio") or target in args.alt_petcd:
        binary = args.alt_petcd.get(target, args.petcd)
        argv = [binary, *etcd_argv("bench", data_dir, port, free_port())]
        argv += ["--quota-backend-bytes", str(8 << 30)]
        if target == "petcd-grpcio":
            argv += ["--client-transport", "grpcio"]
    elif target in args.extra_targets:
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            a.replace("{port}", str(port)).replace("{dir}", str(data_dir))
            for a in shlex.split(args.extra_targets[target])
        ]
    else:
        argv = [args.python, str(BENCH_DIR / "bare_server.py"), "--listen", f"127.0.0.1:{port}"]
        argv += ["--transport", BARE_TRANSPORT[target]]
        if target == "bare-grpcio":
            argv += ["--procs", str(args.bare_procs)]
            if args.bare_uvloop:
                argv.append("--uvloop")
    return Server(target, argv, port, logf)


def run_setup(endpoint: str, wl: Workload) -> None:
    """The workload's untimed set-up (``Workload.setup``) against one target."""
    setup = Workload(f"{wl.name}-setup", wl.setup, "set-up")
    res = run_loadgen(endpoint, setup, wl.setup_total, 600)
    if res["errors"]:
        raise RuntimeError(f"{res['errors']} errors: {res.get('first_error', '')}")


def run_loadgen(endpoint: str, wl: Workload, total: int, seconds: float) -> dict[str, Any]:
    argv = [str(LOADGEN), *wl.loadgen_args, "--endpoints", endpoint, "--json", *loadgen_tls()]
    argv += ["--total", str(total), "--duration", f"{seconds}s", "--timeout", "10s"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def rate_of(result: dict[str, Any]) -> float:
    key = "events_per_s" if result["workload"] == "watch" else "requests_per_s"
    return float(result.get(key, 0.0))


def git_commit() -> str:
    """HEAD, with "+dirty" when src/ has uncommitted changes (petcd runs from the tree)."""
    head = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}+dirty" if dirty else head


def version_of(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def machine_info() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(load1, 2), round(load5, 2)],
    }


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="petcd-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def summarize(
    runs: list[dict[str, Any]],
    workloads: Sequence[str],
    targets: Sequence[str],
    alts: Sequence[str] = (),
) -> list[dict[str, Any]]:
    table = []
    for w in workloads:
        row: dict[str, Any] = {"workload": w, "description": WORKLOADS[w].description}
        for t in targets:
            mine = [r for r in runs if r["workload"] == w and r["target"] == t and "result" in r]
            if not mine:
                row[t] = None
                continue
            res = [r["result"] for r in mine]
            lp = WORKLOADS[w].latency_prefix
            row[t] = {
                "rate": statistics.median(rate_of(r) for r in res),
                "rates": [round(rate_of(r), 1) for r in res],
                "p50_ms": statistics.median(r.get(lp + "50_ms", 0.0) for r in res),
                "p99_ms": statistics.median(r.get(lp + "99_ms", 0.0) for r in res),
                "errors": sum(r["errors"] for r in res),
                "cpu_ms_per_request": statistics.median(r["cpu_ms_per_request"] for r in mine),
                "loadavg1_before": [r["loadavg1_before"] for r in mine],
            }
            if lp != "p":  # the per-event delay as well
                row[t]["event_p50_ms"] = statistics.median(r["p50_ms"] for r in res)
                row[t]["event_p99_ms"] = statistics.median(r["p99_ms"] for r in res)
            if "grant_seconds" in res[0]:
                row[t]["grant_seconds"] = statistics.median(r["grant_seconds"] for r in res)

        def rate(t: str, row: dict[str, Any] = row) -> float | None:
            cell = row.get(t)
            return None if cell is None else float(cell["rate"])

        for a, b in ratio_pairs(targets, alts):
            ra, rb = rate(a), rate(b)
            row[f"{a}/{b}"] = None if ra is None or not rb else round(ra / rb, 3)
        row.update(own_work(row))
        loads = [
            r["loadavg1_before"] for r in runs if r["workload"] == w and "loadavg1_before" in r
        ]
        row["loadavg1"] = [min(loads), max(loads)] if loads else None
        table.append(row)
    return table


def ratio_pairs(targets: Sequence[str], alts: Sequence[str] = ()) -> list[tuple[str, str]]:
    """petcd/etcd, petcd/bare, then every other target against etcd, then petcd against each
    --petcd-alt target (another petcd binary)."""
    pairs = [("petcd", "etcd"), ("petcd", "bare"), ("petcd-grpcio", "bare-grpcio")]
    pairs += [(t, "etcd") for t in targets if t not in ("etcd", "petcd")]
    pairs += [("petcd", t) for t in alts]
    return [(a, b) for a, b in pairs if a in targets and b in targets]


def print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        cells = zip(r, widths, strict=True)
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(cells)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# The servers whose own work is measured against their bare transport: the ratio row of
# issue 7 ("petcd's own work costs less than the transport") read as CPU time per request.
OWN_WORK_PAIRS = (("petcd", "bare"), ("petcd-grpcio", "bare-grpcio"))


def own_work(row: dict[str, Any]) -> dict[str, Any]:
    """For each (server, its bare transport) measured in ``row``: the transport's server CPU
    time per request (the bare server's) and the server's own (its CPU time per request minus
    the bare server's), in µs, as ``own_us:<server>`` = {"transport": .., "own": ..}."""
    out: dict[str, Any] = {}
    for server, bare in OWN_WORK_PAIRS:
        a, b = row.get(server), row.get(bare)
        if not a or not b:
            continue
        transport = float(b["cpu_ms_per_request"]) * 1000
        total = float(a["cpu_ms_per_request"]) * 1000
        out[f"own_us:{server}"] = {
            "transport": round(transport, 1),
            "own": round(total - transport, 1),
        }
    return out


def print_table(
    table: list[dict[str, Any]], targets: Sequence[str], alts: Sequence[str] = ()
) -> None:
    """Two tables: rates and ratios, then latencies."""
    pairs = ratio_pairs(targets, alts)
    rates = [["workload", *[f"{t}/s" for t in targets], *[f"{a}/{b}" for a, b in pairs], "load1"]]
    lats = [["workload", *[f"p50 {t}" for t in targets], *[f"p99 {t}" for t in targets]]]
    cpus = [["workload", *targets, *[f"{a}/{b}" for a, b in pairs]]]
    for row in table:

        def cell(t: str, key: str, row: dict[str, Any] = row) -> float | None:
            c = row.get(t)
            return None if c is None else float(c[key])

        line = [row["workload"], *[fmt_rate(cell(t, "rate")) for t in targets]]
        line += [fmt_ratio(cell(a, "rate"), cell(b, "rate")) for a, b in pairs]
        load = row.get("loadavg1")
        line.append("-" if not load else f"{load[0]:.1f}-{load[1]:.1f}")
        rates.append(line)
        lat = [row["workload"], *[fmt_ms(cell(t, "p50_ms")) for t in targets]]
        lat += [fmt_ms(cell(t, "p99_ms")) for t in targets]
        lats.append(lat)

        def us(t: str) -> float | None:
            c = cell(t, "cpu_ms_per_request")
            return None if c is None else c * 1000

        cpu = [row["workload"], *[fmt_rate(us(t)) for t in targets]]
        cpu += [fmt_ratio(us(a), us(b)) for a, b in pairs]
        cpus.append(cpu)
    print_rows(rates)
    print(
        "rates: median over rounds of requests/s (watch: events delivered/s; lease-keepalive:"
        " keep-alive answers/s); load1: the 1-minute load average before each measurement\n"
    )
    print_rows(lats)
    print(
        "latency: median over rounds, ms (watch: put-to-last-delivery delay, the latest of the"
        " 1,000 watchers; watch-10x10: put-to-delivery delay per event)\n"
    )
    print_rows(cpus)
    print(
        "server CPU time per request, µs (watch: per put, that is per 1,000 events; "
        "watch-10x10: per 100 events),\nmedian over rounds; the steadiest figure on a shared "
        "machine (lower is better, so are the ratios)"
    )
    own = [["workload", "server", "transport µs", "own µs", "own/transport"]]
    for row in table:
        for server, _ in OWN_WORK_PAIRS:
            cell = row.get(f"own_us:{server}")
            if cell:
                own.append(
                    [
                        row["workload"],
                        server,
                        fmt_rate(cell["transport"]),
                        fmt_rate(cell["own"]),
                        fmt_ratio(cell["own"], cell["transport"]),
                    ]
                )
    if len(own) > 1:
        print()
        print_rows(own)
        print(
            "server CPU time per request, µs: the transport's (the bare server's) and the "
            "server's own work\n(its CPU time per request minus the bare server's), medians "
            "over rounds; own/transport < 1: its own work costs less than the transport"
        )
    for row in table:
        cells: dict[str, dict[str, Any]] = {t: row[t] for t in targets if row.get(t)}
        if any("grant_seconds" in c for c in cells.values()):
            grants = {t: c["grant_seconds"] for t, c in cells.items() if "grant_seconds" in c}
            text = ", ".join(f"{t} {g:.2f}s" for t, g in grants.items())
            ratio = fmt_ratio(grants.get("petcd"), grants.get("etcd"))
            print(f"\n{row['workload']}: time to grant the leases: {text} (petcd/etcd {ratio})")
        if any("event_p50_ms" in c for c in cells.values()):
            text = ", ".join(
                f"{t} p50 {c['event_p50_ms']:.1f} p99 {c['event_p99_ms']:.1f}"
                for t, c in cells.items()
                if "event_p50_ms" in c
            )
            print(f"\n{row['workload']}: put-to-delivery delay per event, ms: {text}")


def results_path(label: str, suffix: str = "") -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%MZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return RESULTS_DIR / f"{stamp}-{safe}{suffix}.json"


def run_matrix(args: argparse.Namespace) -> int:
    default = CLUSTER_WORKLOADS if args.cluster > 1 else DEFAULT_WORKLOADS
    workloads = [w.strip() for w in (args.workloads or ",".join(default)).split(",") if w.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    listing = [w for w in workloads if WORKLOADS[w].setup_total == _LISTING_KEYS]
    if "range-5mb" in workloads and listing:
        raise SystemExit(f"range-5mb puts 50,000-byte values on keys {listing} read: run it alone")
    targets += [t for t in args.extra_targets if t not in targets]
    alts = list(args.alt_petcd)
    targets += [t for t in alts if t not in targets]
    for t in targets:
        if t not in TARGETS and t not in args.extra_targets and t not in args.alt_petcd:
            raise SystemExit(f"unknown target {t!r}; known: {', '.join(TARGETS)}")
    if args.cluster > 1:
        clusters = ("etcd", "petcd", *alts)
        dropped = [t for t in targets if t not in clusters]
        if dropped:
            log(f"--cluster {args.cluster}: only etcd and petcd run as clusters; not {dropped}")
        targets = [t for t in targets if t in clusters]
    if args.tls:
        served = ("etcd", "petcd", "petcd-grpcio", *alts)
        dropped = [t for t in targets if t not in served]
        if dropped:
            log(f"--tls: only etcd and petcd serve TLS; not {dropped}")
        targets = [t for t in targets if t in served]
    info = machine_info()
    report: dict[str, Any] = {
        "kind": "matrix",
        "label": args.label,
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "petcd_commit": git_commit(),
        "etcd_version": version_of([args.etcd]),
        "settings": {
            "rounds": args.rounds,
            "cluster_members": args.cluster,
            "total": args.total,
            "seconds": args.seconds,
            "bare_procs": args.bare_procs,
            "bare_uvloop": args.bare_uvloop,
            "workloads": {w: " ".join(WORKLOADS[w].loadgen_args) for w in workloads},
            "extra_targets": args.extra_targets,
            "alt_petcd": args.alt_petcd,
            "tls": args.tls,
            "restart_each_round": args.restart_each_round,
        },
        "targets": {},
        "runs": [],
    }
    servers: dict[str, Server | ClusterServer] = {}
    with workdir(args.keep) as work:
        if args.tls:
            sys.path.insert(0, str(REPO_DIR))
            from tests.tlsfiles import make_tls_files

            TLS_FILES.update(make_tls_files(work / "certs"))

        def start_targets(rnd: int, names: Sequence[str]) -> None:
            """Start these targets afresh: data and logs under ``work`` (with
            --restart-each-round, under a directory of the round's own)."""
            rwork = work / f"round{rnd}" if args.restart_each_round else work
            rwork.mkdir(exist_ok=True)
            for t in names:
                srv: Server | ClusterServer
                if args.cluster > 1:
                    srv = make_cluster(t, args, rwork)
                    log(f"starting {t}, {args.cluster} members: {' '.join(srv.argv[0])} ...")
                else:
                    srv = make_server(t, args, rwork, rwork / f"{t}.data")
                    log(f"starting {t}: {' '.join(srv.argv)}")
                try:
                    srv.start(args.start_timeout)
                except (RuntimeError, OSError) as e:
                    log(f"  {t} is n/a: {e}")
                    if rnd == 1:
                        report["targets"][t] = {"available": False, "reason": str(e)}
                    else:
                        report["targets"][t].setdefault("restart_failed", []).append(str(e))
                    srv.stop()
                    continue
                servers[t] = srv
                if rnd == 1:
                    report["targets"][t] = {
                        "available": True,
                        "argv": srv.argv,
                        "startup_s": round(srv.startup_s, 3),
                    }
                else:
                    report["targets"][t].setdefault("restart_startup_s", []).append(
                        round(srv.startup_s, 3)
                    )
                log(f"  {t} serving on {srv.endpoint} after {srv.startup_s:.2f}s")

        def stop_targets(rnd: int) -> None:
            for srv in servers.values():
                srv.stop()
            servers.clear()
            if not args.keep:
                shutil.rmtree(work / f"round{rnd}", ignore_errors=True)

        try:
            start_targets(1, targets)
            full_servers = {"etcd", "petcd", "petcd-grpcio", *alts, *args.extra_serves_watch}
            # Even rounds take the targets in the reverse order, so that neither side of an
            # A/B always runs first (right after its set-up, or after the other's load): one
            # tree against itself measured 0.89x in the fixed order (range-100, 4 rounds).
            plan = [
                (r, w, t)
                for r in range(1, args.rounds + 1)
                for w in workloads
                for t in (targets if r % 2 else targets[::-1])
                if t in servers and (t in full_servers or not WORKLOADS[w].needs_full_server)
            ]
            set_up: set[tuple[str, str]] = set()  # (workload, target) whose setup ran
            current_round = 1
            for n, (rnd, w, t) in enumerate(plan, 1):
                if rnd != current_round and args.restart_each_round:
                    # Fresh processes and data for each round: a difference that belongs to
                    # one process (its memory layout, its hash seed) then averages out.
                    log(f"round {rnd}: restarting every target with fresh data")
                    stop_targets(current_round)
                    start_targets(rnd, [t for t in targets if report["targets"][t]["available"]])
                    set_up.clear()
                current_round = rnd
                if t in servers and WORKLOADS[w].setup and (w, t) not in set_up:
                    set_up.add((w, t))
                    try:
                        run_setup(servers[t].endpoint, WORKLOADS[w])
                    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                        log(f"  {w} set-up on {t} failed: {e}")
                if t not in servers:  # died in an earlier measurement: n/a from here on
                    log(f"[{n}/{len(plan)}] round {rnd} {w:8} {t:5} n/a (the server died)")
                    report["runs"].append(
                        {"round": rnd, "workload": w, "target": t, "error": "server died"}
                    )
                    continue
                wl, srv = WORKLOADS[w], servers[t]
                total = max(1, int(args.total * wl.total_scale))
                entry: dict[str, Any] = {"round": rnd, "workload": w, "target": t}
                entry["loadavg1_before"] = round(os.getloadavg()[0], 2)
                cpu0 = srv.cpu_seconds()
                try:
                    res = run_loadgen(srv.endpoint, wl, total, args.seconds)
                except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                    entry["error"] = str(e)
                    log(f"[{n}/{len(plan)}] round {rnd} {w:8} {t:5} FAILED: {e}")
                else:
                    cpu = srv.cpu_seconds() - cpu0
                    reqs = max(1, int(res["total"]))
                    entry["result"] = res
                    entry["server_cpu_s"] = round(cpu, 3)
                    entry["cpu_ms_per_request"] = round(cpu * 1000 / reqs, 4)
                    errs = f"  errors {res['errors']}" if res["errors"] else ""
                    if res.get("first_error"):
                        errs += f" ({res['first_error'][:120]})"
                    lp = wl.latency_prefix
                    extra = ""
                    if "grant_seconds" in res:
                        extra = f"  grant {res['leases']:,} in {res['grant_seconds']:.2f}s"
                    if "conflicts" in res:
                        extra = f"  conflicts {res['conflicts']:,}"
                    log(
                        f"[{n}/{len(plan)}] round {rnd} {w:8} {t:5} {rate_of(res):>10,.0f}/s"
                        f"  p50 {res.get(lp + '50_ms', 0):.1f} ms"
                        f"  p99 {res.get(lp + '99_ms', 0):.1f} ms"
                        f"  server cpu {cpu:.1f}s{extra}{errs}"
                    )
                report["runs"].append(entry)
                if not srv.alive():
                    log(f"  {t} died: {srv.tail_log()}")
                    del servers[t]
                    report["targets"][t]["died"] = srv.tail_log()
        finally:
            for srv in servers.values():
                srv.stop()
    report["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report["table"] = summarize(report["runs"], workloads, targets, alts)
    print()
    print_table(report["table"], targets, alts)
    for t, st in report["targets"].items():
        if not st["available"]:
            print(f"{t}: n/a ({st['reason'][:200]})")
    suffix = f"-cluster{args.cluster}" if args.cluster > 1 else ""
    out = Path(args.out) if args.out else results_path(args.label, suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten {out.relative_to(REPO_DIR) if out.is_relative_to(REPO_DIR) else out}")
    return 0


def run_scale(args: argparse.Namespace) -> int:
    targets = [t for t in args.targets.split(",") if t in ("etcd", "petcd")]
    targets += [t for t in args.alt_petcd if t not in targets]  # --petcd-alt: a before/after
    report: dict[str, Any] = {
        "kind": "scale",
        "label": args.label,
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "petcd_commit": git_commit(),
        "etcd_version": version_of([args.etcd]),
        "settings": {"keys": args.scale_keys, "val_size": args.scale_val_size},
        "targets": {},
    }
    load = Workload(
        "load",
        ("load", *_MANY, "--key-size", "8", "--val-size", str(args.scale_val_size)),
        "load N keys",
    )
    update = Workload(
        "update",
        (
            "put",
            *_MANY,
            "--key-size",
            "8",
            "--val-size",
            str(args.scale_val_size),
            "--key-space-size",
            str(args.scale_keys),
        ),
        "put to random keys of the N loaded",
    )
    with workdir(args.keep) as work:
        for t in targets:
            data = work / f"{t}.data"
            srv = make_server(t, args, work, data)
            st: dict[str, Any] = {}
            report["targets"][t] = st
            try:
                log(f"starting {t}")
                srv.start(args.start_timeout)
                assert srv.proc is not None
                st["empty_startup_s"] = round(srv.startup_s, 3)
                st["empty_rss_bytes"] = rss_bytes(srv.proc.pid)
                log(f"  loading {args.scale_keys:,} keys into {t}")
                res = run_loadgen(srv.endpoint, load, args.scale_keys, 3600)
                st["load"] = res
                st["loaded_rss_bytes"] = rss_bytes(srv.proc.pid)
                log(
                    f"  {res['requests_per_s']:,.0f} puts/s, errors {res['errors']}, "
                    f"RSS {st['loaded_rss_bytes'] / 2**20:,.0f} MiB"
                )
                srv.stop()
                st["disk_bytes"] = dir_bytes(data)
                log(f"  data dir {st['disk_bytes'] / 2**20:,.0f} MiB; restarting")
                srv.start(args.start_timeout + 600)
                assert srv.proc is not None
                st["loaded_startup_s"] = round(srv.startup_s, 3)
                st["restarted_rss_bytes"] = rss_bytes(srv.proc.pid)
                log(
                    f"  serving again after {srv.startup_s:.2f}s, "
                    f"RSS {st['restarted_rss_bytes'] / 2**20:,.0f} MiB"
                )
                if args.scale_update_seconds > 0:
                    res = run_loadgen(
                        srv.endpoint, update, args.scale_keys * 10, args.scale_update_seconds
                    )
                    st["update"] = res
                    st["updated_rss_bytes"] = rss_bytes(srv.proc.pid)
                    log(
                        f"  updates: {res['requests_per_s']:,.0f} puts/s, p99 "
                        f"{res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms, errors "
                        f"{res['errors']}, RSS {st['updated_rss_bytes'] / 2**20:,.0f} MiB"
                    )
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                st["error"] = str(e)
                log(f"  {t}: n/a: {e}")
            finally:
                srv.stop()
    report["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    mib = 2**20
    print(f"\nscale: {args.scale_keys:,} keys of 8 bytes, values of {args.scale_val_size} bytes")
    rows = [["target", "puts/s", "RSS MiB", "disk MiB", "start-up s", "RSS after restart MiB"]]
    if args.scale_update_seconds > 0:
        rows[0] += ["updates/s", "p99 ms", "max ms", "RSS after updates MiB"]
    for t, st in report["targets"].items():
        if "error" in st:
            rows.append([t, "n/a", "-", "-", "-", st["error"][:60]])
            continue
        rows.append(
            [
                t,
                f"{st['load']['requests_per_s']:,.0f}",
                f"{st['loaded_rss_bytes'] / mib:,.0f}",
                f"{st['disk_bytes'] / mib:,.0f}",
                f"{st['loaded_startup_s']:.2f}",
                f"{st['restarted_rss_bytes'] / mib:,.0f}",
            ]
        )
        if "update" in st:
            rows[-1] += [
                f"{st['update']['requests_per_s']:,.0f}",
                f"{st['update']['p99_ms']:.1f}",
                f"{st['update']['max_ms']:.1f}",
                f"{st['updated_rss_bytes'] / mib:,.0f}",
            ]
    print_rows(rows)
    out = Path(args.out) if args.out else results_path(args.label, "-scale")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten {out}")
    return 0


def wait_for_line(proc: subprocess.Popen[str], want: str, timeout_s: float) -> list[str]:
    """Read ``proc``'s stderr until a line equal to ``want``; the lines before it."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        line = proc.stderr.readline()
        if not line:
            break
        if line.strip() == want:
            return seen
        seen.append(line.strip())
    raise RuntimeError(f"loadgen never said {want!r}: {' | '.join(seen)[-500:]}")


def rss_settled(srv: Server, settle_s: float) -> int:
    """RSS after ``settle_s`` seconds, the median of three samples half a second apart."""
    time.sleep(settle_s)
    samples = []
    for _ in range(3):
        samples.append(srv.rss_bytes())
        time.sleep(0.5)
    return int(statistics.median(samples))


def run_watch_memory(args: argparse.Namespace) -> int:
    """Memory of idle watchers: for etcd and petcd in turn, each freshly started, the RSS
    before, with ``--idle-streams`` x ``--idle-watchers-per-stream`` watchers on distinct keys
    open (over ``--idle-conns`` connections), and after they are closed."""
    targets = [t for t in args.targets.split(",") if t in ("etcd", "petcd")]
    nw = args.idle_streams * args.idle_watchers_per_stream
    report: dict[str, Any] = {
        "kind": "watch-memory",
        "label": args.label,
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "petcd_commit": git_commit(),
        "etcd_version": version_of([args.etcd]),
        "settings": {
            "watchers": nw,
            "streams": args.idle_streams,
            "conns": args.idle_conns,
            "settle_s": args.settle_seconds,
        },
        "targets": {},
    }
    with workdir(args.keep) as work:
        for t in targets:
            srv = make_server(t, args, work, work / f"{t}.data")
            st: dict[str, Any] = {"loadavg1_before": round(os.getloadavg()[0], 2)}
            report["targets"][t] = st
            gen: subprocess.Popen[str] | None = None
            try:
                log(f"starting {t}")
                srv.start(args.start_timeout)
                st["rss_before_bytes"] = rss_settled(srv, args.settle_seconds)
                argv = [str(LOADGEN), "watch-idle", "--endpoints", srv.endpoint, "--json"]
                argv += ["--conns", str(args.idle_conns), "--streams", str(args.idle_streams)]
                argv += ["--watchers-per-stream", str(args.idle_watchers_per_stream)]
                argv += ["--key-size", "8", "--timeout", "10s"]
                log(f"  opening {nw:,} watchers on {t}")
                cpu0 = srv.cpu_seconds()
                gen = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                wait_for_line(gen, "ready", 600)
                st["server_cpu_create_s"] = round(srv.cpu_seconds() - cpu0, 3)
                st["rss_with_watchers_bytes"] = rss_settled(srv, args.settle_seconds)
                # Closing stdin (communicate does) tells loadgen to check and close them.
                stdout, stderr = gen.communicate(input="", timeout=120)
                if gen.returncode != 0:
                    raise RuntimeError(f"loadgen failed: {stderr.strip()[-500:]}")
                res = json.loads(stdout)
                st["result"] = res
                st["rss_after_close_bytes"] = rss_settled(srv, args.settle_seconds)
                st["rss_increase_bytes"] = st["rss_with_watchers_bytes"] - st["rss_before_bytes"]
                st["bytes_per_watcher"] = round(st["rss_increase_bytes"] / nw, 1)
                errs = (
                    f", errors {res['errors']} ({res.get('first_error')})" if res["errors"] else ""
                )
                log(
                    f"  {nw:,} watchers created in {res['create_seconds']:.2f}s; RSS "
                    f"{st['rss_before_bytes'] / 2**20:,.1f} -> "
                    f"{st['rss_with_watchers_bytes'] / 2**20:,.1f} MiB "
                    f"(+{st['rss_increase_bytes'] / 2**20:,.1f}), after close "
                    f"{st['rss_after_close_bytes'] / 2**20:,.1f} MiB{errs}"
                )
            except (RuntimeError, OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                st["error"] = str(e)
                log(f"  {t}: n/a: {e}")
            finally:
                if gen is not None and gen.poll() is None:
                    gen.kill()
                    gen.wait()
                srv.stop()
    report["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    mib = 2**20
    print(
        f"\nidle watchers: {nw:,} on distinct keys, {args.idle_streams} streams over "
        f"{args.idle_conns} connections; server RSS, MiB"
    )
    rows = [["target", "create s", "before", "with watchers", "increase", "B/watcher", "closed"]]
    rows[0].append("load1")
    for t, st in report["targets"].items():
        if "error" in st:
            rows.append([t, "n/a", "-", "-", "-", "-", st["error"][:60], "-"])
            continue
        rows.append(
            [
                t,
                f"{st['result']['create_seconds']:.2f}",
                f"{st['rss_before_bytes'] / mib:,.1f}",
                f"{st['rss_with_watchers_bytes'] / mib:,.1f}",
                f"{st['rss_increase_bytes'] / mib:,.1f}",
                f"{st['bytes_per_watcher']:,.0f}",
                f"{st['rss_after_close_bytes'] / mib:,.1f}",
                f"{st['loadavg1_before']:.1f}",
            ]
        )
    print_rows(rows)
    ref, mine = report["targets"].get("etcd", {}), report["targets"].get("petcd", {})
    if "rss_increase_bytes" in ref and "rss_increase_bytes" in mine:
        report["petcd/etcd"] = {
            "rss_increase": round(
                mine["rss_increase_bytes"] / max(1, ref["rss_increase_bytes"]), 3
            ),
            "rss_with_watchers": round(
                mine["rss_with_watchers_bytes"] / max(1, ref["rss_with_watchers_bytes"]), 3
            ),
        }
        r = report["petcd/etcd"]
        print(
            f"petcd/etcd: RSS increase {r['rss_increase']:.2f}x, total RSS with watchers "
            f"{r['rss_with_watchers']:.2f}x (lower is better)"
        )
    out = Path(args.out) if args.out else results_path(args.label, "-watch-memory")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten {out}")
    return 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Benchmark real etcd, petcd and the bare grpc.aio transport in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--workloads",
        help=f"of {', '.join(WORKLOADS)}; default {','.join(DEFAULT_WORKLOADS)} "
        f"(with --cluster: {','.join(CLUSTER_WORKLOADS)})",
    )
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--rounds", type=int, default=2, help="times each (workload, target) runs")
    p.add_argument("--total", type=int, default=30000, help="requests per measurement (max)")
    p.add_argument("--seconds", type=float, default=4.0, help="time per measurement (max)")
    p.add_argument("--label", default=socket.gethostname(), help="names the results file")
    p.add_argument("--out", help="results file (default bench/results/<date>-<label>.json)")
    p.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    p.add_argument("--petcd", default=str(REPO_DIR / ".venv" / "bin" / "petcd"))
    p.add_argument("--python", default=sys.executable, help="runs bare_server.py")
    p.add_argument("--bare-procs", type=int, default=1, help="bare server processes")
    p.add_argument("--bare-uvloop", action="store_true")
    p.add_argument("--start-timeout", type=float, default=30.0, help="seconds to start serving")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another target: COMMAND serves etcd's KV API on {port} (data under {dir}); "
        "run like bare (no watch)",
    )
    p.add_argument(
        "--petcd-alt",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another petcd binary as a target NAME, run exactly like petcd (also as a "
        "--cluster, with watch, and in --scale), e.g. main=/work/main/.venv/bin/petcd for an "
        "A/B of a branch against main in one run",
    )
    p.add_argument(
        "--extra-serves-watch",
        action="append",
        default=[],
        metavar="NAME",
        help="run the watch workload against this --extra target too",
    )
    p.add_argument(
        "--restart-each-round",
        action="store_true",
        help="stop every target after each round and start it again on fresh data (its "
        "workloads' set-ups run again): differences between two processes of one tree "
        "(memory layout, hash seed) then average out over the rounds instead of staying with "
        "one side of an A/B",
    )
    p.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve https client URLs with a server certificate and require client "
        "certificates (etcd's --cert-file, --key-file, --trusted-ca-file, --client-cert-auth); "
        "loadgen presents one. etcd and petcd targets only",
    )
    p.add_argument("--scale", action="store_true", help="memory/start-up/disk with many keys")
    p.add_argument("--scale-keys", type=int, default=1_000_000)
    p.add_argument("--scale-val-size", type=int, default=256)
    p.add_argument(
        "--scale-update-seconds",
        type=float,
        default=20.0,
        help="--scale: after the restart, put to random keys of those loaded for this long "
        "(100 clients): rate, p99 and max latency, RSS; 0 skips it",
    )
    p.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="run etcd and petcd as N-member clusters (loopback; clients balance over all "
        "members); bare and --extra targets are left out",
    )
    p.add_argument(
        "--watch-memory",
        action="store_true",
        help="RSS of etcd and petcd, each freshly started, with idle watchers on distinct keys",
    )
    p.add_argument("--idle-streams", type=int, default=100, help="--watch-memory: watch streams")
    p.add_argument("--idle-watchers-per-stream", type=int, default=100)
    p.add_argument("--idle-conns", type=int, default=10, help="--watch-memory: connections")
    p.add_argument(
        "--settle-seconds", type=float, default=3.0, help="--watch-memory: wait before RSS"
    )
    args = p.parse_args(argv)
    # SIGTERM (make or CI stopping us) must still run the finally blocks that stop servers.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    args.extra_targets = {}
    for spec in args.extra:
        name, sep, command = spec.partition("=")
        if not sep or not name or name in TARGETS:
            p.error(f"--extra wants NAME=COMMAND with a new NAME, got {spec!r}")
        args.extra_targets[name] = command
    args.alt_petcd = {}
    for spec in args.petcd_alt:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path or name in TARGETS or name in args.extra_targets:
            p.error(f"--petcd-alt wants NAME=PATH with a new NAME, got {spec!r}")
        args.alt_petcd[name] = path
    if not LOADGEN.exists():
        raise SystemExit(f"{LOADGEN} missing: build it with `make -C bench loadgen`")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.cluster < 1:
        p.error("--cluster must be >= 1")
    if args.scale:
        return run_scale(args)
    if args.watch_memory:
        return run_watch_memory(args)
    return run_matrix(args)


if __name__ == "__main__":
    sys.exit(main())
