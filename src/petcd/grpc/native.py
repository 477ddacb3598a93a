"""petcd's gRPC services on the native front end (``petcd._frontend``) instead of grpc.aio.

Theory of operation
-------------------
``petcd._frontend.Frontend`` (Rust, its own threads) does HTTP/2 and gRPC framing, deadlines,
size limits and keepalive. It queues events (a call starts, a request message, the client's
half-close, the call is over from the client's side, a congested call drained) and makes an
eventfd readable when its queue goes from empty to non-empty. ``NativeServer`` registers that
fd with the running asyncio loop, takes the whole queue on wake-up and dispatches it; every
answer produced during one loop iteration goes back in ONE ``Frontend.send`` call (scheduled
with ``call_soon`` when the first answer of the iteration is queued).

``NativeServer`` offers the surface of the ``grpc.aio`` server petcd uses, so the existing
servicers, the generated ``add_*Servicer_to_server`` functions, ``add_watch_service`` and the
``RequestGuard`` interceptor run on it unchanged, with what grpc.aio's server does
(``grpc/_cython/_cygrpc/aio/server.pyx.pxi``) as the reference for behaviour:

- A method path resolves to its ``grpc.RpcMethodHandler`` through the registered handlers,
  then the generic handlers; the result is cached per path (only for paths that resolve, so
  a client cannot grow the cache). The interceptors run for every call, as in grpc.aio: their
  answer depends on the call's metadata and on the member's state at that moment, and
  ``RequestGuard`` counts each call, so their result is never cached.
- An unknown path gets ``UNIMPLEMENTED`` with grpc-go's texts (``unknown service X``,
  ``unknown method M for service X``, as etcd's clients see them) rather than grpc.aio's
  ``Method not found!``.
- The call object is the handler's ``context``: ``abort`` (sends the status and raises
  ``grpc.aio.AbortError``), ``set_code``/``set_details``, ``write``, ``read``,
  ``time_remaining``, ``invocation_metadata``, ``peer``, ``cancelled``, ``done``,
  ``add_done_callback``. An exception from a handler is logged and sent as ``UNKNOWN``
  ``Unexpected <class '...'>: ...`` unless the handler set another code first (grpc.aio's
  texts, so the generated base classes' unimplemented methods answer ``UNIMPLEMENTED``).
- Unary-request calls: the handler starts when the request message arrives. A unary-unary
  handler's coroutine is first stepped in the dispatch callback itself; only if it suspends
  (it waits for raft, say) is a Task created to drive the rest (``_Resume``). A handler that
  answers without waiting (a serializable Range, Status) therefore costs no Task and no extra
  loop iteration. A step that ends in a wait costs a little more than a plain Task, so a
  method whose calls keep waiting (Put) goes back to a Task per call, with a probe now and
  then (``_EAGER_CREDIT_*``). Streaming calls always run in a Task of their own
  (``LeaderMonitor`` needs ``asyncio.current_task()``).
- CANCEL (the client reset the stream, went away, or its deadline passed) cancels the call's
  task, as grpc.aio does; nothing is sent for the call afterwards.
- Backpressure: ``send`` names the calls with more than 1 MiB queued in the front end; the
  next ``write`` on such a call waits for its DRAINED event. A writer that queues more than
  ``_UNFLUSHED_BYTES_MAX`` within one loop iteration waits for the flush, so a handler that
  writes without ever suspending cannot monopolise the loop or grow the batch without bound.

Never: block in the dispatch callback; send anything for a call after its status or its
CANCEL; let an exception from one call's handler escape into the dispatch of the others.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
import importlib
import inspect
import socket
import time
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import grpc
from grpc.aio import EOF, AbortError, UsageError

from petcd.server.log import Logger

# Event kinds queued by the front end (frontend-api.md).
_NEW, _MESSAGE, _HALF_CLOSE, _CANCEL, _DRAINED = 0, 1, 2, 3, 4
_HTTP1 = 8  # a connection that is not HTTP/2: (8, fd, peer, client certificates or None)

_OK = grpc.StatusCode.OK
_CODE_NUMBER: dict[grpc.StatusCode, int] = {c: c.value[0] for c in grpc.StatusCode}
_CANCELLED = _CODE_NUMBER[grpc.StatusCode.CANCELLED]
_UNIMPLEMENTED = _CODE_NUMBER[grpc.StatusCode.UNIMPLEMENTED]
_INTERNAL = _CODE_NUMBER[grpc.StatusCode.INTERNAL]
_UNKNOWN = _CODE_NUMBER[grpc.StatusCode.UNKNOWN]
_NO_REQUEST = "grpc: the client half-closed the call without sending the request message"

# Eager stepping of unary handlers, per method path: a handler that answers without waiting
# earns credit, one that waits loses it; at zero, calls get a task at once (a step that ends
# in a wait costs more than a plain task), except every _EAGER_PROBE_EVERY-th call, which
# tries again (a Range may be serializable or not, a method's mix may change).
_EAGER_CREDIT_START = 4
_EAGER_CREDIT_MAX = 8
_EAGER_PROBE_EVERY = 32

# Bytes one call may queue within one loop iteration before its writer waits for the flush.
_UNFLUSHED_BYTES_MAX = 1 << 20

NOT_BUILT_MESSAGE = (
    "the native client transport is not built: run `make install` (needs Rust/cargo), "
    "or start with --client-transport=grpcio"
)


class NativeTransportUnavailable(RuntimeError):
    """``petcd._frontend`` cannot be imported (the Rust extension was not built)."""


class FrontendLike(Protocol):
    """What ``NativeServer`` uses of ``petcd._frontend.Frontend`` (tests pass a fake)."""

    def ports(self) -> list[int]: ...

    def start(self) -> None: ...

    def fileno(self) -> int: ...

    def take(self) -> list[tuple[Any, ...]]: ...

    def send(self, items: list[tuple[Any, ...]]) -> list[int]: ...

    def stop_accepting(self) -> None: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


def load_frontend_class() -> Callable[..., FrontendLike]:
    """``petcd._frontend.Frontend``, or ``NativeTransportUnavailable`` with what to do."""
    try:
        module = importlib.import_module("petcd._frontend")
    except ImportError as e:
        raise NativeTransportUnavailable(f"{NOT_BUILT_MESSAGE} ({e})") from None
    cls: Callable[..., FrontendLike] = module.Frontend
    return cls


class _HandlerCallDetails:
    """What an interceptor sees of a call (grpc.HandlerCallDetails)."""

    __slots__ = ("invocation_metadata", "method")

    def __init__(self, method: str, invocation_metadata: tuple[tuple[str, Any], ...]) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


class SubmitFuture(Protocol):
    """What a submit form returns: an ``asyncio.Future``, or an object with the same methods
    that runs its done callbacks at once (``petcd.server.answer.Answer``)."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def result(self) -> Any: ...

    def exception(self) -> BaseException | None: ...

    def cancel(self) -> bool: ...

    def add_done_callback(self, fn: Callable[[Any], object]) -> None: ...


