"""A linearizability checker for etcd's key-value model, and the revision checks around it.

Theory of operation
-------------------
A *history* is what the clients saw: one :class:`Operation` per request, with the monotonic
time (ns) it was invoked and the time its response arrived, the request and the response.
A request that failed in a way that leaves its fate open (timeout, connection died, server
killed) has ``response=None`` and ``return_ns=None``: it may or may not have taken effect,
at any time after its invocation, so it is checked as returning at infinity and may be
linearized with or without its effect. A read that failed observed nothing and changes
nothing; it is left out.

Linearizability is decided by a Wing-Gong search in the style of Porcupine: the calls and
returns are put in one list ordered by time; the search repeatedly picks a call that is
still pending before the first unmatched return, applies it to the model, lifts the call and
its return out of the list and continues; when it reaches a return whose call has not been
linearized yet it backtracks. Every (set of linearized operations, model state) it has been
in is remembered, so the same sub-problem is never searched twice. The model is
nondeterministic (an unknown revision is only known to be above a bound; an unknown txn's
compare may hold or not), so a step yields a list of possible next states and backtracking
tries each in turn. An unknown write that did not happen is simply never linearized: the
search is done when every operation with a known outcome is.

The model is partitioned by key: every operation becomes one sub-operation per key it can
touch (a prefix read or delete, one per key of the universe under the prefix), and each key
is checked alone. The per-key state is ``(value, mod_revision, floor)``: the key's value
(``None`` when absent), its mod revision when known, and otherwise ``floor``, a revision the
next write must exceed. Partitioning accepts a superset of the histories the global model
accepts (a multi-key read may be placed at different points for different keys), so it
never reports a violation that is not one; what it loses across keys is recovered by the
revision checks, which need no search:

- per client, header revisions of sequential requests never go backwards;
- in real time, a request invoked after another returned never sees an older revision, and
  a write that changed the store gets a strictly newer one;
- two writes never get the same revision;
- against the store's log (every event from revision 1, read by a final watch before any
  compaction): every acknowledged write is in it at its revision (durability), every event
  was written by some request (no phantom writes), revisions have no holes, and every
  successful read returned exactly the log's state of its range at its header revision.

Values written by the workload are unique, which is what lets a read name the write it saw.
Nothing here does I/O; the checker is a pure function of the history.
"""

from __future__ import annotations

import bisect
import enum
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

INFINITY_NS = sys.maxsize


class CheckerTimeout(Exception):
    """The search explored more states than allowed: no verdict."""


# ---------------------------------------------------------------------------------------------
# History


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Get:
    """A linearizable range: one key (``range_end`` empty) or ``[key, range_end)``."""

    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class Delete:
    """DeleteRange of one key or ``[key, range_end)``, with ``prev_kv`` set."""

    key: bytes
    range_end: bytes = b""


class Compare(enum.Enum):
    MOD_REVISION = "mod"
    VALUE = "value"


@dataclass(frozen=True, slots=True)
class Txn:
    """``if key.<compare> == expected then put(key, value) else get(key)``."""

    key: bytes
    compare: Compare
    expected_mod_revision: int = 0
    expected_value: bytes = b""
    value: bytes = b""


Request = Put | Get | Delete | Txn


@dataclass(frozen=True, slots=True)
class Response:
    """What came back: the header revision and, by request kind, the rest.

    ``kvs`` holds a Get's result, a Delete's previous key-values (``prev_kv``), or a failed
    Txn's else-branch read; ``deleted`` a Delete's count; ``succeeded`` a Txn's branch.
    """

    revision: int
    kvs: tuple[KV, ...] = ()
    deleted: int = 0
    succeeded: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    client_id: int
    request: Request
    call_ns: int
    response: Response | None = None  # None: failed, outcome unknown
    return_ns: int | None = None  # None: infinity

    def __post_init__(self) -> None:
        # A response without a return time: the effect is known (from the store's log), not
        # when it happened (see patch_unknown_writes).
        assert self.response is not None or self.return_ns is None, self
        assert self.return_ns is None or self.return_ns >= self.call_ns, self

    @property
    def known(self) -> bool:
        return self.response is not None

    def describe(self) -> str:
        r = self.request
        match r:
            case Put():
                what = f"put({r.key!r}, {r.value!r})"
            case Get():
                what = f"get({r.key!r}{', ' + repr(r.range_end) if r.range_end else ''})"
            case Delete():
                what = f"delete({r.key!r}{', ' + repr(r.range_end) if r.range_end else ''})"
            case Txn():
                cond = (
                    f"mod=={r.expected_mod_revision}"
                    if r.compare is Compare.MOD_REVISION
                    else f"value=={r.expected_value!r}"
                )
                what = f"txn({r.key!r} if {cond} then put {r.value!r})"
        end = "inf" if self.return_ns is None else str(self.return_ns)
        return f"client {self.client_id} [{self.call_ns}, {end}] {what} -> {self.response}"


