# mypy: disable-error-code="arg-type,index,comparison-overlap,union-attr"
"""MemoryStorage, RaftLog, the conf-change codec and Config validation."""

from __future__ import annotations

import gc
import random

import pytest

from petcd.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    Index,
    MemberId,
    MemoryStorage,
    Snapshot,
    SnapshotMetadata,
    Term,
    UnavailableError,
    confchange,
)
from petcd.raft.confchange import ConfChangeDecodeError
from petcd.raft.errors import ConfigError
from petcd.raft.log import RaftLog


def ents(*pairs: tuple[int, int], data: bytes = b"") -> list[Entry]:
    return [Entry(Term(t), Index(i), data=data) for i, t in pairs]


def storage_with(*terms: int) -> MemoryStorage:
    st = MemoryStorage()
    st.append(ents(*[(i, t) for i, t in enumerate(terms, start=1)]))
    return st


def test_memory_storage_indexes_terms_and_slices() -> None:
    st = storage_with(1, 1, 2, 3)
    assert (st.first_index(), st.last_index()) == (1, 4)
    assert st.term(Index(0)) == 0 and st.term(Index(3)) == 2
    with pytest.raises(UnavailableError):
        st.term(Index(5))
    assert [e.index for e in st.entries(Index(2), Index(4))] == [2, 3]
    with pytest.raises(UnavailableError):
        st.entries(Index(2), Index(6))
    with pytest.raises(CompactedError):
        st.entries(Index(0), Index(2))


def test_memory_storage_entries_size_limit_returns_at_least_one() -> None:
    st = MemoryStorage()
    st.append([Entry(Term(1), Index(i), data=b"x" * 10) for i in range(1, 6)])
    assert len(st.entries(Index(1), Index(6), max_bytes=0)) == 1
    assert len(st.entries(Index(1), Index(6), max_bytes=25)) == 2
    assert len(st.entries(Index(1), Index(6), max_bytes=50)) == 5


def test_memory_storage_gives_back_what_was_appended() -> None:
    st = MemoryStorage()
    appended = [
        Entry(Term(1), Index(1), EntryType.CONF_CHANGE, b"cc"),
        Entry(Term(2), Index(2), EntryType.NORMAL, b"put"),
        Entry(Term(2), Index(3)),
    ]
    st.append(appended)
    got = st.entries(Index(1), Index(4))
    assert got == appended
    assert [type(e.type) for e in got] == [EntryType] * 3


def test_memory_storage_keeps_nothing_the_cyclic_collector_walks() -> None:
    # Each entry the log keeps used to be an Entry object, tracked by the collector for as
    # long as the log kept it: a snapshot's worth of them made every older-generation pass
    # walk them (55-75 ms pauses under load). The log keeps terms, types and payloads in
    # arrays and a list of bytes instead.
    st = MemoryStorage()
    gc.collect()
    before = len(gc.get_objects())
    st.append([Entry(Term(1), Index(i), data=b"v" * 300) for i in range(1, 1001)])
    st.compact(Index(10))
    st.append([Entry(Term(2), Index(i), data=b"w") for i in range(900, 1101)])
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert (st.first_index(), st.last_index(), st.term(Index(899)), st.term(Index(900))) == (
        11,
        1100,
        1,
        2,
    )


def test_memory_storage_append_truncates_conflicting_tail_and_ignores_compacted() -> None:
    st = storage_with(1, 1, 1, 1)
    st.append(ents((3, 2), (4, 2), (5, 2)))
    assert [st.term(Index(i)) for i in range(1, 6)] == [1, 1, 2, 2, 2]
    st.compact(Index(2))
    st.append(ents((1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 3)))
    assert (st.first_index(), st.last_index()) == (3, 6)
    with pytest.raises(AssertionError):
        st.append(ents((9, 3)))  # a gap


def test_memory_storage_compact_and_snapshots() -> None:
    st = storage_with(1, 2, 2, 3, 3)
    cs = ConfState(frozenset({MemberId(1)}))
    snap = st.create_snapshot(Index(3), cs, b"data")
    assert snap.metadata == SnapshotMetadata(Index(3), Term(2), cs)
    st.compact(Index(3))
    assert st.first_index() == 4 and st.term(Index(3)) == 2
    with pytest.raises(CompactedError):
        st.term(Index(2))
    with pytest.raises(CompactedError):
        st.compact(Index(3))
    newer = Snapshot(SnapshotMetadata(Index(10), Term(4), cs), b"x")
    st.apply_snapshot(newer)
    assert (st.first_index(), st.last_index(), st.term(Index(10))) == (11, 10, 4)
    assert st.initial_state()[1] == cs


def test_bootstrap_is_identical_for_every_member() -> None:
    a = MemoryStorage.bootstrap([MemberId(2), MemberId(1)])
    b = MemoryStorage.bootstrap([MemberId(1), MemberId(2)])
    assert a.initial_state() == b.initial_state()
    assert a.entries(Index(1), Index(3)) == b.entries(Index(1), Index(3))
    hs, cs = a.initial_state()
    assert (hs.term, hs.commit, cs.voters) == (1, 2, {1, 2})


