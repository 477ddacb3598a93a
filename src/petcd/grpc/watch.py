"""etcd's Watch service: one bidirectional stream carries many watchers (grpc.aio).

Theory of operation
-------------------
Per stream, a reader task handles the client's requests and the handler (an async generator
registered by ``add_watch_service``; ``Watch`` adapts it to ``context.write``) yields the
responses, as etcd's ``serverWatchStream`` (recvLoop / sendLoop):

- ``create_request``: a watcher is registered with the member (``Member.watch``) and a
  ``created`` response is queued before any of its events. Watch ids are per stream: 0, 1, 2,
  ... unless the client picks one (``watch_id`` != 0); a duplicate is answered with
  ``created`` + ``canceled`` and etcd's reason.
- ``cancel_request``: the watcher is removed; a ``canceled`` response is sent (nothing for an
  unknown id, as etcd).
- ``progress_request``: a response with ``watch_id`` -1 and the current revision, sent once
  every watcher of the stream is synced (so the revision never runs ahead of delivered
  events, etcd >= 3.5.13).
- ``progress_notify`` watchers: every ``--experimental-watch-progress-notify-interval`` each of
  them that is synced and got no events since the last tick is sent an empty response with
  the current revision (etcd's periodic progress notification).

Events reach the stream through ``_StreamSink``, the non-blocking sink the watchable store
writes to from the event loop: bounded (a slow client makes its watchers "victims" that the
member retries), with control responses queued in order with events. A watcher whose start
revision was compacted gets etcd's ``canceled`` response with ``compact_revision`` (no reason
text: clients derive "required revision has been compacted" from it) and is dropped. Each time
the writer wakes it takes everything queued and merges the event responses of each watcher
into one (``coalesce``), never across a control response; event responses are serialized once
per event for all watchers when the service is registered by ``add_watch_service``. The store
hands the stream one ``Fanout`` (the same events at one revision for several of its watchers)
instead of one response per watcher: its header and events are encoded once, and each
watcher's message differs only in its ``watch_id`` field. The
client half-closing its side does not end the stream (etcd keeps sending); the stream ends
when the client cancels it or the server stops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.auth.errors import AuthError
from petcd.grpc import convert
from petcd.grpc.interceptors import CALL_CREDENTIALS, late_credentials
from petcd.grpc.status import is_expected, status_for
from petcd.mvcc.requests import Event, ResponseHeader, WatchResponse
from petcd.mvcc.watchable_store import Watcher, WatchSink
from petcd.server.authz import AuthGate
from petcd.server.log import Logger

SINK_CAPACITY = 128  # etcd's chanBufLen
COALESCE_BYTES_MAX = 1 << 20  # below every client's default 4 MiB receive limit
# etcd's default --max-request-bytes plus grpcOverheadBytes: the size from which the response of
# a watcher created with ``fragment`` is split (make_server passes the member's own value).
FRAGMENT_BYTES_DEFAULT = 1572864 + 512 * 1024
ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"


class WatchMember(Protocol):
    gate: AuthGate

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
    ) -> Watcher: ...

    def cancel_watch(self, w: Watcher) -> bool: ...

    def watch_header(self, revision: int = 0) -> ResponseHeader: ...

    def watchers_synced(self, watchers: list[Watcher]) -> bool: ...

    def wake_watch_sync(self) -> None: ...

    @property
    def watch_progress_interval_s(self) -> float: ...

    @property
    def auth_enabled(self) -> bool: ...

    def add_watch_sync_listener(self, cb: Any) -> None: ...

    def remove_watch_sync_listener(self, cb: Any) -> None: ...


class _StreamSink:
    """The store's non-blocking sink for one stream, plus control responses in order."""

    def __init__(self, capacity: int = SINK_CAPACITY) -> None:
        self.capacity = capacity
        self.items: collections.deque[WatchResponse | Any] = collections.deque()
        self.events = 0
        self.refused = False
        self.wake = asyncio.Event()

    def send(self, response: WatchResponse) -> bool:
        if self.events >= self.capacity:
            self.refused = True
            return False
        self.items.append(response)
        self.events += 1
        self.wake.set()
        return True

    def send_fanout(
        self, watchers: Sequence[Watcher], events: tuple[Event, ...], revision: int
    ) -> int:
        room = self.capacity - self.events
        if len(watchers) > room:
            self.refused = True
            if room <= 0:
                return 0
            watchers = watchers[:room]
        self.items.append(Fanout(watchers, events, revision))
        self.events += len(watchers)
        self.wake.set()
        return len(watchers)

    def control(self, message: Any) -> None:
        self.items.append(message)
        self.wake.set()


