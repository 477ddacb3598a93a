"""etcd's KV and Maintenance gRPC services over a member (grpc.aio).

Theory of operation
-------------------
Each handler decodes the protobuf request into a ``petcd.mvcc.requests`` dataclass
(``petcd.grpc.convert``), awaits the member, and encodes the response. The member is reached
only through the ``KVMember`` protocol, so the transport stays replaceable (another front end
can drive the same member). Failures are mapped by ``petcd.grpc.status.status_for`` to etcd's
code and message; an unexpected exception is a bug: it is logged and sent as ``UNKNOWN``.

Services served: ``etcdserverpb.KV`` (Range, Put, DeleteRange, Txn, Compact),
``etcdserverpb.Maintenance`` Status, Hash, HashKV, Defragment, Snapshot, MoveLeader and Alarm
(NOSPACE is raised when the quota is hit),
``etcdserverpb.Cluster`` (MemberList, MemberAdd, MemberRemove, MemberUpdate, MemberPromote;
membership errors get etcd's rpctypes codes and texts here),
``etcdserverpb.Watch`` (``petcd.grpc.watch``) and
``etcdserverpb.Lease`` (``petcd.grpc.lease``), ``v3electionpb.Election``
(``petcd.grpc.election``) and ``v3lockpb.Lock`` (``petcd.grpc.lock``). Every other method
answers ``UNIMPLEMENTED`` (grpc's default for a servicer method that is not overridden).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast

import grpc

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.api.v3electionpb import v3election_pb2_grpc
from petcd.api.v3lockpb import v3lock_pb2_grpc
from petcd.auth import errors as auth_errors
from petcd.backend import ReadLease
from petcd.grpc import convert
from petcd.grpc.auth import AuthService
from petcd.grpc.election import ElectionService
from petcd.grpc.health import add_health_service
from petcd.grpc.interceptors import (
    CALL_CREDENTIALS,
    PEER_HASHKV,
    GuardedMember,
    RequestGuard,
)
from petcd.grpc.lease import LeaseMember, LeaseService
from petcd.grpc.lock import LockService
from petcd.grpc.native import NativeServer, SubmitFuture, UnarySubmit
from petcd.grpc.status import is_expected, status_for
from petcd.grpc.watch import WatchMember, WatchService, add_watch_service
from petcd.mvcc.requests import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    HashKVResult,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)
from petcd.server import errors as server_errors
from petcd.server.authz import AuthGate, Credentials
from petcd.server.config import Config, merge_schemes
from petcd.server.corrupt import go_duration
from petcd.server.errors import ConfigError
from petcd.server.hostport import join_host_port
from petcd.server.log import Logger, humanize_bytes, humanize_time_ago
from petcd.server.member import MemberInfo, StatusInfo
from petcd.server.metrics import ServerMetrics
from petcd.server.tls import ClientTLS

if TYPE_CHECKING:
    from petcd._frontend import RequestDecoder

# A Range answer with at least this many bytes of records is encoded in a worker thread.
BIG_RANGE_BYTES = 1 << 20
_range_encoder_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _range_encoders() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that encode big Range answers (a pool of their own: a lease's release
    hangs on each one's future)."""
    global _range_encoder_pool
    if _range_encoder_pool is None:
        _range_encoder_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="petcd-range"
        )
    return _range_encoder_pool


