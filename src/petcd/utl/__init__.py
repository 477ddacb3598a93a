"""petcd.utl: ``petcdutl``, the offline tool (etcdutl 3.5) on data dirs and snapshot files.

Library entry points (the command line in ``petcd.utl.main`` is a thin layer over them)::

    snapshot.status(path) -> SnapshotStatus
    snapshot.restore(RestoreConfig(...), progress=None) -> RestoreResult
    defrag.defrag_data_dir(data_dir) -> DefragResult
    hashkv.hash_kv(file_or_data_dir, revision=0) -> HashKV
"""

from petcd.utl.defrag import DefragResult, DefragSizes, defrag_data_dir
from petcd.utl.errors import (
    BadClusterConfigError,
    DataDirInUseError,
    DataDirInvalidError,
    DataDirNotEmptyError,
    EtcdFileError,
    RevisionError,
    SnapshotCorruptError,
    SnapshotHashMismatchError,
    SnapshotHashMissingError,
    UtlError,
    WalDirExistsError,
)
from petcd.utl.hashkv import HashKV, hash_kv
from petcd.utl.snapshot import (
    RestoreConfig,
    RestoredMember,
    RestoreResult,
    SnapshotStatus,
    restore,
    status,
)

__all__ = [
    "BadClusterConfigError",
    "DataDirInUseError",
    "DataDirInvalidError",
    "DataDirNotEmptyError",
    "DefragResult",
    "DefragSizes",
    "EtcdFileError",
    "HashKV",
    "RestoreConfig",
    "RestoreResult",
    "RestoredMember",
    "RevisionError",
    "SnapshotCorruptError",
    "SnapshotHashMismatchError",
    "SnapshotHashMissingError",
    "SnapshotStatus",
    "UtlError",
    "WalDirExistsError",
    "defrag_data_dir",
    "hash_kv",
    "restore",
    "status",
]
