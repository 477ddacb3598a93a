"""The member's v2 tree in a real backend: written in the apply batch, reloaded from it (as
after a raft snapshot), membership mirrored into /0 as etcd 3.5 does."""

from __future__ import annotations

from pathlib import Path

from petcd.backend import V2, Backend
from petcd.raft.types import ConfChangeType
from petcd.server.v2 import V2Service
from petcd.v2store import Event, Method, V2Request


def test_the_tree_survives_a_reload_and_open_watches_are_closed(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "db"))
    try:
        assert not V2Service.exists(backend)
        service = V2Service(backend)
        service.mirror_conf_change(ConfChangeType.ADD_NODE, 0xABC, ("http://p:2380",), False)
        service.mirror_attributes(0xABC, "m1", ("http://c:2379",), True)
        ev = service.apply(V2Request(Method.PUT, "/1/foo", "bar"))
        assert isinstance(ev, Event) and ev.node.modified == 4  # after etcd's 3 mirror writes
        assert service.has_custom_content()
        got: list[Event] = []
        closed: list[bool] = []
        w = service.store.watch("/1/foo", False, False, 0, lambda e: got.append(e) or True)
        w.on_close = lambda: closed.append(True)
        backend.commit()
        assert V2Service.exists(backend) and backend.count(V2) > 0
        service.load(backend)
        assert closed == [True] and got == []
        node = service.store.get("/0/members/abc/raftAttributes", False, False, 0).node
        assert node.value == '{"peerURLs":["http://p:2380"]}'
        assert service.store.get("/0/version", False, False, 0).node.value == "3.5.0"
        assert service.store.get("/1/foo", False, False, 0).node.value == "bar"
        assert service.store.current_index == 4
        service.mirror_conf_change(ConfChangeType.REMOVE_NODE, 0xABC, (), False)
        assert service.store.get("/0/removed_members/abc", False, False, 0).node.modified == 6
    finally:
        backend.close()
