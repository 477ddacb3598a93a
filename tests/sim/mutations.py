"""Deliberate bugs for the mutation check of the simulator.

Theory of operation
-------------------
Each ``Mutation`` breaks one rule Raft's safety depends on, in this test process only: it
patches the core with ``pytest.MonkeyPatch`` (undone when the test ends) and/or returns a
``RawNode`` factory that builds a broken subclass. Nothing in ``src/petcd/raft`` is ever
edited. ``hunt`` runs the simulator seed after seed with the mutation in place until the
checker raises ``SafetyViolation`` (or ``LivenessViolation``), and says which seed and which
property caught it. The mutations reach into the core's internals (``Raft``, ``RaftLog``,
``RawNode._prev_hard``); if the core's internals are renamed, ``apply`` fails loudly rather
than testing nothing.

Replay one: ``.venv/bin/pytest tests/sim --seed N --sim-mutation NAME``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from petcd.raft.config import Config
from petcd.raft.log import RaftLog
from petcd.raft.node import RawNode, Ready
from petcd.raft.raft import Raft
from petcd.raft.storage import MemoryStorage
from petcd.raft.types import NONE_ID, HardState, Index, Message, MessageType, Term
from tests.sim.checker import CoreCrash, LivenessViolation, SafetyViolation
from tests.sim.cluster import Simulation

Factory = Callable[[Config, MemoryStorage], RawNode]


@dataclass(frozen=True, slots=True)
class Mutation:
    name: str
    description: str
    apply: Callable[[pytest.MonkeyPatch], Factory]


# -- the bugs ------------------------------------------------------------------------------


def _figure8(mp: pytest.MonkeyPatch) -> Factory:
    """Commit by counting replicas whatever the entry's term (the paper's Figure 8)."""

    def maybe_commit(self: RaftLog, max_index: Index, term: Term) -> bool:
        if max_index > self.committed:
            self.commit_to(max_index)
            return True
        return False

    mp.setattr(RaftLog, "maybe_commit", maybe_commit)
    return RawNode


def _double_vote(mp: pytest.MonkeyPatch) -> Factory:
    """Forget the vote already cast in this term when another candidate asks."""

    class DoubleVote(RawNode):
        def step(self, m: Message) -> None:
            r = self.raft
            if m.type == MessageType.VOTE and m.term == r.term and r.vote not in (NONE_ID, m.from_):
                r.vote = NONE_ID
                r.lead = NONE_ID
            super().step(m)

    return DoubleVote


def _vote_not_persisted(mp: pytest.MonkeyPatch) -> Factory:
    """Send a vote in a Ready whose hard state does not hold it yet (it comes one Ready later)."""

    class LateVote(RawNode):
        def ready(self) -> Ready:
            prev = self._prev_hard
            rd = super().ready()
            hs = rd.hard_state
            granted = any(m.type == MessageType.VOTE_RESP and not m.reject for m in rd.messages)
            if hs is None or not granted or hs.vote in (NONE_ID, prev.vote):
                return rd
            old_vote = prev.vote if prev.term == hs.term else NONE_ID
            held = HardState(hs.term, old_vote, hs.commit)
            self._prev_hard = held
            return dataclasses.replace(rd, hard_state=held)

    return LateVote


def _ack_before_persist(mp: pytest.MonkeyPatch) -> Factory:
    """Acknowledge appended entries in a Ready that does not persist them (the next one does)."""

    class EarlyAck(RawNode):
        def ready(self) -> Ready:
            rd = super().ready()
            acks = any(m.type == MessageType.APP_RESP and not m.reject for m in rd.messages)
            if not rd.entries or not acks:
                return rd
            stable = Index(min(self.raft.raft_log.storage.last_index(), rd.entries[0].index - 1))
            hs = rd.hard_state
            if hs is not None and hs.commit > stable:
                hs = HardState(hs.term, hs.vote, stable)
                self._prev_hard = hs
            committed = tuple(e for e in rd.committed_entries if e.index <= stable)
            return dataclasses.replace(rd, entries=(), hard_state=hs, committed_entries=committed)

    return EarlyAck


def _commit_without_quorum(mp: pytest.MonkeyPatch) -> Factory:
    """The leader counts only itself when it advances the commit index."""
    original = Raft._maybe_commit

    def maybe_commit(self: Raft) -> bool:
        quorum = self.quorum
        self.quorum = 1
        try:
            return original(self)
        finally:
            self.quorum = quorum

    mp.setattr(Raft, "_maybe_commit", maybe_commit)
    return RawNode


def _vote_for_stale_log(mp: pytest.MonkeyPatch) -> Factory:
    """Grant votes without the "candidate's log is at least as up to date" check."""

    def is_up_to_date(self: RaftLog, lasti: Index, term: Term) -> bool:
        return True

    mp.setattr(RaftLog, "is_up_to_date", is_up_to_date)
    return RawNode


def _read_without_heartbeat(mp: pytest.MonkeyPatch) -> Factory:
    """Answer ReadIndex from the leader's commit index without confirming leadership."""
    original = Raft._step_leader

    def step_leader(self: Raft, m: Message) -> None:
        if m.type == MessageType.READ_INDEX:
            self._respond_read_index(m, self.raft_log.committed)
            return
        original(self, m)

    mp.setattr(Raft, "_step_leader", step_leader)
    return RawNode


