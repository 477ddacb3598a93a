"""A loopback TCP proxy that can drop, blackhole or delay traffic on command.

Theory of operation
-------------------
:class:`TcpProxy` listens on 127.0.0.1 (a free port unless given) and forwards every
connection to a target address. It runs its own asyncio event loop in a daemon thread, so a
test (or the fault injector of a robustness run) drives it with plain method calls from any
thread. Between members of a cluster it stands in for the network: give each member's
peers the proxy's address instead of the member's, and the proxy decides what gets through.

Modes (``set_mode``), applied to existing and new connections alike:

- ``PASS``: bytes flow both ways, after ``delay_ms`` (per chunk, both directions);
- ``BLACKHOLE``: connections are accepted and kept open, but nothing is forwarded either
  way and what arrives is discarded (a partition that TCP does not notice: the peer's
  writes succeed, its reads time out). Leaving it resets every connection that was open
  during it, as TCP eventually would: bytes were lost, so those streams cannot go on;
- ``DROP``: every open connection is reset and new ones are closed as soon as they are
  accepted (a partition that TCP notices: the peer gets errors and redials).

Per sender (``sniff``): given a function that names the sender of a connection from its first
``sniff_bytes`` bytes (for petcd peers, :func:`petcd_peer_sender` reads the member id from the
peer handshake), ``set_sender_mode(sender, mode)`` applies a mode to that sender's
connections only, both directions of them (``set_sender_delay``: a delay of what it sends
after the handshake); the proxy-wide mode, when not ``PASS``, wins. Between members this
cuts chosen pairs (a symmetric or partial partition) although every member dials the same
proxy. The first bytes are read before the target is dialled; a connection that does not send
them within ``sniff_timeout_s`` is closed. Without ``sniff`` the proxy never inspects the bytes.

``close()`` stops the loop and every connection.
Counters (``connections``, ``bytes_forwarded``) let tests see that traffic really went
through it; ``journal`` keeps the last few hundred connection events (wall-clock time,
client port, what happened) for post-mortems.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import socket
import struct
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

from petcd.peer.codec import HELLO_BYTES, decode_hello
from petcd.peer.errors import CodecError


def petcd_peer_sender(first: bytes) -> int | None:
    """The sender member id of a petcd peer connection from its handshake, or None."""
    try:
        return int(decode_hello(first[:HELLO_BYTES]).from_)
    except CodecError:
        return None


PETCD_PEER_SNIFF_BYTES = HELLO_BYTES


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    DROP = "drop"


@dataclass
class TcpProxy:
    target_host: str
    target_port: int
    listen_port: int = 0
    mode: Mode = Mode.PASS
    delay_ms: float = 0.0
    connections: int = 0
    bytes_forwarded: int = 0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    # Per-sender modes (see the module docstring); a connection's sender, when known.
    sniff: Callable[[bytes], Hashable | None] | None = None
    sniff_bytes: int = 0
    sniff_timeout_s: float = 5.0
    sender_modes: dict[Hashable, Mode] = field(default_factory=dict)
    sender_delays_ms: dict[Hashable, float] = field(default_factory=dict)
    _senders: dict[asyncio.StreamWriter, Hashable] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    # (wall-clock time, client port, what happened), the last few hundred, for post-mortems
    journal: collections.deque[tuple[float, int, str]] = field(
        default_factory=lambda: collections.deque(maxlen=300)
    )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    def start(self) -> TcpProxy:
        ready: Future[None] = Future()

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._listen(ready))
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name=f"proxy-{self.target_port}", daemon=True)
        self._thread.start()
        ready.result(timeout=10)
        return self

    async def _listen(self, ready: Future[None]) -> None:
        try:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.listen_port, reuse_address=True
            )
            self.listen_port = self._server.sockets[0].getsockname()[1]
            ready.set_result(None)
        except Exception as exc:  # reported to the caller of start()
            ready.set_exception(exc)

    def _call(self, fn: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._apply(fn), self._loop)
        fut.result(timeout=10)

    async def _apply(self, fn: object) -> None:
        assert callable(fn)
        fn()

    def set_mode(self, mode: Mode, delay_ms: float | None = None) -> None:
        def apply() -> None:
            lossy = self.mode is Mode.BLACKHOLE and mode is not Mode.BLACKHOLE
            self.mode = mode
            if delay_ms is not None:
                self.delay_ms = delay_ms
            if mode is Mode.DROP or lossy:
                for w in list(self._writers):
                    _reset(w)

        self._call(apply)

    def set_sender_mode(self, sender: Hashable, mode: Mode) -> None:
        """Apply ``mode`` to the connections of ``sender`` only (needs ``sniff``)."""
        assert self.sniff is not None, "per-sender modes need a sniff function"

        def apply() -> None:
            before = self.sender_modes.get(sender, Mode.PASS)
            if mode is Mode.PASS:
                self.sender_modes.pop(sender, None)
            else:
                self.sender_modes[sender] = mode
            lossy = before is Mode.BLACKHOLE and mode is not Mode.BLACKHOLE
            if mode is Mode.DROP or lossy:
                for w, s in list(self._senders.items()):
                    if s == sender:
                        _reset(w)

        self._call(apply)

    def set_sender_delay(self, sender: Hashable, delay_ms: float) -> None:
        """What ``sender`` sends after its first bytes (the handshake, which gets through at
        once, as does the reply) arrives ``delay_ms`` late, instead of the proxy-wide delay;
        0 removes it. A chunk whose sender gets cut while it waits is lost."""
        assert self.sniff is not None, "per-sender delays need a sniff function"

        def apply() -> None:
            if delay_ms > 0:
                self.sender_delays_ms[sender] = delay_ms
            else:
                self.sender_delays_ms.pop(sender, None)

        self._call(apply)

    def clear_sender_modes(self) -> None:
        """Every sender back to the proxy-wide mode and delay."""
        for sender in list(self.sender_modes):
            self.set_sender_mode(sender, Mode.PASS)
        for sender in list(self.sender_delays_ms):
            self.set_sender_delay(sender, 0)

    def mode_for(self, sender: Hashable | None) -> Mode:
        """The mode that applies to a connection of ``sender`` (None: not known)."""
        if self.mode is not Mode.PASS or sender is None:
            return self.mode
        return self.sender_modes.get(sender, Mode.PASS)

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                _reset(w)

        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        port = peer[1] if peer else 0
        if self.mode is Mode.DROP:
            self.journal.append((time.time(), port, "dropped at accept"))
            _reset(writer)
            return
        first, sender = b"", None
        if self.sniff is not None:
            try:
                first = await asyncio.wait_for(
                    reader.readexactly(self.sniff_bytes), self.sniff_timeout_s
                )
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
                self.journal.append((time.time(), port, f"no sender named: {e!r}"))
                _reset(writer)
                return
            sender = self.sniff(first)
            if sender is not None:
                self._senders[writer] = sender
            mode = self.mode_for(sender)
            if mode is Mode.DROP:
                self.journal.append((time.time(), port, f"dropped at accept, from {sender}"))
                self._senders.pop(writer, None)
                _reset(writer)
                return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError as e:
            self.journal.append((time.time(), port, f"target refused: {e}"))
            self._senders.pop(writer, None)
            _reset(writer)
            return
        if sender is not None:
            self._senders[up_writer] = sender
        self.journal.append((time.time(), port, f"connected, from {sender}"))
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, sender, first, upstream=True),
                self._pump(up_reader, writer, sender, b"", upstream=False),
                return_exceptions=True,
            )
        finally:
            self.journal.append((time.time(), port, "closed"))
            for w in (writer, up_writer):
                self._writers.discard(w)
                self._senders.pop(w, None)
                _reset(w)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sender: Hashable | None,
        first: bytes,
        upstream: bool,
    ) -> None:
        try:
            data, sniffed = first, bool(first)
            while True:
                if not data:
                    sniffed = False
                    data = await reader.read(65536)
                    if not data:
                        break
                mode = self.mode_for(sender)
                if mode is Mode.DROP:
                    break
                if mode is Mode.BLACKHOLE:
                    data = b""
                    continue  # swallowed
                delay_ms = self.delay_ms
                if upstream and not sniffed:
                    delay_ms = self.sender_delays_ms.get(sender, delay_ms)
                if delay_ms > 0:
                    await asyncio.sleep(delay_ms / 1000)
                    if self.mode_for(sender) is not Mode.PASS:
                        data = b""
                        continue
                self.bytes_forwarded += len(data)  # before the bytes can reach anyone
                writer.write(data)
                data = b""
                await writer.drain()
        finally:
            # Either side ending ends the pair: the other pump sees its reader fail.
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a broken network would, not with a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.close()
