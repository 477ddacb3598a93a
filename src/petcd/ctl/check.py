"""``check perf`` and ``check datascale``: etcdctl's built-in load checks.

Theory of operation: both commands write keys under a prefix that must be empty, measure,
delete what they wrote (``--auto-compact`` then compacts at the delete's revision and
``--auto-defrag`` defragments every endpoint), and print etcdctl's verdict lines.

* ``check perf`` puts for 60 seconds at a fixed rate (the load model's ``limit`` per second,
  from ``clients`` concurrent writers) and passes if the throughput reached more than 90%
  of that rate, no request failed, the slowest took at most 0.5 s and the latencies' standard
  deviation is at most 0.1 s. A progress bar counts the seconds.
* ``check datascale`` puts the model's number of keys as fast as its writers can and reports
  how much the first endpoint's resident memory grew (``process_resident_memory_bytes`` from
  its ``/metrics``). A progress bar counts the puts.

The load runs on one asyncio event loop (one Python thread) with ``clients`` coroutines over
one client connection per endpoint. That carries the ``s`` and ``m`` models easily; at ``l``
and ``xl`` (8,000 and 15,000 puts per second) this process itself may be what holds the
throughput down, which the FAIL line cannot tell apart from a slow cluster: ``PASS`` there
is meaningful, ``FAIL`` should be checked with etcd's ``benchmark`` or etcdctl.

Ctrl-C stops the load early; what was written is still deleted and the figures so far are
judged, as etcdctl does. Unlike etcdctl's, a put waits at most ``--command-timeout`` (then it
counts as an error), so a member that stops answering fails the check instead of hanging it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import random
import shutil
import signal
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from petcd.client import ClientError
from petcd.client.aio import AsyncClient
from petcd.client.client import normalize_endpoint
from petcd.client.requests import prefix_range_end
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import ClientConfig, Invocation, async_client
from petcd.ctl.errors import (
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    EXIT_INVALID_INPUT,
    ExitError,
    SilentExit,
)
from petcd.ctl.gofmt import go_duration, go_quote

# etcdctl's load models (etcdctl/ctlv3/command/check.go): the figures are its interface.
_ALIASES = {"s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l"}
_ALIASES |= {"xl": "xl", "xLarge": "xl"}


@dataclass(frozen=True)
class PerfModel:
    limit: int  # puts per second
    clients: int
    duration_s: float


@dataclass(frozen=True)
class DatascaleModel:
    limit: int  # keys written
    kv_size: int  # bytes per key-value, as reported
    clients: int


PERF_MODELS = {
    "s": PerfModel(150, 50, 60.0),
    "m": PerfModel(1000, 200, 60.0),
    "l": PerfModel(8000, 500, 60.0),
    "xl": PerfModel(15000, 1000, 60.0),
}
DATASCALE_MODELS = {
    "s": DatascaleModel(10_000, 1024, 50),
    "m": DatascaleModel(100_000, 1024, 200),
    "l": DatascaleModel(1_000_000, 1024, 500),
    "xl": DatascaleModel(3_000_000, 1024, 1000),
}

PERF_PREFIX = "/etcdctl-check-perf/"
DATASCALE_PREFIX = "/etcdctl-check-datascale/"

# The pacing of check perf may catch up this much lateness of the event loop's timers at
# once (etcdctl's rate limiter has a burst of one request, and Go's timers are finer).
_CATCH_UP_S = 0.005
_CLEANUP_TIMEOUT_S = 30.0
_RESIDENT_MEMORY = "process_resident_memory_bytes"


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Stats:
    """What etcd's pkg/report computes from a run: latencies of the successes, errors by
    text, and the time from the start of the load until its last answer."""

    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    total_s: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.total_s if self.total_s > 0 else 0.0

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def stddev(self) -> float:
        n = len(self.latencies)
        if n == 0:
            return math.nan  # etcd divides by zero here too
        mean = sum(self.latencies) / n
        return math.sqrt(sum((x - mean) ** 2 for x in self.latencies) / n)


def random_key(prefix: bytes, size: int) -> bytes:
    """``prefix`` and a ``size``-byte key: the zig-zag varint of a random 63-bit number, then
    zero bytes (etcdctl's ``binary.PutVarint`` into a zeroed buffer)."""
    n = random.getrandbits(63) << 1  # non-negative: zig-zag is a shift
    head = bytearray()
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return prefix + bytes(head) + bytes(size - len(head))


async def _writers(
    client: AsyncClient,
    queue: asyncio.Queue[bytes | None],
    count: int,
    value: bytes,
    stats: Stats,
    on_result: Callable[[], None],
) -> None:
    """``count`` coroutines that put the keys from ``queue`` until a None. Each put may take
    the command timeout (etcdctl's writers wait without a deadline: against a member that
    stopped answering they wait for ever, where these count an error and go on)."""

    async def writer() -> None:
        while (key := await queue.get()) is not None:
            start = time.monotonic()
            try:
                await client.put(key, value)
            except ClientError as exc:
                stats.errors[str(exc)] += 1
            else:
                stats.latencies.append(time.monotonic() - start)
            on_result()

    await asyncio.gather(*(writer() for _ in range(count)))


class ProgressBar:
    """A one-line progress report redrawn in place with carriage returns, as etcdctl's:
    ``  12 / 60 Boooom       !  20.00%`` on a terminal; without the bar (``  12 / 60   20.00%``)
    when the output is not one, where nothing tells its width. When finished, the time taken
    follows (`` 100.00% 1m0s``)."""

    def __init__(self, out: Callable[[str], None], total: int, *, terminal: bool) -> None:
        self._out = out
        self._total = max(total, 1)
        self._terminal = terminal
        self._current = 0
        self._started = time.monotonic()
        self._drawn = -1.0

    def set(self, current: int, *, force: bool = False) -> None:
        self._current = min(current, self._total)
        now = time.monotonic()
        if force or now - self._drawn >= 0.2:
            self._drawn = now
            self._out("\r" + self.line())

    def line(self, *, finished: bool = False) -> str:
        counter = f" {self._current} / {self._total} "
        percent = f"{100.0 * self._current / self._total:6.2f}%"
        elapsed = f" {go_duration(round(time.monotonic() - self._started))}" if finished else ""
        if not self._terminal:
            return f"{counter} {percent}{elapsed}"
        width = shutil.get_terminal_size((80, 24)).columns
        cells = max(width - len(counter) - len(percent) - len(elapsed) - 4, 10)
        filled = cells * self._current // self._total
        bar = "B" + ("o" * (filled - 1) + "m" if filled else "") + " " * (cells - filled) + "!"
        return f"{counter}{bar} {percent}{elapsed}"

    def finish(self) -> None:
        self._out("\r" + self.line(finished=True) + "\n")


def _progress(inv: Invocation, total: int) -> ProgressBar:
    def out(text: str) -> None:
        inv.out(text)
        inv.stdout.flush()

    isatty = getattr(inv.stdout, "isatty", None)
    return ProgressBar(out, total, terminal=bool(isatty and isatty()))


def _run_interruptible(body: Callable[[asyncio.Event], Awaitable[Stats]]) -> Stats:
    """Run ``body`` on a new event loop; Ctrl-C sets the event it gets (stop early) instead
    of killing the process, for the length of the run only."""

    async def main() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = True
        try:
            loop.add_signal_handler(signal.SIGINT, stop.set)
        except (RuntimeError, ValueError):  # not the main thread (an in-process caller)
            installed = False
        try:
            return await body(stop)
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    try:
        return asyncio.run(main())
    finally:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGINT, previous)


