"""``merge_schemes``: an http and an https client URL of one address are one listener.

etcd 3.5 serves both on one socket; the native front end tells a connection's TLS from plain
by its first byte (what a real client sees: tests/compat/test_both_schemes_compat.py).
grpc.aio cannot, so ``--client-transport=grpcio`` refuses such URLs before binding anything.
"""

from __future__ import annotations

from typing import Any

import pytest

from petcd.grpc.services import make_server, merge_schemes
from petcd.server.errors import ConfigError


def test_one_listener_per_address_in_first_seen_order() -> None:
    listeners: list[tuple[str, int] | str] = [
        ("127.0.0.1", 1),
        ("127.0.0.1", 2),
        ("127.0.0.1", 1),
        "etcd.sock",
        "etcd.sock",
        ("::1", 2),
    ]
    assert merge_schemes(listeners, [False, True, True, True, True, False]) == (
        [("127.0.0.1", 1), ("127.0.0.1", 2), "etcd.sock", ("::1", 2)],
        [True, True, True, False],  # serves TLS
        [True, False, False, False],  # and plain connections too
    )
    assert merge_schemes([("h", 1), ("h", 1)], [False, False]) == ([("h", 1)], [False], [False])


def test_grpcio_transport_refuses_both_schemes_on_one_port() -> None:
    member: Any = object()  # refused before the member is used
    with pytest.raises(ConfigError, match=r"both http and https on 127\.0\.0\.1:7 with --client-"):
        make_server(
            member,
            [("127.0.0.1", 7), ("127.0.0.1", 7)],
            1024,
            log=None,  # type: ignore[arg-type]
            transport="grpcio",
            tls=object(),  # type: ignore[arg-type]
            secure=[False, True],
        )
