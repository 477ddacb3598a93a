"""Member ids, cluster ids and request ids, derived the way etcd derives them.

Theory of operation
-------------------
etcd names every member of a cluster by a 64-bit id computed from what the operator gave it,
so that every founding member computes the same ids for all members without talking to each
other (``membership.NewMember`` / ``computeMemberId``): SHA-1 over the member's peer URLs
(sorted, concatenated without separator) followed by the cluster token (``--initial-cluster-
token``), and, for a member added later at run time, the Unix time of the addition in decimal;
the id is the first 8 bytes of the digest, big-endian. The cluster id is SHA-1 over the sorted
member ids (8 bytes big-endian each), first 8 bytes (``RaftCluster.genID``).

For the default single member (peer URL ``http://localhost:2380``, token ``etcd-cluster``)
this gives etcd's well-known ids: member ``8e9e05c52164694d``, cluster ``cdf818194e3a8c32``.

``RequestIdGenerator`` gives the ids that tie a committed raft entry back to the client waiting
for it (etcd's ``idutil.Generator``): the low 16 bits of the member id, then 48 bits that start
at the start time in milliseconds shifted left by 8 and count up by one per request. Ids are
unique per member across restarts as long as fewer than 256 requests per millisecond of
uptime are issued; the member only uses them to find its own waiters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from petcd.raft.types import MemberId

_MASK_48 = (1 << 48) - 1


def member_id(
    peer_urls: Iterable[str], cluster_token: str, added_unix_s: int | None = None
) -> MemberId:
    data = "".join(sorted(peer_urls)) + cluster_token
    if added_unix_s is not None:
        data += str(added_unix_s)
    digest = hashlib.sha1(data.encode()).digest()
    return MemberId(int.from_bytes(digest[:8], "big"))


def cluster_id(member_ids: Iterable[MemberId]) -> int:
    data = b"".join(int(m).to_bytes(8, "big") for m in sorted(member_ids))
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


def format_id(value: int) -> str:
    """etcd's ``types.ID.String()``: lower-case hex without leading zeros."""
    return f"{value:x}"


class RequestIdGenerator:
    def __init__(self, member: MemberId, now_ms: int) -> None:
        self._prefix = (int(member) & 0xFFFF) << 48
        self._suffix = (now_ms << 8) & _MASK_48

    def next(self) -> int:
        self._suffix = (self._suffix + 1) & _MASK_48
        return self._prefix | self._suffix