class KVMember(WatchMember, LeaseMember, GuardedMember, Protocol):
    cfg: Config
    metrics: ServerMetrics
    gate: AuthGate

    async def range(self, req: RangeRequest, creds: Credentials | None = None) -> RangeResponse: ...

    async def range_records(
        self, req: RangeRequest, creds: Credentials | None = None, *, pinned: bool = False
    ) -> tuple[RangeResponse, list[bytes | memoryview] | None, ReadLease | None]: ...

    async def range_one(
        self, key: bytes, serializable: bool
    ) -> tuple[ResponseHeader, bytes | None]: ...

    def range_one_now(
        self, key: bytes, serializable: bool
    ) -> tuple[ResponseHeader, bytes | None] | None: ...

    async def put(self, req: PutRequest, creds: Credentials | None = None) -> PutResponse: ...

    async def delete_range(
        self, req: DeleteRangeRequest, creds: Credentials | None = None
    ) -> DeleteRangeResponse: ...

    async def txn(self, req: TxnRequest, creds: Credentials | None = None) -> TxnResponse: ...

    def submit(self, req: PutRequest | DeleteRangeRequest | TxnRequest) -> SubmitFuture: ...

    def add_answers_listener(self, listener: Callable[[], None]) -> None: ...

    async def compact(self, req: CompactionRequest) -> CompactionResponse: ...

    def status(self) -> StatusInfo: ...

    def members(self) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]: ...

    async def members_linearizable(self) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]: ...

    async def member_add(
        self, peer_urls: tuple[str, ...], is_learner: bool
    ) -> tuple[ResponseHeader, MemberInfo, tuple[MemberInfo, ...]]: ...

    async def member_remove(self, target: int) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]: ...

    async def member_update(
        self, target: int, peer_urls: tuple[str, ...]
    ) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]: ...

    async def member_promote(
        self, target: int
    ) -> tuple[ResponseHeader, tuple[MemberInfo, ...]]: ...

    def alarms(self) -> tuple[ResponseHeader, tuple[tuple[int, int], ...]]: ...

    async def alarm_change(
        self, action: int, member: int, alarm: int
    ) -> tuple[ResponseHeader, tuple[tuple[int, int], ...]]: ...

    async def hash_kv(self, revision: int) -> tuple[ResponseHeader, HashKVResult]: ...

    async def hash(self) -> tuple[ResponseHeader, int]: ...

    async def defragment(self) -> ResponseHeader: ...

    async def snapshot_file(self) -> str: ...

    async def move_leader(self, target: int) -> None: ...


def _failure(exc: BaseException, log: Logger | None, method: str) -> tuple[grpc.StatusCode, str]:
    """The status a handler sends for ``exc``; an unexpected error is logged."""
    code, message = status_for(exc)
    if not is_expected(exc) and log is not None:
        log.error("unexpected error in gRPC handler", method=method, error=repr(exc))
    return code, message


async def _abort(context: Any, exc: BaseException, log: Logger | None, method: str) -> NoReturn:
    await context.abort(*_failure(exc, log, method))
    raise AssertionError("context.abort returned")  # pragma: no cover


def _field(tag: bytes, value: bytes) -> bytes:
    """A length-delimited protobuf field: ``tag``, the length as a varint, ``value``."""
    n = len(value)
    if n < 0x80:
        return b"".join((tag, bytes((n,)), value))
    length = bytearray()
    while n >= 0x80:
        length.append(n & 0x7F | 0x80)
        n >>= 7
    length.append(n)
    return b"".join((tag, length, value))


def _native_request_decoder() -> RequestDecoder | None:
    """``petcd._frontend.RequestDecoder`` for petcd's request dataclasses (the Rust decoder
    of Put, DeleteRange and Txn requests, docs/enhancements/0008-request-decoding.md), or
    None when the native extension is not built."""
    try:
        from petcd._frontend import RequestDecoder
    except ImportError:
        return None
    return RequestDecoder(
        RangeRequest, PutRequest, DeleteRangeRequest, Compare, RequestOp, TxnRequest
    )


