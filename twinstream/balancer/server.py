"""`Balancer`: the asyncio pgwire proxy in front of the generations of one environment.

    route = StaticRoute((1, "127.0.0.1", 6877))        # or RolloutRoute(consensus)
    async with Balancer("127.0.0.1", 0, route) as bal:
        ...connect clients to bal.port...
        route.set(2, "127.0.0.1", 7877)               # cutover: sessions move when idle
        bal.stats()

New connections always go to the route's generation (held up to `hold_timeout_s` while there
is none). When the route's generation changes, a mover asks every session still on another
generation to move, `move_rate_per_s` sessions per second; each moves at its next idle point.
See doc/design/cutover.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal

from twinstream.balancer.retry import DEFAULT_RETRYABLE_ERRORS, RetryableError
from twinstream.balancer.route import RolloutRoute, Route, RouteNotifier, RouteSource
from twinstream.balancer.session import ClientSession
from twinstream.balancer.stats import BalancerStats, Counters, SessionInfo
from twinstream.orchestrator.record import KEY_PREFIX
from twinstream.pgwire import messages as m
from twinstream.pgwire.keys import generation_of

if TYPE_CHECKING:
    from twinstream.orchestrator.rollout import Orchestrator

__all__ = ["Balancer", "DdlPolicy", "start_for_orchestrator"]

log = logging.getLogger(__name__)

DdlPolicy = Literal["hold", "error"]

#: How often the balancer re-reads its route source even without a change notice.
ROUTE_RECHECK_S = 0.25
#: Time given to a forwarded CancelRequest (connect + write).
CANCEL_TIMEOUT_S = 5.0


class Balancer:
    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        route: RouteSource,
        *,
        hold_timeout_s: float = 30.0,
        move_rate_per_s: float = 50.0,
        ddl_policy: DdlPolicy = "hold",
        retry_on_eof: bool = True,
        response_hold_bytes: int = 256 * 1024,
        response_hold_s: float = 1.0,
        retryable_errors: Sequence[RetryableError] = DEFAULT_RETRYABLE_ERRORS,
    ) -> None:
        if ddl_policy not in ("hold", "error"):
            raise ValueError(f"ddl_policy must be 'hold' or 'error', not {ddl_policy!r}")
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.route_source = route
        self.hold_timeout_s = hold_timeout_s
        self.move_rate_per_s = move_rate_per_s
        self.ddl_policy: DdlPolicy = ddl_policy
        #: Re-send a statement whose backend closed without a word (not only after 57P01).
        #: A crash after a commit but before its answer then runs the statement twice.
        self.retry_on_eof = retry_on_eof
        #: Limits on the answer held back while a statement can still be re-sent.
        self.response_hold_bytes = response_hold_bytes
        self.response_hold_s = response_hold_s
        #: ERRORs that prove a statement did not run (see retry.py).
        self.retryable_errors = tuple(retryable_errors)
        self.counters = Counters()
        self.closing = False
        self._route: Route | None = None
        self._route_notifier = RouteNotifier()
        self._endpoints: dict[int, tuple[str, int]] = {}
        self._sessions: set[ClientSession] = set()
        self._connections: set[asyncio.Task[None]] = set()
        self._by_key: dict[tuple[int, int], ClientSession] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._mover_wake = asyncio.Event()
        #: Closed with the balancer (a route source the balancer made for itself).
        self._owned: list[Callable[[], Awaitable[None]]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("balancer already started")
        await self._refresh_route()
        self._spawn(self._watch_route(), "balancer-route")
        self._spawn(self._mover(), "balancer-mover")
        self._server = await asyncio.start_server(
            self._on_connect, self.listen_host, self.listen_port
        )

    async def __aenter__(self) -> Balancer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("balancer not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, end every session (FATAL 57P01 to its client), stop the tasks."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self._connections)
        for task in conns:
            task.cancel()
        if conns:
            await asyncio.wait(conns, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        owned, self._owned = self._owned, []
        for close in owned:
            with contextlib.suppress(Exception):
                await close()

    # ------------------------------------------------------------------ state

    @property
    def route(self) -> Route | None:
        """The route as the balancer last saw it."""
        return self._route

    def route_event(self) -> asyncio.Event:
        """Set at the next change of `route`."""
        return self._route_notifier.event()

    @property
    def retried(self) -> int:
        """Statements re-sent so far (also in `stats()`)."""
        return self.counters.retried

    def stats(self) -> BalancerStats:
        self.counters.active_sessions = len(self._sessions)
        return self.counters.snapshot()

    def sessions(self) -> list[SessionInfo]:
        return [s.info() for s in self._sessions]

    def cutover_in_progress(self) -> bool:
        """A session is still on a generation other than the route's."""
        route = self._route
        if route is None:
            return False
        return any(
            s.generation is not None and s.generation != route.generation for s in self._sessions
        )

    def endpoint(self, generation: int) -> tuple[str, int] | None:
        return self.route_source.endpoint(generation) or self._endpoints.get(generation)

    # ------------------------------------------------------------------ connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.closing:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        session = ClientSession(self, reader, writer)
        try:
            await session.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)

    def _register(self, session: ClientSession) -> None:
        self._sessions.add(session)
        if session.client_key is not None:
            self._by_key[session.client_key] = session

    def _forget(self, session: ClientSession) -> None:
        self._sessions.discard(session)
        key = session.client_key
        if key is not None and self._by_key.get(key) is session:
            del self._by_key[key]

    # ------------------------------------------------------------------ cancel

    async def handle_cancel(self, pid: int, secret: int) -> None:
        """A CancelRequest: to the session that was given this key (translated to its current
        backend's key), else to the endpoint of the generation encoded in the pid."""
        session = self._by_key.get((pid, secret))
        if session is not None:
            session.cancel_from_client()
            return
        ep = self.endpoint(generation_of(pid))
        if ep is None:
            self.counters.cancels_dropped += 1
            log.info("dropping a CancelRequest for unknown generation %d", generation_of(pid))
            return
        self.forward_cancel(ep[0], ep[1], pid, secret)

    def forward_cancel(self, host: str, port: int, pid: int, secret: int) -> None:
        self.counters.cancels_forwarded += 1
        self._spawn(self._send_cancel(host, port, pid, secret), "balancer-cancel")

    async def _send_cancel(self, host: str, port: int, pid: int, secret: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), CANCEL_TIMEOUT_S
            )
        except (OSError, TimeoutError) as e:
            log.info("could not forward a CancelRequest to %s:%d: %s", host, port, e)
            return
        try:
            writer.write(m.CancelRequest(pid, secret).encode())
            await asyncio.wait_for(writer.drain(), CANCEL_TIMEOUT_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), CANCEL_TIMEOUT_S)  # server closes
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    # ------------------------------------------------------------------ route and moves

    async def _refresh_route(self) -> None:
        try:
            route = await self.route_source.current()
        except Exception:
            log.exception("route source failed; keeping the last route")
            return
        if route is not None:
            self._endpoints[route.generation] = (route.host, route.port)
        # A route source that loses its route keeps ours: the last good route stays.
        if route is not None and route != self._route:
            log.info("balancer route: generation %d at %s:%d", *route)
            self._route = route
            self._route_notifier.notify()
            self._mover_wake.set()

    async def _watch_route(self) -> None:
        while True:
            changed = self.route_source.changed()
            await self._refresh_route()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), ROUTE_RECHECK_S)

    async def _mover(self) -> None:
        """Ask sessions on other generations to move, at most move_rate_per_s a second."""
        interval = 1.0 / self.move_rate_per_s if self.move_rate_per_s > 0 else 0.0
        next_at = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mover_wake.wait(), ROUTE_RECHECK_S)
            self._mover_wake.clear()
            route = self._route
            if route is None:
                continue
            for session in list(self._sessions):
                if self._route != route:
                    break
                if not session.wants_move(route):
                    continue
                now = time.monotonic()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at = max(next_at, time.monotonic()) + interval
                if session.wants_move(route) and self._route == route:
                    session.request_move()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def start_for_orchestrator(
    orch: Orchestrator, port: int, *, host: str = "127.0.0.1", **options: Any
) -> Balancer:
    """A started balancer on `host:port` that follows `orch`'s rollout record (for
    `twinstream up`). `options` are `Balancer` keyword options. Closing the balancer stops its
    route poller; the consensus stays the orchestrator's."""
    environment = orch.store.key.removeprefix(KEY_PREFIX)
    route = RolloutRoute(orch.consensus, environment)
    balancer = Balancer(host, port, route, **options)
    balancer._owned.append(route.close)
    try:
        await balancer.start()
    except BaseException:
        await route.close()
        raise
    return balancer
