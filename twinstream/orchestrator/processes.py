"""A small process orchestrator: named service processes (clusterd replicas), kept running.

    orch = ProcessOrchestrator(data_dir / "clusterd")
    svc = orch.ensure("quickstart-replica-u1-gen-2", [sys.executable, "-m", "twinstream", ...])
    svc.address()                 # (host, port) once it listens; None while (re)starting
    svc.restarts                  # crashes survived
    await orch.stop("quickstart-replica-u1-gen-2")   # SIGTERM, then SIGKILL if it lingers

Each service gets `--ports-file DIR/<name>.json` appended to its command and writes
`{"pid", "port", ...}` there once it listens. A service that dies unexpectedly is restarted
with exponential backoff and its restarts are counted (like `supervisor.py` does for
environmentd generations); exit code 0 after `stop` is not restarted.

Processes run in their own session, so they outlive an environmentd that crashes. `ensure` for
a name whose ports file names a live process of that name adopts it instead of starting a
second one: a restarted environmentd finds its replicas still running (and its
controller reconciles with them). An adopted process is not our child: it is watched by
polling its pid. Names carry the generation (`-gen-G`); an orchestrator only ever touches the
names it was asked to `ensure`, so another generation's processes are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
#: A process that lived this long is healthy: the next crash restarts after the first delay.
HEALTHY_AFTER_S = 10.0
STOP_TIMEOUT_S = 10.0
#: How often an adopted (not our child) process's pid is checked.
ADOPTED_POLL_S = 0.5
#: How often the ports file is looked at while a process starts.
PORTS_POLL_S = 0.02


@dataclass
class Service:
    name: str
    command: list[str]
    ports_file: Path
    log_path: Path
    pid: int | None = None
    port: int | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    adopted: bool = False
    stopping: bool = False
    proc: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None
    #: Set whenever the service listens (after each (re)start).
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def address(self) -> tuple[str, int] | None:
        if self.port is None:
            return None
        return ("127.0.0.1", self.port)


def _stopping(svc: Service) -> bool:
    return svc.stopping


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int) -> bool:
    """Public `_alive`: the process exists and is not a zombie."""
    return _alive(pid)


def pid_cmdline(pid: int) -> list[str] | None:
    """Public `_cmdline`: the process's arguments (None if it is gone)."""
    return _cmdline(pid)


_GENERATION_SUFFIX = re.compile(r"-gen-(\d+)$")


def generation_of(name: str) -> int | None:
    """`quickstart-replica-u1-gen-2` -> 2; None for a name without a generation."""
    m = _GENERATION_SUFFIX.search(name)
    return int(m.group(1)) if m else None