def _native_range_encoder() -> Callable[..., bytes] | None:
    """``petcd._frontend.range_response`` (the Rust RangeResponse encoder), or None when the
    native extension is not built."""
    try:
        from petcd._frontend import range_response
    except ImportError:
        return None
    return range_response


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, member: KVMember, log: Logger | None = None) -> None:
        self._member = member
        self._log = log
        # add_kv_service sets it: Range answers bytes (its handler has no serializer).
        self.raw = False
        self._encode_range = _native_range_encoder()

    def _one_key(self, request: Any) -> bool | None:
        """For a Range of one key and nothing else (Kubernetes' get, the most common read),
        whether it is serializable; None for any other Range, or when Range answers protobuf.
        Such a Range skips the RangeRequest: the encoded size tells that no other field is
        set (serializable adds 2 bytes)."""
        if not self.raw or self._encode_range is None:
            return None
        n = len(request.key)
        # bytes besides the key's field (tag, length of 1 or 2 bytes, the key)
        rest = request.ByteSize() - n - (2 if n < 0x80 else 3) if 0 < n < 0x4000 else -1
        if rest == 0:
            return False
        if rest == 2 and request.serializable:
            return True
        return None

    def range_now(self, request: Any) -> bytes | None:
        """Range's answer when the member has it at once (``NativeServer.add_unary_now``): a
        Range of one key that needs no wait (``Member.range_one_now``); None otherwise."""
        serializable = self._one_key(request)
        if serializable is None:
            return None
        got = self._member.range_one_now(request.key, serializable)
        if got is None:
            return None
        return self._one_key_bytes(*got)

    def _one_key_bytes(self, h: ResponseHeader, raw: bytes | None) -> bytes:
        """The encoded RangeResponse of a one-key Range: the key's stored record, if live."""
        encode = self._encode_range
        assert encode is not None
        return encode(
            h.cluster_id,
            h.member_id,
            h.revision,
            h.raft_term,
            [] if raw is None else [raw],
            False,
            0 if raw is None else 1,
        )

    async def Range(self, request: Any, context: Any) -> Any:
        lease: ReadLease | None = None
        try:
            creds = CALL_CREDENTIALS.get()
            serializable = self._one_key(request) if creds is None else None
            if serializable is not None:
                return self._one_key_bytes(*await self._member.range_one(request.key, serializable))
            req = convert.range_request(request)
            pinned = self.raw and self._encode_range is not None
            resp, records, lease = await self._member.range_records(req, creds, pinned=pinned)
            if not self.raw:
                return convert.range_response_pb(resp, cast(list[bytes] | None, records))
            if pinned and records is not None and sum(map(len, records)) >= BIG_RANGE_BYTES:
                # Megabytes to copy: in a worker thread, without the GIL (the native encoder
                # lets it go), so that the loop keeps applying writes and sending watch
                # events meanwhile instead of queueing them behind big answers. Large
                # records are views into the backend's map (no copy on the loop at all);
                # their lease ends when the encoding does, or when it is cancelled unstarted.
                done = _range_encoders().submit(self._range_bytes, resp, records)
                if lease is not None:
                    done.add_done_callback(lease.release)
                    lease = None
                return await asyncio.wrap_future(done)
            return self._range_bytes(resp, records)
        except Exception as e:
            await _abort(context, e, self._log, "Range")
        finally:
            if lease is not None:
                lease.release()

    def _range_bytes(
        self, resp: RangeResponse, records: Sequence[bytes | memoryview] | None
    ) -> bytes:
        """The encoded RangeResponse: a plain Range's stored records go to the native encoder
        as they are (docs/enhancements/0006-range-encoding.md), anything else through
        protobuf."""
        encode = self._encode_range
        if records is not None and encode is not None:
            h = resp.header
            return encode(
                h.cluster_id, h.member_id, h.revision, h.raft_term, records, resp.more, resp.count
            )
        copied = cast(list[bytes] | None, records)  # no encoder: range_records' bytes
        data: bytes = convert.range_response_pb(resp, copied).SerializeToString()
        return data

    def _put_bytes(self, resp: PutResponse) -> bytes:
        """The encoded PutResponse. Without a prev_kv it is a header alone: the same bytes
        as the RangeResponse of a one-key Range that found nothing (both carry the header as
        field 1), which the native encoder writes (``_one_key_bytes``)."""
        if self._encode_range is None or resp.prev_kv is not None:
            data: bytes = convert.put_response_pb(resp).SerializeToString()
            return data
        return self._one_key_bytes(resp.header, None)

    def _txn_bytes(self, resp: TxnResponse) -> bytes:
        """The encoded TxnResponse. When every response in it is a Put's without a prev_kv
        (a Txn of puts, Kubernetes' create and update), it is assembled from the native
        encoder's header bytes (``_one_key_bytes``, as ``_put_bytes``); anything else through
        protobuf."""
        parts: list[bytes] = []
        if self._encode_range is not None:
            for op in resp.responses:
                put = op.response_put
                if put is None or put.prev_kv is not None:
                    break
                # ResponseOp.response_put (field 2) holding it, as TxnResponse.responses (3)
                parts.append(
                    _field(b"\x1a", _field(b"\x12", self._one_key_bytes(put.header, None)))
                )
            else:
                head = self._one_key_bytes(resp.header, None)
                if resp.succeeded:
                    return b"".join((head, b"\x10\x01", *parts))  # succeeded (field 2)
                return b"".join((head, *parts))
        data: bytes = convert.txn_response_pb(resp).SerializeToString()
        return data

    async def Put(self, request: Any, context: Any) -> Any:
        try:
            resp = await self._member.put(convert.put_request(request), CALL_CREDENTIALS.get())
            if self.raw:
                return self._put_bytes(resp)
            return convert.put_response_pb(resp)
        except Exception as e:
            await _abort(context, e, self._log, "Put")

    async def DeleteRange(self, request: Any, context: Any) -> Any:
        try:
            resp = await self._member.delete_range(
                convert.delete_range_request(request), CALL_CREDENTIALS.get()
            )
            return convert.delete_range_response_pb(resp)
        except Exception as e:
            await _abort(context, e, self._log, "DeleteRange")

    async def Txn(self, request: Any, context: Any) -> Any:
        try:
            resp = await self._member.txn(convert.txn_request(request), CALL_CREDENTIALS.get())
            if self.raw:
                return self._txn_bytes(resp)
            return convert.txn_response_pb(resp)
        except Exception as e:
            await _abort(context, e, self._log, "Txn")

    # The callback forms of the writes (``NativeServer.add_unary_submit``): the same member
    # call, conversions and statuses as the methods above, without a coroutine per call.

    def _submit_put(self, request: Any) -> SubmitFuture:
        return self._member.submit(convert.put_request(request))

    def _submit_delete_range(self, request: Any) -> SubmitFuture:
        return self._member.submit(convert.delete_range_request(request))

    def _submit_txn(self, request: Any) -> SubmitFuture:
        return self._member.submit(convert.txn_request(request))

    def _submit_decoded(
        self, request: PutRequest | DeleteRangeRequest | TxnRequest
    ) -> SubmitFuture:
        return self._member.submit(request)

    def submit_forms(self) -> list[tuple[Any, UnarySubmit]]:
        """(coroutine method, its callback form) for Put, DeleteRange and Txn. With the
        native extension, the forms take the request's bytes to the Rust decoder first
        (``UnarySubmit.decode``); what it leaves goes through protobuf and ``convert``."""
        log = self._log
        decoder = _native_request_decoder()
        submit_decoded = None if decoder is None else self._submit_decoded
        return [
            (
                method,
                UnarySubmit(
                    submit,
                    respond,
                    functools.partial(_failure, log=log, method=name),
                    None if decoder is None else getattr(decoder, decode),
                    submit_decoded,
                ),
            )
            for method, submit, respond, name, decode in (
                (self.Put, self._submit_put, self._put_bytes, "Put", "put"),
                (
                    self.DeleteRange,
                    self._submit_delete_range,
                    convert.delete_range_response_pb,
                    "DeleteRange",
                    "delete_range",
                ),
                (self.Txn, self._submit_txn, self._txn_bytes, "Txn", "txn"),
            )
        ]

    async def Compact(self, request: Any, context: Any) -> Any:
        try:
            resp = await self._member.compact(convert.compaction_request(request))
            return rpc_pb2.CompactionResponse(header=convert.header_pb(resp.header))
        except Exception as e:
            await _abort(context, e, self._log, "Compact")