async def perf_load(
    config: ClientConfig,
    model: PerfModel,
    prefix: bytes,
    progress: ProgressBar,
    stop: asyncio.Event,
) -> Stats:
    """Put at ``model.limit`` per second for ``model.duration_s`` (or until ``stop``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = started + model.duration_s
    interval = 1.0 / model.limit

    async def produce(queue: asyncio.Queue[bytes | None]) -> None:
        due = started
        while not stop.is_set():
            now = loop.time()
            if now >= end:
                break
            if due > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(due, end) - now)
                continue
            await queue.put(random_key(prefix, 256))
            due = max(due + interval, loop.time() - _CATCH_UP_S)

    async def tick() -> None:
        while not stop.is_set():
            elapsed = loop.time() - started
            progress.set(min(int(elapsed), int(model.duration_s)), force=True)
            if elapsed >= model.duration_s:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0 - elapsed % 1.0)

    ticker = asyncio.create_task(tick())
    try:
        stats = await _load(config, model.clients, bytes(1024), produce, lambda: None)
        if not stop.is_set():
            progress.set(int(model.duration_s), force=True)
    finally:
        ticker.cancel()
    return stats


async def datascale_load(
    config: ClientConfig,
    model: DatascaleModel,
    prefix: bytes,
    progress: ProgressBar,
    stop: asyncio.Event,
) -> Stats:
    """Put ``model.limit`` keys of 512 bytes with 512-byte values, as fast as the writers go."""
    done = 0

    def one_done() -> None:
        nonlocal done
        done += 1
        progress.set(done)

    async def produce(queue: asyncio.Queue[bytes | None]) -> None:
        for _ in range(model.limit):
            if stop.is_set():
                break
            await queue.put(random_key(prefix, 512))

    return await _load(config, model.clients, bytes(512), produce, one_done)


async def _load(
    config: ClientConfig,
    clients: int,
    value: bytes,
    produce: Callable[[asyncio.Queue[bytes | None]], Awaitable[None]],
    on_result: Callable[[], None],
) -> Stats:
    """Put ``value`` under the keys that ``produce`` queues, from ``clients`` writers over one
    client, until ``produce`` returns and the queue is drained; the figures of the run."""
    client = async_client(config)
    stats = Stats()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=clients)
    started = time.monotonic()

    async def feed() -> None:
        await produce(queue)
        for _ in range(clients):
            await queue.put(None)

    try:
        await asyncio.gather(feed(), _writers(client, queue, clients, value, stats, on_result))
    finally:
        await client.close()
    stats.total_s = time.monotonic() - started
    return stats


# --- the commands ----------------------------------------------------------------------------


def _model(inv: Invocation) -> str:
    load = str(inv.values["load"])
    model = _ALIASES.get(load)
    if model is None:
        raise ExitError(EXIT_BAD_FEATURE, f"unknown load option {load}")
    return model


def _refuse_used_prefix(inv: Invocation, prefix: bytes, hint: str) -> None:
    """Exit if a key exists under ``prefix``; ``hint`` says how to delete them ({} is the
    prefix)."""
    try:
        resp = inv.client().get(prefix, prefix_range_end(prefix), limit=1)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    if resp.kvs:
        text = prefix.decode("utf-8", "replace")
        raise ExitError(
            EXIT_INVALID_INPUT, f"prefix {go_quote(text)} has keys. Delete with {hint.format(text)}"
        )


def _compact(inv: Invocation, revision: int) -> None:
    inv.out(f"Compacting with revision {revision}\n")
    try:
        inv.client().compact(revision, physical=True, timeout_s=_CLEANUP_TIMEOUT_S)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    inv.out(f"Compacted with revision {revision}\n")


def _defrag_all(inv: Invocation) -> None:
    for ep in inv.client_config().endpoints:
        inv.out(f"Defragmenting {go_quote(ep)}\n")
        try:
            inv.client().defragment(ep, timeout_s=_CLEANUP_TIMEOUT_S)
        except ClientError as exc:
            raise ExitError(EXIT_ERROR, str(exc)) from None
        inv.out(f"Defragmented {go_quote(ep)}\n")


def _print_errors(inv: Invocation, stats: Stats) -> None:
    inv.out("FAIL: too many errors\n")
    for text, count in stats.errors.items():
        inv.out(f"FAIL: ERROR({text}) -> {count}\n")


def perf_command(inv: Invocation) -> None:
    model = PERF_MODELS[_model(inv)]
    prefix = os.fsencode(str(inv.values["prefix"]))
    config = inv.client_config()
    _refuse_used_prefix(inv, prefix, "'etcdctl del --prefix {}' first")
    progress = _progress(inv, int(model.duration_s))

    def body(stop: asyncio.Event) -> Awaitable[Stats]:
        return perf_load(config, model, prefix, progress, stop)

    stats = _run_interruptible(body)
    progress.finish()
    try:
        deleted = inv.client().delete(
            prefix, prefix_range_end(prefix), timeout_s=_CLEANUP_TIMEOUT_S
        )
    except ClientError as exc:
        inv.out(f"FAIL: Cleanup failed during key deletion: ERROR({exc})\n")
    else:
        if inv.values["auto-compact"]:
            _compact(inv, deleted.header.revision)
    if inv.values["auto-defrag"]:
        _defrag_all(inv)
    ok = True
    if stats.errors:
        _print_errors(inv, stats)
        ok = False
    writes = int(stats.rps) + 1
    if stats.rps / model.limit <= 0.9:
        inv.out(f"FAIL: Throughput too low: {writes} writes/s\n")
        ok = False
    else:
        inv.out(f"PASS: Throughput is {writes} writes/s\n")
    if stats.slowest > 0.5:
        inv.out(f"Slowest request took too long: {stats.slowest:f}s\n")
        ok = False
    else:
        inv.out(f"PASS: Slowest request took {stats.slowest:f}s\n")
    if stats.stddev > 0.1:
        inv.out(f"Stddev too high: {stats.stddev:f}s\n")
        ok = False
    else:
        inv.out(f"PASS: Stddev is {stats.stddev:f}s\n")
    if not ok:
        inv.out("FAIL\n")
        raise SilentExit(EXIT_ERROR)
    inv.out("PASS\n")


def resident_memory_bytes(endpoint: str, config: ClientConfig) -> tuple[float, str]:
    """``process_resident_memory_bytes`` from ``endpoint``'s ``/metrics``; 0.0 and the reason
    (the line etcdctl prints) if it cannot be read."""
    host, is_tls = normalize_endpoint(endpoint)
    url = f"{'https' if is_tls else 'http'}://{host}/metrics"
    context: ssl.SSLContext | None = None
    if is_tls:
        tls = config.tls
        context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
        if tls is not None and tls.cert_file:
            try:
                context.load_cert_chain(tls.cert_file, tls.key_file)
            except (OSError, ssl.SSLError) as exc:
                return 0.0, f"client certificate error: {exc}"
    try:
        with urllib.request.urlopen(url, timeout=_CLEANUP_TIMEOUT_S, context=context) as resp:
            body = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        return 0.0, f"fetch error: {exc}"
    for line in body.splitlines():
        if line.startswith(_RESIDENT_MEMORY):
            text = line[len(_RESIDENT_MEMORY) :].strip()
            try:
                return float(text), ""
            except ValueError:
                return 0.0, f"fetch error: {_RESIDENT_MEMORY} is not a number: {text!r}"
    return 0.0, f"could not find: {_RESIDENT_MEMORY}"


def datascale_command(inv: Invocation) -> None:
    model = DATASCALE_MODELS[_model(inv)]
    prefix = os.fsencode(str(inv.values["prefix"]))
    config = inv.client_config()
    _refuse_used_prefix(inv, prefix, "etcdctl del --prefix {} first")
    endpoint = config.endpoints[0]
    before, why = resident_memory_bytes(endpoint, config)
    if before == 0:
        if why:
            inv.out(why + "\n")
        inv.out("FAIL: Could not read process_resident_memory_bytes before the put operations.\n")
        raise SilentExit(EXIT_ERROR)
    inv.out(
        f"Start data scale check for work load [{model.limit} key-value pairs, "
        f"{model.kv_size} bytes per key-value, {model.clients} concurrent clients].\n"
    )
    progress = _progress(inv, model.limit)
    progress.set(0, force=True)

    def body(stop: asyncio.Event) -> Awaitable[Stats]:
        return datascale_load(config, model, prefix, progress, stop)

    stats = _run_interruptible(body)
    progress.finish()
    after, why = resident_memory_bytes(endpoint, config)
    if after == 0:
        if why:
            inv.out(why + "\n")
        inv.out("FAIL: Could not read process_resident_memory_bytes after the put operations.\n")
        raise SilentExit(EXIT_ERROR)
    try:
        deleted = inv.client().delete(
            prefix, prefix_range_end(prefix), timeout_s=_CLEANUP_TIMEOUT_S
        )
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    if inv.values["auto-compact"]:
        _compact(inv, deleted.header.revision)
    if inv.values["auto-defrag"]:
        _defrag_all(inv)
    if stats.errors:
        _print_errors(inv, stats)
        raise SilentExit(EXIT_ERROR)
    used_mb = (after - before) / (1024 * 1024)
    inv.out(f"PASS: Approximate system memory used : {used_mb:.2f} MB.\n")


_LOAD_HELP = "workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"


def _flags(kind: str, prefix: str) -> list[Flag]:
    return [
        Flag("load", FlagKind.STRING, "s", f"The {kind} check's {_LOAD_HELP}"),
        Flag("prefix", FlagKind.STRING, prefix, f"The prefix for writing the {kind} check's keys."),
        Flag(
            "auto-compact",
            FlagKind.BOOL,
            False,
            "Compact storage with last revision after test is finished.",
        ),
        Flag("auto-defrag", FlagKind.BOOL, False, "Defragment storage after test is finished."),
    ]


def commands() -> list[Command]:
    check = Command("check <subcommand>", "commands for checking properties of the etcd cluster")
    check.add(
        Command(
            "perf [options]",
            "Check the performance of the etcd cluster",
            run=perf_command,
            flags=_flags("performance", PERF_PREFIX),
        ),
        Command(
            "datascale [options]",
            "Check the memory usage of holding data for different workloads on a given server "
            "endpoint.",
            run=datascale_command,
            flags=_flags("datascale", DATASCALE_PREFIX),
            long="If no endpoint is provided, localhost will be used. If multiple endpoints are "
            "provided, first endpoint will be used.",
        ),
    )
    return [check]
