"""The promotion task of a read-only generation: wait until caught up (or skipped, or out of
time), keep checking for DDL on the leader, then wait for promote and take over in place.

Priority each round: skip-catchup, caught-up (stable for the stability period), max wait
(crash instead if panic-after-timeout), DDL check every interval. Then one last DDL check,
ReadyToPromote, and on promote: open the catalog writable (fences the old generation),
`Coordinator.promote`, IsLeader. The process never restarts.

DDL race policy: the DDL check adopts changes in place (`Coordinator.reconcile`), and promotion
reconciles once more against the *writable* catalog — after the fence, so no DDL can slip in
between that check and taking over. An object created on the old leader just before promotion
is therefore hydrated (tables: snapshot and catch-up) before this process reports IsLeader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from twinstream.adapter.coordinator import Coordinator
from twinstream.aio import wait_event
from twinstream.catalog import DurableCatalog, OpenMode
from twinstream.clock import Clock
from twinstream.deployment.params import ZeroDowntimeParams
from twinstream.deployment.state import Deployment, DeploymentState
from twinstream.persist import PersistClient

log = logging.getLogger(__name__)


class NotCaughtUpInTime(RuntimeError):
    """with_0dt_deployment_max_wait elapsed and enable_0dt_deployment_panic_after_timeout."""


async def run_promotion(
    deployment: Deployment,
    coord: Coordinator,
    persist: PersistClient,
    *,
    deploy_generation: int,
    params: ZeroDowntimeParams,
    clock: Clock,
    on_leader: Callable[[], Awaitable[None]] | None = None,
) -> None:
    assert deployment.current() is DeploymentState.CATCHING_UP, deployment.state
    skipped = await _catch_up(deployment, coord, persist, deploy_generation, params, clock)
    if not skipped:
        await _ddl_check(coord, persist, deploy_generation, clock)
    deployment.advance(DeploymentState.READY_TO_PROMOTE)
    log.info("ready to promote (generation %d)", deploy_generation)
    await deployment.promote_requested.wait()
    assert deployment.current() is DeploymentState.PROMOTING, deployment.state
    started = time.monotonic()
    writable = await DurableCatalog.open(
        persist, OpenMode.WRITABLE, deploy_generation=deploy_generation, clock=clock
    )
    await coord.promote(writable)
    deployment.advance(DeploymentState.IS_LEADER)
    deployment.promotion_ms = (time.monotonic() - started) * 1000
    log.info(
        "promoted to leader in %.1f ms (generation %d)", deployment.promotion_ms, deploy_generation
    )
    if on_leader is not None:
        await on_leader()


async def _catch_up(
    deployment: Deployment,
    coord: Coordinator,
    persist: PersistClient,
    generation: int,
    params: ZeroDowntimeParams,
    clock: Clock,
) -> bool:
    """Returns True if catch-up was skipped (skip-catchup)."""
    start = clock.monotonic()
    last_ddl = start
    stable_since: float | None = None
    interval_s = params.with_0dt_deployment_caught_up_check_interval_ms / 1000
    while True:
        if deployment.skip_catchup.is_set():
            log.info("catch-up skipped on request")
            return True
        now = clock.monotonic()
        if await _caught_up(coord, params):
            stable_since = now if stable_since is None else stable_since
            if (now - stable_since) * 1000 >= params.with_0dt_caught_up_check_stability_period_ms:
                log.info("caught up with the leader")
                return False
        else:
            stable_since = None
        if (now - start) * 1000 >= params.with_0dt_deployment_max_wait_ms:
            if params.enable_0dt_deployment_panic_after_timeout:
                raise NotCaughtUpInTime(
                    f"not caught up within {params.with_0dt_deployment_max_wait_ms} ms"
                )
            log.warning("not caught up within max wait; proceeding")
            return False
        if (now - last_ddl) * 1000 >= params.with_0dt_deployment_ddl_check_interval_ms:
            last_ddl = now
            if await _ddl_check(coord, persist, generation, clock):
                stable_since = None
        await wait_event(deployment.skip_catchup, interval_s)


async def _caught_up(coord: Coordinator, params: ZeroDowntimeParams) -> bool:
    if not params.enable_0dt_caught_up_check:
        return await coord.hydrated()
    laggards = await coord.caught_up_laggards(
        allowed_lag_ms=params.with_0dt_caught_up_check_allowed_lag_ms,
        cutoff_ms=params.with_0dt_caught_up_check_cutoff_ms,
    )
    for lag in laggards:
        log.info("not caught up: %s", lag)
    return not laggards


async def _ddl_check(
    coord: Coordinator, persist: PersistClient, generation: int, clock: Clock
) -> bool:
    """Compare the committed sets of user item and replica ids with ours; on a change,
    re-bootstrap read-only in place. Returns True if something changed."""
    items, replicas = await coord.catalog.committed_ids()
    if items == coord.index.state.user_item_ids() and (
        replicas == coord.index.state.user_replica_ids()
    ):
        return False
    log.info("DDL on the leader since bootstrap: re-bootstrapping read-only in place")
    fresh = await DurableCatalog.open(
        persist, OpenMode.SAVEPOINT, deploy_generation=generation, clock=clock
    )
    await coord.reconcile(fresh)
    return True
