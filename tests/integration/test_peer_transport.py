"""PeerTransport on 127.0.0.1: delivery, batching, dead and slow peers, snapshots, handshakes.

Every test runs two or three transports in one process on one event loop, on free loopback
ports, and waits on real conditions (bounded by a timeout) rather than on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import os
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from petcd.peer import PeerTransport, TransportConfig, codec
from petcd.peer.codec import HandshakeStatus
from petcd.raft.types import (
    ConfState,
    Entry,
    Index,
    MemberId,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    Term,
)
from tests.ports import free_port

CLUSTER = 0xC1
TIMEOUT_S = 10.0


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def debug(self, msg: str, **fields: Any) -> None:
        self.lines.append(("debug", msg, fields))

    def info(self, msg: str, **fields: Any) -> None:
        self.lines.append(("info", msg, fields))

    def warn(self, msg: str, **fields: Any) -> None:
        self.lines.append(("warn", msg, fields))

    def error(self, msg: str, **fields: Any) -> None:
        self.lines.append(("error", msg, fields))

    def errors(self) -> list[str]:
        return [msg for level, msg, _ in self.lines if level == "error"]


@dataclass
class Member:
    id: MemberId
    port: int
    transport: PeerTransport
    log: ListLogger
    received: list[Message] = field(default_factory=list)
    deliveries: int = 0
    unreachable: list[MemberId] = field(default_factory=list)
    snapshot_reports: list[tuple[MemberId, bool]] = field(default_factory=list)
    snapshots: list[tuple[Message, Path]] = field(default_factory=list)
    rejected: list[tuple[MemberId, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def make_member(
    mid: int,
    tmp: Path,
    *,
    port: int | None = None,
    cluster: int = CLUSTER,
    snapshot_file: Path | None = None,
    install: Callable[[Message, Path], None] | None = None,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
    **cfg: Any,
) -> Member:
    log = ListLogger()
    snap_dir = tmp / f"snap-{mid}"
    snap_dir.mkdir(exist_ok=True)
    holder: list[Member] = []

    def on_messages(ms: list[Message]) -> None:
        holder[0].received.extend(ms)
        holder[0].deliveries += 1

    def on_snapshot(m: Message, path: Path) -> None:
        if install is not None:
            install(m, path)
        holder[0].snapshots.append((m, path))

    t = PeerTransport(
        TransportConfig(
            cluster_id=cluster,
            member_id=MemberId(mid),
            snapshot_dir=snap_dir,
            backoff_initial_seconds=cfg.pop("backoff_initial_seconds", 0.01),
            backoff_max_seconds=cfg.pop("backoff_max_seconds", 0.1),
            **cfg,
        ),
        on_messages=on_messages,
        report_unreachable=lambda i: holder[0].unreachable.append(i),
        report_snapshot=lambda i, failed: holder[0].snapshot_reports.append((i, failed)),
        snapshot_source=(lambda meta: snapshot_file) if snapshot_file is not None else None,
        on_snapshot=on_snapshot,
        on_rejected=lambda i, status: holder[0].rejected.append((i, status)),
        logger=log,
        server_ssl=server_ssl,
        client_ssl=client_ssl,
    )
    m = Member(MemberId(mid), port if port is not None else 0, t, log)
    holder.append(m)
    return m


async def listen(m: Member, scheme: str = "http") -> None:
    """Start ``m``'s transport; port 0 binds a free port, with no window for another process
    to take it (unlike picking a free port first)."""
    await m.transport.start([f"{scheme}://127.0.0.1:{m.port}"])
    m.port = m.transport.listen_addresses[0][1]


async def start(*members: Member) -> None:
    for m in members:
        await listen(m)
    for m in members:
        for other in members:
            if other is not m:
                m.transport.add_peer(other.id, [other.url])


async def stop(*members: Member) -> None:
    for m in members:
        await m.transport.stop()


async def wait_for(pred: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def app(frm: MemberId, to: MemberId, i: int, payload: bytes = b"") -> Message:
    return Message(
        MessageType.APP,
        to=to,
        from_=frm,
        term=Term(1),
        index=Index(i),
        entries=(Entry(Term(1), Index(i + 1), data=payload),) if payload else (),
    )


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def test_in_order_per_peer_and_batched(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, c = (make_member(i, tmp_path) for i in (1, 2, 3))
        await start(a, b, c)
        try:
            await wait_for(
                lambda: a.transport.is_connected(b.id) and a.transport.is_connected(c.id),
                "A connected",
            )
            # One send() of many messages is one write per peer.
            a.transport.send([app(a.id, p, i) for i in range(500) for p in (b.id, c.id)])
            await wait_for(lambda: len(b.received) == 500 and len(c.received) == 500, "500 each")
            assert a.transport.stats(b.id).sent_batches == 1
            assert a.transport.stats(c.id).sent_batches == 1
            assert b.deliveries < 500
            # A send() on an idle connection is written before send() returns (no hop through
            # the write loop: that cost a replicated write 0.1-0.6 ms per hop on a busy
            # member); many small sends keep their order per peer.
            before = a.transport.stats(b.id).sent_batches
            a.transport.send([app(a.id, b.id, 500), app(a.id, c.id, 500)])
            assert a.transport.stats(b.id).sent_batches == before + 1
            assert a.transport.stats(b.id).queued_messages == 0
            for i in range(501, 1500):
                a.transport.send([app(a.id, b.id, i), app(a.id, c.id, i)])
            await wait_for(lambda: len(b.received) == 1500 and len(c.received) == 1500, "1500")
            for r, p in ((b, b.id), (c, c.id)):
                assert [m.index for m in r.received] == list(range(1500))
                assert all(m.to == p and m.from_ == a.id for m in r.received)
            assert a.transport.stats(b.id).sent_messages == 1500
            # A forwarded MsgTransferLeader carries the transferee's id, not the sender's.
            fwd = Message(MessageType.TRANSFER_LEADER, to=b.id, from_=c.id, term=Term(1))
            a.transport.send([fwd])
            await wait_for(lambda: len(b.received) == 1501, "forwarded message")
            assert b.received[-1] == fwd
            b.received.pop()
            # And the reverse direction uses B's own connection.
            b.transport.send([app(b.id, a.id, 7)])
            await wait_for(lambda: len(a.received) == 1, "B -> A")
            assert a.unreachable == [] and a.transport.stats(b.id).dropped_messages == 0
            sent = a.transport.stats(b.id)
            got = b.transport.inbound_stats(a.id)
            assert (got.received_messages, got.received_bytes) == (1501, sent.sent_bytes)
        finally:
            await stop(a, b, c)

    run(main())


def test_messages_sent_while_the_first_dial_runs_are_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            # Right after add_peer nothing is connected yet (an election at start-up).
            assert not a.transport.is_connected(b.id)
            a.transport.send([app(a.id, b.id, i) for i in range(3)])
            await wait_for(lambda: len(b.received) == 3, "delivered once connected")
            assert a.unreachable == []
        finally:
            await stop(a, b)

    run(main())


def test_dead_peer_does_not_block_live_one_and_is_reported(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        dead = MemberId(9)
        await start(a, b)
        a.transport.add_peer(dead, [f"http://127.0.0.1:{free_port()}"])
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "A connected to B")
            started = time.monotonic()
            for i in range(200):
                a.transport.send([app(a.id, dead, i), app(a.id, b.id, i)])
            send_s = time.monotonic() - started
            await wait_for(lambda: len(b.received) == 200, "B got everything")
            assert [m.index for m in b.received] == list(range(200))
            await wait_for(lambda: dead in a.unreachable, "dead peer reported unreachable")
            assert b.id not in a.unreachable
            assert a.transport.stats(dead).dropped_messages == 200
            assert not a.transport.is_connected(dead)
            assert send_s < 1.0, send_s  # generous: send never touches the network
            assert any(msg == "failed to dial remote peer" for _, msg, _ in a.log.lines)
        finally:
            await stop(a, b)

    run(main())


def test_reconnects_after_the_peer_comes_back(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "connected")
            a.transport.send([app(a.id, b.id, 0)])
            await wait_for(lambda: len(b.received) == 1, "first message")
            await b.transport.stop()
            await wait_for(lambda: not a.transport.is_connected(b.id), "A notices B is gone")
            a.transport.send([app(a.id, b.id, 1)])
            await wait_for(lambda: b.id in a.unreachable, "reported unreachable")
            # B comes back on the same port (a new process would; a new transport here).
            b2 = make_member(2, tmp_path, port=b.port)
            await listen(b2)
            b2.transport.add_peer(a.id, [a.url])
            await wait_for(lambda: a.transport.is_connected(b.id), "A reconnected")
            a.transport.send([app(a.id, b.id, 2)])
            await wait_for(lambda: len(b2.received) == 1, "delivered after reconnect")
            assert b2.received[0].index == 2
            assert a.transport.stats(b.id).connects == 2
            await b2.transport.stop()
        finally:
            await stop(a, b)

    run(main())


def test_a_peer_that_dials_us_ends_our_backoff_towards_it(tmp_path: Path) -> None:
    """A restarted member dials its peers at once; a peer that was backing off towards it
    must redial then, not wait out its backoff (regression: a proposal a follower forwarded
    to a restarted new leader in that window was lost, the client stalled for seconds)."""

    async def main() -> None:
        a = make_member(1, tmp_path, backoff_initial_seconds=8.0, backoff_max_seconds=8.0)
        b = make_member(2, tmp_path)
        await start(a, b)
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "connected")
            await b.transport.stop()
            await wait_for(lambda: not a.transport.is_connected(b.id), "A notices B is gone")
            # A now backs off for 8 s. B comes back and talks to A first.
            b2 = make_member(2, tmp_path, port=b.port)
            await listen(b2)
            b2.transport.add_peer(a.id, [a.url])
            b2.transport.send([app(b2.id, a.id, 0)])
            began = time.monotonic()
            await wait_for(lambda: a.transport.is_connected(b.id), "A redialled B", 4.0)
            assert time.monotonic() - began < 4.0
            a.transport.send([app(a.id, b.id, 1)])
            await wait_for(lambda: len(b2.received) == 1, "delivered after the redial")
            await b2.transport.stop()
        finally:
            await stop(a, b)

    run(main())


def test_slow_receiver_queue_is_bounded_and_others_flow(tmp_path: Path) -> None:
    async def main() -> None:
        queue_max = 32
        a = make_member(1, tmp_path, queue_messages_max=queue_max)
        b = make_member(2, tmp_path)
        slow_id = MemberId(5)
        stuck = asyncio.Event()

        async def never_reads(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readexactly(codec.HELLO_BYTES)
            w.write(codec.encode_reply(HandshakeStatus.OK))
            await stuck.wait()  # never reads again: the sender's buffers fill up
            w.close()

        slow = await asyncio.start_server(never_reads, "127.0.0.1", 0)
        slow_port = slow.sockets[0].getsockname()[1]
        await start(a, b)
        a.transport.add_peer(slow_id, [f"http://127.0.0.1:{slow_port}"])
        try:
            await wait_for(
                lambda: a.transport.is_connected(b.id) and a.transport.is_connected(slow_id),
                "connected",
            )
            payload = os.urandom(64 * 1024)
            sent_to_b = 0
            for _ in range(400):  # 25 MB to the slow peer: far beyond the kernel's buffers
                a.transport.send([app(a.id, slow_id, 0, payload), app(a.id, b.id, sent_to_b)])
                sent_to_b += 1
                await asyncio.sleep(0)
                assert len(a.transport._peers[slow_id].queue) <= queue_max
            await wait_for(lambda: len(b.received) == sent_to_b, "B got everything")
            st = a.transport.stats(slow_id)
            assert st.queued_messages_peak <= queue_max
            assert st.dropped_messages > 0
            assert slow_id in a.unreachable and b.id not in a.unreachable
            assert a.transport.stats(b.id).dropped_messages == 0
        finally:
            stuck.set()
            await stop(a, b)
            slow.close()

    run(main())


def _snapshot_msg(frm: MemberId, to: MemberId, index: int) -> Message:
    meta = SnapshotMetadata(Index(index), Term(3), ConfState(frozenset({frm, to})))
    return Message(MessageType.SNAP, to=to, from_=frm, term=Term(3), snapshot=Snapshot(meta))


def test_snapshot_streamed_in_chunks_and_verified(tmp_path: Path) -> None:
    async def main() -> None:
        src = tmp_path / "db.copy"
        data = os.urandom(5 * 1024 * 1024 + 123)
        src.write_bytes(data)
        a = make_member(1, tmp_path, snapshot_file=src, snapshot_chunk_bytes=256 * 1024)
        b = make_member(2, tmp_path)
        await start(a, b)
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "connected")
            msg = _snapshot_msg(a.id, b.id, 42)
            a.transport.send([msg, app(a.id, b.id, 1)])
            await wait_for(lambda: a.snapshot_reports == [(b.id, False)], "snapshot reported ok")
            assert len(b.snapshots) == 1
            got, path = b.snapshots[0]
            assert got == msg
            assert path.parent == tmp_path / "snap-2"
            assert a.transport.stats(b.id).snapshots_sent == 1
            assert b.transport.inbound_stats(a.id).snapshots_received == 1
            assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
            # the snapshot travels beside the stream: the MsgApp is not held up by it
            await wait_for(lambda: len(b.received) == 1, "app delivered")
            assert b.received[0].type == MessageType.APP
        finally:
            await stop(a, b)

    run(main())


def test_snapshot_failure_is_reported_and_temp_file_removed(tmp_path: Path) -> None:
    async def main() -> None:
        src = tmp_path / "db.copy"
        src.write_bytes(os.urandom(300_000))

        def refuse(m: Message, path: Path) -> None:
            raise RuntimeError("disk full")

        a = make_member(1, tmp_path, snapshot_file=src)
        b = make_member(2, tmp_path, install=refuse)
        dead = MemberId(9)
        await start(a, b)
        a.transport.add_peer(dead, [f"http://127.0.0.1:{free_port()}"])
        try:
            a.transport.send([_snapshot_msg(a.id, b.id, 5), _snapshot_msg(a.id, dead, 5)])
            await wait_for(lambda: len(a.snapshot_reports) == 2, "both reported")
            assert sorted(a.snapshot_reports) == [(b.id, True), (dead, True)]
            assert a.transport.stats(b.id).snapshots_failed == 1
            assert list((tmp_path / "snap-2").iterdir()) == []
            assert "failed to install a received snapshot" in b.log.errors()
        finally:
            await stop(a, b)

    run(main())


def test_wrong_cluster_id_is_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        a = make_member(1, tmp_path)
        other = make_member(2, tmp_path, cluster=0xBAD)
        await start(a, other)
        try:
            await wait_for(lambda: len(a.rejected) > 0 and len(other.rejected) > 0, "rejections")
            assert a.rejected[0] == (other.id, HandshakeStatus.CLUSTER_MISMATCH)
            assert not a.transport.is_connected(other.id)
            assert any("cluster ID mismatch" in e for e in other.log.errors())
            assert any("cluster ID mismatch" in e for e in a.log.errors())
            a.transport.send([app(a.id, other.id, 0)])
            await wait_for(lambda: other.id in a.unreachable, "unreachable")
            assert other.received == [] and a.received == []
        finally:
            await stop(a, other)

    run(main())


def test_removed_member_is_rejected_and_cut_off(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "connected")
            b.transport.remove_peer(a.id)
            await wait_for(lambda: (b.id, HandshakeStatus.REMOVED) in a.rejected, "A learns")
            assert not a.transport.is_connected(b.id)
            assert any("because it was removed" in e for e in b.log.errors())
        finally:
            await stop(a, b)

    run(main())


def test_update_peer_moves_to_new_url(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        b2 = make_member(2, tmp_path)  # B's new address
        await listen(b2)
        b2.transport.add_peer(a.id, [a.url])
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "connected")
            a.transport.update_peer(b.id, [b2.url])
            await wait_for(lambda: a.transport.is_connected(b.id), "reconnected")
            a.transport.send([app(a.id, b.id, 3)])
            await wait_for(lambda: len(b2.received) == 1, "delivered at the new URL")
            assert b.received == []
        finally:
            await stop(a, b, b2)

    run(main())


async def raw_dial(
    port: int, hello: codec.Hello | bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, bytes]:
    """Dial a transport by hand; return the handshake's status and reason."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(codec.encode_hello(hello) if isinstance(hello, codec.Hello) else hello)
    status, n = codec.decode_reply_header(await r.readexactly(codec.REPLY_HEADER_BYTES))
    return r, w, status, await r.readexactly(n)


