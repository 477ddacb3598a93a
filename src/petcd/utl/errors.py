"""Errors of ``petcdutl``'s operations (``petcd.utl``).

Theory of operation: the library functions of this package (``snapshot.status``,
``snapshot.restore``, ``defrag.defrag_data_dir``, ``hashkv.hash_kv``) raise a :class:`UtlError`
subclass for every expected failure, with etcdutl's message text where etcdutl has one, so
the command line prints ``Error: <message>`` exactly as etcdutl would. ``main`` maps them to
exit codes; nothing else in the package prints or exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from petcd.ctl.command import Command


class UtlError(Exception):
    """An expected failure of a petcdutl operation; ``str(e)`` is the user-facing message."""


class DataDirNotEmptyError(UtlError):
    """restore: the target data dir exists and is not empty (etcd never overwrites one)."""

    def __init__(self, data_dir: str) -> None:
        super().__init__(f'data-dir "{data_dir}" not empty or could not be read')


class WalDirExistsError(UtlError):
    """restore: the explicit --wal-dir already exists."""

    def __init__(self, wal_dir: str) -> None:
        super().__init__(f'wal-dir "{wal_dir}" exists')


class SnapshotHashMissingError(UtlError):
    """restore: the file has no sha256 trailer (a copied ``db``) and no --skip-hash-check."""

    def __init__(self) -> None:
        super().__init__("snapshot missing hash but --skip-hash-check=false")


class SnapshotHashMismatchError(UtlError):
    """restore: the sha256 trailer does not match the data: the file is damaged."""

    def __init__(self, expected: bytes, got: bytes) -> None:
        # etcd prints both digests as Go byte slices ("[1 2 3 ...]").
        super().__init__(
            f"expected sha256 [{' '.join(str(b) for b in expected)}], "
            f"got [{' '.join(str(b) for b in got)}]"
        )


class SnapshotCorruptError(UtlError):
    """The file is not a readable petcd backend (not LMDB, truncated, or damaged)."""


class EtcdFileError(SnapshotCorruptError):
    """A command that works on petcd's files only was given etcd's (bbolt) file."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} is an etcd (bbolt) file: this command reads petcd's files only; convert it "
            "with `petcdutl snapshot restore` first"
        )


class BadClusterConfigError(UtlError):
    """restore: --name, --initial-cluster and --initial-advertise-peer-urls disagree."""


class DataDirInUseError(UtlError):
    """defrag: a running member holds the data dir's WAL lock."""


class DataDirInvalidError(UtlError):
    """The data dir has no member backend (``member/snap/db``)."""


class RevisionError(UtlError):
    """hashkv: the requested revision is compacted or in the future."""


class UsageError(Exception):
    """The command line is wrong in a way cobra reports: ``Error: <message>``, the command's
    usage, exit 1 (not a UtlError: it never comes from an operation)."""

    def __init__(self, message: str, command: Command) -> None:
        super().__init__(message)
        self.message = message
        self.command = command
