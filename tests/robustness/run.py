"""One robustness run: a cluster, a workload, faults, then every check; and replay of a record.

Theory of operation
-------------------
:func:`run` starts a :class:`~tests.robustness.cluster.Cluster`, starts the client workers
and watchers, and injects faults from the calling thread for ``duration_s``: each fault is
applied to one member and healed before the next (kill -9 then restart on the same data
directory; SIGSTOP for a while then SIGCONT; its inbound peer traffic blackholed or dropped
for a while), so a 3-member cluster always keeps a quorum
between faults. Then it stops the clients, heals the cluster, kills every member with
SIGKILL and restarts them (whatever was acknowledged must survive that), reads every key
and the whole prefix (these final reads are part of the history), reads the store's log
with a watch from revision 1, waits for the watchers to catch up, and checks:

- linearizability and the revision checks (:func:`linearizability.check_history`) of the
  history, with unknown writes settled from the log (:func:`patch_unknown_writes`), and
  linearizability again without settling them (within a search budget);
- durability and read/log agreement (:func:`linearizability.check_against_log`);
- the watch guarantees (:func:`watch_check.check_watchers`).

Everything the checks used is written to ``<base>/record.json``;
``python -m tests.robustness.run <record.json>`` runs the checks again on it, which is how
a failure is replayed (real process timing is not reproducible; the record is). Timing and
random choices come from ``seed``.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from petcd.api.etcdserverpb import rpc_pb2
from tests.robustness.cluster import Cluster
from tests.robustness.linearizability import (
    KV,
    CheckerTimeout,
    Compare,
    Delete,
    Event,
    Get,
    Operation,
    Put,
    Report,
    Request,
    Response,
    Txn,
    check_history,
    check_linearizable,
    patch_unknown_writes,
)
from tests.robustness.proxy import Mode
from tests.robustness.watch_check import WatcherHistory, WatchResponseRecord, check_watchers
from tests.robustness.workload import (
    PREFIX,
    PREFIX_END,
    ClientWorker,
    Watcher,
    WorkloadConfig,
    _channel,
    _kv_stub,
    execute,
    prefix_key,
    read_log,
)

FINAL_CLIENT_ID = -1


@dataclass(frozen=True, slots=True)
class RunConfig:
    target: str = "petcd"  # or "etcd" (the reference, to validate the checkers)
    members: int = 1
    duration_s: float = 10.0
    seed: int = 0
    # any of "kill", "pause", "partition" (needs members > 1); empty: no faults
    faults: tuple[str, ...] = ("kill", "pause")
    partition_s: tuple[float, float] = (0.5, 3.0)
    fault_interval_s: tuple[float, float] = (1.5, 3.0)
    pause_s: tuple[float, float] = (0.3, 1.5)
    watchers: bool = True
    progress_requests: bool = True
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    extra_args: tuple[str, ...] = ()


@dataclass
class RunResult:
    config: RunConfig
    history: list[Operation]
    log: list[Event]
    watchers: list[WatcherHistory]
    final_revision: int
    timeline: list[str]
    problems: list[str]  # harness-level findings (watch canceled, watcher never caught up...)
    report: Report | None = None
    watch_errors: list[str] = field(default_factory=list)
    proxy_bytes: list[int] = field(default_factory=list)  # forwarded by each member's proxy

    @property
    def errors(self) -> list[str]:
        assert self.report is not None
        return self.problems + self.report.errors + self.watch_errors

    def summary(self) -> str:
        r = self.report
        assert r is not None
        known = sum(1 for op in self.history if op.response is not None)
        return (
            f"{self.config.target} x{self.config.members} seed {self.config.seed}: "
            f"{len(self.history)} operations ({known} answered), final revision "
            f"{self.final_revision}, {len(self.log)} log events, "
            f"{sum(len(w.responses) for w in self.watchers)} watch responses, "
            f"{len(self.timeline)} faults, {r.states_explored} states explored, "
            f"{len(self.errors)} errors"
        )


def run(base: Path, config: RunConfig) -> RunResult:
    rng = random.Random(config.seed)
    cluster = Cluster(
        base,
        config.target,
        config.members,
        list(config.extra_args),
        proxied="partition" in config.faults,
    )
    stop_clients = threading.Event()
    stop_watchers = threading.Event()
    timeline: list[str] = []
    t0 = time.monotonic()
    try:
        cluster.start()
        endpoints = cluster.endpoints
        workers = [
            ClientWorker(c, endpoints, config.workload, rng.randrange(2**32), stop_clients)
            for c in range(config.workload.clients)
        ]
        interval = 0.5 if config.progress_requests else 1e9
        watchers: list[Watcher] = []
        if config.watchers:
            watchers = [
                Watcher("prefix", endpoints, PREFIX, PREFIX_END, 1, stop_watchers, interval),
                Watcher("key0", endpoints[::-1], prefix_key(0), b"", 1, stop_watchers, interval),
            ]
        for w in workers:
            w.thread.start()
        for wt in watchers:
            wt.thread.start()
        deadline = t0 + config.duration_s
        late_started = False
        while time.monotonic() < deadline:
            wait_s = rng.uniform(*config.fault_interval_s)
            time.sleep(max(0.0, min(wait_s, deadline - time.monotonic())))
            if config.watchers and not late_started:
                # A watcher that starts in the past: it catches up from history first.
                late_started = True
                start = max(1, _current_revision(endpoints) - 20)
                late = Watcher(
                    "late", endpoints, PREFIX, PREFIX_END, start, stop_watchers, interval
                )
                watchers.append(late)
                late.thread.start()
            if time.monotonic() >= deadline or not config.faults:
                continue
            _inject(cluster, rng, config, timeline, t0)
        stop_clients.set()
        for w in workers:
            w.thread.join(timeout=30)
            assert not w.thread.is_alive(), f"client {w.client_id} hangs"
        cluster.heal()
        timeline.append(f"{time.monotonic() - t0:.1f}s kill -9 every member and restart")
        cluster.kill_all_and_restart()
        history = [op for w in workers for op in w.history]
        final = _final_reads(endpoints, config.workload)
        history += final
        final_revision = max(op.response.revision for op in final if op.response)
        log = read_log(endpoints, final_revision)
        problems = _wait_for_watchers(watchers, log, final_revision)
        stop_watchers.set()
        for wt in watchers:
            wt.thread.join(timeout=30)
            problems += wt.problems
        result = RunResult(
            config,
            history,
            log,
            [w.history() for w in watchers],
            final_revision,
            timeline,
            problems,
        )
        result.proxy_bytes = [p.bytes_forwarded for p in cluster.proxies]
    finally:
        stop_clients.set()
        stop_watchers.set()
        cluster.stop()
    check(result)
    save(result, base / "record.json")
    return result


UNSETTLED_STATES_MAX = 300_000


def check(result: RunResult) -> None:
    patched = patch_unknown_writes(result.history, result.log)
    result.report = check_history(patched, result.log)
    # The same search without trusting the log for unknown writes: accepting is cheap, a
    # rejection may need every subset of them, so it gets a budget; a verdict within the
    # budget is exhaustive, hence trustworthy either way.
    try:
        unsettled = check_linearizable(result.history, max_states=UNSETTLED_STATES_MAX)
        result.report.errors += [f"(unknown writes unsettled) {e}" for e in unsettled.errors]
    except CheckerTimeout:
        pass
    result.watch_errors = check_watchers(result.watchers, result.log, result.final_revision)


def _current_revision(endpoints: Sequence[str]) -> int:
    for endpoint in endpoints:
        try:
            with _channel(endpoint) as channel:
                resp = _kv_stub(channel).Range(rpc_pb2.RangeRequest(key=PREFIX), timeout=2.0)
                return int(resp.header.revision)
        except grpc.RpcError:
            continue
    return 1


def _inject(
    cluster: Cluster, rng: random.Random, config: RunConfig, timeline: list[str], t0: float
) -> None:
    kind = rng.choice(config.faults)
    i = rng.randrange(cluster.size)
    at = f"{time.monotonic() - t0:.1f}s"
    if kind == "kill":
        cluster.kill(i)
        time.sleep(rng.uniform(0.0, 0.5))
        cluster.restart(i)
        timeline.append(f"{at} kill -9 {cluster.members[i].name}, restarted")
    elif kind == "pause":
        pause_s = rng.uniform(*config.pause_s)
        cluster.pause(i)
        time.sleep(pause_s)
        cluster.resume(i)
        timeline.append(f"{at} SIGSTOP {cluster.members[i].name} for {pause_s:.1f}s")
    elif kind == "partition":
        partition_s = rng.uniform(*config.partition_s)
        mode = rng.choice([Mode.BLACKHOLE, Mode.DROP])
        cluster.isolate_inbound(i, mode)
        time.sleep(partition_s)
        cluster.reconnect(i)
        timeline.append(
            f"{at} {cluster.members[i].name} hears nobody ({mode.value}) for {partition_s:.1f}s"
        )
    else:
        raise AssertionError(kind)


def _final_reads(endpoints: Sequence[str], workload: WorkloadConfig) -> list[Operation]:
    """Read every key and the prefix after the final restart (retrying until answered)."""
    requests: list[Request] = [Get(prefix_key(i)) for i in range(workload.keys)]
    requests.append(Get(PREFIX, PREFIX_END))
    out = []
    deadline = time.monotonic() + 30
    for request in requests:
        while True:
            for endpoint in endpoints:
                with _channel(endpoint) as channel:
                    call_ns = time.monotonic_ns()
                    try:
                        response = execute(_kv_stub(channel), request, 5.0)
                    except grpc.RpcError:
                        continue
                    out.append(
                        Operation(FINAL_CLIENT_ID, request, call_ns, response, time.monotonic_ns())
                    )
                    break
            else:
                assert time.monotonic() < deadline, f"final read {request} never answered"
                time.sleep(0.2)
                continue
            break
    return out


def _wait_for_watchers(watchers: list[Watcher], log: list[Event], final_revision: int) -> list[str]:
    deadline = time.monotonic() + 20
    problems = []
    for w in watchers:
        wanted = max((e.revision for e in log if w.history().in_range(e.key)), default=0)
        while w.last_seen < wanted and not w.stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        if w.last_seen < wanted:
            problems.append(
                f"watcher {w.name} saw revision {w.last_seen} only, its range changed at {wanted}"
            )
    return problems


# ---------------------------------------------------------------------------------------------
# Records


def _hex(b: bytes) -> str:
    return b.hex()


def _request_json(r: Request) -> dict[str, Any]:
    match r:
        case Put():
            return {"put": [_hex(r.key), _hex(r.value)]}
        case Get():
            return {"get": [_hex(r.key), _hex(r.range_end)]}
        case Delete():
            return {"delete": [_hex(r.key), _hex(r.range_end)]}
        case Txn():
            return {
                "txn": [
                    _hex(r.key),
                    r.compare.value,
                    r.expected_mod_revision,
                    _hex(r.expected_value),
                    _hex(r.value),
                ]
            }


def _request_from(d: dict[str, Any]) -> Request:
    ((kind, a),) = d.items()
    if kind == "put":
        return Put(bytes.fromhex(a[0]), bytes.fromhex(a[1]))
    if kind == "get":
        return Get(bytes.fromhex(a[0]), bytes.fromhex(a[1]))
    if kind == "delete":
        return Delete(bytes.fromhex(a[0]), bytes.fromhex(a[1]))
    return Txn(bytes.fromhex(a[0]), Compare(a[1]), a[2], bytes.fromhex(a[3]), bytes.fromhex(a[4]))


def _kvs_json(kvs: Sequence[KV]) -> list[list[Any]]:
    return [[_hex(kv.key), _hex(kv.value), kv.mod_revision] for kv in kvs]


def _kvs_from(rows: list[list[Any]]) -> tuple[KV, ...]:
    return tuple(KV(bytes.fromhex(k), bytes.fromhex(v), m) for k, v, m in rows)


def _event_json(e: Event) -> list[Any]:
    return [e.revision, _hex(e.key), _hex(e.value), e.is_delete]


def _event_from(row: list[Any]) -> Event:
    return Event(row[0], bytes.fromhex(row[1]), bytes.fromhex(row[2]), row[3])


def save(result: RunResult, path: Path) -> None:
    ops = []
    for op in result.history:
        resp = op.response
        ops.append(
            {
                "client": op.client_id,
                "request": _request_json(op.request),
                "call_ns": op.call_ns,
                "return_ns": op.return_ns,
                "response": None
                if resp is None
                else [resp.revision, _kvs_json(resp.kvs), resp.deleted, resp.succeeded],
            }
        )
    watchers = [
        {
            "name": w.name,
            "key": _hex(w.key),
            "range_end": _hex(w.range_end),
            "start_revision": w.start_revision,
            "responses": [
                [[_event_json(e) for e in r.events], r.header_revision, r.progress, r.stream]
                for r in w.responses
            ],
        }
        for w in result.watchers
    ]
    record = {
        "config": repr(result.config),
        "timeline": result.timeline,
        "final_revision": result.final_revision,
        "problems": result.problems,
        "history": ops,
        "log": [_event_json(e) for e in result.log],
        "watchers": watchers,
    }
    path.write_text(json.dumps(record))


def load(path: Path) -> RunResult:
    record = json.loads(path.read_text())
    history = []
    for d in record["history"]:
        resp = d["response"]
        history.append(
            Operation(
                d["client"],
                _request_from(d["request"]),
                d["call_ns"],
                None if resp is None else Response(resp[0], _kvs_from(resp[1]), resp[2], resp[3]),
                d["return_ns"],
            )
        )
    watchers = [
        WatcherHistory(
            w["name"],
            bytes.fromhex(w["key"]),
            bytes.fromhex(w["range_end"]),
            w["start_revision"],
            tuple(
                WatchResponseRecord(tuple(_event_from(e) for e in evs), rev, progress, stream)
                for evs, rev, progress, stream in w["responses"]
            ),
        )
        for w in record["watchers"]
    ]
    return RunResult(
        RunConfig(),
        history,
        [_event_from(e) for e in record["log"]],
        watchers,
        record["final_revision"],
        record["timeline"],
        record["problems"],
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.robustness.run <record.json>", file=sys.stderr)
        return 2
    result = load(Path(argv[0]))
    check(result)
    for e in result.errors:
        print(e)
    print(result.summary().replace("petcd x1 seed 0", "replayed record"))
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
