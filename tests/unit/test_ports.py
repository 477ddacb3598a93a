"""``tests.ports.free_port``: the ports the tests and benchmarks bind."""

from __future__ import annotations

import socket

import pytest

from tests import ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    got = [ports.free_port() for _ in range(50)]
    assert len(set(got)) == len(got)
    low = ports._ephemeral_low()
    for port in got:
        assert ports._PORTS_LOW <= port < low
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", got[-1]))


class _Draws:
    """Stands in for the module's random source: returns the given ports in order."""

    def __init__(self, *draws: int) -> None:
        self._draws = list(draws)

    def randrange(self, start: int, stop: int, step: int = 1) -> int:
        return self._draws.pop(0)


def test_a_taken_or_already_given_port_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    given = ports.free_port()
    candidate = ports._PORTS_LOW + 7
    while candidate in ports._ports_given or not _bindable(candidate):
        candidate += 1
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(ports, "_ports_random", _Draws(busy, given, candidate))
        assert ports.free_port() == candidate


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_xdist_workers_draw_from_disjoint_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``make test``'s xdist workers, worker N of M hands out only the ports that are N
    modulo M above the range's start: two workers never give out the same port."""
    seen: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        got = {ports.free_port() for _ in range(40)}
        assert {(p - ports._PORTS_LOW) % 3 for p in got} == {int(worker[2:])}
        seen[worker] = got
    assert not (seen["gw0"] & seen["gw1"]) and not (seen["gw1"] & seen["gw2"])
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    assert ports._shard() == (0, 1)
