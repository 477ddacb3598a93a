"""Unit tests of the watch-guarantee checker."""

from __future__ import annotations

from tests.robustness.linearizability import Event
from tests.robustness.watch_check import (
    WatcherHistory,
    WatchResponseRecord,
    check_watcher,
    check_watchers,
    last_seen_revision,
)

LOG = [
    Event(2, b"k/a", b"1", False),
    Event(3, b"k/b", b"2", False),
    Event(4, b"k/a", b"", True),
    Event(4, b"k/b", b"", True),  # one revision, two events (a range delete)
    Event(5, b"x", b"3", False),
    Event(6, b"k/a", b"4", False),
]


def resp(*events: Event, rev: int = 6, progress: bool = False) -> WatchResponseRecord:
    return WatchResponseRecord(tuple(events), rev, progress)


def watcher(*responses: WatchResponseRecord, start: int = 1) -> WatcherHistory:
    return WatcherHistory("w", b"k/", b"k0", start, tuple(responses))


def test_a_faithful_watcher_passes() -> None:
    w = watcher(
        resp(LOG[0]), resp(LOG[1], LOG[2], LOG[3]), resp(rev=5, progress=True), resp(LOG[5])
    )
    assert check_watcher(w, LOG, final_revision=6) == []
    assert check_watchers([w], LOG) == []
    # Starting later: only events from the start revision.
    w2 = watcher(resp(LOG[2], LOG[3]), resp(LOG[5]), start=4)
    assert check_watcher(w2, LOG, final_revision=6) == []
    # One key.
    w3 = WatcherHistory("one", b"x", b"", 1, (resp(LOG[4]),))
    assert check_watcher(w3, LOG, final_revision=5) == []


def test_gap_is_reported() -> None:
    w = watcher(resp(LOG[0]), resp(LOG[2], LOG[3]), resp(LOG[5]))
    errors = check_watcher(w, LOG)
    assert any("missing (gap)" in e for e in errors), errors


def test_duplicate_is_reported() -> None:
    w = watcher(resp(LOG[0]), resp(LOG[0]), resp(LOG[1], LOG[2], LOG[3]), resp(LOG[5]))
    errors = check_watcher(w, LOG)
    assert any("duplicate" in e for e in errors), errors


def test_out_of_order_is_reported() -> None:
    w = watcher(resp(LOG[1]), resp(LOG[0]), resp(LOG[2], LOG[3]), resp(LOG[5]))
    errors = check_watcher(w, LOG)
    assert any("out of order" in e for e in errors), errors


def test_split_revision_is_not_atomic() -> None:
    w = watcher(resp(LOG[0]), resp(LOG[1], LOG[2]), resp(LOG[3]), resp(LOG[5]))
    errors = check_watcher(w, LOG)
    assert any("split over responses" in e for e in errors), errors
    assert any("incomplete" in e for e in errors), errors


def test_event_after_progress_notification_is_reported() -> None:
    w = watcher(
        resp(LOG[0]), resp(rev=4, progress=True), resp(LOG[1], LOG[2], LOG[3]), resp(LOG[5])
    )
    errors = check_watcher(w, LOG)
    assert any("after a progress notification" in e for e in errors), errors


def test_wrong_content_and_foreign_events_are_reported() -> None:
    altered = Event(2, b"k/a", b"other", False)
    w = watcher(resp(altered), resp(LOG[1], LOG[2], LOG[3]), resp(LOG[5]))
    errors = check_watcher(w, LOG)
    assert any("not in the log" in e for e in errors), errors
    w2 = watcher(resp(LOG[0]), resp(LOG[1], LOG[2], LOG[3]), resp(LOG[4]), resp(LOG[5]))
    assert any("outside the watched range" in e for e in check_watcher(w2, LOG))


def test_lagging_watcher_and_last_seen() -> None:
    w = watcher(resp(LOG[0]), resp(LOG[1], LOG[2], LOG[3]))
    assert check_watcher(w, LOG) == []  # everything up to what it saw is there
    assert last_seen_revision(w) == 4
    errors = check_watcher(w, LOG, final_revision=6)
    assert any("did not catch up" in e and "(6, b'k/a', b'4', False)" in e for e in errors)
    assert check_watcher(w, LOG, final_revision=5) == []  # nothing in range at 5
    # A progress notification counts as seen.
    w2 = watcher(resp(LOG[0]), resp(LOG[1], LOG[2], LOG[3]), resp(rev=6, progress=True))
    assert any("missing (gap)" in e for e in check_watcher(w2, LOG, final_revision=6))
