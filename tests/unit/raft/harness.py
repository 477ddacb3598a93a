"""Test helpers for the Raft core: nodes over an in-memory network, driven one step at a time.

A ``Cluster`` holds ``RawNode``s with ``MemoryStorage``; ``process(id)`` runs one Ready cycle for a
member (persist to its storage, queue its messages, apply committed entries, advance), and
``deliver()`` delivers queued messages (optionally dropping those on cut links). Scripted tests
use ``take(id)`` to get exactly the messages a member emitted and then ``step`` them by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from petcd.raft import (
    ConfChangeType,
    Config,
    Entry,
    EntryType,
    Index,
    MemberId,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Ready,
    Role,
    confchange,
)

M = MessageType


def ids(*xs: int) -> list[MemberId]:
    return [MemberId(x) for x in xs]


def make_config(id_: int, seed: int = 0, **kw: Any) -> Config:
    return Config(MemberId(id_), rand=random.Random(seed * 1000 + id_), **kw)


class Member:
    def __init__(self, node: RawNode, storage: MemoryStorage) -> None:
        self.node = node
        self.storage = storage
        self.applied: list[Entry] = []
        self.read_states: list[ReadState] = []
        self.readies: list[Ready] = []

    @property
    def id(self) -> MemberId:
        return self.node.raft.id

    @property
    def role(self) -> Role:
        return self.node.raft.role

    def applied_data(self) -> list[bytes]:
        return [e.data for e in self.applied if e.type == EntryType.NORMAL and e.data]


class Cluster:
    def __init__(
        self,
        members: Iterable[int],
        seed: int = 0,
        config: Callable[[int], Config] | None = None,
        learners: Iterable[int] = (),
        **kw: Any,
    ) -> None:
        self.ids = sorted(members)
        self.learner_ids = sorted(learners)
        self.seed = seed
        self.kw = kw
        self.members: dict[MemberId, Member] = {}
        self.outbox: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.dropped: list[Message] = []
        self._config = config
        for i in self.ids + self.learner_ids:
            st = MemoryStorage.bootstrap(ids(*self.ids))
            if self.learner_ids:
                from petcd.raft import ConfState

                st.set_conf_state(
                    ConfState(frozenset(ids(*self.ids)), frozenset(ids(*self.learner_ids)))
                )
            self.add_member(i, st)

    def cfg(self, id_: int, applied: int = 0) -> Config:
        if self._config is not None:
            return self._config(id_)
        return make_config(id_, self.seed, applied=Index(applied), **self.kw)

    def add_member(self, id_: int, storage: MemoryStorage, applied: int = 0) -> Member:
        m = Member(RawNode(self.cfg(id_, applied), storage), storage)
        self.members[MemberId(id_)] = m
        return m

    def __getitem__(self, id_: int) -> Member:
        return self.members[MemberId(id_)]

    def node(self, id_: int) -> RawNode:
        return self.members[MemberId(id_)].node

    # -- one member's Ready cycle ------------------------------------------------------------

    def process(self, id_: int) -> Ready | None:
        mem = self.members[MemberId(id_)]
        n = mem.node
        if not n.has_ready():
            return None
        rd = n.ready()
        mem.readies.append(rd)
        st = mem.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        st.append(rd.entries)
        self.outbox.extend(rd.messages)
        for e in rd.committed_entries:
            mem.applied.append(e)
            if e.type == EntryType.CONF_CHANGE:
                cs = n.apply_conf_change(confchange.decode(e.data))
                st.set_conf_state(cs)
        mem.read_states.extend(rd.read_states)
        n.advance(rd)
        return rd

    def process_all(self) -> None:
        for i in list(self.members):
            self.process(i)

    def take(self, id_: int) -> list[Message]:
        """Run ``id_``'s Ready cycle and return (and remove from the outbox) its messages."""
        self.process(id_)
        mine = [m for m in self.outbox if m.from_ == id_]
        self.outbox = [m for m in self.outbox if m.from_ != id_]
        return mine

    def isolate(self, id_: int) -> None:
        for other in self.members:
            if other != id_:
                self.cut.add((id_, other))
                self.cut.add((other, id_))

    def heal(self) -> None:
        self.cut.clear()

    def deliver(self, msgs: list[Message] | None = None) -> int:
        """Deliver ``msgs`` (default: the whole outbox) once; the count delivered."""
        if msgs is None:
            msgs, self.outbox = self.outbox, []
        n = 0
        for m in msgs:
            if (m.from_, m.to) in self.cut or m.to not in self.members:
                self.dropped.append(m)
                continue
            self.members[m.to].node.step(m)
            n += 1
        return n

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Process and deliver until nothing is left to do."""
        for _ in range(max_rounds):
            self.process_all()
            if not self.outbox:
                if not any(m.node.has_ready() for m in self.members.values()):
                    return
                continue
            self.deliver()
        raise AssertionError("cluster did not stabilize")

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for m in self.members.values():
                m.node.tick()
            self.stabilize()

    def elect(self, id_: int) -> None:
        self.node(id_).campaign()
        self.stabilize()
        assert self[id_].role is Role.LEADER, f"{id_} did not become leader"

    def leader(self) -> Member | None:
        leaders = [m for m in self.members.values() if m.role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def add_conf(self, by: int, type_: ConfChangeType, node_id: int) -> None:
        from petcd.raft import ConfChange

        self.node(by).propose_conf_change(ConfChange(type_, MemberId(node_id)))
        self.stabilize()


def kinds(msgs: Iterable[Message]) -> list[tuple[MessageType, int, int, int]]:
    """A compact view of messages: (type, from, to, term)."""
    return [(m.type, m.from_, m.to, m.term) for m in msgs]


def log_storage(
    voters: Iterable[int],
    terms: Iterable[int],
    term: int | None = None,
    vote: int = 0,
    commit: int = 1,
    learners: Iterable[int] = (),
) -> MemoryStorage:
    """A storage whose log is a snapshot at (index 1, term 1) holding the configuration,
    followed by one entry per element of ``terms`` (indexes 2, 3, ...)."""
    from petcd.raft import ConfState, HardState, Snapshot, SnapshotMetadata, Term

    cs = ConfState(frozenset(ids(*voters)), frozenset(ids(*learners)))
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(SnapshotMetadata(Index(1), Term(1), cs)))
    ts = list(terms)
    st.append([Entry(Term(t), Index(i), data=b"") for i, t in enumerate(ts, start=2)])
    hs_term = term if term is not None else max([1, *ts])
    st.set_hard_state(HardState(Term(hs_term), MemberId(vote), Index(commit)))
    return st


def log_terms(member: Member) -> list[int]:
    log = member.node.raft.raft_log
    return [log.term(Index(i)) for i in range(log.first_index(), log.last_index() + 1)]


def custom(
    logs: dict[int, list[int]], seed: int = 0, learners: Iterable[int] = (), **kw: Any
) -> Cluster:
    """A cluster whose members start from the given logs (see ``log_storage``)."""
    c = Cluster([], seed=seed, **kw)
    voters = sorted(logs)
    for i, terms in logs.items():
        c.add_member(i, log_storage(voters, terms, learners=learners))
    for i in learners:
        c.add_member(i, log_storage(voters, [], learners=learners))
    c.ids = voters
    return c
