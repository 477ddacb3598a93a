"""Data corruption checks: etcd's ``--experimental-initial-corrupt-check``,
``--experimental-corrupt-check-time`` and ``--experimental-compact-hash-check-enabled``, and
what the CORRUPT alarm refuses.

Theory of operation
-------------------
Every member applies the same log, so at the same revision (with the same compaction) every
member's HashKV must be equal. A difference means that some member's data went bad behind
raft's back (a disk, a bug, a hand edit). Two checks compare hashes, as etcd 3.5 does:

- **Initial check** (``initial_check``), on a member restarting on an existing data dir with
  ``--experimental-initial-corrupt-check``, after its backend is open and BEFORE it starts
  raft, the peer transport or the client listeners. It hashes its own store at its current
  revision ``rev`` and asks every other member for its hash at ``rev``. A peer whose hash
  differs with the same compact revision is a mismatch (a warning naming both members, their
  revisions, compact revisions and hashes); then the member refuses to start with
  ``"<member id> found data inconsistency with peers"`` (the process exits 1). A different
  hash with a different compact revision is only a warning; a peer behind ``rev`` (future
  revision), one that compacted past it, one of another cluster or one that cannot be
  reached is skipped with a warning.
- **Periodic check** (``periodic_check``, every ``--experimental-corrupt-check-time`` on the
  leader only): hash at the current revision ``rev`` (h1), ask the peers for their hash at
  ``rev``, wait for a linearizable read barrier, hash again (h2). It finds a mismatch when
  the leader's own hash changed at an unchanged revision and compaction, when a follower
  reports a revision or a compact revision ahead of the leader's, or when a follower at the
  leader's compact revision reports a different hash. Then it raises the CORRUPT alarm through
  raft, for member id 0: etcd 3.5 does not decide which member is bad (it would need a quorum
  vote, planned for etcd 3.6), so neither do we.
- **Compaction hash check** (``CompactHashChecker``, with
  ``--experimental-compact-hash-check-enabled``, every
  ``--experimental-compact-hash-check-time`` on the leader only): every member records
  a hash when it finishes a compaction (``petcd.mvcc.kvstore``: HashKV at the compact revision
  R, with the previous compact revision), and HashKV(R) answers that record. The leader takes
  its records not checked yet, newest first, and asks every peer for HashKV(R). A peer that
  gave no answer, or one at another compact revision (no record for R: it restarted, or its
  compaction was interrupted), is skipped; one with the same compact revision and another hash
  is a mismatch: the leader raises the CORRUPT alarm for member id 0 (etcd 3.5, as above) and
  stops. When every peer matched at R, R is the newest revision checked and the pass stops;
  otherwise it goes on with the next older record. It ends with ``finished compaction hash
  check`` and the number of records it went through. The records are in memory only: the
  check covers compactions that happened while the leader and the peers were up.

While a CORRUPT alarm is active, the apply path refuses what etcd's corrupt applier refuses
(``refused_when_corrupt``): puts, deletes, write transactions, compactions, lease grants and
revokes fail with ``etcdserver: corrupt cluster`` (``CorruptError``, gRPC DATA_LOSS) on every
member alike, because the alarm itself is replicated. Reads (and read-only transactions, which
etcd serves without raft) still work. ``etcdctl alarm disarm`` clears the alarm.

How the hashes travel
---------------------
etcd asks its peers over the peer HTTP listener (``GET /members/hashkv``). petcd's peer
transport is its own TCP protocol (docs/enhancements/0005-peer-transport.md); a new message
type there would be a wire-protocol change. Instead a member calls its peers'
``Maintenance.HashKV`` on the client URLs they published in the member list (the gRPC
fetcher lives in ``petcd.grpc.peer_hash``: the server layer does not speak gRPC itself). The
answer carries what etcd's peer endpoint carries (hash, compact revision, header revision)
plus the cluster id, which stands in for etcd's ``X-Etcd-Cluster-ID`` check. Costs of this
choice, accepted: a member that has not published client URLs yet (before its first start
completed) is skipped like an unreachable one, and ``https`` client URLs need the member's
client TLS (``--trusted-ca-file`` and ``--client-cert-file`` or ``--cert-file``, see
``petcd.grpc.peer_hash``; with ``--auto-tls`` they are unreachable). Auth does not apply: the
peer's HashKV answers a member's request without a token. Benefits: no protocol change, and
the same HashKV every client sees.

Cost: ``Hasher.hash_kv`` is the member's HashKV: what it needs from the in-memory key index
is read on the event loop (about 0.3 s per 1,000,000 keys, and only on a compacted store), the
key bucket is walked in a worker thread over a snapshot (about 1 s per 1,000,000 keys), during
which the member keeps serving and heartbeating.

This module owns the comparison rules (pure functions over results, tested with fakes) and
the three drivers; it never touches raft or the backend itself: the member is reached through
the narrow ``Hasher`` protocol, the peers through ``PeerHashFetcher``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from petcd.backend import META, Backend
from petcd.mvcc.kvstore import SCHEDULED_COMPACT_KEY, KVStore
from petcd.mvcc.requests import (
    CompactionRequest,
    DeleteRangeRequest,
    HashKVResult,
    PutRequest,
    TxnRequest,
)
from petcd.server import entry as entry_codec
from petcd.server.errors import ServerError
from petcd.server.ids import format_id
from petcd.server.log import Logger

if TYPE_CHECKING:
    from petcd.server.member import Member

ALARM_ACTIVATE = 1  # etcd's AlarmRequest.AlarmAction ACTIVATE
ALARM_CORRUPT = 2  # etcd's AlarmType CORRUPT


class InitialCheckError(ServerError):
    """The initial check found a peer whose hash differs: the member must not start."""

    def __init__(self, member_id: int) -> None:
        super().__init__(f"{format_id(member_id)} found data inconsistency with peers")
        self.member_id = member_id


# --- what the checks compare ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerTarget:
    """A peer to ask: its member id and the client URLs it published."""

    member_id: int
    endpoints: tuple[str, ...]


class FailureKind(enum.Enum):
    FUTURE_REVISION = "future revision"  # the peer is behind the requested revision
    COMPACTED = "compacted"  # the peer compacted past the requested revision
    CLUSTER_ID_MISMATCH = "cluster id mismatch"
    UNREACHABLE = "unreachable"  # every endpoint failed otherwise (or none usable)


@dataclass(frozen=True, slots=True)
class PeerHash:
    """A peer's answer to HashKV(revision)."""

    member_id: int
    endpoints: tuple[str, ...]
    revision: int  # the peer's current revision (its response header)
    hash: int
    compact_revision: int