def is_write(op: Operation) -> bool:
    return not isinstance(op.request, Get)


def changed_store(op: Operation) -> bool:
    """A known write that created a new revision."""
    resp = op.response
    if resp is None:
        return False
    match op.request:
        case Put():
            return True
        case Delete():
            return resp.deleted > 0
        case Txn():
            return resp.succeeded
        case Get():
            return False


# ---------------------------------------------------------------------------------------------
# The per-key model

# (value or None when absent, mod_revision or 0 when unknown, floor)
KeyState = tuple[bytes | None, int, int]
INITIAL_STATE: KeyState = (None, 0, 0)


class KeyOpKind(enum.Enum):
    GET = 1
    PUT = 2
    DELETE = 3
    TXN = 4


@dataclass(frozen=True, slots=True)
class KeyOp:
    """One operation as seen by one key (the partitioned model's input and output)."""

    kind: KeyOpKind
    call_ns: int
    return_ns: int  # INFINITY_NS when unknown
    source: int  # index of the Operation in the history
    known: bool
    revision: int = 0
    value: bytes = b""  # put / txn
    compare: Compare | None = None
    expected_mod_revision: int = 0
    expected_value: bytes = b""
    observed: tuple[bytes, int] | None = None  # a read's (value, mod_revision); None = absent
    deleted: bool = False
    succeeded: bool = False


def _lower(state: KeyState) -> int:
    _, mod, floor = state
    return mod if mod else floor


def _compare(state: KeyState, op: KeyOp) -> list[tuple[bool, KeyState]]:
    """The possible (compare result, refined state) pairs."""
    value, mod, floor = state
    if op.compare is Compare.VALUE:
        return [(value is not None and value == op.expected_value, state)]
    expected = op.expected_mod_revision
    if value is None:
        return [(expected == 0, state)]
    if mod:
        return [(mod == expected, state)]
    out: list[tuple[bool, KeyState]] = [(False, state)]
    if expected > floor:
        out.append((True, (value, expected, expected)))
    return out


def _observe(state: KeyState, observed: tuple[bytes, int] | None, revision: int) -> list[KeyState]:
    value, mod, floor = state
    if observed is None:
        return [state] if value is None else []
    v, r = observed
    if value != v or r > revision:
        return []
    if mod:
        return [state] if mod == r else []
    return [(v, r, r)] if r > floor else []


def step(state: KeyState, op: KeyOp) -> list[KeyState]:
    """All states the key can be in after ``op`` (empty: ``op`` cannot happen here)."""
    value = state[0]
    lower = _lower(state)
    match op.kind:
        case KeyOpKind.GET:
            return _observe(state, op.observed, op.revision)
        case KeyOpKind.PUT:
            if op.known:
                return [(op.value, op.revision, op.revision)] if op.revision > lower else []
            return [(op.value, 0, lower)]
        case KeyOpKind.DELETE:
            if not op.known:
                return [] if value is None else [(None, 0, lower)]
            if value is None:
                return [] if op.deleted else [state]
            if not op.deleted:
                return []
            out: list[KeyState] = []
            for s in _observe(state, op.observed, INFINITY_NS) if op.observed else [state]:
                if op.revision > _lower(s):
                    out.append((None, 0, op.revision))
            return out
        case KeyOpKind.TXN:
            out = []
            for holds, s in _compare(state, op):
                if not op.known:
                    if holds:
                        out.append((op.value, 0, _lower(s)))
                    continue
                if holds != op.succeeded:
                    continue
                if holds:
                    if op.revision > _lower(s):
                        out.append((op.value, op.revision, op.revision))
                else:
                    out.extend(_observe(s, op.observed, op.revision))
            return out