# etcd's authMaintenanceServer (Hash, HashKV, Defragment, Snapshot) returns the auth store's own
# errors, which are not gRPC statuses: the client gets UNKNOWN with the auth package's text.
_AUTH_STORE_TEXTS: dict[type[Exception], str] = {
    auth_errors.UserEmptyError: "auth: user name is empty",
    auth_errors.UserNotFoundError: "auth: user not found",
    auth_errors.PermissionDeniedError: "auth: permission denied",
    auth_errors.InvalidAuthTokenError: "auth: invalid auth token",
}


class _AuthStoreError(auth_errors.AuthError):
    """An auth store error as etcd's maintenance server passes it on (UNKNOWN, its text)."""

    grpc_code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.args = (message,)


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, member: KVMember, log: Logger | None = None) -> None:
        self._member = member
        self._log = log

    async def _admin(self) -> None:
        """etcd's isAuthenticated: the caller must have the root role while auth is on."""
        try:
            await self._member.gate.admin(CALL_CREDENTIALS.get())
        except auth_errors.AuthError as e:
            text = _AUTH_STORE_TEXTS.get(type(e))
            if text is None:
                raise
            raise _AuthStoreError(text) from None

    async def Status(self, request: Any, context: Any) -> Any:
        try:
            s = self._member.status()
            return rpc_pb2.StatusResponse(
                header=convert.header_pb(s.header),
                version=s.version,
                dbSize=s.db_size,
                leader=s.leader,
                raftIndex=s.raft_index,
                raftTerm=s.raft_term,
                raftAppliedIndex=s.raft_applied_index,
                errors=list(s.errors),
                dbSizeInUse=s.db_size_in_use,
                isLearner=s.is_learner,
            )
        except Exception as e:
            await _abort(context, e, self._log, "Status")

    async def Hash(self, request: Any, context: Any) -> Any:
        try:
            await self._admin()
            header, value = await self._member.hash()
            return rpc_pb2.HashResponse(header=convert.header_pb(header), hash=value)
        except Exception as e:
            await _abort(context, e, self._log, "Hash")

    async def HashKV(self, request: Any, context: Any) -> Any:
        try:
            # A peer's corruption check asks without credentials (etcd asks over its peer
            # listener, where no auth applies): only the hash is given away.
            if PEER_HASHKV not in (context.invocation_metadata() or ()):
                await self._admin()
            header, result = await self._member.hash_kv(request.revision)
            return rpc_pb2.HashKVResponse(
                header=convert.header_pb(header),
                hash=result.hash,
                compact_revision=result.compact_revision,
                hash_revision=result.hash_revision,
            )
        except Exception as e:
            await _abort(context, e, self._log, "HashKV")

    async def Defragment(self, request: Any, context: Any) -> Any:
        try:
            await self._admin()
            await self._member.defragment()
            return rpc_pb2.DefragmentResponse()  # etcd's answer has no header
        except Exception as e:
            await _abort(context, e, self._log, "Defragment")

    async def Snapshot(self, request: Any, context: Any) -> Any:
        # etcd: 32 KiB chunks with the bytes remaining, then the SHA-256 of everything sent.
        # The bytes are etcd's snapshot format, a bbolt file (the member converts a copy of its
        # backend), so that etcdctl's and etcdutl's snapshot status and restore take them.
        try:
            await self._admin()
            db_size = self._member.status().db_size
        except Exception as e:
            await _abort(context, e, self._log, "Snapshot")
        started = time.monotonic()
        slow = asyncio.create_task(self._warn_slow_snapshot(started, db_size))
        try:
            try:
                path = await self._member.snapshot_file()
            except Exception as e:
                await _abort(context, e, self._log, "Snapshot")
            try:
                await self._send_snapshot(path, context, started)
            finally:
                os.remove(path)  # sent, failed or the client gone
        finally:
            slow.cancel()

    async def _send_snapshot(self, path: str, context: Any, started: float) -> None:
        size = os.path.getsize(path)
        self._info("sending database snapshot to client", size)
        digest = hashlib.sha256()
        sent = 0
        with open(path, "rb") as f:
            while sent < size:
                chunk = await asyncio.to_thread(f.read, SNAPSHOT_CHUNK_BYTES)
                if not chunk:
                    break
                sent += len(chunk)
                digest.update(chunk)
                await context.write(
                    rpc_pb2.SnapshotResponse(remaining_bytes=size - sent, blob=chunk)
                )
        sha = digest.digest()
        if self._log is not None:
            self._log.info(
                "sending database sha256 checksum to client",
                total_bytes=size,
                checksum_size=len(sha),
            )
        await context.write(rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=sha))
        self._info(
            "successfully sent database snapshot to client",
            size,
            took=humanize_time_ago(time.monotonic() - started),
        )

    def _info(self, msg: str, size: int, **fields: Any) -> None:
        if self._log is not None:
            self._log.info(msg, total_bytes=size, size=humanize_bytes(size), **fields)

    async def _warn_slow_snapshot(self, started: float, size: int) -> None:
        # etcd's backend warns while a snapshot is open longer than it would take at 100 MiB/s
        # (at least 30 s), and again each such period; here the copy and conversion count too.
        period_s = max(size / SNAPSHOT_SEND_RATE_BYTES, SNAPSHOT_WARNING_MIN_S)
        while True:
            await asyncio.sleep(period_s)
            if self._log is not None:
                self._log.warn(
                    "snapshotting taking too long to transfer",
                    taking=go_duration(time.monotonic() - started),
                    bytes=size,
                    size=humanize_bytes(size),
                )

    async def MoveLeader(self, request: Any, context: Any) -> Any:
        try:
            await self._member.move_leader(request.targetID)
            return rpc_pb2.MoveLeaderResponse()  # etcd sends no header here
        except Exception as e:
            await _abort(context, e, self._log, "MoveLeader")

    async def Alarm(self, request: Any, context: Any) -> Any:
        try:
            if request.action == rpc_pb2.AlarmRequest.GET:
                header, alarms = self._member.alarms()
                if request.alarm != rpc_pb2.NONE:  # etcd: only the alarms of that type
                    alarms = tuple(a for a in alarms if a[1] == request.alarm)
            elif request.action not in _ALARM_CHANGES or request.alarm not in _ALARM_TYPES:
                # Enums are open: etcd 3.5's applier changes nothing for an unknown action and
                # stops the member on an unknown alarm to activate (3.4 crashed on both); an
                # unknown alarm is never active. Answered without a proposal: nothing changes.
                header, alarms = self._member.alarms()[0], ()
            else:
                header, alarms = await self._member.alarm_change(
                    request.action, request.memberID, request.alarm
                )
            return rpc_pb2.AlarmResponse(
                header=convert.header_pb(header),
                alarms=[
                    rpc_pb2.AlarmMember(memberID=m, alarm=a)  # type: ignore[arg-type]
                    for m, a in alarms
                ],
            )
        except Exception as e:
            await _abort(context, e, self._log, "Alarm")