class Fanout:
    """One delivery of the same events at one revision to several watchers of a stream: what
    ``WatchResponse(w.watch_id, events, revision)`` for each of ``watchers``, in order, is."""

    __slots__ = ("events", "revision", "watchers")

    def __init__(
        self, watchers: Sequence[Watcher], events: tuple[Event, ...], revision: int
    ) -> None:
        self.watchers = watchers
        self.events = events
        self.revision = revision

    def responses(self) -> list[WatchResponse]:
        return [WatchResponse(w.watch_id, self.events, self.revision) for w in self.watchers]


def _events_bytes(events: tuple[Event, ...]) -> int:
    n = 0
    for ev in events:
        n += len(ev.kv.key) + len(ev.kv.value) + 32
        if ev.prev_kv is not None:
            n += len(ev.prev_kv.key) + len(ev.prev_kv.value) + 32
    return n


def coalesce(items: list[Any]) -> list[Any]:
    """Merge the queued event responses of each watcher into one response per watcher.

    One gRPC message costs far more than encoding it (about half of the Watch stream's CPU
    is ``context.write``), so when a stream falls behind, the responses waiting for one
    watcher are sent as one: its events in order, with the last response's revision, as
    etcd sends a catching-up watcher several revisions at once. A merge never crosses a
    control response (created, canceled, progress) nor a compaction cancel, so nothing moves
    past a progress notification, and a merged response stays under ``COALESCE_BYTES_MAX``.

    ``Fanout`` items stand for one response per watcher; a run of them for the same watchers
    (the common case: every write reaches the same watchers) is merged as a whole and stays
    one ``Fanout``; anything else is merged watcher by watcher.
    """
    out: list[Any] = []
    segment: list[Any] = []
    for item in items:
        if type(item) is Fanout or (isinstance(item, WatchResponse) and not item.compact_revision):
            segment.append(item)
            continue
        if segment:
            _coalesce_segment(segment, out)
            segment = []
        out.append(item)
    if segment:
        _coalesce_segment(segment, out)
    return out


def _coalesce_segment(items: list[Any], out: list[Any]) -> None:
    """``coalesce`` for event responses with no control response between them."""
    first = items[0]
    if len(items) == 1:
        out.append(first)
        return
    if type(first) is Fanout and all(
        type(item) is Fanout
        and (item.watchers is first.watchers or item.watchers == first.watchers)
        for item in items
    ):
        merged: Fanout = first
        size = _events_bytes(first.events)
        for item in items[1:]:
            more = _events_bytes(item.events)
            if size + more <= COALESCE_BYTES_MAX:
                merged = Fanout(first.watchers, merged.events + item.events, item.revision)
                size += more
            else:
                out.append(merged)
                merged, size = item, more
        out.append(merged)
        return
    open_at: dict[int, tuple[int, int]] = {}  # watch_id -> (index in out, estimated bytes)
    for item in items:
        for resp in item.responses() if type(item) is Fanout else (item,):
            size = _events_bytes(resp.events)
            at = open_at.get(resp.watch_id)
            if at is not None and at[1] + size <= COALESCE_BYTES_MAX:
                prev: WatchResponse = out[at[0]]
                out[at[0]] = WatchResponse(resp.watch_id, prev.events + resp.events, resp.revision)
                open_at[resp.watch_id] = (at[0], at[1] + size)
            else:
                open_at[resp.watch_id] = (len(out), size)
                out.append(resp)


