"""petcd.server.main._tune_gc: start-up objects frozen, young generation collected less often."""

from __future__ import annotations

import gc

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
