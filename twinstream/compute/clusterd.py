"""`twinstream clusterd`: one cluster replica as its own process.

    twinstream clusterd --name quickstart-replica-u1-gen-2 --listen 127.0.0.1:0 \\
        --consensus sqlite:///... --blob file:///... [--read-only] [--ports-file PATH]

Hosts a `LocalReplica` (dataflows reading and writing persist shards directly) and serves it
to compute controllers with `ReplicaServer` (protocol: `twinstream.controller.wire`). Once it
listens it writes `{"pid", "port", "name", "instance"}` to the ports file, so whoever started
it (environmentd's process orchestrator, a test) learns the port it picked. It outlives its
controller: a controller that disconnects (environmentd restarting) leaves every dataflow
running, and the next one reconciles by re-creating them (a no-op for equal ones). SIGTERM or
SIGINT: drop the dataflows (releasing their read holds), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from twinstream.clock import SYSTEM_CLOCK, Clock
from twinstream.compute.replica import LocalReplica
from twinstream.compute.replica_server import ReplicaServer
from twinstream.persist import PersistClient

log = logging.getLogger("twinstream.clusterd")


@dataclass
class ClusterdConfig:
    #: `<cluster>-replica-<id>-gen-<G>`: the process name; the replica answers to it.
    name: str
    consensus_url: str
    blob_url: str
    listen: tuple[str, int] = ("127.0.0.1", 0)
    read_only: bool = False
    ports_file: Path | None = None


def write_ports_file(path: Path, info: dict[str, object]) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


async def run_clusterd(
    config: ClusterdConfig, clock: Clock = SYSTEM_CLOCK, stop: asyncio.Event | None = None
) -> int:
    """Serve until SIGTERM/SIGINT (or `stop` is set); returns the exit code (0)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    persist = PersistClient.from_urls(config.consensus_url, config.blob_url, clock)
    replica = LocalReplica(persist, config.name, read_only=config.read_only)
    server = ReplicaServer(replica, read_only=config.read_only)
    try:
        await persist.start_watching()
        port = await server.start(*config.listen)
        if config.ports_file is not None:
            write_ports_file(
                config.ports_file,
                {
                    "pid": os.getpid(),
                    "port": port,
                    "name": config.name,
                    "instance": server.instance,
                },
            )
        log.info(
            "clusterd %s listening on %s:%d (%s)",
            config.name,
            config.listen[0],
            port,
            "read-only" if config.read_only else "writable",
        )
        await stop.wait()
        log.info("clusterd %s stopping", config.name)
        return 0
    finally:
        await server.close()
        await replica.close()
        await persist.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