def _ignore_applied(mp: pytest.MonkeyPatch) -> Factory:
    """Restart as if nothing had been applied (``Config.applied`` ignored)."""

    def factory(config: Config, storage: MemoryStorage) -> RawNode:
        return RawNode(dataclasses.replace(config, applied=Index(0)), storage)

    return factory


MUTATIONS: dict[str, Mutation] = {
    m.name: m
    for m in (
        Mutation("figure8", "commits an entry of an older term by counting replicas", _figure8),
        Mutation("double_vote", "grants two votes in one term", _double_vote),
        Mutation(
            "vote_not_persisted",
            "sends a vote before the hard state holding it is in a Ready",
            _vote_not_persisted,
        ),
        Mutation(
            "ack_before_persist",
            "acknowledges an append before the entries are in a Ready",
            _ack_before_persist,
        ),
        Mutation(
            "commit_without_quorum", "leader commits on its own match only", _commit_without_quorum
        ),
        Mutation(
            "vote_for_stale_log",
            "grants votes to candidates with a less up-to-date log",
            _vote_for_stale_log,
        ),
        Mutation(
            "read_without_heartbeat",
            "answers ReadIndex without a heartbeat round",
            _read_without_heartbeat,
        ),
        Mutation("ignore_applied", "ignores Config.applied on restart", _ignore_applied),
    )
}


@dataclass(frozen=True, slots=True)
class HuntResult:
    mutation: str
    seed: int | None  # the first seed whose checker caught it, None if none did
    seeds_run: int
    violation: str  # the first line of the violation
    core_crash_seed: int | None  # the first seed where the core's own assertions tripped first


def hunt(
    mutation: Mutation, seeds: range, mp: pytest.MonkeyPatch, *, local_checks: bool = True
) -> HuntResult:
    """Run ``seeds`` with ``mutation`` applied until the checker reports a violation.

    ``local_checks=False`` leaves only the cluster-wide properties (see ``Simulation``).

    A seed where the (mutated) core trips one of its own assertions first is noted and skipped:
    the point is to show that the simulator's checks see the bug.
    """
    factory = mutation.apply(mp)
    ran = 0
    core_crash: int | None = None
    for seed in seeds:
        ran += 1
        try:
            sim = Simulation(
                seed, raw_node_factory=factory, mutation=mutation.name, local_checks=local_checks
            )
            sim.run()
        except (SafetyViolation, LivenessViolation) as e:
            first = str(e).splitlines()[0]
            return HuntResult(mutation.name, seed, ran, first, core_crash)
        except CoreCrash:
            if core_crash is None:
                core_crash = seed
    return HuntResult(mutation.name, None, ran, "", core_crash)
