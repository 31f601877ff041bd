"""Starts, watches and stops environmentd processes, one per generation.

A generation whose process dies unexpectedly is restarted with exponential backoff and its
restarts are counted (a crash-looping generation is reported, never silently retried forever).
An exit with code 0 is a deliberate exit — fenced out, or told to stop — and is not restarted.

Processes run in their own session, so they outlive the orchestrator: a restarted orchestrator
*adopts* the generations its record lists (`adopt`) instead of starting them again — a second
process of the same generation would fence the first. An adopted process is not our child, so
it is watched by polling and its exit code is unknown (counted as a crash unless we expected it
to exit).
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

from twinstream.orchestrator.processes import stop_leftovers
from twinstream.orchestrator.record import GenerationEndpoint

log = logging.getLogger(__name__)

#: Restart backoff: first delay, cap, and how long a process must live to reset it.
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
HEALTHY_AFTER_S = 10.0
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: How often an adopted (not our child) process is checked for liveness.
ADOPTED_POLL_S = 0.1


class GenerationFailed(RuntimeError):
    """A generation's process could not be started."""


@dataclass
class GenerationProcess:
    generation: int
    command: list[str]
    data_dir: Path
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    #: Set when the process was started by an earlier orchestrator and adopted by this one.
    adopted_pid: int | None = None
    #: Working directory: the data dir for a `--to` program, so that a source checkout in the
    #: orchestrator's directory cannot shadow the install the program names.
    cwd: Path | None = None
    endpoint: GenerationEndpoint | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    stopping: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ports_file(self) -> Path:
        return self.data_dir / f"environmentd-gen-{self.generation}.json"

    @property
    def pid(self) -> int | None:
        """The process group leader (what `stop` signals)."""
        if self.adopted_pid is not None:
            return self.adopted_pid
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        if self.adopted_pid is not None:
            return pid_alive(self.adopted_pid)
        return self.proc is not None and self.proc.returncode is None


def pid_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie nobody reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


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
        self.data_dir = data_dir.absolute()
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

    def _process(self, generation: int, program: list[str] | None) -> GenerationProcess:
        return GenerationProcess(
            generation,
            self.command_for(generation, program),
            self.data_dir,
            self.data_dir / f"environmentd-gen-{generation}.log",
            cwd=self.data_dir if program else None,
        )

    async def start(self, generation: int, program: list[str] | None = None) -> GenerationEndpoint:
        """Start a generation and wait until it serves; returns its endpoint."""
        assert generation not in self.generations or self.generations[generation].stopping, (
            f"generation {generation} is already running"
        )
        gp = self._process(generation, program)
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
                cwd=gp.cwd,
            )
        except OSError as e:  # no such program, not executable, ...
            raise GenerationFailed(
                f"generation {gp.generation}: cannot run {gp.command[0]!r}: {e}"
            ) from e
        finally:
            logf.close()
        gp.adopted_pid = None
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
                    # The command may be a wrapper: environmentd is then in its process group.
                    pid = int(info.get("pid", -1))
                    if pid == gp.proc.pid or (pid > 0 and _group_of(pid) == gp.proc.pid):
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

    def adopt(self, endpoint: GenerationEndpoint, program: list[str] | None = None) -> bool:
        """Watch a generation an earlier orchestrator started, if it still runs; False if not.

        It is recognised by its ports file: the environmentd named there is alive and in the
        process group `endpoint.pid` leads (a recycled pid would not match both)."""
        generation = endpoint.generation
        assert generation not in self.generations, f"generation {generation} is already known"
        gp = self._process(generation, program)
        try:
            info = json.loads(gp.ports_file.read_text())
            pid = int(info["pid"])
            sql_port = int(info["sql_port"])
        except (FileNotFoundError, ValueError, KeyError):
            return False
        if not (pid_alive(pid) and pid_alive(endpoint.pid)):
            return False
        if _group_of(pid) != endpoint.pid or sql_port != endpoint.sql_port:
            return False
        gp.adopted_pid = endpoint.pid
        gp.endpoint = endpoint
        self.generations[generation] = gp
        self._watchers[generation] = asyncio.create_task(
            self._watch(gp), name=f"watch-gen-{generation}"
        )
        log.info("adopted generation %d (pid %d)", generation, endpoint.pid)
        return True

    def expect_exit(self, generation: int) -> None:
        """The generation is about to exit by itself (fenced out): do not restart it."""
        gp = self.generations.get(generation)
        if gp is not None:
            gp.stopping = True

    async def _wait_adopted(self, gp: GenerationProcess) -> int:
        assert gp.adopted_pid is not None
        while pid_alive(gp.adopted_pid):
            await asyncio.sleep(ADOPTED_POLL_S)  # poll interval: not our child, no wait()
        return -1  # the exit code of a process that is not our child is unknown

    async def _watch(self, gp: GenerationProcess) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            loop = asyncio.get_running_loop()
            started = loop.time()
            if gp.adopted_pid is not None:
                code = await self._wait_adopted(gp)
            else:
                assert gp.proc is not None
                code = await gp.proc.wait()
            gp.exit_codes.append(code)
            if _stopping(gp) or code == 0:
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
                if gp.proc is None or gp.adopted_pid is not None:
                    gp.exited.set()  # cannot even start it: reported through `restarts`
                    return
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
        if gp.adopted_pid is not None:
            await self._stop_adopted(gp.adopted_pid)
        elif gp.proc is not None and gp.proc.returncode is None:
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
        # Its replica processes (`clusterd`, own sessions) outlive an environmentd that was
        # killed rather than stopped cleanly: the generation is gone, so are they.
        left = await stop_leftovers(self.data_dir / "clusterd", f"-gen-{generation}")
        if left:
            log.info("stopped generation %d's leftover replica processes %s", generation, left)
        gp.exited.set()
        del self.generations[generation]

    async def _stop_adopted(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT_S
        while pid_alive(pid) and loop.time() < deadline:
            await asyncio.sleep(ADOPTED_POLL_S)  # poll interval: not our child
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

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
