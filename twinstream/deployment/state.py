"""The deployment state machine of one environmentd process.

    Initializing -> CatchingUp -> ReadyToPromote -> Promoting -> IsLeader
    Initializing -> IsLeader                      (fresh environment, or a restart at C == G)

Transitions made by the process itself only go forward; an illegal one is a bug and asserts.
Requests from outside (promote, skip-catchup) go through `DeploymentStateHandle`, which can only
read the status and try those two, and are idempotent. Pure: no I/O, no clock.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass


class DeploymentState(enum.Enum):
    INITIALIZING = "Initializing"
    CATCHING_UP = "CatchingUp"
    READY_TO_PROMOTE = "ReadyToPromote"
    PROMOTING = "Promoting"
    IS_LEADER = "IsLeader"

    @property
    def status(self) -> str:
        """What `GET /api/leader/status` shows (CatchingUp is shown as Initializing)."""
        if self is DeploymentState.CATCHING_UP:
            return "Initializing"
        return str(self.value)


_FORWARD = {
    DeploymentState.INITIALIZING: {DeploymentState.CATCHING_UP, DeploymentState.IS_LEADER},
    DeploymentState.CATCHING_UP: {DeploymentState.READY_TO_PROMOTE},
    DeploymentState.READY_TO_PROMOTE: {DeploymentState.PROMOTING},
    DeploymentState.PROMOTING: {DeploymentState.IS_LEADER},
    DeploymentState.IS_LEADER: set(),
}


@dataclass(frozen=True)
class PromoteOutcome:
    ok: bool
    message: str = ""


class Deployment:
    """Owned by the server; the HTTP layer gets `handle()`."""

    def __init__(self) -> None:
        self.state = DeploymentState.INITIALIZING
        #: Fired by skip-catchup (CatchingUp) — the promotion task stops waiting for caught-up.
        self.skip_catchup = asyncio.Event()
        #: Fired by promote (ReadyToPromote -> Promoting).
        self.promote_requested = asyncio.Event()
        self.changed = asyncio.Event()
        #: How long the last promotion took (Promoting -> IsLeader), for metrics.
        self.promotion_ms: float | None = None
        #: Fence events (a Prometheus counter by event): "fenced_predecessor" when this
        #: process's writable catalog open fenced an older generation or epoch (promotion, or
        #: a leader boot over an existing catalog), "fenced_by_successor" when it saw a newer
        #: fence (it exits right after).
        self.fence_events: dict[str, int] = {"fenced_predecessor": 0, "fenced_by_successor": 0}

    def current(self) -> DeploymentState:
        return self.state

    def advance(self, to: DeploymentState) -> None:
        assert to in _FORWARD[self.state], f"illegal deployment transition {self.state} -> {to}"
        self.state = to
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, state: DeploymentState) -> None:
        order = list(DeploymentState)
        while order.index(self.state) < order.index(state):
            await self.changed.wait()

    def handle(self) -> DeploymentStateHandle:
        return DeploymentStateHandle(self)


class DeploymentStateHandle:
    """The narrow view the HTTP API gets: status, try_promote, try_skip_catchup."""

    def __init__(self, deployment: Deployment) -> None:
        self._d = deployment

    def status(self) -> str:
        return self._d.state.status

    def try_promote(self) -> PromoteOutcome:
        state = self._d.state
        if state is DeploymentState.READY_TO_PROMOTE:
            self._d.promote_requested.set()
            self._d.advance(DeploymentState.PROMOTING)
            return PromoteOutcome(True)
        if state in (DeploymentState.PROMOTING, DeploymentState.IS_LEADER):
            return PromoteOutcome(True)
        return PromoteOutcome(False, "cannot promote leader while initializing")

    def try_skip_catchup(self) -> PromoteOutcome:
        state = self._d.state
        if state is DeploymentState.INITIALIZING:
            return PromoteOutcome(
                False, "cannot skip catchup in this phase of initialization; try again later"
            )
        if state is DeploymentState.CATCHING_UP:
            self._d.skip_catchup.set()
        return PromoteOutcome(True)
