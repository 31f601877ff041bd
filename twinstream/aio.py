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
    """Every task of the running loop with where it is suspended, down the whole await chain
    (`Task.print_stack` shows only a coroutine's outermost frame): what a process that stopped
    making progress is waiting for. environmentd logs it on SIGUSR1."""
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    out.write(f"{len(tasks)} asyncio tasks\n")
    for task in tasks:
        state = "cancelling" if task.cancelling() else "pending"
        out.write(f"--- task {task.get_name()} ({state})\n")
        for line in _await_chain(task.get_coro()):
            out.write(f"    {line}\n")
    return out.getvalue()


def _await_chain(coro: object) -> list[str]:
    """file:line function for each frame from `coro` down to what it awaits last."""
    lines: list[str] = []
    seen = 0
    while coro is not None and seen < MAX_CHAIN:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        frame = frame or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"{code.co_filename}:{frame.f_lineno} {code.co_name}")
        nxt = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        nxt = nxt or getattr(coro, "gi_yieldfrom", None)
        if nxt is None:
            lines.append(f"awaits {coro!r}"[:300])
        coro = nxt
    return lines


#: Frames shown per task (deep enough for any await chain here).
MAX_CHAIN = 60
