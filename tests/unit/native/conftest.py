"""Fixtures for the native front end's tests: a real ``petcd._frontend.Frontend`` on
127.0.0.1, port 0, driven by a small take/send loop on a thread, and real grpcio clients.

``Driver`` waits on the front end's eventfd, takes the events, records them, then passes
each one to the test's handler, whose returned send items it sends in one ``send()`` call
per batch (as the adapter does). Tests can also call ``fe.send`` themselves.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from petcd._frontend import Frontend

Handler = Callable[[tuple[Any, ...]], list[tuple[Any, ...]]]


def _no_reply(_event: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return []


class Driver:
    """The take/send loop of a test server."""

    def __init__(self, fe: Frontend, handler: Handler) -> None:
        self.fe = fe
        self.handler = handler
        self.events: list[tuple[Any, ...]] = []
        self.over: list[int] = []
        self.batches = 0
        self.wakeups = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="frontend-driver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self.fe.fileno()
        while not self._stop:
            readable, _, _ = select.select([fd], [], [], 0.05)
            if not readable:
                continue
            self.wakeups += 1
            batch = self.fe.take()
            if not batch:
                continue
            self.batches += 1
            # Recorded before the handler runs, so that a handler which looks at the
            # recorded events sees the whole batch its event came in.
            with self._cond:
                self.events.extend(batch)
                self._cond.notify_all()
            out: list[tuple[Any, ...]] = []
            for ev in batch:
                out.extend(self.handler(ev))
            if out:
                over = self.fe.send(out)
                with self._cond:
                    self.over.extend(over)

    def wait_for(
        self, pred: Callable[[list[tuple[Any, ...]]], bool], timeout: float = 10.0
    ) -> list[tuple[Any, ...]]:
        """Waits until pred(events) holds; returns a copy of the events."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; events so far: {self.events[-20:]!r}")
                self._cond.wait(left)
            return list(self.events)

    def of(self, call_id: int) -> list[tuple[Any, ...]]:
        with self._cond:
            return [e for e in self.events if e[1] == call_id]

    def new_calls(self) -> list[tuple[Any, ...]]:
        with self._cond:
            return [e for e in self.events if e[0] == 0]

    def stop(self) -> None:
        self._stop = True
        self._thread.join(5)


DEFAULTS: dict[str, int] = {
    "max_recv_bytes": 2 * 1024 * 1024,
    "max_send_bytes": 8 * 1024 * 1024,
    "keepalive_min_time_ms": 5000,
    "keepalive_interval_ms": 2 * 3600 * 1000,
    "keepalive_timeout_ms": 20000,
}


class Served:
    def __init__(self, fe: Frontend, driver: Driver) -> None:
        self.fe = fe
        self.driver = driver
        self.port = fe.ports()[0]
        self.target = f"127.0.0.1:{self.port}"

    def channel(self, **options: Any) -> grpc.Channel:
        opts = [
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ]
        opts += list(options.items())
        return grpc.insecure_channel(self.target, options=opts)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """serve(handler=None, **Frontend options) -> Served; everything is closed after."""
    made: list[Served] = []

    def make(handler: Handler | None = None, **kw: int) -> Served:
        fe = Frontend([("127.0.0.1", 0)], **{**DEFAULTS, **kw})
        fe.start()
        s = Served(fe, Driver(fe, handler or _no_reply))
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.fe.close()
            s.driver.stop()


def echo(ev: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Unary echo: answers every request message with itself and OK."""
    if ev[0] == 1:
        return [(ev[1], ev[2], 0, "")]
    return []


def raw_unary(ch: grpc.Channel, method: str = "/test.Echo/Unary") -> Any:
    return ch.unary_unary(method, request_serializer=None, response_deserializer=None)
