"""The watchable store: KVStore plus watchers fed from every applied write and from history.

Theory of operation
-------------------
This is etcd's ``watchableStore``. A ``Watcher`` watches one key or a key range from a start
revision and delivers ``WatchResponse`` values to a ``WatchSink`` that the caller provides.
``sink.send(response)`` must not block: it returns False when the sink's bounded buffer is
full (like a non-blocking send on a buffered Go channel). The server adapts a sink to its
gRPC stream; no asyncio here.

Every watcher is in exactly one group::

    synced    up to date; fed directly by each write txn (all events of one txn in ONE
              response, with that txn's revision). The "plain" watchers of one key (no
              prev_kv, no filters) that share a sink form a ``_SinkGroup``: a write to the key
              hands each group one shared events tuple (``send_fanout``: a gRPC stream then
              encodes it once), and the group, not each watcher, records the next revision.
              A write touches groups, not watchers; only a watcher that leaves its group
              (cancelled, a victim, a reload) is handled on its own
    unsynced  behind (start revision <= current, or just recovered); caught up from the
              backend's history by sync(), in bounded batches, then moved to synced
    victim    a send failed (slow consumer); holds the responses not yet accepted; sync()
              retries them and then moves the watcher to unsynced (or synced)

``sync()`` is what etcd runs every 100 ms in two goroutines (syncWatchersLoop and
syncVictimsLoop); here the server calls it from its loop (for example every 100 ms, and
soon after a watch is created with an old start revision). A watcher whose next revision
(``min_rev``) was compacted away is sent one response with ``compact_revision`` set and is
removed (cancelled), as etcd does.

Invariants
----------
- A watcher never receives an event twice nor skips one: ``min_rev`` is the next revision it
  needs; every send that is accepted advances it past the revisions the send covered.
- Events of one revision are never split across responses.
"""

from __future__ import annotations

import collections
import enum
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from petcd.backend import KEY, Backend
from petcd.mvcc.kvstore import (
    _HDR_SIZE,
    _REVKEY,
    MAX_TXN_OPS_DEFAULT,
    KVStore,
    LeaseHook,
    _interval,
    decode_kv,
)
from petcd.mvcc.requests import Event, EventType, KeyValue, WatchFilterType, WatchResponse


class WatchSink(Protocol):
    def send(self, response: WatchResponse) -> bool:
        """Accept a response without blocking; False if the buffer is full."""
        ...


class FanoutSink(WatchSink, Protocol):
    """A sink that also takes one delivery for several of its watchers at once.

    The watchable store uses ``send_fanout`` (when the sink has it) for the watchers of one key
    that ask for neither prev_kv nor filters: they all get the same events at one revision, so
    the sink can encode the response once and differ only in ``watch_id``.
    """

    def send_fanout(
        self, watchers: Sequence[Watcher], events: tuple[Event, ...], revision: int
    ) -> int:
        """Accept ``WatchResponse(w.watch_id, events, revision)`` for ``watchers`` in order,
        without blocking, as many as fit: return how many were accepted (a prefix).

        ``watchers`` is the same object for every write as long as the group does not change
        (a sink may cache what it derives from it, by identity); it is never modified."""
        ...


class QueueSink:
    """A bounded FIFO sink (etcd's watch channel, 128 responses deep by default)."""

    def __init__(self, capacity: int = 128) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self._items: collections.deque[WatchResponse] = collections.deque()

    def send(self, response: WatchResponse) -> bool:
        if len(self._items) >= self.capacity:
            return False
        self._items.append(response)
        return True

    def send_fanout(
        self, watchers: Sequence[Watcher], events: tuple[Event, ...], revision: int
    ) -> int:
        n = max(0, min(len(watchers), self.capacity - len(self._items)))
        for w in watchers[:n]:
            self._items.append(WatchResponse(w.watch_id, events, revision))
        return n

    def __len__(self) -> int:
        return len(self._items)

    def get(self) -> WatchResponse:
        return self._items.popleft()

    def drain(self) -> list[WatchResponse]:
        out = list(self._items)
        self._items.clear()
        return out


