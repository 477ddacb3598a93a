"""The LMDB backend: named buckets, batched commits, the consistent index.

Theory of operation
-------------------
One LMDB file (``path``, opened with ``subdir=False``; LMDB's lock file is ``path + "-lock"``)
holds named sub-databases, the "buckets" of etcd's bbolt backend (``key``, ``meta``, ``lease``,
``auth``, ...). The layout and encodings are described in
``docs/enhancements/0002-backend-layout.md``.

Writes (``put``/``delete``) do not touch LMDB: they go to an in-memory overlay, one ``dict``
per bucket, where ``None`` marks a deletion. ``commit()`` writes the whole overlay in ONE LMDB
write transaction and empties it::

    put/delete ──► overlay {bucket: {key: value | None}} ──commit()──► LMDB (one txn)
    get/range  ──► overlay, then a read txn over the last committed state

So reads see the writes of the uncommitted batch (read-your-writes, like etcd's buffered
read transaction) and a batch becomes durable atomically. ``maybe_commit()`` commits when
the batch holds ``batch_limit`` writes or is ``batch_interval_ms`` old (measured on the
injected ``clock``). It is called by the state machine only at an apply boundary: a commit
must never separate data from the consistent index that covers it. The server also calls it
from a timer so that an idle batch does not wait for the next write. ``start_commit()`` splits
a commit in two: the batch is cut at once (at the apply boundary) and the returned function
writes it later in a worker thread, while the caller goes on applying into the next batch;
the member commits this way, so that the LMDB transaction and its fsync never stall its
Ready loop (etcd commits its backend beside its apply loop too).

Crash consistency: LMDB is opened with ``sync=True, metasync=False``. The LMDB documentation
says that ``MDB_NOMETASYNC`` keeps atomicity, consistency and isolation and may only lose the
last committed transaction on a system crash, while ``MDB_NOSYNC`` may corrupt the file on a
system crash unless the file system preserves write order. A lost batch is harmless: the
consistent index (``set_consistent_index``) is written in the same transaction as the data,
so after any crash the file says exactly which raft entries it reflects and the server
replays the WAL from there. A process crash (SIGKILL) loses only the uncommitted overlay.
With ``unsafe_no_fsync`` (``--unsafe-no-fsync``) LMDB is opened with ``sync=False``: still
safe against a killed process (the kernel has the pages), not against a machine crash.

Threads: every method takes an internal lock for its in-memory work. ``commit()`` detaches
the batch under the lock and writes it WITHOUT the lock, so a commit (with its fsync) may run
in a worker thread while the event loop keeps reading (the detached batch stays readable
until it is on disk) and writing (into a fresh batch). Commits and whole-file operations are
serialized by a second mutex, always taken before the lock. The LMDB write transaction lives
only inside the commit (LMDB binds a write transaction to the thread that began it).
``copy_to`` copies from its own read transaction, so writers are not blocked while a
snapshot streams out.

Pinned reads: ``get_many_pinned`` returns large values as read-only memoryviews into LMDB's
memory map instead of copies, under a ``ReadLease``: its own read transaction, which keeps
the pages it read from being reused by later commits until ``release()``. Whoever holds the
views (the native Range encoder, in a worker thread) copies each value once, straight into
the answer, and neither the copy nor its memory costs the event loop anything. Closing the
file (``close``, ``defrag``, ``replace_with``) first waits for the leases to be released, so
that no view outlives the map.

Invariants
----------
- The overlay is empty after ``commit()`` returns normally.
- ``consistent_index()`` never decreases through ``set_consistent_index``.
- Keys of every bucket are at most ``max_key_size()`` (511) bytes: LMDB's limit.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, cast

import lmdb

from petcd.backend.errors import (
    BackendClosedError,
    DatabaseSpaceExceededError,
    UnknownBucketError,
)
from petcd.raft.types import Index, Term

KEY = "key"
META = "meta"
LEASE = "lease"
AUTH = "auth"
AUTH_USERS = "authUsers"
AUTH_ROLES = "authRoles"
MEMBERS = "members"
MEMBERS_REMOVED = "members_removed"
CLUSTER = "cluster"
ALARM = "alarm"
V2 = "v2store"  # the v2 tree (--enable-v2), docs/enhancements/0014-v2-api.md
BUCKETS: tuple[str, ...] = (
    KEY,
    META,
    LEASE,
    AUTH,
    AUTH_USERS,
    AUTH_ROLES,
    MEMBERS,
    MEMBERS_REMOVED,
    CLUSTER,
    ALARM,
    V2,
)

CONSISTENT_INDEX_KEY = b"consistent_index"
_CI = struct.Struct(">QQ")
# A batch cut from the overlay by _detach: (env, batch, its write count, consistent index set).
_Detached = tuple[Any, dict[str, dict[bytes, bytes | None]], int, bool]

MAP_SIZE_BYTES_DEFAULT = 8 * 1024 * 1024 * 1024
_MAX_DBS = 16
# get_many_pinned: values from this size on come as views (below it, a memoryview costs the
# loop thread more than the copy it saves: 0.6 us against 0.3 us for a 300-byte bytes).
PINNED_VALUE_MIN_BYTES = 4096
# Leases at most at once (each holds one of LMDB's 126 reader slots); past it, copies.
PINNED_LEASES_MAX = 16
# close() waits this long for leases still held; then it closes anyway (a lease not released
# by then was dropped without release(), so nobody reads through its views).
_LEASE_WAIT_S = 10.0


class ReadLease:
    """Keeps the memoryviews of one ``get_many_pinned`` valid: a read transaction of its own.
    ``release()`` (idempotent; also on garbage collection) ends the views (they raise
    ValueError from then on) and the transaction."""

    __slots__ = ("_backend", "_txn", "_views")

    def __init__(self, backend: Backend, txn: Any, views: list[memoryview]) -> None:
        self._backend: Backend | None = backend
        self._txn = txn
        self._views = views

    def release(self, *_: object) -> None:
        """Ends the lease (the ignored arguments let it be a future's done-callback)."""
        backend, self._backend = self._backend, None
        if backend is None:
            return
        for v in self._views:
            with contextlib.suppress(BufferError):  # still exported: readable, as the map is
                v.release()
        self._views = []
        self._txn.abort()
        backend._lease_released()

    def __del__(self) -> None:
        self.release()


def _open_env(path: str, map_size_bytes: int, *, sync: bool = True) -> lmdb.Environment:
    return lmdb.open(
        path,
        subdir=False,
        map_size=map_size_bytes,
        max_dbs=_MAX_DBS,
        sync=sync,
        metasync=False,
        readahead=False,
        writemap=False,
        lock=True,
    )


def read_consistent_index(path: str) -> tuple[Index, Term]:
    """The consistent index stored in a closed backend file (for example a snapshot's db)."""
    env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=_MAX_DBS)
    try:
        try:
            db = env.open_db(META.encode(), create=False)
        except lmdb.NotFoundError:
            return Index(0), Term(0)
        with env.begin(db=db) as txn:
            raw = txn.get(CONSISTENT_INDEX_KEY)
        if raw is None:
            return Index(0), Term(0)
        index, term = _CI.unpack(raw)
        return Index(index), Term(term)
    finally:
        env.close()


