"""The v2 tree: etcd's v2 key-value store as a deterministic state machine.

Theory of operation
-------------------
A tree of nodes under ``/``: a file holds a value, a directory holds children by name. Every
node has the index that created it and the index that last modified it, and may expire at an
absolute time (Unix nanoseconds; 0 = permanent). ``current_index`` is the store's own
modification counter (etcd's v2 "etcd index"): each successful write bumps it by one, and the
directories a write creates implicitly get the write's index too (etcd's ``checkDir``)::

    /                      (dir, permanent; read-only, as /0 and /1)
    ├── 0/                 membership mirror (written by the member, never by a client)
    │   ├── members/<id>/raftAttributes, attributes
    │   └── version
    └── 1/                 the keys of /v2/keys
        ├── foo = "bar"    created 4, modified 4
        └── _hidden/       names starting with "_" are left out of listings

Writes are applied identically on every member: each takes the times it needs from the
request (``expire_ns``, the SYNC's ``cutoff_ns``) and ``now_ns`` only for the ``ttl`` figures
of the events it returns. Nothing here reads a clock or does I/O; durability is the ``Sink``'s
business (the member writes every changed node to a backend bucket in the apply batch).

Watches: the hub keeps the last ``HISTORY_EVENTS`` events and the watchers waiting per path; a
watch from an index in the history is answered from it at once, one older than the history is
``EVENT_INDEX_CLEARED`` (401), a future one waits. A watcher's ``deliver`` callback gets each
event it matches and answers False when it cannot take more (it is then dropped, as etcd drops
a watcher whose channel of 100 is full).
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from petcd.v2store import errors as e
from petcd.v2store.errors import V2Error

HISTORY_EVENTS = 1000
SECOND_NS = 1_000_000_000
# etcd treats an expiration before 2000-01-01T00:00:00Z as "permanent".
MIN_EXPIRE_NS = 946_684_800 * SECOND_NS
READ_ONLY = frozenset(("/", "/0", "/1"))

GET, CREATE, SET, UPDATE, DELETE = "get", "create", "set", "update", "delete"
COMPARE_AND_SWAP, COMPARE_AND_DELETE, EXPIRE = "compareAndSwap", "compareAndDelete", "expire"


def clean(p: str) -> str:
    """Go's ``path.Clean(path.Join("/", p))``."""
    out = posixpath.normpath("/" + p)
    return "/" + out.lstrip("/") if out.startswith("//") else out


def ttl_seconds(expire_ns: int, now_ns: int) -> int:
    """etcd's ttl figure: the seconds left, rounded up (Go's integer division)."""
    left = expire_ns - now_ns
    q = abs(left) // SECOND_NS * (1 if left >= 0 else -1)
    if left - q * SECOND_NS > 0:
        q += 1
    return q


@dataclass(slots=True)
class NodeView:
    """What a client sees of a node (etcd's NodeExtern); zero fields are left out in JSON."""

    key: str
    value: str | None = None
    dir: bool = False
    expire_ns: int = 0
    ttl: int = 0
    nodes: list[NodeView] | None = None
    modified: int = 0
    created: int = 0


@dataclass(slots=True)
class Event:
    action: str
    node: NodeView
    prev_node: NodeView | None = None
    etcd_index: int = 0
    refresh: bool = False

    @property
    def index(self) -> int:
        return self.node.modified


class Node:
    __slots__ = ("children", "created", "expire_ns", "modified", "parent", "path", "value")

    def __init__(
        self,
        path: str,
        created: int,
        parent: Node | None,
        expire_ns: int,
        value: str = "",
        is_dir: bool = False,
    ) -> None:
        self.path = path
        self.created = created
        self.modified = created
        self.parent = parent
        self.expire_ns = expire_ns
        self.value = value
        self.children: dict[str, Node] | None = {} if is_dir else None

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def hidden(self) -> bool:
        return self.name.startswith("_")

    def view(self, recursive: bool, sorted_: bool, now_ns: int) -> NodeView:
        v = NodeView(self.path, modified=self.modified, created=self.created)
        if self.expire_ns:
            v.expire_ns, v.ttl = self.expire_ns, ttl_seconds(self.expire_ns, now_ns)
        if self.children is None:
            v.value = self.value
            return v
        v.dir = True
        if recursive:
            v.nodes = self.child_views(True, sorted_, now_ns)
        return v

    def child_views(self, recursive: bool, sorted_: bool, now_ns: int) -> list[NodeView]:
        assert self.children is not None
        views = [
            c.view(recursive, sorted_, now_ns) for c in self.children.values() if not c.hidden()
        ]
        if sorted_:
            views.sort(key=lambda n: n.key)
        return views


