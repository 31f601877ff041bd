"""Replicas as `clusterd` processes: the compute controller's factory for them.

    procs = ReplicaProcesses(orchestrator, generation=2, consensus_url=..., blob_url=...)
    controller = ComputeController(procs.factory, read_only=...)

`factory(spec, read_only)` starts (or adopts) the process `<cluster>-replica-<id>-gen-<G>`
through the `ProcessOrchestrator` (restarted with backoff when it crashes) and returns a
`ProcessReplica`: a `RemoteReplica` that follows the process to whatever port it listens on
after a restart and replays the controller's dataflows to it. `close()` (the catalog dropped
the replica, or environmentd shuts down) stops the process; a crashed environmentd leaves it
running, and the next one adopts it and reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path

from twinstream.controller.compute import ReplicaSpec
from twinstream.controller.protocol import CollectionFrontier
from twinstream.controller.remote import (
    REPLICA_CALL_TIMEOUT_S,
    RemoteReplica,
    ReplicaUnavailable,
)
from twinstream.orchestrator.processes import (
    ProcessOrchestrator,
    generation_of,
    pid_alive,
    pid_cmdline,
)

log = logging.getLogger(__name__)

#: A replica process may take this long to (re)start before a call fails.
PROCESS_UNAVAILABLE_AFTER_S = 60.0
#: Pause before re-opening a frontier watch that broke (the process restarting).
WATCH_RETRY_S = 0.2
#: How long `frontiers()` waits for a connected process before using the pushed ones.
FRONTIERS_TIMEOUT_S = 2.0
#: Between sweeps for older generations' replicas while an older environmentd is alive.
OLDER_GENERATION_SWEEP_S = 0.5


def process_name(spec_name: str, generation: int) -> str:
    """`<cluster>-replica-<id>` of generation G -> `<cluster>-replica-<id>-gen-<G>`."""
    return f"{spec_name}-gen-{generation}"


def clusterd_command(
    name: str,
    *,
    consensus_url: str,
    blob_url: str,
    read_only: bool,
    program: list[str] | None = None,
) -> list[str]:
    args = [
        *(program or [sys.executable, "-m", "twinstream"]),
        "clusterd",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--consensus",
        consensus_url,
        "--blob",
        blob_url,
    ]
    return [*args, "--read-only"] if read_only else args


class ProcessReplica(RemoteReplica):
    """A `RemoteReplica` whose process this environment's orchestrator runs."""

    def __init__(
        self,
        orchestrator: ProcessOrchestrator,
        name: str,
        command: list[str],
        *,
        read_only: bool,
        call_timeout_s: float = REPLICA_CALL_TIMEOUT_S,
    ) -> None:
        self.orchestrator = orchestrator
        self.service = orchestrator.ensure(name, command)
        # An adopted process may have been started read-only by the generation's earlier
        # environmentd: a writable controller's replica is told to write on every connect.
        super().__init__(
            name,
            self.service.address,
            writable=not read_only,
            unavailable_after_s=PROCESS_UNAVAILABLE_AFTER_S,
            call_timeout_s=call_timeout_s,
        )
        self._frontiers: dict[str, CollectionFrontier] = {}
        self._watch: asyncio.Task[None] | None = None

    def health(self) -> tuple[bool, int]:
        """(the process listens now, its restarts): `mz_cluster_replica_statuses`."""
        return self.service.address() is not None, self.service.restarts

    async def frontiers(self) -> dict[str, CollectionFrontier]:
        """Asked of the process while it is connected (fresh: a dataflow just created is
        there), else — down or restarting, or not answering within `FRONTIERS_TIMEOUT_S`
        (which marks it `unresponsive`) — what it last pushed (`watch_frontiers`, cleared when
        the watch breaks): the coordinator's frontier loop never blocks on a dead or frozen
        replica (the controller counts an unresponsive one as not hydrated)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._follow(), name=f"frontiers-{self.name}")
        fresh = await self.try_frontiers(FRONTIERS_TIMEOUT_S)
        return dict(self._frontiers) if fresh is None else fresh

    async def _follow(self) -> None:
        while True:
            try:
                async for fs in self.watch_frontiers():
                    self._frontiers = fs
            except ReplicaUnavailable as e:
                log.info("%s: frontier watch interrupted: %s", self.name, e)
            except Exception as e:  # a bad answer must not end the watch for good
                log.warning("%s: frontier watch failed: %s: %s", self.name, type(e).__name__, e)
            self._frontiers = {}
            await asyncio.sleep(WATCH_RETRY_S)  # retry pause; the next watch reconnects

    async def detach(self) -> None:
        """Close this client but leave the process running (for a successor to adopt)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await super().close()

    async def close(self) -> None:
        await self.detach()
        await self.orchestrator.stop(self.name)


