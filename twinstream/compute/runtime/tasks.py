"""`supervise`: run coroutines as sibling tasks, like `asyncio.TaskGroup`, but cancel them
insistently.

On Python 3.11 a single `Task.cancel()` can be lost: `asyncio.wait_for` swallows a
cancellation that arrives as its inner future completes (fixed in 3.12), and psycopg_pool
waits for a pooled connection with `wait_for`. A task that lost its cancellation inside a
persist call on PostgreSQL keeps running (a listen or a poll loop never ends), and a
`TaskGroup` that cancelled it once waits for it forever. `supervise` cancels again until
every child has finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

#: How long to wait for a cancelled task before cancelling it again.
RECANCEL_S = 0.5


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks (again and again) until all are done. If the caller is cancelled
    meanwhile, it still waits for them, then raises CancelledError."""
    pending = [t for t in tasks if not t.done()]
    interrupted = False
    rounds = 0
    while pending:
        for t in pending:
            t.cancel()
        try:
            await asyncio.wait(pending, timeout=RECANCEL_S)
        except asyncio.CancelledError:
            interrupted = True
        pending = [t for t in pending if not t.done()]
        rounds += 1
        if pending and rounds == 2:
            log.warning("tasks ignored a cancellation: %s", [t.get_name() for t in pending])
    if interrupted:
        raise asyncio.CancelledError


async def supervise(*coros: Coroutine[Any, Any, None], name: str = "supervise") -> None:
    """Run `coros` as tasks until all return or one raises; then cancel the rest.

    The exception of a failed child is raised as is when there is one, else an
    `ExceptionGroup` of them (children cancelled by `supervise` do not count). If the
    caller is cancelled, every child is cancelled and waited for first.
    """
    tasks = [
        asyncio.create_task(c, name=f"{name}:{getattr(c, '__qualname__', '?')}") for c in coros
    ]
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        await cancel_all(tasks)
    errors = [e for t in failed if (e := t.exception()) is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BaseExceptionGroup(f"{name} failed", errors)