# ---------------------------------------------------------------------------------------------
# Partitioning


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    return start <= key < end


def key_universe(history: Iterable[Operation]) -> list[bytes]:
    keys: set[bytes] = set()
    for op in history:
        r = op.request
        if not getattr(r, "range_end", b""):
            keys.add(r.key)
        if op.response is not None:
            keys.update(kv.key for kv in op.response.kvs)
    return sorted(keys)


def partition(history: Sequence[Operation]) -> dict[bytes, list[KeyOp]]:
    """One list of per-key operations for every key the history can touch."""
    keys = key_universe(history)
    out: dict[bytes, list[KeyOp]] = {k: [] for k in keys}
    for i, op in enumerate(history):
        r = op.request
        resp = op.response
        if isinstance(r, Get) and resp is None:
            continue  # a failed read observed nothing
        known = resp is not None
        rev = resp.revision if resp is not None else 0
        ret = op.return_ns if op.return_ns is not None else INFINITY_NS
        base = KeyOp(KeyOpKind.GET, call_ns=op.call_ns, return_ns=ret, source=i, known=known)
        match r:
            case Put():
                out[r.key].append(replace(base, kind=KeyOpKind.PUT, revision=rev, value=r.value))
            case Txn():
                obs = None
                if resp is not None and not resp.succeeded:
                    obs = _kv_for(resp.kvs, r.key)
                out[r.key].append(
                    replace(
                        base,
                        kind=KeyOpKind.TXN,
                        revision=rev,
                        value=r.value,
                        compare=r.compare,
                        expected_mod_revision=r.expected_mod_revision,
                        expected_value=r.expected_value,
                        succeeded=resp is not None and resp.succeeded,
                        observed=obs,
                    )
                )
            case Get():
                assert resp is not None
                for k in keys:
                    if _in_range(k, r.key, r.range_end):
                        obs = _kv_for(resp.kvs, k)
                        out[k].append(replace(base, kind=KeyOpKind.GET, revision=rev, observed=obs))
            case Delete():
                prev = {kv.key: kv for kv in resp.kvs} if resp is not None else {}
                for k in keys:
                    if not _in_range(k, r.key, r.range_end):
                        continue
                    if resp is None:
                        out[k].append(replace(base, kind=KeyOpKind.DELETE))
                    elif not r.range_end:
                        obs = _kv_for(resp.kvs, k)
                        out[k].append(
                            replace(
                                base,
                                kind=KeyOpKind.DELETE,
                                revision=rev,
                                deleted=resp.deleted > 0,
                                observed=obs,
                            )
                        )
                    else:
                        # A range delete: the prev_kvs name exactly the keys it removed.
                        kv = prev.get(k)
                        out[k].append(
                            replace(
                                base,
                                kind=KeyOpKind.DELETE,
                                revision=rev,
                                deleted=kv is not None,
                                observed=(kv.value, kv.mod_revision) if kv else None,
                            )
                        )
    return {k: v for k, v in out.items() if v}


def _kv_for(kvs: Iterable[KV], key: bytes) -> tuple[bytes, int] | None:
    for kv in kvs:
        if kv.key == key:
            return (kv.value, kv.mod_revision)
    return None


# ---------------------------------------------------------------------------------------------
# The search


@dataclass(frozen=True, slots=True)
class PartitionResult:
    ok: bool
    longest: tuple[int, ...]  # op indices (within the partition) of the deepest linearization
    stuck: tuple[int, ...]  # ops that were candidates when the deepest prefix got stuck
    states_explored: int