class UnarySubmit(NamedTuple):
    """The callback form of a unary-unary method (``NativeServer.add_unary_submit``)."""

    submit: Callable[[Any], SubmitFuture]
    """The decoded request -> a future of the result; may raise."""
    respond: Callable[[Any], Any]
    """The future's result -> the response message; may raise."""
    fail: Callable[[Exception], tuple[grpc.StatusCode, str]]
    """An exception from ``submit``, ``respond`` or the future -> the status to send (the
    coroutine method's own answer, logging included)."""
    decode: Callable[[bytes], Any] | None = None
    """Optional: the request's bytes -> what ``submit_decoded`` takes, or None for bytes it
    leaves to the handler's deserializer and ``submit`` (so does an exception it raises)."""
    submit_decoded: Callable[[Any], SubmitFuture] | None = None
    """With ``decode``: ``submit`` for what ``decode`` returned."""


class _Resume(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine already stepped once by the dispatcher, handed to a Task to go on.

    ``first`` is what the coroutine yielded on that first step (the future it waits on, or
    None for a bare yield): handed to the Task first, then every send/throw goes to the
    coroutine, exactly as if the Task had driven it from the start. The Task drives this
    object itself (it is a ``collections.abc.Coroutine``), so a cancel that comes before the
    Task's first step (a CANCEL in the same batch as the request) is thrown into the handler
    too, where a wrapper coroutine would swallow it without ever starting.
    """

    __slots__ = ("coro", "first", "primed")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first
        self.primed = True

    def __await__(self) -> _Resume:
        return self

    def __iter__(self) -> _Resume:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if self.primed:
            self.primed = False
            return self.first
        return self.coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self.primed = False
        return self.coro.throw(*exc)

    def close(self) -> None:
        self.coro.close()


class _Call:
    """One RPC: its state in the adapter, and the ``context`` its handler gets."""

    __slots__ = (
        "_callbacks",
        "_deadline",
        "_server",
        "_trailing",
        "aborted",
        "blocked",
        "cancelled_by_client",
        "deserializer",
        "drain",
        "finished",
        "form",
        "future",
        "half_closed",
        "handler",
        "id",
        "inbox",
        "metadata",
        "method",
        "msgs_in",
        "msgs_out",
        "peer_text",
        "reader",
        "serializer",
        "status_code",
        "status_details",
        "task",
        "unary_pending",
        "unflushed",
    )

    def __init__(
        self,
        server: NativeServer,
        call_id: int,
        method: str,
        metadata: tuple[tuple[str, Any], ...],
        timeout: float | None,
        peer: str,
    ) -> None:
        self._server = server
        self.id = call_id
        self.method = method
        self.metadata = metadata
        self._deadline = None if timeout is None else time.time() + timeout
        self.peer_text = peer
        self.task: asyncio.Task[None] | None = None
        self.future: SubmitFuture | None = None  # what a submit form's call waits for
        self.form: UnarySubmit | None = None
        self.inbox: collections.deque[bytes] = collections.deque()
        self.half_closed = False
        self.reader: asyncio.Future[None] | None = None  # a read() waiting for a message
        self.unary_pending = False  # a unary-request handler waits for its message
        self.handler: Any = None
        self.deserializer: Callable[[bytes], Any] | None = None
        self.serializer: Callable[[Any], bytes] | None = None
        self.finished = False  # the status went out (or the call is over for the client)
        self.cancelled_by_client = False
        self.blocked = False  # the front end holds over 1 MiB for this call: wait for DRAINED
        self.drain: asyncio.Future[None] | None = None
        self.unflushed = 0  # bytes queued since the last flush
        self.aborted: BaseException | None = None
        self.status_code: grpc.StatusCode = _OK
        self.status_details = ""
        self._trailing: tuple[Any, ...] = ()
        self._callbacks: list[Callable[[Any], None]] | None = None
        # A stream's messages received and sent (go-grpc-prometheus' msg counters).
        self.msgs_in = 0
        self.msgs_out = 0

    # --- grpc.aio.ServicerContext ----------------------------------------------------------

    async def read(self) -> Any:
        if self.finished:
            raise UsageError("RPC already finished.")
        while not self.inbox:
            if self.half_closed:
                return EOF
            self.reader = self._server.loop.create_future()
            try:
                await self.reader
            finally:
                self.reader = None
            if self.finished:
                raise UsageError("RPC already finished.")
        raw = self.inbox.popleft()
        d = self.deserializer
        message = raw if d is None else d(raw)
        self.msgs_in += 1
        return message

    def write(self, message: Any) -> Awaitable[None]:
        """Queue ``message``; the awaitable waits only when the call is congested (DRAINED
        not yet seen) or has queued over ``_UNFLUSHED_BYTES_MAX`` in this loop iteration.

        Not a coroutine function: a write that need not wait (nearly all of them) is done at
        once and hands back an already finished future (awaiting one costs less than
        creating and running a coroutine).
        """
        if self.finished or self.blocked:
            return self._write_later(message)
        self._put(message)
        if self.unflushed > _UNFLUSHED_BYTES_MAX:
            return self._server.flushed()
        return self._server.done

    async def _write_later(self, message: Any) -> None:
        if self.finished:
            raise UsageError("RPC already finished.")
        while self.blocked:
            if self.drain is None:
                self.drain = self._server.loop.create_future()
            await self.drain
            if self.finished:
                raise UsageError("RPC already finished.")
        self._put(message)
        if self.unflushed > _UNFLUSHED_BYTES_MAX:
            await self._server.flushed()

    def _put(self, message: Any) -> None:
        s = self.serializer
        data: bytes = message if s is None else s(message)
        server = self._server
        server.queue((self.id, data))
        self.msgs_out += 1
        if not self.unflushed:
            server.unflushed_calls.append(self)
        self.unflushed += len(data)

    async def send_initial_metadata(self, metadata: Any) -> None:
        # The front end sends the response headers itself before the first message; petcd
        # sends no custom initial metadata.
        if self.finished:
            raise UsageError("RPC already finished.")

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: tuple[Any, ...] = ()
    ) -> None:
        if self.aborted is not None:
            raise UsageError("Abort already called!")
        self.aborted = AbortError("Locally aborted.")
        if details == "" and self.status_details:
            details = self.status_details
        else:
            self.status_details = details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        self.status_code = code
        self._server.finish(self, None, _CODE_NUMBER[code], details)
        raise self.aborted

    async def abort_with_status(self, status: Any) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_trailing_metadata(self, metadata: Any) -> None:
        # Accepted and kept (trailing_metadata()); the front end sends only grpc-status and
        # grpc-message, and nothing in petcd sets trailing metadata.
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailing

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status_code = code

    def code(self) -> grpc.StatusCode | None:
        return None if self.status_code is _OK else self.status_code

    def set_details(self, details: str) -> None:
        self.status_details = details

    def details(self) -> str:
        return self.status_details

    def set_compression(self, compression: Any) -> None:
        pass  # responses are sent uncompressed

    def disable_next_message_compression(self) -> None:
        pass

    def peer(self) -> str:
        return self.peer_text

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, Any]:
        return {}

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(self._deadline - time.time(), 0.0)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def done(self) -> bool:
        return self.finished

    def cancelled(self) -> bool:
        return self.cancelled_by_client

    # --- adapter internals ------------------------------------------------------------------

    def run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        for cb in callbacks or ():
            try:
                cb(self)
            except Exception as e:
                self._server.log_error("error in a done callback", self.method, e)

    def fail(self, e: Exception) -> None:
        """grpc.aio's answer to an exception escaping the handler."""
        self._server.log_error("unexpected exception in gRPC handler", self.method, e)
        if self.finished:
            return
        code = _UNKNOWN if self.status_code is _OK else _CODE_NUMBER[self.status_code]
        self._server.finish(self, None, code, f"Unexpected {type(e)}: {e}")

    def submitted(self, fut: SubmitFuture) -> None:
        """The done callback of a submit form's future: answer as the coroutine method
        would, then the call is over. Nothing is sent if the call already ended."""
        self.future = None
        if self.finished:  # cancelled by the client, or the server is stopping
            return
        server = self._server
        if fut.cancelled():
            self.end_cancelled()
        else:
            exc = fut.exception()
            if exc is None:
                assert self.form is not None
                try:
                    response = self.form.respond(fut.result())
                except Exception as e:
                    self.submit_failed(e)
                else:
                    s = self.serializer
                    try:
                        data = response if s is None else s(response)
                    except Exception as e:
                        self.fail(e)
                    else:
                        server.finish(self, data, 0, "")
            else:
                self.submit_failed(exc)
        server._end(self)

    def submit_failed(self, exc: BaseException) -> None:
        """A submit form's failure: the status its ``fail`` names (as ``abort`` sends it)."""
        if not isinstance(exc, Exception):
            raise exc
        assert self.form is not None
        try:
            code, details = self.form.fail(exc)
        except Exception as e:
            self.fail(e)
            return
        self.status_code = code
        self.status_details = details
        self._server.finish(self, None, _CODE_NUMBER[code], details)

    def end_cancelled(self) -> None:
        """The handler ended with CancelledError: nothing more is sent unless the client is
        still there (something else cancelled the handler), then it learns the call ended."""
        if not self.finished:
            self._server.finish(self, None, _CANCELLED, "")


class NativeServer:
    """A ``grpc.aio.Server`` look-alike serving on ``petcd._frontend.Frontend``.

    ``listeners``: (host, port) pairs or Unix socket paths (to be created: no file of that
    name may exist), all bound at construction (``OSError`` if one cannot be).
    ``frontend_class`` replaces ``petcd._frontend.Frontend`` (tests).
    """

    def __init__(
        self,
        listeners: Sequence[tuple[str, int] | str],
        *,
        max_recv_bytes: int,
        max_send_bytes: int,
        interceptors: Iterable[Any] = (),
        keepalive_min_time_ms: int,
        keepalive_interval_ms: int,
        keepalive_timeout_ms: int,
        threads: int = 1,
        log: Logger | None = None,
        frontend_class: Callable[..., FrontendLike] | None = None,
        eager: bool = True,
        http1: Callable[..., None] | None = None,
        submit: bool = True,
        tls: tuple[Any, ...] | None = None,
        secure: Sequence[bool] | None = None,
        plain_too: Sequence[bool] | None = None,
        registry: Any = None,
    ) -> None:
        cls = load_frontend_class() if frontend_class is None else frontend_class
        # ``http1``: takes the connections on the listeners that are not HTTP/2 (etcd serves
        # HTTP/1 on its gRPC port); without it they fail the HTTP/2 handshake. Called as
        # ``http1(sock)``, or ``http1(sock, certs)`` behind TLS (the DER certificates the
        # client presented, leaf first; empty when it presented none).
        extra: dict[str, Any] = {} if http1 is None else {"http1": True}
        # ``tls``: the front end's ``tls=`` (``petcd.server.tls.ClientTLS.frontend_args``),
        # used on the listeners ``secure`` marks; those ``plain_too`` marks serve plain
        # connections too (``petcd.grpc.services.merge_schemes``).
        if tls is not None:
            extra["tls"] = tls
            extra["secure"] = list(secure or [True] * len(listeners))
            if plain_too is not None and any(plain_too):
                extra["plain_too"] = list(plain_too)
        self._fe: FrontendLike = cls(
            [a if isinstance(a, str) else (a[0], a[1]) for a in listeners],
            max_recv_bytes=max_recv_bytes,
            max_send_bytes=max_send_bytes,
            keepalive_min_time_ms=keepalive_min_time_ms,
            keepalive_interval_ms=keepalive_interval_ms,
            keepalive_timeout_ms=keepalive_timeout_ms,
            threads=threads,
            **extra,
        )
        self._http1 = http1
        self._interceptors = tuple(interceptors)
        self._first_interceptor = self._interceptors[0] if self._interceptors else None
        self._continuation = self._chain()
        # A lone interceptor with ``check(handler, method, metadata)`` (RequestGuard: what its
        # intercept_service does after the look-up) is called directly: no coroutines.
        self._check: Callable[[Any, str, Any], Any] | None = (
            getattr(self._first_interceptor, "check", None)
            if len(self._interceptors) == 1
            else None
        )
        self._eager = eager  # step unary-unary handlers before giving them a task
        self._eager_credit: dict[str, int] = {}  # method path -> recent answers without wait
        self._eager_probe = 0
        self._log = log
        self._generic: list[Any] = []
        self._registered: dict[str, Any] = {}
        self._services: set[str] = set()  # names of the services with a handler
        self._resolved: dict[str, Any] = {}  # method path -> handler, for paths that resolve
        self._submit = submit  # use the submit forms offered (add_unary_submit)
        self._submit_forms: dict[Any, UnarySubmit] = {}  # unary_unary behavior -> its form
        self._now_forms: dict[Any, Callable[[Any], Any]] = {}  # behavior -> add_unary_now's
        self._calls: dict[int, _Call] = {}
        # go-grpc-prometheus' counters, which etcd exports: calls started per method path,
        # and handled per (method path, status code number); the messages of the streams
        # that ended, per method path ([received, sent]; open streams count their own).
        # Rendered by _GrpcMetrics.
        self.rpc_started: dict[str, int] = {}
        self.rpc_handled: dict[tuple[str, int], int] = {}
        self.stream_msgs: dict[str, list[int]] = {}
        if registry is not None:
            registry.register(_GrpcMetrics(self))
        self._out: list[tuple[Any, ...]] = []
        self._flush_scheduled = False
        self._flush_waiter: asyncio.Future[None] | None = None
        self.unflushed_calls: list[_Call] = []  # calls with unflushed > 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._started = False
        self._stopped = False
        self._closed = False  # the front end is closed: nothing more is sent
        self._all_ended: asyncio.Future[None] | None = None  # stop() waits: no call open

    # --- grpc.aio.Server surface ------------------------------------------------------------

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        for h in handlers:
            self._generic.append(h)
            name = getattr(h, "service_name", None)
            if callable(name):
                self._services.add(name())
        self._resolved.clear()

    def add_registered_method_handlers(self, service_name: str, handlers: dict[str, Any]) -> None:
        if self._started:
            return  # grpc.aio: not once the server has started
        for method, handler in handlers.items():
            self._registered[f"/{service_name}/{method}"] = handler
        self._services.add(service_name)
        self._resolved.clear()

    def add_unary_submit(self, behavior: Callable[..., Any], form: UnarySubmit) -> None:
        """Serve the unary-unary calls whose handler behaviour is ``behavior`` (the bound
        servicer method, as registered) through ``form``, with no coroutine and no task:
        the decoded request goes to ``form.submit``, and the future's done callback sends
        ``form.respond``'s message or ``form.fail``'s status. A handler an interceptor
        replaced (a refusal) is not ``behavior`` and runs as usual. A CANCEL cancels the
        future. (Not part of grpc.aio: callers check for it.)"""
        if self._submit:
            self._submit_forms[behavior] = form

    def add_unary_now(self, behavior: Callable[..., Any], now: Callable[[Any], Any]) -> None:
        """Answer the unary-unary calls whose handler behaviour is ``behavior`` with
        ``now(request)`` when it has the response at hand: then no coroutine runs. ``now``
        returns None when it has not (the request needs a wait, or anything out of the
        ordinary): the handler then runs as usual, and so it does if ``now`` raises (the
        handler meets the same error and answers it as it would have). A handler an
        interceptor replaced is not ``behavior`` and runs as usual. Offered with the submit
        forms (``submit``). (Not part of grpc.aio: callers check for it.)"""
        if self._submit:
            self._now_forms[behavior] = now

    def ports(self) -> list[int]:
        return list(self._fe.ports())

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "NativeServer used before start()"
        return self._loop

    async def start(self) -> None:
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self.done = self._loop.create_future()  # finished once, awaited by every quick write
        self.done.set_result(None)
        self._fe.start()
        self._fd = self._fe.fileno()
        self._loop.add_reader(self._fd, self._on_readable)
        self._started = True
        self._on_readable()  # anything queued before the reader was registered

    async def stop(self, grace: float | None) -> None:
        """Stop accepting; let open calls finish for ``grace`` seconds (None: none), then
        cancel their handlers and close every connection."""
        if self._stopped:
            return
        self._stopped = True
        self._fe.stop_accepting()
        if not self._started:
            self._closed = True
            self._fe.close()
            return
        if grace is not None and self._calls:
            # GOAWAY: clients take their new calls to another member (grpc-go's GracefulStop,
            # which etcd's stop uses); the calls in progress get the grace period.
            self._fe.drain()
            self._all_ended = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_ended, grace)
        tasks = [c.task for c in self._calls.values() if c.task is not None]
        for call in list(self._calls.values()):
            call.finished = True
            if call.task is None:
                if call.future is not None:
                    call.future.cancel()
                self._end(call)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._flush()
        self.loop.remove_reader(self._fd)
        self._closed = True
        self._fe.close()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        while not self._stopped:
            await asyncio.sleep(0.1 if timeout is None else min(timeout, 0.1))
        return False

    # --- sending ----------------------------------------------------------------------------

    def queue(self, item: tuple[Any, ...]) -> None:
        self._out.append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def finish(self, call: _Call, message: bytes | None, code: int, details: str) -> None:
        """Queue the call's status (after ``message`` if given); the call is over."""
        if call.finished:
            return
        call.finished = True
        handled, key = self.rpc_handled, (call.method, code)
        handled[key] = handled.get(key, 0) + 1
        self.queue((call.id, message, code, details))

    def flushed(self) -> asyncio.Future[None]:
        """A future done after the next flush."""
        if self._flush_waiter is None:
            self._flush_waiter = self.loop.create_future()
        return self._flush_waiter

    def flush_answers(self) -> None:
        """Send what is queued now, not a loop turn later: the member's answers listener
        (``Member.add_answers_listener``), called once a batch's answers are all queued."""
        if self._out:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        items, self._out = self._out, []
        if self.unflushed_calls:
            for call in self.unflushed_calls:
                call.unflushed = 0
            self.unflushed_calls = []
        waiter, self._flush_waiter = self._flush_waiter, None
        if items and not self._closed:
            for call_id in self._fe.send(items):
                blocked = self._calls.get(call_id)
                if blocked is not None:
                    blocked.blocked = True
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- receiving --------------------------------------------------------------------------

    def _on_readable(self) -> None:
        calls = self._calls
        for ev in self._fe.take():
            kind = ev[0]
            if kind == _MESSAGE:
                call = calls.get(ev[1])
                if call is None or call.finished:
                    continue
                if call.unary_pending:
                    call.unary_pending = False
                    self._start_unary(call, ev[2])
                else:
                    call.inbox.append(ev[2])
                    if call.reader is not None and not call.reader.done():
                        call.reader.set_result(None)
            elif kind == _NEW:
                self._new_call(ev[1], ev[2], ev[3], ev[4], ev[5])
            elif kind == _HALF_CLOSE:
                call = calls.get(ev[1])
                if call is None or call.finished:
                    continue
                call.half_closed = True
                if call.unary_pending:
                    call.unary_pending = False
                    self._no_request(call)
                elif call.reader is not None and not call.reader.done():
                    call.reader.set_result(None)
            elif kind == _CANCEL:
                call = calls.get(ev[1])
                if call is None:
                    continue
                self._cancel(call)
            elif kind == _DRAINED:
                call = calls.get(ev[1])
                if call is None:
                    continue
                call.blocked = False
                if call.drain is not None:
                    if not call.drain.done():
                        call.drain.set_result(None)
                    call.drain = None
            elif kind == _HTTP1:
                self._accept_http1(ev[1], ev[2], ev[3] if len(ev) > 3 else None)

    def _accept_http1(self, fd: int, peer: str, certs: tuple[bytes, ...] | None) -> None:
        sock = socket.socket(fileno=fd)
        if self._http1 is None or self._stopped:
            sock.close()
            return
        try:
            if certs is not None:
                self._http1(sock, certs)
            else:
                self._http1(sock)
        except Exception as e:
            sock.close()
            if self._log is not None:
                self._log.error("cannot serve an HTTP/1 connection", peer=peer, error=repr(e))

    def _cancel(self, call: _Call) -> None:
        if not call.finished:  # the handler ends with the client's cancellation
            handled, key = self.rpc_handled, (call.method, _CANCELLED)
            handled[key] = handled.get(key, 0) + 1
        call.cancelled_by_client = True
        call.finished = True
        call.unary_pending = False
        if call.task is not None:
            # The handler's task ends it (and runs its done callbacks); forget the call now
            # in case the task is cancelled before it ever ran (its coroutine never starts).
            call.task.cancel()
            self._forget(call)
        else:
            if call.future is not None:  # a submit form's call: abandon the request
                call.future.cancel()
            self._end(call)

    def _forget(self, call: _Call) -> None:
        if self._calls.pop(call.id, None) is not None and (call.msgs_in or call.msgs_out):
            counts = self.stream_msgs.setdefault(call.method, [0, 0])
            counts[0] += call.msgs_in
            counts[1] += call.msgs_out
        if not self._calls and self._all_ended is not None and not self._all_ended.done():
            self._all_ended.set_result(None)

    def _new_call(
        self,
        call_id: int,
        method: str,
        metadata: tuple[tuple[str, Any], ...],
        timeout: float | None,
        peer: str,
    ) -> None:
        call = _Call(self, call_id, method, metadata, timeout, peer)
        self._calls[call_id] = call
        started = self.rpc_started
        started[method] = started.get(method, 0) + 1
        if self._first_interceptor is None:
            self._handler_found(call, self._resolve(method))
            return
        check = self._check
        if check is not None:
            try:
                handler = check(self._resolve(method), method, metadata)
            except Exception as e:
                call.fail(e)
                self._end(call)
                return
            self._handler_found(call, handler)
            return
        details = _HandlerCallDetails(method, metadata)
        coro = self._first_interceptor.intercept_service(self._continuation, details)
        try:
            first = coro.send(None)
        except StopIteration as done:
            self._handler_found(call, done.value)
            return
        except Exception as e:
            call.fail(e)
            self._end(call)
            return
        # An interceptor that awaits something real: finish the look-up in a task.
        call.task = self.loop.create_task(self._intercept_later(call, _Resume(coro, first)))

    async def _intercept_later(self, call: _Call, step: _Resume) -> None:
        try:
            handler = await step
        except asyncio.CancelledError:
            call.end_cancelled()
            self._end(call)
            return
        except Exception as e:
            call.fail(e)
            self._end(call)
            return
        call.task = None
        self._handler_found(call, handler)

    def _chain(self) -> Callable[[Any], Awaitable[Any]]:
        """The continuation the first interceptor gets: the next interceptors, then the
        handler look-up (grpc.aio builds the same chain per call)."""

        async def resolve(details: Any) -> Any:
            return self._resolve(details.method)

        def link(interceptor: Any, after: Callable[[Any], Awaitable[Any]]) -> Any:
            async def continuation(details: Any) -> Any:
                return await interceptor.intercept_service(after, details)

            return continuation

        chain: Callable[[Any], Awaitable[Any]] = resolve
        for interceptor in reversed(self._interceptors[1:]):
            chain = link(interceptor, chain)
        return chain

    def _resolve(self, method: str) -> Any:
        handler = self._resolved.get(method)
        if handler is not None:
            return handler
        handler = self._registered.get(method)
        if handler is None:
            details = _HandlerCallDetails(method, ())
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    break
        if handler is not None and len(self._resolved) < 4096:
            self._resolved[method] = handler
        return handler

    def _unknown(self, method: str) -> str:
        """grpc-go's text for a method path nothing serves."""
        path = method[1:] if method.startswith("/") else method
        service, sep, name = path.rpartition("/")
        if not sep:
            return f'malformed method name: "{method}"'
        if service in self._services:
            return f"unknown method {name} for service {service}"
        return f"unknown service {service}"

    def _handler_found(self, call: _Call, handler: Any) -> None:
        if call.finished:  # cancelled while an interceptor was awaited
            self._end(call)
            return
        if handler is None:
            self.finish(call, None, _UNIMPLEMENTED, self._unknown(call.method))
            self._end(call)
            return
        call.handler = handler
        call.deserializer = handler.request_deserializer
        call.serializer = handler.response_serializer
        if handler.request_streaming:
            call.task = self.loop.create_task(self._run(call, _Requests(call)))
        elif call.inbox:  # the message arrived while an interceptor was awaited
            self._start_unary(call, call.inbox.popleft())
        elif call.half_closed:
            self._no_request(call)
        else:
            call.unary_pending = True

    def _no_request(self, call: _Call) -> None:
        self.finish(call, None, _INTERNAL, _NO_REQUEST)
        self._end(call)

    def _start_unary(self, call: _Call, payload: bytes) -> None:
        handler = call.handler
        form = self._submit_forms.get(handler.unary_unary)
        if form is not None and form.decode is not None and form.submit_decoded is not None:
            try:
                decoded = form.decode(payload)
            except Exception:
                decoded = None  # the deserializer below meets it too, and answers it
            if decoded is not None:
                self._submit_request(call, form, form.submit_decoded, decoded)
                return
        d = call.deserializer
        try:
            request = payload if d is None else d(payload)
        except Exception as e:  # grpc.aio: the handler's exception path (UNKNOWN)
            call.fail(e)
            self._end(call)
            return
        if handler.response_streaming:
            call.msgs_in = 1  # a server stream's one request
            call.task = self.loop.create_task(self._run(call, request))
            return
        behavior = handler.unary_unary
        now = self._now_forms.get(behavior)
        if now is not None:
            try:
                result = now(request)
                s = call.serializer
                data = result if result is None or s is None else s(result)
            except Exception:
                data = None  # the handler below meets it too, and answers it
            if data is not None:
                self.finish(call, data, 0, "")
                self._end(call)
                return
        if form is not None:
            self._submit_request(call, form, form.submit, request)
            return
        coro = self._run_unary(call, behavior, request)
        credit = self._eager_credit.get(call.method, _EAGER_CREDIT_START)
        self._eager_probe += 1
        if not self._eager or (credit == 0 and self._eager_probe % _EAGER_PROBE_EVERY):
            call.task = self.loop.create_task(coro)
            return
        try:
            first = coro.send(None)
        except StopIteration:  # answered without waiting: no task at all
            if credit < _EAGER_CREDIT_MAX:
                self._eager_credit[call.method] = credit + 1
            return
        if credit > 0:
            self._eager_credit[call.method] = credit - 1
        call.task = self.loop.create_task(_Resume(coro, first))

    def _submit_request(
        self,
        call: _Call,
        form: UnarySubmit,
        submit: Callable[[Any], SubmitFuture],
        request: Any,
    ) -> None:
        call.form = form
        try:
            fut = submit(request)
        except Exception as e:
            call.submit_failed(e)
            self._end(call)
            return
        call.future = fut
        fut.add_done_callback(call.submitted)

    def _end(self, call: _Call) -> None:
        """The call's handler is over: forget the call, run its done callbacks."""
        call.finished = True
        call.task = None
        self._forget(call)
        call.run_callbacks()

    async def _run_unary(self, call: _Call, behavior: Any, request: Any) -> None:
        try:
            try:
                result = behavior(request, call)
                if type(result) is types.CoroutineType or inspect.isawaitable(result):
                    result = await result
            except AbortError:
                return
            if call.aborted is not None:
                self.log_error("abort error suppressed by the handler", call.method, None)
                return
            if call.finished:
                return
            code = call.status_code
            if code is _OK:
                s = call.serializer
                self.finish(call, result if s is None else s(result), 0, call.status_details)
            else:
                self.finish(call, None, _CODE_NUMBER[code], call.status_details)
        except asyncio.CancelledError:
            call.end_cancelled()
        except Exception as e:
            call.fail(e)
        finally:
            self._end(call)

    async def _run(self, call: _Call, request: Any) -> None:
        """A streaming call (or a unary-request one with a streamed response)."""
        handler = call.handler
        agen: Any = None
        try:
            try:
                if handler.request_streaming:
                    behavior = (
                        handler.stream_stream
                        if handler.response_streaming
                        else handler.stream_unary
                    )
                else:
                    behavior = handler.unary_stream
                result = behavior(request, call)
                if inspect.isawaitable(result):
                    result = await result
                elif handler.response_streaming and hasattr(result, "__anext__"):
                    agen = result
                    async for message in agen:
                        await call.write(message)
                elif handler.response_streaming and result is not None:
                    for message in result:  # a synchronous generator handler
                        await call.write(message)
            except AbortError:
                return
            finally:
                if agen is not None:
                    await agen.aclose()
            if call.aborted is not None:
                self.log_error("abort error suppressed by the handler", call.method, None)
                return
            if call.finished:
                return
            code = call.status_code
            if handler.response_streaming or code is not _OK:
                self.finish(call, None, _CODE_NUMBER[code], call.status_details)
            else:
                s = call.serializer
                self.finish(call, result if s is None else s(result), 0, call.status_details)
        except asyncio.CancelledError:
            call.end_cancelled()
        except Exception as e:
            call.fail(e)
        finally:
            self._end(call)

    def log_error(self, msg: str, method: str, e: BaseException | None) -> None:
        if self._log is not None:
            self._log.error(msg, method=method, error=repr(e))