@dataclass(frozen=True, slots=True)
class PeerFailure:
    """A peer that gave no hash, and why."""

    member_id: int
    endpoints: tuple[str, ...]
    kind: FailureKind
    error: str


PeerResult = PeerHash | PeerFailure


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check noticed: etcd's log message and fields; ``mismatch`` counts it."""

    level: str  # "warn" or "info"
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    mismatch: bool = False


_FAILURE_MESSAGES = {
    FailureKind.FUTURE_REVISION: "cannot fetch hash from slow remote peer",
    FailureKind.COMPACTED: "cannot fetch hash from remote peer; local member is behind",
    FailureKind.CLUSTER_ID_MISMATCH: "cluster ID mismatch",
}


def initial_findings(
    local_id: int, local: HashKVResult, local_revision: int, peers: Sequence[PeerResult]
) -> list[Finding]:
    """etcd's InitialCheck rules: compare the local hash at ``local_revision`` with the peers'."""
    out: list[Finding] = []
    base = {
        "local-member-id": format_id(local_id),
        "local-member-revision": local_revision,
        "local-member-compact-revision": local.compact_revision,
        "local-member-hash": local.hash,
    }
    for p in peers:
        if isinstance(p, PeerHash):
            if p.hash == local.hash:
                continue
            fields = {
                **base,
                "remote-peer-id": format_id(p.member_id),
                "remote-peer-endpoints": list(p.endpoints),
                "remote-peer-revision": p.revision,
                "remote-peer-compact-revision": p.compact_revision,
                "remote-peer-hash": p.hash,
            }
            if p.compact_revision == local.compact_revision:
                out.append(
                    Finding("warn", "found different hash values from remote peer", fields, True)
                )
            else:
                out.append(
                    Finding(
                        "warn", "found different compact revision values from remote peer", fields
                    )
                )
            continue
        fields = {
            **base,
            "remote-peer-id": format_id(p.member_id),
            "remote-peer-endpoints": list(p.endpoints),
            "error": p.error,
        }
        message = _FAILURE_MESSAGES.get(p.kind)
        if message is not None:  # an unreachable peer: the fetcher logged each failed attempt
            out.append(Finding("warn", message, fields))
    return out


