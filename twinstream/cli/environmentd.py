"""`twinstream environmentd`: one environment process — catalog, coordinator, SQL (pgwire),
HTTP (webhooks, later) and the internal HTTP API (leader status, metrics).

Start here: `run_environmentd(EnvironmentdConfig(...))`. It exits 0 when fenced out by a newer
generation (so a supervisor does not restart it in a loop) and on SIGTERM after sending every
session FATAL 57P01.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from twinstream.adapter.coordinator import Coordinator, CoordinatorConfig
from twinstream.adapter.oracle import TimestampOracle
from twinstream.adapter.session import AdapterSession
from twinstream.catalog import (
    DeployGenerationFenced,
    DurableCatalog,
    OpenMode,
    read_catalog_generation,
)
from twinstream.clock import SYSTEM_CLOCK, Clock
from twinstream.persist import PersistClient
from twinstream.persist.urls import default_blob_url, default_consensus_url
from twinstream.pgwire.backend import ConnectionContext
from twinstream.pgwire.server import PgWireServer

log = logging.getLogger("twinstream.environmentd")

DEFAULT_SQL_PORT = 6877
DEFAULT_HTTP_PORT = 6876
DEFAULT_INTERNAL_HTTP_PORT = 6878


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {text!r}")
    return host, int(port)


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


async def _serve(config: EnvironmentdConfig, persist: PersistClient, clock: Clock) -> int:
    generation = config.deploy_generation
    durable = await read_catalog_generation(persist)
    if durable is not None and durable > generation:
        log.warning("this deployment has been fenced out (catalog generation %d)", durable)
        print("this deployment has been fenced out", file=sys.stderr, flush=True)
        return 0
    try:
        catalog = await DurableCatalog.open(
            persist, OpenMode.WRITABLE, deploy_generation=generation, clock=clock
        )
    except DeployGenerationFenced as e:
        log.warning("this deployment has been fenced out: %s", e)
        print("this deployment has been fenced out", file=sys.stderr, flush=True)
        return 0
    await persist.start_watching()
    oracle = TimestampOracle(persist.consensus, clock)
    coord = Coordinator(
        persist,
        catalog,
        oracle,
        clock,
        CoordinatorConfig(
            timestamp_interval_s=config.timestamp_interval_s, deploy_generation=generation
        ),
    )

    def factory(ctx: ConnectionContext) -> AdapterSession:
        return AdapterSession(coord, ctx)

    server = PgWireServer(factory, host=config.sql_listen[0], port=config.sql_listen[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    coord_task = asyncio.create_task(coord.serve(), name="coordinator")
    runner: web.AppRunner | None = None
    try:
        await _wait_ready(coord, coord_task)
        await server.start()
        runner, internal_port = await _start_internal_http(config, coord)
        _ports_file(config).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "sql_port": server.port,
                    "internal_http_port": internal_port,
                    "generation": generation,
                }
            )
        )
        log.info(
            "environmentd ready: sql %s:%d, internal http port %d (generation %d)",
            server.host,
            server.port,
            internal_port,
            generation,
        )
        stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({coord_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if coord_task in done:
            err = coord_task.exception()
            if err is not None:
                raise err
        return 0
    except BaseException as e:
        fence = _find_fence(e)
        if fence is None:
            raise
        log.warning("fenced out by generation %d; exiting", fence.fence)
        print(f"fenced out by generation {fence.fence}", file=sys.stderr, flush=True)
        return 0
    finally:
        await server.shutdown()
        if runner is not None:
            await runner.cleanup()
        coord_task.cancel()
        with contextlib.suppress(BaseException):
            await coord_task
        coord.engine.close()


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


async def _start_internal_http(
    config: EnvironmentdConfig, coord: Coordinator
) -> tuple[web.AppRunner, int]:
    app = web.Application()

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"status": "IsLeader"})

    async def metrics(_request: web.Request) -> web.Response:
        stats = coord.committer.stats
        body = (
            f"twinstream_group_commits_total {stats.commits}\n"
            f"twinstream_group_commit_writes_total {stats.writes}\n"
            f"twinstream_sessions {len(coord.sessions)}\n"
        )
        return web.Response(text=body, content_type="text/plain")

    app.router.add_get("/api/leader/status", status)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.internal_http_listen[0], config.internal_http_listen[1])
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port