_ALARM_CHANGES = frozenset({rpc_pb2.AlarmRequest.ACTIVATE, rpc_pb2.AlarmRequest.DEACTIVATE})
_ALARM_TYPES = frozenset({rpc_pb2.NONE, rpc_pb2.NOSPACE, rpc_pb2.CORRUPT})

# etcd's rpctypes for the membership errors (api/v3rpc/rpctypes/error.go).
_MEMBERSHIP_STATUS: dict[type[Exception], tuple[grpc.StatusCode, str]] = {
    server_errors.MemberExistError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: member ID already exist",
    ),
    server_errors.PeerURLExistError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: Peer URLs already exists",
    ),
    server_errors.MemberNotFoundError: (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found"),
    server_errors.NotEnoughStartedMembersError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: re-configuration failed due to not enough started members",
    ),
    server_errors.UnhealthyClusterError: (
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: unhealthy cluster",
    ),
    server_errors.LearnerNotReadyError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: can only promote a learner member which is in sync with leader",
    ),
    server_errors.MemberNotLearnerError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: can only promote a learner member",
    ),
    server_errors.TooManyLearnersError: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: too many learner members in cluster",
    ),
}


def _member_pb(m: MemberInfo) -> Any:
    return rpc_pb2.Member(
        ID=m.id,
        name=m.name,
        peerURLs=list(m.peer_urls),
        clientURLs=list(m.client_urls),
        isLearner=m.is_learner,
    )


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    """etcd's Cluster service: membership changes go through raft as conf changes."""

    def __init__(self, member: KVMember, log: Logger | None = None) -> None:
        self._member = member
        self._log = log

    async def _fail(self, context: Any, e: Exception, method: str) -> NoReturn:
        if isinstance(e, grpc.aio.AioRpcError):  # the leader's answer to a forwarded call
            await context.abort(e.code(), e.details() or "")
        found = _MEMBERSHIP_STATUS.get(type(e))
        if found is not None:
            await context.abort(*found)
        await _abort(context, e, self._log, method)

    async def MemberList(self, request: Any, context: Any) -> Any:
        try:
            if request.linearizable:
                header, members = await self._member.members_linearizable()
            else:
                header, members = self._member.members()
            return rpc_pb2.MemberListResponse(
                header=convert.header_pb(header), members=[_member_pb(m) for m in members]
            )
        except Exception as e:
            await self._fail(context, e, "MemberList")

    async def MemberAdd(self, request: Any, context: Any) -> Any:
        try:
            await self._member.gate.admin(CALL_CREDENTIALS.get())  # etcd: admin only
            header, added, members = await self._member.member_add(
                tuple(request.peerURLs), bool(request.isLearner)
            )
            return rpc_pb2.MemberAddResponse(
                header=convert.header_pb(header),
                member=_member_pb(added),
                members=[_member_pb(m) for m in members],
            )
        except Exception as e:
            await self._fail(context, e, "MemberAdd")

    async def MemberRemove(self, request: Any, context: Any) -> Any:
        try:
            await self._member.gate.admin(CALL_CREDENTIALS.get())
            header, members = await self._member.member_remove(request.ID)
            return rpc_pb2.MemberRemoveResponse(
                header=convert.header_pb(header), members=[_member_pb(m) for m in members]
            )
        except Exception as e:
            await self._fail(context, e, "MemberRemove")

    async def MemberUpdate(self, request: Any, context: Any) -> Any:
        try:
            await self._member.gate.admin(CALL_CREDENTIALS.get())
            header, members = await self._member.member_update(request.ID, tuple(request.peerURLs))
            return rpc_pb2.MemberUpdateResponse(
                header=convert.header_pb(header), members=[_member_pb(m) for m in members]
            )
        except Exception as e:
            await self._fail(context, e, "MemberUpdate")

    async def MemberPromote(self, request: Any, context: Any) -> Any:
        try:
            creds = CALL_CREDENTIALS.get()
            await self._member.gate.admin(creds)
            try:
                header, members = await self._member.member_promote(request.ID)
            except server_errors.NotLeaderError:
                # Only the leader knows the learner's progress: forward (etcd does it over its
                # peer HTTP API, petcd over the leader's client URL).
                endpoint = self._member.leader_client_endpoint()
                if endpoint is None:
                    raise server_errors.NoLeaderError() from None
                async with grpc.aio.insecure_channel(endpoint) as ch:
                    stub = rpc_pb2_grpc.ClusterStub(ch)  # type: ignore[no-untyped-call]
                    token = None if creds is None else creds.token
                    return await stub.MemberPromote(
                        request,
                        timeout=context.time_remaining(),
                        metadata=None if token is None else (("token", token),),
                    )
            return rpc_pb2.MemberPromoteResponse(
                header=convert.header_pb(header), members=[_member_pb(m) for m in members]
            )
        except Exception as e:
            await self._fail(context, e, "MemberPromote")