def periodic_findings(
    first: HashKVResult,
    first_revision: int,
    second: HashKVResult,
    second_revision: int,
    peers: Sequence[PeerResult],
) -> list[Finding]:
    """etcd's PeriodicCheck rules on the leader.

    ``first`` is the leader's hash at ``first_revision`` (its current revision when the check
    began; the peers were asked for that revision), ``second`` its hash at its current
    revision after a linearizable read barrier.
    """
    out: list[Finding] = []
    if (
        second.hash != first.hash
        and second_revision == first_revision
        and first.compact_revision == second.compact_revision
    ):
        out.append(
            Finding(
                "warn",
                "found hash mismatch",
                {
                    "revision-1": first_revision,
                    "compact-revision-1": first.compact_revision,
                    "hash-1": first.hash,
                    "revision-2": second_revision,
                    "compact-revision-2": second.compact_revision,
                    "hash-2": second.hash,
                },
                True,
            )
        )
    checked = 0
    for p in peers:
        if not isinstance(p, PeerHash):
            continue
        checked += 1
        peer_id = format_id(p.member_id)
        if p.revision > second_revision:
            out.append(
                Finding(
                    "warn",
                    "revision from follower must be less than or equal to leader's",
                    {
                        "leader-revision": second_revision,
                        "follower-revision": p.revision,
                        "follower-peer-id": peer_id,
                    },
                    True,
                )
            )
        if p.compact_revision > second.compact_revision:
            out.append(
                Finding(
                    "warn",
                    "compact revision from follower must be less than or equal to leader's",
                    {
                        "leader-compact-revision": second.compact_revision,
                        "follower-compact-revision": p.compact_revision,
                        "follower-peer-id": peer_id,
                    },
                    True,
                )
            )
        if p.compact_revision == first.compact_revision and p.hash != first.hash:
            out.append(
                Finding(
                    "warn",
                    "same compact revision then hashes must match",
                    {
                        "leader-compact-revision": second.compact_revision,
                        "leader-hash": first.hash,
                        "follower-compact-revision": p.compact_revision,
                        "follower-hash": p.hash,
                        "follower-peer-id": peer_id,
                    },
                    True,
                )
            )
    out.append(
        Finding("info", "finished peer corruption check", {"number-of-peers-checked": checked})
    )
    return out


def unchecked_hashes(hashes: Sequence[HashKVResult], latest_checked: int) -> list[HashKVResult]:
    """etcd's uncheckedRevisions: the records newer than ``latest_checked``, newest first."""
    ordered = sorted(hashes, key=lambda h: h.hash_revision, reverse=True)
    return [h for h in ordered if h.hash_revision > latest_checked]


@dataclass(frozen=True, slots=True)
class CompactHashVerdict:
    """What the leader's compaction hash check makes of its peers' answers at one record."""

    findings: list[Finding]
    mismatch: bool  # a peer at the same compact revision has another hash: raise CORRUPT
    whole_cluster: bool  # every peer answered with the same hash: the record is checked


def compact_hash_verdict(local: HashKVResult, peers: Sequence[PeerResult]) -> CompactHashVerdict:
    """etcd's CompactHashCheck rules for one recorded hash ``local`` (revision R) and the
    peers' answers to HashKV(R), in the order they were asked. No peers: nothing to say."""
    if not peers:
        return CompactHashVerdict([], False, False)
    out: list[Finding] = []
    checked = 0
    for p in peers:
        if not isinstance(p, PeerHash) or p.compact_revision != local.compact_revision:
            continue
        if p.hash != local.hash:
            out.append(
                Finding(
                    "error",
                    "failed compaction hash check",
                    {
                        "revision": local.hash_revision,
                        "leader-compact-revision": local.compact_revision,
                        "leader-hash": local.hash,
                        "follower-compact-revision": p.compact_revision,
                        "follower-hash": p.hash,
                        "follower-peer-id": format_id(p.member_id),
                    },
                    True,
                )
            )
            return CompactHashVerdict(out, True, False)
        checked += 1
        out.append(
            Finding(
                "info",
                "successfully checked hash on follower",
                {"revision": local.hash_revision, "peer-id": format_id(p.member_id)},
            )
        )
    if checked == len(peers):
        out.append(
            Finding(
                "info",
                "successfully checked hash on whole cluster",
                {"number-of-peers-checked": checked, "revision": local.hash_revision},
            )
        )
        return CompactHashVerdict(out, False, True)
    out.append(
        Finding(
            "warn",
            "skipped revision in compaction hash check; was not able to check all peers",
            {
                "number-of-peers-checked": checked,
                "number-of-peers": len(peers),
                "revision": local.hash_revision,
            },
        )
    )
    return CompactHashVerdict(out, False, False)


# --- the CORRUPT alarm on the apply path -------------------------------------------------------