def check_ops(
    ops: Sequence[KeyOp],
    step_fn: Callable[[KeyState, KeyOp], list[KeyState]] = step,
    initial: KeyState = INITIAL_STATE,
    max_states: int = 5_000_000,
) -> PartitionResult:
    """Wing-Gong search with memoisation over (linearized bitmask, state).

    An operation with an unknown outcome (``known`` false) gets no return node:
    it may be linearized (with its effect) anywhere after its call, or never, which is the
    same as "it did not take effect". So the search succeeds as soon as every operation with
    a known outcome is linearized, and ``step_fn`` never needs a no-effect alternative for
    unknown operations; that keeps the search from trying every subset of unknown
    operations as no-ops at every point.
    """
    n = len(ops)
    events: list[tuple[int, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call_ns, 0, i))
        if op.known:  # (a write settled from the log returns at infinity, but must happen)
            events.append((op.return_ns, 1, i))
    events.sort()  # at equal times calls come first: such operations count as concurrent
    # A doubly linked list of nodes 1..len(events) (0 is the head, -1 the end).
    size = len(events) + 1
    nxt = [-1] * size
    prv = [-1] * size
    is_call = [False] * size
    opid = [0] * size
    match = [-1] * size
    call_node = [0] * n
    ret_node = [-1] * n
    for pos, (_, kind, i) in enumerate(events, start=1):
        is_call[pos] = kind == 0
        opid[pos] = i
        if kind == 0:
            call_node[i] = pos
        else:
            ret_node[i] = pos
        prv[pos] = pos - 1
        nxt[pos - 1] = pos
    nxt[size - 1] = -1
    for i in range(n):
        match[call_node[i]] = ret_node[i]
    remaining = sum(1 for r in ret_node if r != -1)  # known operations not linearized yet

    def lift(e: int) -> None:
        nxt[prv[e]] = nxt[e]
        if nxt[e] != -1:
            prv[nxt[e]] = prv[e]
        m = match[e]
        if m != -1:
            nxt[prv[m]] = nxt[m]
            if nxt[m] != -1:
                prv[nxt[m]] = prv[m]

    def unlift(e: int) -> None:
        m = match[e]
        if m != -1:
            nxt[prv[m]] = m
            if nxt[m] != -1:
                prv[nxt[m]] = m
        nxt[prv[e]] = e
        if nxt[e] != -1:
            prv[nxt[e]] = e

    cache: set[tuple[int, KeyState]] = set()

    def first_new(alts: list[KeyState], start: int, lin: int) -> int:
        for j in range(start, len(alts)):
            key = (lin, alts[j])
            if key not in cache:
                cache.add(key)
                return j
        return -1

    stack: list[tuple[int, KeyState, list[KeyState], int]] = []
    state = initial
    linearized = 0
    entry = nxt[0]
    longest: tuple[int, ...] = ()
    stuck: tuple[int, ...] = ()
    while remaining:
        if len(cache) > max_states:
            raise CheckerTimeout(f"more than {max_states} states explored")
        # An unlinearized known operation's return is still ahead: the scan meets it first.
        assert entry != -1
        if is_call[entry]:
            i = opid[entry]
            new_lin = linearized | (1 << i)
            alts = step_fn(state, ops[i])
            j = first_new(alts, 0, new_lin) if alts else -1
            if j >= 0:
                stack.append((entry, state, alts, j))
                state = alts[j]
                linearized = new_lin
                if match[entry] != -1:
                    remaining -= 1
                lift(entry)
                entry = nxt[0]
            else:
                entry = nxt[entry]
            continue
        # A return whose call is not linearized: the prefix cannot be extended. Backtrack.
        if len(stack) > len(longest) or not longest:
            longest = tuple(opid[e] for e, _, _, _ in stack)
            cands = []
            e = nxt[0]
            while e != -1 and is_call[e]:
                cands.append(opid[e])
                e = nxt[e]
            if e != -1:
                cands.append(opid[e])
            stuck = tuple(dict.fromkeys(cands))
        if not stack:
            return PartitionResult(False, longest, stuck, len(cache))
        e, prev_state, alts, j = stack.pop()
        i = opid[e]
        linearized &= ~(1 << i)
        unlift(e)
        k = first_new(alts, j + 1, linearized | (1 << i))
        if k >= 0:
            stack.append((e, prev_state, alts, k))
            state = alts[k]
            linearized |= 1 << i
            lift(e)
            entry = nxt[0]
        else:
            if match[e] != -1:
                remaining += 1
            state = prev_state
            entry = nxt[e]
    return PartitionResult(True, tuple(opid[e] for e, _, _, _ in stack), (), len(cache))


