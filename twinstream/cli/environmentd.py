"""`twinstream environmentd`: one environment process — catalog, coordinator, SQL (pgwire),
public HTTP (`--http-listen`: webhook sources) and the internal HTTP API (leader status,
metrics).

Start here: `run_environmentd(EnvironmentdConfig(...))`. It exits 0 when fenced out by a newer
generation (so a supervisor does not restart it in a loop) and on SIGTERM, in both cases after
draining (`drain`: statements in flight are answered, then every session gets FATAL 57P01).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from twinstream.adapter.coordinator import Coordinator, CoordinatorConfig
from twinstream.adapter.oracle import TimestampOracle
from twinstream.adapter.session import AdapterSession
from twinstream.aio import task_stacks
from twinstream.catalog import (
    DeployGenerationFenced,
    DurableCatalog,
    NotWritable,
    OpenMode,
    read_catalog_generation,
)
from twinstream.cli.listen import parse_listen as parse_listen
from twinstream.clock import SYSTEM_CLOCK, Clock
from twinstream.controller.replica_processes import (
    ReplicaProcesses,
    process_name,
    remove_older_generations,
)
from twinstream.deployment import progress as catch_up
from twinstream.deployment.caught_up import CollectionFrontiers, ReplicaHealth
from twinstream.deployment.http_api import leader_routes
from twinstream.deployment.params import resolve as resolve_params
from twinstream.deployment.promotion import CaughtUpFeeds, run_promotion
from twinstream.deployment.state import Deployment, DeploymentState
from twinstream.orchestrator.processes import ProcessOrchestrator
from twinstream.persist import PersistClient
from twinstream.persist.urls import default_blob_url, default_consensus_url
from twinstream.pgwire.backend import ConnectionContext
from twinstream.pgwire.keys import GenerationKeyAllocator
from twinstream.pgwire.server import PgWireServer
from twinstream.storage.webhook import MAX_BODY_BYTES, webhook_routes

log = logging.getLogger("twinstream.environmentd")

DEFAULT_SQL_PORT = 6877
DEFAULT_HTTP_PORT = 6876
DEFAULT_INTERNAL_HTTP_PORT = 6878


@dataclass
class EnvironmentdConfig:
    data_dir: Path
    deploy_generation: int
    consensus_url: str | None = None
    blob_url: str | None = None
    sql_listen: tuple[str, int] = ("127.0.0.1", DEFAULT_SQL_PORT)
    http_listen: tuple[str, int] = ("127.0.0.1", DEFAULT_HTTP_PORT)
    internal_http_listen: tuple[str, int] = ("127.0.0.1", DEFAULT_INTERNAL_HTTP_PORT)
    internal_api_token: str | None = None
    timestamp_interval_s: float = 0.1
    #: 0dt parameters given on the command line or in the environment (name -> text).
    zero_downtime_flags: dict[str, str] = field(default_factory=dict)
    #: Run each cluster replica as a `twinstream clusterd` process (off: `LocalReplica`s in
    #: this process, for tests that opt out with TWINSTREAM_REPLICA_PROCESSES=0).
    replica_processes: bool = True


def _ports_file(config: EnvironmentdConfig) -> Path:
    return config.data_dir / f"environmentd-gen-{config.deploy_generation}.json"


async def run_environmentd(config: EnvironmentdConfig, clock: Clock = SYSTEM_CLOCK) -> int:
    """Serve until SIGTERM/SIGINT (returns 0) or a fence (returns 0)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    consensus_url = config.consensus_url or default_consensus_url(config.data_dir)
    blob_url = config.blob_url or default_blob_url(config.data_dir)
    persist = PersistClient.from_urls(consensus_url, blob_url, clock)
    try:
        return await _serve(config, persist, clock)
    finally:
        await persist.close()


def _fenced_out(reason: str) -> int:
    log.warning("this deployment has been fenced out (%s)", reason)
    print("this deployment has been fenced out", file=sys.stderr, flush=True)
    return 0


