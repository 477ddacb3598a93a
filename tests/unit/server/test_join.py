"""petcd.server.join: a joining member finds its id (given by ``member add``) by its peer URLs."""

from __future__ import annotations

import pytest

from petcd.peer import HandshakeStatus, encode_member_listing
from petcd.raft.types import MemberId
from petcd.server import join
from petcd.server.errors import JoinError

CID = 0xC1A55E5
A, B, NEW = MemberId(0xA1), MemberId(0xB2), MemberId(0x3E1A57C0DE)
URL_A, URL_B, URL_NEW = "http://10.0.0.1:2380", "http://10.0.0.2:2380", "http://10.0.0.3:2380"


class FakeCluster:
    """Listeners at peer URLs: each answers the handshakes from its applied member list."""

    def __init__(self, members: dict[str, dict[MemberId, tuple[str, ...]] | None]) -> None:
        self.members = members  # url -> that listener's members (None: an old listener)
        self.asked: list[str] = []

    def probe(self, url: str, cluster_id: int, from_: int, to: int) -> tuple[int, str]:
        if url not in self.members:
            raise ConnectionRefusedError(f"connection refused: {url}")
        assert (cluster_id, from_, to) == (0, 0, 0)
        return HandshakeStatus.CLUSTER_MISMATCH, (
            f"request cluster ID mismatch: local {CID:x}, remote 0"
        )

    def list_members(self, url: str, cluster_id: int) -> tuple[int, str]:
        self.asked.append(url)
        assert cluster_id == CID
        members = self.members[url]
        if members is None:
            return HandshakeStatus.BAD_PROTOCOL, "unsupported peer protocol version 1 kind 3"
        return HandshakeStatus.OK, encode_member_listing(members)


def _discover(
    cluster: FakeCluster, others: list[list[str]], timeout_s: float = 0.0
) -> join.JoinInfo:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    return join.discover(
        [URL_NEW],
        others,
        timeout_s=timeout_s,
        probe_fn=cluster.probe,
        members_fn=cluster.list_members,
        sleep=sleep,
        clock=lambda: now[0],
    )


def test_the_id_is_that_of_the_member_with_our_peer_urls() -> None:
    listing: dict[MemberId, tuple[str, ...]] = {A: (URL_A,), B: (URL_B,), NEW: (URL_NEW,)}
    info = _discover(FakeCluster({URL_A: listing, URL_B: listing}), [[URL_A], [URL_B]])
    assert info == join.JoinInfo(CID, NEW, {A: (URL_A,), B: (URL_B,)})


def test_the_peer_urls_are_compared_as_a_set() -> None:
    second = "http://10.0.0.3:2390"
    listing: dict[MemberId, tuple[str, ...]] = {A: (URL_A,), NEW: (second, URL_NEW)}
    now = [0.0]
    cluster = FakeCluster({URL_A: listing})
    info = join.discover(
        [URL_NEW, second],
        [[URL_A]],
        timeout_s=0,
        probe_fn=cluster.probe,
        members_fn=cluster.list_members,
        sleep=lambda s: None,
        clock=lambda: now[0],
    )
    assert info.member_id == NEW


def test_a_listener_that_has_not_applied_the_addition_is_skipped() -> None:
    old: dict[MemberId, tuple[str, ...]] = {A: (URL_A,), B: (URL_B,)}
    new = {**old, NEW: (URL_NEW,)}
    # A is down, B lags, and an old petcd at a third URL does not know the request.
    cluster = FakeCluster({URL_B: old, "http://10.0.0.9:2380": None})
    with pytest.raises(JoinError, match="member add"):
        _discover(cluster, [[URL_A], [URL_B, "http://10.0.0.9:2380"]], timeout_s=1.0)
    assert cluster.asked.count(URL_B) >= 5  # retried every 0.2 s until the deadline
    cluster.members[URL_A] = new
    info = _discover(cluster, [[URL_A], [URL_B]])
    assert info.member_id == NEW and set(info.peers) == {A, B}


def test_no_peer_at_all_is_a_join_error() -> None:
    with pytest.raises(JoinError, match="connection refused"):
        _discover(FakeCluster({}), [[URL_A]])
    with pytest.raises(JoinError, match="no peer URLs"):
        _discover(FakeCluster({}), [])