class Backend:
    """LMDB with named buckets and a batched, read-your-writes write path."""

    def __init__(
        self,
        path: str,
        *,
        map_size_bytes: int = MAP_SIZE_BYTES_DEFAULT,
        batch_interval_ms: int = 100,
        batch_limit: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        unsafe_no_fsync: bool = False,
    ) -> None:
        """``unsafe_no_fsync`` (etcd's ``--unsafe-no-fsync``, bbolt's NoSync): commits do not
        fsync (LMDB ``sync=False``). A killed process loses nothing more than with fsync, but a
        machine crash or power loss may lose commits or corrupt the file."""
        assert batch_interval_ms >= 0 and batch_limit >= 1
        self.path = path
        self._fsync = not unsafe_no_fsync
        self._map_size_bytes = map_size_bytes
        self._batch_interval_s = batch_interval_ms / 1000.0
        self._batch_limit = batch_limit
        self._clock = clock
        self._lock = threading.RLock()
        self._env: lmdb.Environment | None = None
        self._dbs: dict[str, Any] = {}
        self._rtxn: Any = None
        self._overlay: dict[str, dict[bytes, bytes | None]] = {b: {} for b in BUCKETS}
        # The batch being written by a commit in progress (readable until it is on disk).
        self._committing: dict[str, dict[bytes, bytes | None]] | None = None
        # Serializes commits and whole-file operations; taken before _lock, never after.
        self._commit_mutex = threading.Lock()
        self._pending = 0
        self._batch_started = 0.0
        self._ci: tuple[Index, Term] = (Index(0), Term(0))
        self._ci_dirty = False
        self.commits = 0
        self._leases = 0
        # Re-entrant: a lease dropped unreleased is released by the garbage collector, which
        # may run inside any allocation, also one made while this thread holds it.
        self._leases_cv = threading.Condition(threading.RLock())
        self._open()

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        env = _open_env(self.path, self._map_size_bytes, sync=self._fsync)
        with env.begin(write=True) as txn:
            self._dbs = {b: env.open_db(b.encode(), txn=txn) for b in BUCKETS}
        self._env = env
        if self._ci_dirty:
            return  # a newer index waits in the batch (defrag reopens with writes pending)
        raw = self.get(META, CONSISTENT_INDEX_KEY)
        if raw is None:
            self._ci = (Index(0), Term(0))
        else:
            index, term = _CI.unpack(raw)
            self._ci = (Index(index), Term(term))

    def _close_env(self) -> None:
        with self._leases_cv:
            self._leases_cv.wait_for(lambda: self._leases == 0, _LEASE_WAIT_S)
        if self._rtxn is not None:
            self._rtxn.abort()
            self._rtxn = None
        if self._env is not None:
            self._env.close()
            self._env = None

    def close(self) -> None:
        """Commit the pending batch and close the file. Idempotent."""
        with self._commit_mutex:
            if self._env is None:
                return
            self._commit_serialized()
            with self._lock:
                assert self._env is not None
                self._env.sync(True)
                self._close_env()

    @property
    def closed(self) -> bool:
        return self._env is None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_env(self) -> lmdb.Environment:
        env = self._env
        if env is None:
            raise BackendClosedError()
        return env

    def _db(self, bucket: str) -> Any:
        try:
            return self._dbs[bucket]
        except KeyError:
            raise UnknownBucketError(bucket) from None

    def _reader(self) -> Any:
        txn = self._rtxn
        if txn is None:
            txn = self._require_env().begin(buffers=False)
            self._rtxn = txn
        return txn

    # -- writes ------------------------------------------------------------------------------

    def put(self, bucket: str, key: bytes, value: bytes) -> None:
        with self._lock:
            overlay = self._overlay[bucket] if bucket in self._overlay else self._unknown(bucket)
            if self._pending == 0 and not self._ci_dirty:
                self._batch_started = self._clock()
            overlay[key] = value
            self._pending += 1

    def delete(self, bucket: str, key: bytes) -> None:
        with self._lock:
            overlay = self._overlay[bucket] if bucket in self._overlay else self._unknown(bucket)
            if self._pending == 0 and not self._ci_dirty:
                self._batch_started = self._clock()
            overlay[key] = None
            self._pending += 1

    def _unknown(self, bucket: str) -> dict[bytes, bytes | None]:
        raise UnknownBucketError(bucket)

    def set_consistent_index(self, index: Index, term: Term) -> None:
        """Record the last applied raft entry in the current batch (with the data it covers).

        The value is written into ``meta`` by the commit that writes the batch, so it costs
        nothing per call and is always in the same LMDB transaction as the data.
        """
        with self._lock:
            assert index >= self._ci[0], (index, self._ci)
            if not self._ci_dirty and self._pending == 0:
                self._batch_started = self._clock()
            self._ci = (index, term)
            self._ci_dirty = True

    def consistent_index(self) -> tuple[Index, Term]:
        """The last applied raft (index, term), including the uncommitted batch."""
        return self._ci

    @property
    def pending_writes(self) -> int:
        """Writes in the uncommitted batch (a changed consistent index counts as one)."""
        return self._pending + (1 if self._ci_dirty else 0)

    def commit_due(self) -> bool:
        """Whether ``maybe_commit`` would commit now (cheap: lets a caller skip a thread hop)."""
        with self._lock:
            if self._pending == 0 and not self._ci_dirty:
                return False
            return (
                self._pending >= self._batch_limit
                or self._clock() - self._batch_started >= self._batch_interval_s
            )

    def maybe_commit(self) -> bool:
        """Commit if the batch is full or old enough. Call only at an apply boundary."""
        due = self.commit_due()
        if due:
            self.commit()
        return due

    def commit(self) -> None:
        """Write the pending batch in one LMDB transaction (a force commit).

        The batch is detached under the lock and written without it: other threads keep
        reading (they see the batch being committed) and writing (into a new batch) while
        the LMDB transaction and its fsync run.
        """
        with self._commit_mutex:
            self._commit_serialized()

    def start_commit(self) -> Callable[[], None] | None:
        """Detach the pending batch now and return the function that writes it, for a
        caller that wants the LMDB transaction and its fsync off its own thread.

        Call it where ``maybe_commit`` may be called (at an apply boundary): the batch is
        cut here. The returned function may run in any thread; until it returns, reads see
        the batch and writes go into a new one, as during ``commit()``, and other commits
        wait for it. Returns None when nothing is pending or a commit is running (then try
        again later).
        """
        if not self._commit_mutex.acquire(blocking=False):
            return None
        try:
            detached = self._detach()
        except BaseException:
            self._commit_mutex.release()
            raise
        if detached is None:
            self._commit_mutex.release()
            return None

        def write() -> None:
            try:
                self._write_detached(detached)
            finally:
                self._commit_mutex.release()

        return write

    def _commit_serialized(self) -> None:
        detached = self._detach()
        if detached is not None:
            self._write_detached(detached)

    def _detach(self) -> _Detached | None:
        """The pending batch, now readable as ``_committing``; None if there is none."""
        with self._lock:
            env = self._require_env()
            if self._pending == 0 and not self._ci_dirty:
                return None
            ci_dirty = self._ci_dirty
            if ci_dirty:
                self._overlay[META][CONSISTENT_INDEX_KEY] = _CI.pack(*self._ci)
            batch = self._overlay
            pending = self._pending
            self._committing = batch
            self._overlay = {b: {} for b in BUCKETS}
            self._pending = 0
            self._ci_dirty = False
            if self._rtxn is not None:
                # A live reader would pin the pages this commit frees.
                self._rtxn.abort()
                self._rtxn = None
        return env, batch, pending, ci_dirty

    def _write_detached(self, detached: _Detached) -> None:
        env, batch, pending, ci_dirty = detached
        try:
            with env.begin(write=True) as txn:
                for bucket, overlay in batch.items():
                    if not overlay:
                        continue
                    db = self._dbs[bucket]
                    puts = [(k, v) for k, v in sorted(overlay.items()) if v is not None]
                    if puts:
                        cursor = txn.cursor(db=db)
                        cursor.putmulti(puts, append=False)
                    if len(puts) != len(overlay):
                        for k, v in overlay.items():
                            if v is None:
                                txn.delete(k, db=db)
        except BaseException as e:
            with self._lock:
                # Put the batch back, under the writes that arrived meanwhile.
                for bucket, overlay in batch.items():
                    overlay.update(self._overlay[bucket])
                self._overlay = batch
                self._committing = None
                self._pending += pending
                self._ci_dirty = self._ci_dirty or ci_dirty
            if isinstance(e, lmdb.MapFullError):
                raise DatabaseSpaceExceededError() from None
            raise
        with self._lock:
            self._committing = None
            if self._rtxn is not None:
                self._rtxn.abort()
                self._rtxn = None
            self.commits += 1

    # -- reads -------------------------------------------------------------------------------

    def get(self, bucket: str, key: bytes) -> bytes | None:
        with self._lock:
            overlay = self._overlay[bucket] if bucket in self._overlay else self._unknown(bucket)
            if key in overlay:
                return overlay[key]
            committing = self._committing
            if committing is not None and key in committing[bucket]:
                return committing[bucket][key]
            result: bytes | None = self._reader().get(key, db=self._dbs[bucket])
            return result

    def get_many(self, bucket: str, keys: Sequence[bytes]) -> list[bytes | None]:
        """``get`` of each key, in order, under one lock, with one look-up call into LMDB for
        all the keys not written since the last commit (py-lmdb lets go of the GIL in every
        call: one call per key costs about twice as much while other threads run)."""
        with self._lock:
            overlay = self._overlay[bucket] if bucket in self._overlay else self._unknown(bucket)
            committing = self._committing
            pending = committing[bucket] if committing is not None else {}
            cursor = self._reader().cursor(db=self._dbs[bucket])
            if not overlay and not pending:
                found = cursor.getmulti(keys)
                if len(found) == len(keys):  # all there: in the order asked
                    return [v for _, v in found]
            else:
                found = cursor.getmulti([k for k in keys if k not in overlay and k not in pending])
            stored = dict(found)
            return [
                overlay[k] if k in overlay else pending[k] if k in pending else stored.get(k)
                for k in keys
            ]

    def get_many_pinned(
        self, bucket: str, keys: Sequence[bytes]
    ) -> tuple[list[bytes | memoryview | None], ReadLease | None]:
        """``get_many``, but when the stored values are large (the first one read from LMDB
        has ``PINNED_VALUE_MIN_BYTES`` or more), those read from LMDB come as read-only
        memoryviews into its map, valid until the returned lease is released (see the module
        docstring). Values of the batch not yet on disk stay bytes. Without a lease (small
        values, or ``PINNED_LEASES_MAX`` leases held), exactly ``get_many``'s answer."""
        with self._lock:
            if len(keys) < 2 or self._leases >= PINNED_LEASES_MAX:
                return self._get_many_copied(bucket, keys), None
            overlay = self._overlay[bucket] if bucket in self._overlay else self._unknown(bucket)
            committing = self._committing
            pending = committing[bucket] if committing is not None else {}
            first = next((k for k in keys if k not in overlay and k not in pending), None)
            if first is None:
                return self._get_many_copied(bucket, keys), None
            db = self._dbs[bucket]
            txn = self._require_env().begin(buffers=True)
            probe = txn.get(first, db=db)
            if probe is None or len(probe) < PINNED_VALUE_MIN_BYTES:
                txn.abort()
                return self._get_many_copied(bucket, keys), None
            stored = [k for k in keys if k not in overlay and k not in pending]
            pairs: list[tuple[memoryview, memoryview]] = txn.cursor(db=db).getmulti(stored)
            if len(pairs) == len(stored):  # all there: in the order asked
                found = dict(zip(stored, [v for _, v in pairs], strict=True))
            else:
                found = {bytes(k): v for k, v in pairs}
            with self._leases_cv:
                self._leases += 1
            lease = ReadLease(self, txn, [mv for pair in pairs for mv in pair])
            values: list[bytes | memoryview | None] = [
                overlay[k] if k in overlay else pending[k] if k in pending else found.get(k)
                for k in keys
            ]
            return values, lease

    def _get_many_copied(
        self, bucket: str, keys: Sequence[bytes]
    ) -> list[bytes | memoryview | None]:
        return cast(list[bytes | memoryview | None], self.get_many(bucket, keys))

    def _lease_released(self) -> None:
        with self._leases_cv:
            self._leases -= 1
            self._leases_cv.notify_all()

    def _changed(
        self, bucket: str, start: bytes, end: bytes | None
    ) -> list[tuple[bytes, bytes | None]]:
        # Uncommitted changes in [start, end), newest layer winning, in key order.
        layers = [self._overlay[bucket]]
        if self._committing is not None:
            layers.insert(0, self._committing[bucket])
        merged: dict[bytes, bytes | None] = {}
        for layer in layers:
            for k, v in layer.items():
                if k >= start and (end is None or k < end):
                    merged[k] = v
        return sorted(merged.items())

    def range(
        self, bucket: str, start: bytes, end: bytes | None = None, limit: int = 0
    ) -> list[tuple[bytes, bytes]]:
        """Items with ``start <= key < end`` (``end=None``: to the end), in key order.

        ``limit > 0`` caps the number of items returned.
        """
        with self._lock:
            db = self._db(bucket)
            changed = self._changed(bucket, start, end)
            out: list[tuple[bytes, bytes]] = []
            cursor: Any = self._reader().cursor(db=db)
            on_disk = cursor.set_range(start)
            ci = 0
            while True:
                if limit > 0 and len(out) >= limit:
                    break
                disk_key: bytes | None = None
                if on_disk:
                    disk_key = cursor.key()
                    if end is not None and disk_key >= end:
                        on_disk = False
                        disk_key = None
                if ci < len(changed) and (disk_key is None or changed[ci][0] <= disk_key):
                    k, v = changed[ci]
                    ci += 1
                    if disk_key == k:
                        on_disk = cursor.next()
                    if v is not None:
                        out.append((k, v))
                    continue
                if disk_key is None:
                    break
                out.append((disk_key, cursor.value()))
                on_disk = cursor.next()
            return out

    def iterate(
        self, bucket: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Iterate over a snapshot of a bucket (batch included) without holding the lock.

        For long scans (rebuilding the key index at start). Writes made after the call are not
        seen.
        """
        with self._lock:
            env = self._require_env()
            db = self._db(bucket)
            changed = self._changed(bucket, start, end)
            txn: Any = env.begin(db=db, buffers=False)
        return self._merge(txn, changed, start, end)

    @staticmethod
    def _merge(
        txn: Any,
        changed: list[tuple[bytes, bytes | None]],
        start: bytes,
        end: bytes | None,
    ) -> Iterator[tuple[bytes, bytes]]:
        try:
            cursor = txn.cursor()
            positioned = cursor.set_range(start)
            changed_keys = [k for k, _ in changed]
            ci = 0
            if positioned:
                for k, v in cursor.iternext(keys=True, values=True):
                    if end is not None and k >= end:
                        break
                    while ci < len(changed) and changed[ci][0] < k:
                        ck, cv = changed[ci]
                        ci += 1
                        if cv is not None:
                            yield ck, cv
                    if ci < len(changed) and changed[ci][0] == k:
                        ck, cv = changed[ci]
                        ci += 1
                        if cv is not None:
                            yield ck, cv
                        continue
                    yield k, v
            else:
                ci = bisect.bisect_left(changed_keys, start)
            for ck, cv in changed[ci:]:
                if cv is not None:
                    yield ck, cv
        finally:
            txn.abort()

    def count(self, bucket: str) -> int:
        """Number of committed + pending items in a bucket (pending deletions subtracted)."""
        with self._lock:
            db = self._db(bucket)
            reader = self._reader()
            n: int = reader.stat(db)["entries"]
            for k, v in self._changed(bucket, b"", None):
                on_disk = reader.get(k, db=db) is not None
                if v is None and on_disk:
                    n -= 1
                elif v is not None and not on_disk:
                    n += 1
            return n

    # -- whole-file operations ---------------------------------------------------------------

    def size_bytes(self) -> int:
        """Size of the database file (etcd's dbSize)."""
        with self._lock:
            self._require_env()
            return os.path.getsize(self.path)

    def size_in_use_bytes(self) -> int:
        """Bytes of the pages in use by data (etcd's dbSizeInUse): file size minus free pages."""
        with self._lock:
            env = self._require_env()
            main = env.stat()
            psize: int = main["psize"]
            pages = 2 + main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]
            with env.begin() as txn:
                for db in self._dbs.values():
                    st = txn.stat(db)
                    pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            return pages * psize

    def copy_to(self, fileobj: IO[bytes]) -> tuple[Index, Term]:
        """Write a consistent, compacted copy of the committed database to ``fileobj``.

        The pending batch is committed first. Returns the consistent index the copy holds.
        Writers are not blocked while the copy is written.
        """
        with self._commit_mutex:
            self._commit_serialized()
            with self._lock:
                env = self._require_env()
                txn = env.begin()
                raw = txn.get(CONSISTENT_INDEX_KEY, db=self._dbs[META])
        index, term = _CI.unpack(raw) if raw is not None else (0, 0)
        ci = (Index(index), Term(term))
        try:
            fileobj.flush()
            env.copyfd(fileobj.fileno(), compact=True, txn=txn)
        finally:
            txn.abort()
        return ci

    def defrag(self) -> None:
        """Rewrite the file compactly (etcd's defrag): copy, swap, reopen."""
        with self._commit_mutex, self._lock:
            self._commit_serialized()
            env = self._require_env()
            tmp = self.path + ".defrag"
            with open(tmp, "wb") as f:
                env.copyfd(f.fileno(), compact=True)
                f.flush()
                os.fsync(f.fileno())
            self._close_env()
            os.replace(tmp, self.path)
            _fsync_dir(self.path)
            self._open()

    def replace_with(self, snapshot_db_path: str) -> tuple[Index, Term]:
        """Replace the whole database by a copy of ``snapshot_db_path`` (a received snapshot).

        The pending batch is discarded. Returns the consistent index of the new database.
        """
        with self._commit_mutex, self._lock:
            self._require_env()
            for overlay in self._overlay.values():
                overlay.clear()
            self._pending = 0
            self._ci_dirty = False
            self._close_env()
            _install_copy(snapshot_db_path, self.path)
            self._open()
            return self._ci

    @classmethod
    def restore_from(cls, path: str, snapshot_db_path: str, **options: Any) -> Backend:
        """Install a copy of ``snapshot_db_path`` at ``path`` (not open) and open it."""
        _install_copy(snapshot_db_path, path)
        return cls(path, **options)


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install_copy(source: str, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".restore"
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    lock_path = path + "-lock"
    if os.path.exists(lock_path):
        os.remove(lock_path)
    _fsync_dir(path)
