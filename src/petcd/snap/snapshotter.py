"""Snapshot files: the state machine's data plus the Raft metadata, written atomically.

Theory of operation
-------------------
The file format is specified in docs/enhancements/0001-wal-format.md ("Snapshot files")::

    +----------+---------+--------+-----------+-----------------+--------------------------+
    | PETCDSNP | version | meta m | metadata  | data (d bytes)  | d | crc | tcrc | PETCDEND |
    +----------+---------+--------+-----------+-----------------+--------------------------+
    0          8         12       16          16+m              16+m+d               40+m+d

A ``Snapshotter`` owns one directory. ``save`` writes ``<term>-<index>.snap.tmp``: the header,
then the data, produced by the caller's callback writing into the binary file object it is
given (through ``write`` or straight to its ``fileno()``, as LMDB's ``copyfd`` does), then the
trailer; it fsyncs the file, renames it into place and fsyncs the directory. So a snapshot file
is either absent or whole, and a crash leaves at most a ``*.tmp`` file, deleted on the next start.
The CRC is computed by reading the data back after the callback returns, so it covers what is on
the file, whatever way the callback wrote it.

``load_newest`` walks the files newest first (highest index, then term), optionally only those
the WAL has markers for, verifies each, renames a failing one to ``*.broken``, reports it (log
warning and the optional ``on_corrupt`` callback) and goes on to the next. It never modifies a
good file. After a save, all but the newest ``keep`` snapshot files are deleted.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from petcd.raft.types import SnapshotMetadata
from petcd.snap.errors import SnapCorruptError, SnapError
from petcd.wal.fileutil import StrPath, fsync_dir, pwrite_all
from petcd.wal.record import decode_snapshot_metadata, encode_snapshot_metadata

log = logging.getLogger("petcd.snap")

FORMAT_VERSION = 1
MAGIC = b"PETCDSNP"
END_MAGIC = b"PETCDEND"
DEFAULT_KEEP = 5
_HEADER = struct.Struct("<8sII")  # magic, version, metadata length
_TRAILER_HEAD = struct.Struct("<QI")  # data length, crc of everything before the trailer
_TRAILER = struct.Struct("<QII8s")  # ... plus crc of the 12 bytes before it, end magic
_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_CHUNK = 1 << 20


def snapshot_name(metadata: SnapshotMetadata) -> str:
    """``%016x-%016x.snap`` (term, index), as etcd names its snapshot files."""
    return f"{metadata.term:016x}-{metadata.index:016x}.snap"


def _crc_of_range(fd: int, start: int, end: int, crc: int = 0) -> int:
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
        if not chunk:
            raise SnapError("snap: file shorter than expected while computing its CRC")
        crc = zlib.crc32(chunk, crc)
        pos += len(chunk)
    return crc


class _SectionReader(io.RawIOBase):
    """A read-only, seekable view of ``[start, start + size)`` of a file."""

    def __init__(self, path: str, start: int, size: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._start + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    """A verified snapshot file: its Raft metadata and where its data lies in the file."""

    metadata: SnapshotMetadata
    path: str
    data_offset: int
    data_size_bytes: int

    def open_data(self) -> BinaryIO:
        """A buffered binary reader over the state machine data (close it when done)."""
        raw = _SectionReader(self.path, self.data_offset, self.data_size_bytes)
        return io.BufferedReader(raw, _CHUNK)

    def read_data(self) -> bytes:
        with self.open_data() as f:
            return f.read()

    def copy_data_to(self, fileobj: BinaryIO) -> None:
        """Write the data to ``fileobj`` in chunks."""
        with self.open_data() as f:
            while chunk := f.read(_CHUNK):
                fileobj.write(chunk)

    def extract_to(self, path: StrPath) -> None:
        """Write the data to ``path`` atomically (temp file, fsync, rename, fsync directory):
        how the server replaces its backend file with a snapshot's."""
        target = os.fspath(path)
        tmp = target + ".tmp"
        with open(tmp, "wb") as out:
            self.copy_data_to(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        fsync_dir(os.path.dirname(os.path.abspath(target)))


def read_snapshot_file(path: StrPath) -> LoadedSnapshot:
    """Verify one snapshot file; raises ``SnapCorruptError`` naming it if any check fails."""
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SnapCorruptError(p, f"cannot open: {exc}") from exc
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER.size + _TRAILER.size:
            raise SnapCorruptError(p, "file too short")
        magic, version, meta_len = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
        if magic != MAGIC:
            raise SnapCorruptError(p, "bad magic")
        if version != FORMAT_VERSION:
            raise SnapCorruptError(p, f"unsupported format version {version}")
        trailer = os.pread(fd, _TRAILER.size, size - _TRAILER.size)
        data_len, crc, trailer_crc, end_magic = _TRAILER.unpack(trailer)
        if end_magic != END_MAGIC or zlib.crc32(trailer[: _TRAILER_HEAD.size]) != trailer_crc:
            raise SnapCorruptError(p, "bad trailer (file incomplete or damaged)")
        data_offset = _HEADER.size + meta_len
        if data_offset + data_len + _TRAILER.size != size:
            raise SnapCorruptError(p, "section lengths do not add up to the file size")
        if _crc_of_range(fd, 0, data_offset + data_len) != crc:
            raise SnapCorruptError(p, "CRC mismatch")
        try:
            metadata = decode_snapshot_metadata(os.pread(fd, meta_len, _HEADER.size))
        except ValueError as exc:
            raise SnapCorruptError(p, f"bad metadata: {exc}") from exc
    finally:
        os.close(fd)
    if os.path.basename(p) != snapshot_name(metadata):
        raise SnapCorruptError(
            p, f"name does not match term {metadata.term} index {metadata.index}"
        )
    return LoadedSnapshot(metadata, p, data_offset, data_len)


class Snapshotter:
    """The snapshot files of one member (etcd's ``member/snap``)."""

    def __init__(
        self,
        dirpath: StrPath,
        *,
        keep: int = DEFAULT_KEEP,
        on_corrupt: Callable[[SnapCorruptError], None] | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._dir = os.fspath(dirpath)
        self._keep = keep
        self._on_corrupt = on_corrupt
        os.makedirs(self._dir, exist_ok=True)
        for name in os.listdir(self._dir):
            if name.endswith(".snap.tmp"):
                os.remove(os.path.join(self._dir, name))

    @property
    def dirpath(self) -> str:
        return self._dir

    def save(self, metadata: SnapshotMetadata, write_data: Callable[[BinaryIO], None]) -> str:
        """Write a snapshot file atomically; ``write_data`` writes the state machine data into
        the file object it is given. Returns the file's path. Then purges old files."""
        path = os.path.join(self._dir, snapshot_name(metadata))
        tmp = path + ".tmp"
        meta = encode_snapshot_metadata(metadata)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(meta)) + meta
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            pwrite_all(fd, header, 0)
            os.lseek(fd, len(header), os.SEEK_SET)
            with os.fdopen(fd, "wb", closefd=False) as f:
                write_data(f)
                f.flush()
            end = os.fstat(fd).st_size
            crc = _crc_of_range(fd, 0, end)
            head = _TRAILER_HEAD.pack(end - len(header), crc)
            pwrite_all(fd, head + struct.pack("<I8s", zlib.crc32(head), END_MAGIC), end)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.remove(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        fsync_dir(self._dir)
        self.purge()
        return path

    def save_bytes(self, metadata: SnapshotMetadata, data: bytes) -> str:
        """``save`` with the data given in memory."""

        def write(f: BinaryIO) -> None:
            f.write(data)

        return self.save(metadata, write)

    def names(self) -> list[str]:
        """The snapshot file names, newest (highest index, then term) first."""
        found = []
        for name in os.listdir(self._dir):
            m = _NAME_RE.match(name)
            if m:
                found.append((int(m.group(2), 16), int(m.group(1), 16), name))
        found.sort(reverse=True)
        return [name for _, _, name in found]

    def load_newest(
        self, allowed: Iterable[SnapshotMetadata] | None = None
    ) -> LoadedSnapshot | None:
        """The newest valid snapshot (among ``allowed``, matched on index and term, if given),
        or None. Corrupt files on the way are renamed to ``*.broken`` and reported."""
        wanted = None if allowed is None else {(m.index, m.term) for m in allowed}
        for name in self.names():
            m = _NAME_RE.match(name)
            assert m is not None
            if wanted is not None and (int(m.group(2), 16), int(m.group(1), 16)) not in wanted:
                continue
            path = os.path.join(self._dir, name)
            try:
                loaded = read_snapshot_file(path)
                if snapshot_name(loaded.metadata) != name:
                    raise SnapCorruptError(path, "metadata does not match the file name")
                return loaded
            except SnapCorruptError as exc:
                self._report(exc)
        return None

    def purge(self) -> list[str]:
        """Delete all but the newest ``keep`` snapshot files; returns the deleted names."""
        doomed = self.names()[self._keep :]
        for name in doomed:
            os.remove(os.path.join(self._dir, name))
        if doomed:
            fsync_dir(self._dir)
        return doomed

    def _report(self, exc: SnapCorruptError) -> None:
        log.warning("%s; renaming it to %s.broken", exc, os.path.basename(exc.path))
        try:
            os.replace(exc.path, exc.path + ".broken")
            fsync_dir(self._dir)
        except FileNotFoundError:
            pass
        if self._on_corrupt is not None:
            self._on_corrupt(exc)
