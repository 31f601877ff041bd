"""Small persist read helpers shared by the runner and the sink."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import cast

from twinstream.aio import wait_event
from twinstream.persist import LeasedReadHandle, ListenEvent, Shard, limits

log = logging.getLogger(__name__)


def reader_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def wait_for_upper(shard: Shard, at_least: int) -> int:
    """Wait until the shard's upper is `>= at_least`; returns the upper seen."""
    while True:
        event = shard.consensus.feed.event(shard.shard_id)  # before reading: no lost wakeup
        upper = await shard.upper()
        if upper >= at_least:
            return upper
        await wait_event(event, limits.LISTEN_POLL_FALLBACK_S)


def listen(
    shard: Shard, as_of: int, rid: str, skip_below: Callable[[], int] | None = None
) -> contextlib.aclosing[AsyncGenerator[ListenEvent, None]]:
    """`shard.listen(as_of)` wrapped so that leaving the block closes it (releasing its hold)."""
    gen = cast(
        AsyncGenerator[ListenEvent, None],
        shard.listen(as_of, reader_id=rid, skip_below=skip_below),
    )
    return contextlib.aclosing(gen)


async def release(handle: LeasedReadHandle | None) -> None:
    """Expire a leased hold; failures only delay compaction until the lease lapses."""
    if handle is None:
        return
    try:
        await handle.expire()
    except Exception as e:  # pragma: no cover - the lease expires on its own
        log.info("could not release hold %s on %s: %s", handle.reader_id, handle.shard.shard_id, e)


async def move_hold(handle: LeasedReadHandle, since: int) -> None:
    """Heartbeat a leased hold, moving it forward to `since` (never back)."""
    await handle.downgrade_since(max(since, handle.since))