SNAPSHOT_CHUNK_BYTES = 32 * 1024
# etcd's slow snapshot warning: the time the snapshot would take at this rate, at least 30 s.
SNAPSHOT_SEND_RATE_BYTES = 100 * 1024 * 1024
SNAPSHOT_WARNING_MIN_S = 30.0

# etcd: grpcOverheadBytes, the room a request message may take beyond --max-request-bytes.
GRPC_OVERHEAD_BYTES = 512 * 1024
_MAX_SEND_BYTES = 2**31 - 1


_KEEPALIVE_MIN_TIME_MS = 5_000
_KEEPALIVE_INTERVAL_MS = 2 * 3600 * 1000
_KEEPALIVE_TIMEOUT_MS = 20_000


def make_server(
    member: KVMember,
    listeners: list[tuple[str, int] | str],
    max_request_bytes: int,
    log: Logger,
    transport: str = "grpcio",
    http1: Callable[[socket.socket], None] | None = None,
    tls: ClientTLS | None = None,
    secure: Sequence[bool] | None = None,
) -> Any:
    """A grpc.aio server with etcd's services bound to ``listeners``, behind etcd's
    per-request checks (``petcd.grpc.interceptors``: learners, ``hasleader``); with
    ``transport="native"`` the same services on ``petcd.grpc.native.NativeServer``.

    Raises ``OSError`` if a listener cannot be bound, ``NativeTransportUnavailable`` if the
    native front end is asked for and not built. ``http1`` (native only) takes the
    connections that are not HTTP/2, as sockets. ``tls`` serves the listeners ``secure``
    marks (all, without it) with TLS; ``ConfigError`` when its files are unusable.
    """
    secure = list(secure) if secure is not None else [tls is not None] * len(listeners)
    listeners, secure, plain_too = merge_schemes(listeners, secure)
    if transport == "native":
        try:
            server: Any = _native_server(
                member, listeners, max_request_bytes, log, http1, tls, secure, plain_too
            )
        except ValueError as e:  # the front end's refusal of the TLS material
            raise ConfigError(f"cannot serve client TLS: {e}") from None
    else:
        both = [a for a, p in zip(listeners, plain_too, strict=True) if p]
        if both:
            shown = both[0] if isinstance(both[0], str) else join_host_port(*both[0])
            raise ConfigError(
                f"cannot serve both http and https on {shown} with --client-transport=grpcio "
                "(grpc.aio cannot tell them apart on one socket); use the native client "
                "transport (the default) or give them different ports"
            )
        server = _grpcio_server(member, max_request_bytes, tls is not None and any(secure))
    _add_services(server, member, max_request_bytes, log)
    if transport == "native":
        return server
    for listen, is_secure in zip(listeners, secure, strict=True):
        # grpc's form of a Unix socket's path
        address = f"unix:{listen}" if isinstance(listen, str) else join_host_port(*listen)
        if is_secure and tls is not None:
            bound = server.add_secure_port(address, tls.grpc_credentials())
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"cannot listen on {address}")
    return server


