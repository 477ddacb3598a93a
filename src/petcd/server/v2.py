"""The member's v2 tree (``--enable-v2``): durable, replicated, mirrored membership.

Theory of operation
-------------------
``V2Service`` owns the member's ``petcd.v2store.V2Store`` and is the member's only contact
with it (``docs/enhancements/0014-v2-api.md``):

- at apply time, on every member alike, it runs the ``V2`` entries (``apply``) and mirrors
  membership into ``/0`` (``mirror_conf_change``, ``mirror_attributes``), as etcd 3.5's
  RaftCluster writes its v2 store, so that the v2 index follows etcd's;
- every node the store changes is written to the backend's ``v2store`` bucket in the apply
  batch (``_BucketSink``), with the store's index: the tree is as durable as the consistent
  index that covers it, and travels in the backend file of a raft snapshot (``load`` after
  the file was replaced, and at start);
- on the leader, every ``SYNC_INTERVAL_S`` while the tree has keys with a TTL, it proposes a
  SYNC carrying the leader's clock (``run_sync``): keys expire only through the log.

Nothing here is created while ``--enable-v2`` is off, unless the backend already holds a tree
or a V2 entry arrives from another member (then this member keeps the same tree as the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

from petcd import ETCD_CLUSTER_VERSION
from petcd.backend import V2, Backend
from petcd.raft.types import ConfChangeType
from petcd.v2store import Event, Node, V2Error, V2Request, V2Store, apply
from petcd.v2store.request import Method

SYNC_INTERVAL_S = 0.5
INDEX_KEY = b"\x00index"
VERSION_PATH = "/0/version"


class _BucketSink:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def node_written(self, node: Node) -> None:
        self.backend.put(
            V2, node.path.encode("utf-8", "surrogateescape"), V2Store.encode_node(node)
        )

    def node_removed(self, path: str) -> None:
        self.backend.delete(V2, path.encode("utf-8", "surrogateescape"))

    def index_written(self, index: int) -> None:
        self.backend.put(V2, INDEX_KEY, index.to_bytes(8, "big"))


def _go_json(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _member_key(member_id: int) -> str:
    return f"/0/members/{member_id:x}"


class V2Service:
    def __init__(self, backend: Backend) -> None:
        self.store = V2Store()
        self.load(backend)

    def load(self, backend: Backend) -> None:
        """(Re)build the tree from ``backend``'s bucket (at start, after a snapshot)."""
        self._sink = _BucketSink(backend)
        store = V2Store()
        index = 0
        records = []
        for k, v in backend.iterate(V2):
            if k == INDEX_KEY:
                index = int.from_bytes(v, "big")
            else:
                records.append(V2Store.decode_node(k, v))
        store.load(index, records)
        store._sink = self._sink
        old = self.store
        self.store = store
        for ws in list(old.hub.watchers.values()):
            for w in list(ws):
                w.close()  # etcd closes them when its store is recovered from a snapshot

    def has_custom_content(self) -> bool:
        """Anything but membership in the tree (etcd's ``IsMetaStoreOnly`` is false)."""
        root = self.store.root.children or {}
        return any(n.path != "/0" and n.children for n in root.values())

    @staticmethod
    def exists(backend: Backend) -> bool:
        return backend.count(V2) > 0

    # -- apply (every member) ----------------------------------------------------------------

    def apply(self, req: V2Request) -> Event | V2Error | None:
        try:
            return apply(self.store, req, time.time_ns())
        except V2Error as err:
            return err

    def mirror_conf_change(
        self, kind: ConfChangeType, member_id: int, peer_urls: tuple[str, ...], learner: bool
    ) -> None:
        """etcd's RaftCluster writes to its v2 store for a conf change."""
        now = time.time_ns()
        s, key = self.store, _member_key(member_id)
        try:
            if kind == ConfChangeType.REMOVE_NODE:
                with contextlib.suppress(V2Error):
                    s.delete(key, True, True, now)
                s.create(f"/0/removed_members/{member_id:x}", False, "", False, 0, now)
                return
            attrs: dict[str, object] = {"peerURLs": list(peer_urls)}
            if learner:
                attrs["isLearner"] = True
            value = _go_json(attrs)
            try:
                s.create(f"{key}/raftAttributes", False, value, False, 0, now)
            except V2Error:
                s.update(f"{key}/raftAttributes", value, 0, False, now)  # promoted, updated
        except V2Error:
            pass  # a mirror never fails the conf change

    def mirror_attributes(
        self, member_id: int, name: str, client_urls: tuple[str, ...], all_named: bool
    ) -> None:
        """etcd's RaftCluster: a member's published attributes; the cluster version once
        every member has published."""
        now = time.time_ns()
        value = _go_json({"name": name, "clientURLs": list(client_urls)})
        try:
            self.store.set(f"{_member_key(member_id)}/attributes", False, value, 0, False, now)
            if all_named:
                try:
                    self.store._get(VERSION_PATH)
                except V2Error:
                    self.store.set(VERSION_PATH, False, ETCD_CLUSTER_VERSION, 0, False, now)
        except V2Error:
            pass

    # -- the leader's expiry -----------------------------------------------------------------

    async def run_sync(
        self,
        is_leader: Callable[[], bool],
        propose: Callable[[V2Request], Awaitable[object]],
    ) -> None:
        """Forever: on the leader, a SYNC with its clock whenever keys with a TTL exist."""
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            if is_leader() and self.store.has_ttl_keys():
                try:
                    await propose(V2Request(Method.SYNC, time_ns=time.time_ns()))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    pass  # no quorum, leadership lost: the next round tries again
