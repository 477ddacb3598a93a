"""The MVCC key-value store: etcd's revisions, ranges, writes, transactions and compaction.

Theory of operation
-------------------
State: the backend's ``key`` bucket holds every revision of every key (one record per
revision, keyed by the revision so that history is ordered), the in-memory ``KeyIndex`` maps
each key to its revisions, and ``current_revision`` is the main revision of the last write.

A write request (Put, DeleteRange, Txn) is applied as one *write transaction*: it begins at
``current_revision`` (``begin``); every change it makes gets revision ``(begin + 1, sub)`` with
``sub`` counting the changes 0, 1, 2, ...; when it ends, ``current_revision`` becomes
``begin + 1`` if anything changed and stays ``begin`` otherwise (a delete that deletes nothing
and a read-only txn do not advance it). Reads inside the transaction see its earlier writes.

Validation before change: ``validate_request`` (the checks etcd does in its gRPC layer:
empty keys, ignore_value/ignore_lease misuse, too many ops, duplicate keys in a txn, sort
options) and the state checks etcd does in its applier (ignore_value on a missing key, lease
existence, the revisions of ranges inside a txn) all run before the first change. A request
that fails changes nothing; its raft entry is still recorded as applied (the consistent index
is written in every case), exactly as etcd does.

Transactions follow etcd 3.5's applier: the compare results of the whole txn tree along the
chosen branches are computed first, against the state before the txn (``_compare_path``),
then the state checks run along that path in etcd's order (every put first, then every range
revision), then the ops execute in order. A nested txn's
response header is empty (revision 0), as in etcd.

Compaction at R: reads below R fail with CompactedError at once; the work is done later in
small steps by ``compaction_step``, so that a big compaction never stalls writes: first the
index drops what R makes unreachable, a slice of the keys (those of R's time) per step, which
no read at R or later can tell; then, with the set of revisions kept complete, the backend
records are deleted. ``meta`` holds
``scheduledCompactRev``/``finishedCompactRev``; a compaction interrupted by a restart is
resumed on open.

Compaction hashes (etcd's ``HashStorage``, for ``--experimental-compact-hash-check-enabled``):
the deleting pass walks every record up to R in revision order, so it also hashes them, as
HashKV(R) would have just before the compaction (compact revision: the previous compaction's).
Records up to R never change meanwhile, so every member records the same value, whatever its
pace. The record, ``HashKVResult(hash, compact_revision=previous, hash_revision=R)``, is kept
in memory only (the newest ``HASHES_MAX``, lost at restart, as etcd's), and only when the
previous compaction had finished before this one was scheduled: otherwise some records at or
below the previous compaction may be missing from the walk (etcd #15919). HashKV(R) answers
the record while it is kept (etcd's HashByRev), so that peers compare like with like.

What this module never does: I/O other than through the Backend, asyncio, threads, clocks.
It is not thread-safe: the server calls it from one thread at a time.

Invariants
----------
- ``compact_revision <= current_revision`` (``-1`` before the first compaction, as etcd).
- Every revision in the index has its record in the ``key`` bucket.
- The consistent index is set after every applied request, in the same backend batch.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from petcd.backend import BUCKETS, CONSISTENT_INDEX_KEY, KEY, META, V2, Backend, ReadLease
from petcd.mvcc import crc32c
from petcd.mvcc.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    InvalidSortOptionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    MvccError,
    TooManyOpsError,
    ValueProvidedError,
)
from petcd.mvcc.key_index import SUB_BITS, SUB_MASK, KeyIndex, keep_of, new_revs, with_rev
from petcd.mvcc.requests import (
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    HashKVResult,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    WriteRequest,
    WriteResponse,
)
from petcd.raft.types import Index, Term

MAX_TXN_OPS_DEFAULT = 128
COMPACTION_BATCH_LIMIT_DEFAULT = 1000  # etcd's --experimental-compaction-batch-limit
HASHES_MAX = 10  # compaction hashes kept (etcd's hashStorageMaxSize)
SCHEDULED_COMPACT_KEY = b"scheduledCompactRev"
FINISHED_COMPACT_KEY = b"finishedCompactRev"

_HDR = struct.Struct(">qqqqq")  # create_revision, mod_revision, version, lease, len(key)
_HDR_SIZE = _HDR.size
# For readers that unpack stored records in place (the etcd export): the header's fields in
# this order, then the key, then the value.
RECORD_HEADER = _HDR
_REVKEY = struct.Struct(">QcQ")
_Q = struct.Struct(">q")
# Index keys compacted per compaction step, per backend record a step may delete: so that both
# kinds of step take about as long (1.1 us per index key, 1.8 us per record, measured).
_INDEX_KEYS_PER_RECORD = 2
_SORT_ORDERS = frozenset(int(v) for v in SortOrder)
_SORT_TARGETS = frozenset(int(v) for v in SortTarget)


class LeaseHook(Protocol):
    """What the store needs from the lessor (petcd.lease): existence and key attachment."""

    def lease_exists(self, lease_id: int) -> bool: ...

    def attach(self, lease_id: int, key: bytes) -> None: ...

    def detach(self, lease_id: int, key: bytes) -> None: ...

    def lease_of(self, key: bytes) -> int:
        """The lease ``key`` is attached to, 0 if none."""
        ...


def encode_kv(kv: KeyValue) -> bytes:
    key = kv.key
    return (
        _HDR.pack(kv.create_revision, kv.mod_revision, kv.version, kv.lease, len(key))
        + key
        + kv.value
    )


def decode_kv(raw: bytes) -> KeyValue:
    create, mod, version, lease, n = _HDR.unpack_from(raw)
    end = _HDR_SIZE + n
    return KeyValue(raw[_HDR_SIZE:end], create, mod, version, raw[end:], lease)


def add_records(add: Callable[..., Any], records: Iterable[bytes]) -> None:
    """Call ``add(key=, create_revision=, mod_revision=, version=, value=, lease=)`` with the
    fields of each stored KeyValue record (``KVStore.range_records``): a response builder
    fills its messages straight from the records, without a KeyValue object for each."""
    unpack = _HDR.unpack_from
    h = _HDR_SIZE
    for raw in records:
        create, mod, version, lease, n = unpack(raw)
        end = h + n
        add(
            key=raw[h:end],
            create_revision=create,
            mod_revision=mod,
            version=version,
            value=raw[end:],
            lease=lease,
        )


def rev_key(rev: int) -> bytes:
    """The backend key of a packed revision (negative = tombstone: a trailing ``t``)."""
    if rev < 0:
        r = -rev
        return _REVKEY.pack(r >> SUB_BITS, b"_", r & SUB_MASK) + b"t"
    return _REVKEY.pack(rev >> SUB_BITS, b"_", rev & SUB_MASK)


def parse_rev_key(k: bytes) -> int:
    main, _, sub = _REVKEY.unpack_from(k)
    rev: int = (main << SUB_BITS) | sub
    return -rev if len(k) > 17 else rev


def _interval(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None, bool]:
    """etcd's range_end convention -> (start, end or None for unbounded, single key?)."""
    if not range_end:
        return key, None, True
    if range_end == b"\x00":
        return key, None, False
    return key, range_end, False


