"""The v2 tree as a state machine: etcd's operations, errors, indexes, TTLs and watches
(no clock: every time is passed in), and the V2 entry body's codec."""

from __future__ import annotations

import pytest

from petcd.server import entry
from petcd.v2store import Event, Method, V2Error, V2FormatError, V2Request, V2Store, apply
from petcd.v2store import errors as codes
from petcd.v2store.store import MIN_EXPIRE_NS, SECOND_NS, ttl_seconds

NOW = MIN_EXPIRE_NS + 1000 * SECOND_NS


def test_set_get_and_the_index() -> None:
    s = V2Store()
    ev = s.set("/1/a/b", False, "v", 0, False, NOW)
    assert (ev.action, ev.node.modified, ev.node.created, s.current_index) == ("set", 1, 1, 1)
    # the implicit directory got the write's index
    assert s.get("/1/a", False, False, NOW).node.created == 1
    ev = s.set("/1/a/b", False, "w", 0, False, NOW)
    assert ev.prev_node is not None and ev.prev_node.value == "v"
    assert s.get("/1/a/b", False, False, NOW).node.value == "w"
    with pytest.raises(V2Error) as err:
        s.get("/1/a/b/c", False, False, NOW)
    assert (err.value.code, err.value.cause, err.value.index) == (codes.NOT_DIR, "/1/a/b", 2)
    with pytest.raises(V2Error) as err:
        s.get("/1/nope", False, False, NOW)
    assert (err.value.code, err.value.status) == (codes.KEY_NOT_FOUND, 404)


def test_create_unique_and_read_only_roots() -> None:
    s = V2Store()
    s.set("/1/x", False, "", 0, False, NOW)
    ev = s.create("/1/q", False, "job", True, 0, NOW)
    assert ev.node.key == "/1/q/00000000000000000002"
    with pytest.raises(V2Error) as err:
        s.create("/1/x", False, "", False, 0, NOW)
    assert (err.value.code, err.value.status) == (codes.NODE_EXIST, 412)
    for path in ("/", "/1", "/0"):
        with pytest.raises(V2Error) as err:
            s.set(path, False, "v", 0, False, NOW)
        assert (err.value.code, err.value.cause) == (codes.ROOT_READ_ONLY, "/")


def test_compare_and_swap_and_delete_causes() -> None:
    s = V2Store()
    s.set("/1/k", False, "a", 0, False, NOW)
    with pytest.raises(V2Error) as err:
        s.compare_and_swap("/1/k", "b", 0, "c", 0, False, NOW)
    assert err.value.cause == "[b != a]"
    with pytest.raises(V2Error) as err:
        s.compare_and_swap("/1/k", "", 7, "c", 0, False, NOW)
    assert err.value.cause == "[7 != 1]"
    with pytest.raises(V2Error) as err:
        s.compare_and_delete("/1/k", "b", 7, NOW)
    assert err.value.cause == "[b != a] [7 != 1]"
    assert s.compare_and_swap("/1/k", "a", 1, "c", 0, False, NOW).node.modified == 2
    assert s.compare_and_delete("/1/k", "c", 0, NOW).action == "compareAndDelete"
    assert s.current_index == 3


def test_delete_directories() -> None:
    s = V2Store()
    s.set("/1/d/x", False, "1", 0, False, NOW)
    with pytest.raises(V2Error) as err:
        s.delete("/1/d", False, False, NOW)
    assert err.value.code == codes.NOT_FILE
    with pytest.raises(V2Error) as err:
        s.delete("/1/d", True, False, NOW)
    assert (err.value.code, err.value.status) == (codes.DIR_NOT_EMPTY, 403)
    ev = s.delete("/1/d", False, True, NOW)
    assert ev.node.dir and ev.node.modified == 2


def test_hidden_nodes_are_not_listed() -> None:
    s = V2Store()
    s.set("/1/d/_h", False, "1", 0, False, NOW)
    s.set("/1/d/v", False, "2", 0, False, NOW)
    nodes = s.get("/1/d", True, True, NOW).node.nodes
    assert [n.key for n in nodes or ()] == ["/1/d/v"]