# ---------------------------------------------------------------------------------------------
# Revision checks


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the store's log (from a watch from revision 1)."""

    revision: int
    key: bytes
    value: bytes  # b"" for a delete
    is_delete: bool


def check_client_revisions(history: Sequence[Operation]) -> list[str]:
    """Per client, sequential requests never see the header revision go backwards."""
    errors = []
    last: dict[int, tuple[int, Operation]] = {}
    for op in sorted(history, key=lambda o: o.call_ns):
        if op.response is None or op.return_ns is None:
            continue
        prev = last.get(op.client_id)
        if prev is not None and op.response.revision < prev[0]:
            errors.append(
                f"revision went backwards for client {op.client_id}: "
                f"{prev[1].describe()} then {op.describe()}"
            )
        last[op.client_id] = (op.response.revision, op)
    return errors


def check_real_time_revisions(history: Sequence[Operation]) -> list[str]:
    """A request invoked after another returned sees at least its revision (more, if it wrote)."""
    known = [op for op in history if op.response is not None and op.return_ns is not None]
    by_return = sorted(known, key=lambda o: o.return_ns or 0)
    return_times = [o.return_ns or 0 for o in by_return]
    # prefix maximum of revisions in order of return time
    best: list[tuple[int, Operation]] = []
    for op in by_return:
        assert op.response is not None
        if not best or op.response.revision > best[-1][0]:
            best.append((op.response.revision, op))
        else:
            best.append(best[-1])
    errors = []
    for op in known:
        assert op.response is not None
        n = bisect.bisect_left(return_times, op.call_ns)  # returned strictly before the call
        if n == 0:
            continue
        rev, before = best[n - 1]
        rev_now = op.response.revision
        if rev_now < rev or (changed_store(op) and rev_now == rev):
            errors.append(
                f"stale revision {rev_now} after {rev} in real time: "
                f"{before.describe()} returned before {op.describe()}"
            )
    return errors


def check_unique_write_revisions(history: Sequence[Operation]) -> list[str]:
    seen: dict[int, Operation] = {}
    errors = []
    for op in history:
        if changed_store(op):
            assert op.response is not None
            rev = op.response.revision
            if rev in seen:
                errors.append(
                    f"two writes at revision {rev}: {seen[rev].describe()}; {op.describe()}"
                )
            seen[rev] = op
    return errors


