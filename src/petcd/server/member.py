"""The member: raft + WAL + snapshots + MVCC, driven by one asyncio event loop.

Theory of operation
-------------------
One ``Member`` owns this process's share of the cluster: the raft core (``petcd.raft``), its
log storage (``MemoryStorage``, made durable by ``petcd.wal``), the snapshot files
(``petcd.snap``), the state machine (``petcd.mvcc.WatchableStore`` over ``petcd.backend``, with
the ``petcd.lease.Lessor``) and, in a cluster, the peer transport (``petcd.peer``). The gRPC
layer hands it decoded requests (``petcd.mvcc.requests``) and awaits decoded responses.

Data dir (as etcd's)::

    <data-dir>/member/wal/       WAL segments (or --wal-dir)
    <data-dir>/member/snap/      snapshot files  <term>-<index>.snap
    <data-dir>/member/snap/db    the backend (LMDB)

The Ready loop (``_run``) wakes on a proposal, a read, a tick or a stop, then repeats while the
core has something ready, in etcd's fixed order:

1. propose everything queued since the last round as ONE batch (``propose_many``: one append,
   one fsync for all requests that arrived together) and issue one ``read_index`` for all
   linearizable reads that arrived together;
2. ``rd = node.ready()``; persist ``rd.snapshot`` marker, ``rd.hard_state`` and ``rd.entries``
   to the WAL, with one ``fdatasync`` in a worker thread when ``rd.must_sync`` (new proposals
   keep queueing meanwhile: group commit); append them to ``MemoryStorage``;
3. send ``rd.messages`` through the peer transport (only now: what they promise is durable;
   a leader's appends and heartbeats went out before step 2, so that the followers' fsyncs
   overlap its own: ``_send_appends_early``);
4. apply ``rd.committed_entries`` to the KVStore in one backend batch (conf changes also go to
   ``node.apply_conf_change``); resolve the futures of the requests this member proposed;
5. ``node.advance(rd)``; resolve read rounds whose index is now applied; maybe snapshot.

A lone member under concurrent writes pipelines steps 2 and 4: when a batch's fdatasync
returns and the next batch is already queued, its apply waits until the next batch's write and
fdatasync have been started, so that apply and answers overlap the disk (``_deferred_apply``;
invariants next to ``_may_defer_apply``). Nothing is applied before its own fdatasync returned.

Linearizable reads use ReadIndex: reads that arrive together share one ``read_index`` request
(a "round"); when its ``ReadState`` arrives and ``applied >= index`` they read locally.
Serializable reads read locally at once. As in etcd, a read waits for its answer up to the
request timeout: without a leader its round waits until one is elected, a round not answered
within ``READ_INDEX_RETRY_S`` is asked again (a message may be lost), and one asked of a
leader that is gone is asked of the next (etcd fails those with "leader changed").

Restart: the backend records the last applied (index, term) with the data ("consistent
index"). At open the member picks the newest WAL snapshot marker not beyond it, reads the WAL
from there, and replays committed entries; entries at or below the consistent index are not
applied again (conf changes are, to rebuild raft's configuration). Nothing applied twice.

Snapshot: when ``applied - last_snapshot_index > --snapshot-count``, the backend is committed,
a snapshot file (metadata only: the backend file is the state) and a WAL marker are written,
``MemoryStorage`` keeps the last ``--experimental-snapshot-catchup-entries`` entries, and WAL
segments before the marker are released. A follower too far behind is sent a copy of the
leader's backend file with the MsgSnap, whose metadata is replaced by the copy's own (applied
index, term, configuration: ``_snapshot_for_peer``, as etcd's merged snapshot); it keeps the
file as ``<index>.snap.db``, records the snapshot (snap file, WAL marker), then replaces its
backend and rebuilds the lessor and mvcc from it. A crash between the marker and the
replacement is finished at open (``_recover_snapshot_backend``). So the backend's consistent
index never passes the WAL's last index (docs/design/robustness.md, Findings).

Membership (docs/cluster.md): Cluster requests are checked here against the applied
configuration (etcd's texts, --strict-reconfig-check), then proposed as raft conf changes whose
context is the member's JSON; applying one updates raft's configuration, the ``members`` /
``members_removed`` buckets and the peer transport (also when replayed after a restart). A
member that applies its own removal, or that its peers refuse as removed, stops
(``MemberRemovedError``; the process exits 0). A member started with
--initial-cluster-state=existing learns its id and the cluster id from its peers' handshake
(``petcd.server.join``) and starts with an empty log.

Leases: the lessor's replicated half runs at apply time (grant, revoke with its keys deleted in
one revision, checkpoints); its leader half (expiry, keep-alive, time-to-live) runs on the
leader only: promoted when the leader applies the first entry of its term, demoted when
leadership is lost; a 0.5 s timer proposes revokes of expired leases.

Watches: mvcc's watchable store feeds synced watchers as entries are applied; a task catches up
unsynced and slow ("victim") watchers every 100 ms or when woken.

Everything runs on the event loop thread except WAL ``sync``, backend commits, defragment and
snapshot copies, which run in worker threads, and only between apply rounds (a backend commit
must never separate an entry's data from its consistent index), and HashKV's walk over a
snapshot of the key bucket, which may run at any time (the backend is not closed, defragmented
or replaced while one runs). A failed fsync is fatal: the
member logs it and the process exits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import os
import random
import ssl
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from petcd import ETCD_VERSION
from petcd.auth import AuthRequest, AuthStore, token_provider
from petcd.auth.errors import AuthError
from petcd.backend import ALARM, LEASE, MEMBERS, MEMBERS_REMOVED, Backend, ReadLease
from petcd.lease import (
    CHECKPOINT_BATCH_MAX,
    LESSOR_TICK_SECONDS,
    REVOKE_LIMIT_PER_TICK,
    BucketLeaseStore,
    LeaseError,
    LeaseId,
    LeaseInfo,
    LeaseNotFoundError,
    Lessor,
    LessorConfig,
    NamedBucket,
    NotPrimaryError,
    TimeToLive,
    min_lease_ttl_seconds,
)
from petcd.mvcc.errors import MvccError
from petcd.mvcc.kvstore import COMPACTION_BATCH_LIMIT_DEFAULT, validate_request
from petcd.mvcc.requests import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    HashKVResult,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)
from petcd.mvcc.watchable_store import WatchableStore, Watcher, WatcherState, WatchSink
from petcd.peer import HandshakeStatus, PeerTransport, SnapshotFile, TransportConfig
from petcd.raft import confchange
from petcd.raft.config import Config as RaftConfig
from petcd.raft.errors import ProposalDroppedError, RaftError
from petcd.raft.node import RawNode, Ready
from petcd.raft.storage import MemoryStorage
from petcd.raft.types import (
    NONE_ID,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    MemberId,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMetadata,
    Term,
)
from petcd.server import entry as entry_codec
from petcd.server import join, srv
from petcd.server.answer import Answer
from petcd.server.authz import AuthGate, Credentials, apply_check
from petcd.server.compactor import Compactor
from petcd.server.config import Config, Url, parse_duration_seconds, parse_initial_cluster
from petcd.server.corrupt import (
    CompactHashChecker,
    MemberHasher,
    PeerHashFetcher,
    go_duration,
    log_finished_compactions,
    log_resumed_compaction,
    monitor_compact_hash,
    monitor_kv_hash,
    refused_when_corrupt,
)
from petcd.server.discovery import Discovery, DiscoveryError
from petcd.server.errors import (
    BadLeaderTransfereeError,
    ConfigError,
    CorruptError,
    JoinError,
    LeaderChangedError,
    LeaderTransferTimeoutError,
    LearnerNotReadyError,
    MemberExistError,
    MemberNotFoundError,
    MemberNotLearnerError,
    MemberRemovedError,
    NoLeaderError,
    NoSpaceError,
    NotEnoughStartedMembersError,
    NotLeaderError,
    PeerURLExistError,
    RequestTimeoutError,
    RequestTooLargeError,
    SnapshotConvertError,
    StoppedError,
    TooManyLearnersError,
    UnhealthyClusterError,
)
from petcd.server.ids import RequestIdGenerator, cluster_id, format_id, member_id
from petcd.server.log import Logger
from petcd.server.metrics import ServerMetrics
from petcd.server.request_size import etcd_request_bytes
from petcd.server.tls import PeerTLS
from petcd.snap import Snapshotter
from petcd.v2store.request import V2Request
from petcd.wal import WAL, WalFatalError, snapshot_markers
from petcd.wal import exists as wal_exists
from petcd.wal.fileutil import AsyncFdatasync

_WAL_META = struct.Struct(">QQ")  # member id, cluster id
# What a leader sends before its own WAL fsync (Member._send_appends_early).
_EARLY_TYPES = frozenset({MessageType.APP, MessageType.HEARTBEAT})
_T = TypeVar("_T")
# What a proposal's requester waits on: a coroutine's future (``_propose``) or an ``Answer``
# (``submit``).
_Waiter = asyncio.Future[Any] | Answer
# range_records' answer: the response, its records, the lease of their views (or None).
_PinnedRange = tuple[RangeResponse, list[bytes | memoryview] | None, ReadLease | None]
# When proposals come one at a time (one client, or clients far apart), a Ready's WAL batch is
# fdatasync'ed on the loop thread itself: handing it to a worker thread and back costs two
# cross-thread wake-ups, each of which waits for the scheduler on a busy machine
# (docs/enhancements/0004-transport.md, findings of 2026-11-27). Under concurrency the
# fdatasync is submitted to the kernel (``_sync_wal``: Linux AIO, else a worker thread), so
# that the loop keeps taking requests (the next batch) during the fsync.
_INLINE_SYNC_ENTRIES_MAX = 1
# ... and only when no two proposals were in flight at once for this long.
_INLINE_SYNC_QUIET_S = 0.2
# The pause between two compaction steps when --experimental-compaction-sleep-interval is 0
# (etcd's default).
_COMPACTION_STEP_INTERVAL_S = 0.01
# etcd's floor of --raft-write-timeout (rafthttp's default connection write timeout).
RAFT_TIMEOUT_MIN_S = 5.0
_MVCC_WRITES = (PutRequest, DeleteRangeRequest, TxnRequest)
_QUOTA_CHECKED = (PutRequest, TxnRequest, entry_codec.LeaseGrant)  # etcd's quota applier
# The Snapshot RPC's conversion of a backend copy into etcd's format
# (docs/enhancements/0012-snapshot-rpc-bbolt.md): CPU-heavy Python (about 100,000 keys a
# second), so a large one runs in a child process that never holds this process's GIL; the
# child's interpreter start and imports cost about a second, so a copy this small (its
# conversion takes a fraction of that) is converted in a worker thread instead. A module path,
# not an import: the server loads the offline tool's code only for a small conversion.
SNAPSHOT_THREAD_BYTES_MAX = 4 * 1024 * 1024
SNAPSHOT_CONVERTER = (sys.executable, "-m", "petcd.utl.rpc_snapshot")


ALARM_ACTIVATE, ALARM_DEACTIVATE = 1, 2  # etcd's AlarmRequest.AlarmAction
ALARM_NONE, ALARM_NOSPACE, ALARM_CORRUPT = 0, 1, 2  # etcd's AlarmType
_ALARM_NAMES = {0: "NONE", ALARM_NOSPACE: "NOSPACE", ALARM_CORRUPT: "CORRUPT"}


def _durable_rename(src: str, dst: str) -> None:
    os.replace(src, dst)
    fd = os.open(os.path.dirname(os.path.abspath(dst)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _too_large(request_id: int, request: object, request_bytes_max: int) -> bool:
    """etcd's "request is too large": its own encoding of the proposal is over the limit
    (petcd's is smaller; the two differ by a few bytes a field)."""
    size: int | None
    if isinstance(request, entry_codec.Guarded):
        size = etcd_request_bytes(request_id, request.request, request.auth_revision)
    else:
        size = etcd_request_bytes(request_id, request)
    if size is None:
        size = len(entry_codec.encode(request_id, request))  # type: ignore[arg-type]
    return size > request_bytes_max


def _alarm_name(alarm: int) -> str:
    return _ALARM_NAMES.get(alarm, str(alarm))


def encode_alarm_key(member: int, alarm: int) -> bytes:
    """The ``alarm`` bucket's key of one alarm: member id u64 BE, alarm type u32 BE."""
    return member.to_bytes(8, "big") + alarm.to_bytes(4, "big")


def decode_alarm_key(key: bytes) -> tuple[int, int]:
    """(member id, alarm type) of an ``alarm`` bucket key (``encode_alarm_key``'s inverse)."""
    return int.from_bytes(key[:8], "big"), int.from_bytes(key[8:], "big")


_ROLE_NAMES = {
    Role.FOLLOWER: "follower",
    Role.PRE_CANDIDATE: "pre-candidate",
    Role.CANDIDATE: "candidate",
    Role.LEADER: "leader",
}


class FatalError(Exception):
    """The member cannot continue (a failed fsync, a corrupt log); the process must exit."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A cluster member: the JSON of its conf-change context and of its ``members`` record."""

    id: MemberId
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"name": self.name, "peerURLs": list(self.peer_urls)}
        if self.client_urls:
            obj["clientURLs"] = list(self.client_urls)
        if self.is_learner:
            obj["isLearner"] = True
        return json.dumps(obj).encode()

    @classmethod
    def decode(cls, id_: MemberId, data: bytes) -> MemberInfo:
        if not data:
            return cls(id_, "", ())
        obj = json.loads(data)
        return cls(
            id_,
            str(obj.get("name", "")),
            tuple(obj.get("peerURLs", ())),
            tuple(obj.get("clientURLs", ())),
            bool(obj.get("isLearner", False)),
        )


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """What Maintenance.Status reports (etcd's StatusResponse fields)."""

    header: ResponseHeader
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: tuple[str, ...]
    db_size_in_use: int
    is_learner: bool


@dataclass(slots=True)
class _ReadRound:
    waiters: list[asyncio.Future[None]]
    index: int = -1  # the read index once the ReadState arrived
    asked: float = 0.0  # time.monotonic() of the last read_index for it


# etcd's readIndexRetryTime: a round without an answer after this long is asked again.
READ_INDEX_RETRY_S = 0.5