class _Requests:
    """The request iterator of a streaming call: messages until the client half-closes."""

    __slots__ = ("_call",)

    def __init__(self, call: _Call) -> None:
        self._call = call

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        message = await self._call.read()
        if message is EOF:
            raise StopAsyncIteration
        return message


# Go's names of the status codes (grpc_code labels) and etcd's streaming methods (grpc_type).
_GO_CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip
_STREAM_TYPES = {
    "/etcdserverpb.Watch/Watch": "bidi_stream",
    "/etcdserverpb.Lease/LeaseKeepAlive": "bidi_stream",
    "/etcdserverpb.Maintenance/Snapshot": "server_stream",
    "/v3electionpb.Election/Observe": "server_stream",
}


class _GrpcMetrics:
    """etcd's gRPC metrics (go-grpc-prometheus): ``grpc_server_started_total``,
    ``grpc_server_handled_total``, ``grpc_server_msg_received_total`` and
    ``grpc_server_msg_sent_total``, rendered from ``NativeServer``'s counts at each scrape.

    A unary call receives its one request when it starts and sends one response when it ends
    with OK, so its message counts are the started and OK-handled counts (nothing is counted
    per unary call for them); a stream's are counted per message (``_Call.msgs_in`` and
    ``msgs_out``), those of the streams still open added at the scrape."""

    def __init__(self, server: NativeServer) -> None:
        self._server = server

    @staticmethod
    def _labels(path: str) -> tuple[str, str, str]:
        service, _, method = path.lstrip("/").partition("/")
        return method, service, _STREAM_TYPES.get(path, "unary")

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        started = CounterMetricFamily(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            labels=["grpc_method", "grpc_service", "grpc_type"],
        )
        for path, n in sorted(self._server.rpc_started.items()):
            started.add_metric(self._labels(path), n)
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=["grpc_code", "grpc_method", "grpc_service", "grpc_type"],
        )
        for (path, code), n in sorted(self._server.rpc_handled.items()):
            name = _GO_CODE_NAMES[code] if 0 <= code < len(_GO_CODE_NAMES) else str(code)
            handled.add_metric((name, *self._labels(path)), n)
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=["grpc_method", "grpc_service", "grpc_type"],
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=["grpc_method", "grpc_service", "grpc_type"],
        )
        for path, (n_in, n_out) in sorted(self._message_counts().items()):
            labels = self._labels(path)
            received.add_metric(labels, n_in)
            sent.add_metric(labels, n_out)
        yield started
        yield handled
        yield received
        yield sent

    def _message_counts(self) -> dict[str, tuple[int, int]]:
        server = self._server
        counts: dict[str, list[int]] = {}
        for path, n in server.rpc_started.items():
            if path not in _STREAM_TYPES:
                counts[path] = [n, server.rpc_handled.get((path, 0), 0)]
        for path, (n_in, n_out) in server.stream_msgs.items():
            counts[path] = [n_in, n_out]
        for call in list(server._calls.values()):
            if call.msgs_in or call.msgs_out:
                c = counts.setdefault(call.method, [0, 0])
                c[0] += call.msgs_in
                c[1] += call.msgs_out
        return {path: (c[0], c[1]) for path, c in counts.items()}
