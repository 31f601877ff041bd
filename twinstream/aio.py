"""Small asyncio helpers shared by every package."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` at most `timeout_s`; True if it is set.

    Unlike `asyncio.wait_for` on Python 3.11, `asyncio.timeout` never swallows a cancellation
    that arrives while the event is being set, so a cancelled task really stops.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
