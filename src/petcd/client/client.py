"""A small synchronous etcd v3 client over grpcio.

Theory of operation: :class:`Client` holds one gRPC channel per endpoint,
opened lazily. A call goes to the current endpoint; if the endpoint is
unreachable (``UNAVAILABLE`` before the server answered), the client moves to
the next endpoint and retries, once per endpoint, the way etcd's Go client
balances over its endpoint list. Calls wait for the connection to become ready
(``wait_for_ready``) for at most ``command_timeout_s``; the timeout covers the
whole call, as ``--command-timeout`` does for etcdctl. Every response is the
protobuf message of the etcd v3 API (``petcd.api.etcdserverpb.rpc_pb2``),
unchanged, so callers see exactly what the server sent: header, revisions and
all. Errors are raised as :mod:`petcd.client.errors` types. With a user name,
the client authenticates on its first call and sends the token as the ``token``
metadata on every call, renewing it once if the server says it is invalid.

The client never retries a call the server has already answered with an error,
and never retries a write after a timeout: a write may have been applied.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.client import requests as rq
from petcd.client.errors import ClientError, EtcdServerError, UnavailableError, from_rpc_error

T = TypeVar("T")

DEFAULT_DIAL_TIMEOUT_S = 2.0
DEFAULT_COMMAND_TIMEOUT_S = 5.0
# etcd's default --max-request-bytes is 1.5 MiB; responses may be much larger.
MAX_RECEIVE_BYTES = 2**31 - 1
AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Client-side TLS material (PEM file paths); all optional."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None


_UNIX_SCHEMES = (("unixs://", True), ("unix://", False), ("unixs:", True), ("unix:", False))


def normalize_endpoint(endpoint: str) -> tuple[str, bool]:
    """Return (gRPC target, is_tls) for an etcd endpoint: ``http://h:2379`` gives ``h:2379``;
    ``unix://etcd.sock:1`` (or ``unix:etcd.sock:1``) the Unix socket file ``etcd.sock:1`` in
    the working directory, ``unix:///run/etcd.sock`` an absolute path, as etcd's client takes
    them (``unixs``: with TLS)."""
    for prefix, tls in _UNIX_SCHEMES:
        if endpoint.startswith(prefix):
            return "unix:" + endpoint.removeprefix(prefix), tls
    if endpoint.startswith("https://"):
        return endpoint.removeprefix("https://").rstrip("/"), True
    if endpoint.startswith("http://"):
        return endpoint.removeprefix("http://").rstrip("/"), False
    return endpoint.rstrip("/"), False


def unix_server_name(endpoint: str) -> str | None:
    """The name a ``unix``/``unixs`` endpoint's server certificate is checked against (etcd's
    client: the socket file's name without a ``:port``, ``localhost`` for
    ``unixs://localhost:2379``); None for other endpoints."""
    for prefix, _ in _UNIX_SCHEMES:
        if endpoint.startswith(prefix):
            name = endpoint.removeprefix(prefix).rstrip("/").rsplit("/", 1)[-1]
            host, sep, port = name.rpartition(":")
            return host if sep and port.isdigit() else name
    return None


def channel_options(
    endpoint: str, options: list[tuple[str, Any]], tls: TLSConfig | None
) -> list[tuple[str, Any]]:
    """``options`` and, for a Unix socket endpoint over TLS, the server name to verify."""
    name = (tls.server_name if tls else None) or unix_server_name(endpoint)
    if name is None:
        return options
    return [*options, ("grpc.ssl_target_name_override", name)]


