"""The processes of one environment under test, each killable on its own.

    orchd (orchestrator + control API) ──starts──> environmentd gen N, N+1 (own sessions)
    balancerd (own process, fixed port) ──routes by the rollout record──> the active generation
    environmentd ──consensus/blob──> [FaultProxy] ──> PostgreSQL   (or SQLite in the data dir)

The harness reads the rollout record directly (phase detection) and restarts what a service
manager would: orchd, balancerd and PostgreSQL. Teardown stops everything this cluster started,
found by pid (environmentd processes by their `--data-dir`, which is unique per cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from twinstream.orchestrator.control import control_file
from twinstream.orchestrator.record import RolloutRecord, RolloutStore
from twinstream.persist.location import Consensus
from twinstream.persist.urls import default_consensus_url, open_consensus
from twinstream.safety.faults import FaultProxy
from twinstream.testing.environmentd import replica_processes
from twinstream.testing.pgserver import PgServer

#: How long a process may take to come up (generous: 2 cores shared with other work).
START_TIMEOUT_S = 600.0
#: One read of the rollout record (the store may be frozen by a fault).
RECORD_READ_TIMEOUT_S = 1.0


def _with_port(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    user = f"{parts.username}@" if parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}{host}:{port}"))


@dataclass
class Cluster:
    root: Path
    backend: str = "sqlite"
    pg: PgServer | None = None
    pg_url: str | None = None
    #: Extra `environmentd` arguments (system parameters).
    extra_args: list[str] = field(default_factory=list)
    proxy: FaultProxy | None = None
    orchd: asyncio.subprocess.Process | None = None
    balancerd: asyncio.subprocess.Process | None = None
    balancer_port: int = 0
    consensus_url: str = ""
    blob_url: str | None = None
    env_consensus_url: str | None = None
    env_blob_url: str | None = None
    _consensus: Consensus | None = None
    _store: RolloutStore | None = None
    _http: aiohttp.ClientSession | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "env"

    def conninfo(self, port: int | None = None) -> str:
        p = self.balancer_port if port is None else port
        return f"host=127.0.0.1 port={p} user=twinstream dbname=twinstream connect_timeout=30"

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.backend == "postgres":
            assert self.pg_url is not None, "the postgres backend needs a database URL"
            self.consensus_url = self.blob_url = self.pg_url
            port = urllib.parse.urlsplit(self.pg_url).port
            assert port is not None
            self.proxy = FaultProxy("127.0.0.1", port)
            proxied = _with_port(self.pg_url, await self.proxy.start())
            self.env_consensus_url = self.env_blob_url = proxied
        else:
            self.consensus_url = default_consensus_url(self.data_dir)
        self._consensus = open_consensus(self.consensus_url)
        self._store = RolloutStore(self._consensus)
        # Concurrently: the balancer holds clients until the record names a generation.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.start_orchd())
            tg.create_task(self.start_balancer())

    async def start_orchd(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            control_file(self.data_dir).unlink()
        args = [sys.executable, "-m", "twinstream.safety.orchd", "--data-dir", str(self.data_dir)]
        if self.backend == "postgres":
            args += ["--consensus", self.consensus_url]
            assert self.blob_url and self.env_consensus_url and self.env_blob_url
            args += ["--blob", self.blob_url]
            args += ["--env-consensus", self.env_consensus_url, "--env-blob", self.env_blob_url]
        args += [f"--extra-arg={a}" for a in self.extra_args]
        self.orchd = await _spawn(args, self.root / "orchd.log")
        await self._wait(lambda: self._control_port() is not None, "orchd control API")

    async def start_balancer(self) -> None:
        args = [sys.executable, "-m", "twinstream", "balancerd", "--consensus", self.consensus_url]
        # The first start binds port 0 and reports its port (a port picked free beforehand
        # was taken by another process's listener meanwhile: clients got an HTTP answer);
        # a restart binds the same port again, where the clients reconnect.
        args += ["--listen", f"127.0.0.1:{self.balancer_port}"]
        log = self.root / "balancerd.log"
        offset = log.stat().st_size if log.exists() else 0
        self.balancerd = await _spawn(args, log)
        if self.balancer_port == 0:
            await self._wait(lambda: _listening_port(log, offset) is not None, "balancerd")
            self.balancer_port = _listening_port(log, offset) or 0
        await self._wait_port(self.balancer_port)

    async def close(self) -> None:
        for proc in (self.orchd, self.balancerd):
            if proc is not None and proc.returncode is None:
                signal_and_wait = _terminate(proc)
                await signal_and_wait
        for pid in environmentd_pids(self.data_dir) + clusterd_pids(self.data_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGCONT)
                os.killpg(pid, signal.SIGKILL)
        # Replica processes (own sessions) outlive an environmentd killed by a fault.
        for pid in replica_processes(self.data_dir).values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.proxy is not None:
            await self.proxy.close()
        if self._http is not None:
            await self._http.close()
        if self._consensus is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consensus.close(), 5.0)

    # -- reading state -------------------------------------------------------------------------

    async def record(self) -> RolloutRecord | None:
        assert self._store is not None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RECORD_READ_TIMEOUT_S):
                return (await self._store.read())[1]
        return None

    def _control_port(self) -> int | None:
        try:
            return int(json.loads(control_file(self.data_dir).read_text())["port"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    async def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._http

    async def control(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Call orchd's control API; (0, {}) while it does not answer."""
        port = self._control_port()
        if port is None:
            return 0, {}
        http = await self.http()
        try:
            async with http.request(method, f"http://127.0.0.1:{port}{path}", json=body) as r:
                return r.status, dict(await r.json())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, {}

    async def generation_status(self, record: RolloutRecord | None, gen: int) -> str | None:
        ep = None if record is None else record.endpoints.get(str(gen))
        if ep is None:
            return None
        http = await self.http()
        url = f"http://127.0.0.1:{ep.internal_http_port}/api/leader/status"
        try:
            async with asyncio.timeout(RECORD_READ_TIMEOUT_S), http.get(url) as r:
                return str((await r.json())["status"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return None

    # -- waiting -------------------------------------------------------------------------------

    async def _wait(self, cond: Any, what: str) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + START_TIMEOUT_S
        while not cond():
            if loop.time() > end:
                raise RuntimeError(f"{what} did not come up in {START_TIMEOUT_S} s ({self.root})")
            await asyncio.sleep(0.05)  # poll interval while a process starts

    async def _wait_port(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + START_TIMEOUT_S
        while True:
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return
            except OSError:
                if loop.time() > end:
                    raise RuntimeError(f"port {port} did not open ({self.root})") from None
                await asyncio.sleep(0.05)  # poll interval while a process starts


def _listening_port(log: Path, offset: int) -> int | None:
    """The port in balancerd's "balancerd listening on HOST:PORT" line after `offset`."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("balancerd listening on "):
            return int(line.rsplit(":", 1)[1])
    return None


async def _spawn(args: list[str], log: Path) -> asyncio.subprocess.Process:
    with open(log, "ab") as f:
        return await asyncio.create_subprocess_exec(
            *args, stdout=f, stderr=asyncio.subprocess.STDOUT, env=dict(os.environ)
        )


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        async with asyncio.timeout(30):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def environmentd_pids(data_dir: Path) -> list[int]:
    """Live environmentd processes of this data dir (Linux /proc)."""
    return _pids(data_dir, b"environmentd")


def clusterd_pids(data_dir: Path) -> list[int]:
    """Live clusterd replica processes of this data dir: they run in their own session and
    outlive environmentd, so teardown finds them here (their `--ports-file` is under it)."""
    return _pids(data_dir, b"clusterd")


def _pids(data_dir: Path, program: bytes) -> list[int]:
    needle = str(data_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            ours = needle in cmd or any(arg.startswith(needle + b"/") for arg in cmd)
            if ours and program in cmd:
                pids.append(int(entry.name))
    return pids
