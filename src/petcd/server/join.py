"""Joining a running cluster (``--initial-cluster-state existing``): who am I, and in which cluster.

Theory of operation
-------------------
etcd's ``member add`` gives the new member an id computed from its peer URLs and the time of
the addition (``petcd.server.ids.member_id``), so nobody but the cluster knows it; the new
member, started with ``--initial-cluster-state existing``, asks the existing members' peer URLs
for ``/members`` over HTTP and takes the id of the member whose peer URLs are its own. petcd's
peers speak only the binary peer protocol (``petcd.peer``, docs/enhancements/0005-peer-
transport.md), so a joining member asks the same through two handshakes, without sending a
raft message:

1. the cluster id: a hello with cluster id 0 is refused with ``CLUSTER_MISMATCH`` and the
   reason names the listener's cluster id (``... local <hex>, remote 0``);
2. the members: a ``KIND_MEMBERS`` hello with that cluster id is answered ``OK`` with the
   listener's applied members and their peer URLs (JSON, ``petcd.peer.decode_member_listing``).
   Its own id is that of the member whose peer URLs equal its ``--initial-advertise-peer-urls``
   (as etcd compares them: the same set); the others are the peers it dials.

A listener that has not applied the addition yet does not list the new member: the joining
member asks the next URL, and keeps asking until ``timeout_s`` (a ``JoinError`` then). The
cluster token is not involved (etcd's ``member add`` prints none). The peer URLs asked come
from ``--initial-cluster`` (etcd's ``member add`` prints the line to use). Probes are plain
blocking sockets: they run once, at start, before the event loop serves anything. ``https``
peer URLs are probed through the member's peer TLS client context (``ssl_context``); without
one they are reported as a ``JoinError``. A ``unix://`` peer URL is probed on its socket file.

Never: send a raft message, or keep a probe connection open.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from petcd.peer import (
    CodecError,
    HandshakeStatus,
    PeerUrl,
    decode_member_listing,
    parse_peer_url,
)
from petcd.peer.codec import (
    KIND_MEMBERS,
    KIND_STREAM,
    REPLY_HEADER_BYTES,
    Hello,
    decode_reply_header,
    encode_hello,
)
from petcd.raft.types import MemberId
from petcd.server.errors import JoinError

_LOCAL_ID = re.compile(r"local ([0-9a-f]+)")


@dataclass(frozen=True, slots=True)
class JoinInfo:
    cluster_id: int
    member_id: MemberId
    peers: dict[MemberId, tuple[str, ...]]  # the other members, by id, with their peer URLs


Probe = Callable[[str, int, int, int], tuple[int, str]]
ListMembers = Callable[[str, int], tuple[int, str]]


def probe(
    url: str,
    cluster_id: int,
    from_: int,
    to: int,
    timeout_s: float = 1.0,
    kind: int = KIND_STREAM,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    """One handshake with the listener at ``url``: its (status, reason). Raises ``OSError``
    (``ssl.SSLError`` included)."""
    u = parse_peer_url(url)
    if u.tls and ssl_context is None:
        raise JoinError(f"cannot join through TLS peer URL {url} without peer TLS")
    with _connect(u, timeout_s) as raw:
        s = (
            ssl_context.wrap_socket(raw, server_hostname=u.server_name)
            if u.tls and ssl_context
            else raw
        )
        with s:
            s.sendall(encode_hello(Hello(kind, cluster_id, MemberId(from_), MemberId(to))))
            head = _read_exactly(s, REPLY_HEADER_BYTES)
            status, n = decode_reply_header(head)
            reason = _read_exactly(s, n).decode(errors="replace") if n else ""
    return status, reason


def _connect(u: PeerUrl, timeout_s: float) -> socket.socket:
    if not u.socket:
        return socket.create_connection((u.host, u.port), timeout=timeout_s)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout_s)
        s.connect(u.socket)
    except BaseException:
        s.close()
        raise
    return s


def list_members(
    url: str, cluster_id: int, *, ssl_context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    """A ``KIND_MEMBERS`` handshake: (status, the member listing when the status is OK)."""
    return probe(url, cluster_id, 0, 0, kind=KIND_MEMBERS, ssl_context=ssl_context)


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
    *,
    timeout_s: float,
    probe_fn: Probe = probe,
    members_fn: ListMembers = list_members,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JoinInfo:
    """Learn the cluster id, this member's id and the other members (see above)."""
    deadline = clock() + timeout_s
    while True:
        errors = []  # this round's, one per peer URL
        for urls in other_peer_urls:
            for url in urls:
                try:
                    return _discover_through(url, own_peer_urls, probe_fn, members_fn)
                except (OSError, _NotYet) as e:
                    errors.append(f"{url}: {e}")
        if clock() >= deadline:
            why = "; ".join(errors) or "no peer URLs in --initial-cluster besides this member's"
            raise JoinError(f"cannot join the cluster through its peers: {why}")
        sleep(0.2)


class _NotYet(Exception):
    pass


def _discover_through(
    url: str, own_peer_urls: Sequence[str], probe_fn: Probe, members_fn: ListMembers
) -> JoinInfo:
    status, reason = probe_fn(url, 0, 0, 0)
    cid = _local_id(reason) if status == HandshakeStatus.CLUSTER_MISMATCH else None
    if cid is None:
        raise _NotYet(f"unexpected handshake reply {status} {reason!r}")
    status, reason = members_fn(url, cid)
    if status != HandshakeStatus.OK:
        raise _NotYet(f"the member list was refused: {status} {reason!r}")
    try:
        members = decode_member_listing(reason)
    except CodecError as e:
        raise _NotYet(str(e)) from None
    own = set(own_peer_urls)
    mine = [mid for mid, urls in members.items() if set(urls) == own]
    if not mine:
        raise _NotYet(
            f"no member has the peer URLs {' '.join(sorted(own))} (add it with "
            "'etcdctl member add' first)"
        )
    me = mine[0]
    peers = {mid: urls for mid, urls in members.items() if mid != me}
    return JoinInfo(cid, me, peers)