def check_against_log(history: Sequence[Operation], log: Sequence[Event]) -> list[str]:
    """Durability, no phantom writes, no revision holes, reads equal the log at their revision."""
    errors: list[str] = []
    by_rev: dict[int, list[Event]] = {}
    for ev in log:
        by_rev.setdefault(ev.revision, []).append(ev)
    revs = sorted(by_rev)
    if revs and revs != list(range(2, revs[-1] + 1)):
        holes = sorted(set(range(2, revs[-1] + 1)) - set(revs))
        errors.append(f"the log has no events at revisions {holes[:10]}")
    if [ev.revision for ev in log] != sorted(ev.revision for ev in log):
        errors.append("the log is not ordered by revision")
    # Every acknowledged write is in the log at its revision.
    for op in history:
        if not changed_store(op):
            continue
        assert op.response is not None
        rev = op.response.revision
        evs = by_rev.get(rev, [])
        r = op.request
        if isinstance(r, Put | Txn):
            want = [(r.key, r.value, False)]
        else:
            assert isinstance(r, Delete)
            want = sorted((kv.key, b"", True) for kv in op.response.kvs) or [(r.key, b"", True)]
        got = sorted((e.key, e.value, e.is_delete) for e in evs)
        if got != want:
            errors.append(f"acknowledged write lost or altered: {op.describe()}; log has {evs}")
    # Every put event was requested by some client (values are unique).
    requested = {
        (op.request.key, op.request.value) for op in history if isinstance(op.request, Put | Txn)
    }
    for ev in log:
        if not ev.is_delete and (ev.key, ev.value) not in requested:
            errors.append(f"phantom write in the log: {ev}")
    # Every successful read equals the log's state of its range at its header revision.
    per_key: dict[bytes, list[tuple[int, Event]]] = {}
    for ev in log:
        per_key.setdefault(ev.key, []).append((ev.revision, ev))
    last_rev = revs[-1] if revs else 1
    for op in history:
        r = op.request
        resp = op.response
        if not isinstance(r, Get) or resp is None:
            continue
        if resp.revision > last_rev:
            errors.append(
                f"read at revision {resp.revision} beyond the log's {last_rev}: {op.describe()}"
            )
            continue
        want_kvs = []
        for key, key_evs in per_key.items():
            if not _in_range(key, r.key, r.range_end):
                continue
            i = bisect.bisect_right(key_evs, resp.revision, key=lambda t: t[0])
            if i and not key_evs[i - 1][1].is_delete:
                ev = key_evs[i - 1][1]
                want_kvs.append((key, ev.value, ev.revision))
        got_kvs = sorted((kv.key, kv.value, kv.mod_revision) for kv in resp.kvs)
        if got_kvs != sorted(want_kvs):
            errors.append(
                f"read differs from the log at revision {resp.revision}: "
                f"{op.describe()}; log says {sorted(want_kvs)}"
            )
    return errors


def patch_unknown_writes(history: Sequence[Operation], log: Sequence[Event]) -> list[Operation]:
    """Settle unknown puts and txns with the store's log (values are unique).

    An unknown put or txn whose value is in the log took effect at that revision: it gets a
    response (still without a return time). One whose value is not in the log never took
    effect and is dropped. Unknown deletes stay unknown. This trusts the log, which
    :func:`check_against_log` cross-checks against every acknowledged write and read; it
    makes the search much cheaper when faults leave many writes unknown.
    """
    written = {(ev.key, ev.value): ev.revision for ev in log if not ev.is_delete}
    out = []
    for op in history:
        r = op.request
        if op.response is None and isinstance(r, Put | Txn):
            rev = written.get((r.key, r.value))
            if rev is None:
                continue
            op = replace(op, response=Response(revision=rev, succeeded=True))
        out.append(op)
    return out


# ---------------------------------------------------------------------------------------------
# Everything together


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    operations: int = 0
    unknown: int = 0
    keys: int = 0
    states_explored: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def describe_failure(
    key: bytes, ops: Sequence[KeyOp], history: Sequence[Operation], result: PartitionResult
) -> str:
    lines = [f"key {key!r}: not linearizable ({len(ops)} operations on it)"]
    tail = result.longest[-8:]
    lines.append(f"  deepest linearization: {len(result.longest)} operations, ending with:")
    lines += [f"    {history[ops[i].source].describe()}" for i in tail]
    lines.append("  none of these could come next:")
    lines += [f"    {history[ops[i].source].describe()}" for i in result.stuck[:12]]
    return "\n".join(lines)


def check_linearizable(history: Sequence[Operation], max_states: int = 5_000_000) -> Report:
    report = Report(
        operations=len(history), unknown=sum(1 for op in history if op.response is None)
    )
    parts = partition(history)
    report.keys = len(parts)
    for key, ops in sorted(parts.items()):
        result = check_ops(ops, max_states=max_states)
        report.states_explored += result.states_explored
        if not result.ok:
            report.errors.append(describe_failure(key, ops, history, result))
    return report


def check_history(
    history: Sequence[Operation], log: Sequence[Event] | None = None, max_states: int = 5_000_000
) -> Report:
    """Every check: linearizability per key, revisions, and (given the log) durability."""
    report = check_linearizable(history, max_states)
    report.errors += check_client_revisions(history)
    report.errors += check_real_time_revisions(history)
    report.errors += check_unique_write_revisions(history)
    if log is not None:
        report.errors += check_against_log(history, log)
    return report