class WatcherState(enum.Enum):
    SYNCED = "synced"
    UNSYNCED = "unsynced"
    VICTIM = "victim"
    CANCELLED = "cancelled"


@dataclass(eq=False, slots=True)
class Watcher:
    """A registered watch. Identity matters (eq=False); fields other than state are fixed."""

    watch_id: int
    key: bytes
    range_end: bytes
    sink: WatchSink
    prev_kv: bool
    filters: frozenset[int]
    _rev: int  # the next revision it needs (min_rev) while it is in no group
    state: WatcherState = WatcherState.UNSYNCED
    pending: list[WatchResponse] = field(default_factory=list)
    _start: bytes = b""
    _end: bytes | None = None
    _single: bool = True
    _plain: bool = True  # neither prev_kv nor filters: gets exactly the events of its key
    _group: _SinkGroup | None = None  # synced, plain, single key: its group keeps min_rev

    @property
    def min_rev(self) -> int:
        """The next revision the watcher needs."""
        g = self._group
        return self._rev if g is None else g.min_rev

    @min_rev.setter
    def min_rev(self, rev: int) -> None:
        assert self._group is None, "a grouped watcher's revision is its group's"
        self._rev = rev

    def matches(self, key: bytes) -> bool:
        if self._single:
            return key == self._start
        return key >= self._start and (self._end is None or key < self._end)

    def wants(self, ev: Event) -> bool:
        if ev.type == EventType.PUT:
            return WatchFilterType.NOPUT not in self.filters
        return WatchFilterType.NODELETE not in self.filters


class _SinkGroup:
    """The synced plain watchers of one key that share one sink, in the order they joined.

    Every write to the key reaches all of them at once, so they need the same next revision:
    ``min_rev`` is kept here, not per watcher. ``watchers()`` is one tuple, rebuilt only when
    the membership changes, so a sink sees the same object write after write.
    """

    __slots__ = ("_tuple", "members", "min_rev", "sink")

    def __init__(self, sink: WatchSink, min_rev: int) -> None:
        self.sink = sink
        self.min_rev = min_rev
        self.members: dict[Watcher, None] = {}
        self._tuple: tuple[Watcher, ...] | None = None

    def watchers(self) -> tuple[Watcher, ...]:
        t = self._tuple
        if t is None:
            t = self._tuple = tuple(self.members)
        return t

    def add(self, w: Watcher) -> None:
        assert w._group is None
        # No event of the key lies between the group's next revision and the newcomer's (the
        # group sees every write to the key), so the later of the two serves both.
        self.min_rev = max(self.min_rev, w._rev)
        self.members[w] = None
        self._tuple = None
        w._group = self

    def remove(self, w: Watcher) -> None:
        assert w._group is self
        w._rev = self.min_rev
        w._group = None
        del self.members[w]
        self._tuple = None


class _KeyWatchers:
    """The synced watchers of one key: plain ones in groups by sink, the rest on their own
    (prev_kv or filters, or a start revision still in the future)."""

    __slots__ = ("groups", "others")

    def __init__(self) -> None:
        self.groups: dict[WatchSink, _SinkGroup] = {}
        self.others: set[Watcher] = set()

    def join(self, w: Watcher) -> None:
        g = self.groups.get(w.sink)
        if g is None:
            g = self.groups[w.sink] = _SinkGroup(w.sink, w._rev)
        g.add(w)

    def __len__(self) -> int:
        return sum(len(g.members) for g in self.groups.values()) + len(self.others)