class _Stream:
    def __init__(
        self,
        member: WatchMember,
        log: Logger | None,
        raw: bool = False,
        fragment_bytes_max: int = FRAGMENT_BYTES_DEFAULT,
    ) -> None:
        self.member = member
        self.log = log
        self.sink = _StreamSink()
        self.watchers: dict[int, Watcher] = {}
        self.next_id = 0
        self.progress_pending = False
        self.notify_ids: set[int] = set()  # watchers created with progress_notify
        self.quiet: set[int] = set()  # notify watchers with no events since the last tick
        self.raw = raw  # responses are written as bytes (add_watch_service)
        self.fragment_ids: set[int] = set()  # watchers created with fragment
        self.fragment_bytes_max = fragment_bytes_max
        # The watch ids of the last fan-out's watchers: the store hands the same watchers
        # object write after write while its group is unchanged.
        self._fanout_watchers: Sequence[Watcher] = ()
        self._fanout_ids: list[int] = []
        self._fanout_id_fields: list[bytes] = []
        member.add_watch_sync_listener(self.on_sync)

    def close(self) -> None:
        self.member.remove_watch_sync_listener(self.on_sync)
        for w in self.watchers.values():
            self.member.cancel_watch(w)
        self.watchers.clear()

    def on_sync(self) -> None:
        if self.progress_pending and self.member.watchers_synced(list(self.watchers.values())):
            self.progress_pending = False
            self._send_progress()

    def _send_progress(self) -> None:
        header = convert.header_pb(self.member.watch_header())
        self.sink.control(rpc_pb2.WatchResponse(header=header, watch_id=-1))

    def handle(self, req: Any) -> None:
        which = req.WhichOneof("request_union")
        if which == "create_request":
            self._create(req.create_request)
        elif which == "cancel_request":
            w = self.watchers.pop(req.cancel_request.watch_id, None)
            self.fragment_ids.discard(req.cancel_request.watch_id)
            if w is not None:
                self.member.cancel_watch(w)
                header = convert.header_pb(self.member.watch_header())
                self.sink.control(
                    rpc_pb2.WatchResponse(header=header, watch_id=w.watch_id, canceled=True)
                )
        elif which == "progress_request":
            if self.member.watchers_synced(list(self.watchers.values())):
                self._send_progress()
            else:
                self.progress_pending = True

    def refuse(self, reason: str) -> None:
        """A create request refused (by auth, for an empty range, for a watch id in use):
        etcd's canceled "created" response."""
        header = convert.header_pb(self.member.watch_header())
        self.sink.control(
            rpc_pb2.WatchResponse(
                header=header, watch_id=-1, created=True, canceled=True, cancel_reason=reason
            )
        )

    def _create(self, cr: Any) -> None:
        wid = cr.watch_id
        if cr.range_end not in (b"", b"\x00") and cr.key >= cr.range_end:
            # etcd checks the range before the id: nothing is registered, no id is taken.
            self.refuse(ERR_EMPTY_RANGE)
            return
        if wid == 0:
            while self.next_id in self.watchers:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        elif wid in self.watchers:
            self.refuse(ERR_DUPLICATE_ID)
            return
        header = convert.header_pb(self.member.watch_header())  # taken before registering
        w = self.member.watch(
            cr.key,
            cr.range_end,
            cr.start_revision,
            sink=self.sink,
            prev_kv=cr.prev_kv,
            filters=tuple(cr.filters),
            watch_id=wid,
        )
        self.watchers[wid] = w
        if cr.fragment:
            self.fragment_ids.add(wid)
        if cr.progress_notify:
            self.notify_ids.add(wid)
            self.quiet.add(wid)
        self.sink.control(rpc_pb2.WatchResponse(header=header, watch_id=wid, created=True))

    def progress_tick(self) -> None:
        """Periodic progress: an empty response for each quiet, synced notify watcher."""
        for wid in sorted(self.notify_ids):
            w = self.watchers.get(wid)
            if w is None:
                self.notify_ids.discard(wid)
                continue
            if wid in self.quiet and self.member.watchers_synced([w]):
                header = convert.header_pb(self.member.watch_header())
                self.sink.control(rpc_pb2.WatchResponse(header=header, watch_id=wid))
            self.quiet.add(wid)

    def fanout_to_proto(self, item: Fanout, headers: dict[int, ResponseHeader]) -> list[Any]:
        """``to_proto`` of each of the fan-out's responses, the shared part encoded once."""
        if self.fragment_ids:
            fragment_ids = self.fragment_ids
            if any(w.watch_id in fragment_ids for w in item.watchers):
                return [m for r in item.responses() for m in self.to_proto(r, headers)]
        if item.watchers is self._fanout_watchers:
            ids = self._fanout_ids
        else:
            ids = self._fanout_ids = [w.watch_id for w in item.watchers]
            self._fanout_id_fields = convert.watch_id_fields(ids)
            self._fanout_watchers = item.watchers
        if self.quiet:
            self.quiet.difference_update(ids)
        h = headers.get(item.revision)
        if h is None:
            h = headers[item.revision] = self.member.watch_header(item.revision)
        parts = convert.watch_fanout_bytes(h, ids, item.events, self._fanout_id_fields)
        return parts if self.raw else [rpc_pb2.WatchResponse.FromString(p) for p in parts]

    def to_proto(
        self, resp: WatchResponse, headers: dict[int, ResponseHeader] | None = None
    ) -> list[Any]:
        """The responses for a store delivery: serialized bytes if ``raw``, else messages.

        One response, or several if the watcher asked for ``fragment`` and the response
        reaches ``fragment_bytes_max`` (etcd's sendFragments). ``headers`` shares the member's
        header per revision between the responses encoded in one batch (all watchers of one
        write get the same header).
        """
        self.quiet.discard(resp.watch_id)
        if headers is None:
            h = self.member.watch_header(resp.revision)
        else:
            got = headers.get(resp.revision)
            if got is None:
                got = headers[resp.revision] = self.member.watch_header(resp.revision)
            h = got
        if resp.compact_revision:
            self.watchers.pop(resp.watch_id, None)
            header = convert.header_pb(h)
            header.revision = 0  # etcd's compaction response carries no revision
            self.fragment_ids.discard(resp.watch_id)
            msg = rpc_pb2.WatchResponse(
                header=header,
                watch_id=resp.watch_id,
                canceled=True,
                compact_revision=resp.compact_revision,
            )
            return [msg.SerializeToString() if self.raw else msg]
        if resp.watch_id in self.fragment_ids:
            parts = convert.watch_fragments_bytes(
                h, resp.watch_id, resp.events, self.fragment_bytes_max
            )
        else:
            parts = [convert.watch_events_bytes(h, resp.watch_id, resp.events)]
        return parts if self.raw else [rpc_pb2.WatchResponse.FromString(p) for p in parts]


