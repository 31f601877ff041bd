"""Waiting on a condition with a deadline (tests never sleep as synchronization)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How long a test waits for something a loaded machine may be slow to do.
DEADLINE_S = 120.0
#: Pause between two checks of the condition.
POLL_S = 0.05


def wait_for(cond: Callable[[], T], what: str, timeout_s: float = DEADLINE_S) -> T:
    """The first truthy value of `cond()`, checked every `POLL_S`; AssertionError naming
    `what` if none comes within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")
