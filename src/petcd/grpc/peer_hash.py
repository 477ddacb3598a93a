"""Fetch the peers' HashKV over their client URLs: the corruption checks' transport.

Theory of operation
-------------------
``GrpcPeerHashFetcher`` implements ``petcd.server.corrupt.PeerHashFetcher`` (see that module
for why petcd asks the peers' Maintenance.HashKV rather than a peer-protocol message). For
each peer, one after the other as etcd's getPeerHashKVs, it tries the peer's client URLs in
order with one ``HashKV(revision)`` call each, bounded by ``timeout_s``, and keeps the first
answer. etcd's errors come back as gRPC statuses and are classified as etcd classifies its
peer endpoint's answers: ``... required revision is a future revision`` (the peer is behind),
``... required revision has been compacted``, and a response header from another cluster
(etcd's ``X-Etcd-Cluster-ID`` check). Anything else (refused, timed out) is logged as etcd's
``failed hash kv request``; the next URL is tried in every case, as etcd does. Channels live
only for one call.

An ``https`` URL is dialled with this member's client TLS (``credentials``): the peer's
certificate verified against ``--trusted-ca-file`` (the system's CAs without it), and
``--client-cert-file`` (else ``--cert-file``) presented, as etcd presents it when it connects
to client URLs. A member without client TLS of its own, or with ``--auto-tls`` (whose
self-signed certificates nobody can verify), finds such a peer unreachable. ``unixs`` URLs
are not dialled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from petcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.grpc.interceptors import PEER_HASHKV
from petcd.mvcc.errors import CompactedError, FutureRevisionError
from petcd.server.corrupt import FailureKind, PeerFailure, PeerHash, PeerResult, PeerTarget
from petcd.server.ids import format_id
from petcd.server.log import Logger


class _Failed(Exception):
    def __init__(self, kind: FailureKind, error: str) -> None:
        super().__init__(error)
        self.kind = kind


# (root CAs or None for the system's, private key, certificate chain), PEM
Credentials = tuple[bytes | None, bytes, bytes]


def _target(url: str) -> tuple[str, bool]:
    """grpc's target for a client URL, and whether it is TLS."""
    scheme, _, rest = url.partition("://")
    if not rest:
        return url, False  # host:port already
    if scheme not in ("http", "https", "unix"):
        raise _Failed(FailureKind.UNREACHABLE, f"unsupported client URL scheme {scheme!r}")
    # unix://etcd.unix:1 is the file etcd.unix:1 (etcd's form); grpc's is unix:etcd.unix:1.
    if scheme == "unix":
        return f"unix:{rest}", False
    return rest.rstrip("/"), scheme == "https"


class GrpcPeerHashFetcher:
    def __init__(
        self,
        local_id: int,
        log: Logger,
        timeout_s: float,
        credentials: Credentials | None = None,
    ) -> None:
        """``credentials``: for ``https`` URLs (see the module's docstring)."""
        self._local_id = local_id
        self._log = log
        self._timeout_s = timeout_s
        self._tls: Any = None
        if credentials is not None:
            roots, key, chain = credentials
            self._tls = grpc.ssl_channel_credentials(roots, key, chain)
        else:
            self._tls = grpc.ssl_channel_credentials()  # the system's CAs, no certificate

    async def __call__(
        self, cluster_id: int, peers: Sequence[PeerTarget], revision: int
    ) -> list[PeerResult]:
        out: list[PeerResult] = []
        for p in peers:
            result: PeerResult = PeerFailure(
                p.member_id,
                p.endpoints,
                FailureKind.UNREACHABLE,
                "the member has not published client URLs",
            )
            for ep in p.endpoints:
                try:
                    result = await self._one(cluster_id, p, ep, revision)
                    break
                except _Failed as e:
                    result = PeerFailure(p.member_id, p.endpoints, e.kind, str(e))
                    self._log.warn(
                        "failed hash kv request",
                        local_member_id=format_id(self._local_id),
                        requested_revision=revision,
                        remote_peer_endpoint=ep,
                        error=str(e),
                    )
            out.append(result)
        return out

    async def _one(self, cluster_id: int, p: PeerTarget, url: str, revision: int) -> PeerHash:
        target, tls = _target(url)
        try:
            async with (
                grpc.aio.secure_channel(target, self._tls)
                if tls
                else grpc.aio.insecure_channel(target)
            ) as channel:
                stub: Any = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
                resp = await stub.HashKV(
                    rpc_pb2.HashKVRequest(revision=revision),
                    timeout=self._timeout_s,
                    metadata=(PEER_HASHKV,),  # a learner answers its peers (not clients)
                )
        except grpc.aio.AioRpcError as e:
            details = e.details() or ""
            if FutureRevisionError.message in details:
                raise _Failed(FailureKind.FUTURE_REVISION, details) from None
            if CompactedError.message in details:
                raise _Failed(FailureKind.COMPACTED, details) from None
            raise _Failed(FailureKind.UNREACHABLE, f"{e.code().name}: {details}") from None
        if resp.header.cluster_id != cluster_id:
            raise _Failed(
                FailureKind.CLUSTER_ID_MISMATCH,
                f"cluster ID mismatch: {format_id(resp.header.cluster_id)} != "
                f"{format_id(cluster_id)}",
            )
        return PeerHash(
            p.member_id,
            p.endpoints,
            revision=int(resp.header.revision),
            hash=int(resp.hash),
            compact_revision=int(resp.compact_revision),
        )
