"""petcd.server.ids: etcd's member and cluster ids."""

from __future__ import annotations

from petcd.raft.types import MemberId
from petcd.server.ids import RequestIdGenerator, cluster_id, format_id, member_id


def test_default_member_and_cluster_ids_match_etcd() -> None:
    mid = member_id(["http://localhost:2380"], "etcd-cluster")
    assert format_id(mid) == "8e9e05c52164694d"
    assert format_id(cluster_id([mid])) == "cdf818194e3a8c32"


def test_member_id_depends_on_sorted_urls_token_and_time() -> None:
    a = member_id(["http://b:2380", "http://a:2380"], "t")
    assert a == member_id(["http://a:2380", "http://b:2380"], "t")
    assert a != member_id(["http://a:2380", "http://b:2380"], "u")
    assert a != member_id(["http://a:2380", "http://b:2380"], "t", added_unix_s=1)


def test_cluster_id_is_order_independent() -> None:
    ids = [MemberId(3), MemberId(1), MemberId(2)]
    assert cluster_id(ids) == cluster_id(sorted(ids))


def test_request_ids_are_unique_and_carry_the_member() -> None:
    gen = RequestIdGenerator(MemberId(0x1234_5678_9ABC_DEF0), now_ms=1_700_000_000_000)
    ids = [gen.next() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i >> 48 == 0xDEF0 for i in ids)