class WatchableStore(KVStore):
    """KVStore with watchers (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        *,
        lessor: LeaseHook | None = None,
        max_txn_ops: int = MAX_TXN_OPS_DEFAULT,
        catch_up_records_max: int = 10000,
        watchers_per_sync_max: int = 512,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._watch_ids = itertools.count(1)
        self._synced_keys: dict[bytes, _KeyWatchers] = {}
        self._synced_ranges: set[Watcher] = set()
        self._unsynced: dict[Watcher, None] = {}
        self._victims: dict[Watcher, None] = {}
        self._catch_up_records_max = catch_up_records_max
        self._watchers_per_sync_max = watchers_per_sync_max
        super().__init__(backend, lessor=lessor, max_txn_ops=max_txn_ops, clock=clock)

    # -- registration --------------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        start_rev: int = 0,
        *,
        sink: WatchSink,
        prev_kv: bool = False,
        filters: Iterable[int] = (),
        watch_id: int | None = None,
    ) -> Watcher:
        """Watch ``key`` (or ``[key, range_end)``, etcd conventions) from ``start_rev``.

        ``start_rev == 0``: from the next write. A start revision <= current makes the
        watcher unsynced: call ``sync()`` to deliver the history.
        """
        start, end, single = _interval(key, range_end)
        current = self.current_revision
        w = Watcher(
            watch_id=next(self._watch_ids) if watch_id is None else watch_id,
            key=key,
            range_end=range_end,
            sink=sink,
            prev_kv=prev_kv,
            filters=frozenset(int(f) for f in filters),
            _rev=start_rev,
            _start=start,
            _end=end,
            _single=single,
        )
        w._plain = not w.prev_kv and not w.filters
        if start_rev == 0 or start_rev > current:
            w.min_rev = max(current + 1, start_rev)
            self._add_synced(w)
        else:
            w.state = WatcherState.UNSYNCED
            self._unsynced[w] = None
        return w

    def cancel(self, watcher: Watcher) -> bool:
        """Remove a watcher; False if it was not registered (already cancelled)."""
        state = watcher.state
        if state == WatcherState.SYNCED:
            self._remove_synced(watcher)
        elif state == WatcherState.UNSYNCED:
            del self._unsynced[watcher]
        elif state == WatcherState.VICTIM:
            del self._victims[watcher]
        else:
            return False
        watcher.state = WatcherState.CANCELLED
        watcher.pending.clear()
        return True

    def _add_synced(self, w: Watcher) -> None:
        w.state = WatcherState.SYNCED
        if w._single:
            kw = self._synced_keys.get(w._start)
            if kw is None:
                kw = self._synced_keys[w._start] = _KeyWatchers()
            if w._plain and w._rev <= self.current_revision + 1:
                kw.join(w)
            else:
                kw.others.add(w)
        else:
            self._synced_ranges.add(w)

    def _remove_synced(self, w: Watcher) -> None:
        if w._single:
            kw = self._synced_keys[w._start]
            g = w._group
            if g is not None:
                g.remove(w)
                if not g.members:
                    del kw.groups[g.sink]
            else:
                kw.others.discard(w)
            if not kw.groups and not kw.others:
                del self._synced_keys[w._start]
        else:
            self._synced_ranges.discard(w)

    def watcher_counts(self) -> tuple[int, int, int]:
        """(synced, unsynced, victims), for metrics and tests."""
        synced = sum(len(kw) for kw in self._synced_keys.values()) + len(self._synced_ranges)
        return synced, len(self._unsynced), len(self._victims)

    @property
    def has_pending_sync(self) -> bool:
        """True if sync() has work (unsynced watchers or victims)."""
        return bool(self._unsynced or self._victims)

    # -- live notification ---------------------------------------------------------------

    def _prev_kv(self, key: bytes, before_main: int) -> KeyValue | None:
        at = before_main - 1
        if at < self.compact_revision or at <= 0:
            return None
        rev = self._index.get(key, at)
        return self._load(rev) if rev is not None else None

    def _notify(self, revision: int, changes: list[KeyValue]) -> None:
        keys = self._synced_keys
        ranges = self._synced_ranges
        if not keys and not ranges:
            return
        # The events of each key, in order. A plain single-key watcher gets exactly the events
        # of its key: one tuple shared by all of them, handed to each sink once for all of its
        # watchers (send_fanout). Range watchers and those with prev_kv or filters get their
        # own response, as before.
        events = [
            Event(EventType.PUT if kv.create_revision else EventType.DELETE, kv) for kv in changes
        ]
        per_key: dict[bytes, list[Event]] = {}
        for ev in events:
            got = per_key.get(ev.kv.key)
            if got is None:
                per_key[ev.kv.key] = [ev]
            else:
                got.append(ev)
        own: dict[Watcher, list[Event]] = {}
        prevs: dict[int, Event] = {}  # id(event) -> the event with its prev_kv
        after = revision + 1
        for key, evs in per_key.items():
            kw = keys.get(key)
            if kw is None:
                continue
            if kw.others:
                ready: list[Watcher] | None = None
                for w in kw.others:
                    if revision < w._rev:
                        continue
                    if w._plain:  # its start revision has come: it joins its sink's group
                        if ready is None:
                            ready = [w]
                        else:
                            ready.append(w)
                    else:
                        own[w] = self._own_events(w, evs, revision, prevs)
                if ready is not None:
                    for w in ready:
                        kw.others.discard(w)
                        kw.join(w)
            if not kw.groups:
                continue
            shared = tuple(evs)
            for g in list(kw.groups.values()):  # a victim may leave (and end) its group
                ws = g.watchers()
                g.min_rev = after
                sink = g.sink
                send_fanout = getattr(sink, "send_fanout", None)
                if send_fanout is None:
                    for w in ws:
                        resp = WatchResponse(w.watch_id, shared, revision)
                        if not sink.send(resp):
                            self._make_victim(w, resp)
                    continue
                accepted: int = send_fanout(ws, shared, revision)
                if accepted < len(ws):
                    for w in ws[accepted:]:
                        self._make_victim(w, WatchResponse(w.watch_id, shared, revision))
        if ranges:
            for w in ranges:
                if revision < w.min_rev:
                    continue
                mine = [ev for ev in events if w.matches(ev.kv.key)]
                if mine:
                    own[w] = self._own_events(w, mine, revision, prevs)
        for w, mine in own.items():
            if mine:
                resp = WatchResponse(w.watch_id, tuple(mine), revision)
                w.min_rev = after
                if not w.sink.send(resp):
                    self._make_victim(w, resp)

    def _own_events(
        self, w: Watcher, evs: list[Event], revision: int, prevs: dict[int, Event]
    ) -> list[Event]:
        """``evs`` as watcher ``w`` sees them: its filters applied, prev_kv attached (the
        events with prev_kv are shared, through ``prevs``, by the watchers that ask for it)."""
        out: list[Event] = []
        for ev in evs:
            if not w.wants(ev):
                continue
            if w.prev_kv:
                with_prev = prevs.get(id(ev))
                if with_prev is None:
                    prev = self._prev_kv(ev.kv.key, revision)
                    with_prev = prevs[id(ev)] = Event(ev.type, ev.kv, prev)
                ev = with_prev
            out.append(ev)
        return out

    def _make_victim(self, w: Watcher, resp: WatchResponse) -> None:
        self._remove_synced(w)
        w.state = WatcherState.VICTIM
        w.pending.append(resp)
        self._victims[w] = None

    # -- catching up ---------------------------------------------------------------------

    def sync(self) -> bool:
        """Retry victims, then catch up a batch of unsynced watchers. True if work remains."""
        self._sync_victims()
        if self._unsynced:
            self._sync_unsynced()
        return self.has_pending_sync

    def _sync_victims(self) -> None:
        for w in list(self._victims):
            while w.pending:
                if not w.sink.send(w.pending[0]):
                    break
                w.pending.pop(0)
            if w.pending:
                continue
            del self._victims[w]
            if w.min_rev <= self.current_revision:
                w.state = WatcherState.UNSYNCED
                self._unsynced[w] = None
            else:
                self._add_synced(w)

    def _sync_unsynced(self) -> None:
        compact = self.compact_revision
        current = self.current_revision
        chosen: list[Watcher] = []
        for w in list(self._unsynced):
            if len(chosen) >= self._watchers_per_sync_max:
                break
            if w.min_rev < compact:
                if w.sink.send(WatchResponse(w.watch_id, (), current, compact)):
                    del self._unsynced[w]
                    w.state = WatcherState.CANCELLED
                continue
            if w.min_rev > current:
                del self._unsynced[w]
                self._add_synced(w)
                continue
            chosen.append(w)
        if not chosen:
            return
        min_rev = min(w.min_rev for w in chosen)
        records, upto = self._history(min_rev, current)
        events: list[tuple[int, Event]] = []
        for k, v in records:
            main = _REVKEY.unpack_from(k)[0]
            if len(k) > 17:
                n = int.from_bytes(v[32:40], "big")
                kv = KeyValue(v[_HDR_SIZE : _HDR_SIZE + n], 0, main, 0, b"", 0)
                events.append((main, Event(EventType.DELETE, kv)))
            else:
                events.append((main, Event(EventType.PUT, decode_kv(v))))
        prevs: dict[tuple[bytes, int], KeyValue | None] = {}
        for w in chosen:
            if w.min_rev > upto:
                continue  # this batch ended before the watcher's next revision
            evs: list[Event] = []
            for main, ev in events:
                if main < w.min_rev or not w.matches(ev.kv.key) or not w.wants(ev):
                    continue
                if w.prev_kv:
                    pk = (ev.kv.key, main)
                    if pk not in prevs:
                        prevs[pk] = self._prev_kv(ev.kv.key, main)
                    ev = Event(ev.type, ev.kv, prevs[pk])
                evs.append(ev)
            w.min_rev = upto + 1
            if evs:
                resp = WatchResponse(w.watch_id, tuple(evs), upto)
                if not w.sink.send(resp):
                    del self._unsynced[w]
                    w.state = WatcherState.VICTIM
                    w.pending.append(resp)
                    self._victims[w] = None
                    continue
            if upto >= current:
                del self._unsynced[w]
                self._add_synced(w)

    def _history(self, min_rev: int, current: int) -> tuple[list[tuple[bytes, bytes]], int]:
        """Records of revisions ``min_rev..`` (whole revisions only) and the last one covered."""
        backend = self._backend
        start = _REVKEY.pack(min_rev, b"_", 0)
        end = _REVKEY.pack(current + 1, b"_", 0)
        limit = self._catch_up_records_max
        records = backend.range(KEY, start, end, limit=limit)
        if len(records) < limit:
            return records, current
        last_main: int = _REVKEY.unpack_from(records[-1][0])[0]
        first_main: int = _REVKEY.unpack_from(records[0][0])[0]
        if first_main == last_main:
            # One revision larger than the batch: deliver it whole.
            whole = backend.range(KEY, start, _REVKEY.pack(last_main + 1, b"_", 0))
            return whole, last_main
        cut = _REVKEY.pack(last_main, b"_", 0)
        return [r for r in records if r[0] < cut], last_main - 1

    def _restore(self) -> None:
        super()._restore()
        # After a reload every synced watcher must re-check against the new history.
        if getattr(self, "_synced_keys", None) is None:
            return
        for kw in list(self._synced_keys.values()):
            ws = [w for g in kw.groups.values() for w in g.members]
            for w in [*ws, *kw.others]:
                self._remove_synced(w)
                w.state = WatcherState.UNSYNCED
                self._unsynced[w] = None
        for w in list(self._synced_ranges):
            self._remove_synced(w)
            w.state = WatcherState.UNSYNCED
            self._unsynced[w] = None


__all__ = ["FanoutSink", "QueueSink", "WatchSink", "WatchableStore", "Watcher", "WatcherState"]