def _txn_is_read_only(t: TxnRequest) -> bool:
    # etcd's isTxnReadonly: only plain ranges (a nested txn counts as a write).
    return all(op.request_range is not None for op in (*t.success, *t.failure))


def refused_when_corrupt(req: object) -> bool:
    """What etcd's corrupt applier refuses while a CORRUPT alarm is active."""
    if isinstance(req, TxnRequest):
        return not _txn_is_read_only(req)
    return isinstance(
        req,
        PutRequest
        | DeleteRangeRequest
        | CompactionRequest
        | entry_codec.LeaseGrant
        | entry_codec.LeaseRevoke,
    )


# --- the drivers ------------------------------------------------------------------------------


class PeerHashFetcher(Protocol):
    """Asks every peer for its HashKV at ``revision`` (one result per peer, in order)."""

    async def __call__(
        self, cluster_id: int, peers: Sequence[PeerTarget], revision: int
    ) -> list[PeerResult]: ...


class Hasher(Protocol):
    """What the checks need from the member."""

    @property
    def member_id(self) -> int: ...

    @property
    def cluster_id(self) -> int: ...

    async def hash_kv(self) -> tuple[HashKVResult, int]:
        """The local hash at the current revision, and that revision."""
        ...

    def peers(self) -> list[PeerTarget]:
        """Every other member with the client URLs it published."""
        ...

    def is_leader(self) -> bool: ...

    def compaction_hashes(self) -> list[HashKVResult]:
        """The member's recorded compaction hashes (any order)."""
        ...

    async def linearizable_read_notify(self) -> None: ...

    async def trigger_corrupt_alarm(self, member_id: int) -> None: ...


def _log(log: Logger, f: Finding) -> None:
    if f.level == "info":
        log.info(f.message, **f.fields)
    elif f.level == "error":
        log.error(f.message, **f.fields)
    else:
        log.warn(f.message, **f.fields)


async def initial_check(
    hasher: Hasher, fetch: PeerHashFetcher, log: Logger, timeout_s: float
) -> None:
    """Raises ``InitialCheckError`` when a peer's hash differs at the same compact revision."""
    local_id = hasher.member_id
    log.info(
        "starting initial corruption check",
        local_member_id=format_id(local_id),
        timeout=f"{timeout_s:g}s",
    )
    local, rev = await hasher.hash_kv()
    peers = await fetch(hasher.cluster_id, hasher.peers(), rev)
    findings = initial_findings(local_id, local, rev, peers)
    for f in findings:
        _log(log, f)
    if any(f.mismatch for f in findings):
        raise InitialCheckError(local_id)
    log.info(
        "initial corruption checking passed; no corruption", local_member_id=format_id(local_id)
    )


async def periodic_check(hasher: Hasher, fetch: PeerHashFetcher, log: Logger) -> bool:
    """One leader pass; True when it raised the CORRUPT alarm."""
    first, first_rev = await hasher.hash_kv()
    peers = await fetch(hasher.cluster_id, hasher.peers(), first_rev)
    await hasher.linearizable_read_notify()
    second, second_rev = await hasher.hash_kv()
    findings = periodic_findings(first, first_rev, second, second_rev, peers)
    for f in findings:
        _log(log, f)
    if any(f.mismatch for f in findings):
        # etcd 3.5 cannot tell which member is bad: the alarm names member 0.
        await hasher.trigger_corrupt_alarm(0)
        return True
    return False


