"""Where the balancer sends connections: a `RouteSource` says which generation is active and
where its SQL port is, wakes listeners when that changes, and remembers the endpoints of every
generation it has seen (CancelRequests are routed by the generation encoded in their pid).

- `StaticRoute`: set by hand (tests, or a fixed deployment).
- `RolloutRoute`: follows the orchestrator's `RolloutRecord` in the consensus store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import NamedTuple, Protocol

from twinstream.orchestrator.record import RolloutStore
from twinstream.persist.location import Consensus

__all__ = ["RolloutRoute", "Route", "RouteNotifier", "RouteSource", "StaticRoute"]

log = logging.getLogger(__name__)


class Route(NamedTuple):
    """The active generation and its SQL endpoint."""

    generation: int
    host: str
    port: int


class RouteSource(Protocol):
    """What the balancer asks. Take `changed()` *before* calling `current()`, then wait on the
    event: a change in between is never lost."""

    async def current(self) -> Route | None:
        """The route new connections take now; None when there is none (yet)."""
        ...

    def changed(self) -> asyncio.Event:
        """An event set at the next change of `current()` (a fresh event after each change)."""
        ...

    def endpoint(self, generation: int) -> tuple[str, int] | None:
        """The SQL endpoint of a generation seen at some point (for CancelRequest routing)."""
        ...


class RouteNotifier:
    """One-shot events handed out to waiters; `notify` sets them all and starts over."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def notify(self) -> None:
        ev, self._event = self._event, None
        if ev is not None:
            ev.set()


class StaticRoute:
    """A route set by hand: `set(generation, host, port)`, `clear()`. Use from the event loop
    the balancer runs in."""

    def __init__(self, route: Route | tuple[int, str, int] | None = None) -> None:
        self._route: Route | None = None
        self._endpoints: dict[int, tuple[str, int]] = {}
        self._notifier = RouteNotifier()
        if route is not None:
            self.set(*route)

    def set(self, generation: int, host: str, port: int) -> None:
        route = Route(generation, host, port)
        self._endpoints[generation] = (host, port)
        if route != self._route:
            self._route = route
            self._notifier.notify()

    def clear(self) -> None:
        if self._route is not None:
            self._route = None
            self._notifier.notify()

    def add_endpoint(self, generation: int, host: str, port: int) -> None:
        """Make a generation's endpoint known (for cancels) without routing to it."""
        self._endpoints[generation] = (host, port)

    @property
    def route(self) -> Route | None:
        return self._route

    async def current(self) -> Route | None:
        return self._route

    def changed(self) -> asyncio.Event:
        return self._notifier.event()

    def endpoint(self, generation: int) -> tuple[str, int] | None:
        return self._endpoints.get(generation)


class RolloutRoute:
    """Follows `rollout/<environment>` in the consensus store: the route is the record's
    `active_generation` and its endpoint. Polls every `poll_interval_s` and also wakes on the
    consensus change feed. A failed read, a missing record after a good one, or a record whose
    active generation has no endpoint keeps the last good route.

    The poller starts on first use; `close()` (or `async with`) stops it. The consensus is the
    caller's to close."""

    def __init__(
        self, consensus: Consensus, environment: str = "default", *, poll_interval_s: float = 0.05
    ) -> None:
        self.store = RolloutStore(consensus, environment)
        self.poll_interval_s = poll_interval_s
        self._route: Route | None = None
        self._seqno: int | None = None
        self._endpoints: dict[int, tuple[str, int]] = {}
        self._notifier = RouteNotifier()
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self.read_errors = 0

    async def __aenter__(self) -> RolloutRoute:
        self._ensure_started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def current(self) -> Route | None:
        self._ensure_started()
        if not self._loaded.is_set():
            await self.refresh()
        return self._route

    def changed(self) -> asyncio.Event:
        self._ensure_started()
        return self._notifier.event()

    def endpoint(self, generation: int) -> tuple[str, int] | None:
        return self._endpoints.get(generation)

    async def refresh(self) -> None:
        """Read the record once and update the route (what the poller does)."""
        try:
            seqno, record = await self.store.read()
        except Exception as e:  # keep the last good route
            self.read_errors += 1
            log.warning("could not read the rollout record: %s", e)
            return
        self._loaded.set()
        if record is None or seqno == self._seqno:
            return
        self._seqno = seqno
        for key, ep in record.endpoints.items():
            with contextlib.suppress(ValueError):
                self._endpoints[int(key)] = (ep.sql_host, ep.sql_port)
        active = record.active_endpoint()
        if active is None:
            return
        route = Route(record.active_generation, active.sql_host, active.sql_port)
        if route != self._route:
            log.info("route is now generation %d at %s:%d", *route)
            self._route = route
            self._notifier.notify()

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="rollout-route")

    async def _poll(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.consensus.start_watching()
        while True:
            wake = self.store.consensus.feed.event(self.store.key)
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll_interval_s)