class Sink(Protocol):
    """Where the store's changes go to be durable (the member: the backend's v2 bucket)."""

    def node_written(self, node: Node) -> None: ...

    def node_removed(self, path: str) -> None: ...

    def index_written(self, index: int) -> None: ...


class Watcher:
    """A watch on ``key`` (and, when ``recursive``, below it) from ``since_index``."""

    __slots__ = (
        "deliver",
        "hub",
        "key",
        "on_close",
        "recursive",
        "removed",
        "since_index",
        "start_index",
        "stream",
    )

    def __init__(
        self,
        key: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        start_index: int,
        deliver: Callable[[Event], bool],
    ) -> None:
        self.key = key
        self.recursive = recursive
        self.stream = stream
        self.since_index = since_index
        self.start_index = start_index  # the store index when the watch began (X-Etcd-Index)
        self.deliver = deliver
        self.removed = False
        self.hub: WatcherHub | None = None
        self.on_close: Callable[[], None] | None = None  # told when the store drops it

    def close(self) -> None:
        """Drop the watcher without an event (etcd closes its channel: the tree was
        replaced by a snapshot's)."""
        self.remove()
        if self.on_close is not None:
            self.on_close()

    def _notify(self, ev: Event, original: bool, deleted: bool) -> bool:
        if (self.recursive or original or deleted) and ev.index >= self.since_index:
            if not self.deliver(ev):
                self.remove()
            return True
        return False

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        if self.hub is not None:
            self.hub.forget(self)


class History:
    """The last ``capacity`` events; ``start_index`` is the oldest one's index (or the floor
    set when the history had to be dropped: after a restart or a snapshot)."""

    def __init__(self, capacity: int = HISTORY_EVENTS, floor: int = 0) -> None:
        self.events: deque[Event] = deque(maxlen=capacity)
        self.start_index = floor
        self.last_index = 0

    def add(self, ev: Event) -> None:
        self.events.append(ev)
        self.last_index = ev.index
        self.start_index = self.events[0].index

    def scan(self, key: str, recursive: bool, index: int) -> Event | None:
        if index < self.start_index:
            raise V2Error(
                e.EVENT_INDEX_CLEARED,
                f"the requested history has been cleared [{self.start_index}/{index}]",
            )
        if index > self.last_index or not self.events:
            return None
        prefix = clean(key)
        if not prefix.endswith("/"):
            prefix += "/"
        for ev in self.events:
            if ev.index < index or ev.refresh:
                continue
            ok = ev.node.key == key or (recursive and ev.node.key.startswith(prefix))
            if (
                not ok
                and ev.action in (DELETE, EXPIRE)
                and ev.prev_node is not None
                and ev.prev_node.dir
            ):
                ok = key.startswith(ev.prev_node.key)
            if ok:
                return ev
        return None


def _hidden_below(watch_path: str, key_path: str) -> bool:
    if len(watch_path) > len(key_path):
        return False
    return "/_" in clean("/" + key_path[len(watch_path) :])


class WatcherHub:
    def __init__(self, floor: int = 0) -> None:
        self.history = History(floor=floor)
        self.watchers: dict[str, list[Watcher]] = {}
        self.count = 0

    def forget(self, w: Watcher) -> None:
        ws = self.watchers.get(w.key)
        if ws is not None and w in ws:
            ws.remove(w)
            self.count -= 1
            if not ws:
                del self.watchers[w.key]

    def add(self, ev: Event) -> None:
        self.history.add(ev)

    def notify(self, ev: Event) -> None:
        self.history.add(ev)
        path = "/"
        for segment in ev.node.key.split("/"):
            path = posixpath.join(path, segment) if segment else path
            self.notify_watchers(ev, clean(path), False)

    def notify_watchers(self, ev: Event, node_path: str, deleted: bool) -> None:
        ws = self.watchers.get(node_path)
        if not ws:
            return
        for w in list(ws):
            original = ev.node.key == node_path
            notified = (original or not _hidden_below(node_path, ev.node.key)) and w._notify(
                ev, original, deleted
            )
            if notified and not w.stream:
                w.remove()