# -- request validation (etcd's gRPC-layer checks) ------------------------------------------


def validate_request(
    req: RangeRequest | WriteRequest, max_txn_ops: int = MAX_TXN_OPS_DEFAULT
) -> None:
    """Raise the MvccError etcd's gRPC layer returns for a malformed request, else nothing.

    Safe to call before proposing (it looks at the request only); ``apply`` calls it too.
    """
    if isinstance(req, RangeRequest):
        _check_range(req)
    elif isinstance(req, PutRequest):
        _check_put(req)
    elif isinstance(req, DeleteRangeRequest):
        if not req.key:
            raise EmptyKeyError()
    elif isinstance(req, TxnRequest):
        _check_txn(req, max_txn_ops)
        for ops in (req.success, req.failure):
            # One op alone collides with nothing, unless it is a txn with branches of its own.
            if len(ops) > 1 or (ops and ops[0].request_txn is not None):
                _check_intervals(ops)
    else:  # pragma: no cover - typing makes this unreachable
        raise TypeError(f"not an mvcc request: {req!r}")


def _one_key_now(r: RangeRequest) -> bool:
    """A Range of one key at the current revision with no option that changes its answer
    (``limit`` and ``serializable`` do not, for one key)."""
    return bool(
        not r.range_end
        and r.key
        and r.revision == 0
        and r.sort_order == 0
        and r.sort_target == 0
        and not (r.keys_only or r.count_only or r.min_mod_revision)
        and not (r.max_mod_revision or r.min_create_revision or r.max_create_revision)
    )


def _check_range(r: RangeRequest) -> None:
    if not r.key:
        raise EmptyKeyError()
    # etcd sorts nothing for an order out of its enum. A target out of it with an order that
    # sorts (NONE sorts ascending for a target other than KEY) makes etcd sort with no sorter
    # and crash; petcd refuses the request instead.
    if r.sort_target not in _SORT_TARGETS and r.sort_order in _SORT_ORDERS:
        raise InvalidSortOptionError()


def _check_put(p: PutRequest) -> None:
    if not p.key:
        raise EmptyKeyError()
    if p.ignore_value and p.value:
        raise ValueProvidedError()
    if p.ignore_lease and p.lease:
        raise LeaseProvidedError()


def _check_txn(t: TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(t.compare), len(t.success), len(t.failure))
    if opc > max_txn_ops:
        raise TooManyOpsError()
    for c in t.compare:
        if not c.key:
            raise EmptyKeyError()
    for op in (*t.success, *t.failure):
        _check_op(op, max_txn_ops - opc)


def _check_op(op: RequestOp, max_txn_ops: int) -> None:
    if op.request_range is not None:
        _check_range(op.request_range)
    elif op.request_put is not None:
        _check_put(op.request_put)
    elif op.request_delete_range is not None:
        if not op.request_delete_range.key:
            raise EmptyKeyError()
    elif op.request_txn is not None:
        _check_txn(op.request_txn, max_txn_ops)
    else:
        raise KeyNotFoundError()  # an empty op: etcd answers ErrGRPCKeyNotFound


def _del_hits(dels: list[tuple[bytes, bytes | None]], k: bytes) -> bool:
    # etcd's interval tree of "string affine" intervals: a delete [key, range_end) or the
    # point [key, key+"\x00"); a put at k collides iff begin <= k < end. An end of "\x00"
    # (all keys >= key) gives an interval that contains nothing: etcd does not special-case it.
    for begin, end in dels:
        if end is None:
            if begin == k:
                return True
        elif begin <= k < end:
            return True
    return False