def _native_server(
    member: KVMember,
    listeners: list[tuple[str, int] | str],
    max_request_bytes: int,
    log: Logger,
    http1: Callable[[socket.socket], None] | None,
    tls: ClientTLS | None,
    secure: list[bool],
    plain_too: list[bool],
) -> NativeServer:
    return NativeServer(
        listeners,
        max_recv_bytes=max_request_bytes + GRPC_OVERHEAD_BYTES,
        max_send_bytes=_MAX_SEND_BYTES,
        interceptors=[
            RequestGuard(
                member,
                member.cfg.election_timeout_ms / 1000.0,
                registry=member.metrics.registry,
            )
        ],
        keepalive_min_time_ms=_KEEPALIVE_MIN_TIME_MS,
        keepalive_interval_ms=_KEEPALIVE_INTERVAL_MS,
        keepalive_timeout_ms=_KEEPALIVE_TIMEOUT_MS,
        log=log,
        http1=http1,
        tls=None if tls is None or not any(secure) else tls.frontend_args(),
        secure=secure,
        plain_too=plain_too,
        registry=member.metrics.registry,
    )


def _grpcio_server(member: KVMember, max_request_bytes: int, tls: bool) -> Any:
    return grpc.aio.server(
        interceptors=[
            RequestGuard(
                member,
                member.cfg.election_timeout_ms / 1000.0,
                registry=member.metrics.registry,
                tls_names=tls and member.cfg.client_cert_auth,
            )
        ],
        options=[
            ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD_BYTES),
            ("grpc.max_send_message_length", _MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),
            # etcd's keepalive policy (its --grpc-keepalive-* defaults): clients may ping every
            # 5 s even on an idle connection (Kubernetes pings every 30 s); grpc core's default
            # minimum of 5 minutes answers such pings with GOAWAY too_many_pings.
            ("grpc.http2.min_ping_interval_without_data_ms", _KEEPALIVE_MIN_TIME_MS),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.keepalive_time_ms", _KEEPALIVE_INTERVAL_MS),
            ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ],
    )


