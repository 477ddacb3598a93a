"""Named errors of petcd.backend.

Theory of operation
-------------------
Expected outcomes of backend operations that a caller may handle. Anything else raised from
LMDB (I/O errors, corruption) is fatal for the member: the server logs it and exits.
"""

from __future__ import annotations


class BackendError(Exception):
    """Base class of the backend's named errors."""


class BackendClosedError(BackendError):
    """The backend was used after ``close()``."""

    def __init__(self) -> None:
        super().__init__("backend: closed")


class DatabaseSpaceExceededError(BackendError):
    """LMDB's map is full: the batch could not be committed.

    etcd's text for the quota alarm is ``etcdserver: mvcc: database space exceeded``; the server
    should keep the database below ``map_size_bytes`` with its quota so that this never happens.
    """

    def __init__(self) -> None:
        super().__init__("etcdserver: mvcc: database space exceeded")


class UnknownBucketError(BackendError):
    """A bucket name that the backend does not have."""

    def __init__(self, bucket: str) -> None:
        super().__init__(f"backend: unknown bucket {bucket!r}")
        self.bucket = bucket
