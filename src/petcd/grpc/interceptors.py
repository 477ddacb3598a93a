"""The per-request checks etcd's gRPC interceptors make before any handler runs.

Theory of operation
-------------------
``RequestGuard`` is a ``grpc.aio.ServerInterceptor``: for every RPC, before the handler
runs, it looks at two facts and leaves the handler untouched when neither applies (the fast
path, one metadata scan and two attribute reads per RPC):

- **Learners** (etcd's ``isRPCSupportedForLearner``). While this member is a learner of its
  cluster, it answers only ``Maintenance.Status`` and serializable ``KV.Range`` among the unary
  RPCs, and only ``Maintenance.Snapshot`` among the streams; everything else fails with
  ``UNAVAILABLE`` ``etcdserver: rpc not supported for learner``. The check is made when the
  call starts (a stream opened before a promotion stays refused; one opened before the member
  was added is not cut).
- **``hasleader`` metadata** (``clientv3.WithRequireLeader``: key ``hasleader``, value
  ``true``; Kubernetes puts it on every watch). A call carrying it on a member that knows no
  leader fails at once with ``UNAVAILABLE`` ``etcdserver: no leader``, unary or stream, even a
  serializable read. A stream that carries it and was accepted is watched by
  ``LeaderMonitor``: every election timeout the monitor samples the member's leader, and after
  three samples in a row without one (so between two and three election timeouts after the
  member noticed the loss, as etcd's ``monitorLeader``) it ends every such stream with the
  same status. Streams without the metadata are never ended for want of a leader.

One petcd addition: a learner also answers ``Maintenance.HashKV`` when the call carries the
``PEER_HASHKV`` metadata, which ``petcd.grpc.peer_hash`` sets when a member fetches its peers'
hashes for the corruption checks (etcd fetches them over its peer HTTP listener, which the gRPC
interceptors never see, so its learners are compared too).

Every call that passes the learner check is counted in ``etcd_server_client_requests_total``
(labels ``type``: ``unary`` or ``stream``, and ``client_api_version`` from the
``client-api-version`` metadata that clientv3 sends, else ``unknown``), as etcd counts it:
calls refused for want of a leader are counted, calls refused on a learner are not.

- **Auth** (while the member's auth is on when the call starts): the handler is wrapped so
  that it runs with ``CALL_CREDENTIALS`` set to the call's ``Credentials`` (the ``token``
  metadata, else ``authorization`` as etcd's gateway sends it; with ``--client-cert-auth``,
  the verified client certificate's common name, used when there is no token, as etcd's
  ``AuthInfoFromTLS``: the native front end puts the certificate in the call's metadata,
  grpc.aio's context has it in its ``auth_context()``); the services hand them to the
  member, which checks them (``petcd.server.authz``). A wrapped handler is a different
  behaviour object, so the native transport's fast paths (which check nothing) do not take it.
  With auth off, ``CALL_CREDENTIALS`` stays ``None`` and nothing is checked.

The learner check comes first, as in etcd (a learner refuses a linearizable Range with the
learner error even when it has no leader).

Ending a stream: the monitor cancels the asyncio task that runs the handler (what grpc does
itself when the client goes away, so every handler already cleans up on cancellation), and the
wrapper around the handler, seeing that the monitor asked for it, takes the cancellation back
and sends the status. The monitor's task exists only while at least one such stream is open.

Never: look at request bodies on the fast path, or keep per-call state for a call that neither
check concerns.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import grpc
from cryptography import x509
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from petcd.server.authz import Credentials

REQUIRE_LEADER_KEY = "hasleader"  # etcd's rpctypes.MetadataRequireLeaderKey
REQUIRE_LEADER_VALUE = "true"  # rpctypes.MetadataHasLeader
CLIENT_API_VERSION_KEY = "client-api-version"  # rpctypes.MetadataClientAPIVersionKey
TOKEN_KEYS = ("token", "authorization")  # rpctypes.TokenFieldNameGRPC, TokenFieldNameSwagger
CLIENT_CERT_KEY = "petcd-client-cert-bin"  # the native front end's: the verified certificate

# The credentials of the call being handled; None when auth was off as it started.
CALL_CREDENTIALS: contextvars.ContextVar[Credentials | None] = contextvars.ContextVar(
    "petcd_call_credentials", default=None
)

ERR_NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
ERR_LEARNER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")

# What a learner serves (etcd's isRPCSupportedForLearner and its stream interceptor).
_STATUS = "/etcdserverpb.Maintenance/Status"
_RANGE = "/etcdserverpb.KV/Range"  # serializable only
_SNAPSHOT = "/etcdserverpb.Maintenance/Snapshot"
_HASH_KV = "/etcdserverpb.Maintenance/HashKV"  # from a peer's corruption check only

# Set by a member asking its peers for their HashKV (``petcd.grpc.peer_hash``).
PEER_HASHKV = ("petcd-peer-request", "hashkv")

# etcd's maxNoLeaderCnt: samples, one per election timeout, without a leader before the
# streams that require one are ended.
NO_LEADER_SAMPLES = 3

_NO_LEADER_ID = 0


class GuardedMember(Protocol):
    @property
    def leader(self) -> int: ...

    @property
    def is_learner(self) -> bool: ...

    @property
    def auth_enabled(self) -> bool: ...


def _kind(handler: Any) -> str:
    """The RpcMethodHandler field that holds the behaviour."""
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def _refusal(handler: Any, status: tuple[grpc.StatusCode, str]) -> Any:
    """``handler`` with a behaviour that only fails with ``status``."""

    async def refuse(request: Any, context: Any) -> None:
        await context.abort(*status)

    return handler._replace(**{_kind(handler): refuse})


class _Guarded:
    """One open stream that requires a leader."""

    __slots__ = ("ended", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.ended = False  # set by the monitor just before it cancels ``task``


class LeaderMonitor:
    """Ends the open streams that require a leader once the member has had none for
    ``samples`` checks in a row, one check every ``interval_s`` (etcd: the election timeout).
    """

    def __init__(
        self,
        member: GuardedMember,
        interval_s: float,
        samples: int = NO_LEADER_SAMPLES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        assert interval_s > 0 and samples > 0, (interval_s, samples)
        self._member = member
        self._interval_s = interval_s
        self._samples = samples
        self._sleep = sleep  # the clock, injected by tests
        self._streams: set[_Guarded] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def running(self) -> bool:
        return self._task is not None

    def _add(self, entry: _Guarded) -> None:
        self._streams.add(entry)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _discard(self, entry: _Guarded) -> None:
        self._streams.discard(entry)
        if not self._streams and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        leaderless = 0
        while True:
            await self._sleep(self._interval_s)
            leaderless = leaderless + 1 if self._member.leader == _NO_LEADER_ID else 0
            if leaderless >= self._samples:
                streams, self._streams = self._streams, set()
                for entry in streams:
                    entry.ended = True
                    entry.task.cancel()

    def guard(self, handler: Any) -> Any:
        """``handler`` whose stream is ended with ``no leader`` when the monitor says so."""
        kind = _kind(handler)
        behavior: Callable[[Any, Any], Any] = getattr(handler, kind)

        async def guarded(request: Any, context: Any) -> None:
            task = asyncio.current_task()
            assert task is not None
            entry = _Guarded(task)
            self._add(entry)
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):  # a generator handler: write what it yields
                    async for response in result:
                        await context.write(response)
                else:
                    await result
                return
            except asyncio.CancelledError:
                if not entry.ended:
                    raise  # the client went away, or the server is stopping
                task.uncancel()
            finally:
                self._discard(entry)
            await context.abort(*ERR_NO_LEADER)

        return handler._replace(**{kind: guarded})


_COMMON_NAMES: dict[bytes, str | None] = {}


def common_name(der: bytes) -> str | None:
    """The subject common name of a DER certificate (None if it has none)."""
    found = _COMMON_NAMES.get(der, False)
    if found is not False:
        return found  # type: ignore[return-value]
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        name = str(names[0].value) if names else None
    except ValueError:
        name = None
    if len(_COMMON_NAMES) >= 1024:
        _COMMON_NAMES.clear()
    _COMMON_NAMES[der] = name
    return name


def credentials(metadata: Any) -> Credentials:
    """The call's credentials: its first ``token`` value (else ``authorization``), and the
    common name of the client certificate the native front end verified (``CLIENT_CERT_KEY``,
    which only the front end sets)."""
    found: dict[str, str] = {}
    cert: bytes | None = None
    for key, value in metadata or ():
        if key in TOKEN_KEYS and key not in found:
            found[key] = value if isinstance(value, str) else value.decode()
        elif key == CLIENT_CERT_KEY and isinstance(value, bytes):
            cert = value
    token = found.get("token", found.get("authorization"))
    return Credentials(token=token, common_name=None if cert is None else common_name(cert))


def late_credentials(context: Any) -> Credentials:
    """The credentials of a call that began while auth was off (``CALL_CREDENTIALS`` is None
    then), read again from its metadata and certificate: for what a long-lived stream asks
    after auth was turned on (etcd checks each watch it creates)."""
    creds = credentials(context.invocation_metadata())
    if creds.common_name is None and hasattr(context, "auth_context"):
        name = _tls_common_name(context)
        if name is not None:
            creds = dataclasses.replace(creds, common_name=name)
    return creds


def _tls_common_name(context: Any) -> str | None:
    """The common name of the client certificate grpc.aio verified for the call, if any."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None


