"""pytest options of the Raft simulator: ``--seed N`` replays one seed.

``pytest tests/sim --seed N`` (or ``PETCD_SIM_SEED=N pytest tests/sim``) runs seed N alone and
nothing else under tests/sim. pytest reads ``pytest_addoption`` only from the conftest files of
the paths on its command line, so the option exists when ``tests/sim`` (or a file in it) is
named; the environment variable works from anywhere.
"""

from __future__ import annotations

import os

import pytest

SIM_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("petcd-sim", "petcd Raft simulator")
    group.addoption(
        "--seed",
        type=int,
        default=None,
        help="replay this one simulator seed (also: PETCD_SIM_SEED=N)",
    )
    group.addoption(
        "--sim-mutation",
        default=None,
        help="with --seed: replay the seed with this deliberate bug of tests/sim/mutations.py",
    )
    group.addoption(
        "--sim-end-to-end",
        action="store_true",
        default=False,
        help="with --seed: only the cluster-wide properties (no local Ready checks)",
    )
    group.addoption(
        "--sim-seeds",
        type=int,
        default=None,
        help="how many seeds the default simulator test runs (default 2000)",
    )


def replay_seed(config: pytest.Config) -> int | None:
    seed = config.getoption("seed", default=None)
    if seed is None and os.environ.get("PETCD_SIM_SEED"):
        seed = int(os.environ["PETCD_SIM_SEED"])
    return seed if isinstance(seed, int) else None


def replay_mutation(config: pytest.Config) -> str | None:
    name = config.getoption("sim_mutation", default=None)
    return name if isinstance(name, str) else None


def replay_end_to_end(config: pytest.Config) -> bool:
    return bool(config.getoption("sim_end_to_end", default=False))


def default_seed_count(config: pytest.Config) -> int:
    n = config.getoption("sim_seeds", default=None)
    if n is None and os.environ.get("PETCD_SIM_SEEDS"):
        n = int(os.environ["PETCD_SIM_SEEDS"])
    return n if isinstance(n, int) else 2000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With a replay seed, keep only the seed test under tests/sim."""
    if replay_seed(config) is None:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        in_sim = str(item.path).startswith(SIM_DIR + os.sep)
        if in_sim and getattr(item, "originalname", item.name) != "test_seeds":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