async def _terminate(pid: int) -> None:
    """SIGTERM a process that is not our child, then SIGKILL its process group (it runs in
    its own session) if it is still there after `STOP_TIMEOUT_S`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT_S
    while _alive(pid) and loop.time() < deadline:
        await asyncio.sleep(PORTS_POLL_S)  # not our child: poll
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


class ProcessOrchestrator:
    """See the module docstring."""

    def __init__(self, state_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = dict(env or {})
        self.services: dict[str, Service] = {}

    def ensure(self, name: str, command: list[str]) -> Service:
        """Keep `name` running `command` (adopting a live process that already does)."""
        svc = self.services.get(name)
        if svc is not None and not svc.stopping:
            return svc
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports_file = self.state_dir / f"{name}.json"
        svc = Service(
            name,
            [*command, "--ports-file", str(ports_file)],
            ports_file,
            self.state_dir / f"{name}.log",
        )
        self.services[name] = svc
        self._try_adopt(svc)
        svc.watcher = asyncio.create_task(self._run(svc), name=f"orchestrate-{name}")
        return svc

    def _try_adopt(self, svc: Service) -> None:
        try:
            info = json.loads(svc.ports_file.read_text())
            pid, port = int(info["pid"]), int(info["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        cmdline = _cmdline(pid) or []
        if info.get("name") == svc.name and _alive(pid) and svc.name in cmdline:
            svc.pid, svc.port, svc.adopted = pid, port, True
            svc.ready.set()
            log.info("adopted running %s (pid %d, port %d)", svc.name, pid, port)

    async def _run(self, svc: Service) -> None:
        backoff = BACKOFF_FIRST_S
        loop = asyncio.get_running_loop()
        while not svc.stopping:
            started = loop.time()
            if svc.adopted:
                assert svc.pid is not None
                while _alive(svc.pid) and not svc.stopping:
                    await asyncio.sleep(ADOPTED_POLL_S)  # not our child: poll its pid
                code = -1
                svc.adopted = False
            else:
                code = await self._spawn_and_wait(svc)
            svc.port = None
            svc.ready.clear()
            if _stopping(svc):  # stop() may have been called meanwhile
                return
            svc.exit_codes.append(code)
            svc.restarts += 1
            if loop.time() - started >= HEALTHY_AFTER_S:
                backoff = BACKOFF_FIRST_S
            log.warning(
                "%s exited with %d; restart %d in %.1f s", svc.name, code, svc.restarts, backoff
            )
            await asyncio.sleep(backoff)  # restart backoff
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _spawn_and_wait(self, svc: Service) -> int:
        with contextlib.suppress(FileNotFoundError):
            svc.ports_file.unlink()
        logf = open(svc.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                *svc.command,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        finally:
            logf.close()
        svc.proc, svc.pid = proc, proc.pid
        wait = asyncio.create_task(proc.wait())
        try:
            while not wait.done():
                if svc.port is None:
                    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                        info = json.loads(svc.ports_file.read_text())
                        if int(info["pid"]) == proc.pid:
                            svc.port = int(info["port"])
                            svc.ready.set()
                    await asyncio.wait({wait}, timeout=PORTS_POLL_S)
                else:
                    await asyncio.wait({wait})
            return wait.result()
        finally:
            if not wait.done():  # cancelled: the process keeps running (stop() ends it)
                wait.cancel()

    async def wait_ready(self, name: str, timeout_s: float) -> tuple[str, int]:
        svc = self.services[name]
        async with asyncio.timeout(timeout_s):
            while True:
                await svc.ready.wait()
                addr = svc.address()
                if addr is not None:
                    return addr
                await asyncio.sleep(PORTS_POLL_S)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the service's current process (tests: a crash it must survive)."""
        svc = self.services[name]
        if svc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(svc.pid, sig)

    async def stop(self, name: str) -> int | None:
        """SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`; returns the exit code if known."""
        svc = self.services.pop(name, None)
        if svc is None:
            return None
        svc.stopping = True
        code: int | None = None
        pid = svc.pid
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_TIMEOUT_S
            proc = svc.proc if svc.proc is not None and svc.proc.pid == pid else None
            while loop.time() < deadline:
                if proc is not None:
                    if proc.returncode is not None:
                        break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PORTS_POLL_S * 5):
                            await proc.wait()
                elif not _alive(pid):
                    break
                else:
                    await asyncio.sleep(PORTS_POLL_S)  # not our child: poll
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if proc is not None:
                    await proc.wait()
            code = proc.returncode if proc is not None else None
        if svc.watcher is not None:
            svc.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await svc.watcher
        with contextlib.suppress(FileNotFoundError):
            svc.ports_file.unlink()
        return code

    async def remove_older_generations(self, generation: int) -> list[str]:
        """The new leader's sweep: stop every process in this state directory whose name
        ends in `-gen-<G'>` with G' < `generation` (left by an older generation, e.g. one
        that was killed: its processes outlive it). Only a live process whose command line
        carries its name is signalled (a pid may have been reused); this generation's and
        HIGHER generations' processes are never touched. Returns the names stopped."""
        stopped = []
        for ports_file in sorted(self.state_dir.glob("*.json")):
            name = ports_file.stem
            older = generation_of(name)
            if older is None or older >= generation or name in self.services:
                continue
            try:
                info = json.loads(ports_file.read_text())
                pid = int(info["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being (re)written by its owner: the next sweep looks again
            if info.get("name", name) != name:
                continue
            if _alive(pid) and name in (_cmdline(pid) or []):
                log.info("stopping %s (pid %d): generation %d < %d", name, pid, older, generation)
                await _terminate(pid)
                stopped.append(name)
            with contextlib.suppress(FileNotFoundError):
                ports_file.unlink()
        return stopped

    async def stop_all(self) -> None:
        for name in list(self.services):
            await self.stop(name)

    async def detach(self) -> None:
        """Stop watching without stopping the processes (they keep running; a new
        orchestrator adopts them)."""
        for svc in self.services.values():
            svc.stopping = True
            if svc.watcher is not None:
                svc.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await svc.watcher
        self.services.clear()


async def stop_leftovers(state_dir: Path, name_suffix: str) -> list[str]:
    """Stop the live processes recorded in `state_dir` whose names end with `name_suffix`
    (`-gen-G`: the replicas of a generation being torn down, whose environmentd may have died
    without stopping them). Each is recognised as by adoption (ports file, live pid, its name
    on the command line), then stopped like a service. Returns their names."""
    orch = ProcessOrchestrator(state_dir)
    stopped: list[str] = []
    for path in sorted(state_dir.glob(f"*{name_suffix}.json")):
        svc = Service(path.stem, [], path, state_dir / f"{path.stem}.log")
        orch._try_adopt(svc)
        if svc.pid is None:
            continue
        orch.services[svc.name] = svc
        await orch.stop(svc.name)
        stopped.append(svc.name)
    return stopped
