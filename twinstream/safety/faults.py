"""Faults: what to break, how, and when.

- `Target`: a process of the environment (old / new environmentd, a `clusterd` replica of the
  old or the new generation, the balancer, the orchestrator, the PostgreSQL consensus server)
  or the TCP fault proxy between environmentd and PostgreSQL (delay, drop, partition).
- `Action`: kill -9 (the harness then restarts what nobody else restarts, as a service manager
  would; the orchestrator's supervisor restarts environmentd), or SIGSTOP for `PAUSE_S` then
  SIGCONT.
- `Phase`: where the upgrade is, read from the rollout record and the new generation's
  deployment status API (`observe_phase`).

`FaultProxy` is the asyncio proxy; environmentd's consensus and blob URLs point at its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from twinstream.orchestrator.record import RolloutRecord, RolloutStatus

#: How long a SIGSTOPped process stays frozen, and a partition lasts.
PAUSE_S = 2.0
#: How long a killed process the harness restarts stays dead.
DEAD_S = 0.5
#: Added latency of the `delay` proxy fault, per forwarded chunk, and how long it lasts.
PROXY_DELAY_S = 0.05
PROXY_FAULT_S = 3.0
#: Bytes read per forwarded chunk.
CHUNK = 65536


class Target(enum.StrEnum):
    NONE = "none"
    OLD_ENVD = "old-envd"
    NEW_ENVD = "new-envd"
    BALANCER = "balancer"
    ORCHESTRATOR = "orchestrator"
    CONSENSUS_PG = "consensus-pg"
    OLD_REPLICA = "old-replica"  # a clusterd replica process of the old generation
    NEW_REPLICA = "new-replica"  # ... of the new generation
    PROXY = "proxy"


class Action(enum.StrEnum):
    NONE = "none"
    KILL = "kill"
    STOP = "stop"  # SIGSTOP, PAUSE_S, SIGCONT
    DELAY = "delay"  # proxy only
    DROP = "drop"  # proxy only: close every connection once
    PARTITION = "partition"  # proxy only: forward nothing for PAUSE_S


PROCESS_ACTIONS = (Action.KILL, Action.STOP)
REPLICA_TARGETS = (Target.OLD_REPLICA, Target.NEW_REPLICA)
PROXY_ACTIONS = (Action.DELAY, Action.DROP, Action.PARTITION)


class Phase(enum.IntEnum):
    STEADY = 0
    CATCHING_UP = 1
    READY = 2
    PROMOTING = 3
    JUST_PROMOTED = 4
    CUTOVER = 5
    DONE = 6

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, label: str) -> Phase:
        return cls[label.upper().replace("-", "_")]


@dataclass(frozen=True)
class Fault:
    target: Target
    action: Action
    phase: Phase

    @property
    def name(self) -> str:
        if self.target is Target.NONE:
            return "no-fault"
        return f"{self.action.value}-{self.target.value}@{self.phase.label}"


NO_FAULT = Fault(Target.NONE, Action.NONE, Phase.CATCHING_UP)


def observe_phase(record: RolloutRecord | None, old_gen: int, new_status: str | None) -> Phase:
    """The upgrade's phase from the record; `new_status` (the new generation's deployment
    status, when known) separates promoting from just promoted."""
    if record is None:
        return Phase.STEADY
    new_gen = old_gen + 1
    if record.active_generation >= new_gen:
        return Phase.CUTOVER if str(old_gen) in record.endpoints else Phase.DONE
    if record.status is RolloutStatus.APPLYING:
        return Phase.CATCHING_UP if str(new_gen) in record.endpoints else Phase.STEADY
    if record.status is RolloutStatus.READY_TO_PROMOTE:
        return Phase.READY
    if record.status is RolloutStatus.PROMOTING:
        return Phase.JUST_PROMOTED if new_status == "IsLeader" else Phase.PROMOTING
    if record.status is RolloutStatus.FAILED_DEPLOY:
        return Phase.DONE
    return Phase.STEADY


# -- signals ----------------------------------------------------------------------------------


def replica_pids(data_dir: Path, generation: int) -> list[int]:
    """The live clusterd replica processes of `generation` (environmentd's process orchestrator
    writes `DATA_DIR/clusterd/<cluster>-replica-<id>-gen-<G>.json` = {"pid", "port", "name"})."""
    pids = []
    for ports_file in sorted((data_dir / "clusterd").glob(f"*-gen-{generation}.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(ports_file.read_text())["pid"])
            os.kill(pid, 0)
            pids.append(pid)
    return pids


def signal_group(pid: int, sig: signal.Signals) -> bool:
    """Signal a process group led by `pid` (environmentd and what it starts); False if gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
    return True


def signal_pid(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


# -- the TCP fault proxy ----------------------------------------------------------------------


@dataclass
class FaultProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port`, with faults on demand."""

    target_host: str
    target_port: int
    delay_s: float = 0.0
    port: int = 0
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _pairs: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self.flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def partition(self) -> None:
        """Stop forwarding (bytes wait, as TCP would retransmit them after the heal)."""
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()
        self.delay_s = 0.0

    def drop(self) -> None:
        """Close every open connection (both sides see a reset)."""
        for w in list(self._pairs):
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.flowing.set()
        self.drop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._pairs.update((writer, up_w))
        a = asyncio.create_task(self._pump(reader, up_w, writer))
        b = asyncio.create_task(self._pump(up_r, writer, up_w))
        self._tasks.update((a, b))
        a.add_done_callback(self._tasks.discard)
        b.add_done_callback(self._tasks.discard)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                await self.flowing.wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)  # the injected latency
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (dst, other):
                self._pairs.discard(w)
                with contextlib.suppress(Exception):
                    w.close()