class WatchService(rpc_pb2_grpc.WatchServicer):
    def __init__(
        self,
        member: WatchMember,
        log: Logger | None = None,
        *,
        fragment_bytes_max: int = FRAGMENT_BYTES_DEFAULT,
    ) -> None:
        self._member = member
        self._log = log
        self.raw = False  # set by add_watch_service: responses may be pre-serialized bytes
        # etcd: --max-request-bytes + grpcOverheadBytes; a ``fragment`` watcher's response
        # of this size or more (with two events or more) is split.
        self.fragment_bytes_max = fragment_bytes_max

    async def Watch(self, request_iterator: Any, context: Any) -> None:
        """The reader/writer form of the stream (the generated servicer's registration, and
        ``add_watch_service``'s on any server but grpc.aio's): ``context.write`` each response,
        one generator step per batch rather than per message."""
        write = context.write
        async with contextlib.aclosing(self.batches(request_iterator, context)) as out:
            async for batch in out:
                for item in batch:
                    await write(item)

    async def responses(self, request_iterator: Any, context: Any) -> AsyncGenerator[Any, None]:
        """The stream's responses, in order; grpc.aio writes what a generator handler yields
        with a little less work per message than ``context.write`` from a coroutine."""
        async with contextlib.aclosing(self.batches(request_iterator, context)) as out:
            async for batch in out:
                for item in batch:
                    yield item

    async def batches(self, request_iterator: Any, context: Any) -> AsyncGenerator[list[Any], None]:
        """The stream's responses, in order, as a list for each time the writer wakes."""
        stream = _Stream(self._member, self._log, self.raw, self.fragment_bytes_max)
        sink = stream.sink
        failure: list[BaseException] = []
        creds = CALL_CREDENTIALS.get()  # None: auth was off when the stream began
        member = self._member

        async def read() -> None:
            nonlocal creds
            try:
                async for req in request_iterator:
                    if req.WhichOneof("request_union") == "create_request":
                        if creds is None and member.auth_enabled:
                            creds = late_credentials(context)  # auth was turned on since
                        if creds is not None:
                            cr = req.create_request
                            try:
                                await member.gate.watch(creds, cr.key, cr.range_end)
                            except AuthError as e:
                                stream.refuse(go_status_text(e.grpc_code, e.message))
                                continue
                    stream.handle(req)
            except Exception as e:  # a member error while registering a watcher
                failure.append(e)
                sink.wake.set()

        async def notify() -> None:
            while True:
                await asyncio.sleep(self._member.watch_progress_interval_s)
                stream.progress_tick()

        reader = asyncio.create_task(read())
        notifier = asyncio.create_task(notify())
        try:
            while True:
                await sink.wake.wait()
                sink.wake.clear()
                if failure:
                    code, message = status_for(failure[0])
                    if not is_expected(failure[0]) and self._log is not None:
                        self._log.error("unexpected error in Watch", error=repr(failure[0]))
                    await context.abort(code, message)
                while sink.items:
                    batch = list(sink.items)
                    sink.items.clear()
                    sink.events = 0
                    headers: dict[int, ResponseHeader] = {}
                    out: list[Any] = []
                    for item in coalesce(batch):
                        if type(item) is Fanout:
                            out.extend(stream.fanout_to_proto(item, headers))
                        elif isinstance(item, WatchResponse):
                            out.extend(stream.to_proto(item, headers))
                        else:  # a control response (created, canceled, progress)
                            out.append(item.SerializeToString() if self.raw else item)
                    yield out
                if sink.refused:
                    sink.refused = False
                    self._member.wake_watch_sync()
        finally:
            for task in (reader, notifier):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            stream.close()


