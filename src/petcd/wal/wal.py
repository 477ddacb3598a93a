"""The write-ahead log: durable Raft entries, hard states and snapshot markers.

Theory of operation
-------------------
The format and the recovery rules are specified in docs/enhancements/0001-wal-format.md; this
module implements them. A WAL is a directory of segment files ``%016x-%016x.wal`` (sequence,
first index); the last one is open for appending.

Writing is split in two so that a server can keep its event loop busy while the disk works::

    event loop:   save() save() save()        save() save()            save()
                        \\                          \\
    worker:              sync: swap, pwrite, fdatasync   sync: swap, pwrite, fdatasync

``save`` and ``save_snapshot`` only lay records out in the pending buffer under ``_mu`` (a
short lock). ``sync`` holds ``_sync_mu`` for its whole run (one sync at a time), swaps the pending
buffer for an empty one under ``_mu``, cuts a new segment if the batch does not fit, fills in the
records' CRCs (bound to their file offsets), writes the batch with one ``pwrite`` and calls
``fdatasync`` once.
Whatever was saved while a sync ran goes out with the next one (group commit). When ``sync``
returns, everything saved before it was called is durable: either this call wrote it, or an
earlier sync that took it finished its fdatasync before this call got ``_sync_mu``.

``write`` is the first half of ``sync`` on its own: the pwrite, and a hint to the kernel to
start writing those pages back (``sync_file_range``), without waiting. A caller with CPU work
that must not become visible before the records are durable (the server's apply of a lone
proposal) calls ``write``, does that work, then ``sync``, whose fdatasync then finds the data
write already under way. Nothing ``write`` wrote counts as durable until a ``sync`` returns.

``sync_start`` / ``sync_done`` are ``sync`` in two halves for a caller whose fdatasync runs
elsewhere (the server submits it to the kernel through Linux AIO, ``fileutil.AsyncFdatasync``):
``sync_start`` writes, starts the writeback and hands the file descriptor to the caller's
submit function; ``sync_done`` takes the fdatasync's result. What was written before
``sync_start`` counts as durable only after a successful ``sync_done``.

``unsafe_no_fsync`` (etcd's ``--unsafe-no-fsync``, its WAL's ``SetUnsafeNoFsync``): ``sync``
writes but makes no fdatasync of the log, and ``write`` starts no writeback (nor does a cut
fdatasync the segment it ends). The rare rest still fsyncs: a new segment's opening records,
the directory, the repair of a torn tail. A killed process loses
nothing more than with fsync: the kernel has the written pages. A machine crash or power loss
may lose acknowledged records, or leave a damaged record before whole ones, which ``open``
then refuses as corruption: the invariant below about writes being fdatasynced before the
next one starts does not hold in this mode.

Invariants
----------
- Every named segment starts with whole, fsynced opening records (created as ``*.tmp``, fsynced,
  renamed, directory fsynced). Every segment but the last was fdatasynced to its end before the
  next one was created.
- ``_written_*`` describe what is in the files; ``_saved_*`` also include the pending buffer.
  Segment opening records use ``_written_*`` only, and a cut first fdatasyncs what ``write``
  left unsynced (``_dirty``), so a cut never makes unsynced state durable.
- After a failed write or fdatasync the WAL is unusable (``WalFatalError``), because the file
  may no longer match what was acknowledged.
- This module never truncates a record that a sync acknowledged: damage that is not a torn tail
  of the last segment is an error naming the file and offset.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from petcd.raft.types import Entry, HardState, Index, SnapshotMetadata
from petcd.wal import record
from petcd.wal.errors import (
    WalAppendError,
    WalClosedError,
    WalCorruptError,
    WalEntriesMissingError,
    WalExistsError,
    WalFatalError,
    WalLockedError,
    WalNotFoundError,
    WalSnapshotMismatchError,
    WalSnapshotNotFoundError,
)
from petcd.wal.fileutil import StrPath, fsync_dir, preallocate, pwrite_all, start_writeback
from petcd.wal.record import RecordBuffer, RecordType, SegmentHeader

DEFAULT_SEGMENT_SIZE_BYTES = 64 * 1024 * 1024
_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_TMP_SUFFIX = ".tmp"


def segment_name(seq: int, first_index: int) -> str:
    """The file name of a segment: ``%016x-%016x.wal`` (sequence, first index)."""
    return f"{seq:016x}-{first_index:016x}.wal"


@dataclass(frozen=True, slots=True)
class WalState:
    """What a WAL holds, as read at open.

    ``entries`` are those with index greater than the snapshot the caller named, contiguous
    from that index + 1. ``snapshot`` is the latest snapshot marker (index 0 if none);
    ``snapshots`` are all markers still in the log, oldest first.
    """

    metadata: bytes
    hard_state: HardState
    entries: tuple[Entry, ...]
    snapshot: SnapshotMetadata
    snapshots: tuple[SnapshotMetadata, ...]


@dataclass(frozen=True, slots=True)
class _Segment:
    path: str
    seq: int
    first_index: int


@dataclass(frozen=True, slots=True)
class _Scan:
    state: WalState
    segments: list[_Segment]
    tail_end: int  # where the last segment's records end: the append offset
    garbage_end: int  # one past the torn bytes after tail_end (== tail_end if none)
    opening_end: int  # offset after the last segment's SEGMENT record
    last_index: int  # last entry index written, raised by snapshot markers
    hard_state: HardState
    snapshot: SnapshotMetadata


def _list_segments(dirpath: StrPath) -> list[_Segment]:
    try:
        names = os.listdir(dirpath)
    except FileNotFoundError:
        return []
    segments = []
    for name in names:
        m = _SEGMENT_RE.match(name)
        if m:
            path = os.path.join(os.fspath(dirpath), name)
            segments.append(_Segment(path, int(m.group(1), 16), int(m.group(2), 16)))
    segments.sort(key=lambda s: s.seq)
    for prev, cur in itertools.pairwise(segments):
        if cur.seq != prev.seq + 1:
            raise WalCorruptError(cur.path, 0, f"segment sequence gap after {prev.seq:016x}")
    return segments


def exists(dirpath: StrPath) -> bool:
    """Whether ``dirpath`` holds at least one WAL segment."""
    return bool(_list_segments(dirpath))


def _scan(
    dirpath: StrPath, snapshot: SnapshotMetadata | None, *, want_entries: bool = True
) -> _Scan:
    # want_entries=False skips entry records (checked, not decoded): the result's entries
    # and last_index are then meaningless; used to list the snapshot markers cheaply.
    segments = _list_segments(dirpath)
    if not segments:
        raise WalNotFoundError(f"wal: no segment in {os.fspath(dirpath)}")
    after = snapshot.index if snapshot is not None else 0
    entries: list[Entry] = []
    hard_state = HardState()
    latest = SnapshotMetadata()
    markers: list[SnapshotMetadata] = []
    matched = after == 0
    # The term of the log's entry at index `after`, as far as read (None: not in the log).
    term_at_after: int | None = None
    last_index = 0
    metadata: bytes | None = None
    tail_end = garbage_end = opening_end = 0
    for k, seg in enumerate(segments):
        with open(seg.path, "rb") as f:
            data = f.read()
        try:
            records, stop = record.decode_records(data, with_entries=want_entries)
        except record.BadBodyError as exc:
            raise WalCorruptError(seg.path, exc.offset, str(exc)) from exc
        if not records or records[0][0] != RecordType.SEGMENT:
            raise WalCorruptError(seg.path, 0, "segment does not start with a segment header")
        header = records[0][2]
        assert isinstance(header, SegmentHeader)
        if header.seq != seg.seq or header.first_index != seg.first_index:
            raise WalCorruptError(seg.path, 0, "segment header does not match the file name")
        if metadata is None:
            metadata = header.metadata
        elif header.metadata != metadata:
            raise WalCorruptError(seg.path, 0, "segment metadata differs from the first segment")
        for rtype, pos, value in records[1:]:
            if rtype == RecordType.ENTRY:
                assert isinstance(value, Entry)
                i = value.index
                last_index = i
                if i <= after:
                    # A rewrite at or below the snapshot supersedes every later entry.
                    entries.clear()
                    term_at_after = value.term if i == after else None
                    continue
                slot = i - after - 1
                n = len(entries)
                if slot < n:
                    del entries[slot:]
                elif slot > n:
                    raise WalEntriesMissingError(
                        f"wal: entry {i} in {seg.path} at offset {pos} does not follow "
                        f"index {after + n}"
                    )
                entries.append(value)
            elif rtype == RecordType.HARD_STATE:
                assert isinstance(value, HardState)
                hard_state = value
            elif rtype == RecordType.SNAPSHOT:
                assert isinstance(value, SnapshotMetadata)
                markers.append(value)
                latest = value
                last_index = max(last_index, value.index)
                # A marker whose entry is not in the log with its term records a snapshot
                # *installed* from the leader: as in Raft, it replaces the whole log, so the
                # entries read after its index are stale. A marker of a local snapshot matches
                # its entry and changes nothing.
                i, term = value.index, value.term
                if i == after:
                    if snapshot is not None and term != snapshot.term:
                        raise WalSnapshotMismatchError(
                            f"wal: snapshot marker at index {after} has term {term}, "
                            f"the snapshot has term {snapshot.term}"
                        )
                    matched = True
                    if term_at_after != term:
                        entries.clear()
                    term_at_after = term
                elif i > after and want_entries:
                    slot = i - after - 1
                    if slot >= len(entries) or entries[slot].term != term:
                        raise WalEntriesMissingError(
                            f"wal: the log was replaced by the snapshot at index {i} term {term} "
                            f"({seg.path} offset {pos}); read it with that snapshot, not {after}"
                        )
            else:
                raise WalCorruptError(seg.path, pos, "segment header inside a segment")
        is_last = k == len(segments) - 1
        end = record.nonzero_end(data, stop)
        if end > stop:
            if not is_last:
                raise WalCorruptError(
                    seg.path, stop, "damaged record in a segment that is not last"
                )
            # The damage is the torn tail of the last write unless a later write follows it:
            # writes are sequential and each is fdatasynced before the next one starts, so a
            # valid batch start after the damage proves the damaged bytes were acknowledged.
            # Valid records of the same (unsynced) write may follow: a power cut can persist
            # its pages out of order. They were never acknowledged and go with the tail.
            for p in range(stop + record.ALIGN, end, record.ALIGN):
                flags = record.record_flags_at(data, p)
                if flags >= 0 and flags & record.FLAG_BATCH_START:
                    raise WalCorruptError(
                        seg.path, stop, f"damaged record followed by a later write at offset {p}"
                    )
        if is_last:
            tail_end, garbage_end = stop, end
            opening_end = records[1][1] if len(records) > 1 else stop
    if not matched:
        raise WalSnapshotNotFoundError(f"wal: no snapshot marker at index {after}")
    assert metadata is not None
    state = WalState(
        metadata=metadata,
        hard_state=hard_state,
        entries=tuple(entries),
        snapshot=latest,
        snapshots=tuple(markers),
    )
    return _Scan(
        state=state,
        segments=segments,
        tail_end=tail_end,
        garbage_end=garbage_end,
        opening_end=opening_end,
        last_index=last_index,
        hard_state=hard_state,
        snapshot=latest,
    )


def read_all(dirpath: StrPath, snapshot: SnapshotMetadata | None = None) -> WalState:
    """Read a WAL without changing it (for offline tools and checks).

    ``snapshot`` is the snapshot the caller restored its state machine from (None: none); the
    entries after its index are returned. Raises ``WalNotFoundError``, ``WalCorruptError``,
    ``WalSnapshotNotFoundError``, ``WalSnapshotMismatchError``, ``WalEntriesMissingError``.
    """
    return _scan(dirpath, snapshot).state


def snapshot_markers(dirpath: StrPath) -> tuple[SnapshotMetadata, ...]:
    """The snapshot markers in the WAL, oldest first: the snapshots a restart may use."""
    if not exists(dirpath):
        return ()
    return _scan(dirpath, None, want_entries=False).state.snapshots


def _remove_tmp_files(dirpath: StrPath) -> None:
    for name in os.listdir(dirpath):
        if name.endswith(".wal" + _TMP_SUFFIX):
            os.remove(os.path.join(os.fspath(dirpath), name))


def _lock_dir(dirpath: StrPath) -> int:
    fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WalLockedError(f"wal: {os.fspath(dirpath)} is in use by another process") from None
    return fd


class WAL:
    """An open write-ahead log; see the module docstring. Create with ``create`` or ``open``."""

    def __init__(
        self,
        dirpath: StrPath,
        *,
        lock_fd: int,
        metadata: bytes,
        segment_size_bytes: int,
        last_index: int,
        hard_state: HardState,
        snapshot: SnapshotMetadata,
        unsafe_no_fsync: bool = False,
    ) -> None:
        # Use WAL.create or WAL.open.
        if segment_size_bytes <= 0:
            raise ValueError("segment_size_bytes must be positive")
        self._dir = os.fspath(dirpath)
        self._no_fsync = unsafe_no_fsync
        self._lock_fd = lock_fd
        self._metadata = metadata
        self._segment_size_bytes = segment_size_bytes
        self._mu = threading.Lock()
        self._sync_mu = threading.Lock()
        # Guarded by _mu.
        self._pending = RecordBuffer()
        self._saved_last_index = last_index
        self._saved_hard_state = hard_state
        self._saved_snapshot = snapshot
        self._closed = False
        # Guarded by _sync_mu.
        self._fd = -1
        self._segments: list[_Segment] = []
        self._offset = 0
        self._opening_end = 0
        self._written_last_index = last_index
        self._written_hard_state = hard_state
        self._written_snapshot = snapshot
        self._failed: BaseException | None = None
        self._dirty = False  # written (by ``write``) since the last fdatasync
        self._sync_count = 0
        self._writes = 0  # pwrites made: which of them an fdatasync in flight covers
        self._sync_started_at: int | None = None  # ``_writes`` when ``sync_start`` submitted

    # -- construction --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        dirpath: StrPath,
        metadata: bytes = b"",
        *,
        segment_size_bytes: int = DEFAULT_SEGMENT_SIZE_BYTES,
        unsafe_no_fsync: bool = False,
    ) -> WAL:
        """Create a new, empty WAL in ``dirpath`` (made if missing). ``metadata`` is opaque
        caller data stored in every segment (the server puts the member and cluster ids there).
        ``unsafe_no_fsync``: see the module docstring."""
        os.makedirs(dirpath, exist_ok=True)
        parent = os.path.dirname(os.path.abspath(os.fspath(dirpath)))
        fsync_dir(parent)
        if exists(dirpath):
            raise WalExistsError(f"wal: {os.fspath(dirpath)} already holds a WAL")
        lock_fd = _lock_dir(dirpath)
        try:
            _remove_tmp_files(dirpath)
            wal = cls(
                dirpath,
                lock_fd=lock_fd,
                metadata=metadata,
                segment_size_bytes=segment_size_bytes,
                last_index=0,
                hard_state=HardState(),
                snapshot=SnapshotMetadata(),
                unsafe_no_fsync=unsafe_no_fsync,
            )
            wal._start_segment(seq=0, first_index=0)
        except BaseException:
            os.close(lock_fd)
            raise
        return wal

    @classmethod
    def open(
        cls,
        dirpath: StrPath,
        snapshot: SnapshotMetadata | None = None,
        *,
        segment_size_bytes: int = DEFAULT_SEGMENT_SIZE_BYTES,
        unsafe_no_fsync: bool = False,
    ) -> tuple[WAL, WalState]:
        """Open an existing WAL for appending, after reading it (see ``read_all``).

        A torn tail of the last segment is overwritten with zeros (and fsynced) so that new
        records follow the last whole record.
        """
        if not exists(dirpath):
            raise WalNotFoundError(f"wal: no segment in {os.fspath(dirpath)}")
        lock_fd = _lock_dir(dirpath)
        try:
            _remove_tmp_files(dirpath)
            scan = _scan(dirpath, snapshot)
            wal = cls(
                dirpath,
                lock_fd=lock_fd,
                metadata=scan.state.metadata,
                segment_size_bytes=segment_size_bytes,
                last_index=scan.last_index,
                hard_state=scan.hard_state,
                snapshot=scan.snapshot,
                unsafe_no_fsync=unsafe_no_fsync,
            )
            last = scan.segments[-1]
            fd = os.open(last.path, os.O_RDWR | os.O_CLOEXEC)
            try:
                if scan.garbage_end > scan.tail_end:
                    pwrite_all(fd, bytes(scan.garbage_end - scan.tail_end), scan.tail_end)
                    os.fsync(fd)
                if os.fstat(fd).st_size < segment_size_bytes:
                    preallocate(fd, segment_size_bytes)
            except BaseException:
                os.close(fd)
                raise
            wal._fd = fd
            wal._segments = list(scan.segments)
            wal._offset = scan.tail_end
            wal._opening_end = scan.opening_end
        except BaseException:
            os.close(lock_fd)
            raise
        return wal, scan.state

    # -- appending -----------------------------------------------------------------------

    def save(self, hard_state: HardState | None, entries: Sequence[Entry] = ()) -> None:
        """Buffer ``entries`` then ``hard_state`` (None: unchanged); cheap, no I/O.

        An entry whose index is at or below the last saved index replaces the log from that
        index on (a new leader's conflicting entries). Durable once ``sync`` returns.
        """
        with self._mu:
            self._check_open()
            if entries:
                first = entries[0].index
                last = entries[-1].index
                if first < 1 or first > self._saved_last_index + 1:
                    raise WalAppendError(
                        f"wal: entry {first} cannot follow index {self._saved_last_index}"
                    )
                if last - first != len(entries) - 1:
                    raise WalAppendError("wal: entries in one save must be contiguous")
            pending = self._pending
            mark = pending.mark()
            try:
                # A bad value (data that is not bytes, a negative term) fails half-way through
                # a record: take the whole save back so that the buffer stays well-formed.
                if entries:
                    pending.add_entries(entries)
                if hard_state is not None:
                    pending.add_hard_state(hard_state)
            except BaseException:
                pending.rollback(mark)
                raise
            if entries:
                self._saved_last_index = entries[-1].index
            if hard_state is not None:
                self._saved_hard_state = hard_state

    def save_snapshot(self, metadata: SnapshotMetadata) -> None:
        """Buffer a snapshot marker; durable once ``sync`` returns."""
        with self._mu:
            self._check_open()
            pending = self._pending
            mark = pending.mark()
            try:
                pending.add_snapshot(metadata)
            except BaseException:
                pending.rollback(mark)
                raise
            self._saved_snapshot = metadata
            self._saved_last_index = max(self._saved_last_index, metadata.index)

    def sync(self) -> None:
        """Write everything saved so far with one pwrite and make it durable with one fdatasync
        (together with what ``write`` wrote before).

        Safe to call from a worker thread while other threads keep calling ``save``.
        """
        with self._sync_mu:
            self._write_pending(writeback=False)
            if self._dirty:
                self._fdatasync()

    def write(self) -> None:
        """Write everything saved so far with one pwrite and start its writeback; do not wait.

        Not durable until the next ``sync`` returns (see the module docstring).
        """
        with self._sync_mu:
            self._write_pending(writeback=True)

    def sync_start(self, submit: Callable[[int], None]) -> bool:
        """``sync`` in two halves, for a caller whose fdatasync completes later (the server's
        ``AsyncFdatasync``): write what is pending and start its writeback as ``write`` does,
        then pass the log's file descriptor to ``submit``, which starts an fdatasync of it
        and returns at once. Returns False if there was nothing to make durable (nothing was
        submitted); else the caller must call ``sync_done`` with the fdatasync's result before
        it counts anything written so far as durable, and before the next ``sync_start``.

        In between, ``save`` is fine and so are ``write`` and ``sync``: a write made meanwhile
        first fdatasyncs (on this thread) what the submitted fdatasync may not have covered yet,
        as every write does.
        """
        with self._sync_mu:
            if self._sync_started_at is not None:
                raise WalAppendError("wal: sync_start while a started sync is not done")
            self._write_pending(writeback=True)
            if not self._dirty:
                return False
            if self._no_fsync:
                self._fdatasync()  # a no-op that marks the written bytes clean
                return False
            try:
                submit(self._fd)
            except OSError as exc:
                self._failed = exc
                raise WalFatalError(f"wal: fdatasync failed to start: {exc}") from exc
            self._sync_started_at = self._writes
            return True

    def sync_done(self, result: int) -> None:
        """The fdatasync that ``sync_start`` submitted finished with ``result`` (0, or a
        negative errno). On success everything written before ``sync_start`` returned is
        durable; a failure makes the WAL unusable (``WalFatalError``), as a failed ``sync``."""
        with self._sync_mu:
            started_at, self._sync_started_at = self._sync_started_at, None
            if started_at is None:
                raise WalAppendError("wal: sync_done without sync_start")
            if result < 0:
                exc = OSError(-result, os.strerror(-result))
                self._failed = exc
                raise WalFatalError(f"wal: fdatasync failed: {exc}") from exc
            self._sync_count += 1
            if self._writes == started_at:
                self._dirty = False  # nothing was written since: all of it is durable

    def release_to(self, index: Index) -> None:
        """Delete the segments whose entries all precede ``index`` (never the one holding it).

        ``index`` must not exceed the latest durable snapshot marker: the entries after the
        snapshot must stay.
        """
        with self._sync_mu:
            self._check_open()
            self._check_not_failed()
            if self._dirty:
                self._fdatasync()
            if index > self._written_snapshot.index:
                raise WalAppendError(
                    f"wal: release_to({index}) beyond the durable snapshot marker "
                    f"{self._written_snapshot.index}"
                )
            keep_from = 0
            for k, seg in enumerate(self._segments):
                if seg.first_index > index:
                    break
                keep_from = k
            if keep_from == 0:
                return
            try:
                for seg in self._segments[:keep_from]:
                    os.remove(seg.path)
                fsync_dir(self._dir)
            except OSError as exc:
                self._failed = exc
                raise WalFatalError(f"wal: releasing segments failed: {exc}") from exc
            del self._segments[:keep_from]

    def close(self) -> None:
        """Sync what is pending (unless the WAL failed) and close the files."""
        with self._sync_mu:
            with self._mu:
                if self._closed:
                    return
                buf = self._pending
                self._pending = RecordBuffer()
                self._closed = True
            try:
                if self._failed is None:
                    if buf:
                        self._write(buf, writeback=False)
                    if self._dirty:
                        self._fdatasync()
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                os.close(self._lock_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- introspection -------------------------------------------------------------------

    @property
    def metadata(self) -> bytes:
        return self._metadata

    @property
    def sync_count(self) -> int:
        """How many fdatasync calls the WAL has made (one per written batch; none with
        ``unsafe_no_fsync``)."""
        return self._sync_count

    def segment_names(self) -> list[str]:
        """The names of the live segment files, oldest first."""
        with self._sync_mu:
            return [os.path.basename(s.path) for s in self._segments]

    # -- internals (caller holds _sync_mu) -------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise WalClosedError("wal: closed")

    def _check_not_failed(self) -> None:
        if self._failed is not None:
            raise WalFatalError(f"wal: unusable after an earlier failure: {self._failed}")

    def _write_pending(self, *, writeback: bool) -> None:
        with self._mu:
            self._check_open()
            self._check_not_failed()
            buf = self._pending
            if not buf:
                return
            self._pending = RecordBuffer()
            last_index = self._saved_last_index
            hard_state = self._saved_hard_state
            snapshot = self._saved_snapshot
        self._write(buf, writeback=writeback)
        self._written_last_index = last_index
        self._written_hard_state = hard_state
        self._written_snapshot = snapshot

    def _write(self, buf: RecordBuffer, *, writeback: bool) -> None:
        # Each write is fdatasynced before the next one starts (the reader's torn-tail rule
        # in _scan relies on it), and before a cut names the next segment.
        if self._dirty:
            self._fdatasync()
        try:
            if (
                self._offset > self._opening_end
                and self._offset + len(buf) > self._segment_size_bytes
            ):
                self._cut()
            offset = self._offset
            pwrite_all(self._fd, buf.seal(offset), offset)
            self._offset += len(buf)
            self._dirty = True
            self._writes += 1
            if writeback and not self._no_fsync:
                start_writeback(self._fd, offset, len(buf))
        except OSError as exc:
            self._failed = exc
            raise WalFatalError(f"wal: write failed: {exc}") from exc

    def _fdatasync(self) -> None:
        if self._no_fsync:
            self._dirty = False  # --unsafe-no-fsync: the kernel has the pages, that is all
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self._failed = exc
            raise WalFatalError(f"wal: fdatasync failed: {exc}") from exc
        self._dirty = False
        self._sync_count += 1

    def _cut(self) -> None:
        """Start the next segment; the current one was fdatasynced to its end before."""
        last = self._segments[-1]
        old_fd = self._fd
        self._start_segment(seq=last.seq + 1, first_index=self._written_last_index + 1)
        os.close(old_fd)

    def _start_segment(self, *, seq: int, first_index: int) -> None:
        name = segment_name(seq, first_index)
        path = os.path.join(self._dir, name)
        tmp = path + _TMP_SUFFIX
        buf = RecordBuffer()
        buf.add_segment_header(
            SegmentHeader(seq=seq, first_index=Index(first_index), metadata=self._metadata)
        )
        if self._written_hard_state != HardState():
            buf.add_hard_state(self._written_hard_state)
        if self._written_snapshot.index != 0:
            buf.add_snapshot(self._written_snapshot)
        opening_end = len(buf)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            preallocate(fd, self._segment_size_bytes)
            pwrite_all(fd, buf.seal(0), 0)
            os.fsync(fd)
            os.rename(tmp, path)
            fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._segments.append(_Segment(path, seq, first_index))
        self._offset = len(buf)
        self._opening_end = opening_end