def _older_environmentd_alive(data_dir: Path, generation: int) -> bool:
    """An environmentd of a lower generation still runs here (its ports file names a live
    environmentd process): it may yet restart its replicas until it sees the fence."""
    for ports_file in data_dir.glob("environmentd-gen-*.json"):
        older = generation_of(ports_file.stem)
        if older is None or older >= generation:
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(ports_file.read_text())["pid"])
            if pid_alive(pid) and "environmentd" in (pid_cmdline(pid) or []):
                return True
    return False


async def remove_older_generations(
    orchestrator: ProcessOrchestrator, data_dir: Path, generation: int
) -> list[str]:
    """The new leader removes the replica processes of older generations (reference: "the
    new leader removes replicas of older generations"). A fenced environmentd normally stops
    its own on the way out; this catches those of one that was killed (they outlive it), and
    keeps sweeping while an older environmentd is still alive (its orchestrator restarts a
    replica we stopped until it sees the fence). Higher generations are never touched.
    Returns the names stopped."""
    stopped: list[str] = []
    while True:
        older_alive = _older_environmentd_alive(data_dir, generation)
        try:
            stopped += await orchestrator.remove_older_generations(generation)
        except Exception as e:  # a sweep that fails must not take the leader down
            log.warning("removing older generations' replicas failed: %s: %s", type(e).__name__, e)
        if not older_alive:
            if stopped:
                log.info("removed replicas of older generations: %s", ", ".join(stopped))
            return stopped
        await asyncio.sleep(OLDER_GENERATION_SWEEP_S)  # until the older environmentd exits


class ReplicaProcesses:
    """Builds `ProcessReplica`s for one generation (see the module docstring)."""

    def __init__(
        self,
        orchestrator: ProcessOrchestrator,
        *,
        generation: int,
        consensus_url: str,
        blob_url: str,
        program: list[str] | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.generation = generation
        self.consensus_url = consensus_url
        self.blob_url = blob_url
        self.program = program
        self.built: list[ProcessReplica] = []

    async def reconcile_all(self) -> dict[str, list[str]]:
        """After the controller re-created its catalog's dataflows (environmentd is ready):
        each replica drops what it runs beyond them. Replica name -> dropped ids."""
        out: dict[str, list[str]] = {}
        for replica in list(self.built):
            if replica.closed:
                continue
            try:
                out[replica.name] = await replica.reconcile()
            except Exception as e:  # a replica that is down reconciles at its next start
                log.warning("reconciling %s failed: %s: %s", replica.name, type(e).__name__, e)
                continue
            if out[replica.name]:
                log.info("%s: dropped stale dataflows %s", replica.name, out[replica.name])
        return out

    def factory(self, spec: ReplicaSpec, read_only: bool) -> ProcessReplica:
        name = process_name(spec.name, self.generation)
        command = clusterd_command(
            name,
            consensus_url=self.consensus_url,
            blob_url=self.blob_url,
            read_only=read_only,
            program=self.program,
        )
        replica = ProcessReplica(self.orchestrator, name, command, read_only=read_only)
        self.built.append(replica)
        return replica
