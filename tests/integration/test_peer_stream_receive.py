"""The receiving end of a peer stream connection (``petcd.peer.transport._StreamReceiver``).

After the handshake, the listener hands the connection's transport to a protocol that decodes
every chunk and delivers its messages inside the event loop's read callback: no task (and so
no extra event loop iteration) between the socket and raft. These tests pin that down on both
event loops petcd runs on (asyncio's, and uvloop's, which ``petcd`` uses), with the cases the
hand-over must not lose: bytes a dialer sent before it read the reply, frames cut across reads,
an end of stream right after the last frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from petcd.peer import codec
from petcd.raft.types import MemberId, Message

from .test_peer_transport import (
    CLUSTER,
    TIMEOUT_S,
    Member,
    app,
    make_member,
    raw_dial,
    start,
    stop,
    wait_for,
)

LOOPS = ["asyncio", "uvloop"]


def run_on(loop_kind: str, coro: Awaitable[None]) -> None:
    runner = uvloop.run if loop_kind == "uvloop" else asyncio.run
    runner(asyncio.wait_for(coro, 60))  # type: ignore[operator]


def record_tasks(m: Member) -> list[asyncio.Task[object] | None]:
    """Wrap ``m``'s delivery callback: record the task each delivery runs in."""
    tasks: list[asyncio.Task[object] | None] = []
    inner: Callable[[list[Message]], None] = m.transport._on_messages

    def on_messages(ms: list[Message]) -> None:
        tasks.append(asyncio.current_task())
        inner(ms)

    m.transport._on_messages = on_messages
    return tasks


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_messages_are_delivered_in_the_read_callback(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        tasks = record_tasks(b)
        await start(a, b)
        try:
            await wait_for(lambda: a.transport.is_connected(b.id), "connected")
            for i in range(20):
                a.transport.send([app(a.id, b.id, i, b"x" * 300)])
                await asyncio.sleep(0)
            await wait_for(lambda: len(b.received) == 20, "20 messages")
            assert [m.index for m in b.received] == list(range(20))
            # A callback of the event loop runs outside any task; the StreamReader version
            # delivered from the connection handler's task, one loop iteration later.
            assert tasks and all(t is None for t in tasks)
            st = b.transport.inbound_stats(a.id)
            assert st.received_messages == 20
            assert st.received_bytes == len(codec.encode_frames(b.received))
        finally:
            await stop(a, b)

    run_on(loop_kind, main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_frames_sent_with_the_hello_are_not_lost(tmp_path: Path, loop_kind: str) -> None:
    """A dialer that does not wait for the reply: its first frames arrive with the hello and
    sit in the handshake's reader when the receiver takes over."""

    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            hello = codec.encode_hello(codec.Hello(codec.KIND_STREAM, CLUSTER, a.id, b.id))
            first = codec.encode_frames([app(a.id, b.id, i) for i in range(3)])
            r, w = await asyncio.open_connection("127.0.0.1", b.port)
            w.write(hello + first + first[:5])  # and the start of the next frame
            status, n = codec.decode_reply_header(
                await asyncio.wait_for(r.readexactly(codec.REPLY_HEADER_BYTES), TIMEOUT_S)
            )
            assert status == codec.HandshakeStatus.OK and n == 0
            await wait_for(lambda: len(b.received) == 3, "the frames sent with the hello")
            w.write(first[5:] + codec.encode_frames([app(a.id, b.id, 9)]))
            await wait_for(lambda: len(b.received) == 7, "the rest")
            assert [m.index for m in b.received] == [0, 1, 2, 0, 1, 2, 9]
            w.close()
        finally:
            await stop(a, b)

    run_on(loop_kind, main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_frame_cut_across_reads_is_delivered_once_whole(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            _r, w, status, _ = await raw_dial(
                b.port, codec.Hello(codec.KIND_STREAM, CLUSTER, a.id, b.id)
            )
            assert status == codec.HandshakeStatus.OK
            frame = codec.encode_frames([app(a.id, b.id, 4, b"y" * 1000)])
            w.write(frame[:3])
            await w.drain()
            w.write(frame[3:600])
            await w.drain()
            await asyncio.sleep(0.05)
            assert b.received == []
            w.write(frame[600:])
            await wait_for(lambda: len(b.received) == 1, "the whole frame")
            assert b.received[0].entries[0].data == b"y" * 1000
            w.close()
        finally:
            await stop(a, b)

    run_on(loop_kind, main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_end_of_stream_after_the_last_frame(tmp_path: Path, loop_kind: str) -> None:
    """Frames followed at once by EOF are delivered, and the inbound connection is let go."""

    async def main() -> None:
        a, b = make_member(1, tmp_path), make_member(2, tmp_path)
        await start(a, b)
        try:
            inbound = b.transport._inbound
            await wait_for(lambda: len(inbound.get(a.id, ())) == 1, "A's own stream")
            r, w, status, _ = await raw_dial(
                b.port, codec.Hello(codec.KIND_STREAM, CLUSTER, MemberId(1), b.id)
            )
            assert status == codec.HandshakeStatus.OK
            await wait_for(lambda: len(inbound.get(a.id, ())) == 2, "the raw stream")
            w.write(codec.encode_frames([app(a.id, b.id, i) for i in range(5)]))
            w.write_eof()
            await wait_for(lambda: len(b.received) == 5, "5 messages")
            assert await asyncio.wait_for(r.read(), TIMEOUT_S) == b""  # B closed its end
            await wait_for(lambda: len(inbound.get(a.id, ())) == 1, "the raw stream let go")
            w.close()
        finally:
            await stop(a, b)

    run_on(loop_kind, main())
