"""The mutation check: the simulator must catch each deliberate bug of ``mutations.MUTATIONS``.

Each mutation is applied by monkeypatching this process's core (undone after the test); the
seeds are the same as the default run's, so the first catching seed is reproducible:
``.venv/bin/pytest tests/sim --seed N --sim-mutation NAME``. The seeds observed when this was
written are in docs/design/raft-sim.md.

Two levels: with every check (the local ones — the commit rule, "a vote or an acknowledgement
leaves only once durable" — see most bugs in the first seed), and end to end, with only the
cluster-wide properties (election safety, state machine safety, leader completeness, reads...),
which must see the consequences of the bug, not only the bug.
"""

from __future__ import annotations

import pytest

from tests.sim.mutations import MUTATIONS, hunt

SEEDS_MAX = 2_000

# Not caught end to end within SEEDS_MAX seeds (see docs/design/raft-sim.md): the overwritten
# old-term entry needs a rare sequence of three leaders; the commit-rule check catches it.
NOT_CAUGHT_END_TO_END = {"figure8"}


@pytest.mark.long
@pytest.mark.timeout(1800)  # a mutation that is not caught runs all SEEDS_MAX seeds
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_simulator_catches_mutation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = hunt(MUTATIONS[name], range(SEEDS_MAX), monkeypatch)
    print(result)
    assert result.seed is not None, f"{name} ({MUTATIONS[name].description}) not caught: {result}"


@pytest.mark.long
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", sorted(set(MUTATIONS) - NOT_CAUGHT_END_TO_END))
def test_simulator_catches_mutation_end_to_end(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = hunt(MUTATIONS[name], range(SEEDS_MAX), monkeypatch, local_checks=False)
    print(result)
    assert result.seed is not None, f"{name} ({MUTATIONS[name].description}) not caught: {result}"


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("commit_without_quorum", "state machine safety"),
        ("vote_not_persisted", "sent its vote"),
        ("ack_before_persist", "acknowledged entries"),
    ],
)
def test_simulator_catches_mutation_quickly(
    name: str, expect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = hunt(MUTATIONS[name], range(20), monkeypatch)
    assert result.seed is not None, result
    assert expect in result.violation