async def monitor_kv_hash(
    hasher: Hasher,
    fetch: PeerHashFetcher,
    log: Logger,
    interval_s: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """etcd's monitorKVHash: every ``interval_s``, on the leader, one ``periodic_check``."""
    log.info(
        "enabled corruption checking",
        local_member_id=format_id(hasher.member_id),
        interval=f"{interval_s:g}s",
    )
    while True:
        await sleep(interval_s)
        if not hasher.is_leader():
            continue
        try:
            await periodic_check(hasher, fetch, log)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warn("failed to check hash KV", error=str(e) or type(e).__name__)


class CompactHashChecker:
    """etcd's CompactHashCheck, with its state: the newest record checked on the whole cluster
    (in memory: a member that becomes leader starts from its own records)."""

    def __init__(
        self, hasher: Hasher, fetch: PeerHashFetcher, log: Logger, timeout_s: float
    ) -> None:
        self._hasher = hasher
        self._fetch = fetch
        self._log = log
        self._timeout_s = timeout_s
        self.latest_revision_checked = 0

    async def check(self) -> bool:
        """One leader pass; True when it raised the CORRUPT alarm."""
        hasher, log = self._hasher, self._log
        log.info(
            "starting compact hash check",
            local_member_id=format_id(hasher.member_id),
            timeout=f"{self._timeout_s:g}s",
        )
        hashes = unchecked_hashes(hasher.compaction_hashes(), self.latest_revision_checked)
        for i, local in enumerate(hashes):
            peers = await self._fetch(hasher.cluster_id, hasher.peers(), local.hash_revision)
            verdict = compact_hash_verdict(local, peers)
            if verdict.mismatch:
                # etcd 3.5 cannot tell which member is bad: the alarm names member 0.
                await hasher.trigger_corrupt_alarm(0)
            for f in verdict.findings:
                _log(log, f)
            if verdict.mismatch:
                return True
            if verdict.whole_cluster:
                self.latest_revision_checked = max(
                    self.latest_revision_checked, local.hash_revision
                )
                log.info("finished compaction hash check", number_of_hashes_checked=i + 1)
                return False
        log.info("finished compaction hash check", number_of_hashes_checked=len(hashes))
        return False


async def monitor_compact_hash(
    hasher: Hasher,
    checker: CompactHashChecker,
    log: Logger,
    interval_s: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """etcd's monitorCompactHash: every ``interval_s``, on the leader, one check."""
    while True:
        await sleep(interval_s)
        if not hasher.is_leader():
            continue
        try:
            await checker.check()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd's check has no error to return; petcd's own line
            log.warn("compaction hash check failed", error=str(e) or type(e).__name__)


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` writes it (how etcd logs ``took``)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                whole, frac = divmod(ns, size)
                digits = len(str(size)) - 1
                tail = f".{frac:0{digits}d}".rstrip("0").rstrip(".") if digits else ""
                return f"{sign}{whole}{tail}{unit}"
    whole_s, frac_ns = divmod(ns, 1_000_000_000)
    hours, rest = divmod(whole_s, 3600)
    minutes, secs = divmod(rest, 60)
    tail = f".{frac_ns:09d}".rstrip("0").rstrip(".")
    out = f"{secs}{tail}s"
    if hours or minutes:
        out = f"{minutes}m{out}"
    if hours:
        out = f"{hours}h{out}"
    return sign + out


def log_resumed_compaction(log: Logger, kv: KVStore) -> None:
    """etcd's line at open when a compaction interrupted by the restart goes on."""
    if kv.compaction_pending:
        log.info(
            "resume scheduled compaction",
            meta_bucket_name=META,
            meta_bucket_name_key=SCHEDULED_COMPACT_KEY.decode(),
            scheduled_compact_revision=kv.compact_revision,
        )


def log_finished_compactions(log: Logger, kv: KVStore, backend: Backend) -> None:
    """etcd's lines at the end of a compaction: ``finished scheduled compaction`` with its
    hash, then ``storing new hash`` (the record the compaction hash check compares), or why
    it was not stored."""
    for done in kv.take_finished_compactions():
        log.info(
            "finished scheduled compaction",
            compact_revision=done.revision,
            took=go_duration(done.took_s),
            hash=done.hash.hash,
            current_db_size_bytes=backend.size_bytes(),
            current_db_size_in_use_bytes=backend.size_in_use_bytes(),
        )
        if done.stored:
            log.info(
                "storing new hash",
                hash=done.hash.hash,
                revision=done.hash.hash_revision,
                compact_revision=done.hash.compact_revision,
            )
        else:
            log.info("previous compaction was interrupted, skip storing compaction hash value")


class MemberHasher:
    """``Hasher`` over a ``Member`` (usable before ``start()`` for the initial check)."""

    def __init__(self, member: Member) -> None:
        self._m = member

    @property
    def member_id(self) -> int:
        return int(self._m.id)

    @property
    def cluster_id(self) -> int:
        return self._m.cluster_id

    async def hash_kv(self) -> tuple[HashKVResult, int]:
        _, result = await self._m.hash_kv(0)
        return result, result.hash_revision

    def peers(self) -> list[PeerTarget]:
        _, infos = self._m.members()
        return [PeerTarget(int(m.id), tuple(m.client_urls)) for m in infos if m.id != self._m.id]

    def is_leader(self) -> bool:
        return self._m.leader == self._m.id

    def compaction_hashes(self) -> list[HashKVResult]:
        return self._m.kv.hashes()

    async def linearizable_read_notify(self) -> None:
        await self._m.linearizable_read_notify()

    async def trigger_corrupt_alarm(self, member_id: int) -> None:
        await self._m.alarm_change(ALARM_ACTIVATE, member_id, ALARM_CORRUPT)
