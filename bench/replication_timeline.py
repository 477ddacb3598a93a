"""Where one replicated write's time goes: a timeline across the members of a 3-member cluster.

Theory of operation
-------------------
Run as a script, it starts an N-member petcd cluster (default 3) on loopback in which every
member runs this very file as its program (``--member``): that installs a few wrappers around
petcd's functions on the replication path, each of which records ``time.monotonic_ns()`` (one
system-wide clock, so the members' timestamps compare) and what passed by, then runs petcd's
``main``. A single-client put load (``loadgen put --clients 1``) runs for ``--seconds``; the
members are stopped by pid and write their records at exit; the script lines the records of
each entry up across the members and prints the median (and p90) of each step of a write:

    submit -> propose -> [leader] ready (entry appended) -> MsgApp written to each follower
    -> [follower] MsgApp delivered -> its ready -> fsync start/end -> MsgAppResp written
    -> [leader] MsgAppResp delivered -> commit (ready with the entry committed) -> apply
    -> answer (the request's future done), and for a write that came through a follower:
    MsgProp hop, and the commit reaching the follower, its apply and answer.

The wrappers cost a few microseconds each: figures are for comparing steps, not absolute.
Nothing here is a test; timings never fail anything.

    .venv/bin/python bench/replication_timeline.py [--seconds 5] [--petcd-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))


# -- the member side: wrappers that record -------------------------------------------------------


def _install(out_path: str) -> None:
    from petcd.peer import transport as transport_mod
    from petcd.server import entry as entry_codec
    from petcd.server import main as main_mod
    from petcd.server import member as member_mod
    from petcd.wal import wal as wal_mod

    records: list[tuple[Any, ...]] = []
    now = time.monotonic_ns
    rec = records.append

    def dump() -> None:
        with open(out_path, "w") as f:
            json.dump(records, f)

    # petcd re-raises SIGTERM after a clean stop (atexit would not run): dump when it is served.
    orig_serve = main_mod._serve

    async def serve(*a: Any) -> int:
        try:
            return await orig_serve(*a)
        finally:
            dump()

    main_mod._serve = serve  # type: ignore[assignment]

    orig_encode = entry_codec.encode

    def encode(rid: int, req: Any) -> bytes:
        data = orig_encode(rid, req)
        rec((now(), "propose", zlib.crc32(data)))
        return data

    entry_codec.encode = encode  # type: ignore[assignment]

    M = member_mod.Member
    orig_submit = M.submit

    def submit(self: Any, req: Any) -> Any:
        rec((now(), "submit"))
        fut = orig_submit(self, req)
        fut.add_done_callback(lambda _f: rec((now(), "answer")))
        return fut

    M.submit = submit  # type: ignore[method-assign]

    orig_handle = M._handle_ready

    async def handle_ready(self: Any, rd: Any) -> None:
        rec(
            (
                now(),
                "ready",
                [[e.index, zlib.crc32(e.data)] for e in rd.entries if e.data],
                [[e.index, zlib.crc32(e.data)] for e in rd.committed_entries if e.data],
                rd.must_sync,
                len(rd.messages),
            )
        )
        await orig_handle(self, rd)
        rec((now(), "ready_end"))

    M._handle_ready = handle_ready  # type: ignore[method-assign]

    orig_apply = M._apply

    def apply(self: Any, entries: Any) -> None:
        rec((now(), "apply", [e.index for e in entries if e.data]))
        orig_apply(self, entries)
        rec((now(), "apply_end"))

    M._apply = apply  # type: ignore[method-assign]

    W = wal_mod.WAL
    orig_sync = W.sync

    def sync(self: Any) -> None:
        rec((now(), "sync"))
        orig_sync(self)
        rec((now(), "sync_end"))

    W.sync = sync  # type: ignore[method-assign]
    # Under concurrent writes the fdatasync is submitted (Linux AIO) and completed later.
    orig_sync_start, orig_sync_done = W.sync_start, W.sync_done

    def sync_start(self: Any, submit: Any) -> bool:
        rec((now(), "sync"))
        return orig_sync_start(self, submit)  # type: ignore[no-any-return]

    def sync_done(self: Any, result: int) -> None:
        orig_sync_done(self, result)
        rec((now(), "sync_end"))

    W.sync_start = sync_start  # type: ignore[method-assign]
    W.sync_done = sync_done  # type: ignore[method-assign]

    def msg(m: Any) -> list[Any]:
        last = m.entries[-1].index if m.entries else m.index
        return [m.type.name, m.to, m.from_, m.index, last, m.commit, len(m.entries), m.reject]

    orig_write = transport_mod._write

    def write(writer: Any, data: bytes) -> None:
        t = now()
        orig_write(writer, data)
        rec((t, "write", now() - t, len(data)))

    transport_mod._write = write

    T = transport_mod.PeerTransport
    orig_send = T.send

    def send(self: Any, messages: Any) -> None:
        messages = list(messages)
        rec((now(), "send", [msg(m) for m in messages]))
        orig_send(self, messages)
        rec((now(), "send_end"))

    T.send = send  # type: ignore[method-assign]

    orig_init = T.__init__

    def init(self: Any, cfg: Any, *, on_messages: Any, **kw: Any) -> None:
        def deliver(ms: list[Any]) -> None:
            rec((now(), "recv", [msg(m) for m in ms]))
            on_messages(ms)

        orig_init(self, cfg, on_messages=deliver, **kw)
        rec((now(), "me", int(cfg.member_id)))

    T.__init__ = init  # type: ignore[method-assign]


def member_main() -> int:
    out = os.environ["PETCD_TIMELINE_OUT"]
    if os.environ.get("PETCD_TIMELINE_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    if out != "-":
        _install(out)
    from petcd.server.main import main

    sys.argv[0] = "petcd"
    return main()


# -- the driver --------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def analyze(traces: dict[str, list[list[Any]]]) -> dict[str, Any]:
    """Line the members' records up per entry; return the step durations (µs)."""
    ids: dict[str, int] = {}
    for name, recs in traces.items():
        for r in recs:
            if r[1] == "me":
                ids[name] = r[2]
    # Per member: when each entry (by crc) was proposed (with the submit before it), appended,
    # synced; when MsgApps covering an index were sent/received, acks sent/received, commits.
    steps: dict[str, list[float]] = {}

    def add(step: str, a: int | None, b: int | None) -> None:
        if a is not None and b is not None and b >= a:
            steps.setdefault(step, []).append((b - a) / 1000)

    per: dict[str, dict[str, Any]] = {}
    for name, recs in traces.items():
        d: dict[str, Any] = {
            "propose": {},  # crc -> (t_submit, t_propose)
            "append": {},  # index -> t (ready with the entry)
            "crc_index": {},
            "sync_end_after": [],  # sync_end times
            "sync_start": [],
            "committed": {},  # index -> t of the ready with it committed
            "apply": {},  # index -> (t, t_end)
            "send_app": {},  # (to, index) -> first t a MsgApp with the entry was written
            "send_commit": {},  # (to, commit) -> first t
            "recv_app": {},  # (from, index) -> t
            "recv_commit": {},  # commit -> first t
            "send_resp": {},  # index -> t (APP_RESP index >= this)
            "recv_resp": {},  # (from, index) -> t
            "send_prop": {},
            "recv_prop": {},
            "answers": [],
            "submits": [],
        }
        per[name] = d
        last_submit = None
        pending_apply: list[int] = []
        for r in recs:
            t, kind = r[0], r[1]
            if kind == "submit":
                last_submit = t
                d["submits"].append(t)
            elif kind == "answer":
                d["answers"].append(t)
            elif kind == "propose":
                d["propose"][r[2]] = (last_submit, t)
                last_submit = None
            elif kind == "ready":
                for idx, crc in r[2]:
                    d["append"].setdefault(idx, t)
                    d["crc_index"][crc] = idx
                for idx, crc in r[3]:
                    d["committed"].setdefault(idx, t)
                    d["crc_index"][crc] = idx
            elif kind == "sync":
                d["sync_start"].append(t)
            elif kind == "sync_end":
                d["sync_end_after"].append(t)
            elif kind == "apply":
                pending_apply = r[2]
                for idx in r[2]:
                    d["apply"].setdefault(idx, [t, None])
            elif kind == "apply_end":
                for idx in pending_apply:
                    if d["apply"][idx][1] is None:
                        d["apply"][idx][1] = t
                pending_apply = []
            elif kind in ("send", "recv"):
                for mtype, to, frm, index, last, commit, _n, rej in r[2]:
                    peer = to if kind == "send" else frm
                    if mtype == "APP":
                        for i in range(index + 1, last + 1):
                            d[f"{kind}_app"].setdefault((peer, i), t)
                        d[f"{kind}_commit"].setdefault((peer, commit), t)
                    elif mtype == "HEARTBEAT":
                        d[f"{kind}_commit"].setdefault((peer, commit), t)
                    elif mtype == "APP_RESP" and not rej:
                        d[f"{kind}_resp"].setdefault((peer, last), t)
                    elif mtype == "PROP":
                        d[f"{kind}_prop"].setdefault(peer, []).append(t)
    # The leader: the member that sent MsgApps with entries most often.
    leader = max(per, key=lambda n: len(per[n]["send_app"]))
    lid = ids[leader]
    followers = [n for n in per if n != leader]
    L = per[leader]

    # Index the resp/commit maps by peer for speed.
    def by_peer(m: dict[Any, int]) -> dict[Any, list[tuple[int, int]]]:
        out: dict[Any, list[tuple[int, int]]] = {}
        for (p, i), t in m.items():
            out.setdefault(p, []).append((i, t))
        for v in out.values():
            v.sort()
        return out

    def earliest_ge(lst: list[tuple[int, int]], idx: int) -> int | None:
        ts = [t for i, t in lst if i >= idx]
        return min(ts) if ts else None

    L_resp = by_peer(L["recv_resp"])
    L_commit_sent = by_peer(L["send_commit"])
    fol_data = {}
    for f in followers:
        F = per[f]
        fol_data[f] = (F, by_peer(F["send_resp"]), by_peer(F["recv_commit"]))
    n_via = {"leader": 0, "follower": 0}
    bounds: dict[str, int] = {}
    for name, d in per.items():
        for crc, (t_sub, t_prop) in d["propose"].items():
            idx = L["crc_index"].get(crc)
            if idx is None or t_sub is None:
                continue
            origin_is_leader = name == leader
            tag = "L" if origin_is_leader else "F"
            n_via["leader" if origin_is_leader else "follower"] += 1
            add(f"{tag} submit->propose", t_sub, t_prop)
            t_app = L["append"].get(idx)
            if not origin_is_leader:
                props = per[name]["send_prop"].get(lid, [])
                t_sp = next((t for t in props if t >= t_prop), None)
                add("F propose->MsgProp written", t_prop, t_sp)
                rp = L["recv_prop"].get(ids[name], [])
                t_rp = next((t for t in rp if t_sp is not None and t >= t_sp), None)
                add("F MsgProp written->leader got it", t_sp, t_rp)
                add("F leader got MsgProp->leader ready", t_rp, t_app)
            else:
                add("L propose->leader ready", t_prop, t_app)
            acks = []
            resp_written = []
            for f in followers:
                F, f_resp, _ = fol_data[f]
                fid = ids[f]
                t_sa = L["send_app"].get((fid, idx))
                add("leader ready->MsgApp written", t_app, t_sa)
                t_ra = F["recv_app"].get((lid, idx))
                add("MsgApp written->follower got it", t_sa, t_ra)
                t_fa = F["append"].get(idx)
                add("follower got MsgApp->its ready", t_ra, t_fa)
                t_se = next((t for t in F["sync_end_after"] if t_fa and t >= t_fa), None)
                t_ss = next((t for t in F["sync_start"] if t_fa and t >= t_fa), None)
                add("follower ready->fsync start", t_fa, t_ss)
                add("follower fsync", t_ss, t_se)
                t_sr = earliest_ge(f_resp.get(lid, []), idx)
                add("follower fsync end->MsgAppResp written", t_se, t_sr)
                t_rr = earliest_ge(L_resp.get(fid, []), idx)
                add("MsgAppResp written->leader got it", t_sr, t_rr)
                if t_rr is not None:
                    acks.append(t_rr)
                if t_sr is not None:
                    resp_written.append(t_sr)
            t_lse = next((t for t in L["sync_end_after"] if t_app and t >= t_app), None)
            add("leader ready->its fsync end", t_app, t_lse)
            t_first_resp = min(resp_written) if resp_written else None
            add("leader ready->first MsgAppResp written", t_app, t_first_resp)
            if t_lse is not None and t_first_resp is not None:
                # Who held the commit up: the leader's own fsync or the followers' acks.
                bound = "own fsync" if t_lse > t_first_resp else "follower ack"
                bounds[bound] = bounds.get(bound, 0) + 1
            t_first_ack = min(acks) if acks else None
            t_commit = L["committed"].get(idx)
            add("leader first ack->commit ready", t_first_ack, t_commit)
            if t_lse is not None and t_first_ack is not None:
                add(
                    "leader max(first ack, own fsync)->commit ready",
                    max(t_lse, t_first_ack),
                    t_commit,
                )
            t_ap = L["apply"].get(idx)
            add("leader commit ready->apply start", t_commit, t_ap[0] if t_ap else None)
            if origin_is_leader:
                t_ans = next((t for t in L["answers"] if t >= t_prop), None)
                add("L apply end->answer", t_ap[1] if t_ap else None, t_ans)
                add("L TOTAL submit->answer", t_sub, t_ans)
            else:
                F, _, f_commit = fol_data[name]
                fid = ids[name]
                t_cs = earliest_ge(L_commit_sent.get(fid, []), idx)
                add("F leader commit ready->commit sent to origin", t_commit, t_cs)
                t_cr = earliest_ge(f_commit.get(lid, []), idx)
                add("F commit sent->origin got it", t_cs, t_cr)
                t_fc = F["committed"].get(idx)
                add("F origin got commit->its ready", t_cr, t_fc)
                t_fap = F["apply"].get(idx)
                add("F origin ready->apply start", t_fc, t_fap[0] if t_fap else None)
                t_ans = next((t for t in F["answers"] if t >= t_prop), None)
                add("F origin apply end->answer", t_fap[1] if t_fap else None, t_ans)
                add("F TOTAL submit->answer", t_sub, t_ans)
    table = {
        k: {
            "n": len(v),
            "p50_us": round(statistics.median(v), 1),
            "p90_us": round(_pct(v, 0.9), 1),
        }
        for k, v in steps.items()
    }
    return {"leader": leader, "writes": n_via, "commit_held_by": bounds, "steps": table}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        del sys.argv[1]
        return member_main()
    import run  # bench/run.py: Server, free_port, etcd_argv, LOADGEN

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--python", default=str(run.REPO_DIR / ".venv" / "bin" / "python"))
    p.add_argument("--petcd-src", help="PYTHONPATH for the members (another worktree's src)")
    p.add_argument("--out", help="write the step table here (JSON)")
    p.add_argument("--keep", action="store_true")
    p.add_argument(
        "--py-spy",
        metavar="DIR",
        help="also record each member's GIL samples (py-spy, raw) during the load into DIR",
    )
    p.add_argument("--no-trace", action="store_true", help="members run without the wrappers")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="petcd-timeline-"))
    try:
        return _measure(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path) -> int:
    import run

    names = [f"m{i}" for i in range(args.members)]
    peers = {n: run.free_port() for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in peers.items())
    servers = []
    env_base = dict(os.environ)
    if args.petcd_src:
        env_base["PYTHONPATH"] = args.petcd_src
    try:
        for n in names:
            port = run.free_port()
            argv = [args.python, str(Path(__file__).resolve()), "--member"]
            argv += run.etcd_argv(n, work / f"{n}.data", port, peers[n], initial)
            argv += ["--initial-cluster-state", "new", "--initial-cluster-token", "timeline"]
            servers.append(run.Server(n, argv, port, work / f"{n}.log"))
        for s in servers:
            trace = "-" if args.no_trace else str(work / f"{s.name}.trace.json")
            os.environ["PETCD_TIMELINE_OUT"] = trace
            if args.petcd_src:
                os.environ["PYTHONPATH"] = args.petcd_src
            s.launch()
        for s in servers:
            s.wait_ready(60)
        endpoint = ",".join(s.endpoint for s in servers)
        wl = run.WORKLOADS["put-1c"]
        spies = []
        if args.py_spy:
            Path(args.py_spy).mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy", path=str(Path(args.python).parent)) or "py-spy"
            for s in servers:
                assert s.proc is not None
                out = str(Path(args.py_spy) / f"{s.name}.txt")
                argv = [spy, "record", "--gil", "-r", "300", "-f", "raw", "-o", out]
                argv += ["-d", str(int(args.seconds)), "-p", str(s.proc.pid)]
                spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        try:
            res = run.run_loadgen(endpoint, wl, 100000, args.seconds)
        finally:
            for sp in spies:
                sp.wait(timeout=args.seconds + 30)
        print(
            f"loadgen put-1c: {res['requests_per_s']:.0f}/s p50 {res['p50_ms']:.2f} ms "
            f"p99 {res['p99_ms']:.2f} ms; load average {os.getloadavg()[0]:.2f}"
        )
    finally:
        for s in servers:
            s.stop()
        os.environ.clear()
        os.environ.update(env_base)
    if args.no_trace:
        return 0
    traces = {}
    for n in names:
        path = work / f"{n}.trace.json"
        traces[n] = json.loads(path.read_text())
    result = analyze(traces)
    print(
        f"leader {result['leader']}; writes by origin {result['writes']}; "
        f"commit held up by {result['commit_held_by']}"
    )
    width = max(len(k) for k in result["steps"])
    for k, v in result["steps"].items():
        print(f"  {k:{width}}  n={v['n']:6}  p50 {v['p50_us']:8.1f} µs  p90 {v['p90_us']:8.1f} µs")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
