"""PeerTransport: Raft messages and snapshots between members, over asyncio TCP (or TLS).

A ``unix://`` (``unixs://``: with TLS) peer URL is a Unix socket file instead of a TCP port, as
in etcd: ``unix://etcd.unix:1`` is the file ``etcd.unix:1`` in the working directory. A listener
removes an existing file of that name before it listens, and its socket file when it stops; a
dialer connects to the file and, over TLS, verifies the URL's host name (``localhost`` for
``unixs://localhost:2380``).

Theory of operation
-------------------
The wire format is specified in docs/enhancements/0005-peer-transport.md (the codec lives in
``petcd.peer.codec``). One ``PeerTransport`` per member runs on the member's event loop:

- it listens on the member's peer URLs (``start``); every accepted connection first gets a
  handshake check (cluster id, sender not removed and known, receiver id ours). A **stream**
  connection then carries frames: its transport is handed to a ``_StreamReceiver`` protocol,
  and every chunk the event loop reads is decoded and all whole messages in it go to
  ``on_messages(list)`` in one call, inside the loop's read callback (no ``StreamReader``
  buffer and no task between the socket and raft: on a replicated write every hop - MsgProp,
  MsgApp, MsgAppResp, the commit - is one received chunk, and the task hop cost one more
  event loop iteration each). A **snapshot** connection carries one
  MsgSnap and the state machine file, written to a temporary file in ``snapshot_dir``,
  fsynced, checked (size, CRC-32) and handed to ``on_snapshot(message, path)``. A **members**
  connection (a joining member; only when ``members_source`` is given) gets the cluster's
  members and their peer URLs as the handshake reply (``encode_member_listing``), then closes.
- for each peer (``add_peer``) one task dials a long-lived stream connection (cycling through
  the peer's URLs, with capped exponential backoff between failures) and runs the write loop:
  it waits for the queue to be non-empty, takes everything queued, encodes it as one buffer,
  writes it and, past the transport's high-water mark, awaits ``drain`` (with the write
  timeout). A watcher task reads the connection only to notice EOF (the listener never
  writes after the handshake).
- ``send(messages)`` never awaits: per message, it appends to the target peer's bounded
  queue; then, for a peer whose connection is idle (connected, not draining, its buffer below
  the high-water mark), it writes the queue at once, as one buffer per peer, instead of waking
  the write loop (which would run only after everything else queued on the event loop: a
  hop per message on every replicated write). A peer whose queue is full, or that is not
  connected (except during the first dial attempt after a start or a lost connection, when
  messages wait for it), gets the message dropped and is reported through
  ``report_unreachable`` (once per peer per ``send``; queued messages dropped when a dial
  fails or a connection is lost are reported too); a MsgSnap starts a snapshot task on its
  own connection, which ends with ``report_snapshot(peer, failed)``. The
  task gets the file from ``snapshot_source`` (a ``SnapshotFile``: the sender's state machine
  and the metadata that file really holds, which replaces the message's).

A peer's dial loop must outlive every failure while its peer is a member: the peer may reset a
connection at any point (while we connect, handshake, write, or back off), and any write may
find the connection already gone (``_write`` turns that into ``ConnectionResetError`` on every
event loop: uvloop raises ``RuntimeError`` there, which once ended the loop for good, issue 6).
An unexpected exception is logged at error and the peer redialled; a transport task that still
dies on one is logged at error by ``_task_done``; every state change of a peer's stream
(dialing, dial failed, connected, disconnected, backoff, stale) is logged at debug.

Callbacks never run re-entrantly inside ``send``: reports raised by ``send`` are scheduled
with ``loop.call_soon``. They all run on the event loop thread.

Must never: block the event loop on the network or the disk (file reads/writes and fsync go to
worker threads), hold more than ``queue_messages_max`` messages per peer, or let one peer's
failure delay another peer or the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import ssl
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from petcd.peer import codec
from petcd.peer.codec import HandshakeStatus
from petcd.peer.errors import CodecError, HandshakeRejectedError, PeerUrlError
from petcd.peer.queue import Backoff, PeerQueue
from petcd.raft.types import MemberId, Message, MessageType, SnapshotMetadata

# What a peer may send on a stream connection: Raft's network messages except MsgSnap (which
# comes with its file on a snapshot connection). Local types (MsgHup, MsgBeat, MsgUnreachable,
# MsgSnapStatus, MsgCheckQuorum) never travel between members.
STREAM_MESSAGE_TYPES = frozenset(
    {
        MessageType.PROP,
        MessageType.APP,
        MessageType.APP_RESP,
        MessageType.VOTE,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT,
        MessageType.HEARTBEAT_RESP,
        MessageType.TRANSFER_LEADER,
        MessageType.TIMEOUT_NOW,
        MessageType.READ_INDEX,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE,
        MessageType.PRE_VOTE_RESP,
    }
)

_SNAP_OK = b"\x00"
_SNAP_FAILED = b"\x01"


class PeerLogger(Protocol):
    """The structured logger the transport writes to (``petcd.server.log.Logger`` fits)."""

    def debug(self, msg: str, **fields: Any) -> None: ...
    def info(self, msg: str, **fields: Any) -> None: ...
    def warn(self, msg: str, **fields: Any) -> None: ...
    def error(self, msg: str, **fields: Any) -> None: ...


class _StdLogger:
    """Fallback: the standard ``logging`` module, fields appended to the message."""

    def __init__(self) -> None:
        self._log = logging.getLogger("petcd.peer")

    def _fmt(self, msg: str, fields: dict[str, Any]) -> str:
        return msg + "".join(f" {k}={v!r}" for k, v in fields.items())

    def debug(self, msg: str, **fields: Any) -> None:
        self._log.debug(self._fmt(msg, fields))

    def info(self, msg: str, **fields: Any) -> None:
        self._log.info(self._fmt(msg, fields))

    def warn(self, msg: str, **fields: Any) -> None:
        self._log.warning(self._fmt(msg, fields))

    def error(self, msg: str, **fields: Any) -> None:
        self._log.error(self._fmt(msg, fields))


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """What a snapshot source hands back: the state machine file and the metadata it holds.

    The sender replaces the MsgSnap's metadata with ``metadata`` before streaming: the file is
    the sender's live state machine, which may have applied past the snapshot raft chose, and a
    receiver must record the index, term and configuration its new state machine really has
    (etcd's createMergedSnapshotMessage does the same). A source may also return a bare path:
    then the message goes as raft made it.
    """

    path: str | os.PathLike[str]
    metadata: SnapshotMetadata


@dataclass(frozen=True, slots=True)
class TransportConfig:
    cluster_id: int
    member_id: MemberId
    snapshot_dir: Path
    queue_messages_max: int = 4096
    backoff_initial_seconds: float = 0.05
    backoff_max_seconds: float = 1.0
    dial_timeout_seconds: float = 1.0
    write_timeout_seconds: float = 5.0
    snapshot_chunk_bytes: int = 1024 * 1024
    snapshot_idle_timeout_seconds: float = 30.0
    frame_bytes_max: int = codec.FRAME_BYTES_MAX

    def __post_init__(self) -> None:
        if not 0 <= self.cluster_id < 1 << 64:
            raise ValueError(f"cluster_id out of range: {self.cluster_id}")
        if not 0 < self.member_id < 1 << 64:
            raise ValueError(f"member_id must be a non-zero u64: {self.member_id}")
        if self.queue_messages_max < 1:
            raise ValueError("queue_messages_max must be >= 1")
        if not 0 < self.backoff_initial_seconds <= self.backoff_max_seconds:
            raise ValueError("need 0 < backoff_initial_seconds <= backoff_max_seconds")
        if (
            self.dial_timeout_seconds <= 0
            or self.write_timeout_seconds <= 0
            or self.snapshot_idle_timeout_seconds <= 0
        ):
            raise ValueError("timeouts must be positive")
        if self.snapshot_chunk_bytes < 1 or self.frame_bytes_max < 1:
            raise ValueError("sizes must be positive")


@dataclass(frozen=True, slots=True)
class PeerUrl:
    host: str
    port: int
    tls: bool
    socket: str = ""  # unix and unixs: the socket file's path

    @property
    def address(self) -> str:
        """What is dialled, for logs: ``host:port`` or the socket's path."""
        return self.socket or f"{self.host}:{self.port}"

    @property
    def server_name(self) -> str:
        """The name a TLS peer's certificate must be valid for: the URL's host, or (a
        ``unixs:///path`` URL has none) the socket file's name."""
        return self.host or os.path.basename(self.socket)


def parse_peer_url(url: str) -> PeerUrl:
    """``http://host:port`` or ``https://host:port`` (IPv6 hosts in brackets), or
    ``unix://path`` or ``unixs://path`` (the path as etcd takes it: ``unix://etcd.unix:1`` is
    the file ``etcd.unix:1`` in the working directory)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        if url.startswith(("unix://", "unixs://")):
            parts, port = urlsplit(url), None
        else:
            raise PeerUrlError(url, str(e)) from None
    if parts.scheme in ("unix", "unixs"):
        path = parts.netloc + parts.path
        if not path or not url.startswith(f"{parts.scheme}://"):
            raise PeerUrlError(url, "a unix URL names a socket file")
        return PeerUrl(parts.hostname or "", port or 0, parts.scheme == "unixs", path)
    if parts.scheme not in ("http", "https"):
        raise PeerUrlError(url, "scheme must be http, https, unix or unixs")
    if not parts.hostname or port is None:
        raise PeerUrlError(url, "host and port are required")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PeerUrlError(url, "a peer URL has no path, query or fragment")
    return PeerUrl(parts.hostname, port, parts.scheme == "https")


@dataclass(slots=True)
class PeerStats:
    """Counters of one peer, for tests, metrics and ``petcdctl endpoint status``-like views."""

    connected: bool = False
    # time.monotonic() of the current connection's start (0 while not connected): etcd's
    # ActiveSince, which picks the transferee of a leader that stops.
    active_since: float = 0.0
    connects: int = 0
    sent_messages: int = 0
    sent_batches: int = 0
    sent_bytes: int = 0
    dropped_messages: int = 0
    queued_messages: int = 0
    queued_messages_peak: int = 0
    snapshots_sent: int = 0
    snapshots_failed: int = 0


@dataclass(slots=True)
class InboundStats:
    """What arrived from one sender (etcd's ``peer_received_bytes_total`` and friends)."""

    received_messages: int = 0
    received_bytes: int = 0
    snapshots_received: int = 0


@dataclass(slots=True, eq=False)
class _Peer:
    id: MemberId
    urls: list[PeerUrl]
    queue: PeerQueue
    backoff: Backoff
    wake: asyncio.Event
    stats: PeerStats = field(default_factory=PeerStats)
    url_index: int = 0
    writer: asyncio.StreamWriter | None = None
    # The connected writer's high-water mark: above it, messages wait in the queue for the
    # write loop, which drains (with the write timeout) before writing more.
    high_water_bytes: int = 0
    # True while the write loop awaits drain: send() must queue, not write.
    draining: bool = False
    broken: bool = False
    accepting: bool = False
    task: asyncio.Task[None] | None = None
    # Bumped by _close_peer: a connection task serves one generation and never touches the
    # peer's shared state once it is stale (even if its cancellation were lost).
    generation: int = 0
    # Set when the peer dialled us: it is up (again), so a backoff towards it ends at once.
    # A restarted member dials every peer on start; without this, a peer could keep waiting
    # out its backoff (up to backoff_max_seconds) and drop what raft sends meanwhile - a
    # proposal forwarded to a new leader in that window was lost for good.
    peer_is_up: asyncio.Event = field(default_factory=asyncio.Event)


class PeerTransport:
    """The member's peer transport. Create, ``await start(urls)``, ``add_peer``, ``send``."""

    def __init__(
        self,
        cfg: TransportConfig,
        *,
        on_messages: Callable[[list[Message]], None],
        report_unreachable: Callable[[MemberId], None],
        report_snapshot: Callable[[MemberId, bool], None],
        snapshot_source: Callable[[SnapshotMetadata], str | os.PathLike[str] | SnapshotFile]
        | None = None,
        on_snapshot: Callable[[Message, Path], None] | None = None,
        on_rejected: Callable[[MemberId, int], None] | None = None,
        members_source: Callable[[], Mapping[MemberId, Sequence[str]]] | None = None,
        logger: PeerLogger | None = None,
        rand: random.Random | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        cert_check: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_messages = on_messages
        self._report_unreachable = report_unreachable
        self._report_snapshot = report_snapshot
        self._snapshot_source = snapshot_source
        self._on_snapshot = on_snapshot
        self._on_rejected = on_rejected
        self._members_source = members_source
        self.log: PeerLogger = logger if logger is not None else _StdLogger()
        self._rand = rand if rand is not None else random.Random()
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        # What a peer's verified certificate must pass, both ways (--peer-cert-allowed-*).
        self._cert_check = cert_check
        self._peers: dict[MemberId, _Peer] = {}
        self._removed: set[MemberId] = set()
        self._servers: list[asyncio.Server] = []
        self._socket_files: list[str] = []  # of the Unix socket listeners, removed by stop()
        self._inbound: dict[MemberId, set[asyncio.StreamWriter]] = {}
        self._accepted: set[asyncio.StreamWriter] = set()
        self._inbound_stats: dict[MemberId, InboundStats] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.listen_addresses: list[tuple[str, int]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, listen_urls: Sequence[str]) -> None:
        """Listen on every URL (port 0 picks a free port: see ``listen_addresses``)."""
        assert self._loop is None, "start() called twice"
        self._loop = asyncio.get_running_loop()
        for raw in listen_urls:
            url = parse_peer_url(raw)
            if url.tls and self._server_ssl is None:
                raise PeerUrlError(raw, "https listener needs a server SSL context")
            if url.socket:
                # etcd's unix listener: whatever has the socket's name goes first.
                with contextlib.suppress(FileNotFoundError):
                    os.remove(url.socket)
                server = await asyncio.start_unix_server(
                    self._handle_conn, url.socket, ssl=self._server_ssl if url.tls else None
                )
                self._socket_files.append(url.socket)
                self._servers.append(server)
                self.listen_addresses.append((url.socket, 0))
                continue
            server = await asyncio.start_server(
                self._handle_conn,
                url.host,
                url.port,
                ssl=self._server_ssl if url.tls else None,
                reuse_address=True,
            )
            self._servers.append(server)
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.listen_addresses.append((host, port))
        for p in self._peers.values():
            self._start_peer(p)
        self.log.info(
            "started peer transport",
            local_member_id=f"{self.cfg.member_id:x}",
            listen_peer_urls=list(listen_urls),
        )

    async def stop(self) -> None:
        """Close listeners and every connection; cancel all tasks. Queued messages are lost."""
        self._stopped = True
        for s in self._servers:
            s.close()
        for p in self._peers.values():
            self._close_peer(p)
        for w in self._accepted:
            w.close()
        # Cancellation is not the only exit: Python 3.11's wait_for can swallow a cancel that
        # races with its inner future completing, so every loop also checks its peer's
        # ``generation``. Repeat in case a task spawned another one while ending.
        for _ in range(10):
            tasks = [t for t in self._tasks if not t.done()]
            if not tasks:
                break
            for t in tasks:
                t.cancel()
            _, pending = await asyncio.wait(tasks, timeout=self.cfg.dial_timeout_seconds)
            for t in pending:
                self.log.warn("peer transport task did not stop on cancel", task=repr(t))
        for s in self._servers:
            with contextlib.suppress(Exception):
                await s.wait_closed()
        self._servers.clear()
        for path in self._socket_files:
            with contextlib.suppress(OSError):
                os.remove(path)
        self._socket_files.clear()

    # -- membership ----------------------------------------------------------------------------

    def add_peer(self, member_id: MemberId, peer_urls: Sequence[str]) -> None:
        """Start sending to ``member_id`` (and accept its connections). Idempotent."""
        assert member_id != self.cfg.member_id, "a member is not its own peer"
        urls = [parse_peer_url(u) for u in peer_urls]
        if not urls:
            raise PeerUrlError("", f"member {member_id:x} has no peer URLs")
        if member_id in self._peers:
            self.update_peer(member_id, peer_urls)
            return
        self._removed.discard(member_id)
        p = _Peer(
            id=member_id,
            urls=urls,
            queue=PeerQueue(self.cfg.queue_messages_max),
            backoff=Backoff(
                self.cfg.backoff_initial_seconds, self.cfg.backoff_max_seconds, self._rand
            ),
            wake=asyncio.Event(),
        )
        self._peers[member_id] = p
        if self._loop is not None and not self._stopped:
            self._start_peer(p)

    def update_peer(self, member_id: MemberId, peer_urls: Sequence[str]) -> None:
        """New URLs for a peer: the stream connection is dropped and redialled."""
        urls = [parse_peer_url(u) for u in peer_urls]
        if not urls:
            raise PeerUrlError("", f"member {member_id:x} has no peer URLs")
        p = self._peers[member_id]
        if urls == p.urls:
            return
        p.urls = urls
        p.url_index = 0
        p.backoff.reset()
        if p.task is not None:
            self._close_peer(p)
            self._start_peer(p)

    def remove_peer(self, member_id: MemberId) -> None:
        """Stop sending to ``member_id``; from now on its connections are rejected as removed."""
        self._removed.add(member_id)
        p = self._peers.pop(member_id, None)
        if p is not None:
            self._close_peer(p)
        for w in self._inbound.pop(member_id, set()):
            w.close()

    def peer_ids(self) -> list[MemberId]:
        return list(self._peers)

    def stats(self, member_id: MemberId) -> PeerStats:
        p = self._peers[member_id]
        p.stats.queued_messages = len(p.queue)
        return p.stats

    def inbound_stats(self, member_id: MemberId) -> InboundStats:
        """Counters of what ``member_id`` sent us (zeros if nothing yet)."""
        return self._inbound_stats.get(member_id) or InboundStats()

    def active_since(self, member_id: MemberId) -> float:
        """``time.monotonic()`` of the start of the connection to ``member_id`` (0: none)."""
        p = self._peers.get(member_id)
        return 0.0 if p is None else p.stats.active_since

    def is_connected(self, member_id: MemberId) -> bool:
        p = self._peers.get(member_id)
        return p is not None and p.stats.connected

    # -- sending -------------------------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> None:
        """Queue ``messages`` for their targets; never awaits. See the module docstring."""
        if self._stopped:
            return
        peers = self._peers
        touched: dict[MemberId, _Peer] = {}
        unreachable: set[MemberId] | None = None
        for m in messages:
            p = peers.get(m.to)
            if p is None:
                continue
            if m.type == MessageType.SNAP:
                self._start_snapshot(p, m)
                continue
            if p.accepting and p.queue.push(m):
                touched[p.id] = p
            else:
                p.stats.dropped_messages += 1
                if unreachable is None:
                    unreachable = set()
                unreachable.add(p.id)
        for p in touched.values():
            n = len(p.queue)
            if n > p.stats.queued_messages_peak:
                p.stats.queued_messages_peak = n
            w = p.writer
            if (
                w is not None
                and not p.draining
                and not p.broken
                and w.transport.get_write_buffer_size() <= p.high_water_bytes
            ):
                # The connection is idle: write now instead of waking the write loop, which
                # would run only after everything else queued on the event loop (a Ready
                # round's apply, other requests): on a busy member that was 0.1-0.6 ms per
                # hop of every replicated write.
                if not self._write_now(p, w):
                    if unreachable is None:
                        unreachable = set()
                    unreachable.add(p.id)
            else:
                p.wake.set()
        if unreachable:
            loop = self._loop
            assert loop is not None, "send() before start()"
            for mid in unreachable:
                loop.call_soon(self._report_unreachable, mid)

    def _write_now(self, p: _Peer, writer: asyncio.StreamWriter) -> bool:
        """Write everything queued for ``p`` on its idle connection (from ``send``).

        False when the batch was dropped: the connection is gone (or a message could not be
        encoded); the write loop is woken to notice it and redial, as if its own write failed.
        """
        batch = p.queue.take_all()
        try:
            buf = codec.encode_frames(batch)
            _write(writer, buf)
        except (ConnectionResetError, CodecError) as e:
            p.stats.dropped_messages += len(batch)
            p.broken = True
            p.wake.set()
            self._state(p, p.generation, "direct write failed", error=str(e))
            return False
        stats = p.stats
        stats.sent_messages += len(batch)
        stats.sent_batches += 1
        stats.sent_bytes += len(buf)
        if writer.transport.get_write_buffer_size() > p.high_water_bytes:
            p.wake.set()  # the write loop drains, with the write timeout, before more is sent
        return True

    # -- the per-peer stream writer ------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        t: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task[None]) -> None:
        # A task of the transport that dies on an exception is a bug (a peer would silently
        # stop being dialled): say so loudly instead of leaving it to the garbage collector.
        self._tasks.discard(t)
        if t.cancelled():
            return
        e = t.exception()
        if e is not None:
            self.log.error(
                "peer transport task failed",
                local_member_id=f"{self.cfg.member_id:x}",
                task=t.get_name(),
                error=repr(e),
            )

    def _state(self, p: _Peer, gen: int, state: str, **fields: Any) -> None:
        """Every state change of a peer's stream connection, at debug level."""
        self.log.debug(
            "peer stream state",
            local_member_id=f"{self.cfg.member_id:x}",
            remote_peer_id=f"{p.id:x}",
            generation=gen,
            state=state,
            **fields,
        )

    def _start_peer(self, p: _Peer) -> None:
        assert p.task is None or p.task.done()
        p.accepting = True  # the first dial is about to start: see _run_peer
        p.task = self._spawn(self._run_peer(p, p.generation))

    def _close_peer(self, p: _Peer) -> None:
        p.generation += 1
        p.wake.set()  # ends the write loop even if its task's cancellation were lost
        if p.task is not None:
            p.task.cancel()
            p.task = None
        if p.writer is not None:
            p.writer.close()
            p.writer = None
        p.stats.connected = False
        p.stats.active_since = 0.0
        p.accepting = False
        p.queue.clear()

    async def _dial(self, p: _Peer, kind: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the peer's current URL and complete the handshake."""
        url = p.urls[p.url_index % len(p.urls)]
        ctx: ssl.SSLContext | None = None
        if url.tls:
            if self._client_ssl is None:
                raise PeerUrlError(url.address, "no client SSL context")
            ctx = self._client_ssl
        timeout = self.cfg.dial_timeout_seconds
        name = url.server_name if ctx else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(url.socket, ssl=ctx, server_hostname=name)
            if url.socket
            else asyncio.open_connection(url.host, url.port, ssl=ctx, server_hostname=name),
            timeout,
        )
        if not self._cert_passes(writer):
            # Tell the listener why before closing (it logs what etcd's logs from the alert).
            with contextlib.suppress(OSError, RuntimeError):
                refused = codec.Hello(
                    codec.KIND_CERT_REFUSED, self.cfg.cluster_id, self.cfg.member_id, p.id
                )
                writer.write(codec.encode_hello(refused))
                await asyncio.wait_for(writer.drain(), timeout)
            writer.close()
            raise OSError(f"peer {p.id:x}: server certificate authentication failed")
        try:
            hello = codec.Hello(kind, self.cfg.cluster_id, self.cfg.member_id, p.id)
            _write(writer, codec.encode_hello(hello))
            head = await asyncio.wait_for(reader.readexactly(codec.REPLY_HEADER_BYTES), timeout)
            status, n = codec.decode_reply_header(head)
            reason = (await asyncio.wait_for(reader.readexactly(n), timeout)).decode(
                errors="replace"
            )
            if status != HandshakeStatus.OK:
                raise HandshakeRejectedError(status, reason)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _watch(
        self, p: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            await reader.read(1)
        if p.writer is writer:  # still this watcher's connection
            p.broken = True
            p.wake.set()

    async def _run_peer(self, p: _Peer, gen: int) -> None:
        failures = 0
        while p.generation == gen:
            # While the first attempt after a start or a loss is in flight, queue: a peer that
            # is up gets e.g. an election's votes without waiting for Raft to retry. Once an
            # attempt failed, drop (and report) instead, so a dead peer costs nothing.
            p.accepting = failures == 0
            url = p.urls[p.url_index % len(p.urls)]
            self._state(p, gen, "dialing", url=url.address, failures=failures)
            try:
                reader, writer = await self._dial(p, codec.KIND_STREAM)
            except HandshakeRejectedError as e:
                self.log.error(
                    "peer rejected our stream connection",
                    local_member_id=f"{self.cfg.member_id:x}",
                    remote_peer_id=f"{p.id:x}",
                    status=e.status,
                    reason=e.reason,
                )
                if self._on_rejected is not None and e.status != HandshakeStatus.UNKNOWN_SENDER:
                    self._on_rejected(p.id, e.status)
                if p.generation != gen:
                    return
                failures += 1
                self._drop_queued(p)
                await self._backoff(p, gen, "handshake rejected")
                continue
            except (OSError, TimeoutError, asyncio.IncompleteReadError, PeerUrlError) as e:
                self._state(p, gen, "dial failed", error=str(e) or type(e).__name__)
                if failures == 0:
                    self.log.warn(
                        "failed to dial remote peer",
                        local_member_id=f"{self.cfg.member_id:x}",
                        remote_peer_id=f"{p.id:x}",
                        error=str(e) or type(e).__name__,
                    )
                if p.generation != gen:
                    return
                failures += 1
                p.url_index += 1
                self._drop_queued(p)
                await self._backoff(p, gen, "dial failed")
                continue
            except Exception as e:
                # A bug, but this peer must not be left without a dialer: say so and go on.
                self.log.error(
                    "unexpected error dialing remote peer",
                    local_member_id=f"{self.cfg.member_id:x}",
                    remote_peer_id=f"{p.id:x}",
                    error=repr(e),
                )
                if p.generation != gen:
                    return
                failures += 1
                p.url_index += 1
                self._drop_queued(p)
                await self._backoff(p, gen, "unexpected dial error")
                continue
            if p.generation != gen:
                self._state(p, gen, "stale after dial")
                writer.close()
                return
            failures = 0
            p.backoff.reset()
            p.high_water_bytes = writer.transport.get_write_buffer_limits()[1]
            p.draining = False
            p.writer = writer
            p.broken = False
            p.accepting = True
            p.stats.connected = True
            p.stats.active_since = time.monotonic()
            p.stats.connects += 1
            self.log.info(
                "peer became active",
                local_member_id=f"{self.cfg.member_id:x}",
                remote_peer_id=f"{p.id:x}",
            )
            self._state(p, gen, "connected")
            watcher = self._spawn(self._watch(p, reader, writer))
            try:
                await self._write_loop(p, writer, gen)
            except (OSError, CodecError) as e:
                self.log.warn(
                    "lost TCP streaming connection with remote peer",
                    local_member_id=f"{self.cfg.member_id:x}",
                    remote_peer_id=f"{p.id:x}",
                    error=str(e) or type(e).__name__,
                )
            except Exception as e:
                self.log.error(
                    "unexpected error on the stream connection to remote peer",
                    local_member_id=f"{self.cfg.member_id:x}",
                    remote_peer_id=f"{p.id:x}",
                    error=repr(e),
                )
            finally:
                watcher.cancel()
                writer.close()
                if p.writer is writer:
                    p.writer = None
                if p.generation == gen:
                    p.stats.connected = False
                    p.stats.active_since = 0.0
                    p.accepting = False
            self._state(p, gen, "disconnected")
            if p.generation != gen:
                return
            self._drop_queued(p)
            await self._backoff(p, gen, "disconnected")
        self._state(p, gen, "stale")

    async def _backoff(self, p: _Peer, gen: int, why: str) -> None:
        delay_s = p.backoff.next_delay()
        self._state(p, gen, "backoff", reason=why, delay_seconds=round(delay_s, 3))
        p.peer_is_up.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(p.peer_is_up.wait(), delay_s)

    def _drop_queued(self, p: _Peer) -> None:
        p.accepting = False
        dropped = p.queue.clear()
        if dropped:
            p.stats.dropped_messages += dropped
            self._report_unreachable(p.id)

    async def _write_loop(self, p: _Peer, writer: asyncio.StreamWriter, gen: int) -> None:
        stats = p.stats
        transport = writer.transport
        high_water_bytes = p.high_water_bytes
        write_timeout_s = self.cfg.write_timeout_seconds
        while True:
            await p.wake.wait()
            p.wake.clear()
            if p.generation != gen:
                return
            if p.broken:
                raise ConnectionResetError("connection closed by the remote peer")
            batch = p.queue.take_all()
            if batch:
                buf = codec.encode_frames(batch)
                _write(writer, buf)
                stats.sent_messages += len(batch)
                stats.sent_batches += 1
                stats.sent_bytes += len(buf)
            # Woken with nothing queued: send() wrote past the high-water mark itself.
            if transport.get_write_buffer_size() <= high_water_bytes:
                continue  # drain() would return at once: skip the timer
            p.draining = True
            try:
                await asyncio.wait_for(writer.drain(), write_timeout_s)
            except TimeoutError:
                # A peer that stopped reading (or vanished without a reset, as in a network
                # partition) would hold this connection forever: drop it and redial.
                raise ConnectionResetError(
                    f"write to remote peer stalled for {write_timeout_s}s"
                ) from None
            finally:
                p.draining = False

    # -- snapshots: the sender -----------------------------------------------------------------

    def _start_snapshot(self, p: _Peer, m: Message) -> None:
        self._spawn(self._send_snapshot(p, m))

    async def _send_snapshot(self, p: _Peer, m: Message) -> None:
        failed = True
        writer: asyncio.StreamWriter | None = None
        try:
            assert m.snapshot is not None, "MsgSnap without a snapshot"
            if self._snapshot_source is None:
                raise OSError("no snapshot source configured")
            source = await asyncio.to_thread(self._snapshot_source, m.snapshot.metadata)
            if isinstance(source, SnapshotFile):
                path = source.path
                m = dataclasses.replace(
                    m, snapshot=dataclasses.replace(m.snapshot, metadata=source.metadata)
                )
            else:
                path = source
            reader, writer = await self._dial(p, codec.KIND_SNAPSHOT)
            failed = not await self._stream_snapshot(m, Path(path), reader, writer)
        except asyncio.CancelledError:
            raise
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            HandshakeRejectedError,
            CodecError,
            PeerUrlError,
        ) as e:
            self.log.warn(
                "failed to send database snapshot",
                local_member_id=f"{self.cfg.member_id:x}",
                remote_peer_id=f"{p.id:x}",
                error=str(e) or type(e).__name__,
            )
        finally:
            if writer is not None:
                writer.close()
            if failed:
                p.stats.snapshots_failed += 1
            else:
                p.stats.snapshots_sent += 1
            if not self._stopped:
                self._report_snapshot(p.id, failed)

    async def _stream_snapshot(
        self,
        m: Message,
        path: Path,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        chunk_bytes = self.cfg.snapshot_chunk_bytes
        idle = self.cfg.snapshot_idle_timeout_seconds
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            _write(writer, codec.encode_frames([m]) + codec.U64.pack(size))
            crc = 0
            sent = 0
            while sent < size:
                chunk = await asyncio.to_thread(f.read, min(chunk_bytes, size - sent))
                if not chunk:
                    raise OSError(f"snapshot file {path} shrank while being sent")
                crc = zlib.crc32(chunk, crc)
                _write(writer, chunk)
                sent += len(chunk)
                await asyncio.wait_for(writer.drain(), idle)
        _write(writer, codec.U32.pack(crc))
        await asyncio.wait_for(writer.drain(), idle)
        ack = await asyncio.wait_for(reader.readexactly(1), idle)
        self.log.info(
            "sent database snapshot",
            local_member_id=f"{self.cfg.member_id:x}",
            remote_peer_id=f"{m.to:x}",
            snapshot_index=m.snapshot.metadata.index if m.snapshot else 0,
            size_bytes=size,
            ok=ack == _SNAP_OK,
        )
        return ack == _SNAP_OK

    # -- the listener --------------------------------------------------------------------------

    def _check_hello(self, h: codec.Hello) -> tuple[int, str]:
        me = self.cfg.member_id
        kinds: tuple[int, ...] = (codec.KIND_STREAM, codec.KIND_SNAPSHOT)
        if self._members_source is not None:
            kinds += (codec.KIND_MEMBERS,)
        if h.version != codec.PROTOCOL_VERSION or h.kind not in kinds:
            return HandshakeStatus.BAD_PROTOCOL, (
                f"unsupported peer protocol version {h.version} kind {h.kind}"
            )
        if h.cluster_id != self.cfg.cluster_id:
            return HandshakeStatus.CLUSTER_MISMATCH, (
                f"request cluster ID mismatch: local {self.cfg.cluster_id:x}, "
                f"remote {h.cluster_id:x}"
            )
        if h.kind == codec.KIND_MEMBERS and self._members_source is not None:
            return HandshakeStatus.OK, encode_member_listing(self._members_source())
        if h.from_ in self._removed:
            return HandshakeStatus.REMOVED, (
                f"rejected stream from remote peer {h.from_:x} because it was removed"
            )
        if h.from_ not in self._peers:
            return HandshakeStatus.UNKNOWN_SENDER, f"remote peer {h.from_:x} is not a member"
        if h.to != me:
            return HandshakeStatus.RECEIVER_MISMATCH, (
                f"receiver member ID mismatch: local {me:x}, requested {h.to:x}"
            )
        return HandshakeStatus.OK, ""

    def _cert_passes(self, writer: asyncio.StreamWriter) -> bool:
        """Whether a TLS connection's peer certificate passes ``cert_check`` (plain text and
        no check: yes)."""
        if self._cert_check is None or writer.get_extra_info("ssl_object") is None:
            return True
        return self._cert_check(writer.get_extra_info("peercert") or {})

    async def _handle_conn(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if self._stopped or task is None:
            writer.close()
            return
        # Tracked so that stop() closes and cancels accepted connections too.
        self._tasks.add(task)
        self._accepted.add(writer)
        try:
            cert_passes = self._cert_passes(writer)
            if not cert_passes:
                self.log.error(
                    "rejected peer connection: client certificate authentication failed",
                    remote_addr=str(writer.get_extra_info("peername")),
                )
            raw = await asyncio.wait_for(
                reader.readexactly(codec.HELLO_BYTES), self.cfg.dial_timeout_seconds
            )
            try:
                hello = codec.decode_hello(raw)
            except CodecError:
                _write(writer, codec.encode_reply(HandshakeStatus.BAD_PROTOCOL, "bad magic"))
                self.log.error(
                    "rejected peer connection: unsupported protocol",
                    remote_addr=str(writer.get_extra_info("peername")),
                )
                return
            if hello.kind == codec.KIND_CERT_REFUSED:
                # The dialer refused this member's certificate (etcd's listener hears it as
                # a TLS alert and logs it so).
                self.log.warn(
                    "rejected connection",
                    remote_addr=str(writer.get_extra_info("peername")),
                    error=codec.BAD_CERTIFICATE_REASON,
                )
                return
            if not cert_passes:
                # The refused member learns why, as etcd's does from the TLS alert.
                _write(
                    writer,
                    codec.encode_reply(
                        HandshakeStatus.BAD_CERTIFICATE, codec.BAD_CERTIFICATE_REASON
                    ),
                )
                return
            status, reason = self._check_hello(hello)
            _write(writer, codec.encode_reply(status, reason))
            if status != HandshakeStatus.OK:
                self.log.error(
                    reason,
                    local_member_id=f"{self.cfg.member_id:x}",
                    remote_peer_id=f"{hello.from_:x}",
                    remote_cluster_id=f"{hello.cluster_id:x}",
                    local_cluster_id=f"{self.cfg.cluster_id:x}",
                    remote_addr=str(writer.get_extra_info("peername")),
                )
                with contextlib.suppress(OSError):
                    await writer.drain()
                return
            if hello.kind == codec.KIND_MEMBERS:
                await asyncio.wait_for(writer.drain(), self.cfg.dial_timeout_seconds)
            elif hello.kind == codec.KIND_STREAM:
                peer = self._peers.get(hello.from_)
                if peer is not None:
                    peer.peer_is_up.set()
                await self._receive_stream(hello.from_, reader, writer)
            else:
                await self._receive_snapshot(hello.from_, reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a connection handler. This is the outermost coroutine of
            # the task asyncio created for the connection, and Python 3.11's start_server
            # logs a cancelled handler task as an unhandled error: end it normally instead.
            pass
        except CodecError as e:
            self.log.error(
                "closing peer connection on a malformed frame",
                local_member_id=f"{self.cfg.member_id:x}",
                error=str(e),
            )
        finally:
            writer.close()
            self._accepted.discard(writer)
            self._tasks.discard(task)

    async def _receive_stream(
        self, sender: MemberId, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Deliver the stream's messages until it ends; raises what ended it (``CodecError``)."""
        conns = self._inbound.setdefault(sender, set())
        conns.add(writer)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        receiver = _StreamReceiver(
            codec.FrameDecoder(self.cfg.frame_bytes_max),
            self._on_messages,
            self._inbound_stats.setdefault(sender, InboundStats()),
            done,
        )
        # No await since the handshake reply was written: a conforming dialer has sent nothing
        # more yet, so everything from here on reaches the receiver. Whatever a dialer sent
        # before reading our reply is already in the reader's buffer (a private attribute of
        # StreamReader, with no public way to take it without waiting): hand it over first.
        early = bytes(getattr(reader, "_buffer", b""))
        at_eof = reader.at_eof()
        transport = writer.transport
        try:
            if not at_eof:
                transport.set_protocol(receiver)
            if early:
                receiver.data_received(early)
            if at_eof:
                receiver.eof_received()
            await done
        finally:
            conns.discard(writer)

    # -- snapshots: the receiver ---------------------------------------------------------------

    async def _receive_snapshot(
        self, sender: MemberId, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        idle = self.cfg.snapshot_idle_timeout_seconds
        head = await asyncio.wait_for(reader.readexactly(4), idle)
        (n,) = codec.U32.unpack(head)
        if n > self.cfg.frame_bytes_max:
            raise CodecError(f"snapshot message of {n} bytes exceeds the frame limit")
        m = codec.decode_message(await asyncio.wait_for(reader.readexactly(n), idle))
        if m.type != MessageType.SNAP or m.snapshot is None or m.from_ != sender:
            raise CodecError("a snapshot connection must carry the sender's MsgSnap")
        (size,) = codec.U64.unpack(await asyncio.wait_for(reader.readexactly(8), idle))
        if self._on_snapshot is None:
            raise CodecError("this member does not accept snapshots")
        meta = m.snapshot.metadata
        fd, tmp = tempfile.mkstemp(
            dir=self.cfg.snapshot_dir,
            prefix=f"{meta.term:016x}-{meta.index:016x}-",
            suffix=".snap.rcv",
        )
        path = Path(tmp)
        handed_over = False
        try:
            with os.fdopen(fd, "wb") as f:
                crc = 0
                left = size
                chunk_bytes = self.cfg.snapshot_chunk_bytes
                while left > 0:
                    chunk = await asyncio.wait_for(reader.read(min(chunk_bytes, left)), idle)
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", left)
                    crc = zlib.crc32(chunk, crc)
                    await asyncio.to_thread(f.write, chunk)
                    left -= len(chunk)
                (want_crc,) = codec.U32.unpack(await asyncio.wait_for(reader.readexactly(4), idle))
                if want_crc != crc:
                    raise CodecError(f"snapshot CRC mismatch: got {crc:08x}, want {want_crc:08x}")
                await asyncio.to_thread(_flush_and_fsync, f)
            self.log.info(
                "received database snapshot",
                local_member_id=f"{self.cfg.member_id:x}",
                remote_peer_id=f"{sender:x}",
                snapshot_index=meta.index,
                size_bytes=size,
                path=str(path),
            )
            try:
                self._on_snapshot(m, path)
                handed_over = True
                self._inbound_stats.setdefault(sender, InboundStats()).snapshots_received += 1
                writer.write(_SNAP_OK)
            except Exception as e:
                self.log.error(
                    "failed to install a received snapshot",
                    local_member_id=f"{self.cfg.member_id:x}",
                    error=repr(e),
                )
                writer.write(_SNAP_FAILED)
            await asyncio.wait_for(writer.drain(), idle)
        finally:
            if not handed_over:
                with contextlib.suppress(OSError):
                    path.unlink()


class _StreamReceiver(asyncio.Protocol):
    """The protocol of an inbound stream connection after its handshake.

    ``data_received`` decodes the chunk and delivers its whole messages at once, in the
    event loop's read callback. The outcome goes to ``done``: a result on EOF or a lost
    connection, the ``CodecError`` of a malformed frame or a message type that must not come
    on a stream (the good messages before it are still delivered), or whatever ``deliver``
    raised. After that, nothing more is decoded; the connection's handler closes it.
    """

    __slots__ = ("_decoder", "_deliver", "_done", "_stats")

    def __init__(
        self,
        decoder: codec.FrameDecoder,
        deliver: Callable[[list[Message]], None],
        stats: InboundStats,
        done: asyncio.Future[None],
    ) -> None:
        self._decoder = decoder
        self._deliver = deliver
        self._stats = stats
        self._done = done

    def data_received(self, data: bytes) -> None:
        done = self._done
        if done.done():
            return
        stats = self._stats
        stats.received_bytes += len(data)
        decoder = self._decoder
        try:
            msgs = decoder.feed(data)
            bad: Message | None = None
            allowed = STREAM_MESSAGE_TYPES
            for i, m in enumerate(msgs):
                # ``from_`` is not checked against the sender: Raft forwards some messages
                # unchanged (a MsgTransferLeader carries the transferee's id, a re-forwarded
                # MsgProp its proposer's).
                if m.type not in allowed:
                    bad = m
                    del msgs[i:]
                    break
            if msgs:
                stats.received_messages += len(msgs)
                self._deliver(msgs)
            if bad is not None:
                raise CodecError(f"{bad.type.name} is not sent on a stream connection")
            if decoder.error is not None:
                raise decoder.error
        except Exception as e:
            if not done.done():
                done.set_exception(e)

    def eof_received(self) -> bool:
        if not self._done.done():
            self._done.set_result(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


def encode_member_listing(members: Mapping[MemberId, Sequence[str]]) -> str:
    """The reply to a ``KIND_MEMBERS`` hello: the members' ids (hex) and peer URLs, as JSON."""
    listing = [{"id": f"{mid:x}", "peerURLs": list(urls)} for mid, urls in sorted(members.items())]
    text = json.dumps({"members": listing}, separators=(",", ":"))
    if len(text.encode()) > 0xFFFF:
        raise CodecError(f"member listing of {len(listing)} members exceeds a handshake reply")
    return text


def decode_member_listing(text: str) -> dict[MemberId, tuple[str, ...]]:
    """The inverse of ``encode_member_listing``; raises ``CodecError`` on anything else."""
    try:
        obj = json.loads(text)
        return {
            MemberId(int(m["id"], 16)): tuple(str(u) for u in m["peerURLs"]) for m in obj["members"]
        }
    except (ValueError, KeyError, TypeError) as e:
        raise CodecError(f"bad member listing: {e}") from None


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    """``writer.write`` that fails like a lost connection when the connection is already gone.

    The peer may reset a connection at any moment, e.g. right after accepting it (the robustness
    proxy does, while the member behind it is down). asyncio's own loops ignore a write to a
    closed transport, but uvloop's (what ``petcd`` runs on) raises ``RuntimeError`` ("unable to
    perform operation on <TCPTransport closed=True ...>; the handler is closed"): uncaught, that
    ended a peer's dial loop for good (issue 6).
    """
    if writer.is_closing():
        raise ConnectionResetError("connection closed by the remote peer before a write")
    try:
        writer.write(data)
    except RuntimeError as e:
        raise ConnectionResetError(f"write on a closed connection: {e}") from None


def _flush_and_fsync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