def test_raft_log_unstable_and_stable_parts() -> None:
    st = storage_with(1, 1)
    log = RaftLog(st)
    assert (log.first_index(), log.last_index(), log.committed) == (1, 2, 0)
    log.append(ents((3, 2), (4, 2)))
    assert log.last_index() == 4 and log.term(Index(4)) == 2
    assert [e.index for e in log.slice(Index(1), Index(5), None)] == [1, 2, 3, 4]
    assert log.term(Index(9)) == 0
    log.stable_to(Index(3), Term(2))
    assert log.unstable.offset == 4 and [e.index for e in log.unstable.entries] == [4]
    # A stale acknowledgement (wrong term) leaves the unstable part alone.
    log.stable_to(Index(4), Term(9))
    assert log.unstable.offset == 4


def test_raft_log_maybe_append_conflicts_and_commit() -> None:
    log = RaftLog(storage_with(1, 1, 1))
    assert log.maybe_append(Index(3), Term(2), Index(3), tuple(ents((4, 2)))) is None
    assert log.maybe_append(Index(1), Term(1), Index(2), tuple(ents((2, 1), (3, 2)))) == 3
    assert [log.term(Index(i)) for i in (1, 2, 3)] == [1, 1, 2]
    assert log.committed == 2
    with pytest.raises(AssertionError):
        log.maybe_append(Index(1), Term(1), Index(2), tuple(ents((2, 5))))  # below commit


def test_find_conflict_by_term() -> None:
    log = RaftLog(storage_with(1, 1, 2, 2, 5, 5))
    assert log.find_conflict_by_term(Index(6), Term(3)) == (4, 2)
    assert log.find_conflict_by_term(Index(6), Term(5)) == (6, 5)
    assert log.find_conflict_by_term(Index(6), Term(0)) == (0, 0)
    assert log.find_conflict_by_term(Index(9), Term(1)) == (9, 0)


def test_maybe_commit_requires_current_term() -> None:
    log = RaftLog(storage_with(1, 2, 3))
    assert not log.maybe_commit(Index(2), Term(3))
    assert log.maybe_commit(Index(3), Term(3)) and log.committed == 3


@pytest.mark.parametrize(
    "cc",
    [
        ConfChange(ConfChangeType.ADD_NODE, MemberId(1)),
        ConfChange(ConfChangeType.REMOVE_NODE, MemberId(2**64 - 1), b"", 7),
        ConfChange(ConfChangeType.ADD_LEARNER_NODE, MemberId(9), b"name=x;urls=http://a", 2**63),
        ConfChange(ConfChangeType.UPDATE_NODE, MemberId(3), bytes(range(256))),
    ],
)
def test_confchange_roundtrip(cc: ConfChange) -> None:
    data = confchange.encode(cc)
    assert confchange.decode(data) == cc
    assert data[0] == 1 and data[1] == cc.type


def test_confchange_encoding_is_stable() -> None:
    data = confchange.encode(ConfChange(ConfChangeType.ADD_NODE, MemberId(2), b"ab", 5))
    assert data.hex() == "0100" + "0000000000000002" + "0000000000000005" + "00000002" + "6162"


@pytest.mark.parametrize(
    "bad", [b"", b"\x02" + bytes(21), b"\x01\x09" + bytes(20), b"\x01\x00" + bytes(19) + b"\x05"]
)
def test_confchange_decode_rejects_garbage(bad: bytes) -> None:
    with pytest.raises(ConfChangeDecodeError):
        confchange.decode(bad)


@pytest.mark.parametrize(
    "kw",
    [
        {"election_ticks": 1, "heartbeat_ticks": 1},
        {"heartbeat_ticks": 0},
        {"max_inflight_msgs": 0},
        {"max_size_per_msg_bytes": 0},
        {"max_uncommitted_entries_bytes": -1},
        {"applied": -1},
    ],
)
def test_config_validation(kw: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        Config(MemberId(1), rand=random.Random(0), **kw)
    with pytest.raises(ConfigError):
        Config(MemberId(0), rand=random.Random(0))


def test_config_defaults() -> None:
    c = Config(MemberId(1), rand=random.Random(0))
    assert (c.election_ticks, c.heartbeat_ticks, c.max_inflight_msgs) == (10, 1, 256)
    assert c.check_quorum and c.pre_vote and c.max_uncommitted_entries_bytes == 0


def test_raft_log_append_with_gap_is_a_bug() -> None:
    log = RaftLog(storage_with(1, 1))
    log.append(ents((3, 1)))
    with pytest.raises(AssertionError):
        log.append(ents((5, 1)))


def test_raft_log_append_replacing_unstable_tail() -> None:
    log = RaftLog(storage_with(1))
    log.append(ents((2, 1), (3, 1), (4, 1)))
    log.append(ents((3, 2)))
    assert [log.term(Index(i)) for i in (1, 2, 3)] == [1, 1, 2] and log.last_index() == 3
    log.append(ents((1, 3)))  # before the unstable offset: replaces it all
    assert log.unstable.offset == 1 and log.last_index() == 1 and log.term(Index(1)) == 3
