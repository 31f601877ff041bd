"""After a large hydration the runner takes the heap out of the cyclic collector's view,
having collected existing cyclic garbage first; small hydrations leave the collector alone."""

from __future__ import annotations

import gc
import weakref

from twinstream.compute.runtime.runner import GC_FREEZE_MIN_ROWS, freeze_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_large_hydrations_freeze_after_collecting() -> None:
    gc.unfreeze()
    try:
        assert not freeze_heap(GC_FREEZE_MIN_ROWS - 1)
        assert gc.get_freeze_count() == 0
        garbage = _Node()
        gone = weakref.ref(garbage)
        del garbage
        assert freeze_heap(GC_FREEZE_MIN_ROWS)
        assert gone() is None  # collected, not frozen
        assert gc.get_freeze_count() > 0
        gc.disable()
        try:
            assert not freeze_heap(10 * GC_FREEZE_MIN_ROWS)  # a caller's choice is kept
        finally:
            gc.enable()
    finally:
        gc.unfreeze()
