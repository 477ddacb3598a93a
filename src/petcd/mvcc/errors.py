"""Named errors of petcd.mvcc, each carrying etcd's exact message text.

Theory of operation
-------------------
Every expected failure of a request is one of these exceptions. ``str(error)`` is etcd's text
(the gRPC status message clients match on) and ``grpc_code`` names the gRPC status code etcd
uses for it, so that petcd.grpc can map them mechanically. Raising one of these from
``KVStore.apply`` guarantees that nothing was changed (the consistent index is still recorded:
the raft entry was applied, with an error result).
"""

from __future__ import annotations


class MvccError(Exception):
    """Base class: an expected failure of an mvcc request."""

    message = "etcdserver: mvcc error"
    grpc_code = "UNKNOWN"

    def __init__(self) -> None:
        super().__init__(self.message)


class CompactedError(MvccError):
    message = "etcdserver: mvcc: required revision has been compacted"
    grpc_code = "OUT_OF_RANGE"

    def __init__(self, compact_revision: int = 0) -> None:
        super().__init__()
        self.compact_revision = compact_revision


class FutureRevisionError(MvccError):
    message = "etcdserver: mvcc: required revision is a future revision"
    grpc_code = "OUT_OF_RANGE"


class EmptyKeyError(MvccError):
    message = "etcdserver: key is not provided"
    grpc_code = "INVALID_ARGUMENT"


class KeyNotFoundError(MvccError):
    message = "etcdserver: key not found"
    grpc_code = "INVALID_ARGUMENT"


class ValueProvidedError(MvccError):
    message = "etcdserver: value is provided"
    grpc_code = "INVALID_ARGUMENT"


class LeaseProvidedError(MvccError):
    message = "etcdserver: lease is provided"
    grpc_code = "INVALID_ARGUMENT"


class TooManyOpsError(MvccError):
    message = "etcdserver: too many operations in txn request"
    grpc_code = "INVALID_ARGUMENT"


class DuplicateKeyError(MvccError):
    message = "etcdserver: duplicate key given in txn request"
    grpc_code = "INVALID_ARGUMENT"


class InvalidSortOptionError(MvccError):
    message = "etcdserver: invalid sort option"
    grpc_code = "INVALID_ARGUMENT"


class LeaseNotFoundError(MvccError):
    message = "etcdserver: requested lease not found"
    grpc_code = "NOT_FOUND"


class WatcherNotFoundError(MvccError):
    """cancel() of a watcher that the store does not know (already cancelled)."""

    message = "mvcc: watcher does not exist"
    grpc_code = "NOT_FOUND"
