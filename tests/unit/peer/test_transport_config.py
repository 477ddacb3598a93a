"""petcd.peer.transport: peer URLs and TransportConfig are validated before anything dials."""

from __future__ import annotations

from pathlib import Path

import pytest

from petcd.peer import PeerUrl, PeerUrlError, TransportConfig, parse_peer_url
from petcd.raft.types import MemberId


def test_parse_peer_urls() -> None:
    assert parse_peer_url("http://127.0.0.1:2380") == PeerUrl("127.0.0.1", 2380, False)
    assert parse_peer_url("https://node1.example:12380/") == PeerUrl("node1.example", 12380, True)
    assert parse_peer_url("http://[::1]:2380") == PeerUrl("::1", 2380, False)
    # etcd's unix URLs: the socket file is host:port (and path) as written.
    u = parse_peer_url("unix://etcd.unix:1")
    assert u == PeerUrl("etcd.unix", 1, False, "etcd.unix:1")
    assert (u.address, u.server_name) == ("etcd.unix:1", "etcd.unix")
    u = parse_peer_url("unixs:///run/etcd/peer.sock")
    assert u == PeerUrl("", 0, True, "/run/etcd/peer.sock")
    assert u.server_name == "peer.sock"


@pytest.mark.parametrize(
    "url",
    [
        "unix:sock",
        "unix://",
        "ftp://127.0.0.1:2380",
        "http://127.0.0.1",
        "http://:2380",
        "http://127.0.0.1:2380/raft",
        "http://127.0.0.1:99999",
        "127.0.0.1:2380",
    ],
)
def test_bad_peer_urls_are_refused(url: str) -> None:
    with pytest.raises(PeerUrlError):
        parse_peer_url(url)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"member_id": MemberId(0)},
        {"cluster_id": -1},
        {"cluster_id": 1 << 64},
        {"queue_messages_max": 0},
        {"backoff_initial_seconds": 2.0, "backoff_max_seconds": 1.0},
        {"backoff_initial_seconds": 0.0},
        {"dial_timeout_seconds": 0.0},
        {"snapshot_chunk_bytes": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, object], tmp_path: Path) -> None:
    base: dict[str, object] = {"cluster_id": 1, "member_id": MemberId(1), "snapshot_dir": tmp_path}
    TransportConfig(**base)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TransportConfig(**{**base, **kwargs})  # type: ignore[arg-type]