def go_status_text(code_name: str, message: str) -> str:
    """What a gRPC status error's ``Error()`` says in Go: etcd's watch server puts
    ``rpctypes.ErrGRPCPermissionDenied.Error()`` (and the like) in ``cancel_reason``, as
    ``rpc error: code = PermissionDenied desc = etcdserver: permission denied``."""
    go_code = "".join(word.capitalize() for word in code_name.split("_"))
    return f"rpc error: code = {go_code} desc = {message}"


def serialize_watch_response(message: Any) -> bytes:
    """Bytes pass through, messages are serialized: what a Watch stream writes, as bytes."""
    if isinstance(message, bytes):
        return message
    data: bytes = message.SerializeToString()
    return data


def add_watch_service(service: WatchService, server: Any) -> None:
    """Register ``service`` as etcdserverpb.Watch on ``server`` (grpc.aio's, or the native
    transport's, which takes grpc.aio's handlers: there the coroutine form ``Watch`` costs
    less per message than an async generator).

    Unlike the generated ``add_WatchServicer_to_server``, there is no response serializer:
    the service writes every response as bytes (``raw``), event responses encoded once per
    event for all watchers.
    """
    service.raw = True
    handlers = {
        "Watch": grpc.stream_stream_rpc_method_handler(
            service.responses if isinstance(server, grpc.aio.Server) else service.Watch,
            request_deserializer=rpc_pb2.WatchRequest.FromString,
            response_serializer=None,
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("etcdserverpb.Watch", handlers),)
    )
    server.add_registered_method_handlers("etcdserverpb.Watch", handlers)
