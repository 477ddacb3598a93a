"""Named errors of the member (``petcd.server``).

Request validation errors that etcd's mvcc layer also raises (empty key, too many txn ops,
duplicate txn keys ...) are ``petcd.mvcc.errors`` classes; they are not repeated here.

Theory of operation
-------------------
Expected outcomes of the member's work are exceptions named here; ``petcd.grpc`` is the only
place that turns them into gRPC status codes and etcd's messages, so each class documents the
etcd error it stands for. Invariant violations are assertions, never one of these.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base class of every expected error raised by ``petcd.server``."""


# --- configuration -------------------------------------------------------------------------


class ConfigError(ServerError):
    """The configuration (flags, environment, config file) is invalid; etcd exits with 1."""


class FlagError(ConfigError):
    """A command-line flag is unknown or malformed; etcd prints usage and exits with 2."""


class UnsupportedFeatureError(ConfigError):
    """A flag names a feature petcd does not implement yet (TLS, auth options ...)."""


# --- requests --------------------------------------------------------------------------------


class RequestError(ServerError):
    """A client request failed; nothing was changed."""


class NoLeaderError(RequestError):
    """etcd: ``etcdserver: no leader`` (UNAVAILABLE)."""


class NotLeaderError(RequestError):
    """etcd: ``etcdserver: not leader`` (FAILED_PRECONDITION): a leader-only request (lease
    keep-alive, time-to-live) reached a follower. The gRPC layer forwards it to the leader."""


class BadLeaderTransfereeError(RequestError):
    """etcd: ``etcdserver: bad leader transferee`` (FAILED_PRECONDITION)."""


class LeaderTransferTimeoutError(RequestError):
    """etcd: ``etcdserver: request timed out, leader transfer took too long`` (UNAVAILABLE)."""


class LeaderChangedError(RequestError):
    """etcd: ``etcdserver: leader changed`` (UNAVAILABLE): the leader a proposal went to lost
    its leadership before the proposal was answered. The outcome is unknown (the new leader may
    still commit it), as after a timeout, but the client learns it at once and can retry."""


class RequestTimeoutError(RequestError):
    """etcd: ``etcdserver: request timed out`` (UNAVAILABLE)."""


class StoppedError(RequestError):
    """etcd: ``etcdserver: server stopped`` (UNAVAILABLE)."""


class SnapshotConvertError(RequestError):
    """The backend's copy could not be converted into etcd's snapshot format (UNKNOWN, as etcd
    answers a snapshot that cannot be read); the reason is the converter's."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot convert the snapshot to etcd's format: {reason}")


class RequestTooLargeError(RequestError):
    """etcd: ``etcdserver: request is too large`` (INVALID_ARGUMENT)."""


class NoSpaceError(RequestError):
    """etcd: ``etcdserver: mvcc: database space exceeded`` (RESOURCE_EXHAUSTED)."""


class CorruptError(RequestError):
    """etcd: ``etcdserver: corrupt cluster`` (DATA_LOSS): a write while a CORRUPT alarm is
    active (``petcd.server.corrupt``)."""


# --- membership (etcd's api/membership errors as rpctypes reports them) -----------------------


class MembershipError(RequestError):
    """A Cluster request (MemberAdd/Remove/Update/Promote) was refused; nothing changed."""


class MemberExistError(MembershipError):
    """etcd: ``etcdserver: member ID already exist`` (FAILED_PRECONDITION)."""


class PeerURLExistError(MembershipError):
    """etcd: ``etcdserver: Peer URLs already exists`` (FAILED_PRECONDITION)."""


class MemberNotFoundError(MembershipError):
    """etcd: ``etcdserver: member not found`` (NOT_FOUND); also for a removed id."""


class NotEnoughStartedMembersError(MembershipError):
    """etcd: ``etcdserver: re-configuration failed due to not enough started members``
    (FAILED_PRECONDITION): --strict-reconfig-check refused a change."""


class UnhealthyClusterError(MembershipError):
    """etcd: ``etcdserver: unhealthy cluster`` (UNAVAILABLE): too few members connected."""


class LearnerNotReadyError(MembershipError):
    """etcd: ``etcdserver: can only promote a learner member which is in sync with leader``
    (FAILED_PRECONDITION)."""


class MemberNotLearnerError(MembershipError):
    """etcd: ``etcdserver: can only promote a learner member`` (FAILED_PRECONDITION)."""


class TooManyLearnersError(MembershipError):
    """etcd: ``etcdserver: too many learner members in cluster`` (FAILED_PRECONDITION)."""


class MemberRemovedError(ServerError):
    """This member was removed from the cluster: the process stops (etcd exits 0)."""


class JoinError(ConfigError):
    """--initial-cluster-state=existing could not learn the cluster from its peers."""
