"""Fixtures for the mvcc tests: a store over a fresh backend in a temporary directory."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.backend import Backend
from petcd.mvcc import WatchableStore, WriteRequest, WriteResponse
from petcd.raft.types import Index, Term


class Harness:
    """A WatchableStore plus a raft index counter, reopenable from its file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path / "db")
        self.backend = Backend(self.path)
        self.store = WatchableStore(self.backend)
        self._index = itertools.count(1)
        self.last_index = 0

    def apply(self, req: WriteRequest) -> WriteResponse:
        self.last_index = next(self._index)
        return self.store.apply(req, index=Index(self.last_index), term=Term(1))

    def compact(self, rev: int) -> None:
        self.last_index = next(self._index)
        self.store.compact(rev, index=Index(self.last_index), term=Term(1))

    def reopen(self) -> WatchableStore:
        self.backend.close()
        self.backend = Backend(self.path)
        self.store = WatchableStore(self.backend)
        return self.store


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.backend.close()
