"""Driving upgrades: the orchestrator's rollout procedure over the durable rollout record.

    Applied(active=N) --upgrade--> Applying(desired=N+1) --ready--> ReadyToPromote
      --(point of no return, written first)--> Promoting --IsLeader--> Applied(active=N+1)
    Applying / ReadyToPromote --timeout or failure--> FailedDeploy(active=N): N untouched

A restarted orchestrator resumes from the record: `Promoting` is finished (the new generation
restarts at C == G and comes back as leader); an interrupted `Applying`/`ReadyToPromote` is
abandoned (FailedDeploy) and the active generation keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp

from twinstream.clock import SYSTEM_CLOCK, Clock
from twinstream.orchestrator.record import (
    GenerationEndpoint,
    RolloutRecord,
    RolloutStatus,
    RolloutStore,
)
from twinstream.orchestrator.supervisor import GenerationFailed, Supervisor
from twinstream.persist.location import Consensus
from twinstream.persist.urls import default_consensus_url, open_consensus

log = logging.getLogger(__name__)

STATUS_POLL_S = 0.05
PROMOTE_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 10.0
_RECORD_RETRY_MAX = 100
#: Backoff of recording a restarted generation's endpoint while the store is unavailable.
RESPAWN_RECORD_RETRY_FIRST_S = 0.1
RESPAWN_RECORD_RETRY_MAX_S = 2.0


class Strategy(enum.StrEnum):
    WAIT_UNTIL_READY = "WaitUntilReady"
    MANUALLY_PROMOTE = "ManuallyPromote"
    IMMEDIATELY_PROMOTE_CAUSING_DOWNTIME = "ImmediatelyPromoteCausingDowntime"


class RolloutError(RuntimeError):
    pass


class RolloutInProgress(RolloutError):
    pass


class RolloutTimeout(RolloutError):
    pass


Progress = Callable[[str, dict[str, object]], None]


def _no_progress(_phase: str, _info: dict[str, object]) -> None:
    return None


class Orchestrator:
    def __init__(
        self,
        data_dir: Path,
        *,
        consensus_url: str | None = None,
        blob_url: str | None = None,
        environment: str = "default",
        clock: Clock = SYSTEM_CLOCK,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        url = consensus_url or default_consensus_url(data_dir)
        self.consensus: Consensus = open_consensus(url)
        self.store = RolloutStore(self.consensus, environment)
        self.supervisor = Supervisor(
            data_dir, consensus_url=consensus_url, blob_url=blob_url, extra_args=extra_args
        )
        self.supervisor.on_respawn = self._respawned
        self.clock = clock
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.consensus.close()

    # -- record --------------------------------------------------------------------------------

    async def record(self) -> RolloutRecord | None:
        return (await self.store.read())[1]

    async def _update(
        self, change: Callable[[RolloutRecord | None], RolloutRecord]
    ) -> RolloutRecord:
        for _ in range(_RECORD_RETRY_MAX):
            seqno, current = await self.store.read()
            new = change(current)
            if await self.store.write(seqno, new):
                return new
        raise RolloutError("the rollout record kept changing under the orchestrator")

    async def _respawned(self, endpoint: GenerationEndpoint) -> None:
        """A crashed generation came back on new ports: route to them (the balancer reads
        endpoints from the record). Generations no longer in the record stay out of it."""

        def change(r: RolloutRecord | None) -> RolloutRecord:
            record = _require(r)
            if str(endpoint.generation) not in record.endpoints:
                return record
            return _with_endpoint(record, endpoint)

        delay = RESPAWN_RECORD_RETRY_FIRST_S
        while True:  # the store may be what crashed the generation: retry until it answers
            try:
                await self._update(change)
                break
            except Exception as e:
                gp = self.supervisor.generations.get(endpoint.generation)
                if gp is None or gp.endpoint != endpoint:
                    return  # stopped or restarted again: nothing to record
                log.warning("recording generation %d's new endpoint: %s", endpoint.generation, e)
                await asyncio.sleep(delay)  # retry backoff while the store is unavailable
                delay = min(delay * 2, RESPAWN_RECORD_RETRY_MAX_S)
        log.info("generation %d restarted at port %d", endpoint.generation, endpoint.sql_port)

    # -- lifecycle -----------------------------------------------------------------------------

    async def up(self) -> RolloutRecord:
        """Start (or resume) the environment: the active generation runs and serves."""
        current = await self.record()
        if current is None:
            endpoint = await self.supervisor.start(0)
            return await self._update(
                lambda _r: RolloutRecord(0, 0, RolloutStatus.APPLIED, {"0": endpoint})
            )
        if current.status is RolloutStatus.PROMOTING:
            log.info(
                "resuming an interrupted promotion to generation %d", current.desired_generation
            )
            return await self._finish_promotion(current, _no_progress)
        if current.status in (RolloutStatus.APPLYING, RolloutStatus.READY_TO_PROMOTE):
            desired = current.endpoints.get(str(current.desired_generation))
            if desired is not None:
                _kill_pid(desired.pid)
            current = await self._update(lambda r: _failed(r, "orchestrator restarted mid-rollout"))
        active = current.active_generation
        endpoint = await self.supervisor.start(active)
        return await self._update(lambda r: _with_endpoint(_require(r), endpoint))

    async def down(self) -> None:
        await self.supervisor.stop_all()

    # -- upgrades ------------------------------------------------------------------------------

    async def upgrade(
        self,
        *,
        strategy: Strategy = Strategy.WAIT_UNTIL_READY,
        rollout_timeout_s: float | None = None,
        force_promote: bool = False,
        program: list[str] | None = None,
        progress: Progress = _no_progress,
    ) -> RolloutRecord:
        current = _require(await self.record())
        if current.status not in (RolloutStatus.APPLIED, RolloutStatus.FAILED_DEPLOY):
            raise RolloutInProgress(
                f"a rollout to generation {current.desired_generation} is in progress "
                f"({current.status.value})"
            )
        new_gen = current.active_generation + 1
        await self._update(
            lambda r: dataclasses.replace(
                _require(r), desired_generation=new_gen, status=RolloutStatus.APPLYING, message=""
            )
        )
        progress("starting", {"generation": new_gen})
        try:
            endpoint = await self.supervisor.start(new_gen, program)
        except GenerationFailed as e:
            reason = str(e)
            await self._update(lambda r: _failed(r, reason))
            raise RolloutError(f"generation {new_gen} failed to start: {e}") from e
        await self._update(lambda r: _with_endpoint(_require(r), endpoint))
        skip = force_promote or strategy is Strategy.IMMEDIATELY_PROMOTE_CAUSING_DOWNTIME
        try:
            await asyncio.wait_for(
                self._wait_ready(endpoint, skip=skip, progress=progress), rollout_timeout_s
            )
        except (TimeoutError, RolloutError) as e:
            await self.supervisor.stop(new_gen)
            reason = f"not ready: {e!r}"
            await self._update(lambda r: _without(_failed(r, reason), new_gen))
            raise RolloutTimeout(
                f"generation {new_gen} was not ready in time; generation "
                f"{current.active_generation} keeps serving"
            ) from e
        record = await self._update(
            lambda r: dataclasses.replace(_require(r), status=RolloutStatus.READY_TO_PROMOTE)
        )
        progress("ready", {"generation": new_gen})
        if strategy is Strategy.MANUALLY_PROMOTE:
            return record
        return await self.promote(progress=progress)

    async def promote(self, *, progress: Progress = _no_progress) -> RolloutRecord:
        current = _require(await self.record())
        if current.status is not RolloutStatus.READY_TO_PROMOTE:
            raise RolloutError(f"nothing to promote (rollout status {current.status.value})")
        # Point of no return: recorded before promote is called.
        record = await self._update(
            lambda r: dataclasses.replace(_require(r), status=RolloutStatus.PROMOTING)
        )
        return await self._finish_promotion(record, progress)

    async def _finish_promotion(self, record: RolloutRecord, progress: Progress) -> RolloutRecord:
        new_gen, old_gen = record.desired_generation, record.active_generation
        endpoint = record.endpoints.get(str(new_gen))
        if new_gen not in self.supervisor.generations:
            endpoint = await self.supervisor.start(new_gen)  # comes back at C == G: leader
            record = await self._update(lambda r: _with_endpoint(_require(r), endpoint))
        assert endpoint is not None
        started = self.clock.monotonic()
        progress("promoting", {"generation": new_gen})
        await asyncio.wait_for(self._promote(new_gen), PROMOTE_TIMEOUT_S)
        promote_ms = (self.clock.monotonic() - started) * 1000
        # The supervisor knows the endpoint it runs now (a restart moves it to new ports).
        current = self.supervisor.generations.get(new_gen)
        live = current.endpoint if current is not None else None
        record = await self._update(
            lambda r: dataclasses.replace(
                _with_endpoint(_require(r), live) if live is not None else _require(r),
                active_generation=new_gen,
                status=RolloutStatus.APPLIED,
                message=f"promoted in {promote_ms:.0f} ms",
            )
        )
        progress("promoted", {"generation": new_gen, "promote_ms": promote_ms})
        if old_gen != new_gen and old_gen in self.supervisor.generations:
            code = await self.supervisor.wait_exit(old_gen, DRAIN_TIMEOUT_S)
            if code is None:
                log.warning("generation %d did not exit after the fence; stopping it", old_gen)
            await self.supervisor.stop(old_gen)
        record = await self._update(lambda r: _without(_require(r), old_gen))
        progress("done", {"generation": new_gen, "promote_ms": promote_ms})
        return record

    async def restart_upgrade(self, *, progress: Progress = _no_progress) -> RolloutRecord:
        """The naive baseline the benchmarks compare against: stop the old generation, then
        start the new one (zero-downtime deployment disabled, so it takes over at once)."""
        current = _require(await self.record())
        old_gen, new_gen = current.active_generation, current.active_generation + 1
        started = self.clock.monotonic()
        await self.supervisor.stop(old_gen)
        self.supervisor.env_overrides = {"ENABLE_0DT_DEPLOYMENT": "off"}
        try:
            endpoint = await self.supervisor.start(new_gen)
        finally:
            self.supervisor.env_overrides = {}
        record = await self._update(
            lambda r: dataclasses.replace(
                _require(r),
                desired_generation=new_gen,
                active_generation=new_gen,
                status=RolloutStatus.APPLIED,
                endpoints={str(new_gen): endpoint},
                message="restarted (naive)",
            )
        )
        progress(
            "promoted",
            {"generation": new_gen, "promote_ms": (self.clock.monotonic() - started) * 1000},
        )
        return record

    # -- talking to environmentd ---------------------------------------------------------------

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._http

    def _endpoint(self, generation: int) -> GenerationEndpoint:
        gp = self.supervisor.generations.get(generation)
        if gp is None or gp.endpoint is None:
            raise RolloutError(f"generation {generation} is not running")
        return gp.endpoint

    async def status(self, generation: int) -> str:
        ep = self._endpoint(generation)
        http = await self._session()
        async with http.get(f"http://127.0.0.1:{ep.internal_http_port}/api/leader/status") as r:
            return str((await r.json())["status"])

    async def _wait_ready(
        self, endpoint: GenerationEndpoint, *, skip: bool, progress: Progress
    ) -> None:
        http = await self._session()
        gen = endpoint.generation
        while True:
            if gen not in self.supervisor.generations:
                raise RolloutError(f"generation {gen} went away")
            with contextlib.suppress(aiohttp.ClientError):
                ep = self._endpoint(gen)
                base = f"http://127.0.0.1:{ep.internal_http_port}"
                if skip:
                    async with http.post(f"{base}/api/leader/skip-catchup"):
                        pass
                state = await self.status(gen)
                progress("catching up", {"generation": gen, "status": state})
                if state in ("ReadyToPromote", "Promoting", "IsLeader"):
                    return
            await asyncio.sleep(STATUS_POLL_S)  # poll interval of the status API

    async def _promote(self, generation: int) -> None:
        http = await self._session()
        while True:
            with contextlib.suppress(aiohttp.ClientError, RolloutError):
                ep = self._endpoint(generation)
                base = f"http://127.0.0.1:{ep.internal_http_port}"
                async with http.post(f"{base}/api/leader/promote") as r:
                    await r.read()
                if await self.status(generation) == "IsLeader":
                    return
            await asyncio.sleep(STATUS_POLL_S)  # poll interval of the status API


def _require(record: RolloutRecord | None) -> RolloutRecord:
    if record is None:
        raise RolloutError("no environment here: run `twinstream up` first")
    return record


def _failed(record: RolloutRecord | None, message: str) -> RolloutRecord:
    r = _require(record)
    return dataclasses.replace(
        r,
        desired_generation=r.active_generation,
        status=RolloutStatus.FAILED_DEPLOY,
        message=message,
    )


def _with_endpoint(record: RolloutRecord, endpoint: GenerationEndpoint) -> RolloutRecord:
    endpoints = dict(record.endpoints)
    endpoints[str(endpoint.generation)] = endpoint
    return dataclasses.replace(record, endpoints=endpoints)


def _without(record: RolloutRecord, generation: int) -> RolloutRecord:
    if generation == record.active_generation:
        return record
    endpoints = {k: v for k, v in record.endpoints.items() if k != str(generation)}
    return dataclasses.replace(record, endpoints=endpoints)


def _kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
