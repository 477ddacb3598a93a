"""The simulator over many seeds: 2,000 by default, 100,000 under ``-m long``.

A failure names its seed and the command that replays it (``pytest tests/sim --seed N``).
Seeds that expose a known, not yet fixed, bug of the core are listed in ``KNOWN_FAILING`` (and
in docs/design/raft-sim.md, Findings): they are skipped by the bulk runs and run by a replay.
"""

from __future__ import annotations

import pytest

from petcd.raft.node import RawNode
from tests.sim.cluster import Simulation
from tests.sim.conftest import (
    default_seed_count,
    replay_end_to_end,
    replay_mutation,
    replay_seed,
)
from tests.sim.mutations import MUTATIONS

BLOCK = 100
LONG_SEEDS = 100_000
LONG_BLOCK = 500

# seed -> the finding in docs/design/raft-sim.md it reproduces.
KNOWN_FAILING: dict[int, str] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed_block" not in metafunc.fixturenames:
        return
    is_long = metafunc.definition.get_closest_marker("long") is not None
    replay = replay_seed(metafunc.config)
    blocks: list[tuple[int, int]]
    if replay is not None:
        blocks = [] if is_long else [(replay, replay + 1)]
    else:
        n, size = (
            (LONG_SEEDS, LONG_BLOCK) if is_long else (default_seed_count(metafunc.config), BLOCK)
        )
        blocks = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
    ids = [f"seed{lo}" if hi == lo + 1 else f"seeds{lo}-{hi - 1}" for lo, hi in blocks]
    metafunc.parametrize("seed_block", blocks, ids=ids)


def _run(block: tuple[int, int], config: pytest.Config, mp: pytest.MonkeyPatch) -> None:
    lo, hi = block
    replaying = hi == lo + 1
    mutation = replay_mutation(config) if replaying else None
    if replaying and (mutation is not None or replay_end_to_end(config)):
        factory = MUTATIONS[mutation].apply(mp) if mutation is not None else RawNode
        local = not replay_end_to_end(config)
        sim = Simulation(lo, raw_node_factory=factory, mutation=mutation, local_checks=local)
        print(sim.run())
        return
    for seed in range(lo, hi):
        if seed in KNOWN_FAILING and not replaying:
            continue
        report = Simulation(seed).run()
        if replaying:
            print(report)


def test_seeds(
    seed_block: tuple[int, int], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(seed_block, request.config, monkeypatch)


@pytest.mark.long
def test_seeds_long(
    seed_block: tuple[int, int], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(seed_block, request.config, monkeypatch)
