"""Unit tests of petcd.backend: buckets, batching, read-your-writes, whole-file operations."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from petcd.backend import (
    AUTH,
    KEY,
    LEASE,
    META,
    Backend,
    BackendClosedError,
    DatabaseSpaceExceededError,
    UnknownBucketError,
    read_consistent_index,
)
from petcd.backend.backend import PINNED_LEASES_MAX, PINNED_VALUE_MIN_BYTES
from petcd.raft.types import Index, Term


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_backend(tmp_path: Path, **kw: object) -> Backend:
    return Backend(str(tmp_path / "member" / "snap" / "db"), **kw)  # type: ignore[arg-type]


def test_reads_see_uncommitted_writes_and_commit_persists(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    b.put(KEY, b"k1", b"v1")
    b.put(LEASE, b"l1", b"x")
    assert b.get(KEY, b"k1") == b"v1" and b.get(KEY, b"k2") is None
    assert b.commits == 0 and b.pending_writes == 2
    b.commit()
    b.delete(KEY, b"k1")
    assert b.get(KEY, b"k1") is None  # the pending deletion hides the committed value
    b.close()
    b = open_backend(tmp_path)
    assert b.get(KEY, b"k1") is None and b.get(LEASE, b"l1") == b"x"
    b.close()


def test_uncommitted_batch_is_lost_without_commit(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    b.put(KEY, b"a", b"1")
    b.commit()
    b.put(KEY, b"b", b"2")
    # simulate a crash: drop the environment without committing the overlay
    b._close_env()
    b = open_backend(tmp_path)
    assert b.get(KEY, b"a") == b"1" and b.get(KEY, b"b") is None
    b.close()


def test_range_merges_batch_with_committed_state(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    for k in (b"a", b"c", b"e", b"g"):
        b.put(KEY, k, k.upper())
    b.commit()
    b.put(KEY, b"b", b"B")
    b.put(KEY, b"c", b"C2")
    b.delete(KEY, b"e")
    b.put(KEY, b"h", b"H")
    want = [(b"a", b"A"), (b"b", b"B"), (b"c", b"C2"), (b"g", b"G"), (b"h", b"H")]
    assert b.range(KEY, b"") == want
    assert list(b.iterate(KEY)) == want
    assert b.range(KEY, b"b", b"g") == want[1:3]
    assert list(b.iterate(KEY, b"b", b"g")) == want[1:3]
    assert b.range(KEY, b"", limit=2) == want[:2]
    assert b.range(KEY, b"zz") == [] and list(b.iterate(KEY, b"zz")) == []
    assert b.count(KEY) == 5
    b.close()


def test_get_many_reads_what_get_reads_committed_committing_or_pending(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    for k in (b"a", b"c", b"e", b"g"):
        b.put(KEY, k, k.upper())
    b.commit()
    keys = [b"a", b"b", b"c", b"e", b"g", b"h", b"zz", b"a"]
    assert b.get_many(KEY, keys) == [b"A", None, b"C", b"E", b"G", None, None, b"A"]
    assert b.get_many(KEY, [b"g", b"a"]) == [b"G", b"A"]  # all committed, in the order asked
    b.put(KEY, b"b", b"B")
    b.put(KEY, b"c", b"C2")
    b.delete(KEY, b"e")
    write = b.start_commit()  # that batch is being committed ...
    assert write is not None
    b.put(KEY, b"h", b"H")  # ... and this one is pending
    b.delete(KEY, b"g")
    want = [b"A", b"B", b"C2", None, None, b"H", None, b"A"]
    assert b.get_many(KEY, keys) == want == [b.get(KEY, k) for k in keys]
    write()
    assert b.get_many(KEY, keys) == want
    b.commit()
    assert b.get_many(KEY, keys) == want
    assert b.get_many(KEY, []) == []
    b.close()


def test_get_many_pinned_reads_what_get_many_reads_large_values_as_views(
    tmp_path: Path,
) -> None:
    b = open_backend(tmp_path)
    big = {k: k * PINNED_VALUE_MIN_BYTES for k in (b"a", b"c", b"e")}
    for k, v in big.items():
        b.put(KEY, k, v)
    b.put(KEY, b"s", b"small")
    b.commit()
    b.put(KEY, b"c", b"pending")  # not on disk yet: bytes, from the batch
    keys = [b"a", b"b", b"c", b"e", b"s", b"a"]
    values, lease = b.get_many_pinned(KEY, keys)
    assert lease is not None
    assert [v if v is None else bytes(v) for v in values] == b.get_many(KEY, keys)
    assert [type(v).__name__ for v in values] == [
        "memoryview",
        "NoneType",
        "bytes",
        "memoryview",
        "memoryview",
        "memoryview",
    ]
    for n in range(4):  # later writes and commits leave the views as they were: the lease
        for k in (b"a", b"e"):  # keeps LMDB from reusing their pages for the new values
            b.put(KEY, k, bytes([n]) * len(big[k]))
        b.commit()
    assert bytes(values[0]) == big[b"a"]  # type: ignore[arg-type]
    assert bytes(values[3]) == big[b"e"]  # type: ignore[arg-type]
    lease.release()
    lease.release()  # idempotent
    with pytest.raises(ValueError):
        bytes(values[0])  # type: ignore[arg-type]  # released: no read into a reused page
    # Small values (the first one read from the file decides), one key, or nothing on disk:
    # copies, no lease.
    for ks in ([b"s", b"e"], [b"e"], [b"c", b"c"], []):
        values, lease = b.get_many_pinned(KEY, ks)
        assert lease is None
        assert values == b.get_many(KEY, ks)
    b.close()


def test_pinned_leases_are_bounded_and_closing_waits_for_them(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    for k in (b"a", b"b"):
        b.put(KEY, k, k * PINNED_VALUE_MIN_BYTES)
    b.commit()
    leases = []
    for _ in range(PINNED_LEASES_MAX):
        values, lease = b.get_many_pinned(KEY, [b"a", b"b"])
        assert lease is not None and isinstance(values[0], memoryview)
        leases.append((values, lease))
    values, lease = b.get_many_pinned(KEY, [b"a", b"b"])  # one too many: copies
    assert lease is None and values == [
        b"a" * PINNED_VALUE_MIN_BYTES,
        b"b" * PINNED_VALUE_MIN_BYTES,
    ]
    del leases[1:]  # dropped without release(): garbage collection ends them
    values, lease = b.get_many_pinned(KEY, [b"a", b"b"])
    assert lease is not None
    lease.release()
    held_values, held = leases.pop()
    read: list[bytes] = []

    def reader() -> None:  # still reading when close() begins; close() waits for it
        time.sleep(0.3)
        read.append(bytes(held_values[1]))  # type: ignore[arg-type]
        held.release()

    t = threading.Thread(target=reader)
    t.start()
    started = time.monotonic()
    b.close()
    assert time.monotonic() - started >= 0.25
    t.join()
    assert read == [b"b" * PINNED_VALUE_MIN_BYTES]


def test_iterate_is_a_snapshot(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    for i in range(10):
        b.put(KEY, b"%02d" % i, b"x")
    b.commit()
    it = b.iterate(KEY)
    first = next(it)
    b.put(KEY, b"99", b"new")
    b.delete(KEY, b"05")
    b.commit()
    rest = list(it)
    assert [k for k, _ in [first, *rest]] == [b"%02d" % i for i in range(10)]
    b.close()


def test_batch_commits_at_limit_or_interval_only_when_asked(tmp_path: Path) -> None:
    clock = FakeClock()
    b = open_backend(tmp_path, batch_limit=3, batch_interval_ms=100, clock=clock)
    b.put(KEY, b"a", b"1")
    b.put(KEY, b"b", b"1")
    assert not b.maybe_commit()
    b.put(KEY, b"c", b"1")  # 3 writes: full, but nothing commits until an apply boundary
    assert b.commits == 0
    assert b.maybe_commit() and b.commits == 1 and b.pending_writes == 0
    b.put(KEY, b"d", b"1")
    clock.now += 0.099
    assert not b.maybe_commit()
    clock.now += 0.001
    assert b.maybe_commit() and b.commits == 2
    assert not b.maybe_commit()  # nothing pending: no empty commits
    b.close()


def test_consistent_index_travels_with_the_batch(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    assert b.consistent_index() == (0, 0)
    b.put(KEY, b"a", b"1")
    b.set_consistent_index(Index(7), Term(2))
    assert b.consistent_index() == (7, 2)
    b.commit()
    b.put(KEY, b"b", b"1")
    b.set_consistent_index(Index(8), Term(2))
    b._close_env()  # crash before the second batch commits
    b = open_backend(tmp_path)
    assert b.consistent_index() == (7, 2) and b.get(KEY, b"b") is None
    b.close()
    assert read_consistent_index(b.path) == (7, 2)


def test_copy_to_restore_from_and_replace_with(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    b.put(KEY, b"a", b"1")
    b.set_consistent_index(Index(3), Term(1))
    snap = tmp_path / "snap.db"
    with open(snap, "wb") as f:
        assert b.copy_to(f) == (3, 1)  # the pending batch is committed first
    b.put(KEY, b"a", b"2")
    b.set_consistent_index(Index(4), Term(1))
    assert b.replace_with(str(snap)) == (3, 1)
    assert b.get(KEY, b"a") == b"1" and b.consistent_index() == (3, 1)
    b.close()
    other = Backend.restore_from(str(tmp_path / "other" / "db"), str(snap))
    assert other.get(KEY, b"a") == b"1" and other.consistent_index() == (3, 1)
    other.close()
    assert read_consistent_index(str(snap)) == (3, 1)


def test_sizes_and_defrag(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    value = b"x" * 1000
    for i in range(3000):
        b.put(KEY, i.to_bytes(8, "big"), value)
    b.commit()
    for i in range(3000):
        if i % 10:
            b.delete(KEY, i.to_bytes(8, "big"))
    b.commit()
    size = b.size_bytes()
    assert size == os.path.getsize(b.path)
    in_use = b.size_in_use_bytes()
    assert 0 < in_use < size / 2
    b.defrag()
    assert b.size_bytes() < size / 2
    assert b.count(KEY) == 300 and b.get(KEY, (10).to_bytes(8, "big")) == value
    b.close()


def test_unknown_bucket_and_closed(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    with pytest.raises(UnknownBucketError):
        b.put("nope", b"a", b"b")
    with pytest.raises(UnknownBucketError):
        b.get("nope", b"a")
    assert {META, AUTH} <= set(b._dbs)
    b.close()
    b.close()  # idempotent
    with pytest.raises(BackendClosedError):
        b.commit()
    with pytest.raises(BackendClosedError):
        b.size_bytes()


class _PausingEnv:
    """Wraps the LMDB environment so that a write transaction waits before committing."""

    def __init__(self, env: object) -> None:
        self._env = env
        self.started = threading.Event()
        self.release = threading.Event()

    def begin(self, *args: object, **kw: object) -> object:
        txn = self._env.begin(*args, **kw)  # type: ignore[attr-defined]
        if not kw.get("write"):
            return txn
        outer = self

        class Paused:
            def __enter__(self) -> object:
                outer.started.set()
                return txn.__enter__()

            def __exit__(self, *exc: object) -> object:
                assert outer.release.wait(timeout=30)
                return txn.__exit__(*exc)

        return Paused()

    def __getattr__(self, name: str) -> object:
        return getattr(self._env, name)


def test_reads_and_writes_proceed_while_a_commit_runs_in_another_thread(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    b.put(KEY, b"old", b"1")
    b.commit()
    b.put(KEY, b"a", b"in-flight")
    b.delete(KEY, b"old")
    b.set_consistent_index(Index(5), Term(1))
    pausing = _PausingEnv(b._env)
    b._env = pausing  # type: ignore[assignment]
    committer = threading.Thread(target=b.commit)
    committer.start()
    assert pausing.started.wait(timeout=30)
    # the commit is inside its LMDB transaction: this thread is not blocked
    assert b.get(KEY, b"a") == b"in-flight" and b.get(KEY, b"old") is None
    b.put(KEY, b"b", b"next-batch")
    b.put(KEY, b"a", b"overwritten")
    assert b.range(KEY, b"") == [(b"a", b"overwritten"), (b"b", b"next-batch")]
    assert b.pending_writes == 2
    pausing.release.set()
    committer.join()
    b._env = pausing._env  # type: ignore[assignment]
    assert b.commits == 2 and b.pending_writes == 2
    assert b.range(KEY, b"") == [(b"a", b"overwritten"), (b"b", b"next-batch")]
    b._close_env()  # crash: the second batch is lost, the first (with index 5) is on disk
    b = open_backend(tmp_path)
    assert b.range(KEY, b"") == [(b"a", b"in-flight")]
    assert b.consistent_index() == (5, 1)
    b.close()


def test_start_commit_cuts_the_batch_now_and_writes_it_later(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    assert b.start_commit() is None  # nothing pending
    b.put(KEY, b"a", b"1")
    b.set_consistent_index(Index(7), Term(2))
    pausing = _PausingEnv(b._env)
    b._env = pausing  # type: ignore[assignment]
    write = b.start_commit()
    assert write is not None
    # Cut: what comes now belongs to the next batch, and is still readable with the first.
    b.put(KEY, b"b", b"2")
    assert b.pending_writes == 1
    assert b.range(KEY, b"") == [(b"a", b"1"), (b"b", b"2")]
    assert b.start_commit() is None  # one at a time
    writer = threading.Thread(target=write)
    writer.start()
    assert pausing.started.wait(timeout=30)
    forced = threading.Thread(target=b.commit)  # a force commit waits for it
    forced.start()
    forced.join(timeout=0.2)
    assert forced.is_alive()
    assert b.get(KEY, b"a") == b"1"
    pausing.release.set()
    writer.join()
    forced.join()
    b._env = pausing._env  # type: ignore[assignment]
    assert b.commits == 2 and b.pending_writes == 0
    b._close_env()
    b = open_backend(tmp_path)
    assert b.range(KEY, b"") == [(b"a", b"1"), (b"b", b"2")]
    assert b.consistent_index() == (7, 2)
    b.close()


def test_a_failed_start_commit_write_puts_the_batch_back(tmp_path: Path) -> None:
    b = open_backend(tmp_path, map_size_bytes=1 << 20)
    for i in range(400):
        b.put(KEY, i.to_bytes(4, "big"), b"x" * 4000)
    b.set_consistent_index(Index(3), Term(1))
    write = b.start_commit()
    assert write is not None
    b.put(KEY, b"later", b"y")
    with pytest.raises(DatabaseSpaceExceededError):
        write()
    assert b.pending_writes == 402 and b.consistent_index() == (3, 1)  # the index counts one
    assert b.get(KEY, b"later") == b"y" and b.get(KEY, (5).to_bytes(4, "big")) == b"x" * 4000
    assert b.start_commit() is not None  # the mutex was released


def test_copy_to_from_another_thread_is_consistent(tmp_path: Path) -> None:
    b = open_backend(tmp_path)
    for i in range(2000):
        b.put(KEY, i.to_bytes(4, "big"), b"x" * 100)
    b.set_consistent_index(Index(1999), Term(1))
    snap = tmp_path / "snap.db"
    result: list[tuple[int, int]] = []

    def copy() -> None:
        with open(snap, "wb") as f:
            result.append(b.copy_to(f))

    t = threading.Thread(target=copy)
    t.start()
    for i in range(2000, 2100):
        b.put(KEY, i.to_bytes(4, "big"), b"y")
        b.set_consistent_index(Index(i), Term(1))
        b.commit()
    t.join()
    b.close()
    copy_ci = result[0]
    restored = Backend.restore_from(str(tmp_path / "r" / "db"), str(snap))
    n = restored.count(KEY)
    # the copy holds exactly the state of the consistent index it reports (keys 0..index)
    assert n == copy_ci[0] + 1 and n >= 2000
    assert restored.consistent_index() == copy_ci
    restored.close()


def test_full_map_raises_space_exceeded_and_keeps_the_batch(tmp_path: Path) -> None:
    b = open_backend(tmp_path, map_size_bytes=1 << 20)
    b.put(KEY, b"small", b"1")
    b.commit()
    for i in range(400):
        b.put(KEY, i.to_bytes(4, "big"), b"x" * 4000)
    b.set_consistent_index(Index(9), Term(1))
    pending = b.pending_writes
    with pytest.raises(DatabaseSpaceExceededError) as e:
        b.commit()
    assert str(e.value) == "etcdserver: mvcc: database space exceeded"
    # nothing was lost from memory and nothing half-written reached the file
    assert b.pending_writes == pending and b.consistent_index() == (9, 1)
    assert b.get(KEY, (7).to_bytes(4, "big")) == b"x" * 4000
    for i in range(400):
        b.delete(KEY, i.to_bytes(4, "big"))
    b.commit()
    b.close()
    b = open_backend(tmp_path, map_size_bytes=1 << 20)
    assert b.range(KEY, b"") == [(b"small", b"1")] and b.consistent_index() == (9, 1)
    b.close()


@pytest.mark.parametrize("no_fsync", [False, True])
def test_unsafe_no_fsync_opens_lmdb_without_sync_and_commits_persist(
    tmp_path: Path, no_fsync: bool
) -> None:
    b = open_backend(tmp_path, unsafe_no_fsync=no_fsync)
    assert b._env is not None
    assert b._env.flags()["sync"] is (not no_fsync)
    b.put(KEY, b"k", b"v")
    b.set_consistent_index(Index(7), Term(2))
    b.commit()
    b.defrag()  # reopens the file: the mode must survive it
    assert b._env is not None
    assert b._env.flags()["sync"] is (not no_fsync)
    b.close()
    b = open_backend(tmp_path)
    assert b.get(KEY, b"k") == b"v" and b.consistent_index() == (Index(7), Term(2))
    b.close()