def test_handshake_statuses(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        b.transport.remove_peer(MemberId(7))
        try:
            cases = [
                (codec.Hello(codec.KIND_STREAM, CLUSTER, a.id, b.id), HandshakeStatus.OK),
                (codec.Hello(codec.KIND_STREAM, CLUSTER, a.id, b.id, 2), 1),
                (codec.Hello(9, CLUSTER, a.id, b.id), HandshakeStatus.BAD_PROTOCOL),
                (codec.Hello(codec.KIND_STREAM, 0xBAD, a.id, b.id), 2),
                (codec.Hello(codec.KIND_STREAM, CLUSTER, MemberId(7), b.id), 3),
                (codec.Hello(codec.KIND_STREAM, CLUSTER, MemberId(8), b.id), 4),
                (codec.Hello(codec.KIND_STREAM, CLUSTER, a.id, MemberId(3)), 5),
            ]
            for hello, want in cases:
                _, w, status, _ = await raw_dial(b.port, hello)
                assert status == want, (hello, status)
                w.close()
            _, w, status, _ = await raw_dial(
                b.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 16
            )
            assert status == HandshakeStatus.BAD_PROTOCOL
            w.close()
            assert "rejected peer connection: unsupported protocol" in b.log.errors()
        finally:
            await stop(a, b)

    run(main())


def test_unknown_sender_is_accepted_once_added(tmp_path: Path) -> None:
    """A joining member dials before the others applied its addition: it retries until then."""

    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await listen(a)
        await listen(b)
        a.transport.add_peer(b.id, [b.url])  # B does not know A yet
        try:
            await wait_for(
                lambda: any(
                    f.get("status") == HandshakeStatus.UNKNOWN_SENDER for _, _, f in a.log.lines
                ),
                "rejected as unknown",
            )
            assert a.rejected == []  # not a fatal rejection
            b.transport.add_peer(a.id, [a.url])
            await wait_for(lambda: a.transport.is_connected(b.id), "accepted after add_peer")
        finally:
            await stop(a, b)

    run(main())


def test_malformed_frame_closes_only_that_connection(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            r, w, status, _ = await raw_dial(
                b.port, codec.Hello(codec.KIND_STREAM, CLUSTER, a.id, b.id)
            )
            assert status == HandshakeStatus.OK
            good = codec.encode_frames([app(a.id, b.id, 1)])
            w.write(good + b"\x05\x00\x00\x00" + b"\xff" * 5)
            assert await asyncio.wait_for(r.read(), TIMEOUT_S) == b""  # closed by B
            assert [m.index for m in b.received] == [1]
            assert "closing peer connection on a malformed frame" in b.log.errors()
            # B's own transport is unaffected.
            a.transport.send([app(a.id, b.id, 2)])
            await wait_for(lambda: len(b.received) == 2, "still works")
        finally:
            await stop(a, b)

    run(main())


@pytest.mark.parametrize("bad_type", [MessageType.HUP, MessageType.SNAP, MessageType.UNREACHABLE])
def test_local_or_snapshot_messages_on_a_stream_are_refused(
    tmp_path: Path, bad_type: MessageType
) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            r, w, status, _ = await raw_dial(
                b.port, codec.Hello(codec.KIND_STREAM, CLUSTER, a.id, b.id)
            )
            assert status == HandshakeStatus.OK
            bad = (
                _snapshot_msg(a.id, b.id, 3)
                if bad_type == MessageType.SNAP
                else Message(bad_type, to=b.id, from_=a.id)
            )
            w.write(codec.encode_frames([app(a.id, b.id, 1), bad, app(a.id, b.id, 2)]))
            assert await asyncio.wait_for(r.read(), TIMEOUT_S) == b""
            assert [m.index for m in b.received] == [1]
            assert "closing peer connection on a malformed frame" in b.log.errors()
        finally:
            await stop(a, b)

    run(main())


def test_corrupt_snapshot_is_refused_and_not_kept(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            r, w, status, _ = await raw_dial(
                b.port, codec.Hello(codec.KIND_SNAPSHOT, CLUSTER, a.id, b.id)
            )
            assert status == HandshakeStatus.OK
            data = os.urandom(10_000)
            w.write(codec.encode_frames([_snapshot_msg(a.id, b.id, 9)]))
            w.write(codec.U64.pack(len(data)) + data + codec.U32.pack(0xDEADBEEF))
            assert await asyncio.wait_for(r.read(), TIMEOUT_S) == b""  # no ack: refused
            assert b.snapshots == []
            assert list((tmp_path / "snap-2").iterdir()) == []
            assert any("CRC mismatch" in str(f.get("error")) for _, _, f in b.log.lines)
        finally:
            await stop(a, b)

    run(main())


def test_stalled_writer_is_dropped_and_redialled(tmp_path: Path) -> None:
    async def main() -> None:
        a = make_member(1, tmp_path, write_timeout_seconds=0.2)
        stuck = asyncio.Event()
        accepted = 0

        async def never_reads(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal accepted
            await r.readexactly(codec.HELLO_BYTES)
            w.write(codec.encode_reply(HandshakeStatus.OK))
            accepted += 1
            await stuck.wait()
            w.close()

        server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
        peer = MemberId(5)
        await listen(a)
        a.transport.add_peer(peer, [f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"])
        try:
            await wait_for(lambda: a.transport.is_connected(peer), "connected")
            payload = os.urandom(256 * 1024)
            while a.transport.stats(peer).connects < 2:
                a.transport.send([app(a.id, peer, 0, payload)])
                await asyncio.sleep(0.01)
            assert any("stalled" in str(f.get("error")) for _, _, f in a.log.lines)
            assert accepted >= 2
        finally:
            stuck.set()
            await a.transport.stop()
            server.close()

    run(main())


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "petcd-peer-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "peer.crt", tmp / "peer.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cert))
    server_ctx.load_cert_chain(cert, key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # as etcd's --peer-client-cert-auth
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    client_ctx.load_cert_chain(cert, key)

    async def main() -> None:
        members = []
        for i in (1, 2):
            m = make_member(i, tmp_path, server_ssl=server_ctx, client_ssl=client_ctx)
            members.append(m)
        a, b = members
        for m in members:
            await listen(m, "https")
        a.transport.add_peer(b.id, [b.url.replace("http://", "https://")])
        b.transport.add_peer(a.id, [a.url.replace("http://", "https://")])
        # A plaintext dialer cannot get in.
        plain = make_member(3, tmp_path)
        await listen(plain)
        plain.transport.add_peer(b.id, [b.url])
        b.transport.add_peer(plain.id, [plain.url])
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "TLS connection")
            a.transport.send([app(a.id, b.id, i, b"secret") for i in range(10)])
            await wait_for(lambda: len(b.received) == 10, "delivered over TLS")
            assert [m.index for m in b.received] == list(range(10))
            await wait_for(
                lambda: (
                    plain.transport.stats(b.id).connects == 0
                    and any(msg == "failed to dial remote peer" for _, msg, _ in plain.log.lines)
                ),
                "plaintext dial fails",
            )
            assert not plain.transport.is_connected(b.id)
        finally:
            await stop(a, b, plain)

    run(main())


@pytest.mark.long
def test_throughput_on_loopback(tmp_path: Path) -> None:
    """Not a pass/fail benchmark: prints messages/s and MB/s between two transports."""

    async def measure(label: str, payload_bytes: int, entries: int, total: int) -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "connected")
            payload = os.urandom(payload_bytes)
            ents = tuple(Entry(Term(1), Index(i), data=payload) for i in range(entries))
            msg = Message(MessageType.APP, to=b.id, from_=a.id, term=Term(1), entries=ents)
            batch = [msg] * 64
            window = max(256, 8 * 1024 * 1024 // max(1, payload_bytes * entries))
            started = time.perf_counter()
            cpu0 = time.process_time()
            sent = 0
            while sent < total:
                a.transport.send(batch)
                sent += len(batch)
                await asyncio.sleep(0)
                while sent - len(b.received) > window:  # like Raft's inflight limit
                    await asyncio.sleep(0.001)
            await wait_for(lambda: len(b.received) == sent, "all delivered", 120)
            wall_s = time.perf_counter() - started
            cpu_s = time.process_time() - cpu0
            nbytes = a.transport.stats(b.id).sent_bytes
            assert a.transport.stats(b.id).dropped_messages == 0
            print(
                f"\n{label}: {sent} msgs in {wall_s:.2f}s: {sent / wall_s:,.0f} msg/s, "
                f"{nbytes / wall_s / 1e6:.1f} MB/s, {cpu_s / sent * 1e6:.1f} us CPU/msg "
                f"(both ends, one process), load {os.getloadavg()[0]:.1f}"
            )
        finally:
            await stop(a, b)

    async def main() -> None:
        await measure("heartbeat-sized (no entries)", 0, 0, 100_000)
        await measure("MsgApp 1 entry x 256 B", 256, 1, 100_000)
        await measure("MsgApp 64 entries x 256 B", 256, 64, 10_000)
        await measure("MsgApp 1 entry x 64 KiB", 64 * 1024, 1, 5_000)

    asyncio.run(main())


# -- three Raft cores over real transports -----------------------------------------------------


class RaftHost:
    """A minimal member: RawNode + MemoryStorage + PeerTransport, driven in the Ready order.

    Its state machine is the list of applied payloads; its snapshot file is that list, one
    payload per line, written when the leader compacts.
    """

    def __init__(self, mid: int, ids: list[int], tmp: Path) -> None:
        from petcd.raft.config import Config
        from petcd.raft.node import RawNode
        from petcd.raft.storage import MemoryStorage

        self.id = MemberId(mid)
        self.tmp = tmp
        self.port = 0
        self.storage = MemoryStorage.bootstrap([MemberId(i) for i in ids])
        self.node = RawNode(
            Config(self.id, rand=random.Random(mid), election_ticks=10),
            self.storage,
        )
        self.applied: list[bytes] = []
        self.applied_index = Index(0)
        self.conf = ConfState()
        self.snap_files: dict[int, Path] = {}
        self.received_state: list[bytes] | None = None
        self.snapshots_installed = 0
        self.wake = asyncio.Event()
        snap_dir = tmp / f"raft-snap-{mid}"
        snap_dir.mkdir(exist_ok=True)
        self.transport = PeerTransport(
            TransportConfig(
                CLUSTER,
                self.id,
                snap_dir,
                backoff_initial_seconds=0.01,
                backoff_max_seconds=0.05,
            ),
            on_messages=self._on_messages,
            report_unreachable=self._report(self.node.report_unreachable),
            report_snapshot=self._report_snapshot,
            snapshot_source=lambda meta: self.snap_files[meta.index],
            on_snapshot=self._on_snapshot,
            logger=ListLogger(),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _report(self, fn: Callable[[MemberId], None]) -> Callable[[MemberId], None]:
        def report(i: MemberId) -> None:
            fn(i)
            self.wake.set()

        return report

    def _report_snapshot(self, i: MemberId, failed: bool) -> None:
        self.node.report_snapshot(i, failed)
        self.wake.set()

    def _on_messages(self, ms: list[Message]) -> None:
        for m in ms:
            self.node.step(m)
        self.wake.set()

    def _on_snapshot(self, m: Message, path: Path) -> None:
        self.received_state = [line for line in path.read_bytes().split(b"\n") if line]
        path.unlink()
        self.node.step(m)
        self.wake.set()

    def compact(self) -> None:
        """Snapshot the state machine at the applied index and drop the log before it."""
        index = self.applied_index
        path = self.tmp / f"state-{self.id}-{index}"
        path.write_bytes(b"\n".join(self.applied))
        self.snap_files[index] = path
        self.storage.create_snapshot(index, self.conf, b"")
        self.storage.compact(index)

    async def run(self, stop: asyncio.Event) -> None:
        from petcd.raft import confchange
        from petcd.raft.types import EntryType

        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, next_tick - loop.time()))
            self.wake.clear()
            if loop.time() >= next_tick:
                self.node.tick()
                next_tick = loop.time() + 0.01
            while self.node.has_ready():
                rd = self.node.ready()
                if rd.snapshot is not None and not rd.snapshot.is_empty:
                    self.storage.apply_snapshot(rd.snapshot)
                    assert self.received_state is not None
                    self.applied = list(self.received_state)
                    self.applied_index = rd.snapshot.metadata.index
                    self.conf = rd.snapshot.metadata.conf_state
                    self.snapshots_installed += 1
                if rd.hard_state is not None:
                    self.storage.set_hard_state(rd.hard_state)
                if rd.entries:
                    self.storage.append(rd.entries)
                self.transport.send(rd.messages)
                for e in rd.committed_entries:
                    if e.type == EntryType.CONF_CHANGE:
                        self.conf = self.node.apply_conf_change(confchange.decode(e.data))
                    elif e.data:
                        self.applied.append(e.data)
                    self.applied_index = e.index
                self.node.advance(rd)


def test_three_raft_cores_elect_replicate_and_catch_up_by_snapshot(tmp_path: Path) -> None:
    from petcd.raft.types import Role

    async def main() -> None:
        ids = [1, 2, 3]
        hosts = [RaftHost(i, ids, tmp_path) for i in ids]
        h1, h2, h3 = hosts
        stop_ev = asyncio.Event()
        # Every member binds its port first (port 0: no race for it with other processes).
        # Members 1 and 2 start; member 3 only listens, knows no peers and so refuses their
        # connections (as a member that has not joined yet): it is down for them.
        for h in hosts:
            await h.transport.start(["http://127.0.0.1:0"])
            h.port = h.transport.listen_addresses[0][1]
        for h in (h1, h2):
            for o in hosts:
                if o is not h:
                    h.transport.add_peer(o.id, [o.url])
        tasks = [asyncio.ensure_future(h.run(stop_ev)) for h in (h1, h2)]
        try:

            def leader() -> RaftHost | None:
                for h in (h1, h2):
                    if h.node.status().role is Role.LEADER:
                        return h
                return None

            await wait_for(lambda: leader() is not None, "a leader among 1 and 2")
            lead = leader()
            assert lead is not None
            for i in range(50):
                lead.node.propose(b"v%d" % i)
                lead.wake.set()
            want = [b"v%d" % i for i in range(50)]
            await wait_for(lambda: h1.applied == want and h2.applied == want, "replicated")
            # The leader compacts its log: member 3 can only catch up from a snapshot.
            lead.compact()
            for o in (h1, h2):
                h3.transport.add_peer(o.id, [o.url])
            tasks.append(asyncio.ensure_future(h3.run(stop_ev)))
            await wait_for(lambda: h3.applied[:50] == want, "member 3 caught up", 20)
            assert h3.snapshots_installed == 1
            # And it follows the log from there.
            lead.node.propose(b"after")
            lead.wake.set()
            await wait_for(lambda: all(h.applied == [*want, b"after"] for h in hosts), "all")
        finally:
            stop_ev.set()
            for h in hosts:
                h.wake.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for h in hosts:
                await h.transport.stop()

    run(main())


# -- issue 6: a peer that goes away and comes back on the same port, in every dial phase --------

REDIAL_PHASES = ("connecting", "handshake", "reply", "writing", "backoff")


def _run_on(loop_name: str, coro: Awaitable[None]) -> None:
    if loop_name == "asyncio":
        run(coro)
        return
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(coro, 60))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a killed process's kernel (or the robustness proxy) does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.close()


def _states(m: Member, state: str) -> int:
    return sum(
        1 for level, msg, f in m.log.lines if msg == "peer stream state" and f["state"] == state
    )


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("phase", REDIAL_PHASES)
def test_redials_a_peer_that_comes_back_after_failing_in_any_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str, loop_name: str
) -> None:
    """While B is away, A's dials fail in ``phase``; once B is back on the same port, A must
    connect and deliver. Before the fix of issue 6, under uvloop a connection reset before
    A wrote its hello (``handshake``) or a batch (``writing``) raised ``RuntimeError`` from
    ``write``, which ended A's dial loop for good: A never dialled B again."""
    hostile = True
    real_open = asyncio.open_connection

    async def open_connection(*args: Any, **kwargs: Any) -> Any:
        reader, writer = await real_open(*args, **kwargs)
        if hostile and phase == "handshake":
            # Deterministically let the reset arrive before A writes its hello.
            with contextlib.suppress(OSError):
                await reader.read(1)
        return reader, writer

    monkeypatch.setattr(asyncio, "open_connection", open_connection)
    if phase == "writing":
        # The watcher would notice the reset first; without it the write itself must.
        async def blind_watch(self: PeerTransport, *args: Any) -> None:
            await asyncio.Event().wait()

        monkeypatch.setattr(PeerTransport, "_watch", blind_watch)

    async def main() -> None:
        nonlocal hostile
        a = make_member(1, tmp_path, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)
        if phase == "backoff":
            a = make_member(1, tmp_path, backoff_initial_seconds=0.2, backoff_max_seconds=0.2)
        await listen(a)
        may_reset = asyncio.Event()

        async def fake_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if phase == "handshake":
                _reset(writer)
            elif phase == "reply":
                await reader.readexactly(codec.HELLO_BYTES)
                _reset(writer)
            elif phase == "writing":
                await reader.readexactly(codec.HELLO_BYTES)
                writer.write(codec.encode_reply(HandshakeStatus.OK, ""))
                await writer.drain()
                await may_reset.wait()  # A's reply must arrive before the reset drops it
                _reset(writer)

        server: asyncio.Server | None = None
        port = free_port()
        if phase in ("handshake", "reply", "writing"):
            server = await asyncio.start_server(fake_peer, "127.0.0.1", port)
        a.transport.add_peer(MemberId(2), [f"http://127.0.0.1:{port}"])
        b: Member | None = None
        try:
            if phase == "writing":
                await wait_for(lambda: _states(a, "connected") >= 1, "A connected to the fake")
                may_reset.set()
                p = a.transport._peers[MemberId(2)]
                await wait_for(lambda: p.writer is None or p.writer.is_closing(), "reset seen")
                a.transport.send([app(a.id, MemberId(2), 0)])
            elif phase == "backoff":
                await wait_for(lambda: _states(a, "backoff") >= 1, "A backing off")
            await wait_for(lambda: _states(a, "dialing") >= 3, "A redialling")
            hostile = False
            if server is not None:
                server.close()
                await server.wait_closed()
            b = make_member(2, tmp_path, port=port)
            await listen(b)
            b.transport.add_peer(a.id, [a.url])
            await wait_for(lambda: a.transport.is_connected(MemberId(2)), "A reconnected to B")
            a.transport.send([app(a.id, b.id, 7)])
            await wait_for(lambda: [m.index for m in b.received] == [7], "delivered to B")
            assert a.log.errors() == []
        finally:
            await stop(a)
            if b is not None:
                await stop(b)

    _run_on(loop_name, main())
