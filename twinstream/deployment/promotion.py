"""The promotion task of a read-only generation: wait until caught up (or skipped, or out of
time), keep checking for DDL on the leader, then wait for promote and take over in place.

Priority each round: skip-catchup, caught-up (the stability gate, then one last DDL check that
must find no change), max wait (crash instead if panic-after-timeout), DDL check every interval
(adopts changes in place; does not restart the stability period). Then ReadyToPromote, and
on promote: open the catalog writable (fences the old generation), `Coordinator.promote`,
IsLeader. The process never restarts.

DDL race policy: the DDL check adopts changes in place (`Coordinator.reconcile`), and promotion
reconciles once more against the *writable* catalog — after the fence, so no DDL can slip in
between that check and taking over. An object created on the old leader just before promotion
is therefore hydrated (tables: snapshot and catch-up) before this process reports IsLeader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from twinstream.adapter.coordinator import Coordinator
from twinstream.adapter.linearize import NEW_LEADER_WAIT_S
from twinstream.aio import wait_event
from twinstream.catalog import DurableCatalog, OpenMode
from twinstream.clock import Clock
from twinstream.deployment.caught_up import (
    CollectionFrontiers,
    ReplicaHealth,
    StabilityGate,
    check_caught_up,
)
from twinstream.deployment.params import ZeroDowntimeParams
from twinstream.deployment.state import Deployment, DeploymentState
from twinstream.persist import PersistClient

log = logging.getLogger(__name__)


class NotCaughtUpInTime(RuntimeError):
    """with_0dt_deployment_max_wait elapsed and enable_0dt_deployment_panic_after_timeout."""


#: Per-replica restart counts of this generation (the supervisor's); see deployment/caught_up.py.
ReplicaHealthFeed = Callable[[], Sequence[ReplicaHealth]]
#: Frontiers of collections maintained by clusters (the compute controller's, once wired).
CollectionFeed = Callable[[], Awaitable[Sequence[CollectionFrontiers]]]


def _no_replicas() -> Sequence[ReplicaHealth]:
    return ()


async def _no_collections() -> Sequence[CollectionFrontiers]:
    return ()


@dataclass(frozen=True)
class CaughtUpFeeds:
    """What the caught-up check reads besides the tables this process mirrors."""

    replica_health: ReplicaHealthFeed = _no_replicas
    collections: CollectionFeed = _no_collections


async def run_promotion(
    deployment: Deployment,
    coord: Coordinator,
    persist: PersistClient,
    *,
    deploy_generation: int,
    params: ZeroDowntimeParams,
    clock: Clock,
    on_leader: Callable[[], Awaitable[None]] | None = None,
    feeds: CaughtUpFeeds | None = None,
) -> None:
    assert deployment.current() is DeploymentState.CATCHING_UP, deployment.state
    skipped = await _catch_up(
        deployment, coord, persist, deploy_generation, params, clock, feeds or CaughtUpFeeds()
    )
    if not skipped:
        # Load what the followers mirrored into the query engine now, not at the first read
        # after the cutover (a 200k-row table stalled that read for a minute). In a worker
        # thread: the status API keeps answering meanwhile. (`_catch_up` made the last DDL
        # check, right after its last flush.)
        started = time.monotonic()
        await asyncio.to_thread(coord.engine.flush)
        log.info("query engine loaded in %.1f s", time.monotonic() - started)
    deployment.advance(DeploymentState.READY_TO_PROMOTE)
    log.info("ready to promote (generation %d)", deploy_generation)
    await deployment.promote_requested.wait()
    assert deployment.current() is DeploymentState.PROMOTING, deployment.state
    started = time.monotonic()
    writable = await DurableCatalog.open(
        persist,
        OpenMode.WRITABLE,
        deploy_generation=deploy_generation,
        clock=clock,
        preloaded=coord.catalog.loaded,  # what the last DDL check read: no full read now
        defer_critical_hold=True,  # taken with the tables' holds (`Coordinator.promote`)
    )
    fenced = time.monotonic()
    deployment.fence_events["fenced_predecessor"] += 1
    steps = await coord.promote(writable)
    deployment.advance(DeploymentState.IS_LEADER)
    deployment.promotion_ms = (time.monotonic() - started) * 1000
    log.info(
        "promoted to leader in %.1f ms (generation %d; catalog opened writable and the old "
        "generation fenced in %.1f ms; %s; writes are acknowledged from %.0f ms after the "
        "fence, when the old leader's read lease is over)",
        deployment.promotion_ms,
        deploy_generation,
        (fenced - started) * 1000,
        ", ".join(f"{step} {ms:.1f} ms" for step, ms in steps.items()),
        NEW_LEADER_WAIT_S * 1000,
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
    feeds: CaughtUpFeeds,
) -> bool:
    """Returns True if catch-up was skipped (skip-catchup).

    Ready when the stability gate opens (`StabilityGate`: bootstrap collections caught up for
    the stability period, collections added by DDL caught up now) AND one more DDL check finds
    the leader's catalog unchanged — that is the last DDL check. If it found a change, the new
    objects are installed and must catch up in turn; the others keep their stability. So under
    steady DDL the cutover waits only for a moment when every object is hydrated and no DDL
    committed since the previous check (doc/design/zero-downtime.md, "DDL check and the
    race": the bound)."""
    start = clock.monotonic()
    last_ddl = start
    gate = StabilityGate(params.with_0dt_caught_up_check_stability_period_ms)
    interval_s = params.with_0dt_deployment_caught_up_check_interval_ms / 1000
    while True:
        if deployment.skip_catchup.is_set():
            log.info("catch-up skipped on request")
            return True
        now = clock.monotonic()
        present, lagging = await _caught_up(coord, params, clock, feeds)
        if gate.observe(int(now * 1000), present, lagging):
            last_ddl = clock.monotonic()
            if not await _ddl_check(coord, persist, generation, clock):
                log.info("caught up with the leader")
                return False
            log.info("DDL at the last check: its objects catch up before ReadyToPromote")
        if (now - start) * 1000 >= params.with_0dt_deployment_max_wait_ms:
            if params.enable_0dt_deployment_panic_after_timeout:
                raise NotCaughtUpInTime(
                    f"not caught up within {params.with_0dt_deployment_max_wait_ms} ms"
                )
            log.warning("not caught up within max wait; proceeding")
            await _ddl_check(coord, persist, generation, clock)
            return False
        if (now - last_ddl) * 1000 >= params.with_0dt_deployment_ddl_check_interval_ms:
            # Install what the leader created meanwhile, so that it hydrates now; this does
            # not restart anyone's stability (new objects must be caught up, see above).
            last_ddl = now
            await _ddl_check(coord, persist, generation, clock)
        await wait_event(deployment.skip_catchup, interval_s)


async def table_frontiers(coord: Coordinator) -> list[CollectionFrontiers]:
    """The tables this read-only generation mirrors: ours = what the follower mirrored, live =
    the table shard's upper (the leader's group commit moves it every tick)."""
    out = []
    for item_id, follower in coord.followers().items():
        ref = coord.index.items_by_id.get(item_id)
        out.append(
            CollectionFrontiers(
                name=ref.fq() if ref is not None else item_id,
                cluster=None,
                hydrated=follower.hydrated.is_set(),
                write_frontier=follower.frontier,
                live_frontier=await follower.shard.upper(),
            )
        )
    return out


async def compute_frontiers(coord: Coordinator) -> list[CollectionFrontiers]:
    """Materialized views and indexes: ours = our write frontier (max over this generation's
    replicas); live = a view's output shard upper (the leader's sinks move it), or for an index
    the minimum upper of its dataflow's inputs (nobody writes an index's output). Collections
    of clusters without replicas are left out: only clusters with replicas are checked."""
    live_of: dict[str, int] = {}
    for item_id, mirror in coord.mviews.mirrors.items():
        live_of[item_id] = await mirror.shard.upper()
    for item_id, (_cluster, desc) in list(coord.compute.dataflows.items()):
        if item_id in coord.index_dataflows and desc.inputs:
            uppers = [await coord.persist.open(s).upper() for s in desc.inputs.values()]
            live_of[item_id] = min(uppers)
    out = []
    for item_id, live in live_of.items():
        ref = coord.index.items_by_id.get(item_id)
        placed = coord.compute.dataflows.get(item_id)
        if placed is not None and not coord.compute.cluster_replicas(placed[0]):
            # A cluster with no replicas is ignored (reference §5): nothing here hydrates its
            # collections, and waiting for them would block the upgrade forever.
            continue
        ours = await coord.compute.collection_frontier(item_id)
        out.append(
            CollectionFrontiers(
                name=ref.fq() if ref is not None else item_id,
                cluster=placed[0] if placed is not None else None,
                hydrated=ours.hydrated,
                write_frontier=ours.write_frontier,
                live_frontier=live,
            )
        )
    return out


async def _caught_up(
    coord: Coordinator, params: ZeroDowntimeParams, clock: Clock, feeds: CaughtUpFeeds
) -> tuple[list[str], list[str]]:
    """(every collection, the ones that hold up the cutover), by name."""
    collections = [
        *await table_frontiers(coord),
        *await compute_frontiers(coord),
        *await feeds.collections(),
    ]
    present = [c.name for c in collections]
    if not params.enable_0dt_caught_up_check:
        return present, [c.name for c in collections if not c.hydrated]
    verdict = check_caught_up(
        collections,
        now_ms=clock.now_ms(),
        allowed_lag_ms=params.with_0dt_caught_up_check_allowed_lag_ms,
        cutoff_ms=params.with_0dt_caught_up_check_cutoff_ms,
        replicas=feeds.replica_health(),
        max_restarts=(
            params.with_0dt_caught_up_check_crash_loop_restarts
            if params.enable_0dt_caught_up_replica_status_check
            else None
        ),
    )
    for cluster in sorted(verdict.excluded_clusters):
        log.warning("cluster %s: every replica crash-loops; excluded from the check", cluster)
    for name in verdict.stuck:
        log.info(
            "ignored: %s: stuck (the leader's frontier is older than the %d ms cutoff)",
            name,
            params.with_0dt_caught_up_check_cutoff_ms,
        )
    for lag in verdict.laggards:
        log.info("not caught up: %s", lag)
    return present, [lag.name for lag in verdict.laggards]


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