async def _serve(config: EnvironmentdConfig, persist: PersistClient, clock: Clock) -> int:
    """Preflight (reference §3), then serve as leader or as a read-only generation."""
    generation = config.deploy_generation
    durable = await read_catalog_generation(persist)
    deployment = Deployment()
    if durable is not None and durable > generation:
        return _fenced_out(f"catalog generation {durable} > {generation}")
    read_only = durable is not None and durable < generation
    system = await _system_parameters(persist)
    params = resolve_params(config.zero_downtime_flags, system)
    if read_only and not params.enable_0dt_deployment:
        read_only = False  # no 0dt: take over at once (the old generation is fenced)
    try:
        catalog = await DurableCatalog.open(
            persist,
            OpenMode.SAVEPOINT if read_only else OpenMode.WRITABLE,
            deploy_generation=generation,
            clock=clock,
        )
    except DeployGenerationFenced as e:
        return _fenced_out(str(e))
    await persist.start_watching()
    oracle = TimestampOracle(persist.consensus, clock, read_only=read_only)
    orchestrator: ProcessOrchestrator | None = None
    replica_procs: ReplicaProcesses | None = None
    if config.replica_processes:
        # One clusterd per replica of this generation (`-gen-G`), kept running by the
        # orchestrator; a crashed environmentd's successor adopts them.
        orchestrator = ProcessOrchestrator(config.data_dir / "clusterd")
        replica_procs = ReplicaProcesses(
            orchestrator,
            generation=generation,
            consensus_url=config.consensus_url or default_consensus_url(config.data_dir),
            blob_url=config.blob_url or default_blob_url(config.data_dir),
        )
    coord = Coordinator(
        persist,
        catalog,
        oracle,
        clock,
        CoordinatorConfig(
            timestamp_interval_s=config.timestamp_interval_s,
            deploy_generation=generation,
            read_only=read_only,
        ),
        replica_factory=None if replica_procs is None else replica_procs.factory,
    )

    def factory(ctx: ConnectionContext) -> AdapterSession:
        return AdapterSession(coord, ctx)

    server = PgWireServer(
        factory,
        host=config.sql_listen[0],
        port=config.sql_listen[1],
        key_allocator=GenerationKeyAllocator(generation),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):  # kill -USR1: where is every task waiting?
        loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("%s", task_stacks()))
    tasks: set[asyncio.Task[None]] = {asyncio.create_task(coord.serve(), name="coordinator")}
    runner: web.AppRunner | None = None
    public: web.AppRunner | None = None
    reconciling: asyncio.Task[dict[str, list[str]]] | None = None
    try:
        await _wait_ready(coord, next(iter(tasks)))
        if replica_procs is not None:
            # Bootstrap re-created the catalog's dataflows: adopted replicas drop the rest
            # (in the background: a replica that is down must not delay serving).
            reconciling = asyncio.create_task(replica_procs.reconcile_all(), name="reconcile")

        async def remove_older_replicas() -> None:
            """Leader only: stop older generations' clusterd processes (never higher ones)."""
            if orchestrator is not None:
                await remove_older_generations(orchestrator, config.data_dir, generation)

        if read_only:
            deployment.advance(DeploymentState.CATCHING_UP)
            tasks.add(
                asyncio.create_task(
                    run_promotion(
                        deployment,
                        coord,
                        persist,
                        deploy_generation=generation,
                        params=params,
                        clock=clock,
                        feeds=_caught_up_feeds(coord, orchestrator, generation),
                        on_leader=remove_older_replicas,
                    ),
                    name="promotion",
                )
            )
        else:
            deployment.advance(DeploymentState.IS_LEADER)
            if durable is not None:  # our writable open fenced whoever held the catalog
                deployment.fence_events["fenced_predecessor"] += 1
            tasks.add(asyncio.create_task(remove_older_replicas(), name="remove-older"))
        await server.start()
        runner, internal_port = await _start_internal_http(config, coord, deployment, orchestrator)
        public, http_port = await _start_public_http(config, coord)
        _ports_file(config).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "sql_port": server.port,
                    "internal_http_port": internal_port,
                    "http_port": http_port,
                    "generation": generation,
                }
            )
        )
        log.info(
            "environmentd ready: sql %s:%d, internal http port %d (generation %d, %s)",
            server.host,
            server.port,
            internal_port,
            generation,
            "read-only" if read_only else "leader",
        )
        stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
        while True:
            done, _ = await asyncio.wait(tasks | {stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if stop_task in done:
                return 0
            for task in done:
                tasks.discard(task)
                err = task.exception()
                if err is not None:
                    raise err
            if not tasks:
                return 0
    except BaseException as e:
        fence = _find_fence(e)
        if fence is None:
            raise
        deployment.fence_events["fenced_by_successor"] += 1
        log.warning("fenced out by generation %d; exiting", fence.fence)
        print(f"fenced out by generation {fence.fence}", file=sys.stderr, flush=True)
        return 0
    finally:
        await drain(server, coord)
        if runner is not None:
            await runner.cleanup()
        if public is not None:
            await public.cleanup()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if reconciling is not None:
            reconciling.cancel()
            with contextlib.suppress(BaseException):
                await reconciling
        if orchestrator is not None:
            await orchestrator.stop_all()  # (the coordinator closed its replicas already)
        coord.engine.close()


async def drain(server: PgWireServer, coord: Coordinator) -> None:
    """Shut down without cutting a statement in half (doc/design/cutover.md, "Draining"):
    take no new work (idle sessions get FATAL 57P01 now, new statements are refused unrun),
    let group commit decide every write already queued — committed and acknowledged, or
    failed with the fence and provably not landed — answer the statements still running,
    then close every session with FATAL 57P01."""
    server.begin_shutdown()
    await coord.quiesce()
    await server.shutdown()


async def _system_parameters(persist: PersistClient) -> dict[str, str]:
    """Durable system parameters, read before the catalog is opened writable."""
    try:
        ro = await DurableCatalog.open(
            persist, OpenMode.READ_ONLY, deploy_generation=None, clock=SYSTEM_CLOCK
        )
    except NotWritable:
        return {}  # a fresh environment has none
    return ro.state.system_parameters()


def _find_fence(e: BaseException) -> DeployGenerationFenced | None:
    """The generation fence inside `e` (which may be an exception group), if any."""
    if isinstance(e, DeployGenerationFenced):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _find_fence(inner)
            if found is not None:
                return found
    return None


async def _wait_ready(coord: Coordinator, coord_task: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(coord.ready.wait())
    done, _ = await asyncio.wait({ready, coord_task}, return_when=asyncio.FIRST_COMPLETED)
    if coord_task in done:
        ready.cancel()
        coord_task.result()  # raises what stopped it
        raise RuntimeError("coordinator stopped during bootstrap")


async def _start_public_http(
    config: EnvironmentdConfig, coord: Coordinator
) -> tuple[web.AppRunner, int]:
    """The public listener: webhook sources (`/api/webhook/<db>/<schema>/<source>`)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    webhook_routes(app, coord)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.http_listen[0], config.http_listen[1])
    await site.start()
    return runner, int(runner.addresses[0][1])


async def _start_internal_http(
    config: EnvironmentdConfig,
    coord: Coordinator,
    deployment: Deployment,
    orchestrator: ProcessOrchestrator | None = None,
) -> tuple[web.AppRunner, int]:
    app = web.Application()
    last_collections: list[CollectionFrontiers] = []

    async def metrics() -> str:
        if coord.ready.is_set():  # lag and hydration now, not as of the last progress request
            last_collections[:] = await catch_up.collections(coord)
        stats = coord.committer.stats
        state = deployment.current()
        lines = [
            f"twinstream_group_commits_total {stats.commits}",
            f"twinstream_group_commit_writes_total {stats.writes}",
            f"twinstream_sessions {len(coord.sessions)}",
            f"twinstream_index_peeks_total {coord.index_peeks}",
            f"twinstream_deploy_generation {config.deploy_generation}",
        ]
        lines += [
            f'twinstream_deployment_state{{state="{s.value}"}} {1 if s is state else 0}'
            for s in DeploymentState
        ]
        if deployment.promotion_ms is not None:
            lines.append(f"twinstream_promotion_duration_ms {deployment.promotion_ms:.3f}")
        lines += [
            f'twinstream_fence_events_total{{event="{event}"}} {n}'
            for event, n in sorted(deployment.fence_events.items())
        ]
        for item_id, follower in coord.followers().items():
            lines.append(f'twinstream_follower_frontier{{id="{item_id}"}} {follower.frontier}')
        for svc in orchestrator.services.values() if orchestrator is not None else ():
            up = 1 if svc.address() is not None else 0
            lines.append(f'twinstream_replica_process_up{{name="{svc.name}"}} {up}')
            lines.append(f'twinstream_replica_process_restarts{{name="{svc.name}"}} {svc.restarts}')
        lines += catch_up.metric_lines(last_collections)  # as of the last progress request
        return "\n".join(lines) + "\n"

    leader_routes(
        app,
        deployment.handle(),
        token=config.internal_api_token,
        ready=lambda: coord.ready.is_set(),
        metrics=metrics,
    )

    async def progress_route(_request: web.Request) -> web.Response:
        if not coord.ready.is_set():
            return web.json_response({"collections": 0, "hydrated": 0, "clusters": {}})
        cols = await catch_up.collections(coord)
        last_collections[:] = cols
        names = {cid: name for name, cid in coord.index.clusters.items()}
        return web.json_response(catch_up.summarize(cols, names))

    app.router.add_get("/api/deployment/progress", progress_route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.internal_http_listen[0], config.internal_http_listen[1])
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port


def _caught_up_feeds(
    coord: Coordinator, orchestrator: ProcessOrchestrator | None, generation: int
) -> CaughtUpFeeds:
    """Crash-loop exclusion reads each clusterd replica's restart count from the process
    orchestrator (in-process replicas do not crash on their own: no feed)."""
    if orchestrator is None:
        return CaughtUpFeeds()

    def health() -> list[ReplicaHealth]:
        out = []
        for spec, _replica in coord.compute.replicas.values():
            svc = orchestrator.services.get(process_name(spec.name, generation))
            restarts = svc.restarts if svc is not None else 0
            out.append(ReplicaHealth(spec.cluster_id, spec.replica_id, restarts))
        return out

    return CaughtUpFeeds(replica_health=health)