class Member:
    """One cluster member. Create with ``Member.open(cfg, log)``, then ``await start()``."""

    def __init__(
        self,
        cfg: Config,
        log: Logger,
        *,
        clock: Callable[[], float] = time.time,
        rand: random.Random | None = None,
        compactor: Compactor | None = None,
        peer_tls: PeerTLS | None = None,
    ) -> None:
        self.cfg = cfg
        self.log = log
        # TLS of the peer listeners (server side) and of dialling peers (client side): the
        # client context also serves peers without peer TLS of this member's own, verified
        # against the system's CAs, as etcd's default transport does.
        self._peer_server_ssl = None if peer_tls is None else peer_tls.server_context()
        self._peer_client_ssl = (
            ssl.create_default_context() if peer_tls is None else peer_tls.client_context()
        )
        self._peer_cert_check = None if peer_tls is None else peer_tls.names_check()
        self.metrics = ServerMetrics()
        self._clock = clock
        self._rand = rand if rand is not None else random.Random(os.urandom(16))
        self._compactor = compactor if compactor is not None else Compactor.from_config(cfg)
        self.request_timeout_s = 5.0 + 2 * cfg.election_timeout_ms / 1000.0
        # --experimental-compaction-sleep-interval (0: etcd's default): the pause after each
        # compaction step, under writes too, as etcd's batch ticker.
        self._compaction_pause_s = (
            cfg.experimental_compaction_sleep_interval_s or _COMPACTION_STEP_INTERVAL_S
        )
        self._next_compaction_step = 0.0
        # Set by open():
        self.id = MemberId(0)
        self.cluster_id = 0
        self._wal: WAL
        self._snapshotter: Snapshotter
        self._backend: Backend
        self.kv: WatchableStore
        self._storage: MemoryStorage
        self.node: RawNode
        self._ids: RequestIdGenerator
        self._applied = Index(0)
        self._snapshot_index = Index(0)
        self._consistent_index = Index(0)
        # Runtime state (event loop):
        self._proposals: list[tuple[entry_codec.EntryRequest, _Waiter]] = []
        # time.monotonic() of the first proposal queued since _flush_inputs last took them
        self._proposals_since = 0.0
        # request id -> the request this member proposed, until applied (see _apply_request)
        self._local_requests: dict[int, entry_codec.EntryRequest] = {}
        # (log index, entry data, request id) of what this member appended to its log as the
        # leader, in log order: the entry being applied is normally the head, the very same
        # bytes object, whose id then need not be decoded again. Only a shortcut: any other
        # entry (forwarded by a follower, a new leader's) has its id read from its data, and
        # records at or below the applied index are dropped (overwritten by another leader).
        self._appended: collections.deque[tuple[int, bytes, int]] = collections.deque()
        self._last_header = ResponseHeader()
        # (deadline, request ids) of each batch that _flush_inputs proposed, in deadline order
        # (one timeout for all): a waiter still in _waiters at its batch's deadline times out.
        self._deadlines: collections.deque[tuple[float, list[int]]] = collections.deque()
        self._concurrent_at = 0.0  # time.monotonic() when two or more were last in flight
        # A lone member's Ready whose entries are durable and advanced but whose committed
        # entries are not applied yet: they are applied while the next batch's fdatasync runs
        # (_handle_ready, "Pipelined apply"), or before anything else happens.
        self._deferred_apply: Ready | None = None
        # The WAL's fdatasyncs through Linux AIO, completions on the loop (``_sync_wal``).
        self._aio: AsyncFdatasync | None = None
        self._wal_sync_waiter: asyncio.Future[None] | None = None
        # How the process ends when memory got ahead of the WAL (_persist_and_apply).
        self._exit_process: Callable[[int], None] = os._exit
        self._waiters: dict[int, _Waiter] = {}
        # Told when a batch's answers are all resolved and durable (the native transport
        # sends them then, instead of a loop turn later): ``add_answers_listener``.
        self._answers_listeners: list[Callable[[], None]] = []
        self._answered = False  # requests were answered since the listeners were last told
        self._reads: list[asyncio.Future[None]] = []
        self._rounds: dict[bytes, _ReadRound] = {}
        # ReadIndex contexts must be unique across the cluster and across restarts: the leader
        # drops a request whose context is already pending, so a follower's counter starting at
        # 0 would collide with another follower's (that read then waited for the request
        # timeout). Member id + a counter seeded from the clock, as etcd's request ids.
        self._round_seq = time.time_ns()
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._commit_due = False
        # The backend commit running in a worker thread (_maybe_commit_backend), and the
        # error one ended with (raised by the Ready loop).
        self._backend_commit: asyncio.Task[None] | None = None
        self._backend_commit_error: BaseException | None = None
        self._want_campaign = False
        self._conf_voters: frozenset[MemberId] = frozenset()
        self._watch_wake = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        # Backend work that commits (defrag, snapshot copies) runs in the Ready loop between
        # rounds, never while entries are being applied.
        self._jobs: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        # HashKV walks running in worker threads over a backend snapshot (``hash_kv``): the
        # backend is not closed, defragmented or replaced until they have finished.
        self._hash_walks: set[asyncio.Future[Any]] = set()
        self._transport: PeerTransport | None = None
        self._alarms: set[tuple[int, int]] = set()  # (member id, alarm type), replicated
        self._members: dict[MemberId, MemberInfo] = {}
        self._removed_ids: set[MemberId] = set()
        self._removed_self = False
        self._conf_proposals: list[tuple[ConfChange, asyncio.Future[Any]]] = []
        self._nospace_raising = False
        self._incoming_snapshots: dict[int, str] = {}  # snapshot index -> received db file
        # The Snapshot RPC's conversion (tests point these elsewhere on their own member).
        self._snapshot_converter: tuple[str, ...] = SNAPSHOT_CONVERTER
        self._snapshot_thread_bytes_max = SNAPSHOT_THREAD_BYTES_MAX
        self._after_watch_sync: set[Callable[[], None]] = set()
        # etcd's quota check (without its NOSPACE alarm): refused when the db file plus the
        # request would exceed --quota-backend-bytes. The size is refreshed at each commit.
        self._quota_bytes = cfg.quota_backend_bytes_effective
        self._db_size_bytes = 0
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._fatal: BaseException | None = None
        self._lead = NONE_ID
        self._role: Role | None = None
        self._ready_to_serve: asyncio.Event | None = None
        self._leader_ready_term = Term(0)
        # Asks the peers for their HashKV (petcd.server.corrupt); set by the program.
        self.peer_hash_fetcher: PeerHashFetcher | None = None
        self._tokens = token_provider(cfg.auth_token, cfg.auth_token_ttl, parse_duration_seconds)
        self.auth: AuthStore
        self.gate = AuthGate(self)
        # The v2 tree (--enable-v2; petcd.server.v2): None unless v2 is on or a tree exists.
        self._v2: Any = None

    # -- open / bootstrap / restart ------------------------------------------------------------

    @classmethod
    def open(cls, cfg: Config, log: Logger, **kwargs: Any) -> Member:
        """Open (or create) the data dir and build the raft node; no tasks started yet."""
        m = cls(cfg, log, **kwargs)
        m.open_data()
        return m

    def open_data(self) -> None:
        """Open (or create) the data dir and build the raft node."""
        cfg, log = self.cfg, self.log
        os.makedirs(cfg.snap_path, mode=0o700, exist_ok=True)
        self._snapshotter = Snapshotter(cfg.snap_path, keep=max(cfg.max_snapshots, 1))
        self._backend = Backend(cfg.backend_path, unsafe_no_fsync=cfg.unsafe_no_fsync)
        log.info("opened backend db", path=cfg.backend_path)
        if cfg.unsafe_no_fsync:
            log.warn(
                "--unsafe-no-fsync is set: the WAL and the backend are not fsynced; a machine "
                "crash or power loss can lose acknowledged writes or damage the data dir "
                "(a killed process cannot)",
                data_dir=cfg.data_dir,
            )
        self._recover_snapshot_backend()
        if cfg.experimental_bootstrap_defrag_threshold_megabytes:
            self._maybe_defrag_at_start(cfg.experimental_bootstrap_defrag_threshold_megabytes)
        # The lessor before mvcc: mvcc re-attaches keys to their leases while it restores.
        self.lessor = Lessor(
            BucketLeaseStore(NamedBucket(self._backend, LEASE)),
            clock=time.monotonic,
            config=LessorConfig(
                min_ttl_seconds=min_lease_ttl_seconds(
                    cfg.election_ticks, cfg.heartbeat_interval_ms
                ),
                expired_retry_interval_seconds=self.request_timeout_s,
                checkpoint_enabled=cfg.experimental_enable_lease_checkpoint,
                checkpoint_persist=cfg.experimental_enable_lease_checkpoint_persist,
            ),
        )
        self.kv = WatchableStore(
            self._backend, lessor=self.lessor, max_txn_ops=cfg.max_txn_ops, clock=time.monotonic
        )
        log_resumed_compaction(self.log, self.kv)
        self.auth = AuthStore(self._backend, self._tokens, cfg.bcrypt_cost)
        self.auth.recover()
        self.metrics.auth_revision.set_function(lambda: self.auth.revision)
        self._open_v2()
        # Responses get the member's header (cluster, member, revision, term) as mvcc builds
        # them: one header and one response object per request instead of two of each.
        self.kv.set_header_source(self._header)
        self.metrics.set_mvcc_source(self._mvcc_counts)
        self.metrics.set_watch_source(self._watch_counts)
        self._members = {
            MemberId(int.from_bytes(k, "big")): MemberInfo.decode(
                MemberId(int.from_bytes(k, "big")), v
            )
            for k, v in self._backend.iterate(MEMBERS)
        }
        self._alarms = {decode_alarm_key(k) for k, _ in self._backend.iterate(ALARM)}
        self._removed_ids = {
            MemberId(int.from_bytes(k, "big")) for k, _ in self._backend.iterate(MEMBERS_REMOVED)
        }
        ci, _ = self._backend.consistent_index()
        self._consistent_index = ci
        self._db_size_bytes = self._backend.size_bytes()
        if wal_exists(cfg.wal_path):
            storage, applied = self._restart(ci)
        else:
            storage, applied = self._bootstrap()
        self._storage = storage
        self._applied = applied
        self._snapshot_index = applied
        raft_cfg = RaftConfig(
            self.id,
            rand=self._rand,
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=1,
            applied=applied,
            max_size_per_msg_bytes=1024 * 1024,
            max_inflight_msgs=512,
            check_quorum=True,
            pre_vote=cfg.pre_vote,
        )
        self.node = RawNode(raft_cfg, storage)
        self._conf_voters = storage.initial_state()[1].voters
        self._ids = RequestIdGenerator(self.id, int(self._clock() * 1000))
        self.metrics.server_id.labels(format_id(self.id)).set(1)

    def _bootstrap(self) -> tuple[MemoryStorage, Index]:
        cfg, log = self.cfg, self.log
        if cfg.initial_cluster_state != "new":
            return self._join()
        token = cfg.initial_cluster_token
        initial = cfg.initial_cluster
        if cfg.discovery_url:
            initial = self._discover(token)
        elif cfg.discovery_srv:
            initial = self._cluster_from_dns()
        members = [
            MemberInfo(member_id([str(u) for u in urls], token), name, tuple(map(str, urls)))
            for name, urls in initial
        ]
        by_name = {m.name: m for m in members}
        self._members = {m.id: m for m in members}  # persisted as their conf changes apply
        self.id = by_name[cfg.name].id
        self.cluster_id = cluster_id([m.id for m in members])
        log.info(
            "starting local member",
            local_member_id=format_id(self.id),
            cluster_id=format_id(self.cluster_id),
        )
        storage = MemoryStorage.bootstrap(
            [m.id for m in members], {m.id: m.encode() for m in members}
        )
        hs, _ = storage.initial_state()
        ents = storage.entries(Index(1), Index(storage.last_index() + 1))
        os.makedirs(os.path.dirname(os.path.abspath(cfg.wal_path)), mode=0o700, exist_ok=True)
        self._wal = WAL.create(
            cfg.wal_path,
            _WAL_META.pack(self.id, self.cluster_id),
            unsafe_no_fsync=cfg.unsafe_no_fsync,
        )
        self._wal.save(hs, ents)
        self._wal.sync()
        return storage, Index(0)

    def _discover(self, token: str) -> tuple[tuple[str, tuple[Url, ...]], ...]:
        """--discovery: register at the discovery URL, wait for the others (etcd's v2
        discovery, ``petcd.server.discovery``); the initial cluster they form."""
        cfg = self.cfg
        urls = dict(cfg.initial_cluster)[cfg.name]
        own = member_id([str(u) for u in urls], token)
        entry = ",".join(f"{cfg.name}={u}" for u in sorted(map(str, urls)))
        found = Discovery(cfg.discovery_url, own, self.log, proxy=cfg.discovery_proxy).join(entry)
        try:
            initial = parse_initial_cluster(found)
        except ConfigError as e:
            raise DiscoveryError(f"discovery: invalid URL ({e})") from None
        seen: set[str] = set()
        for _, us in initial:
            for u in map(str, us):
                if u in seen:
                    raise ConfigError(f"discovery cluster {found} has duplicate url")
                seen.add(u)
        return initial

    def _cluster_from_dns(self) -> tuple[tuple[str, tuple[Url, ...]], ...]:
        """--discovery-srv: the initial cluster from the domain's SRV records."""
        cfg = self.cfg
        try:
            found = srv.cluster_from_dns(
                cfg.discovery_srv,
                cfg.discovery_srv_name,
                cfg.name,
                [str(u) for u in cfg.initial_advertise_peer_urls],
                self.log,
            )
        except srv.SrvError as e:
            self.log.warn("failed to resolve during SRV discovery", error=str(e))
            raise srv.SrvBootstrapError(f"error setting up initial cluster: {e}") from None
        for entry in found:
            self.log.info("got bootstrap from DNS for etcd-server", node=entry)
        initial = parse_initial_cluster(",".join(found))
        if cfg.name not in dict(initial):
            raise srv.SrvBootstrapError(
                "error setting up initial cluster: cannot find local etcd member "
                f"{json.dumps(cfg.name)} in SRV records"
            )
        return initial

    def _join(self) -> tuple[MemoryStorage, Index]:
        """--initial-cluster-state=existing: an empty log; the leader sends the rest."""
        cfg, log = self.cfg, self.log
        by_name = dict(cfg.initial_cluster)
        if cfg.name not in by_name:
            raise ConfigError(
                f"couldn't find local name {cfg.name!r} in the initial cluster configuration"
            )
        own = [str(u) for u in by_name[cfg.name]]
        others = [[str(u) for u in urls] for name, urls in cfg.initial_cluster if name != cfg.name]
        info = join.discover(
            own,
            others,
            timeout_s=self.request_timeout_s * 2,
            probe_fn=functools.partial(join.probe, ssl_context=self._peer_client_ssl),
            members_fn=functools.partial(join.list_members, ssl_context=self._peer_client_ssl),
        )
        self.id, self.cluster_id = info.member_id, info.cluster_id
        # Only what is needed to reach the peers; the members come with the log or snapshot.
        self._members = {mid: MemberInfo(mid, "", urls) for mid, urls in info.peers.items()}
        self._members[self.id] = MemberInfo(self.id, "", tuple(own))
        log.info(
            "joining an existing cluster",
            local_member_id=format_id(self.id),
            cluster_id=format_id(self.cluster_id),
            peers=[format_id(m) for m in info.peers],
        )
        storage = MemoryStorage()
        os.makedirs(os.path.dirname(os.path.abspath(cfg.wal_path)), mode=0o700, exist_ok=True)
        self._wal = WAL.create(
            cfg.wal_path,
            _WAL_META.pack(self.id, self.cluster_id),
            unsafe_no_fsync=cfg.unsafe_no_fsync,
        )
        self._wal.sync()
        return storage, Index(0)

    def _restart(self, ci: Index) -> tuple[MemoryStorage, Index]:
        cfg, log = self.cfg, self.log
        if cfg.discovery_url:
            log.warn(
                "discovery token is ignored since cluster already initialized; valid logs are "
                "found",
                wal_dir=cfg.wal_path,
            )
        elif cfg.initial_cluster_state == "new" and len(cfg.initial_cluster) > 0:
            log.info(
                "the data dir holds a member; ignoring --initial-cluster* flags",
                data_dir=cfg.data_dir,
            )
        markers = [m for m in snapshot_markers(cfg.wal_path) if m.index <= ci]
        marker = markers[-1] if markers else None
        wal, state = WAL.open(cfg.wal_path, marker, unsafe_no_fsync=cfg.unsafe_no_fsync)
        self._wal = wal
        mid, cid = _WAL_META.unpack(state.metadata)
        self.id, self.cluster_id = MemberId(mid), cid
        storage = MemoryStorage()
        applied = Index(0)
        conf = ConfState()
        if marker is not None and marker.index > 0:
            storage.apply_snapshot(Snapshot(marker))
            applied = marker.index
            conf = marker.conf_state
        hs = state.hard_state
        if hs.commit < ci:
            # A hard state that only moved the commit index is written without an fsync (as
            # etcd), so a crash can lose it while the backend already holds what was applied.
            # Only committed entries are applied, so everything up to ``ci`` was committed;
            # the entries themselves are always synced before they are applied.
            last = state.entries[-1].index if state.entries else applied
            if last < ci:
                raise FatalError(
                    f"the backend applied index {ci} beyond the WAL's last entry {last}; "
                    "the WAL is missing acknowledged entries"
                )
            log.info("raising the commit index to the applied index", commit=hs.commit, ci=ci)
            hs = HardState(hs.term, hs.vote, ci)
        entries = list(state.entries)
        if cfg.force_new_cluster:
            hs, entries = self._force_new_cluster(hs, entries, conf)
        storage.set_hard_state(hs)
        if entries:
            storage.append(entries)
        # Raft's configuration: the snapshot's, plus committed conf changes after it.
        voters, learners = set(conf.voters), set(conf.learners)
        for e in entries:
            if e.index > hs.commit:
                break
            if e.type == EntryType.CONF_CHANGE:
                cc = confchange.decode(e.data)
                if cc.type == ConfChangeType.ADD_NODE:
                    voters.add(cc.node_id)
                    learners.discard(cc.node_id)
                elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
                    if cc.node_id not in voters:
                        learners.add(cc.node_id)
                elif cc.type == ConfChangeType.REMOVE_NODE:
                    voters.discard(cc.node_id)
                    learners.discard(cc.node_id)
        storage.set_conf_state(ConfState(voters=frozenset(voters), learners=frozenset(learners)))
        log.info(
            "restarting local member",
            cluster_id=format_id(self.cluster_id),
            local_member_id=format_id(self.id),
            commit_index=hs.commit,
            consistent_index=ci,
            snapshot_index=applied,
            wal_entries=len(entries),
        )
        return storage, applied

    def _force_new_cluster(
        self, hs: HardState, entries: list[Entry], conf: ConfState
    ) -> tuple[HardState, list[Entry]]:
        """--force-new-cluster (etcd's restartAsStandaloneNode): conf changes that remove every
        other member (and add this one, if it is not a member) are appended to the log, all of
        it committed at once and written to the WAL; applying them makes the members bucket a
        one-member cluster. The data is kept.

        etcd first drops the entries after the WAL's commit index. petcd keeps them: it writes
        a commit index that only moved lazily (with the next entries or vote), so the WAL's
        may lag what this member committed and acknowledged (a leader's last writes before it
        stopped); an entry that was really uncommitted was never acknowledged, and may take
        effect as any write whose answer a client did not get."""
        kept = entries
        if kept and kept[-1].index > hs.commit:
            self.log.info(
                "committing WAL entries after the WAL's commit index",
                entry_index=hs.commit + 1,
                commit_index_from_wal=hs.commit,
                number_of_entries=kept[-1].index - hs.commit,
            )
        # The members: the snapshot's voters and the conf changes after it (as etcd's getIDs).
        ids = set(conf.voters)
        for e in kept:
            if e.type != EntryType.CONF_CHANGE:
                continue
            cc = confchange.decode(e.data)
            if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
                ids.add(cc.node_id)
            elif cc.type == ConfChangeType.REMOVE_NODE:
                ids.discard(cc.node_id)
        changes = []
        if self.id not in ids:  # first: raft must never be left without a voter
            me = MemberInfo(
                self.id, "", tuple(str(u) for u in self.cfg.initial_advertise_peer_urls)
            )
            changes.append(ConfChange(ConfChangeType.ADD_NODE, self.id, me.encode()))
        changes += [ConfChange(ConfChangeType.REMOVE_NODE, m) for m in sorted(ids) if m != self.id]
        last = kept[-1].index if kept else hs.commit
        forced = [
            Entry(hs.term, Index(last + i), EntryType.CONF_CHANGE, confchange.encode(cc))
            for i, cc in enumerate(changes, 1)
        ]
        hs = HardState(hs.term, hs.vote, forced[-1].index if forced else Index(last))
        self._wal.save(hs, forced)
        self._wal.sync()
        self.log.info(
            "forcing restart member",
            cluster_id=format_id(self.cluster_id),
            local_member_id=format_id(self.id),
            commit_index=hs.commit,
        )
        return hs, kept + forced

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the Ready loop and the timers; returns at once."""
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ready_to_serve = asyncio.Event()
        self.log.info(
            "starting etcd server",
            local_member_id=format_id(self.id),
            local_server_version=ETCD_VERSION,
            cluster_id=format_id(self.cluster_id),
        )
        peers = {
            mid: info.peer_urls
            for mid, info in self._members.items()
            if mid != self.id and info.peer_urls
        }
        if peers or self.cfg.listen_peer_urls:
            # Always listening (as etcd): members may be added to a one-member cluster.
            await self._start_transport(peers)
        if not self.cfg.unsafe_no_fsync:
            self._aio = self._open_aio()
            if self._aio is not None:
                asyncio.get_running_loop().add_reader(self._aio.fileno(), self._on_wal_synced)
            else:
                self.log.info(
                    "Linux AIO is not available (kernel or seccomp): "
                    "the WAL's fdatasyncs run in a worker thread"
                )
        self._loop_task = asyncio.create_task(self._run(), name="petcd-ready-loop")
        self._tasks = [
            asyncio.create_task(self._ticker(), name="petcd-ticker"),
            asyncio.create_task(self._commit_timer(), name="petcd-backend-commit-timer"),
            asyncio.create_task(self._watch_syncer(), name="petcd-watch-sync"),
            asyncio.create_task(self._lessor_ticker(), name="petcd-lessor"),
        ]
        if self._compactor.enabled:
            self._tasks.append(asyncio.create_task(self._auto_compact(), name="petcd-compactor"))
        if self._transport is not None:
            self._tasks.append(asyncio.create_task(self._removal_check(), name="petcd-removed"))
        if self._v2 is not None:
            self._start_v2_sync()
        if self.cfg.experimental_corrupt_check_time_s > 0 and self.peer_hash_fetcher is not None:
            check = monitor_kv_hash(
                MemberHasher(self),
                self.peer_hash_fetcher,
                self.log,
                self.cfg.experimental_corrupt_check_time_s,
            )
            self._tasks.append(asyncio.create_task(check, name="petcd-corrupt-check"))
        if self.cfg.experimental_compact_hash_check_enabled and self.peer_hash_fetcher is not None:
            hasher = MemberHasher(self)
            checker = CompactHashChecker(
                hasher, self.peer_hash_fetcher, self.log, self.request_timeout_s
            )
            check = monitor_compact_hash(
                hasher, checker, self.log, self.cfg.experimental_compact_hash_check_time_s
            )
            self._tasks.append(asyncio.create_task(check, name="petcd-compact-hash-check"))
        # A single-voter cluster elects itself as soon as its log is applied (raft refuses to
        # campaign with unapplied conf changes); etcd fast-forwards election ticks instead.
        self._want_campaign = self.node.status().conf_state.voters == {self.id}
        if not self._want_campaign and self.cfg.initial_election_tick_advance:
            # etcd's --initial-election-tick-advance: a booting member need not wait a whole
            # election timeout before its first (pre-)vote; one to ten ticks remain.
            for _ in range(self.cfg.election_ticks - 1):
                self.node.tick()
        self._kick()

    async def _start_transport(self, peers: dict[MemberId, tuple[str, ...]]) -> None:
        loop = asyncio.get_running_loop()

        def on_messages(messages: list[Message]) -> None:
            for m in messages:
                try:
                    self.node.step(m)
                except RaftError as e:
                    self.log.warn("dropped a peer message", type=m.type.name, error=str(e))
            self._kick()

        def report_unreachable(mid: MemberId) -> None:
            self.node.report_unreachable(mid)
            self._kick()

        def report_snapshot(mid: MemberId, failed: bool) -> None:
            self.node.report_snapshot(mid, failed)
            self._kick()

        def snapshot_source(meta: SnapshotMetadata) -> SnapshotFile:
            # Called in a worker thread: the copy itself must run between apply rounds.
            return asyncio.run_coroutine_threadsafe(self._snapshot_for_peer(), loop).result()

        def on_snapshot(m: Message, path: Path) -> None:
            self._incoming_snapshots[m.snapshot.metadata.index if m.snapshot else 0] = str(path)
            on_messages([m])

        write_timeout_s = self.cfg.raft_write_timeout_s
        if write_timeout_s < RAFT_TIMEOUT_MIN_S:  # etcd's floor and log line
            write_timeout_s = RAFT_TIMEOUT_MIN_S
            self.log.info(f"raft-write-timeout increased to minimum value: {RAFT_TIMEOUT_MIN_S:g}s")
        self._transport = PeerTransport(
            TransportConfig(
                cluster_id=self.cluster_id,
                member_id=self.id,
                snapshot_dir=Path(self.cfg.snap_path),
                write_timeout_seconds=write_timeout_s,
            ),
            on_messages=on_messages,
            report_unreachable=report_unreachable,
            report_snapshot=report_snapshot,
            snapshot_source=snapshot_source,
            on_snapshot=on_snapshot,
            members_source=lambda: {mid: m.peer_urls for mid, m in self._members.items()},
            logger=self.log,
            rand=self._rand,
            server_ssl=self._peer_server_ssl,
            client_ssl=self._peer_client_ssl,
            cert_check=self._peer_cert_check,
        )
        for mid, urls in peers.items():
            self._transport.add_peer(mid, urls)
        for mid in self._removed_ids:
            self._transport.remove_peer(mid)  # remembered: refused as removed
        self.log.info(
            "starting peer transport",
            listen_peer_urls=[str(u) for u in self.cfg.listen_peer_urls],
            peers=[format_id(m) for m in peers],
        )
        await self._transport.start([str(u) for u in self.cfg.listen_peer_urls])

    async def wait_ready(self) -> None:
        """Return once this member has a leader and applied all entries of its term so far."""
        assert self._ready_to_serve is not None
        await self._ready_to_serve.wait()

    async def stop(self) -> None:
        """Stop: fail waiting requests, flush the backend, close the WAL. Idempotent."""
        if self._stopping:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.stop()
        # The Ready loop finishes the round it is in (persist, apply, advance), then exits.
        self._kick()
        if self._loop_task is not None:
            with contextlib.suppress(BaseException):
                await self._loop_task
        err = StoppedError()
        for fut in [*self._waiters.values(), *(f for _, f in self._proposals), *self._reads]:
            if not fut.done():
                fut.set_exception(err)
        for rnd in self._rounds.values():
            for fut in rnd.waiters:
                if not fut.done():
                    fut.set_exception(err)
        for _, job in self._jobs:
            if not job.done():
                job.set_exception(err)
        self._jobs.clear()
        self._waiters.clear()
        self._proposals.clear()
        self._reads.clear()
        self._rounds.clear()
        if self._backend_commit is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._backend_commit)
        await self._hash_walks_done()
        if self._aio is not None:
            asyncio.get_running_loop().remove_reader(self._aio.fileno())
            self._aio.close()  # waits for an fdatasync still in flight
            self._aio = None
        if self._fatal is None:
            await asyncio.to_thread(self._backend.commit)
        self._backend.close()
        self._wal.close()
        assert self._stopped is not None
        self._stopped.set()

    @property
    def fatal_error(self) -> BaseException | None:
        return self._fatal

    async def wait_stopped(self) -> None:
        """Return when the Ready loop has ended (after ``stop`` or on a fatal error)."""
        assert self._loop_task is not None
        with contextlib.suppress(BaseException):
            await asyncio.shield(self._loop_task)

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _ticker(self) -> None:
        interval = self.cfg.heartbeat_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            self.node.tick()
            self._kick()
            self._expire_proposals()
            if self._rounds:
                self._ask_reads_again()

    def _ask_reads_again(self) -> None:
        """Ask again for the rounds without an answer for ``READ_INDEX_RETRY_S`` (etcd's
        retry: the request or its answer may have been lost on the way). The same context
        is reused: the leader ignores a context it still has pending, and the first answer
        resolves the round."""
        now = time.monotonic()
        for ctx, rnd in self._rounds.items():
            if rnd.index < 0 and now - rnd.asked >= READ_INDEX_RETRY_S:
                rnd.asked = now
                try:
                    self.node.read_index(ctx)
                except ProposalDroppedError:
                    return  # no leader now: the leader change re-asks every round

    def _expire_proposals(self) -> None:
        """Fail the proposals that waited longer than the request timeout (etcd's).

        A batch's deadline counts from its first proposal's submission, so a proposal times
        out at most one batch's gathering (a Ready round) early. Proposals the Ready loop has
        not taken yet (it is busy, e.g. with a defragmentation) time out together, at the
        first one's deadline.
        """
        deadlines, now = self._deadlines, time.monotonic()
        waiters = self._waiters
        while deadlines:
            deadline, ids = deadlines[0]
            if deadline > now:
                if any(map(waiters.__contains__, ids)):
                    break
                deadlines.popleft()  # all applied: nothing to keep it for
                continue
            deadlines.popleft()
            for rid in ids:
                fut = waiters.get(rid)
                if fut is None:
                    continue  # applied
                if not fut.done():
                    fut.set_exception(RequestTimeoutError())
                # It may never be applied (a new leader overwrote it): forget its waiter and
                # request; if it is applied after all, it is decoded.
                self._forget_proposal(rid)
        if self._proposals and self._proposals_since + self.request_timeout_s <= now:
            batch, self._proposals = self._proposals, []
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(RequestTimeoutError())

    def _forget_proposal(self, rid: int) -> None:
        """Drop an answered proposal's waiter and request: if its entry is applied after all,
        it is decoded as another member's would be."""
        del self._waiters[rid]
        if self._local_requests.pop(rid, None) is not None:
            self.metrics.proposals_pending.dec()

    async def _commit_timer(self) -> None:
        # The backend commits at apply boundaries when its batch is old enough; this timer
        # wakes the Ready loop so that an idle batch is committed too, and a compaction goes
        # on without writes. Only the Ready loop touches the backend's batch: a commit must
        # never fall between an entry's data and its consistent index.
        applied = self._applied
        while True:
            compacting = self.kv.compaction_pending
            await asyncio.sleep(self._compaction_pause_s if compacting else 0.1)
            # Under writes every apply round takes a compaction step already.
            idle = self._applied == applied
            applied = self._applied
            if (compacting and idle) or self._backend.pending_writes:
                self._commit_due = True
                self._kick()

    async def _maybe_commit_backend(self) -> None:
        self._commit_due = False
        if self._backend_commit is not None:
            return  # one at a time; the commit timer asks again
        # Asking first on the loop saves a thread round trip per apply round: on a busy machine
        # each hand-over between threads waits for the scheduler (put-1c, 0004 findings).
        if self._backend.commit_due():
            # The batch is cut here, at an apply boundary; the LMDB transaction and its fsync
            # run in a worker thread while the Ready loop goes on (persisting, sending and
            # applying into the next batch), as etcd's backend commits beside its apply loop.
            write = self._backend.start_commit()
            if write is not None:
                self._backend_commit = asyncio.create_task(self._write_backend(write))

    async def _write_backend(self, write: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            await self._in_thread(write)
        except BaseException as e:
            self._backend_commit_error = e  # the Ready loop raises it: fatal, as before
            self._kick()
            return
        finally:
            self._backend_commit = None
        self.metrics.backend_commit_seconds.observe(time.monotonic() - started)
        self._db_size_bytes = self._backend.size_bytes()

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(fn)

    # -- the Ready loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                if self._backend_commit_error is not None:
                    raise self._backend_commit_error
                self._flush_inputs()
                while self.node.has_ready() and not self._stopping:
                    rd = self.node.ready()
                    await self._handle_ready(rd)
                    if self._removed_self:
                        raise MemberRemovedError(
                            "the member has been permanently removed from the cluster"
                        )
                    self._flush_inputs()
                if self._deferred_apply is not None:
                    # Nothing came to overlap it with: apply it now.
                    self._apply_deferred()
                    self._answers_out()
                    await self._after_apply()
                if self._removed_self:
                    raise MemberRemovedError(
                        "the member has been permanently removed from the cluster"
                    )
                if self._commit_due:
                    self._compaction_step()
                    await self._maybe_commit_backend()
                while self._jobs:
                    fn, job = self._jobs.pop(0)
                    await self._hash_walks_done()  # a job may close the backend (defrag)
                    try:
                        job.set_result(await self._in_thread(fn))
                    except Exception as e:
                        job.set_exception(e)
                if self._want_campaign and self._applied >= self._storage.initial_state()[0].commit:
                    self._want_campaign = False
                    if self._lead == NONE_ID:
                        self.node.campaign()
                        self._kick()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._fatal = e
            if isinstance(e, MemberRemovedError):
                self.log.warn(str(e), local_member_id=format_id(self.id))
            else:
                self.log.fatal("member stopped on a fatal error", error=repr(e))
            fail = StoppedError()
            for fut in list(self._waiters.values()):
                if not fut.done():
                    fut.set_exception(fail)
            raise

    def _flush_inputs(self) -> None:
        fut: _Waiter
        if self._conf_proposals:
            ccs, self._conf_proposals = self._conf_proposals, []
            for cc, fut in ccs:
                if fut.done():
                    continue
                try:
                    self.node.propose_conf_change(cc)
                except ProposalDroppedError:
                    fut.set_exception(NoLeaderError())
                    continue
                self._waiters[cc.id] = fut
        if self._proposals:
            batch, self._proposals = self._proposals, []
            datas: list[bytes] = []
            ids: list[int] = []
            # Nothing below changes the alarms, the quota or the db size: read them once.
            next_id, encode = self._ids.next, entry_codec.encode
            proposed, local_requests = self._waiters, self._local_requests
            request_bytes_max = self.cfg.max_request_bytes
            quota_bytes, db_size_bytes = self._quota_bytes, self._db_size_bytes
            nospace: bool | None = None  # the NOSPACE alarm, looked up when first needed
            # The batch's deadline: from its first proposal's submission.
            deadline = self._proposals_since + self.request_timeout_s
            for req, fut in batch:
                if fut.done():
                    continue
                rid = next_id()
                data = encode(rid, req)
                if len(data) * 3 > request_bytes_max and _too_large(rid, req, request_bytes_max):
                    fut.set_exception(RequestTooLargeError())
                    continue
                if isinstance(
                    req.request if type(req) is entry_codec.Guarded else req, _QUOTA_CHECKED
                ):
                    if nospace is None:
                        nospace = self._has_nospace_alarm()
                    if nospace:
                        fut.set_exception(NoSpaceError())
                        continue
                    if quota_bytes > 0 and db_size_bytes + len(data) > quota_bytes:
                        fut.set_exception(NoSpaceError())
                        self._raise_nospace_alarm()
                        continue
                datas.append(data)
                ids.append(rid)
                proposed[rid] = fut
                local_requests[rid] = req
            if datas:
                # A leader appends these very bytes objects to its log (a follower forwards).
                raft = self.node.raft
                first = raft.raft_log.last_index() + 1 if raft.role is Role.LEADER else 0
                try:
                    self.node.propose_many(datas)
                    self.metrics.proposals_pending.inc(len(datas))
                except ProposalDroppedError:
                    self.metrics.proposals_failed.inc(len(datas))
                    for rid in ids:
                        self._local_requests.pop(rid, None)
                        fut = self._waiters.pop(rid)
                        if not fut.done():
                            fut.set_exception(NoLeaderError())
                else:
                    self._deadlines.append((deadline, ids))
                    if first:
                        self._appended.extend(
                            zip(range(first, first + len(datas)), datas, ids, strict=True)
                        )
        if self._reads:
            waiters, self._reads = self._reads, []
            ctx = self._next_read_ctx()
            try:
                self.node.read_index(ctx)
            except ProposalDroppedError:
                # No leader: the reads wait for one (or their timeout), as in etcd. The ticker
                # flushes again every tick; a new leader flushes them at once.
                self._reads = [fut for fut in waiters if not fut.done()]
                return
            self._rounds[ctx] = _ReadRound(waiters, asked=time.monotonic())

    def _next_read_ctx(self) -> bytes:
        self._round_seq += 1
        return self.id.to_bytes(8, "big") + self._round_seq.to_bytes(8, "big")

    async def _handle_ready(self, rd: Ready) -> None:
        applied_deferred = self._deferred_apply is not None
        overlap = applied_deferred and self._may_overlap_deferred(rd)
        if applied_deferred and not overlap:
            self._apply_deferred()  # anything but a plain next batch keeps the unpipelined order
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        messages: tuple[Message, ...] | list[Message] = rd.messages
        if messages and rd.must_sync and self._transport is not None:
            messages = self._send_appends_early(rd)
        # 1. persist
        if rd.snapshot is not None and not rd.snapshot.is_empty:
            await self._install_snapshot(rd.snapshot)
        if rd.hard_state is not None or rd.entries:
            self._wal.save(rd.hard_state, rd.entries)
        applied = False
        if rd.must_sync and self.cfg.unsafe_no_fsync:
            # --unsafe-no-fsync: the sync is a pwrite, nothing worth a thread or an overlap;
            # and, as etcd, no fsync duration is observed.
            if not messages and self._may_apply_during_sync(rd):
                self._persist_and_apply(rd)
                applied = True
            else:
                self._wal.sync()
        elif rd.must_sync:
            started = time.monotonic()
            if overlap:
                await self._sync_applying_deferred()
            elif (
                len(rd.entries) <= _INLINE_SYNC_ENTRIES_MAX
                and started - self._concurrent_at > _INLINE_SYNC_QUIET_S
            ):
                if not messages and self._may_apply_during_sync(rd):
                    self._persist_and_apply(rd)
                    applied = True
                else:
                    self._wal.sync()
            else:
                await self._sync_wal()
            self.metrics.wal_fsync_seconds.observe(time.monotonic() - started)
        if not applied:
            if rd.entries:
                self._storage.append(rd.entries)
            if rd.hard_state is not None:
                self._storage.set_hard_state(rd.hard_state)
        # 2. send, only now that what the messages promise is durable
        if messages and self._transport is not None:
            self._transport.send(messages)
        # 3. apply (or leave it to overlap the next batch's fdatasync)
        if rd.committed_entries and not applied:
            if self._may_defer_apply(rd):
                self._deferred_apply = rd
            else:
                self._apply(rd.committed_entries)
                applied = True
        # 4. advance
        self.node.advance(rd)
        for rs in rd.read_states:
            rnd = self._rounds.get(rs.request_ctx)
            if rnd is not None:
                rnd.index = rs.index
        self._resolve_reads()
        if applied or applied_deferred:
            self._answers_out()
            await self._after_apply()

    # Pipelined apply (a lone member under concurrent load). Unpipelined, a round is
    # fdatasync(k) then apply(k) + answers, then the next batch is proposed and written: the
    # disk idles during the apply and the CPU during the fdatasync. Pipelined, once
    # fdatasync(k) returned, batch k is advanced but not applied (``_deferred_apply``); the
    # next round proposes batch k+1, writes it, starts fdatasync(k+1) (``_sync_wal``: Linux
    # AIO, else a worker thread) and only then applies batch k and resolves its answers,
    # which go out while the disk works (etcd's apply runs beside its raft loop the same
    # way). Invariants:
    # - an entry is applied (visible, answered) only after its own WAL records are durable:
    #   batch k is deferred only once fdatasync(k) returned;
    # - apply order is log order: at most one batch is deferred, and it is applied before
    #   anything else is applied or installed, and before the loop waits for new work;
    # - one sync at a time: the deferred apply touches no WAL, and a snapshot (_after_apply)
    #   is only taken once the fdatasync in flight returned;
    # - a failed fdatasync is fatal as before (WalFatalError ends the Ready loop), and stop()
    #   waits for the Ready loop, hence for the fdatasync in flight;
    # - only a lone voter's plain rounds take part: normal entries, no snapshot, no soft
    #   state change, no messages. Conf changes, snapshots, leader changes and clusters keep
    #   the unpipelined order. The core's applied index runs ahead of ``_applied`` while a
    #   batch is deferred (as etcd's after Advance); with normal entries only, nothing in the
    #   core depends on it (it matters for conf changes, which are never deferred), and reads
    #   wait for ``_applied``.
    # Measured (2026-11-28, 2 shared cores, 100 clients, paired runs against the unpipelined
    # loop): about +4% puts/s at load 2-3, nothing measurable at load 7-10 (the fdatasync is
    # ~0.5 ms there, the round's CPU dominates). An fdatasync on the loop thread instead of a
    # worker thread did no better, and would stall reads and watches behind a slow disk.

    def _may_defer_apply(self, rd: Ready) -> bool:
        """Whether ``rd``'s committed entries, durable now, may wait for the next round: only
        when a next batch is already queued (its fdatasync is what the apply overlaps)."""
        return (
            bool(self._proposals)
            and not self._stopping
            and not self.cfg.unsafe_no_fsync
            and self._single_voter
            and rd.soft_state is None
            and not rd.messages
            and self._may_apply_during_sync(rd)
        )

    @staticmethod
    def _may_overlap_deferred(rd: Ready) -> bool:
        """Whether the deferred batch may be applied while ``rd`` is being synced."""
        return (
            rd.must_sync
            and rd.snapshot is None
            and rd.soft_state is None
            and not rd.messages
            and all(e.type == EntryType.NORMAL for e in rd.committed_entries)
        )

    def _apply_deferred(self) -> None:
        rd, self._deferred_apply = self._deferred_apply, None
        assert rd is not None
        self._apply(rd.committed_entries)
        self._resolve_reads()

    @staticmethod
    def _open_aio() -> AsyncFdatasync | None:
        return AsyncFdatasync.open()

    def _start_wal_sync(self) -> asyncio.Future[None] | None:
        """Write what the WAL has pending and submit its fdatasync to the kernel (Linux AIO);
        the future is done when it completed (``_on_wal_synced``). None: nothing to wait for."""
        assert self._aio is not None and self._wal_sync_waiter is None
        if not self._wal.sync_start(self._aio.submit):
            return None
        fut = self._wal_sync_waiter = asyncio.get_running_loop().create_future()
        return fut

    def _on_wal_synced(self) -> None:
        """The AIO eventfd is readable: an fdatasync submitted by ``_start_wal_sync`` is done."""
        assert self._aio is not None
        for result in self._aio.reap():
            waiter, self._wal_sync_waiter = self._wal_sync_waiter, None
            try:
                self._wal.sync_done(result)
            except WalFatalError as e:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(e)
            else:
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _sync_wal(self) -> None:
        """``WAL.sync`` without holding up the event loop: through Linux AIO, or else in a
        worker thread. A thread is what petcd used first; it needs the GIL to start the
        fdatasync and again to report back, and while the loop runs Python each of those
        waits up to the interpreter's switch interval (5 ms)."""
        if self._aio is None:
            await self._in_thread(self._wal.sync)
            return
        fut = self._start_wal_sync()
        if fut is not None:
            await fut

    async def _sync_applying_deferred(self) -> None:
        """fdatasync the WAL and apply the deferred batch meanwhile."""
        if self._aio is not None:
            fut = self._start_wal_sync()
            try:
                self._apply_deferred()
                self._answers_out()  # batch k is durable; k+1's fdatasync is in flight
            finally:
                if fut is not None:
                    await fut
            return
        # The write is issued and its writeback started here: the worker thread needs the GIL
        # to begin, which the apply below holds until it yields (or for a switch interval).
        self._wal.write()
        # Submitted to the thread at once (a task would only start after the apply).
        sync = asyncio.get_running_loop().run_in_executor(None, self._wal.sync)
        try:
            self._apply_deferred()
            self._answers_out()
        finally:
            await sync

    @staticmethod
    def _may_apply_during_sync(rd: Ready) -> bool:
        """Whether ``rd`` may be applied while its WAL write goes to the disk
        (``_persist_and_apply``): a lone member's own new entries, committed at append time,
        none of them a conf change (whose apply reconfigures the peer transport)."""
        if not rd.committed_entries or rd.snapshot is not None:
            return False
        return all(e.type == EntryType.NORMAL for e in rd.committed_entries)

    def _persist_and_apply(self, rd: Ready) -> None:
        """Persist ``rd`` and apply its committed entries, the apply overlapping the disk write.

        ``WAL.write`` issues the write and starts its writeback; the apply (CPU only: MVCC,
        backend overlay, futures resolved, watch events queued) runs meanwhile; ``WAL.sync``
        then waits for the data and the fdatasync. Nothing of the apply is visible before the
        records are durable: this method never yields to the event loop, so no answer, read,
        watch event or message goes out and no backend commit starts until ``sync`` returned
        (etcd's order for a lone member, persist -> apply -> answer, as far as anyone can
        observe). If the fdatasync fails, memory is ahead of the log: the process exits at
        once (etcd's lg.Fatal), without the backend commit a normal stop would make.
        """
        self._wal.write()
        try:
            if rd.entries:
                self._storage.append(rd.entries)
            if rd.hard_state is not None:
                self._storage.set_hard_state(rd.hard_state)
            self._apply(rd.committed_entries)
        finally:
            try:
                self._wal.sync()
            except WalFatalError as e:
                self.log.fatal("failed to save Raft hard state and entries", error=str(e))
                self._exit_process(1)
                raise

    def _send_appends_early(self, rd: Ready) -> list[Message]:
        """A leader's appends and heartbeats go out before its own WAL fsync; returns the rest.

        Raft allows a leader to write its log in parallel with replicating it (thesis 10.2.1;
        etcd's leader sends before saving too), which takes one fsync off every write's path:
        the followers' fsyncs overlap the leader's. It stays safe because a commit still needs
        this member's own entries durable: raft counts the leader's match at append time, but
        followers' acks for these entries can only be stepped while the fsync below runs, and
        whatever that commit releases (apply, answers, commit indexes sent to followers) happens
        in a later Ready, after this fsync returned. A single-voter quorum commits at append
        time, so its messages (to learners) keep waiting. Everything else (append responses,
        votes, read-index answers) promises something about this member's own state and waits.
        """
        raft = self.node.raft
        if raft.role is not Role.LEADER or raft.quorum < 2 or rd.snapshot is not None:
            return list(rd.messages)
        early: list[Message] = []
        rest: list[Message] = []
        for m in rd.messages:
            (early if m.type in _EARLY_TYPES else rest).append(m)
        if early:
            assert self._transport is not None
            self._transport.send(early)
        return rest

    async def _install_snapshot(self, snap: Snapshot) -> None:
        """A leader sent the state machine (its backend file): adopt it, then the log."""
        meta = snap.metadata
        path = self._incoming_snapshots.pop(meta.index, None)
        if path is None:
            raise FatalError(f"no snapshot file received for snapshot index {meta.index}")
        for stale in [i for i in self._incoming_snapshots if i < meta.index]:
            with contextlib.suppress(OSError):
                os.remove(self._incoming_snapshots.pop(stale))
        self.log.info("applying snapshot", snapshot_index=meta.index, snapshot_term=meta.term)
        # Crash-safe order (etcd's): the received file is kept durably under the snapshot's
        # index, then the snapshot is recorded (snap file, WAL marker), then the backend is
        # replaced. A crash between the last two finds a WAL marker beyond the backend's
        # consistent index and that file next to it (``_recover_snapshot_backend``). The
        # backend is never ahead of the WAL: the sender's metadata is its file's own.
        db_path = self._snapshot_db_path(meta.index)
        await self._in_thread(lambda: _durable_rename(path, db_path))
        await self._in_thread(self._backend.commit)
        await self._in_thread(lambda: self._snapshotter.save_bytes(meta, b""))
        self._wal.save_snapshot(meta)
        await self._sync_wal()
        await self._hash_walks_done()
        ci, _ = await self._in_thread(lambda: self._backend.replace_with(db_path))
        if ci != meta.index:
            self.log.warn(
                "the received snapshot's database does not hold the snapshot's index",
                snapshot_index=meta.index,
                consistent_index=ci,
            )
        with contextlib.suppress(OSError):
            os.remove(db_path)
        self._rebuild_state_machine()
        self._storage.apply_snapshot(Snapshot(meta))
        self._conf_voters = meta.conf_state.voters
        self._applied = max(self._applied, meta.index)
        self._consistent_index = max(ci, meta.index)
        self._snapshot_index = meta.index
        self.log.info("applied snapshot", snapshot_index=meta.index, consistent_index=ci)
        if self._ready_to_serve is not None and self._lead != NONE_ID and meta.term == self._term():
            # The snapshot holds the leader's log of this term so far (as applying an entry
            # of this term would tell): ready, and publish, without waiting for a new entry.
            self._ready_to_serve.set()

    def _snapshot_db_path(self, index: Index) -> str:
        """Where a received snapshot's database waits until it replaced the backend (etcd's
        ``<snap dir>/<index>.snap.db``)."""
        return os.path.join(self.cfg.snap_path, f"{index:016x}.snap.db")

    def _recover_snapshot_backend(self) -> None:
        """At open: finish a snapshot install that a crash interrupted.

        The WAL's newest snapshot marker beyond the backend's consistent index can only be a
        received snapshot whose database had not replaced the backend yet: install it from its
        ``.snap.db`` file (etcd's recoverSnapshotBackend). Leftover received files go.
        """
        cfg = self.cfg
        ci, _ = self._backend.consistent_index()
        if wal_exists(cfg.wal_path):
            markers = snapshot_markers(cfg.wal_path)
            if markers and markers[-1].index > ci:
                newest = markers[-1]
                db_path = self._snapshot_db_path(newest.index)
                if os.path.exists(db_path):
                    self.log.info(
                        "recovering the backend from a received snapshot",
                        snapshot_index=newest.index,
                        consistent_index=ci,
                        path=db_path,
                    )
                    ci, _ = self._backend.replace_with(db_path)
        for name in os.listdir(cfg.snap_path):
            if name.endswith((".snap.db", ".snap.rcv")):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(cfg.snap_path, name))

    async def _snapshot_for_peer(self) -> SnapshotFile:
        """A copy of the backend for a follower, with the metadata of exactly that copy.

        Raft picked its newest snapshot (index S), but the file sent is the live backend,
        which applied up to ``applied`` >= S. The follower must record what its new backend
        holds, so the message says (applied, its term, the configuration now), as etcd's
        createMergedSnapshotMessage; the leader's log still has every entry after it.
        """
        fd, path = tempfile.mkstemp(prefix="snapshot-", suffix=".tmp", dir=self.cfg.member_dir)
        os.close(fd)
        backend = self._backend

        def copy() -> SnapshotMetadata:
            # Runs while the Ready loop waits for it: nothing is applied meanwhile, so the
            # applied index, the configuration and the backend agree.
            applied = self._applied
            ci = backend.consistent_index()[0]
            if ci > applied:
                # Still replaying entries the backend had before a restart: the configuration
                # is not yet the backend's. Raft sends the snapshot again later.
                raise OSError(f"replaying the log up to {ci} (applied {applied}); try later")
            if ci < applied:
                backend.set_consistent_index(applied, self._storage.term(applied))
            conf = self.node.raft.conf_state()
            with open(path, "wb") as f:
                index, term = backend.copy_to(f)
            return SnapshotMetadata(index, term, conf)

        try:
            meta = await self._loop_job(copy)
        except BaseException:
            os.remove(path)
            raise
        return SnapshotFile(path, meta)

    def _rebuild_state_machine(self) -> None:
        """After the backend file was replaced: a new lessor, mvcc reloaded, members reread."""
        cfg = self.cfg
        self.lessor = Lessor(
            BucketLeaseStore(NamedBucket(self._backend, LEASE)),
            clock=time.monotonic,
            config=self.lessor.config,
        )
        # mvcc has no public way to swap its lease hook on reload yet (reported to the lead).
        self.kv._lessor = self.lessor
        self.kv.reload()
        self.auth.recover(self._backend)
        self._members = {
            MemberId(int.from_bytes(k, "big")): MemberInfo.decode(
                MemberId(int.from_bytes(k, "big")), v
            )
            for k, v in self._backend.iterate(MEMBERS)
        }
        self._alarms = {decode_alarm_key(k) for k, _ in self._backend.iterate(ALARM)}
        self._removed_ids = {
            MemberId(int.from_bytes(k, "big")) for k, _ in self._backend.iterate(MEMBERS_REMOVED)
        }
        self._db_size_bytes = self._backend.size_bytes()
        self._sync_peers()
        if self._v2 is not None:
            self._v2.load(self._backend)
        else:
            self._open_v2()
        del cfg

    def _on_soft_state(self, lead: MemberId, role: Role) -> None:
        if role != self._role:
            self._role = role
            # etcd's raft logs each role it takes; tests and tools wait for "became leader".
            self.log.info(
                f"{format_id(self.id)} became {_ROLE_NAMES[role]} at term {self.node.status().term}"
            )
        if lead != self._lead:
            if lead != NONE_ID:
                self.log.info(
                    f"raft.node: {format_id(self.id)} elected leader {format_id(lead)} at term "
                    f"{self.node.status().term}",
                )
                self.metrics.leader_changes.inc()
            else:
                self.log.info(
                    f"raft.node: {format_id(self.id)} lost leader {format_id(self._lead)}"
                )
            if self._lead != NONE_ID:
                self._fail_proposals_of_old_leader()
            self._lead = lead
            if lead != self.id and self.lessor.is_primary:
                self.lessor.demote()
            self._maybe_ready()
            # Reads waiting on the old leader's answer will never get one: ask again.
            for rnd in self._rounds.values():
                self._reads.extend(f for f in rnd.waiters if not f.done())
            self._rounds.clear()
            self._compactor.reset()
            if self._reads:
                self._kick()
        self.metrics.has_leader.set(1 if lead != NONE_ID else 0)
        self.metrics.is_leader.set(1 if role is Role.LEADER else 0)

    def _fail_proposals_of_old_leader(self) -> None:
        """The leader changed: answer the proposals handed to raft under the old one now.

        A leader drops proposals while it transfers its leadership, and a follower forwards
        proposals without an answer, so they would wait for the request timeout (7 s) although
        the client could retry at once. Their outcome is unknown (the new leader may still
        commit them), exactly as after a timeout, so they fail with etcd's ``leader changed``;
        an entry applied later is decoded as any other."""
        pending = [rid for rid, fut in self._waiters.items() if not fut.done()]
        for rid in pending:
            self._waiters[rid].set_exception(LeaderChangedError())
            self._forget_proposal(rid)
        if pending:
            self.metrics.proposals_failed.inc(len(pending))

    @property
    def _single_voter(self) -> bool:
        return self._conf_voters == frozenset((self.id,))

    def _apply(self, entries: tuple[Entry, ...]) -> None:
        backend = self._backend
        term = self._term()
        answered = 0  # this member's requests applied: proposals_pending falls once per batch
        for e in entries:
            assert e.index == self._applied + 1, (e.index, self._applied)
            if e.type == EntryType.CONF_CHANGE:
                cc = confchange.decode(e.data)
                self._conf_voters = self.node.apply_conf_change(cc).voters
                if e.index > self._consistent_index:
                    self._apply_membership(cc)
                    if self._v2 is not None:
                        self._mirror_v2(cc)
                    backend.set_consistent_index(e.index, e.term)
                self._sync_peer(cc)
                fut = self._waiters.pop(cc.id, None) if cc.id else None
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif e.index <= self._consistent_index:
                pass  # applied before a restart
            elif not e.data:
                backend.set_consistent_index(e.index, e.term)
                if e.term == term and self._lead == self.id and not self.lessor.is_primary:
                    # The leader's first entry of its term: leases start counting down now.
                    self.lessor.promote(self.cfg.election_timeout_ms / 1000.0)
            elif self._apply_request(e, term):
                answered += 1
            self._applied = e.index
        if answered:
            self._answered = True
            self.metrics.proposals_pending.dec(answered)
        self.metrics.proposals_applied.set(self._applied)
        # Not node.status(): that copies every peer's progress, once per Ready.
        self.metrics.proposals_committed.set(self.node.raft.raft_log.committed)
        self._consistent_index = max(self._consistent_index, self._applied)
        self._maybe_ready()

    def _mvcc_counts(self) -> tuple[int, int, int, int, int]:
        kv = self.kv  # the store of the moment (a received snapshot replaces it)
        return kv.puts, kv.deletes, kv.ranges, kv.txns, kv.live_key_count()

    def _watch_counts(self) -> tuple[int, int, int]:
        """(watch streams, watchers, slow watchers): each stream listens for sync passes."""
        synced, unsynced, victims = self.kv.watcher_counts()
        return len(self._after_watch_sync), synced + unsynced + victims, unsynced + victims

    def _maybe_defrag_at_start(self, threshold_mb: int) -> None:
        """etcd's --experimental-bootstrap-defrag-threshold-megabytes: defragment the backend
        before serving when that frees at least the threshold."""
        size, in_use = self._backend.size_bytes(), self._backend.size_in_use_bytes()
        threshold = threshold_mb * 1024 * 1024
        if size - in_use < threshold:
            self.log.info(
                "Skipping defragmentation",
                current_db_size_bytes=size,
                current_db_size_in_use_bytes=in_use,
                experimental_bootstrap_defrag_threshold_bytes=threshold,
            )
            return
        self.log.info("defragmenting", path=self.cfg.backend_path, current_db_size_bytes=size)
        self._backend.defrag()
        self.log.info(
            "finished defragmenting directory",
            path=self.cfg.backend_path,
            current_db_size_bytes=self._backend.size_bytes(),
        )

    def _maybe_ready(self) -> None:
        """Ready to serve (and publish) once there is a leader and the last applied entry is
        of the current term: this member has applied the leader's log of this term so far,
        at least to the entry a new leader appends first. Checked after applying and when a
        leader becomes known: a restarted member may have applied its log up to the current
        term before it heard from the leader, and then nothing new may come to apply."""
        ready = self._ready_to_serve
        if ready is None or ready.is_set() or self._lead == NONE_ID:
            return
        try:
            applied_term = self.node.raft.raft_log.term(self._applied)
        except RaftError:  # compacted or unavailable: a later applied entry decides
            return
        if applied_term == self._term():
            ready.set()

    def _apply_membership(self, cc: ConfChange) -> None:
        """A committed conf change reaches the members bucket (etcd's RaftCluster)."""
        backend, key = self._backend, int(cc.node_id).to_bytes(8, "big")
        old = self._members.get(cc.node_id)
        if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
            learner = cc.type == ConfChangeType.ADD_LEARNER_NODE
            if old is not None and cc.type == ConfChangeType.ADD_NODE and old.is_learner:
                info = dataclasses.replace(old, is_learner=False)  # a promotion
                self.log.info("promote member", promoted_member_id=format_id(cc.node_id))
            else:
                info = dataclasses.replace(
                    MemberInfo.decode(cc.node_id, cc.context), is_learner=learner
                )
                if old is not None and old.name and not info.name:
                    info = dataclasses.replace(info, name=old.name, client_urls=old.client_urls)
                self.log.info(
                    "added member",
                    added_peer_id=format_id(cc.node_id),
                    added_peer_peer_urls=list(info.peer_urls),
                    added_peer_is_learner=learner,
                )
        elif cc.type == ConfChangeType.UPDATE_NODE:
            new = MemberInfo.decode(cc.node_id, cc.context)
            base = old if old is not None else new
            info = dataclasses.replace(base, peer_urls=new.peer_urls)
            self.log.info(
                "updated member",
                updated_remote_peer_id=format_id(cc.node_id),
                updated_remote_peer_urls=list(info.peer_urls),
            )
        else:
            backend.delete(MEMBERS, key)
            backend.put(MEMBERS_REMOVED, key, b"removed")
            self._members.pop(cc.node_id, None)
            self._removed_ids.add(cc.node_id)
            self.log.info("removed member", removed_member_id=format_id(cc.node_id))
            return
        backend.put(MEMBERS, key, info.encode())
        self._members[cc.node_id] = info

    def _sync_peer(self, cc: ConfChange) -> None:
        """The transport follows the configuration (also while replaying after a restart)."""
        if cc.node_id == self.id:
            if cc.type == ConfChangeType.REMOVE_NODE:
                self._removed_self = True
            return
        t = self._transport
        if t is None:
            return
        if cc.type == ConfChangeType.REMOVE_NODE:
            # At once: its handshakes are refused as "removed" from now on, which is how a
            # removed member learns it (``_removal_check``) and how a joining member skips the
            # ids of removed members (``petcd.server.join``).
            t.remove_peer(cc.node_id)
            return
        info = self._members.get(cc.node_id)
        if info is not None and info.peer_urls:
            t.add_peer(cc.node_id, info.peer_urls)

    async def _removal_check(self) -> None:
        """A member removed while it was cut off never applies its removal: its peers refuse
        it (etcd answers 410 Gone). After two election timeouts without a leader, ask them."""
        interval = 2 * self.cfg.election_timeout_ms / 1000.0
        leaderless = 0
        while True:
            await asyncio.sleep(interval)
            leaderless = leaderless + 1 if self._lead == NONE_ID else 0
            if leaderless < 1:
                continue
            for mid, info in list(self._members.items()):
                if mid == self.id:
                    continue
                for url in info.peer_urls:
                    try:
                        status, _ = await asyncio.to_thread(
                            functools.partial(join.probe, ssl_context=self._peer_client_ssl),
                            url,
                            self.cluster_id,
                            self.id,
                            0,
                        )
                    except (OSError, JoinError, ValueError):
                        continue
                    if status == HandshakeStatus.REMOVED:
                        self._removed_self = True
                        self._kick()
                        return

    def _sync_peers(self) -> None:
        """After a snapshot replaced the members: the transport knows exactly the others."""
        t = self._transport
        if t is None:
            return
        for mid in t.peer_ids():
            if mid not in self._members:
                t.remove_peer(mid)
        for mid, info in self._members.items():
            if mid != self.id and info.peer_urls:
                t.add_peer(mid, info.peer_urls)

    def _apply_request(self, e: Entry, term: Term) -> bool:
        """Apply one client request; True if it was this member's, awaited by a waiter."""
        # What this member proposed itself is applied from the request it encoded (equal to
        # the decoded one: the codec round-trips exactly), which saves decoding on the leader.
        # Such a request also passed validate_request before it was proposed (put, txn,
        # delete_range, submit), with the same max_txn_ops, so mvcc need not check it again;
        # a decoded one (another member's, or replayed from the WAL) is checked as always.
        data, appended = e.data, self._appended
        rid: int | None = None
        while appended and appended[0][0] <= e.index:
            _, mine, mine_rid = appended.popleft()  # at or below the applied index: done
            if mine is data:
                rid = mine_rid  # the id this member encoded into these very bytes
                break
            # else overwritten by another leader's entry: never applied
        if rid is None:
            rid = entry_codec.request_id(data)
        req = self._local_requests.pop(rid, None)
        local = req is not None
        if req is None:
            req = entry_codec.decode(data).request
        result: Any
        guard = 0
        if type(req) is entry_codec.Guarded:
            guard, req = req.auth_revision, req.request
        try:
            if guard or self.auth.enabled:
                try:
                    apply_check(self.auth, req, guard)
                except AuthError:
                    self._backend.set_consistent_index(e.index, e.term)
                    raise
            if (
                self._alarms
                and refused_when_corrupt(req)
                and any(a == ALARM_CORRUPT for _, a in self._alarms)
            ):  # etcd's corrupt applier
                result = CorruptError()
                self._backend.set_consistent_index(e.index, e.term)
            elif isinstance(req, _MVCC_WRITES):
                result = self.kv.apply(
                    req, index=e.index, term=e.term, commit=False, validated=local
                )
            elif isinstance(req, entry_codec.LeaseGrant | entry_codec.LeaseCheckpoints):
                try:
                    result = self._apply_lease(req)
                finally:
                    self._backend.set_consistent_index(e.index, e.term)
            elif isinstance(req, entry_codec.LeaseRevoke):
                try:
                    keys = self.lessor.revoke(LeaseId(req.id))
                except LeaseError:
                    self._backend.set_consistent_index(e.index, e.term)
                    raise
                self.kv.delete_keys(keys, index=e.index, term=e.term, commit=False)
                result = self._header(self.kv.current_revision, term)
            elif isinstance(req, entry_codec.AlarmChange):
                result = self._apply_alarm(req)
                self._backend.set_consistent_index(e.index, e.term)
            elif isinstance(req, entry_codec.MemberAttributes):
                result = self._apply_member_attributes(req)
                if self._v2 is not None:
                    named = all(m.name for m in self._members.values())
                    self._v2.mirror_attributes(req.member_id, req.name, req.client_urls, named)
                self._backend.set_consistent_index(e.index, e.term)
            elif isinstance(req, V2Request):
                result = self._apply_v2(req, e)
            elif isinstance(req, AuthRequest):
                try:
                    result = self.auth.apply(req, e.index)
                finally:
                    self._backend.set_consistent_index(e.index, e.term)
            elif isinstance(req, CompactionRequest):
                result = self.kv.compact(req.revision, index=e.index, term=e.term, commit=False)
                self._compactor.compacted(req.revision)
                # Done by compaction steps between Ready rounds (``_compaction_step``); a
                # "physical" request is answered once they are (``compact``).
            else:
                raise AssertionError(f"unknown entry request {req!r}")
        except (MvccError, LeaseError, AuthError) as err:
            result = err
        fut = self._waiters.pop(rid, None)
        if fut is None:
            return False
        if fut.done():
            pass
        elif type(result) is PutResponse:  # the common case first
            fut.set_result(self._with_header(result, term))
        elif isinstance(result, Exception):
            fut.set_exception(result)
        elif isinstance(result, MemberInfo | LeaseInfo | ResponseHeader | tuple | str | type(None)):
            fut.set_result(result)
        else:
            fut.set_result(self._with_header(result, term))
        return True

    # -- the v2 tree (--enable-v2; docs/enhancements/0014-v2-api.md) ---------------------------

    def _open_v2(self) -> None:
        from petcd.server.v2 import V2Service

        if self.cfg.enable_v2 or V2Service.exists(self._backend):
            self._v2 = V2Service(self._backend)

    def _start_v2_sync(self) -> None:
        def is_leader() -> bool:
            return self._lead == self.id

        task = asyncio.create_task(self._v2.run_sync(is_leader, self._propose), name="petcd-v2")
        self._tasks.append(task)

    def _apply_v2(self, req: V2Request, e: Entry) -> Any:
        if self._v2 is None:  # another member's v2 write: keep the same tree as it
            from petcd.server.v2 import V2Service

            self._v2 = V2Service(self._backend)
            if self._stopped is not None:
                self._start_v2_sync()
        result = self._v2.apply(req)
        self._backend.set_consistent_index(e.index, e.term)
        if isinstance(result, Exception):
            return result
        return (result, e.index, e.term)

    def _mirror_v2(self, cc: ConfChange) -> None:
        info = self._members.get(cc.node_id)
        urls = info.peer_urls if info is not None else ()
        learner = info is not None and info.is_learner
        self._v2.mirror_conf_change(cc.type, cc.node_id, urls, learner)

    @property
    def v2(self) -> Any:
        """The member's ``petcd.server.v2.V2Service`` (None while v2 is off)."""
        return self._v2

    async def v2_propose(self, req: V2Request) -> tuple[Any, int, int]:
        """Propose a v2 request; its (event, raft index, term), or raises ``V2Error``."""
        result: tuple[Any, int, int] = await self._propose(req)
        return result

    def v2_raft_position(self) -> tuple[int, int]:
        """(commit index, term): etcd's X-Raft-Index and X-Raft-Term."""
        return int(self.node.raft.raft_log.committed), int(self._term())

    def _apply_lease(
        self, req: entry_codec.LeaseGrant | entry_codec.LeaseCheckpoints
    ) -> LeaseInfo | None:
        if isinstance(req, entry_codec.LeaseGrant):
            return self.lessor.grant(LeaseId(req.id), req.ttl_seconds)
        for lease_id, remaining in req.checkpoints:
            with contextlib.suppress(LeaseNotFoundError):  # revoked meanwhile: nothing to do
                self.lessor.checkpoint(LeaseId(lease_id), remaining)
        return None

    def _apply_alarm(self, req: entry_codec.AlarmChange) -> tuple[tuple[int, int], ...]:
        """etcd's alarm store: activate/deactivate; returns the alarms the change touched."""
        alarm = (req.member_id, req.alarm)
        key = encode_alarm_key(*alarm)
        if req.action == ALARM_ACTIVATE:
            if req.alarm == ALARM_NONE:
                return ()  # etcd 3.5's applier raises nothing for NONE (3.4 crashed on it)
            if alarm not in self._alarms:
                self._alarms.add(alarm)
                self._backend.put(ALARM, key, b"")
                self.log.warn(
                    "alarm raised", member_id=format_id(req.member_id), alarm=_alarm_name(req.alarm)
                )
            return (alarm,)
        if alarm in self._alarms:
            self._alarms.discard(alarm)
            self._backend.delete(ALARM, key)
            self.log.warn(
                "alarm disarmed", member_id=format_id(req.member_id), alarm=_alarm_name(req.alarm)
            )
            return (alarm,)
        return ()

    def _has_nospace_alarm(self) -> bool:
        return any(a == ALARM_NOSPACE for _, a in self._alarms)

    def _raise_nospace_alarm(self) -> None:
        if self._nospace_raising or (self.id, ALARM_NOSPACE) in self._alarms:
            return
        self._nospace_raising = True

        async def raise_alarm() -> None:
            try:
                await self._propose(entry_codec.AlarmChange(ALARM_ACTIVATE, self.id, ALARM_NOSPACE))
            finally:
                self._nospace_raising = False

        self._spawn(raise_alarm(), "NOSPACE alarm")

    async def alarm_change(
        self, action: int, member: int, alarm: int
    ) -> tuple[ResponseHeader, tuple[tuple[int, int], ...]]:
        """Maintenance.Alarm ACTIVATE / DEACTIVATE, through raft."""
        changed: tuple[tuple[int, int], ...] = await self._propose(
            entry_codec.AlarmChange(action, member, alarm)
        )
        return self._header(self.kv.current_revision), changed

    def _apply_member_attributes(self, attrs: entry_codec.MemberAttributes) -> MemberInfo:
        key = int(attrs.member_id).to_bytes(8, "big")
        raw = self._backend.get(MEMBERS, key)
        record = json.loads(raw) if raw else {}
        record["name"] = attrs.name
        record["clientURLs"] = list(attrs.client_urls)
        self._backend.put(MEMBERS, key, json.dumps(record).encode())
        info = MemberInfo.decode(MemberId(attrs.member_id), json.dumps(record).encode())
        self._members[info.id] = info
        return info

    async def publish(self) -> None:
        """Publish this member's name and client URLs through raft (etcd's publishV3).

        Retried until it succeeds or the member stops, as etcd: a proposal forwarded to a
        leader that never gets it (a partition, a leader change) is lost, and a member that
        never publishes stays "unstarted", or keeps its old client URLs, in the member list.
        """
        attrs = entry_codec.MemberAttributes(
            self.id, self.cfg.name, tuple(str(u) for u in self.cfg.advertise_client_urls)
        )
        while True:
            try:
                await self._propose(attrs)
                break
            except StoppedError:
                raise
            except Exception as e:  # no leader, timed out: try again
                if self._stopping:
                    raise StoppedError() from e
                self.log.warn(
                    "failed to publish local member to cluster through raft",
                    local_member_id=format_id(self.id),
                    error=str(e) or type(e).__name__,
                )
                await asyncio.sleep(self.cfg.heartbeat_interval_ms / 1000.0)
        self.log.info(
            "published local member to cluster through raft",
            local_member_id=format_id(self.id),
            local_member_attributes={"name": attrs.name, "client-urls": list(attrs.client_urls)},
            cluster_id=format_id(self.cluster_id),
            publish_timeout=f"{self.request_timeout_s:g}s",
        )

    def _compaction_step(self) -> None:
        """One step of a compaction, if one is pending and the pause after the last step
        (``--experimental-compaction-sleep-interval``) is over (between apply rounds, on the
        Ready loop: the batch is committed by ``_maybe_commit_backend``, from a worker
        thread)."""
        if self.kv.compaction_pending:
            now = time.monotonic()
            if now < self._next_compaction_step:
                return
            # Half the pause: the idle timer that wakes this every pause must not miss its
            # turn by a scheduling jitter (that halved the pace).
            self._next_compaction_step = now + self._compaction_pause_s / 2
            limit = self.cfg.experimental_compaction_batch_limit or COMPACTION_BATCH_LIMIT_DEFAULT
            if not self.kv.compaction_step(limit, commit=False):
                log_finished_compactions(self.log, self.kv, self._backend)

    async def _after_apply(self) -> None:
        self._compaction_step()
        await self._maybe_commit_backend()
        if self._applied - self._snapshot_index > self.cfg.snapshot_count:
            await self._snapshot()

    async def _snapshot(self) -> None:
        index = self._applied
        term = self._storage.term(index)
        conf = self.node.status().conf_state
        started = time.monotonic()
        await self._in_thread(self._backend.commit)
        meta = SnapshotMetadata(index, term, conf)
        await self._in_thread(lambda: self._snapshotter.save_bytes(meta, b""))
        self._wal.save_snapshot(meta)
        await self._sync_wal()
        self._storage.create_snapshot(index, conf, b"")
        compact_to = index - self.cfg.experimental_snapshot_catchup_entries
        if compact_to > self._storage.first_index():
            self._storage.compact(Index(compact_to))
        await self._in_thread(lambda: self._wal.release_to(index))
        self._snapshot_index = index
        self.metrics.snapshot_save_seconds.observe(time.monotonic() - started)
        self.log.info(
            "saved snapshot", snapshot_index=index, snapshot_term=term, compacted_to=compact_to
        )

    def _resolve_reads(self) -> None:
        if not self._rounds:
            return
        done = [ctx for ctx, r in self._rounds.items() if 0 <= r.index <= self._applied]
        for ctx in done:
            for fut in self._rounds.pop(ctx).waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- requests -------------------------------------------------------------------------------

    def _term(self) -> Term:
        return self.node.raft.term

    def _header(self, revision: int, term: int | None = None) -> ResponseHeader:
        if term is None:
            term = self.node.raft.term
        # Reads at one revision share one header (headers are frozen).
        h = self._last_header
        if (
            h.revision == revision
            and h.raft_term == term
            and h.member_id == self.id
            and h.cluster_id == self.cluster_id
        ):
            return h
        h = self._last_header = ResponseHeader(self.cluster_id, self.id, revision, term)
        return h

    def _with_header(self, resp: Any, term: int) -> Any:
        h = resp.header
        if h is self._last_header and h.raft_term == term:
            return resp  # mvcc built it with _header just now (set_header_source)
        h = self._header(h.revision, term)
        # Direct constructors: dataclasses.replace costs several µs per response.
        if type(resp) is PutResponse:
            return PutResponse(h, resp.prev_kv)
        if type(resp) is TxnResponse:
            return TxnResponse(h, resp.succeeded, resp.responses)
        if type(resp) is DeleteRangeResponse:
            return DeleteRangeResponse(h, resp.deleted, resp.prev_kvs)
        return dataclasses.replace(resp, header=h)

    async def _propose(self, req: entry_codec.EntryRequest) -> Any:
        if self._stopping:
            raise StoppedError()
        if self._fatal is not None:
            raise StoppedError()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue_proposal(req, fut)
        return await fut

    def submit(self, req: PutRequest | DeleteRangeRequest | TxnRequest) -> Answer:
        """``put``/``delete_range``/``txn`` without a coroutine: validates ``req`` and queues
        it as ``_propose`` does (raising what they raise), and returns the future that the
        apply loop resolves with the response (or fails, e.g. after the request timeout): an
        ``Answer``, whose done callbacks run as it is resolved. Cancelling it abandons the
        request, as cancelling their caller does. Once a batch's answers are resolved (and
        durable), the answers listeners are told."""
        validate_request(req, self.cfg.max_txn_ops)
        if self._stopping or self._fatal is not None:
            raise StoppedError()
        # The Ready loop's task knows the loop: get_running_loop() costs a getpid() syscall.
        task = self._loop_task
        loop = asyncio.get_running_loop() if task is None else task.get_loop()
        fut = Answer(loop)
        self._queue_proposal(req, fut)
        return fut

    def _queue_proposal(self, req: entry_codec.EntryRequest, fut: _Waiter) -> None:
        # No timer per request: the ticker's sweep (_expire_proposals) fails the batches whose
        # deadline passed (asyncio.wait_for would cost a second future, a timer and two
        # callbacks per request).
        now = time.monotonic()
        proposals = self._proposals
        if proposals:
            self._concurrent_at = now
        else:
            self._proposals_since = now
            if self._waiters:
                self._concurrent_at = now
        proposals.append((req, fut))
        self._kick()

    def add_answers_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever the answers of an applied batch are all resolved and
        may go out (their entries are durable): the moment to send them together."""
        self._answers_listeners.append(listener)

    def _answers_out(self) -> None:
        if self._answered:
            self._answered = False
            for listener in self._answers_listeners:
                listener()

    def _lone_read_index(self) -> int | None:
        """The read index when this member is the only voter and leads: its commit index
        (what read_index would answer at once); None otherwise (a read index round)."""
        raft = self.node.raft
        if self._lead == self.id and raft.role is Role.LEADER and self._single_voter:
            return raft.raft_log.committed
        return None

    def _reads_now(self) -> bool:
        """Whether a linearizable read may go ahead at once: a lone voter that leads has
        applied its commit index (``_read_barrier`` then returns without waiting)."""
        if self._stopping or self._fatal is not None:
            return False
        index = self._lone_read_index()
        return index is not None and self._applied >= index

    async def _read_barrier(self) -> None:
        if self._stopping or self._fatal is not None:
            raise StoppedError()
        index = self._lone_read_index()
        if index is not None:
            # Read when applied has caught up with the read index.
            if self._applied >= index:
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._rounds[self._next_read_ctx()] = _ReadRound([fut], index)
        else:
            fut = asyncio.get_running_loop().create_future()
            self._reads.append(fut)
            self._kick()
        try:
            await asyncio.wait_for(fut, self.request_timeout_s)
        except TimeoutError:
            self.metrics.slow_read_indexes.inc()
            raise RequestTimeoutError() from None

    async def range(self, req: RangeRequest, creds: Credentials | None = None) -> RangeResponse:
        """A Range; with ``creds`` (auth was on when the call came), checked after the read
        index (as etcd's Range: linearizableReadNotify, then doSerialize), so that an auth
        change committed before the read is what the check sees."""
        validate_request(req, self.cfg.max_txn_ops)
        if not req.serializable:
            await self._read_barrier()
        if creds is not None:

            async def run() -> RangeResponse:
                return self._range_header(self.kv.range(req))

            return await self.gate.read(creds, req, run)
        return self._range_header(self.kv.range(req))

    async def range_one(
        self, key: bytes, serializable: bool
    ) -> tuple[ResponseHeader, bytes | None]:
        """A Range of the one non-empty ``key`` with no other option (but ``serializable``):
        the header and the key's stored record, None if it is not live (``KVStore.range_one``)."""
        if not serializable:
            await self._read_barrier()
        hdr, raw = self.kv.range_one(key)
        return self._header(hdr.revision), raw

    def range_one_now(
        self, key: bytes, serializable: bool
    ) -> tuple[ResponseHeader, bytes | None] | None:
        """``range_one`` when it needs no wait (serializable, or ``_reads_now``), without a
        coroutine; None when it would wait (then call ``range_one``)."""
        if not serializable and not self._reads_now():
            return None
        hdr, raw = self.kv.range_one(key)
        return self._header(hdr.revision), raw

    async def range_records(
        self, req: RangeRequest, creds: Credentials | None = None, *, pinned: bool = False
    ) -> _PinnedRange:
        """``range``, with a plain listing's KeyValues left as stored records
        (``KVStore.range_records``: the response has no kvs then, the native encoder or
        ``add_records`` reads them); with ``pinned``, large records are memoryviews under a
        lease (``KVStore.range_records_pinned``) that the caller releases once it has read
        them. The lease is None when there is none to release."""
        validate_request(req, self.cfg.max_txn_ops)
        if not req.serializable:  # before the auth check, as ``range``
            await self._read_barrier()
        if creds is None:
            return self._records_now(req, pinned)
        got: list[ReadLease | None] = [None]

        async def run() -> _PinnedRange:
            result = self._records_now(req, pinned)
            got[0] = result[2]
            return result

        try:
            return await self.gate.read(creds, req, run)
        except BaseException:
            if got[0] is not None:  # read, then refused (the auth revision moved)
                got[0].release()
            raise

    def _records_now(self, req: RangeRequest, pinned: bool) -> _PinnedRange:
        if pinned:
            resp, records, lease = self.kv.range_records_pinned(req)
        else:
            resp, copied = self.kv.range_records(req)
            records, lease = cast(list[bytes | memoryview] | None, copied), None
        return self._range_header(resp), records, lease

    def _range_header(self, resp: RangeResponse) -> RangeResponse:
        h = self._header(resp.header.revision)
        if resp.header is h:  # mvcc built it with _header already (set_header_source)
            return resp
        return RangeResponse(h, resp.kvs, resp.more, resp.count)

    async def _propose_checked(self, req: Any, creds: Credentials | None) -> Any:
        """Propose a client write; with ``creds``, checked and guarded (``petcd.server.authz``)."""
        if creds is not None:
            guard = await self.gate.guard(creds, req)
            if guard:
                return await self._propose(entry_codec.Guarded(guard, req))
        return await self._propose(req)

    async def put(self, req: PutRequest, creds: Credentials | None = None) -> PutResponse:
        validate_request(req, self.cfg.max_txn_ops)
        result: PutResponse = await self._propose_checked(req, creds)
        return result

    async def delete_range(
        self, req: DeleteRangeRequest, creds: Credentials | None = None
    ) -> DeleteRangeResponse:
        validate_request(req, self.cfg.max_txn_ops)
        result: DeleteRangeResponse = await self._propose_checked(req, creds)
        return result

    async def txn(self, req: TxnRequest, creds: Credentials | None = None) -> TxnResponse:
        validate_request(req, self.cfg.max_txn_ops)
        result: TxnResponse = await self._propose_checked(req, creds)
        return result

    async def compact(self, req: CompactionRequest) -> CompactionResponse:
        """etcd's Compact; with ``physical``, answered once this member's compaction has
        removed the compacted records (it goes on in steps between Ready rounds)."""
        result: CompactionResponse = await self._propose(req)
        while req.physical and self.kv.compaction_pending:
            if self._stopping or self._fatal is not None:
                raise StoppedError()
            await asyncio.sleep(min(self._compaction_pause_s, _COMPACTION_STEP_INTERVAL_S))
        return result

    def status(self) -> StatusInfo:
        st = self.node.status()
        return StatusInfo(
            header=self._header(self.kv.current_revision, st.term),
            version=ETCD_VERSION,
            db_size=self._backend.size_bytes(),
            leader=st.lead,
            raft_index=st.commit,
            raft_term=st.term,
            raft_applied_index=self._applied,
            # etcd lists "no leader" first, then the alarms (etcdctl's ERRORS column).
            errors=("etcdserver: no leader",) * (st.lead == 0)
            + tuple(f"memberID:{m} alarm:{_alarm_name(a)} " for m, a in sorted(self._alarms)),
            db_size_in_use=self._backend.size_in_use_bytes(),
            is_learner=self.is_learner,
        )

    def members(self) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]:
        """The cluster's members (Cluster.MemberList), by id."""
        members = tuple(self._members[k] for k in sorted(self._members))
        return self._header(0), members  # etcd's Cluster service sends no revision

    async def linearizable_read_notify(self) -> None:
        """Return once everything committed when called is applied here (a ReadIndex round)."""
        await self._read_barrier()

    async def members_linearizable(self) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]:
        """MemberList with ``linearizable``: a ReadIndex round first (as etcd)."""
        await self._read_barrier()
        return self.members()

    # -- membership changes (etcd's Cluster service) -------------------------------------------

    # etcd's maxLearners and the share of the leader's log a learner must have to be promoted.
    LEARNERS_MAX = 1
    PROMOTE_MATCH_RATIO = 0.9

    async def _propose_conf_change(
        self, cc_type: ConfChangeType, mid: MemberId, ctx: bytes
    ) -> None:
        if self._stopping or self._fatal is not None:
            raise StoppedError()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._conf_proposals.append((ConfChange(cc_type, mid, ctx, self._ids.next()), fut))
        self._kick()
        try:
            await asyncio.wait_for(fut, self.request_timeout_s)
        except TimeoutError:
            raise RequestTimeoutError() from None

    def _started(self, mid: MemberId) -> bool:
        """etcd: a member is started once it published its name through raft."""
        info = self._members.get(mid)
        return info is not None and bool(info.name)

    def _connected(self, mid: MemberId) -> bool:
        if mid == self.id:
            return True
        t = self._transport
        return t is not None and mid in t.peer_ids() and t.is_connected(mid)

    def _voters(self) -> list[MemberInfo]:
        return [m for m in self._members.values() if not m.is_learner]

    def _check_peer_urls_free(self, urls: tuple[str, ...], except_id: MemberId | None) -> None:
        for m in self._members.values():
            if m.id != except_id and set(m.peer_urls) & set(urls):
                raise PeerURLExistError()

    def _new_member_id(self, urls: tuple[str, ...]) -> MemberId:
        # etcd's MemberAdd: computeMemberId(peer URLs, no cluster name, now in Unix seconds).
        # The new member learns it from the cluster (petcd.server.join), not from the token.
        # The same URLs removed and added again within a second would get the removed id,
        # which etcd refuses; petcd takes the id of a second later instead.
        now_s = int(self._clock())
        for t in range(now_s, now_s + 10):
            mid = member_id(urls, "", t)
            if mid not in self._removed_ids and mid not in self._members:
                return mid
        raise MemberExistError()

    async def member_add(
        self, peer_urls: tuple[str, ...], is_learner: bool
    ) -> tuple[ResponseHeader, MemberInfo, tuple[MemberInfo, ...]]:
        """Cluster.MemberAdd: the new member (name empty until it publishes) and all members."""
        await self._read_barrier()  # the configuration this member checks against is current
        self._check_peer_urls_free(peer_urls, None)
        if is_learner:
            if sum(m.is_learner for m in self._members.values()) >= self.LEARNERS_MAX:
                raise TooManyLearnersError()
        elif self.cfg.strict_reconfig_check:
            voters = self._voters()
            started = sum(self._started(m.id) for m in voters)
            n = len(voters) + 1
            if not (started == 1 and n == 2) and started < n // 2 + 1:
                raise NotEnoughStartedMembersError()
            # etcd's isConnectedToQuorumSince over the current voters.
            if sum(self._connected(m.id) for m in voters) < len(voters) // 2 + 1:
                raise UnhealthyClusterError()
        mid = self._new_member_id(peer_urls)
        info = MemberInfo(mid, "", peer_urls, is_learner=is_learner)
        cc_type = ConfChangeType.ADD_LEARNER_NODE if is_learner else ConfChangeType.ADD_NODE
        await self._propose_conf_change(cc_type, mid, info.encode())
        header, members = self.members()
        return header, self._members.get(mid, info), members

    async def member_remove(self, target: int) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]:
        """Cluster.MemberRemove; the removed member stops when it learns it."""
        await self._read_barrier()
        mid = MemberId(target)
        info = self._members.get(mid)
        if info is None:
            raise MemberNotFoundError()
        if self.cfg.strict_reconfig_check and not info.is_learner:
            voters = [m for m in self._voters() if m.id != mid]
            # etcd's IsReadyToRemoveVotingMember: the remaining voters must be a started quorum
            # of the configuration without the member.
            if sum(self._started(m.id) for m in voters) < len(voters) // 2 + 1:
                raise NotEnoughStartedMembersError()
            active = sum(self._connected(m.id) for m in voters)
            if voters and active < len(voters) // 2 + 1:
                raise UnhealthyClusterError()
        await self._propose_conf_change(ConfChangeType.REMOVE_NODE, mid, b"")
        return self.members()

    async def member_update(
        self, target: int, peer_urls: tuple[str, ...]
    ) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]:
        """Cluster.MemberUpdate: new peer URLs (the transport redials them)."""
        await self._read_barrier()
        mid = MemberId(target)
        info = self._members.get(mid)
        if info is None:
            raise MemberNotFoundError()
        self._check_peer_urls_free(peer_urls, mid)
        new = MemberInfo(mid, info.name, peer_urls)
        await self._propose_conf_change(ConfChangeType.UPDATE_NODE, mid, new.encode())
        return self.members()

    async def member_promote(self, target: int) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]:
        """Cluster.MemberPromote: learner -> voter once its log is within 90% of the leader's."""
        await self._read_barrier()
        mid = MemberId(target)
        info = self._members.get(mid)
        if info is None:
            raise MemberNotFoundError()
        if not info.is_learner:
            raise MemberNotLearnerError()
        if self._lead != self.id:
            # etcd forwards the promotion to the leader over its peer HTTP API; petcd's peers
            # have none, so only the leader, which knows the learner's progress, promotes.
            raise NotLeaderError()
        st = self.node.status()
        leader_match = st.progress[self.id].match if self.id in st.progress else st.commit
        pr = st.progress.get(mid)
        if pr is None or pr.match < leader_match * self.PROMOTE_MATCH_RATIO:
            raise LearnerNotReadyError()
        if self.cfg.strict_reconfig_check:
            voters = self._voters()
            n = len(voters) + 1  # etcd's IsReadyToPromoteMember counts the learner as started
            if 1 + sum(self._started(m.id) for m in voters) < n // 2 + 1:
                raise NotEnoughStartedMembersError()
        await self._propose_conf_change(ConfChangeType.ADD_NODE, mid, info.encode())
        return self.members()

    def alarms(self) -> tuple[ResponseHeader, tuple[tuple[int, int], ...]]:
        """Active alarms as (member id, alarm type), sorted."""
        return self._header(self.kv.current_revision), tuple(sorted(self._alarms))

    async def hash_kv(self, revision: int) -> tuple[ResponseHeader, HashKVResult]:
        """etcd's HashKV at ``revision`` (0: current), over the applied state.

        The key bucket is walked in a worker thread over a snapshot taken now
        (``KVStore.start_hash_kv``): on a large store the walk takes seconds, during which the
        loop keeps serving, ticking and heartbeating. A caller that goes away does not stop the
        walk; the member waits for walks before it closes or swaps the backend.
        """
        return await self._hash_walk(lambda: self.kv.start_hash_kv(revision))

    async def hash(self) -> tuple[ResponseHeader, int]:
        """etcd's Maintenance.Hash: a hash of the whole backend (``KVStore.start_hash``),
        walked in a worker thread as ``hash_kv``'s walk is. For tests, as in etcd: members that
        applied the same entries answer the same hash."""
        return await self._hash_walk(self.kv.start_hash)

    async def _hash_walk(self, start: Callable[[], Callable[[], _T]]) -> tuple[ResponseHeader, _T]:
        """Take the snapshot (``start``) and the header now, walk it in a worker thread."""
        if self._stopping:
            raise StoppedError()
        walk = start()
        header = self._header(self.kv.current_revision)
        fut = asyncio.get_running_loop().run_in_executor(None, walk)
        self._hash_walks.add(fut)
        fut.add_done_callback(self._hash_walk_done)
        return header, await asyncio.shield(fut)

    def _hash_walk_done(self, fut: asyncio.Future[Any]) -> None:
        self._hash_walks.discard(fut)
        if not fut.cancelled():
            fut.exception()  # retrieved: the caller may have gone away (it got it if not)

    async def _hash_walks_done(self) -> None:
        while self._hash_walks:
            await asyncio.wait(list(self._hash_walks))

    # -- leases --------------------------------------------------------------------------------

    async def lease_grant(
        self, lease_id: int, ttl_seconds: int
    ) -> tuple[ResponseHeader, LeaseInfo]:
        if lease_id == 0:
            lease_id = self.lessor.pick_lease_id(self._rand)
        info: LeaseInfo = await self._propose(entry_codec.LeaseGrant(lease_id, ttl_seconds))
        return self._header(self.kv.current_revision), info

    async def lease_revoke(self, lease_id: int, creds: Credentials | None = None) -> ResponseHeader:
        req: entry_codec.EntryRequest = entry_codec.LeaseRevoke(lease_id)
        guard = await self.gate.lease_revoke(creds, lease_id)
        if guard:
            req = entry_codec.Guarded(guard, req)
        header: ResponseHeader = await self._propose(req)
        return header

    async def lease_keep_alive(self, lease_id: int) -> tuple[ResponseHeader, int]:
        """Renew on the leader: the TTL, or 0 for a lease that does not exist (etcd)."""
        try:
            ttl = self.lessor.renew(LeaseId(lease_id))
        except NotPrimaryError:
            raise (
                NotLeaderError() if self._lead not in (NONE_ID, self.id) else NoLeaderError()
            ) from None
        except LeaseNotFoundError:
            ttl = 0
        if self.lessor.has_pending_checkpoints():
            self._propose_checkpoints()
        return self._header(self.kv.current_revision), ttl

    async def lease_time_to_live(
        self, lease_id: int, with_keys: bool, creds: Credentials | None = None
    ) -> tuple[ResponseHeader, TimeToLive | None]:
        """None for a lease that does not exist (the gRPC layer answers TTL -1, as etcd)."""
        if with_keys and creds is not None:
            revision = await self.gate.lease_keys(creds, lease_id)
            found = await self.lease_time_to_live(lease_id, with_keys)
            self.gate.still(revision)
            return found
        await self._read_barrier()
        try:
            ttl = self.lessor.time_to_live(LeaseId(lease_id), with_keys=with_keys)
        except NotPrimaryError:
            raise (
                NotLeaderError() if self._lead not in (NONE_ID, self.id) else NoLeaderError()
            ) from None
        except LeaseNotFoundError:
            return self._header(self.kv.current_revision), None
        return self._header(self.kv.current_revision), ttl

    def leader_client_endpoint(self) -> str | None:
        """The gRPC target of the leader's first client URL (``host:port``, ``unix:PATH``),
        if another member leads."""
        if self._lead in (NONE_ID, self.id):
            return None
        info = self._members.get(self._lead)
        if info is None or not info.client_urls:
            return None
        scheme, _, rest = info.client_urls[0].rpartition("://")
        return f"unix:{rest}" if scheme in ("unix", "unixs") else rest

    async def lease_leases(self) -> tuple[ResponseHeader, list[LeaseInfo]]:
        await self._read_barrier()
        return self._header(self.kv.current_revision), self.lessor.leases()

    def _propose_checkpoints(self) -> None:
        while True:
            cps = self.lessor.due_checkpoints(CHECKPOINT_BATCH_MAX)
            if not cps:
                return
            req = entry_codec.LeaseCheckpoints(tuple((c.id, c.remaining_ttl_seconds) for c in cps))
            self._spawn(self._propose(req), "lease checkpoint")
            if len(cps) < CHECKPOINT_BATCH_MAX:
                return

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None and not self._stopping:
                self.log.warn(f"failed to propose {what}", error=str(t.exception()))

        task.add_done_callback(done)

    async def _lessor_ticker(self) -> None:
        # etcd's revokeExpiredLeases / checkpointScheduledLeases loops, on the leader only.
        while True:
            await asyncio.sleep(LESSOR_TICK_SECONDS)
            if not self.lessor.is_primary:
                continue
            for lease_id in self.lessor.expired_leases(REVOKE_LIMIT_PER_TICK):
                self.log.info("revoking expired lease", lease_id=f"{lease_id:x}")
                self._spawn(self._propose(entry_codec.LeaseRevoke(lease_id)), "lease revoke")
            self._propose_checkpoints()

    # -- maintenance ---------------------------------------------------------------------------

    async def _loop_job(self, fn: Callable[[], _T]) -> _T:
        if self._stopping or self._fatal is not None:
            raise StoppedError()
        fut: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._jobs.append((fn, fut))
        self._kick()
        return await fut

    async def defragment(self) -> ResponseHeader:
        """etcd's Defragment: rewrite the backend file compactly."""
        started = time.monotonic()
        self.log.info("starting defragment", path=self.cfg.backend_path)
        await self._loop_job(self._backend.defrag)
        self._db_size_bytes = self._backend.size_bytes()
        self.log.info(
            "finished defragment", path=self.cfg.backend_path, took=time.monotonic() - started
        )
        return self._header(self.kv.current_revision)

    async def transfer_leadership(self) -> None:
        """etcd's TransferLeadership, run when a member stops gracefully: a leader among
        several voters hands leadership to the voter it has been connected to longest, so
        that the others need not wait out an election timeout. Raises (the caller logs and
        stops anyway) when no voter is connected or the transfer times out."""
        local, lead = format_id(self.id), format_id(self._lead)
        if self._lead != self.id:
            self.log.info(
                "skipped leadership transfer; local server is not leader",
                local_member_id=local,
                current_leader_member_id=lead,
            )
            return
        if len(self._conf_voters) < 2:
            self.log.info(
                "skipped leadership transfer for single voting member cluster",
                local_member_id=local,
                current_leader_member_id=lead,
            )
            return
        transport = self._transport
        since = {
            m: transport.active_since(m) if transport is not None else 0.0
            for m in self._conf_voters
            if m != self.id
        }
        connected = [m for m in sorted(since) if since[m] > 0]
        if not connected:
            raise UnhealthyClusterError()
        await self.move_leader(min(connected, key=lambda m: since[m]))

    async def move_leader(self, target: int) -> None:
        """etcd's MoveLeader: only the leader may hand leadership to another voter."""
        if self._lead != self.id:
            raise NotLeaderError()
        transferee = MemberId(target)
        if transferee not in self._members or transferee not in self._conf_voters:
            raise BadLeaderTransfereeError()
        if transferee == self.id:
            return
        self.log.info(
            "leadership transfer starting",
            local_member_id=format_id(self.id),
            current_leader_member_id=format_id(self.id),
            transferee_member_id=format_id(transferee),
        )
        self.node.transfer_leader(transferee)
        self._kick()
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s
        interval = self.cfg.heartbeat_interval_ms / 1000.0
        while self._lead != transferee:
            if asyncio.get_running_loop().time() >= deadline:
                raise LeaderTransferTimeoutError()
            await asyncio.sleep(interval)
        self.log.info("leadership transfer finished", transferee_member_id=format_id(transferee))

    async def snapshot_file(self) -> str:
        """etcd's snapshot of the backend (a bbolt file, no trailer) in a temporary file of the
        member dir; the caller deletes it. A consistent copy of the LMDB backend is taken
        between apply rounds, then converted by a child process (``SNAPSHOT_CONVERTER``) that
        does not hold this process's GIL, or by a worker thread when it is small; the copy is
        removed in every case, the output too unless it is returned (a failure, the caller
        gone)."""
        copy_path = self._member_temp_file("snapshot-", ".lmdb.tmp")
        try:

            def copy() -> None:
                with open(copy_path, "wb") as f:
                    self._backend.copy_to(f)

            await self._loop_job(copy)
            out_path = self._member_temp_file("snapshot-", ".bolt.tmp")
            try:
                await self._convert_snapshot(copy_path, out_path)
            except BaseException:
                os.remove(out_path)
                raise
        finally:
            os.remove(copy_path)
        return out_path

    def _member_temp_file(self, prefix: str, suffix: str) -> str:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=self.cfg.member_dir)
        os.close(fd)
        return path

    async def _convert_snapshot(self, src: str, dst: str) -> None:
        started = time.monotonic()
        size = os.path.getsize(src)
        in_thread = size <= self._snapshot_thread_bytes_max
        self.log.info(
            "converting database snapshot to etcd's format",
            size_bytes=size,
            converter="thread" if in_thread else "process",
        )
        if in_thread:
            await self._convert_snapshot_in_thread(src, dst)
        else:
            await self._convert_snapshot_in_child(src, dst)
        self.log.info(
            "converted database snapshot to etcd's format",
            size_bytes=os.path.getsize(dst),
            took=go_duration(time.monotonic() - started),
        )

    async def _convert_snapshot_in_thread(self, src: str, dst: str) -> None:
        from petcd.utl import rpc_snapshot  # the offline tool's converter (it imports this module)

        try:
            await asyncio.to_thread(rpc_snapshot.convert, src, dst)
        except rpc_snapshot.CONVERSION_ERRORS as e:
            self.log.warn("failed to convert database snapshot", error=str(e))
            raise SnapshotConvertError(str(e)) from None

    async def _convert_snapshot_in_child(self, src: str, dst: str) -> None:
        # The child imports petcd from where this process did (a path added at run time too).
        path = os.pathsep.join(p for p in sys.path if p)
        proc = await asyncio.create_subprocess_exec(
            *self._snapshot_converter,
            src,
            dst,
            env={**os.environ, "PYTHONPATH": path},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await proc.communicate()
        except BaseException:  # the caller is gone (cancelled) or the member stops
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # this child only, by its pid
                    await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else f"converter exited with status {proc.returncode}"
            self.log.warn("failed to convert database snapshot", error=reason)
            raise SnapshotConvertError(reason)

    # -- watch ---------------------------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        sink: WatchSink,
        prev_kv: bool,
        filters: tuple[int, ...],
        watch_id: int,
    ) -> Watcher:
        """Register a watcher (etcd semantics; see ``petcd.mvcc.watchable_store``).

        Events go to ``sink`` from the event loop: live ones as entries are applied, history
        (``start_revision`` <= current) from the watch sync task, soon after this call.
        """
        if self._stopping or self._fatal is not None:
            raise StoppedError()
        w = self.kv.watch(
            key,
            range_end,
            start_revision,
            sink=sink,
            prev_kv=prev_kv,
            filters=filters,
            watch_id=watch_id,
        )
        if w.state is not WatcherState.SYNCED:
            self._watch_wake.set()
        return w

    @property
    def watch_progress_interval_s(self) -> float:
        return self.cfg.experimental_watch_progress_notify_interval_s

    def cancel_watch(self, w: Watcher) -> bool:
        return self.kv.cancel(w)

    def watch_header(self, revision: int = 0) -> ResponseHeader:
        """A response header for a watch response at ``revision`` (0: the current one)."""
        return self._header(revision if revision > 0 else self.kv.current_revision)

    def watchers_synced(self, watchers: list[Watcher]) -> bool:
        return all(w.state is WatcherState.SYNCED for w in watchers)

    def wake_watch_sync(self) -> None:
        """A watch sink has room again: retry slow watchers soon."""
        self._watch_wake.set()

    async def _watch_syncer(self) -> None:
        # etcd runs syncWatchersLoop/syncVictimsLoop every 100 ms; petcd also runs at once
        # when a watcher with history is created or a slow stream drained its buffer.
        kv = self.kv
        while True:
            if kv.watcher_counts()[1] == 0:  # no unsynced watcher: wait for a reason to run
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._watch_wake.wait(), 0.1)
            else:
                await asyncio.sleep(0)  # catching up in batches; let the rest run between
            self._watch_wake.clear()
            if kv.has_pending_sync:
                kv.sync()
            for cb in list(self._after_watch_sync):
                cb()

    def add_watch_sync_listener(self, cb: Callable[[], None]) -> None:
        """``cb()`` runs after each watch sync pass (progress requests wait for synced)."""
        self._after_watch_sync.add(cb)

    def remove_watch_sync_listener(self, cb: Callable[[], None]) -> None:
        self._after_watch_sync.discard(cb)

    # -- health and metrics (petcd.http) ------------------------------------------------------

    async def check_health(self, serializable: bool, exclude: frozenset[str] = frozenset()) -> str:
        """etcd's /health: "" when healthy, else the reason. Alarms named in ``exclude``
        (``NOSPACE``, ``CORRUPT``) are ignored; a serializable check needs no leader."""
        if self._fatal is not None or self._stopping:
            return "SERVER STOPPED"
        alarms = {_alarm_name(a) for _, a in self._alarms} - exclude
        if alarms:
            return "ALARM " + ",".join(sorted(alarms))
        if self._lead == NONE_ID and not serializable:
            return "RAFT NO LEADER"
        try:
            await self.range(RangeRequest(key=b"health", serializable=serializable))
        except Exception:
            return "QGET ERROR" if not serializable else "RANGE ERROR"
        return ""

    async def check_read(self, serializable: bool) -> None:
        """etcd's read check of /livez and /readyz: a one-key, keys-only read (raises what
        the read raised)."""
        await self.range(
            RangeRequest(key=b"health", keys_only=True, limit=1, serializable=serializable)
        )

    def active_alarms(self) -> frozenset[str]:
        return frozenset(_alarm_name(a) for _, a in self._alarms)

    def debug_vars(self) -> str:
        """etcd's ``/debug/vars`` (Go's expvar page): the variables in name order, as etcd
        writes them. ``cmdline`` (the process's arguments), ``file_descriptor_limit`` (the soft
        limit on open files) and ``raft.status`` (etcd raft's ``Status`` in its JSON form:
        ids in hex, the role as ``StateLeader`` ..., the followers' progress on a leader).
        Go's ``memstats`` (the Go runtime's allocator) has no counterpart in petcd and is left
        out."""
        import resource

        st = self.node.status()
        progress = ",".join(
            f'"{format_id(id_)}":{{"match":{pr.match},"next":{pr.next},"state":"{pr.state.value}"}}'
            for id_, pr in st.progress.items()
        )
        raft = (
            f'{{"id":"{format_id(st.id)}","term":{st.term},"vote":"{format_id(st.vote)}",'
            f'"commit":{st.commit},"lead":"{format_id(st.lead)}","raftState":"{st.role.value}",'
            f'"applied":{st.applied},"progress":{{{progress}}},'
            f'"leadtransferee":"{format_id(st.lead_transferee)}"}}'
        )
        variables = {
            "cmdline": json.dumps(sys.argv, separators=(",", ":")),
            "file_descriptor_limit": str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
            "raft.status": raft,
        }
        return "{\n" + ",\n".join(f'"{k}": {v}' for k, v in variables.items()) + "\n}\n"

    def render_metrics(self) -> bytes:
        self.metrics.db_total_size_bytes.set(self._backend.size_bytes())
        self.metrics.db_in_use_bytes.set(self._backend.size_in_use_bytes())
        return self.metrics.render()

    # -- auto compaction --------------------------------------------------------------------------

    async def _auto_compact(self) -> None:
        loop = asyncio.get_running_loop()
        c = self._compactor
        self.log.info(
            "starting auto compaction",
            mode=c.mode.value,
            retention=self.cfg.auto_compaction_retention,
        )
        while True:
            await asyncio.sleep(c.interval_s)
            if self.node.status().role is not Role.LEADER:
                c.reset()
                continue
            rev = c.observe(loop.time(), self.kv.current_revision)
            if rev is None or rev <= self.kv.compact_revision:
                continue
            self.log.info(f"starting auto {c.mode.value} compaction", revision=rev)
            try:
                await self._propose(CompactionRequest(rev))
                self.log.info(f"completed auto {c.mode.value} compaction", revision=rev)
            except Exception as e:
                self.log.warn(f"failed auto {c.mode.value} compaction", revision=rev, error=str(e))

    # -- test helpers ------------------------------------------------------------------------

    @property
    def applied_index(self) -> Index:
        return self._applied

    @property
    def hard_state(self) -> HardState:
        return self.node.status().hard_state

    @property
    def leader(self) -> MemberId:
        return self._lead

    @property
    def auth_enabled(self) -> bool:
        """Whether auth is on (calls then carry credentials); read on every RPC."""
        return self.auth.enabled

    @property
    def is_learner(self) -> bool:
        """A learner of the cluster (etcd: IsMemberExist(ID) && IsLearner); read on every RPC."""
        info = self._members.get(self.id)
        return info is not None and info.is_learner

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def term(self) -> Term:
        return self.node.status().term
