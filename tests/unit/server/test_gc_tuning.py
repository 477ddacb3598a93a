"""petcd.server.main._tune_gc: start-up objects frozen, young generation collected less often;
the collector off during start-up (``main``) and on again once the member serves."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from petcd.server import main as server_main
from petcd.server.main import _GC_GEN0_THRESHOLD, _tune_gc


def test_tune_gc_freezes_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        _tune_gc()
        assert gc.get_threshold() == (_GC_GEN0_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
        gc.set_threshold(50_000, 10, 10)  # a higher setting is kept
        _tune_gc()
        assert gc.get_threshold()[0] == 50_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class _Node:
    other: Any = None


def test_tune_gc_frees_the_cycles_start_up_left_and_turns_the_collector_on() -> None:
    before = gc.get_threshold()
    gc.disable()
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # garbage only the collector can free
        ref = weakref.ref(a)
        del a, b
        assert ref() is not None
        _tune_gc()
        assert ref() is None  # freed, not frozen for the life of the process
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*before)


def test_main_keeps_the_collector_off_until_the_member_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[bool] = []

    async def serve(cfg: Any, log: Any, received: list[int]) -> int:
        seen.append(gc.isenabled())  # start-up: open the data, start the member
        _tune_gc()  # what _serve does once the member started
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(server_main, "_serve", serve)
    before = gc.get_threshold()
    try:
        assert server_main.main(["--data-dir", str(tmp_path / "d")]) == 0
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*before)
    assert seen == [False, True]


def test_main_turns_the_collector_on_again_when_start_up_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A start-up that ends before the member serves (a port in use, a bad data dir) must
    not leave the collector off for whoever called ``main`` (tests call it in-process)."""
    seen: list[bool] = []

    async def fail(cfg: Any, log: Any, received: list[int]) -> int:
        seen.append(gc.isenabled())
        return 1

    monkeypatch.setattr(server_main, "_serve", fail)
    try:
        assert server_main.main(["--data-dir", str(tmp_path / "d")]) == 1
        assert seen == [False] and gc.isenabled()
    finally:
        gc.enable()