def add_kv_service(service: KVService, server: Any) -> None:
    """Register ``service`` as etcdserverpb.KV, as the generated ``add_KVServicer_to_server``
    does, except that Range, Put and Txn have no response serializer: they answer bytes
    (``raw``)."""
    service.raw = True
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=request.FromString,
            response_serializer=None if response is None else response.SerializeToString,
        )
        for name, behavior, request, response in (
            ("Range", service.Range, rpc_pb2.RangeRequest, None),
            ("Put", service.Put, rpc_pb2.PutRequest, None),
            ("DeleteRange", service.DeleteRange, rpc_pb2.DeleteRangeRequest,
             rpc_pb2.DeleteRangeResponse),
            ("Txn", service.Txn, rpc_pb2.TxnRequest, None),
            ("Compact", service.Compact, rpc_pb2.CompactionRequest, rpc_pb2.CompactionResponse),
        )
    }  # fmt: skip
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("etcdserverpb.KV", handlers),)
    )
    server.add_registered_method_handlers("etcdserverpb.KV", handlers)


def _add_services(server: Any, member: KVMember, max_request_bytes: int, log: Logger) -> None:
    kv = KVService(member, log)
    add_kv_service(kv, server)
    if isinstance(server, NativeServer):
        for method, form in kv.submit_forms():
            server.add_unary_submit(method, form)
        server.add_unary_now(kv.Range, kv.range_now)
        member.add_answers_listener(server.flush_answers)
    add_watch_service(
        WatchService(member, log, fragment_bytes_max=max_request_bytes + GRPC_OVERHEAD_BYTES),
        server,
    )
    rpc_pb2_grpc.add_LeaseServicer_to_server(  # type: ignore[no-untyped-call]
        LeaseService(member, log), server
    )
    rpc_pb2_grpc.add_ClusterServicer_to_server(  # type: ignore[no-untyped-call]
        ClusterService(member, log), server
    )
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(  # type: ignore[no-untyped-call]
        MaintenanceService(member, log), server
    )
    v3election_pb2_grpc.add_ElectionServicer_to_server(  # type: ignore[no-untyped-call]
        ElectionService(member, log), server
    )
    v3lock_pb2_grpc.add_LockServicer_to_server(  # type: ignore[no-untyped-call]
        LockService(member, log), server
    )
    rpc_pb2_grpc.add_AuthServicer_to_server(  # type: ignore[no-untyped-call]
        AuthService(member.gate, member, log), server
    )
    add_health_service(server)
