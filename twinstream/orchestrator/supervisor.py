"""Starts, watches and stops environmentd processes, one per generation.

A generation whose process dies unexpectedly is restarted with exponential backoff and its
restarts are counted (a crash-looping generation is reported, never silently retried forever).
An exit with code 0 is a deliberate exit — fenced out, or told to stop — and is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from twinstream.orchestrator.record import GenerationEndpoint

log = logging.getLogger(__name__)

#: Restart backoff: first delay, cap, and how long a process must live to reset it.
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
HEALTHY_AFTER_S = 10.0
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class GenerationFailed(RuntimeError):
    """A generation's process could not be started."""


@dataclass
class GenerationProcess:
    generation: int
    command: list[str]
    data_dir: Path
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    endpoint: GenerationEndpoint | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    stopping: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ports_file(self) -> Path:
        return self.data_dir / f"environmentd-gen-{self.generation}.json"


def _stopping(gp: GenerationProcess) -> bool:
    return gp.stopping


class Supervisor:
    def __init__(
        self,
        data_dir: Path,
        *,
        consensus_url: str | None = None,
        blob_url: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.consensus_url = consensus_url
        self.blob_url = blob_url
        self.extra_args = list(extra_args or [])
        self.generations: dict[int, GenerationProcess] = {}
        #: Extra environment variables for processes started from now on.
        self.env_overrides: dict[str, str] = {}
        self._watchers: dict[int, asyncio.Task[None]] = {}
        #: Called with the new endpoint after a crashed generation was restarted: it listens
        #: on new ports, so whoever routes to it (the rollout record) must learn them.
        self.on_respawn: Callable[[GenerationEndpoint], Awaitable[None]] | None = None
        self._respawn_tasks: set[asyncio.Task[None]] = set()

    def command_for(self, generation: int, program: list[str] | None = None) -> list[str]:
        base = program or [sys.executable, "-m", "twinstream"]
        args = [
            *base,
            "environmentd",
            "--data-dir",
            str(self.data_dir),
            "--deploy-generation",
            str(generation),
            "--sql-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--internal-http-listen",
            "127.0.0.1:0",
        ]
        if self.consensus_url:
            args += ["--consensus", self.consensus_url]
        if self.blob_url:
            args += ["--blob", self.blob_url]
        return args + self.extra_args

    async def start(self, generation: int, program: list[str] | None = None) -> GenerationEndpoint:
        """Start a generation and wait until it serves; returns its endpoint."""
        assert generation not in self.generations or self.generations[generation].stopping, (
            f"generation {generation} is already running"
        )
        gp = GenerationProcess(
            generation,
            self.command_for(generation, program),
            self.data_dir,
            self.data_dir / f"environmentd-gen-{generation}.log",
        )
        self.generations[generation] = gp
        endpoint = await self._spawn(gp)
        self._watchers[generation] = asyncio.create_task(
            self._watch(gp), name=f"watch-gen-{generation}"
        )
        return endpoint

    async def _spawn(self, gp: GenerationProcess) -> GenerationEndpoint:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            gp.ports_file.unlink()
        logf = open(gp.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            gp.proc = await asyncio.create_subprocess_exec(
                *gp.command,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env_overrides},
            )
        finally:
            logf.close()
        gp.exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT_S
        while loop.time() < deadline:
            if gp.proc.returncode is not None:
                raise GenerationFailed(
                    f"generation {gp.generation} exited with {gp.proc.returncode} at startup; "
                    f"see {gp.log_path}"
                )
            if gp.ports_file.exists():
                with contextlib.suppress(ValueError):
                    info = json.loads(gp.ports_file.read_text())
                    if info.get("pid") == gp.proc.pid:
                        gp.endpoint = GenerationEndpoint(
                            gp.generation,
                            "127.0.0.1",
                            int(info["sql_port"]),
                            int(info["internal_http_port"]),
                            gp.proc.pid,
                        )
                        return gp.endpoint
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gp.proc.wait(), 0.02)
        await self._kill(gp)
        raise GenerationFailed(f"generation {gp.generation} did not start in time")

    async def _watch(self, gp: GenerationProcess) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            assert gp.proc is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            code = await gp.proc.wait()
            gp.exit_codes.append(code)
            if gp.stopping or code == 0:
                log.info("generation %d exited with %d", gp.generation, code)
                gp.exited.set()
                return
            gp.restarts += 1
            if loop.time() - started >= HEALTHY_AFTER_S:
                backoff = BACKOFF_FIRST_S
            log.warning(
                "generation %d crashed (exit %d); restart %d in %.1f s",
                gp.generation,
                code,
                gp.restarts,
                backoff,
            )
            await asyncio.sleep(backoff)  # restart backoff (not synchronization)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            if _stopping(gp):  # stop() may have been called during the backoff
                gp.exited.set()
                return
            try:
                endpoint = await self._spawn(gp)
            except GenerationFailed as e:
                log.warning("%s", e)
                continue
            if self.on_respawn is not None:  # in its own task: it may wait for the store
                task = asyncio.create_task(self._respawned(endpoint))
                self._respawn_tasks.add(task)
                task.add_done_callback(self._respawn_tasks.discard)

    async def _respawned(self, endpoint: GenerationEndpoint) -> None:
        assert self.on_respawn is not None
        try:
            await self.on_respawn(endpoint)
        except Exception:
            log.exception("recording generation %d's new endpoint failed", endpoint.generation)

    async def wait_exit(self, generation: int, timeout_s: float) -> int | None:
        gp = self.generations.get(generation)
        if gp is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gp.exited.wait(), timeout_s)
        return gp.exit_codes[-1] if gp.exited.is_set() and gp.exit_codes else None

    async def stop(self, generation: int) -> None:
        """SIGTERM (sessions get FATAL 57P01), then SIGKILL if it lingers."""
        gp = self.generations.get(generation)
        if gp is None:
            return
        gp.stopping = True
        if gp.proc is not None and gp.proc.returncode is None:
            gp.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(gp.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                await self._kill(gp)
        watcher = self._watchers.pop(generation, None)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        gp.exited.set()
        del self.generations[generation]

    async def _kill(self, gp: GenerationProcess) -> None:
        if gp.proc is not None and gp.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gp.proc.pid, signal.SIGKILL)
            await gp.proc.wait()

    async def stop_all(self) -> None:
        for generation in list(self.generations):
            await self.stop(generation)
        for task in list(self._respawn_tasks):
            task.cancel()
