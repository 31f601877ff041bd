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

Start-up cost matters (environmentd starts one per replica, and restarts crashed ones), so
`main` parses its arguments with argparse and `python -m twinstream clusterd` reaches it
without importing the rest of the CLI: the process loads the dataflow engine, persist and the
wire protocol only — not the adapter, DuckDB, sqlglot, typer or aiohttp
(`tests/compute/clusterd/test_clusterd.py` checks the module list).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from twinstream.cli.listen import parse_listen
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twinstream clusterd",
        description="Run one cluster replica: dataflows over persist, served to the compute "
        "controller.",
    )
    p.add_argument(
        "--name", required=True, help="Replica process name <cluster>-replica-<id>-gen-<G>."
    )
    p.add_argument("--consensus", required=True, help="Persist consensus URL.")
    p.add_argument("--blob", required=True, help="Persist blob URL.")
    p.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="Controller protocol HOST:PORT (port 0 picks one).",
    )
    p.add_argument(
        "--ports-file", type=Path, help="Write {pid, port, name, instance} here once listening."
    )
    p.add_argument(
        "--read-only", action="store_true", help="Sinks write nothing until allow_writes."
    )
    p.add_argument("--log-level", default="INFO", help="Python log level.")
    return p


def main(argv: Sequence[str]) -> int:
    """`twinstream clusterd ARGS`: returns the exit code (2 for bad arguments)."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    try:
        address = parse_listen(args.listen)
    except ValueError as e:
        parser.error(f"--listen: {e}")
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = ClusterdConfig(
        name=args.name,
        consensus_url=args.consensus,
        blob_url=args.blob,
        listen=address,
        read_only=args.read_only,
        ports_file=args.ports_file,
    )
    return asyncio.run(run_clusterd(config))
