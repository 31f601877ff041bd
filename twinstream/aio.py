"""Small asyncio helpers shared by every package."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
from collections.abc import Awaitable, Iterator
from typing import TypeVar

_T = TypeVar("_T")


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


class DeadlineExceeded(Exception):
    """`run_with_deadline`'s bound passed before its awaitable finished (it was cancelled)."""


#: The deadline of the statement the current task runs (`run_with_deadline`), if any.
_DEADLINE: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "twinstream_deadline", default=None
)


async def run_with_deadline(aw: Awaitable[_T], timeout_s: float | None) -> _T:
    """Await `aw` in this task; after `timeout_s` (None: never) cancel it and raise
    `DeadlineExceeded` — unless it passed a `past_cancel_point()` first, then it finishes.

    Built on `asyncio.timeout` (not `wait_for`): a cancellation from outside (shutdown) stays
    a CancelledError, and nothing runs in another task, so nothing is left behind.
    """
    if timeout_s is None:
        return await aw
    token = _DEADLINE.set(None)
    try:
        async with asyncio.timeout(timeout_s) as scope:
            _DEADLINE.set(scope)
            return await aw
    except Exception as e:
        # also what code that turned the cancellation into its own error raised: the
        # deadline is the news (it can only have expired before any commit point)
        if scope.expired():
            raise DeadlineExceeded(f"deadline of {timeout_s}s passed") from e
        raise
    finally:
        _DEADLINE.reset(token)


@contextlib.contextmanager
def past_cancel_point() -> Iterator[None]:
    """From here on the current deadline (if any) no longer applies: call it right before
    handing over work whose outcome must not be cut off (a commit), so that a timeout either
    fires before the hand-over or never. (A deadline fires only while its task is suspended,
    and is delivered at that same await, so it cannot strike between the check and the
    hand-over; and a deadline that passed while the task never yielded is honoured here.)"""
    scope = _DEADLINE.get()
    if scope is not None:
        when = scope.when()
        # expired: somebody swallowed the cancellation; past `when` but not expired: work
        # that never yielded (a long engine call) kept the timer from firing. Either way
        # we are still before the hand-over.
        if scope.expired() or (when is not None and asyncio.get_running_loop().time() >= when):
            raise DeadlineExceeded("deadline passed before the commit point")
        scope.reschedule(None)
    yield


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
