"""The balancer's counters: mutable inside, a frozen snapshot outside (`Balancer.stats()`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["BalancerStats", "Counters", "SessionInfo"]


@dataclass(frozen=True)
class BalancerStats:
    #: Client sessions that completed startup through the balancer (ever).
    sessions: int = 0
    #: Client sessions open now.
    active_sessions: int = 0
    #: Sessions moved to a new generation while idle (planned cutover).
    moved: int = 0
    #: Move attempts that failed (the session stayed where it was).
    move_failed: int = 0
    #: In-flight statements (or batches) re-sent after a fence, a lost backend or a
    #: read-only answer; counted once per statement however many attempts it took.
    retried: int = 0
    #: Sessions that lost their backend inside an explicit transaction and got 40001.
    tx_aborted_40001: int = 0
    #: Connections that had to wait for a route (or a reachable backend) at startup.
    held: int = 0
    #: Held connections that gave up (FATAL 57P03 "no backend available").
    hold_timeouts: int = 0
    #: Idle sessions whose backend went away and that were reconnected transparently.
    reconnected: int = 0
    #: CancelRequests sent on to a backend / dropped (no session, unknown generation).
    cancels_forwarded: int = 0
    cancels_dropped: int = 0
    #: Connections closed with FATAL 08P01 for bytes that are not the protocol.
    protocol_errors: int = 0
    #: DDL refused with 0A000 under ddl_policy="error".
    ddl_rejected: int = 0
    #: SUBSCRIBEs cut by a cutover and resumed on the next generation (balancer/subscribe.py).
    subscribes_resumed: int = 0


class Counters:
    """The live counters (same names as `BalancerStats`)."""

    def __init__(self) -> None:
        self.sessions = 0
        self.active_sessions = 0
        self.moved = 0
        self.move_failed = 0
        self.retried = 0
        self.tx_aborted_40001 = 0
        self.held = 0
        self.hold_timeouts = 0
        self.reconnected = 0
        self.cancels_forwarded = 0
        self.cancels_dropped = 0
        self.protocol_errors = 0
        self.ddl_rejected = 0
        self.subscribes_resumed = 0

    def snapshot(self) -> BalancerStats:
        return BalancerStats(**{f.name: getattr(self, f.name) for f in fields(BalancerStats)})


@dataclass(frozen=True)
class SessionInfo:
    """One client session as the balancer sees it (for tests and status pages)."""

    client_key: tuple[int, int] | None
    backend_key: tuple[int, int] | None
    generation: int | None
    status: str
    in_flight: int
    moves: int
    user: str
    database: str