def _compare_cause(n: Node, prev_value: str, prev_index: int) -> str | None:
    index_ok = prev_index == 0 or n.modified == prev_index
    value_ok = prev_value == "" or n.value == prev_value
    if index_ok and value_ok:
        return None
    if index_ok:
        return f"[{prev_value} != {n.value}]"
    if value_ok:
        return f"[{prev_index} != {n.modified}]"
    return f"[{prev_value} != {n.value}] [{prev_index} != {n.modified}]"


class V2Store:
    """etcd's v2 store (``Get``, ``Set``, ``Create``, ``Update``, ``CompareAndSwap``,
    ``Delete``, ``CompareAndDelete``, ``Watch``, ``DeleteExpiredKeys``)."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.root = Node("/", 0, None, 0, is_dir=True)
        self.current_index = 0
        self._sink = sink
        self._ttl: dict[int, Node] = {}  # id(node) -> node, the nodes with an expiration
        self.hub = WatcherHub()
        for ns in ("/0", "/1"):
            self._add(self.root, Node(ns, 0, self.root, 0, is_dir=True))
        # etcd's store stats (/v2/stats/store), in its field order.
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    # -- durability --------------------------------------------------------------------------

    def _written(self, n: Node) -> None:
        if self._sink is not None:
            self._sink.node_written(n)

    def _index(self, index: int) -> None:
        self.current_index = index
        if self._sink is not None:
            self._sink.index_written(index)

    def load(self, index: int, nodes: Iterable[tuple[str, bool, int, int, int, str]]) -> None:
        """Rebuild from durable records ``(path, dir, created, modified, expire_ns, value)``;
        the event history restarts empty after ``index``."""
        sink, self._sink = self._sink, None
        try:
            for path, is_dir, created, modified, expire_ns, value in sorted(
                nodes, key=lambda r: r[0].count("/")
            ):
                parent_path, name = path.rsplit("/", 1)
                parent = self._get(parent_path or "/")
                assert parent.children is not None, path
                old = parent.children.get(name)
                if old is not None and old.is_dir and is_dir:
                    n = old  # a namespace
                    n.created, n.expire_ns = created, expire_ns
                else:
                    n = Node(path, created, parent, expire_ns, value, is_dir)
                    parent.children[name] = n
                n.modified = modified
                if expire_ns:
                    self._ttl[id(n)] = n
            self.current_index = index
            self.hub = WatcherHub(floor=index + 1)
        finally:
            self._sink = sink

    @staticmethod
    def encode_node(n: Node) -> bytes:
        """A node's durable record: flags (bit 0 dir), created, modified, expire_ns, value."""
        return _RECORD.pack(1 if n.is_dir else 0, n.created, n.modified, n.expire_ns) + (
            n.value.encode("utf-8", "surrogateescape")
        )

    @staticmethod
    def decode_node(path: bytes, raw: bytes) -> tuple[str, bool, int, int, int, str]:
        flags, created, modified, expire_ns = _RECORD.unpack_from(raw)
        value = raw[_RECORD.size :].decode("utf-8", "surrogateescape")
        return (
            path.decode("utf-8", "surrogateescape"),
            bool(flags & 1),
            created,
            modified,
            expire_ns,
            value,
        )

    def nodes(self) -> Iterable[Node]:
        """Every node but the root, parents before children."""
        stack = [self.root]
        while stack:
            n = stack.pop()
            if n is not self.root:
                yield n
            if n.children:
                stack.extend(n.children.values())

    # -- tree helpers ------------------------------------------------------------------------

    def _add(self, parent: Node, child: Node) -> None:
        assert parent.children is not None
        parent.children[child.name] = child
        self._written(child)

    def _get(self, node_path: str) -> Node:
        """The node at ``node_path`` (cleaned), or KEY_NOT_FOUND / NOT_DIR."""
        cur = self.root
        for part in clean(node_path).split("/")[1:]:
            if not part:
                break
            if cur.children is None:
                raise V2Error(e.NOT_DIR, cur.path, self.current_index)
            child = cur.children.get(part)
            if child is None:
                raise V2Error(e.KEY_NOT_FOUND, posixpath.join(cur.path, part), self.current_index)
            cur = child
        return cur

    def _dir_for(self, dir_path: str) -> Node:
        """The directory ``dir_path``, created (with the next index) where missing."""
        cur = self.root
        for part in dir_path.split("/")[1:]:
            if not part:
                break
            assert cur.children is not None
            child = cur.children.get(part)
            if child is None:
                child = Node(
                    posixpath.join(cur.path, part), self.current_index + 1, cur, 0, is_dir=True
                )
                self._add(cur, child)
            elif not child.is_dir:
                raise V2Error(e.NOT_DIR, child.path, self.current_index)
            cur = child
        return cur

    def _remove(
        self, n: Node, dir_: bool, recursive: bool, on_removed: Callable[[str], None] | None
    ) -> None:
        if n.children is not None:
            if not dir_:
                raise V2Error(e.NOT_FILE, n.path, self.current_index)
            if n.children and not recursive:
                raise V2Error(e.DIR_NOT_EMPTY, n.path, self.current_index)
            for child in list(n.children.values()):
                self._remove(child, True, True, on_removed)
        parent = n.parent
        if parent is not None and parent.children is not None and parent.children.get(n.name) is n:
            del parent.children[n.name]
            if on_removed is not None:
                on_removed(n.path)
            if self._sink is not None:
                self._sink.node_removed(n.path)
        self._ttl.pop(id(n), None)

    def _set_ttl(self, n: Node, expire_ns: int) -> None:
        n.expire_ns = expire_ns
        if expire_ns:
            self._ttl[id(n)] = n
        else:
            self._ttl.pop(id(n), None)

    def has_ttl_keys(self) -> bool:
        return bool(self._ttl)

    def _expiration(self, n: Node, v: NodeView, now_ns: int) -> None:
        if n.expire_ns:
            v.expire_ns, v.ttl = n.expire_ns, ttl_seconds(n.expire_ns, now_ns)

    def _read_only(self, node_path: str, index: int) -> None:
        if node_path in READ_ONLY:
            raise V2Error(e.ROOT_READ_ONLY, "/", index)

    # -- operations --------------------------------------------------------------------------

    def _shown(
        self, node_path: str, n: Node, recursive: bool, sorted_: bool, now_ns: int
    ) -> NodeView:
        """``n`` as a GET of ``node_path`` shows it: its value, or its children (their own
        children too with ``recursive``)."""
        view = NodeView(node_path, modified=n.modified, created=n.created)
        if n.children is not None:
            view.dir = True
            view.nodes = n.child_views(recursive, sorted_, now_ns)
        else:
            view.value = n.value
        self._expiration(n, view, now_ns)
        return view

    def get(self, node_path: str, recursive: bool, sorted_: bool, now_ns: int) -> Event:
        n = self._get(node_path)
        view = self._shown(node_path, n, recursive, sorted_, now_ns)
        return Event(GET, view, etcd_index=self.current_index)

    def _create(
        self,
        node_path: str,
        dir_: bool,
        value: str,
        unique: bool,
        replace: bool,
        expire_ns: int,
        action: str,
        now_ns: int,
    ) -> Event:
        cur, nxt = self.current_index, self.current_index + 1
        if unique:
            node_path += f"/{nxt:020d}"
        node_path = clean(node_path)
        self._read_only(node_path, cur)
        if expire_ns < MIN_EXPIRE_NS:
            expire_ns = 0
        dir_path, name = node_path.rsplit("/", 1)
        try:
            d = self._dir_for(dir_path)
        except V2Error as err:
            err.index = cur
            raise
        view = NodeView(node_path, modified=nxt, created=nxt)
        ev = Event(action, view)
        assert d.children is not None
        old = d.children.get(name)
        if old is not None:
            if not replace:
                raise V2Error(e.NODE_EXIST, node_path, cur)
            if old.is_dir:
                raise V2Error(e.NOT_FILE, node_path, cur)
            ev.prev_node = old.view(False, False, now_ns)
            self._remove(old, False, False, None)
        if dir_:
            view.dir = True
            n = Node(node_path, nxt, d, expire_ns, is_dir=True)
        else:
            view.value = value
            n = Node(node_path, nxt, d, expire_ns, value)
        self._add(d, n)
        if expire_ns:
            self._ttl[id(n)] = n
            self._expiration(n, view, now_ns)
        self._index(nxt)
        return ev

    def create(
        self, node_path: str, dir_: bool, value: str, unique: bool, expire_ns: int, now_ns: int
    ) -> Event:
        ev = self._create(node_path, dir_, value, unique, False, expire_ns, CREATE, now_ns)
        ev.etcd_index = self.current_index
        self.hub.notify(ev)
        return ev

    def set(
        self, node_path: str, dir_: bool, value: str, expire_ns: int, refresh: bool, now_ns: int
    ) -> Event:
        try:
            n: Node | None = self._get(node_path)
        except V2Error as err:
            if err.code != e.KEY_NOT_FOUND or refresh:
                raise
            n = None
        if refresh:
            assert n is not None
            value = n.value
        prev = None if n is None else self._shown(node_path, n, False, False, now_ns)
        ev = self._create(node_path, dir_, value, False, True, expire_ns, SET, now_ns)
        ev.etcd_index = self.current_index
        if prev is not None:
            ev.prev_node = prev
        self._announce(ev, refresh)
        return ev

    def _announce(self, ev: Event, refresh: bool) -> None:
        if refresh:
            ev.refresh = True
            self.hub.add(ev)
        else:
            self.hub.notify(ev)

    def compare_and_swap(
        self,
        node_path: str,
        prev_value: str,
        prev_index: int,
        value: str,
        expire_ns: int,
        refresh: bool,
        now_ns: int,
    ) -> Event:
        node_path = clean(node_path)
        self._read_only(node_path, self.current_index)
        n = self._get(node_path)
        if n.is_dir:
            raise V2Error(e.NOT_FILE, node_path, self.current_index)
        cause = _compare_cause(n, prev_value, prev_index)
        if cause is not None:
            raise V2Error(e.TEST_FAILED, cause, self.current_index)
        if refresh:
            value = n.value
        index = self.current_index + 1
        ev = Event(COMPARE_AND_SWAP, NodeView(node_path, modified=index, created=n.created))
        ev.etcd_index = index
        ev.prev_node = n.view(False, False, now_ns)
        n.value, n.modified = value, index
        self._set_ttl(n, expire_ns if expire_ns >= MIN_EXPIRE_NS else 0)
        self._written(n)
        self._index(index)
        ev.node.value = value
        self._expiration(n, ev.node, now_ns)
        self._announce(ev, refresh)
        return ev

    def update(
        self, node_path: str, value: str, expire_ns: int, refresh: bool, now_ns: int
    ) -> Event:
        node_path = clean(node_path)
        cur = self.current_index
        self._read_only(node_path, cur)
        n = self._get(node_path)
        if n.is_dir and value:
            raise V2Error(e.NOT_FILE, node_path, cur)
        if refresh:
            value = n.value
        if n.is_dir:  # etcd's node.Write refuses a directory: an internal error
            raise V2Error(e.RAFT_INTERNAL, f"nodePath {node_path} : Not a file ()", 0)
        index = cur + 1
        ev = Event(UPDATE, NodeView(node_path, modified=index, created=n.created))
        ev.etcd_index = index
        ev.prev_node = n.view(False, False, now_ns)
        n.value, n.modified = value, index
        ev.node.value = value
        self._set_ttl(n, expire_ns if expire_ns >= MIN_EXPIRE_NS else 0)
        self._written(n)
        self._expiration(n, ev.node, now_ns)
        self._announce(ev, refresh)
        self._index(index)
        return ev

    def delete(self, node_path: str, dir_: bool, recursive: bool, now_ns: int) -> Event:
        node_path = clean(node_path)
        self._read_only(node_path, self.current_index)
        if recursive:
            dir_ = True
        n = self._get(node_path)
        index = self.current_index + 1
        ev = Event(DELETE, NodeView(node_path, modified=index, created=n.created))
        ev.etcd_index = index
        ev.prev_node = n.view(False, False, now_ns)
        if n.is_dir:
            ev.node.dir = True
        self._remove(n, dir_, recursive, lambda p: self.hub.notify_watchers(ev, p, True))
        self._index(index)
        self.hub.notify(ev)
        return ev

    def compare_and_delete(
        self, node_path: str, prev_value: str, prev_index: int, now_ns: int
    ) -> Event:
        node_path = clean(node_path)
        n = self._get(node_path)
        if n.is_dir:
            raise V2Error(e.NOT_FILE, node_path, self.current_index)
        cause = _compare_cause(n, prev_value, prev_index)
        if cause is not None:
            raise V2Error(e.TEST_FAILED, cause, self.current_index)
        index = self.current_index + 1
        ev = Event(COMPARE_AND_DELETE, NodeView(node_path, modified=index, created=n.created))
        ev.etcd_index = index
        ev.prev_node = n.view(False, False, now_ns)
        self._index(index)
        self._remove(n, False, False, lambda p: self.hub.notify_watchers(ev, p, True))
        self.hub.notify(ev)
        return ev

    def delete_expired(self, cutoff_ns: int, now_ns: int) -> list[Event]:
        """Remove every node that expires at or before ``cutoff_ns`` (a SYNC's time), the
        earliest first (ties by path, so that every member numbers them alike)."""
        events = []
        while self._ttl:
            n = min(self._ttl.values(), key=lambda x: (x.expire_ns, x.path))
            if n.expire_ns > cutoff_ns:
                break
            index = self.current_index + 1
            ev = Event(EXPIRE, NodeView(n.path, modified=index, created=n.created))
            ev.etcd_index = index
            ev.prev_node = n.view(False, False, now_ns)
            if n.is_dir:
                ev.node.dir = True
            self._ttl.pop(id(n), None)
            self._index(index)
            self._remove(n, True, True, functools.partial(self._notify_removed, ev))
            self.hub.notify(ev)
            self.stats["expireCount"] += 1
            events.append(ev)
        return events

    def _notify_removed(self, ev: Event, path: str) -> None:
        self.hub.notify_watchers(ev, path, True)

    def watch(
        self,
        key: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        deliver: Callable[[Event], bool],
    ) -> Watcher:
        """A watcher; if the history has a matching event it is delivered at once and the
        watcher is not registered (a one-shot watch is then done)."""
        key = clean(key)
        if since_index == 0:
            since_index = self.current_index + 1
        try:
            found = self.hub.history.scan(key, recursive, since_index)
        except V2Error as err:
            err.index = self.current_index
            raise
        w = Watcher(key, recursive, stream, since_index, self.current_index, deliver)
        if found is not None:
            w.removed = True
            deliver(dataclasses.replace(found, etcd_index=self.current_index))
            return w
        w.hub = self.hub
        self.hub.watchers.setdefault(key, []).append(w)
        self.hub.count += 1
        return w


_RECORD = struct.Struct(">BQQq")

STAT_NAMES = (
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
    "expireCount",
)
_COUNTED = {
    "get": "gets",
    "set": "sets",
    "delete": "delete",
    "update": "update",
    "create": "create",
    "compare_and_swap": "compareAndSwap",
    "compare_and_delete": "compareAndDelete",
}


def _counting(method: Callable[..., Event], prefix: str) -> Callable[..., Event]:
    @functools.wraps(method)
    def counted(self: V2Store, *args: object) -> Event:
        try:
            ev = method(self, *args)
        except V2Error:
            self.stats[prefix + "Fail"] += 1
            raise
        self.stats[prefix + "Success"] += 1
        return ev

    return counted


for _name, _prefix in _COUNTED.items():
    setattr(V2Store, _name, _counting(getattr(V2Store, _name), _prefix))
