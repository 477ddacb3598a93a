"""Checks of etcd's watch guarantees against the store's log.

Theory of operation
-------------------
The store's log is every event from revision 1 in revision order (a final watch from
revision 1 taken before any compaction, or the writers' acknowledged revisions when the
workload knows them all). A watcher's history is every response it received, in order,
across reconnects (after a broken stream it re-watches from its last seen revision + 1, so
the logical stream continues). From the two, the guarantees etcd documents for watch:

- ordered: event revisions never decrease, and a revision is never split over two
  responses nor repeated in a later one;
- unique: no event (revision, key) is delivered twice;
- atomic: all events of one revision (within the watched range) come in one response;
- reliable (no gap): the delivered events are exactly the log's events of the watched range
  from the start revision up to the last revision the watcher has seen (its last event or
  progress notification), with the same keys, values and types;
- progress: after a progress notification at revision R, no event at or below R arrives
  (a notification promises that everything up to R was delivered);
- and, given the final revision of the run, that every event of the range up to it arrived
  (the watcher caught up).

Pure functions over recorded data; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tests.robustness.linearizability import Event


@dataclass(frozen=True, slots=True)
class WatchResponseRecord:
    events: tuple[Event, ...]
    header_revision: int
    progress: bool = False  # a progress notification: no events, not created/canceled
    stream: int = 0  # which connection of the watcher delivered it (0, 1, ... after reconnects)


@dataclass(frozen=True, slots=True)
class WatcherHistory:
    name: str
    key: bytes
    range_end: bytes  # b"": one key
    start_revision: int
    responses: tuple[WatchResponseRecord, ...]

    def in_range(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        return self.key <= key < self.range_end


def _ev(e: Event) -> tuple[int, bytes, bytes, bool]:
    return (e.revision, e.key, e.value, e.is_delete)


def last_seen_revision(w: WatcherHistory) -> int:
    """The revision up to which the watcher claims to have everything."""
    seen = w.start_revision - 1
    for resp in w.responses:
        if resp.events:
            seen = max(seen, resp.events[-1].revision)
        elif resp.progress:
            seen = max(seen, resp.header_revision)
    return seen


def check_watcher(
    w: WatcherHistory, log: Sequence[Event], final_revision: int | None = None
) -> list[str]:
    errors: list[str] = []
    name = w.name
    want_by_rev: dict[int, list[tuple[int, bytes, bytes, bool]]] = {}
    for e in log:
        if w.in_range(e.key) and e.revision >= w.start_revision:
            want_by_rev.setdefault(e.revision, []).append(_ev(e))

    delivered: list[tuple[int, bytes, bytes, bool]] = []
    response_of_rev: dict[int, int] = {}
    last_rev = 0
    progress_rev = 0
    for n, resp in enumerate(w.responses):
        if resp.progress:
            if resp.events:
                errors.append(f"{name}: progress notification {n} carries events")
            progress_rev = max(progress_rev, resp.header_revision)
            continue
        for e in resp.events:
            if e.revision < last_rev:
                errors.append(f"{name}: event {e} out of order after revision {last_rev}")
            if e.revision <= progress_rev:
                errors.append(f"{name}: event {e} after a progress notification at {progress_rev}")
            if not w.in_range(e.key):
                errors.append(f"{name}: event {e} outside the watched range")
            if e.revision < w.start_revision:
                errors.append(f"{name}: event {e} before the start revision {w.start_revision}")
            first = response_of_rev.setdefault(e.revision, n)
            if first != n:
                errors.append(
                    f"{name}: revision {e.revision} split over responses {first} and {n} "
                    "(not atomic, or delivered twice)"
                )
            last_rev = max(last_rev, e.revision)
            delivered.append(_ev(e))
        if resp.events and resp.header_revision < resp.events[-1].revision:
            errors.append(
                f"{name}: response {n} header revision {resp.header_revision} below its events"
            )
    if len(set(delivered)) != len(delivered):
        dups = sorted({d for d in delivered if delivered.count(d) > 1})
        errors.append(f"{name}: duplicate events {dups[:5]}")

    seen = last_seen_revision(w)
    upto = seen if final_revision is None else max(seen, final_revision)
    want = sorted(e for rev, evs in want_by_rev.items() if rev <= upto for e in evs)
    got = sorted(set(delivered))
    if got != want:
        missing = sorted(set(want) - set(got))
        late = [m for m in missing if m[0] > seen]
        gap = [m for m in missing if m[0] <= seen]
        extra = sorted(set(got) - set(want))
        if gap:
            errors.append(f"{name}: {len(gap)} events missing (gap), first {gap[:5]}")
        if late:
            errors.append(
                f"{name}: did not catch up: {len(late)} events up to the final revision "
                f"{final_revision} never arrived, first {late[:5]}"
            )
        if extra:
            errors.append(f"{name}: {len(extra)} events not in the log, first {extra[:5]}")
    # Atomicity: each delivered revision came whole in its response.
    for rev, n in response_of_rev.items():
        in_resp = sorted(_ev(e) for e in w.responses[n].events if e.revision == rev)
        if in_resp != sorted(want_by_rev.get(rev, [])):
            errors.append(f"{name}: revision {rev} incomplete in response {n}: {in_resp}")
    return errors


def check_watchers(
    watchers: Sequence[WatcherHistory], log: Sequence[Event], final_revision: int | None = None
) -> list[str]:
    errors = []
    for w in watchers:
        errors += check_watcher(w, log, final_revision)
    return errors