def _check_intervals(
    ops: Sequence[RequestOp],
) -> tuple[set[bytes], list[tuple[bytes, bytes | None]]]:
    """etcd's checkIntervals: a txn level may not put a key twice or put into a delete."""
    dels: list[tuple[bytes, bytes | None]] = []
    for op in ops:
        d = op.request_delete_range
        if d is not None:
            dels.append((d.key, d.range_end if d.range_end else None))
    puts: set[bytes] = set()
    for op in ops:
        t = op.request_txn
        if t is None:
            continue
        puts_then, dels_then = _check_intervals(t.success)
        puts_else, dels_else = _check_intervals(t.failure)
        for k in puts_then:
            if k in puts or _del_hits(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _del_hits(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        p = op.request_put
        if p is None:
            continue
        if p.key in puts or _del_hits(dels, p.key):
            raise DuplicateKeyError()
        puts.add(p.key)
    return puts, dels


# -- the store -------------------------------------------------------------------------------


class _WriteTxn:
    __slots__ = ("begin", "changes")

    def __init__(self, begin: int) -> None:
        self.begin = begin
        self.changes: list[KeyValue] = []

    def view(self) -> int:
        return self.begin + 1 if self.changes else self.begin


class _Compaction:
    __slots__ = (
        "hash",
        "index_keys",
        "index_position",
        "keep",
        "position",
        "prev_finished",
        "prev_revision",
        "revision",
        "started",
    )

    def __init__(
        self,
        revision: int,
        keep: set[int],
        index_keys: list[bytes] | None,
        *,
        prev_revision: int,
        prev_finished: bool,
        started: float,
    ) -> None:
        self.revision = revision
        self.keep = keep
        # The index's keys when the compaction started, while the index is being compacted
        # (``keep`` is complete only once they are all done); then None.
        self.index_keys = index_keys
        self.index_position = 0
        self.position = b""
        # The compaction hash so far (module docstring): the records walked up to ``position``.
        self.prev_revision = prev_revision
        self.prev_finished = prev_finished
        self.hash = crc32c.update(0, KEY.encode())
        self.started = started


@dataclass(frozen=True, slots=True)
class CompactionDone:
    """A compaction that finished deleting (``KVStore.take_finished_compactions``)."""

    revision: int
    hash: HashKVResult  # its compaction hash
    stored: bool  # False: not recorded, the previous compaction had not finished
    took_s: float  # by the store's clock (0 without one)


def _hashed(rev: int, lower: int, keep: set[int]) -> bool:
    """Whether HashKV with compact revision ``lower - 1`` hashes the record of ``rev``: not one
    at or below that compaction which it no longer keeps (whether or not it is deleted yet)."""
    return abs(rev) >= lower or rev in keep


class _TxnSim:
    """Which keys are live at each point of a txn's execution, for the pre-execution checks."""

    __slots__ = ("_created", "_deleted", "_index")

    def __init__(self, index: KeyIndex) -> None:
        self._index = index
        self._created: set[bytes] = set()
        self._deleted: list[tuple[bytes, bytes | None, bool]] = []

    def _covered(self, key: bytes) -> bool:
        for start, end, single in self._deleted:
            if single:
                if key == start:
                    return True
            elif key >= start and (end is None or key < end):
                return True
        return False

    def live(self, key: bytes) -> bool:
        if key in self._created:
            return True
        return not self._covered(key) and self._index.latest(key) is not None

    def put(self, key: bytes) -> None:
        self._created.add(key)

    def delete(self, d: DeleteRangeRequest) -> None:
        self._deleted.append(_interval(d.key, d.range_end))
        self._created = {k for k in self._created if not self._covered(k)}


def _sort_key(target: int) -> Callable[[KeyValue], bytes | int]:
    if target == SortTarget.KEY:
        return lambda kv: kv.key
    if target == SortTarget.VERSION:
        return lambda kv: kv.version
    if target == SortTarget.CREATE:
        return lambda kv: kv.create_revision
    if target == SortTarget.MOD:
        return lambda kv: kv.mod_revision
    return lambda kv: kv.value


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    target = c.target
    result: int
    if target == CompareTarget.VALUE:
        a, b = kv.value, c.value
        result = (a > b) - (a < b)
    else:
        if target == CompareTarget.CREATE:
            x, y = kv.create_revision, c.create_revision
        elif target == CompareTarget.MOD:
            x, y = kv.mod_revision, c.mod_revision
        elif target == CompareTarget.VERSION:
            x, y = kv.version, c.version
        elif target == CompareTarget.LEASE:
            x, y = kv.lease, c.lease
        else:
            x = y = 0
        result = (x > y) - (x < y)
    return _holds(c.result, result)


def _holds(r: int, result: int) -> bool:
    """Whether a comparison that gave ``result`` (-1, 0, 1) satisfies the compare result
    ``r``."""
    if r == CompareResult.EQUAL:
        return result == 0
    if r == CompareResult.NOT_EQUAL:
        return result != 0
    if r == CompareResult.GREATER:
        return result > 0
    if r == CompareResult.LESS:
        return result < 0
    return True


class KVStore:
    """etcd's mvcc store over a Backend (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        *,
        lessor: LeaseHook | None = None,
        max_txn_ops: int = MAX_TXN_OPS_DEFAULT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        # etcd's mvcc counters (etcd_mvcc_put_total ...): ops seen since start, ranges in
        # txns included; petcd.server.metrics renders them.
        self.puts = self.deletes = self.ranges = self.txns = 0
        self._backend = backend
        self._lessor = lessor
        self._max_txn_ops = max_txn_ops
        self._index = KeyIndex()
        self._current_rev = 1
        self._compact_rev = -1
        self._compaction: _Compaction | None = None
        self._clock = clock
        # Compaction hashes, oldest first (module docstring); in memory only.
        self._hashes: list[HashKVResult] = []
        self._finished: list[CompactionDone] = []
        # HashKV walks started that have not yet read the index's revision lists
        # (``start_hash_kv``): they read them from another thread, so a compaction's index
        # pass waits meanwhile.
        self._index_readers = 0
        self._index_readers_lock = threading.Lock()
        self._hdr = ResponseHeader(revision=0)
        # The header of every top-level response: ``_own_header`` (the revision only) unless
        # the server installed its own (``set_header_source``).
        self._header: Callable[[int], ResponseHeader] = self._own_header
        self._restore()

    # -- open ----------------------------------------------------------------------------

    def _restore(self) -> None:
        backend = self._backend
        revs: dict[bytes, int | bytes | list[int]] = {}
        bases: dict[bytes, tuple[int, int]] = {}  # see KeyIndex.from_revisions
        lists: set[bytes] = set()
        leases: dict[bytes, int] = {}
        track_leases = self._lessor is not None
        max_main = 0
        hdr_unpack = _HDR.unpack_from
        rev_unpack = _REVKEY.unpack_from
        for k, v in backend.iterate(KEY):
            main, _, sub = rev_unpack(k)
            rev = (main << SUB_BITS) | sub
            create, _, version, lease, n = hdr_unpack(v)
            key = v[_HDR_SIZE : _HDR_SIZE + n]
            if len(k) > 17:
                rev = -rev
                if track_leases:
                    leases.pop(key, None)
            elif track_leases:
                if lease:
                    leases[key] = lease
                else:
                    leases.pop(key, None)
            lst = revs.get(key)
            if lst is None:
                revs[key] = rev
                if version > 1 and rev > 0:
                    bases[key] = (create, version)
            else:
                more = new_revs(lst, rev) if type(lst) is int else with_rev(lst, rev)  # type: ignore[arg-type]
                revs[key] = more
                if type(more) is list:
                    lists.add(key)
            max_main = main
        self._index = KeyIndex.from_revisions(revs, bases, lists)
        scheduled = backend.get(META, SCHEDULED_COMPACT_KEY)
        finished = backend.get(META, FINISHED_COMPACT_KEY)
        self._compact_rev = _Q.unpack(scheduled)[0] if scheduled is not None else -1
        self._current_rev = max(1, max_main, self._compact_rev)
        self._compaction = None
        if self._compact_rev > 0:
            keep = self._index.compact(self._compact_rev)
            finished_rev = _Q.unpack(finished)[0] if finished is not None else -1
            if finished_rev != self._compact_rev:
                # Resumed; its hash is not recorded (some records may be gone already).
                self._compaction = _Compaction(
                    self._compact_rev,
                    keep,
                    None,
                    prev_revision=finished_rev,
                    prev_finished=False,
                    started=self._now(),
                )
        if self._lessor is not None:
            for key, lease in leases.items():
                self._lessor.attach(lease, key)

    def reload(self) -> None:
        """Rebuild the in-memory state from the backend (after ``Backend.replace_with``).

        The compaction hashes stay (as etcd's, which its Restore keeps)."""
        self._restore()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else 0.0

    # -- accessors -----------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def current_revision(self) -> int:
        return self._current_rev

    @property
    def compact_revision(self) -> int:
        """The last compaction's revision; -1 if never compacted (etcd's compactMainRev)."""
        return self._compact_rev

    def consistent_index(self) -> tuple[Index, Term]:
        return self._backend.consistent_index()

    def live_key_count(self) -> int:
        """Live keys at the newest revision (etcd_debugging_mvcc_keys_total)."""
        return self._index.count_live(b"", None)

    def key_count(self) -> int:
        """Keys in the index (live or with history), for metrics."""
        return len(self._index)

    # -- reads ---------------------------------------------------------------------------

    def _load(self, rev: int) -> KeyValue:
        raw = self._backend.get(KEY, rev_key(rev))
        assert raw is not None, f"revision {rev >> SUB_BITS}:{rev & SUB_MASK} not in backend"
        return decode_kv(raw)

    def set_header_source(self, header: Callable[[int], ResponseHeader]) -> None:
        """Build the header of every top-level response with ``header(revision)`` (the
        server's full header: cluster, member, revision, term) instead of a bare revision, so
        that the server need not copy each response to replace its header. Nested txn
        responses keep their empty header."""
        self._header = header

    def _own_header(self, revision: int) -> ResponseHeader:
        # Headers are frozen: share one per revision instead of building one per response.
        hdr = self._hdr
        if hdr.revision != revision:
            hdr = self._hdr = ResponseHeader(revision=revision)
        return hdr

    def range(self, req: RangeRequest) -> RangeResponse:
        """A Range at the current revision or a past one (``req.revision``)."""
        self.ranges += 1
        if _one_key_now(req):
            # The common single-key read at the current revision.
            latest = self._index.latest(req.key)
            hdr = self._header(self._current_rev)
            if latest is None:
                return RangeResponse(hdr, (), False, 0)
            return RangeResponse(hdr, (self._load(latest),), False, 1)
        _check_range(req)
        return self._range(req, self._current_rev, self._header)

    def range_one(self, key: bytes) -> tuple[ResponseHeader, bytes | None]:
        """A plain Range of one (non-empty) key at the current revision, as its stored record
        (None: the key is not live) and the response's header."""
        self.ranges += 1
        latest = self._index.latest(key)
        hdr = self._header(self._current_rev)
        if latest is None:
            return hdr, None
        raw = self._backend.get(KEY, rev_key(latest))
        assert raw is not None, f"revision {latest >> SUB_BITS} not in backend"
        return hdr, raw

    def range_records(self, req: RangeRequest) -> tuple[RangeResponse, list[bytes] | None]:
        """``range``, with the KeyValues of a plain Range (no sort but by key ascending, no
        revision filter, neither keys_only nor count_only) left as their stored records, for
        ``add_records`` or the native encoder: (the response without kvs, the records).
        Anything else: (``range(req)``, None). A page of 100 keys takes about a third less CPU
        this way with ``add_records``."""
        resp, records, lease = self._range_records(req, False)
        assert lease is None
        return resp, cast(list[bytes] | None, records)

    def range_records_pinned(
        self, req: RangeRequest
    ) -> tuple[RangeResponse, list[bytes | memoryview] | None, ReadLease | None]:
        """``range_records``, with large records as memoryviews into the backend's map under
        a lease (``Backend.get_many_pinned``): the caller releases it once it has read them."""
        return self._range_records(req, True)

    def _range_records(
        self, req: RangeRequest, pinned: bool
    ) -> tuple[RangeResponse, list[bytes | memoryview] | None, ReadLease | None]:
        if _one_key_now(req):
            hdr, raw = self.range_one(req.key)
            if raw is None:
                return RangeResponse(hdr, (), False, 0), [], None
            return RangeResponse(hdr, (), False, 1), [raw], None
        if (
            req.keys_only
            or req.count_only
            or req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
            or req.sort_target != SortTarget.KEY
            or req.sort_order not in (SortOrder.NONE, SortOrder.ASCEND)
        ):
            return self.range(req), None, None
        _check_range(req)
        self.ranges += 1
        cur = self._current_rev
        limit = req.limit
        pairs, total = self._range_pairs(req, cur, limit + 1 if limit > 0 else 0)
        more = False
        if limit > 0 and len(pairs) > limit:
            del pairs[limit:]
            more = True
        lease: ReadLease | None = None
        records: list[bytes | memoryview | None]
        if len(pairs) <= 1:  # one LMDB get costs a fifth of a getmulti of one key
            records = [self._backend.get(KEY, rev_key(p)) for _, p in pairs]
        elif pinned:
            records, lease = self._backend.get_many_pinned(KEY, [rev_key(p) for _, p in pairs])
        else:
            records = cast(
                list[bytes | memoryview | None],
                self._backend.get_many(KEY, [rev_key(p) for _, p in pairs]),
            )
        if None in records:
            if lease is not None:
                lease.release()
            missing = pairs[records.index(None)][1]
            raise AssertionError(f"revision {missing >> SUB_BITS} not in backend")
        return (
            RangeResponse(self._header(cur), (), more, total),
            cast(list[bytes | memoryview], records),
            lease,
        )

    def _range_pairs(
        self, r: RangeRequest, cur: int, limit: int
    ) -> tuple[list[tuple[bytes, int]], int]:
        """The (key, revision) pairs a Range reads (at most ``limit`` if > 0) and their count."""
        rev = r.revision
        if rev > cur:
            raise FutureRevisionError()
        if rev <= 0:
            rev = cur
        if rev < self._compact_rev:
            raise CompactedError(self._compact_rev)
        start, end, single = _interval(r.key, r.range_end)
        if single:
            got = self._index.get(start, rev)
            pairs = [(start, got)] if got is not None else []
            return pairs, len(pairs)
        # At the newest revision (``cur``: the store's, or a write txn's view of its own
        # writes), the index counts the live keys past ``limit`` without visiting them.
        index = self._index
        if rev == cur or limit <= 0:
            return index.revisions(start, end, rev, limit, current=rev == cur)
        # An older revision with a limit (a later page of a listing while others write): the
        # count now, corrected for the keys changed since ``rev``, when those are few.
        changed = self._keys_changed_since(
            rev, start, end, max(64, index.count_keys(start, end) // 3)
        )
        if changed is None:
            return index.revisions(start, end, rev, limit)
        pairs, _ = index.revisions(start, end, rev, limit, count=False)
        total = index.count_live(start, end)
        for k in changed:
            total += (index.get(k, rev) is not None) - (index.latest(k) is not None)
        return pairs, total

    def _keys_changed_since(
        self, rev: int, start: bytes, end: bytes | None, most: int
    ) -> set[bytes] | None:
        """The keys in ``[start, end)`` written or deleted after main revision ``rev``, read
        from the backend's records after it; None if there are more than ``most`` records."""
        items = self._backend.range(KEY, rev_key((rev + 1) << SUB_BITS), None, limit=most + 1)
        if len(items) > most:
            return None
        unpack, h = _HDR.unpack_from, _HDR_SIZE
        keys: set[bytes] = set()
        for _, raw in items:
            k = raw[h : h + unpack(raw)[4]]
            if k >= start and (end is None or k < end):
                keys.add(k)
        return keys

    def _range(
        self, r: RangeRequest, cur: int, header: Callable[[int], ResponseHeader]
    ) -> RangeResponse:
        """``header``: ``_header`` for a top-level response, ``_own_header`` inside a txn."""
        sort_order = r.sort_order
        sort_target = r.sort_target
        filtered = bool(
            r.min_mod_revision
            or r.max_mod_revision
            or r.min_create_revision
            or r.max_create_revision
        )
        limit = r.limit
        if sort_order != SortOrder.NONE or filtered:
            limit = 0
        if limit > 0:
            limit += 1
        if r.count_only:
            # Only the count is wanted: at the newest revision the index takes it from its
            # key sets once one pair is found (``KeyIndex.revisions``).
            limit = 1
        pairs, total = self._range_pairs(r, cur, limit)
        if r.count_only:
            return RangeResponse(header(cur), (), False, total)
        load = self._load
        kvs = [load(p) for _, p in pairs]
        if filtered:
            if r.max_mod_revision:
                kvs = [kv for kv in kvs if kv.mod_revision <= r.max_mod_revision]
            if r.min_mod_revision:
                kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
            if r.max_create_revision:
                kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
            if r.min_create_revision:
                kvs = [kv for kv in kvs if kv.create_revision >= r.min_create_revision]
        if sort_target != SortTarget.KEY and sort_order == SortOrder.NONE:
            sort_order = SortOrder.ASCEND
        elif sort_target == SortTarget.KEY and sort_order == SortOrder.ASCEND:
            sort_order = SortOrder.NONE
        if sort_order == SortOrder.ASCEND or sort_order == SortOrder.DESCEND:
            kvs.sort(key=_sort_key(sort_target), reverse=sort_order == SortOrder.DESCEND)
        more = False
        if r.limit > 0 and len(kvs) > r.limit:
            del kvs[r.limit :]
            more = True
        if r.keys_only:
            kvs = [
                KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
                for kv in kvs
            ]
        return RangeResponse(header(cur), tuple(kvs), more, total)

    def _live(self, key: bytes, range_end: bytes) -> list[tuple[bytes, int]]:
        start, end, single = _interval(key, range_end)
        if single:
            got = self._index.latest(start)
            return [(start, got)] if got is not None else []
        return self._index.live_keys(start, end)

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """One key at the current (or a past) revision; a convenience over ``range``."""
        resp = self.range(RangeRequest(key=key, revision=revision))
        return resp.kvs[0] if resp.kvs else None

    # -- writes --------------------------------------------------------------------------

    def apply(
        self,
        req: WriteRequest,
        *,
        index: Index,
        term: Term,
        commit: bool = True,
        validated: bool = False,
    ) -> WriteResponse:
        """Apply one committed write; record (index, term) as applied in the same batch.

        Raises an MvccError (after recording the index) if the request fails; nothing else
        changed then. ``commit=False`` leaves the batch-commit decision to the caller (for an
        entry that also changes leases: call ``backend.maybe_commit()`` after it).
        ``validated=True``: the caller already ran ``validate_request(req, max_txn_ops)`` on
        this very request (it looks at the request only, so it would pass again).
        """
        try:
            if not validated:
                validate_request(req, self._max_txn_ops)
            return self._apply(req)
        finally:
            self._backend.set_consistent_index(index, term)
            if commit:
                self._backend.maybe_commit()

    def apply_many(
        self, items: Sequence[tuple[WriteRequest, Index, Term]]
    ) -> list[WriteResponse | MvccError]:
        """Apply a batch of committed writes in order; a failure is returned in its slot."""
        out: list[WriteResponse | MvccError] = []
        backend = self._backend
        try:
            for req, index, term in items:
                try:
                    validate_request(req, self._max_txn_ops)
                    out.append(self._apply(req))
                except MvccError as e:
                    out.append(e)
                backend.set_consistent_index(index, term)
        finally:
            backend.maybe_commit()
        return out

    def _apply(self, req: WriteRequest) -> WriteResponse:
        """A validated write request as one write txn."""
        tx = _WriteTxn(self._current_rev)
        resp: WriteResponse
        if isinstance(req, PutRequest):
            prev = self._check_put(req)
            resp = self._put(tx, req, prev, self._header)
        elif isinstance(req, DeleteRangeRequest):
            resp = self._delete(tx, req, self._header)
        else:
            resp = self._txn_top(tx, req)
        self._end(tx)
        return resp

    def _end(self, tx: _WriteTxn) -> None:
        if tx.changes:
            self._current_rev = tx.begin + 1
            self._notify(self._current_rev, tx.changes)

    def _notify(self, revision: int, changes: list[KeyValue]) -> None:
        """Hook for the watchable store: the changes of one write txn, in order."""

    def _check_put(self, p: PutRequest) -> KeyValue | None:
        # A put of its own looks for its lease first, then for the key ignore_* needs (a put
        # in a txn the other way round, ``_check_path``): etcd's order.
        self._check_lease(p)
        prev: KeyValue | None = None
        if p.ignore_value or p.ignore_lease or p.prev_kv:
            latest = self._index.latest(p.key)
            if latest is not None:
                prev = self._load(latest)
        if (p.ignore_value or p.ignore_lease) and prev is None:
            raise KeyNotFoundError()
        return prev

    def _check_lease(self, p: PutRequest) -> None:
        if (
            not p.ignore_lease
            and p.lease
            and self._lessor is not None
            and not self._lessor.lease_exists(p.lease)
        ):
            raise LeaseNotFoundError()

    def _put(
        self,
        tx: _WriteTxn,
        p: PutRequest,
        prev: KeyValue | None,
        header: Callable[[int], ResponseHeader],
    ) -> PutResponse:
        """``header``: ``_header`` for a top-level response, ``_own_header`` inside a txn."""
        self.puts += 1
        key = p.key
        main = tx.begin + 1
        rev = (main << SUB_BITS) | len(tx.changes)
        index = self._index
        value = p.value
        lease = p.lease
        lessor = self._lessor
        old_lease = 0
        if prev is not None:  # loaded by the caller (prev_kv, ignore_value, ignore_lease)
            if p.ignore_value:
                value = prev.value
            if p.ignore_lease:
                lease = prev.lease
            kv = KeyValue(key, prev.create_revision, main, prev.version + 1, value, lease)
            old_lease = prev.lease
            index.put(key, rev)
        else:
            # checked before the first change (_check_put / _check_path): never fails mid-txn
            assert not (p.ignore_value or p.ignore_lease), p
            # The create revision and version from the index, the replaced KeyValue's lease
            # from the lessor: the record itself is not read (as etcd's put).
            create, version = index.put(key, rev)
            kv = KeyValue(key, create, main, version, value, lease)
            if version > 1 and lessor is not None:  # it replaces a live KeyValue
                old_lease = lessor.lease_of(key)
        self._backend.put(KEY, rev_key(rev), encode_kv(kv))
        if lessor is not None:
            if old_lease:
                lessor.detach(old_lease, key)
            if lease:
                lessor.attach(lease, key)
        tx.changes.append(kv)
        return PutResponse(header(main), prev if p.prev_kv else None)

    def _delete(
        self, tx: _WriteTxn, d: DeleteRangeRequest, header: Callable[[int], ResponseHeader]
    ) -> DeleteRangeResponse:
        """``header``: ``_header`` for a top-level response, ``_own_header`` inside a txn."""
        self.deletes += 1
        targets = self._live(d.key, d.range_end)
        olds = [self._load(r) for _, r in targets] if d.prev_kv else []
        for key, _ in targets:
            self._tombstone(tx, key)
        return DeleteRangeResponse(
            header(tx.view()),
            len(targets),
            tuple(olds),
        )

    def delete_keys(
        self, keys: Sequence[bytes], *, index: Index, term: Term, commit: bool = True
    ) -> int:
        """Delete these keys, in this order, in ONE write txn (one revision); record the index.

        This is what etcd's lease revoke does with the keys attached to the lease. Keys that
        are not live are skipped. Returns how many were deleted; watchers get one response.
        """
        try:
            tx = _WriteTxn(self._current_rev)
            index_ = self._index
            for key in keys:
                if index_.latest(key) is not None:
                    self._tombstone(tx, key)
            self._end(tx)
            return len(tx.changes)
        finally:
            self._backend.set_consistent_index(index, term)
            if commit:
                self._backend.maybe_commit()

    def _tombstone(self, tx: _WriteTxn, key: bytes) -> None:
        """Delete the live ``key``."""
        main = tx.begin + 1
        rev = (main << SUB_BITS) | len(tx.changes)
        tomb = KeyValue(key, 0, main, 0, b"", 0)
        self._backend.put(KEY, rev_key(-rev), encode_kv(tomb))
        self._index.tombstone(key, rev)
        lessor = self._lessor
        if lessor is not None:
            lease = lessor.lease_of(key)
            if lease:
                lessor.detach(lease, key)
        tx.changes.append(tomb)

    # -- txn -----------------------------------------------------------------------------

    def _compare(self, c: Compare, cur: int) -> bool:
        start, end, single = _interval(c.key, c.range_end)
        if single and c.target == CompareTarget.MOD:
            # Kubernetes' compare: the key's mod revision is its index revision (no load).
            got = self._index.get(start, cur)
            x, y = (0 if got is None else got >> SUB_BITS), c.mod_revision
            return _holds(c.result, (x > y) - (x < y))
        if single:
            got = self._index.get(start, cur)
            revs = [got] if got is not None else []
        else:
            revs = [r for _, r in self._index.revisions(start, end, cur)[0]]
        if not revs:
            if c.target == CompareTarget.VALUE:
                return False
            return _compare_kv(c, KeyValue(b""))
        return all(_compare_kv(c, self._load(r)) for r in revs)

    def _compare_path(self, t: TxnRequest, cur: int) -> list[bool]:
        ok = all(self._compare(c, cur) for c in t.compare)
        path = [ok]
        for op in t.success if ok else t.failure:
            if op.request_txn is not None:
                path.extend(self._compare_path(op.request_txn, cur))
        return path

    def _check_path(self, t: TxnRequest, path: list[bool], pos: int, sim: _TxnSim | None) -> int:
        """etcd's checkRequests along the chosen branches; returns the next path position.

        etcd makes two passes over the whole tree: first the puts (only if the txn writes;
        ``sim`` is given), then the ranges (``sim`` is None), so a bad put wins over a bad
        range revision wherever they are.

        The puts pass follows the effects of the txn's own writes in execution order (``sim``):
        an ignore_value/ignore_lease put of a key that an earlier delete of the same txn
        removed fails here, before any change. etcd checks against the state before the txn
        only, meets the missing key in the middle of the execution and panics ("unexpected
        error during txn", seen with etcd 3.4 on ``delete a..\\0`` then ``put b
        ignore_value``, which its duplicate-key check lets through); petcd answers "key not
        found" and changes nothing instead.
        """
        ok = path[pos]
        pos += 1
        for op in t.success if ok else t.failure:
            if op.request_txn is not None:
                pos = self._check_path(op.request_txn, path, pos, sim)
            elif sim is not None:
                if op.request_put is not None:
                    p = op.request_put
                    if (p.ignore_value or p.ignore_lease) and not sim.live(p.key):
                        raise KeyNotFoundError()
                    self._check_lease(p)
                    sim.put(p.key)
                elif op.request_delete_range is not None:
                    sim.delete(op.request_delete_range)
            elif op.request_range is not None:
                r = op.request_range
                if r.revision != 0:
                    if r.revision > self._current_rev:
                        raise FutureRevisionError()
                    if r.revision < self._compact_rev:
                        raise CompactedError(self._compact_rev)
        return pos

    def _txn_top(self, tx: _WriteTxn, t: TxnRequest) -> TxnResponse:
        self.txns += 1
        cur = tx.begin
        ok = all(self._compare(c, cur) for c in t.compare) if t.compare else True
        ops = t.success if ok else t.failure
        if self._plain(ops):
            # Nothing on the chosen branch can fail: run it without the checking passes.
            responses = self._run_ops(tx, ops)
            return TxnResponse(self._header(tx.view()), ok, responses)
        path = [ok]
        for op in ops:
            if op.request_txn is not None:
                path.extend(self._compare_path(op.request_txn, cur))
        if _is_write(t):
            self._check_path(t, path, 0, _TxnSim(self._index))
        self._check_path(t, path, 0, None)
        resp, _ = self._txn(tx, t, path, 0)
        return TxnResponse(self._header(tx.view()), resp.succeeded, resp.responses)

    def _txn(
        self, tx: _WriteTxn, t: TxnRequest, path: list[bool], pos: int
    ) -> tuple[TxnResponse, int]:
        ok = path[pos]
        pos += 1
        responses: list[ResponseOp] = []
        for op in t.success if ok else t.failure:
            if op.request_txn is not None:
                nested, pos = self._txn(tx, op.request_txn, path, pos)
                responses.append(ResponseOp(None, None, None, nested))
            else:
                responses.append(self._run_op(tx, op))
        return TxnResponse(ResponseHeader(), ok, tuple(responses)), pos

    def _plain(self, ops: Sequence[RequestOp]) -> bool:
        """Whether none of these ops can fail the txn's checks (``_check_path``): no nested
        txn, no ignore_value/ignore_lease put, no put with a lease that does not exist, no
        range at a revision."""
        lessor = self._lessor
        for op in ops:
            p = op.request_put
            if p is not None:
                if p.ignore_value or p.ignore_lease:
                    return False
                if p.lease and lessor is not None and not lessor.lease_exists(p.lease):
                    return False
            elif op.request_range is not None:
                if op.request_range.revision:
                    return False
            elif op.request_txn is not None:
                return False
        return True

    def _run_ops(self, tx: _WriteTxn, ops: Sequence[RequestOp]) -> tuple[ResponseOp, ...]:
        """The responses of a txn branch without nested txns, executed in order."""
        if len(ops) == 1:
            return (self._run_op(tx, ops[0]),)
        return tuple([self._run_op(tx, op) for op in ops])

    def _run_op(self, tx: _WriteTxn, op: RequestOp) -> ResponseOp:
        """One op of a txn that is not a txn. ``ResponseOp``'s fields, positionally:
        (response_range, response_put, response_delete_range, response_txn)."""
        p = op.request_put
        if p is not None:
            prev = None
            if p.prev_kv or p.ignore_value or p.ignore_lease:
                latest = self._index.latest(p.key)
                prev = self._load(latest) if latest is not None else None
            return ResponseOp(None, self._put(tx, p, prev, self._own_header))
        if op.request_range is not None:
            self.ranges += 1
            # Nested responses carry the revision only (etcd), never the server's header.
            return ResponseOp(self._range(op.request_range, tx.view(), self._own_header))
        assert op.request_delete_range is not None
        dr = self._delete(tx, op.request_delete_range, self._own_header)
        return ResponseOp(None, None, dr)

    # -- compaction ----------------------------------------------------------------------

    def compact(
        self, revision: int, *, index: Index, term: Term, commit: bool = True
    ) -> CompactionResponse:
        """Compact at ``revision``: history below it becomes unreadable at once.

        The backend records are deleted by later ``compaction_step`` calls; for a "physical"
        compaction the caller repeats ``compaction_step`` until it returns False.
        """
        try:
            if revision <= self._compact_rev:
                raise CompactedError(self._compact_rev)
            if revision > self._current_rev:
                raise FutureRevisionError()
            prev = self._compact_rev
            backend = self._backend
            # etcd's checkPrevCompactionCompleted: only then is this one's hash recorded.
            prev_finished = backend.get(META, SCHEDULED_COMPACT_KEY) == backend.get(
                META, FINISHED_COMPACT_KEY
            )
            self._compact_rev = revision
            backend.put(META, SCHEDULED_COMPACT_KEY, _Q.pack(revision))
            # A compaction still running is superseded: this one's index pass covers every key
            # and keeps a subset of what it kept, so its deletes include the old one's.
            self._compaction = _Compaction(
                revision,
                set(),
                self._index.keys_snapshot(),
                prev_revision=prev,
                prev_finished=prev_finished,
                started=self._now(),
            )
            self._on_compacted(revision)
            return CompactionResponse(self._header(self._current_rev))
        finally:
            self._backend.set_consistent_index(index, term)
            if commit:
                self._backend.maybe_commit()

    def _on_compacted(self, revision: int) -> None:
        """Hook for the watchable store."""

    @property
    def compaction_pending(self) -> bool:
        return self._compaction is not None

    def compaction_step(
        self, max_keys: int = COMPACTION_BATCH_LIMIT_DEFAULT, *, commit: bool = True
    ) -> bool:
        """Compact ``2 * max_keys`` keys of the index or delete up to ``max_keys`` compacted
        records; True while more work remains. A compaction that finishes is reported by
        ``take_finished_compactions``.

        Call it between applies (never inside an entry's apply). ``commit=False`` leaves the
        batch-commit decision to the caller.
        """
        job = self._compaction
        if job is None:
            return False
        if job.index_keys is not None:
            if self._index_readers:
                return True  # later: a hash is reading the index
            first = job.index_position
            last = first + _INDEX_KEYS_PER_RECORD * max_keys
            self._index.compact_keys(job.index_keys[first:last], job.revision, job.keep)
            if last >= len(job.index_keys):
                job.index_keys = None
            else:
                job.index_position = last
            return True
        backend = self._backend
        end = _REVKEY.pack(job.revision + 1, b"_", 0)
        items = backend.range(KEY, job.position, end, limit=max_keys)
        keep = job.keep
        lower = (job.prev_revision + 1) << SUB_BITS
        h = job.hash
        for k, v in items:
            rev = parse_rev_key(k)
            if _hashed(rev, lower, keep):
                h = crc32c.update(h, k + v)
            if rev not in keep:
                backend.delete(KEY, k)
        job.hash = h
        if len(items) < max_keys:
            backend.put(META, FINISHED_COMPACT_KEY, _Q.pack(job.revision))
            self._compaction = None
            self._finish(job)
        else:
            job.position = items[-1][0] + b"\x00"
        if commit:
            backend.maybe_commit()
        return self._compaction is not None

    def _finish(self, job: _Compaction) -> None:
        result = HashKVResult(
            hash=job.hash, compact_revision=job.prev_revision, hash_revision=job.revision
        )
        if job.prev_finished:
            self.store_hash(result)
        self._finished.append(
            CompactionDone(job.revision, result, job.prev_finished, self._now() - job.started)
        )

    def take_finished_compactions(self) -> list[CompactionDone]:
        """The compactions finished since the last call, oldest first (for the server's log)."""
        done, self._finished = self._finished, []
        return done

    # -- compaction hashes (etcd's HashStorage) ------------------------------------------

    def store_hash(self, h: HashKVResult) -> None:
        """Record a compaction hash; the newest ``HASHES_MAX`` (by revision) are kept."""
        hashes = [x for x in self._hashes if x.hash_revision != h.hash_revision]
        hashes.append(h)
        hashes.sort(key=lambda x: x.hash_revision)
        self._hashes = hashes[-HASHES_MAX:]

    def hashes(self) -> list[HashKVResult]:
        """The recorded compaction hashes, oldest first."""
        return list(self._hashes)

    # -- hash ----------------------------------------------------------------------------

    def hash_kv(self, revision: int = 0) -> HashKVResult:
        """etcd's HashKV: crc32c over the key bucket up to ``revision`` (0 = current)."""
        return self.start_hash_kv(revision)()

    def start_hash_kv(self, revision: int = 0) -> Callable[[], HashKVResult]:
        """``hash_kv`` in two halves, so that the long one can run off the event loop.

        This call checks ``revision`` and takes snapshots: of the key index's revision lists
        (a list of references) and of the key bucket (an LMDB read transaction plus a copy of
        the uncommitted batch). The returned function computes the kept revisions and walks the
        bucket; it may run in any thread and must be called exactly once: later writes,
        compactions and backend commits do not change its result. Until it has returned, the
        read transaction pins the pages that commits free, the backend must not be closed, and
        compaction steps leave the index alone (``compaction_step``).

        At the revision of a recorded compaction hash, that record is the answer (etcd's
        HashByRev), even if the revision is compacted.
        """
        if revision > 0:
            for recorded in self._hashes:
                if recorded.hash_revision == revision:
                    return lambda: recorded
        compact, current = self._compact_rev, self._current_rev
        if 0 < revision < compact:  # etcd 3.5.17 hashes at the compact revision itself
            raise CompactedError(compact)
        if revision > current:
            raise FutureRevisionError()
        if revision <= 0:
            revision = current
        lower = (compact + 1) << SUB_BITS
        # Only revisions at or below the compaction are filtered (a never-compacted store: none).
        values = self._index.values_snapshot() if compact > 0 else []
        upper = _REVKEY.pack(revision + 1, b"_", 0)
        items = self._backend.iterate(KEY, b"", upper)
        with self._index_readers_lock:
            self._index_readers += 1

        def walk() -> HashKVResult:
            try:
                keep = keep_of(values, revision)
            finally:
                with self._index_readers_lock:
                    self._index_readers -= 1
            h = crc32c.update(0, KEY.encode())
            for k, v in items:
                rev = parse_rev_key(k)
                # Records a compaction will delete are left out whether or not it has deleted
                # them yet: members compacting at different paces must answer the same hash.
                # (etcd also hashes every record when nothing is kept; petcd does not: found
                # by etcd's e2e TestVerifyHashKVAfterCompact.)
                if not _hashed(rev, lower, keep):
                    continue
                h = crc32c.update(h, k + v)
            return HashKVResult(hash=h, compact_revision=compact, hash_revision=revision)

        return walk

    def start_hash(self) -> Callable[[], int]:
        """etcd's Maintenance.Hash in two halves, like ``start_hash_kv``: this call snapshots
        every bucket of the backend (uncommitted writes included); the returned function walks
        them in any thread, exactly once, and returns the crc32c (Castagnoli) of each bucket's
        name followed by its keys and values, buckets in name order and keys in key order.
        The consistent index (the last applied raft index and term, in ``meta``) is left out,
        as etcd leaves it out: members reach it at different times. Members that applied the
        same entries agree; the figure is petcd's own, not comparable with an etcd's (whose
        bbolt buckets encode the same data differently). Until it has returned, the backend
        must not be closed.
        """
        # The v2 tree's bucket (--enable-v2) counts only once it holds something: the hashes
        # of members that never served v2 stay what they were before it existed.
        snapshots = [
            (name, self._backend.iterate(name))
            for name in sorted(BUCKETS)
            if name != V2 or self._backend.count(V2)
        ]

        def walk() -> int:
            h = 0
            for name, items in snapshots:
                h = crc32c.update(h, name.encode())
                for k, v in items:
                    if name == META and k == CONSISTENT_INDEX_KEY:
                        continue
                    h = crc32c.update(h, k + v)
            return h

        return walk


def _is_write(t: TxnRequest) -> bool:
    for op in (*t.success, *t.failure):
        if op.request_put is not None or op.request_delete_range is not None:
            return True
        if op.request_txn is not None and _is_write(op.request_txn):
            return True
    return False
