"""petcd.snap — snapshot files: the state machine's data plus Raft metadata, written atomically.

The file format is specified in docs/enhancements/0001-wal-format.md. Typical use::

    snaps = Snapshotter(data_dir / "member" / "snap")
    snaps.save(metadata, backend.copy_to)            # temp file, fsync, rename, fsync dir
    loaded = snaps.load_newest(wal.snapshot_markers(wal_dir))
    if loaded is not None:
        loaded.extract_to(backend_path)              # or loaded.open_data() / copy_data_to()
"""

from petcd.snap.bbolt import BoltFile
from petcd.snap.errors import BoltError, SnapCorruptError, SnapError
from petcd.snap.snapshotter import (
    DEFAULT_KEEP,
    LoadedSnapshot,
    Snapshotter,
    read_snapshot_file,
    snapshot_name,
)

__all__ = [
    "DEFAULT_KEEP",
    "BoltError",
    "BoltFile",
    "LoadedSnapshot",
    "SnapCorruptError",
    "SnapError",
    "Snapshotter",
    "read_snapshot_file",
    "snapshot_name",
]
