"""`task_stacks()`: what environmentd logs on SIGUSR1 (the matrix asks for it when a rollout
does not settle, to see where a stalled promotion waits)."""

from __future__ import annotations

import asyncio

from twinstream.aio import task_stacks


async def _parked_in_promotion(event: asyncio.Event) -> None:
    await event.wait()


async def test_task_stacks_names_each_task_and_where_it_waits() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_parked_in_promotion(event), name="promotion")
    await asyncio.sleep(0)  # let it start and park on the event
    dump = task_stacks()
    assert "--- task promotion" in dump
    assert "_parked_in_promotion" in dump
    assert "locks.py" in dump, "the chain goes down to the awaited Event.wait"
    assert "asyncio tasks" in dump.splitlines()[0]
    event.set()
    await task
