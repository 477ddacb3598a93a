"""petcd.server.gateway's pure parts: cobra's command lookup, pflag's parse of ``gateway
start``'s flags, Go's host:port split, and the round-robin choice of an endpoint."""

from __future__ import annotations

import pytest

from petcd.server.gateway import (
    GatewayFlagError,
    RoundRobin,
    _find_command,
    parse_start_flags,
)
from petcd.server.hostport import split_host_port


@pytest.mark.parametrize(
    ("args", "found"),
    [
        ([], ("gateway", [])),
        (["start"], ("start", [])),
        (["--endpoints=a:1", "start", "-h"], ("start", ["--endpoints=a:1", "-h"])),
        (["--endpoints", "a:1", "start"], ("start", ["--endpoints", "a:1"])),
        # A flag's value taken as the last argument: cobra stops looking (no command).
        (["--endpoints", "start"], ("gateway", ["--endpoints", "start"])),
        (["help", "start"], ("gateway", ["help", "start"])),
        (["--", "start"], ("gateway", ["--", "start"])),
    ],
)
def test_find_command(args: list[str], found: tuple[str, list[str]]) -> None:
    assert _find_command(args) == found


def test_start_flags_defaults_and_values() -> None:
    opts = parse_start_flags([])
    assert (opts.listen_addr, opts.endpoints, opts.retry_delay_s) == (
        "127.0.0.1:23790",
        ["127.0.0.1:2379"],
        60.0,
    )
    opts = parse_start_flags(
        ["--endpoints", "a:1,b:2", "extra", "--endpoints=c:3", "--retry-delay=1m30s", "--",
         "--bogus"]
    )  # fmt: skip
    assert opts.endpoints == ["a:1", "b:2", "c:3"]  # the first replaces the default, then append
    assert opts.retry_delay_s == 90.0
    assert parse_start_flags(["--insecure-discovery"]).insecure_discovery is True
    assert parse_start_flags(["--insecure-discovery=F"]).insecure_discovery is False
    assert parse_start_flags(["-h"]).help is True


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--bogus=1"], "unknown flag: --bogus"),
        (["-x"], "unknown shorthand flag: 'x' in -x"),
        (["--listen-addr"], "flag needs an argument: --listen-addr"),
        (["---x"], "bad flag syntax: ---x"),
        (["--retry-delay=2"], 'invalid argument "2" for "--retry-delay" flag: '
         'time: missing unit in duration "2"'),
    ],
)  # fmt: skip
def test_start_flag_errors(args: list[str], error: str) -> None:
    with pytest.raises(GatewayFlagError) as e:
        parse_start_flags(args)
    assert str(e.value) == error


@pytest.mark.parametrize(
    ("addr", "split"),
    [
        ("127.0.0.1:2379", ("127.0.0.1", "2379")),
        ("[::1]:2379", ("::1", "2379")),
        (":2379", ("", "2379")),
        ("host:", ("host", "")),
        ("nope", None),
        ("::1:2379", None),
        ("[::1]2379", None),
    ],
)
def test_split_host_port(addr: str, split: tuple[str, str] | None) -> None:
    assert split_host_port(addr) == split


def test_round_robin_skips_inactive_endpoints() -> None:
    rr = RoundRobin(3)
    assert [rr.pick() for _ in range(4)] == [0, 1, 2, 0]
    rr.inactivate(2)
    assert [rr.pick() for _ in range(3)] == [1, 0, 1]  # 2's turn passes on to 0
    rr.inactivate(0)
    rr.inactivate(1)
    assert rr.pick() is None
    assert rr.inactive() == [0, 1, 2]
    rr.activate(1)
    assert (rr.pick(), rr.inactive()) == (1, [0, 2])