class Stubs:
    """The service stubs of one channel (a ``grpc`` or a ``grpc.aio`` one)."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        # The generated stubs are untyped; their methods are typed through _call.
        self.kv: Any = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        self.maintenance: Any = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
        self.auth: Any = rpc_pb2_grpc.AuthStub(channel)  # type: ignore[no-untyped-call]
        self.lease: Any = rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]
        self.watch: Any = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
        self.cluster: Any = rpc_pb2_grpc.ClusterStub(channel)  # type: ignore[no-untyped-call]


class ClientBase:
    """What :class:`Client` and :class:`petcd.client.AsyncClient` share: the endpoint list and
    the current endpoint, one channel per endpoint (opened by ``_grpc``: the ``grpc`` module,
    or ``grpc.aio``, which open channels alike), the user and its token."""

    _grpc: Any = grpc

    def __init__(
        self,
        endpoints: Sequence[str],
        dial_timeout_s: float = DEFAULT_DIAL_TIMEOUT_S,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        *,
        tls: TLSConfig | None = None,
        insecure_transport: bool = True,
        keepalive_time_s: float = 2.0,
        keepalive_timeout_s: float = 6.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self.endpoints = list(endpoints)
        self.dial_timeout_s = dial_timeout_s
        self.command_timeout_s = command_timeout_s
        self._tls = tls
        self._insecure_transport = insecure_transport
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._username = username
        self._password = password or ""
        self._token: str | None = None
        self._stubs: dict[str, Stubs] = {}
        self._current = 0
        self._lock = threading.Lock()  # guards _stubs: the sync client is called from threads

    def _channel_for(self, endpoint: str) -> Stubs:
        with self._lock:
            stubs = self._stubs.get(endpoint)
            if stubs is None:
                target, is_tls = normalize_endpoint(endpoint)
                if is_tls or self._tls is not None or not self._insecure_transport:
                    options = channel_options(endpoint, self._options, self._tls)
                    channel = self._grpc.secure_channel(target, self._credentials(), options)
                else:
                    channel = self._grpc.insecure_channel(target, self._options)
                stubs = Stubs(channel)
                self._stubs[endpoint] = stubs
            return stubs

    def _credentials(self) -> grpc.ChannelCredentials:
        tls = self._tls or TLSConfig()

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(
            root_certificates=read(tls.ca_file),
            private_key=read(tls.key_file),
            certificate_chain=read(tls.cert_file),
        )

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

    def _failover_order(self, endpoint: str | None) -> list[str]:
        """The endpoints a call tries in turn: ``endpoint`` alone if given, else all of them,
        the current one first."""
        if endpoint is not None:
            return [endpoint]
        start = self._current
        return [
            self.endpoints[(start + i) % len(self.endpoints)] for i in range(len(self.endpoints))
        ]


class Client(ClientBase):
    """A synchronous etcd v3 client (KV, Maintenance, Cluster).

    >>> with Client(["127.0.0.1:2379"]) as client:  # doctest: +SKIP
    ...     client.put(b"k", b"v")
    ...     client.get(b"k").kvs[0].value
    """

    # ------------------------------------------------------------ plumbing

    def authenticate(self, *, timeout_s: float | None = None) -> str:
        """Get a token for the configured user (done on the first call otherwise).

        If the server says authentication is not enabled, the client carries on
        without a token, as etcd's Go client does; the token is then "".
        """
        assert self._username is not None, "no user configured"
        request = rpc_pb2.AuthenticateRequest(name=self._username, password=self._password)
        self._token = None
        try:
            resp: Any = self._call(
                lambda s: s.auth.Authenticate, request, timeout_s=timeout_s, authenticated=False
            )
        except EtcdServerError as exc:
            if exc.message != AUTH_NOT_ENABLED:
                raise
            self._token = ""
            return self._token
        self._token = str(resp.token)
        return self._token

    def _call(
        self,
        pick: Callable[[Stubs], Callable[..., T]],
        request: Any,
        *,
        endpoint: str | None = None,
        timeout_s: float | None = None,
        authenticated: bool = True,
    ) -> T:
        if authenticated and self._username is not None:
            if self._token is None:
                self.authenticate(timeout_s=timeout_s)
            try:
                return self._call_once(pick, request, endpoint, timeout_s)
            except EtcdServerError as exc:
                # Simple tokens expire (--auth-token-ttl); get a new one and retry once.
                if exc.message != "etcdserver: invalid auth token":
                    raise
                self.authenticate(timeout_s=timeout_s)
        return self._call_once(pick, request, endpoint, timeout_s)

    def _call_once(
        self,
        pick: Callable[[Stubs], Callable[..., T]],
        request: Any,
        endpoint: str | None,
        timeout_s: float | None,
    ) -> T:
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        metadata = self._metadata()
        order = self._failover_order(endpoint)
        last: ClientError | None = None
        for i, ep in enumerate(order):
            method = pick(self._channel_for(ep))
            try:
                # With several endpoints, do not let one dead endpoint eat the whole budget.
                wait = len(order) == 1 or i == len(order) - 1
                result: T = method(request, timeout=timeout, wait_for_ready=wait, metadata=metadata)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if isinstance(err, UnavailableError) and i + 1 < len(order):
                    last = err
                    continue
                raise err from None
            if endpoint is None and ep != self.endpoints[self._current]:
                self._current = self.endpoints.index(ep)
            return result
        assert last is not None
        raise last

    def close(self) -> None:
        with self._lock:
            for stubs in self._stubs.values():
                stubs.channel.close()
            self._stubs.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ KV

    def range(self, request: rpc_pb2.RangeRequest, *, timeout_s: float | None = None) -> Any:
        """Send a prepared RangeRequest; returns the RangeResponse."""
        return self._call(lambda s: s.kv.Range, request, timeout_s=timeout_s)

    def get(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prefix: bool = False,
        from_key: bool = False,
        revision: int = 0,
        limit: int = 0,
        sort_order: int = 0,
        sort_target: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
        timeout_s: float | None = None,
    ) -> Any:
        """Read one key, ``[key, range_end)``, a prefix or everything from ``key``."""
        request = rq.range_request(
            key,
            range_end,
            prefix=prefix,
            from_key=from_key,
            revision=revision,
            limit=limit,
            sort_order=sort_order,
            sort_target=sort_target,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        return self.range(request, timeout_s=timeout_s)

    def put(
        self,
        key: bytes,
        value: bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """Write one key; returns the PutResponse."""
        request = rq.put_request(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        return self._call(lambda s: s.kv.Put, request, timeout_s=timeout_s)

    def delete(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prefix: bool = False,
        from_key: bool = False,
        prev_kv: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """Delete one key or a range; returns the DeleteRangeResponse."""
        request = rq.delete_request(
            key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv
        )
        return self._call(lambda s: s.kv.DeleteRange, request, timeout_s=timeout_s)

    def txn(
        self,
        compare: Sequence[Any] = (),
        success: Sequence[Any] = (),
        failure: Sequence[Any] = (),
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """Run a transaction of Compare / RequestOp messages; returns the TxnResponse."""
        request = rq.txn_request(compare, success, failure)
        return self._call(lambda s: s.kv.Txn, request, timeout_s=timeout_s)

    def compact(
        self, revision: int, *, physical: bool = False, timeout_s: float | None = None
    ) -> Any:
        """Compact the history up to ``revision``; returns the CompactionResponse."""
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        return self._call(lambda s: s.kv.Compact, request, timeout_s=timeout_s)

    # ------------------------------------------------------------ Maintenance / Cluster

    def status(self, endpoint: str | None = None, *, timeout_s: float | None = None) -> Any:
        """Status of one endpoint (default: the current one); returns the StatusResponse."""
        return self._call(
            lambda s: s.maintenance.Status,
            rpc_pb2.StatusRequest(),
            endpoint=endpoint,
            timeout_s=timeout_s,
        )

    def hash_kv(
        self, revision: int = 0, endpoint: str | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """The KV history hash of one endpoint up to ``revision`` (0: all); HashKVResponse."""
        return self._call(
            lambda s: s.maintenance.HashKV,
            rpc_pb2.HashKVRequest(revision=revision),
            endpoint=endpoint,
            timeout_s=timeout_s,
        )

    def alarm_list(self, endpoint: str | None = None, *, timeout_s: float | None = None) -> Any:
        """The active alarms; returns the AlarmResponse."""
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)
        return self._call(
            lambda s: s.maintenance.Alarm, request, endpoint=endpoint, timeout_s=timeout_s
        )

    def alarm_disarm(
        self, member_id: int = 0, alarm: int = 0, *, timeout_s: float | None = None
    ) -> Any:
        """Deactivate alarms (all members, all alarm types by default)."""
        request = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member_id, alarm=cast(Any, alarm)
        )
        return self._call(lambda s: s.maintenance.Alarm, request, timeout_s=timeout_s)

    def defragment(self, endpoint: str | None = None, *, timeout_s: float | None = None) -> Any:
        """Defragment one member's backend."""
        return self._call(
            lambda s: s.maintenance.Defragment,
            rpc_pb2.DefragmentRequest(),
            endpoint=endpoint,
            timeout_s=timeout_s,
        )

    def move_leader(
        self, target_id: int, endpoint: str | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Ask the leader (at ``endpoint``) to hand leadership to ``target_id``."""
        return self._call(
            lambda s: s.maintenance.MoveLeader,
            rpc_pb2.MoveLeaderRequest(targetID=target_id),
            endpoint=endpoint,
            timeout_s=timeout_s,
        )

    def snapshot(
        self, endpoint: str | None = None, *, timeout_s: float | None = None
    ) -> Iterator[bytes]:
        """Stream a backend snapshot from one member; yields the blob pieces."""
        if self._username is not None and self._token is None:
            self.authenticate()
        metadata = self._metadata()
        stubs = self._channel_for(endpoint or self.endpoints[self._current])
        responses = stubs.maintenance.Snapshot(
            rpc_pb2.SnapshotRequest(), timeout=timeout_s, metadata=metadata, wait_for_ready=True
        )
        try:
            for response in responses:
                yield response.blob
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def member_list(self, *, linearizable: bool = False, timeout_s: float | None = None) -> Any:
        """The cluster's members; returns the MemberListResponse."""
        request = rpc_pb2.MemberListRequest(linearizable=linearizable)
        return self._call(lambda s: s.cluster.MemberList, request, timeout_s=timeout_s)

    def member_add(
        self, peer_urls: Sequence[str], *, is_learner: bool = False, timeout_s: float | None = None
    ) -> Any:
        """Add a member (or a learner); returns the MemberAddResponse."""
        request = rpc_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=is_learner)
        return self._call(lambda s: s.cluster.MemberAdd, request, timeout_s=timeout_s)

    def member_remove(self, member_id: int, *, timeout_s: float | None = None) -> Any:
        request = rpc_pb2.MemberRemoveRequest(ID=member_id)
        return self._call(lambda s: s.cluster.MemberRemove, request, timeout_s=timeout_s)

    def member_update(
        self, member_id: int, peer_urls: Sequence[str], *, timeout_s: float | None = None
    ) -> Any:
        request = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=list(peer_urls))
        return self._call(lambda s: s.cluster.MemberUpdate, request, timeout_s=timeout_s)

    def member_promote(self, member_id: int, *, timeout_s: float | None = None) -> Any:
        request = rpc_pb2.MemberPromoteRequest(ID=member_id)
        return self._call(lambda s: s.cluster.MemberPromote, request, timeout_s=timeout_s)

    # ------------------------------------------------------------ Lease

    def lease_grant(self, ttl_s: int, lease_id: int = 0, *, timeout_s: float | None = None) -> Any:
        """Grant a lease (the server picks the id when ``lease_id`` is 0)."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl_s, ID=lease_id)
        return self._call(lambda s: s.lease.LeaseGrant, request, timeout_s=timeout_s)

    def lease_revoke(self, lease_id: int, *, timeout_s: float | None = None) -> Any:
        """Revoke a lease and delete its keys."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        return self._call(lambda s: s.lease.LeaseRevoke, request, timeout_s=timeout_s)

    def lease_time_to_live(
        self, lease_id: int, *, keys: bool = False, timeout_s: float | None = None
    ) -> Any:
        """Remaining and granted TTL of a lease (and its keys)."""
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        return self._call(lambda s: s.lease.LeaseTimeToLive, request, timeout_s=timeout_s)

    def lease_leases(self, *, timeout_s: float | None = None) -> Any:
        """Every active lease."""
        request = rpc_pb2.LeaseLeasesRequest()
        return self._call(lambda s: s.lease.LeaseLeases, request, timeout_s=timeout_s)

    def lease_keep_alive_once(self, lease_id: int, *, timeout_s: float | None = None) -> Any:
        """Renew a lease once (one round trip on a LeaseKeepAlive stream)."""

        def once(stubs: Stubs) -> Callable[..., Any]:
            def call(request: Any, **kwargs: Any) -> Any:
                responses = stubs.lease.LeaseKeepAlive(iter([request]), **kwargs)
                try:
                    return next(responses)
                finally:
                    responses.cancel()

            return call

        request = rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)
        return self._call(once, request, timeout_s=timeout_s)

    def lease_keep_alive(self, lease_id: int) -> Iterator[Any]:
        """Keep a lease alive; yields each LeaseKeepAliveResponse until TTL <= 0.

        Like etcd's Go client, the next renewal is sent a third of the returned
        TTL after the previous answer, over one LeaseKeepAlive stream.
        """
        if self._username is not None and self._token is None:
            self.authenticate()
        metadata = self._metadata()
        stubs = self._channel_for(self.endpoints[self._current])
        answers: queue.Queue[float] = queue.Queue()

        def requests() -> Iterator[Any]:
            while True:
                yield rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)
                delay_s = answers.get()
                if delay_s < 0:
                    return
                time.sleep(delay_s)

        responses = stubs.lease.LeaseKeepAlive(requests(), metadata=metadata, wait_for_ready=True)
        try:
            for response in responses:
                if response.TTL <= 0:
                    answers.put(-1.0)
                    return
                yield response
                answers.put(response.TTL / 3.0)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            answers.put(-1.0)
            responses.cancel()

    # ------------------------------------------------------------ Watch

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        require_leader: bool = True,
        control: queue.Queue[Any] | None = None,
        **options: Any,
    ) -> Iterator[Any]:
        """Watch a key or range; yields every WatchResponse after the creation one.

        Options are those of :func:`petcd.client.requests.watch_create_request`.
        With ``fragment=True`` the server may split a large response; the parts are
        joined again here, so every yielded response is whole. The iterator ends after
        a response with ``canceled`` set (for instance a compacted start revision:
        ``compact_revision`` says up to where); closing the generator cancels the
        stream. Requests put on ``control`` (e.g. a WatchRequest with
        ``progress_request``) are sent on the same stream. ``require_leader`` sends
        etcd's ``hasleader`` metadata, so a member without a leader cancels the
        watch instead of going silent.
        """
        if self._username is not None and self._token is None:
            self.authenticate()
        metadata: list[tuple[str, str]] = []
        if self._token:
            metadata.append(("token", self._token))
        if require_leader:
            metadata.append(("hasleader", "true"))
        stop = threading.Event()
        create = rq.watch_create_request(key, range_end, **options)

        def requests() -> Iterator[Any]:
            yield create
            if control is None:
                stop.wait()
                return
            while not stop.is_set():
                try:
                    yield control.get(timeout=0.2)
                except queue.Empty:
                    continue

        stubs = self._channel_for(self.endpoints[self._current])
        responses = stubs.watch.Watch(requests(), metadata=metadata, wait_for_ready=True)
        fragments = FragmentAssembler()
        try:
            for part in responses:
                response = fragments.feed(part)
                if response is None:
                    continue
                if response.created and not response.events and not response.canceled:
                    continue
                yield response
                if response.canceled:
                    return
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            stop.set()
            responses.cancel()

    # ------------------------------------------------------------ Auth

    def auth(self, method: str, request: Any, *, timeout_s: float | None = None) -> Any:
        """Call one Auth-service method by name, e.g. ``auth("UserAdd", AuthUserAddRequest(...))``.

        The Auth service has seventeen unary methods with one request type
        each; this one entry point covers them all (``AuthEnable``,
        ``AuthStatus``, ``UserGet``, ``RoleGrantPermission``, ...).
        """
        return self._call(lambda s: getattr(s.auth, method), request, timeout_s=timeout_s)


class FragmentAssembler:
    """Joins the parts of a fragmented WatchResponse (etcd's ``fragment`` watch option).

    A server splits a large response of a watcher created with ``fragment`` into several
    responses with the same watch_id, all but the last with ``fragment`` set; they arrive one
    after the other. ``feed`` holds the parts and returns the whole response with the last
    part, or any other response unchanged (``None`` while a response is incomplete).
    """

    def __init__(self) -> None:
        self._pending: dict[int, Any] = {}

    def feed(self, response: Any) -> Any | None:
        held = self._pending.get(response.watch_id)
        if held is None and not response.fragment:
            return response
        if held is None:
            held = self._pending[response.watch_id] = rpc_pb2.WatchResponse()
        held.MergeFrom(response)  # events appended in order; header from the latest part
        if response.fragment:
            return None
        del self._pending[response.watch_id]
        held.fragment = False
        return held
