"""Small asyncio helpers shared by every package."""

from __future__ import annotations

import asyncio
import io


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


def task_stacks() -> str:
    """Every task of the running loop with where it is suspended: what a process that stopped
    making progress is waiting for (environmentd logs it on SIGUSR1)."""
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    out.write(f"{len(tasks)} asyncio tasks\n")
    for task in tasks:
        out.write(f"--- task {task.get_name()}\n")
        task.print_stack(limit=20, file=out)
    return out.getvalue()