def with_credentials(handler: Any, creds: Credentials, tls_names: bool = False) -> Any:
    """``handler`` running with ``CALL_CREDENTIALS`` set to ``creds``; with ``tls_names``
    (grpc.aio with verified client certificates), a ``creds`` without a common name takes
    the one of the call's certificate."""
    kind = _kind(handler)
    behavior: Callable[[Any, Any], Any] = getattr(handler, kind)
    tls_names = tls_names and creds.common_name is None

    def call_credentials(context: Any) -> Credentials:
        if tls_names:
            name = _tls_common_name(context)
            if name is not None:
                return dataclasses.replace(creds, common_name=name)
        return creds

    if inspect.isasyncgenfunction(behavior):

        async def generate(request: Any, context: Any) -> Any:
            CALL_CREDENTIALS.set(call_credentials(context))
            async for response in behavior(request, context):
                yield response

        return handler._replace(**{kind: generate})

    async def authenticated(request: Any, context: Any) -> Any:
        CALL_CREDENTIALS.set(call_credentials(context))
        return await behavior(request, context)

    return handler._replace(**{kind: authenticated})


class _RequestsCollector(Collector):
    """``etcd_server_client_requests_total`` from the guard's counts, at scrape time."""

    def __init__(self, counts: dict[tuple[bool, str], int]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "etcd_server_client_requests",
            "The total number of client requests per client version.",
            labels=["type", "client_api_version"],
        )
        for (streaming, version), n in sorted(self._counts.items()):
            family.add_metric(["stream" if streaming else "unary", version], n)
        yield family


class RequestGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """etcd's unary and stream interceptors: the learner and ``hasleader`` checks, and the
    ``etcd_server_client_requests_total`` counter when a ``registry`` is given."""

    def __init__(
        self,
        member: GuardedMember,
        election_timeout_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        registry: CollectorRegistry | None = None,
        tls_names: bool = False,
    ) -> None:
        """``tls_names``: on grpc.aio with verified client certificates (``--client-cert-auth``),
        whose common names are users when auth is on."""
        self._member = member
        self._tls_names = tls_names
        self.monitor = LeaderMonitor(member, election_timeout_s, sleep=sleep)
        self._counts: dict[tuple[bool, str], int] = {}  # (streaming, version) -> requests
        if registry is not None:
            registry.register(_RequestsCollector(self._counts))

    def _count(self, streaming: bool, version: str) -> None:
        # A plain dict on the hot path (a prometheus Counter takes a lock per inc); the
        # collector turns it into the counter when /metrics is scraped.
        key = (streaming, version)
        self._counts[key] = self._counts.get(key, 0) + 1

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        return self.check(
            handler, handler_call_details.method, handler_call_details.invocation_metadata
        )

    def check(self, handler: Any, method: str, metadata: Any) -> Any:
        """``intercept_service`` once the handler is looked up, without a coroutine (a
        transport that looks the handler up itself calls this directly)."""
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return None
        require_leader: bool | None = None
        version: str | None = None
        for key, value in metadata or ():
            # etcd reads the first value of each key
            if key == REQUIRE_LEADER_KEY:
                if require_leader is None:
                    require_leader = value == REQUIRE_LEADER_VALUE
            elif key == CLIENT_API_VERSION_KEY and version is None:
                version = value
        streaming = handler.request_streaming or handler.response_streaming
        if self._member.is_learner:
            return self._guard_learner(
                handler, method, metadata, streaming, version, bool(require_leader)
            )
        self._count(streaming, version or "unknown")
        if self._member.auth_enabled:
            handler = with_credentials(handler, credentials(metadata), self._tls_names)
        if require_leader:
            return self._guard_leader(handler, streaming)
        return handler

    def _guard_leader(self, handler: Any, streaming: bool) -> Any:
        if self._member.leader == _NO_LEADER_ID:
            return _refusal(handler, ERR_NO_LEADER)
        if streaming:
            return self.monitor.guard(handler)
        return handler

    def _guard_learner(
        self,
        handler: Any,
        method: str,
        metadata: Any,
        streaming: bool,
        version: str | None,
        require: bool,
    ) -> Any:
        if streaming:
            if method != _SNAPSHOT:
                return _refusal(handler, ERR_LEARNER)
        elif method == _RANGE:
            return self._learner_range(handler, version or "unknown", require)
        elif method == _HASH_KV and PEER_HASHKV in (metadata or ()):
            pass
        elif method != _STATUS:
            return _refusal(handler, ERR_LEARNER)
        self._count(streaming, version or "unknown")
        if self._member.auth_enabled:
            handler = with_credentials(handler, credentials(metadata), self._tls_names)
        return self._guard_leader(handler, streaming) if require else handler

    def _learner_range(self, handler: Any, version: str, require_leader: bool) -> Any:
        """A learner serves a Range only when it is serializable (its data may lag)."""
        behavior = handler.unary_unary
        member = self._member

        async def range_on_learner(request: Any, context: Any) -> Any:
            if not request.serializable:
                await context.abort(*ERR_LEARNER)
            self._count(False, version)
            if require_leader and member.leader == _NO_LEADER_ID:
                await context.abort(*ERR_NO_LEADER)
            return await behavior(request, context)

        return handler._replace(unary_unary=range_on_learner)
