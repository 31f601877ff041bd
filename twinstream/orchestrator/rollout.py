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
from typing import Any

import aiohttp

from twinstream.clock import SYSTEM_CLOCK, Clock
from twinstream.orchestrator.failpoints import failpoint
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
#: A new generation restarted more often than this during its rollout fails the rollout.
ROLLOUT_MAX_RESTARTS = 3
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
        """Start (or resume) the environment: the active generation runs and serves.

        Generations still running from an earlier orchestrator are adopted, never started a
        second time. Then, by the record's status: `Promoting` is finished here; `Applying` /
        `ReadyToPromote` whose new generation still runs is left for `resume_rollout` (run it
        in the background), otherwise it is abandoned (`FailedDeploy`, the active generation
        untouched); after `Applied` / `FailedDeploy` every other generation is stopped.
        """
        current = await self.record()
        if current is None:
            endpoint = await self.supervisor.start(0)
            return await self._update(
                lambda _r: RolloutRecord(0, 0, RolloutStatus.APPLIED, {"0": endpoint})
            )
        gone = [
            key
            for key, ep in current.endpoints.items()
            if int(key) not in self.supervisor.generations
            and not self.supervisor.adopt(ep, self._program_of(current, int(key)))
        ]
        if gone:
            log.info("generations %s no longer run", ", ".join(gone))
            current = await self._update(lambda r: _drop(_require(r), gone))
        if current.status is RolloutStatus.PROMOTING:
            log.info(
                "resuming an interrupted promotion to generation %d", current.desired_generation
            )
            return await self._finish_promotion(current, _no_progress)
        rolling = current.status in (RolloutStatus.APPLYING, RolloutStatus.READY_TO_PROMOTE)
        if rolling and current.desired_generation not in self.supervisor.generations:
            current = await self._update(
                lambda r: _failed(r, "the new generation was lost while the orchestrator was down")
            )
        if current.status in (RolloutStatus.APPLIED, RolloutStatus.FAILED_DEPLOY):
            for gen in list(self.supervisor.generations):
                if gen != current.active_generation:
                    await self.supervisor.stop(gen)
            active_key = str(current.active_generation)
            current = await self._update(
                lambda r: _drop(_require(r), [k for k in _require(r).endpoints if k != active_key])
            )
        active = current.active_generation
        if active not in self.supervisor.generations:
            endpoint = await self.supervisor.start(active, self._program_of(current, active))
            current = await self._update(lambda r: _with_endpoint(_require(r), endpoint))
        return current

    async def resume_rollout(self, *, progress: Progress = _no_progress) -> RolloutRecord | None:
        """Continue the rollout an earlier orchestrator left (call after `up`); None if there
        is nothing to continue (a `ManuallyPromote` rollout waits for `promote`)."""
        current = _require(await self.record())
        if current.status is RolloutStatus.APPLYING:
            log.info("resuming the rollout to generation %d", current.desired_generation)
            return await self._continue_rollout(current, progress)
        manual = current.strategy == Strategy.MANUALLY_PROMOTE.value
        if current.status is RolloutStatus.READY_TO_PROMOTE and not manual:
            return await self.promote(progress=progress)
        return None

    def rollout_pending(self, record: RolloutRecord) -> bool:
        """True if `resume_rollout` has work to do for `record`."""
        if record.status is RolloutStatus.APPLYING:
            return True
        return (
            record.status is RolloutStatus.READY_TO_PROMOTE
            and record.strategy != Strategy.MANUALLY_PROMOTE.value
        )

    @staticmethod
    def _program_of(record: RolloutRecord, generation: int) -> list[str] | None:
        """The command a generation runs: the rollout's `--to` for the generation it brings."""
        if generation == record.desired_generation and record.program:
            return list(record.program)
        return None

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
            raise RolloutInProgress(in_progress_message(current))
        new_gen = current.active_generation + 1
        deadline_ms = 0
        if rollout_timeout_s is not None:
            deadline_ms = self.clock.now_ms() + max(1, int(rollout_timeout_s * 1000))
        record = await self._update(
            lambda r: dataclasses.replace(
                _require(r),
                desired_generation=new_gen,
                status=RolloutStatus.APPLYING,
                message="",
                strategy=strategy.value,
                force_promote=force_promote,
                deadline_ms=deadline_ms,
                program=list(program or []),
            )
        )
        progress("starting", {"generation": new_gen})
        try:
            endpoint = await self.supervisor.start(new_gen, program)
        except GenerationFailed as e:
            reason = str(e)
            await self.supervisor.stop(new_gen)
            await self._update(lambda r: _drop(_failed(r, reason), [str(new_gen)]))
            raise RolloutError(
                f"generation {new_gen} failed to start: {e}; generation "
                f"{current.active_generation} keeps serving"
            ) from e
        record = await self._update(lambda r: _with_endpoint(_require(r), endpoint))
        failpoint("rollout-after-start")
        return await self._continue_rollout(record, progress)

    async def _continue_rollout(self, record: RolloutRecord, progress: Progress) -> RolloutRecord:
        """Applying -> ReadyToPromote (-> Promoting -> Applied unless ManuallyPromote), or
        FailedDeploy with the new generation torn down and the active one untouched."""
        new_gen, old_gen = record.desired_generation, record.active_generation
        strategy = Strategy(record.strategy)
        skip = record.force_promote or strategy is Strategy.IMMEDIATELY_PROMOTE_CAUSING_DOWNTIME
        timeout_s = None
        if record.deadline_ms:
            timeout_s = max(0.0, (record.deadline_ms - self.clock.now_ms()) / 1000)
        try:
            await asyncio.wait_for(
                self._wait_ready(new_gen, skip=skip, progress=progress), timeout_s
            )
        except (TimeoutError, RolloutError) as e:
            await self.supervisor.stop(new_gen)
            timed_out = isinstance(e, TimeoutError)
            reason = "not ready in time" if timed_out else str(e)
            await self._update(lambda r: _drop(_failed(r, reason), [str(new_gen)]))
            if timed_out:
                raise RolloutTimeout(
                    f"generation {new_gen} was not ready in time; generation {old_gen} keeps "
                    "serving"
                ) from e
            raise RolloutError(
                f"generation {new_gen} failed: {e}; generation {old_gen} keeps serving"
            ) from e
        record = await self._update(
            lambda r: dataclasses.replace(_require(r), status=RolloutStatus.READY_TO_PROMOTE)
        )
        progress("ready", {"generation": new_gen})
        failpoint("rollout-after-ready")
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
        failpoint("rollout-after-promoting")
        return await self._finish_promotion(record, progress)

    async def _finish_promotion(self, record: RolloutRecord, progress: Progress) -> RolloutRecord:
        new_gen, old_gen = record.desired_generation, record.active_generation
        if new_gen not in self.supervisor.generations:
            # Comes back at C == G as leader, or read-only if the fence never happened (then
            # it catches up and is promoted below).
            endpoint = await self.supervisor.start(new_gen, self._program_of(record, new_gen))
            record = await self._update(lambda r: _with_endpoint(_require(r), endpoint))
        started = self.clock.monotonic()
        progress("promoting", {"generation": new_gen})
        if old_gen != new_gen:
            self.supervisor.expect_exit(old_gen)  # the fence makes it exit 0: no restart
        await asyncio.wait_for(self._promote(new_gen), PROMOTE_TIMEOUT_S)
        promote_ms = (self.clock.monotonic() - started) * 1000
        failpoint("rollout-after-promote")
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
        failpoint("rollout-after-applied")
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

    async def progress(self, generation: int) -> dict[str, Any]:
        """The generation's catch-up progress (deployment/progress.py): hydration, lag."""
        ep = self._endpoint(generation)
        http = await self._session()
        url = f"http://127.0.0.1:{ep.internal_http_port}/api/deployment/progress"
        async with http.get(url) as r:
            body: dict[str, Any] = await r.json()
            return body

    async def status(self, generation: int) -> str:
        ep = self._endpoint(generation)
        http = await self._session()
        async with http.get(f"http://127.0.0.1:{ep.internal_http_port}/api/leader/status") as r:
            return str((await r.json())["status"])

    async def _wait_ready(self, gen: int, *, skip: bool, progress: Progress) -> None:
        """Until `gen` reports ReadyToPromote (or later). Fails if it goes away or crash-loops
        (more than `ROLLOUT_MAX_RESTARTS` restarts)."""
        http = await self._session()
        while True:
            gp = self.supervisor.generations.get(gen)
            if gp is None:
                raise RolloutError(f"generation {gen} went away")
            if gp.restarts > ROLLOUT_MAX_RESTARTS or (gp.exited.is_set() and not gp.running()):
                raise RolloutError(
                    f"generation {gen} keeps crashing ({gp.restarts} restarts, exit codes "
                    f"{gp.exit_codes[-3:]}); see {gp.log_path}"
                )
            with contextlib.suppress(aiohttp.ClientError, RolloutError):
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


def in_progress_message(record: RolloutRecord) -> str:
    """The refusal of a second upgrade, naming the rollout in progress."""
    return (
        f"a rollout to generation {record.desired_generation} is in progress "
        f"({record.status.value}, strategy {record.strategy}); wait for it, "
        "or finish it with `twinstream promote`"
        if record.status is RolloutStatus.READY_TO_PROMOTE
        else f"a rollout to generation {record.desired_generation} is in progress "
        f"({record.status.value}, strategy {record.strategy}); wait for it to finish"
    )


def _drop(record: RolloutRecord, keys: list[str]) -> RolloutRecord:
    """`record` without the endpoints of the generations named in `keys`."""
    endpoints = {k: v for k, v in record.endpoints.items() if k not in keys}
    return dataclasses.replace(record, endpoints=endpoints)


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
