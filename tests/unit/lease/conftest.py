"""Shared fixtures of the lessor tests: a fake clock and lessor factories."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from petcd.lease import Lessor, LessorConfig, MemoryLeaseStore


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


MakeLessor = Callable[..., Lessor]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryLeaseStore:
    return MemoryLeaseStore()


@pytest.fixture
def make_lessor(clock: FakeClock, store: MemoryLeaseStore) -> MakeLessor:
    def make(**config: object) -> Lessor:
        return Lessor(store, clock, LessorConfig(**config))  # type: ignore[arg-type]

    return make