def test_ttl_figures_and_expiry_by_sync() -> None:
    assert ttl_seconds(NOW + 1, NOW) == 1
    assert ttl_seconds(NOW + SECOND_NS, NOW) == 1
    assert ttl_seconds(NOW + SECOND_NS + 1, NOW) == 2
    assert ttl_seconds(NOW - SECOND_NS // 2, NOW) == 0
    s = V2Store()
    ev = s.set("/1/t", False, "v", NOW + 5 * SECOND_NS, False, NOW)
    assert ev.node.ttl == 5 and s.has_ttl_keys()
    s.set("/1/p", False, "v", 12345, False, NOW)  # before 2000: permanent
    assert s.get("/1/p", False, False, NOW).node.expire_ns == 0
    assert apply(s, V2Request(Method.SYNC, time_ns=NOW + 4 * SECOND_NS), NOW) is None
    assert s.get("/1/t", False, False, NOW).node.value == "v"
    apply(s, V2Request(Method.SYNC, time_ns=NOW + 5 * SECOND_NS), NOW)
    with pytest.raises(V2Error):
        s.get("/1/t", False, False, NOW)
    assert not s.has_ttl_keys() and s.current_index == 3


def test_watch_history_and_live_events() -> None:
    s = V2Store()
    got: list[Event] = []
    s.watch("/1/a", True, False, 0, lambda ev: got.append(ev) or True)
    s.set("/1/b", False, "x", 0, False, NOW)
    assert got == []
    s.set("/1/a/c", False, "y", 0, False, NOW)
    assert [ev.node.key for ev in got] == ["/1/a/c"]
    # from the history, at once, with the current index as etcd_index
    again: list[Event] = []
    s.watch("/1/b", False, False, 1, lambda ev: again.append(ev) or True)
    assert again[0].node.key == "/1/b" and again[0].etcd_index == 2
    for i in range(1000):
        s.set("/1/many", False, str(i), 0, False, NOW)
    with pytest.raises(V2Error) as err:
        s.watch("/1/b", False, False, 1, lambda ev: True)
    assert err.value.code == codes.EVENT_INDEX_CLEARED
    assert err.value.cause == "the requested history has been cleared [3/1]"
    assert err.value.index == 1002


def test_load_rebuilds_the_tree_and_clears_the_history() -> None:
    records: dict[str, bytes] = {}
    index = [0]

    class Sink:
        def node_written(self, node: object) -> None:
            records[node.path] = V2Store.encode_node(node)  # type: ignore[attr-defined]

        def node_removed(self, path: str) -> None:
            records.pop(path)

        def index_written(self, i: int) -> None:
            index[0] = i

    s = V2Store(Sink())
    s.set("/1/d/a", False, "1", NOW + SECOND_NS, False, NOW)
    s.set("/1/d/b", False, "2", 0, False, NOW)
    s.delete("/1/d/b", False, False, NOW)
    s.set("/1/e", True, "", 0, False, NOW)
    t = V2Store()
    t.load(index[0], [V2Store.decode_node(k.encode(), v) for k, v in records.items()])
    assert t.current_index == s.current_index == 4
    assert t.get("/1", True, True, NOW) == s.get("/1", True, True, NOW)
    assert t.has_ttl_keys()
    with pytest.raises(V2Error) as err:
        t.watch("/1/d", True, False, 4, lambda ev: True)
    assert err.value.code == codes.EVENT_INDEX_CLEARED


def test_request_codec_round_trips_in_an_entry() -> None:
    req = V2Request(Method.PUT, "/1/k", "v\u00e9", True, True, True, True, False, "p", 7, NOW, -3)
    assert V2Request.decode(req.encode()) == req
    data = entry.encode(300, req)
    assert data[:2] == bytes((1, entry.Kind.V2))
    assert entry.decode(data) == entry.DecodedEntry(300, req)
    assert entry.request_id(data) == 300
    for cut in range(2, len(data)):
        with pytest.raises(entry.EntryFormatError):
            entry.decode(data[:cut])
    with pytest.raises(V2FormatError):
        V2Request.decode(req.encode() + b"\x00")
    assert V2Request.decode(V2Request(Method.SYNC, time_ns=NOW).encode()).prev_exist is None
