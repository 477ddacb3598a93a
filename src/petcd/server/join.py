"""Joining a running cluster (``--initial-cluster-state existing``): who am I, and in which cluster.

Theory of operation
-------------------
etcd's joining member asks the existing members' peer URLs for ``/members`` over HTTP and
finds its own id by its peer URLs in the answer. petcd's peers speak only the binary peer
protocol (``petcd.peer``, docs/enhancements/0005-peer-transport.md), so a joining member learns
the same facts from the listener's handshake replies, without sending a raft message:

1. the cluster id: a hello with cluster id 0 is refused with ``CLUSTER_MISMATCH`` and the
   reason names the listener's cluster id (``... local <hex>, remote 0``);
2. each existing member's id: a hello with the right cluster id, a sender the listener knows and
   receiver 0 is refused with ``RECEIVER_MISMATCH`` naming the listener's own id;
3. its own id: ``Cluster.MemberAdd`` gives the k-th member ever added with the same peer URLs
   the id ``member_id(peer_urls, token, k)`` (k = 1, 2, ...: etcd's formula with a sequence
   number where etcd puts the time of the addition), skipping ids in use or removed. The
   joining member tries k = 1, 2, ... as the sender: ``REMOVED`` means an earlier member with
   these URLs, ``RECEIVER_MISMATCH`` (known sender) is its id, ``UNKNOWN_SENDER`` means no
   member was added with that id (the peer may lag: the probe is retried).

The peer URLs of the other members come from ``--initial-cluster`` (etcd's ``member add``
prints the line to use). Probes are plain blocking sockets: they run once, at start, before
the event loop serves anything. TLS peer URLs are not probed (reported as a ``JoinError``).

Never: send a raft message, or keep a probe connection open (every reply is a refusal).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from petcd.peer import HandshakeStatus, parse_peer_url
from petcd.peer.codec import (
    KIND_STREAM,
    REPLY_HEADER_BYTES,
    Hello,
    decode_reply_header,
    encode_hello,
)
from petcd.raft.types import MemberId
from petcd.server.errors import JoinError
from petcd.server.ids import member_id

ADDED_MEMBER_SEQ_MAX = 1000  # ids tried per set of peer URLs
_LOCAL_ID = re.compile(r"local ([0-9a-f]+)")


def added_member_id(peer_urls: Sequence[str], token: str, seq: int) -> MemberId:
    """The id of the ``seq``-th member (from 1) added at run time with these peer URLs."""
    assert seq >= 1
    return member_id(peer_urls, token, seq)


@dataclass(frozen=True, slots=True)
class JoinInfo:
    cluster_id: int
    member_id: MemberId
    peers: dict[MemberId, tuple[str, ...]]  # the other members reached, by id


Probe = Callable[[str, int, int, int], tuple[int, str]]


def probe(
    url: str, cluster_id: int, from_: int, to: int, timeout_s: float = 1.0
) -> tuple[int, str]:
    """One handshake with the listener at ``url``: its (status, reason). Raises ``OSError``."""
    u = parse_peer_url(url)
    if u.tls:
        raise JoinError(f"cannot join through TLS peer URL {url} (not supported yet)")
    with socket.create_connection((u.host, u.port), timeout=timeout_s) as s:
        s.sendall(encode_hello(Hello(KIND_STREAM, cluster_id, MemberId(from_), MemberId(to))))
        head = _read_exactly(s, REPLY_HEADER_BYTES)
        status, n = decode_reply_header(head)
        reason = _read_exactly(s, n).decode(errors="replace") if n else ""
    return status, reason


def _read_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("peer closed the connection during the handshake")
        buf += chunk
    return buf


def _local_id(reason: str) -> int | None:
    m = _LOCAL_ID.search(reason)
    return int(m.group(1), 16) if m else None


def discover(
    own_peer_urls: Sequence[str],
    other_peer_urls: Sequence[Sequence[str]],
    token: str,
    *,
    timeout_s: float,
    probe_fn: Probe = probe,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JoinInfo:
    """Learn the cluster id, this member's id and the other members' ids (see above)."""
    deadline = clock() + timeout_s
    last_error = "no peer URLs in --initial-cluster besides this member's"
    while True:
        for urls in other_peer_urls:
            for url in urls:
                try:
                    info = _discover_through(url, own_peer_urls, other_peer_urls, token, probe_fn)
                except OSError as e:
                    last_error = f"{url}: {e}"
                    continue
                except _NotYet as e:
                    last_error = f"{url}: {e}"
                    continue
                return info
        if clock() >= deadline:
            raise JoinError(f"cannot join the cluster through its peers: {last_error}")
        sleep(0.2)


class _NotYet(Exception):
    pass


def _discover_through(
    url: str,
    own_peer_urls: Sequence[str],
    other_peer_urls: Sequence[Sequence[str]],
    token: str,
    probe_fn: Probe,
) -> JoinInfo:
    status, reason = probe_fn(url, 0, 0, 0)
    cid = _local_id(reason) if status == HandshakeStatus.CLUSTER_MISMATCH else None
    if cid is None:
        raise _NotYet(f"unexpected handshake reply {status} {reason!r}")
    me: MemberId | None = None
    for seq in range(1, ADDED_MEMBER_SEQ_MAX + 1):
        cand = added_member_id(own_peer_urls, token, seq)
        status, reason = probe_fn(url, cid, cand, 0)
        if status == HandshakeStatus.REMOVED:
            continue
        if status == HandshakeStatus.RECEIVER_MISMATCH:
            me = cand
            break
        raise _NotYet(f"this member ({' '.join(own_peer_urls)}) is not a member yet: {reason}")
    if me is None:
        raise JoinError("too many members were added with these peer URLs")
    peers: dict[MemberId, tuple[str, ...]] = {}
    for urls in other_peer_urls:
        for u in urls:
            try:
                status, reason = probe_fn(u, cid, me, 0)
            except OSError:
                continue
            pid = _local_id(reason) if status == HandshakeStatus.RECEIVER_MISMATCH else None
            if pid is not None:
                peers[MemberId(pid)] = tuple(urls)
                break
    return JoinInfo(cid, me, peers)
