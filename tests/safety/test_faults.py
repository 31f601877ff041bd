"""The fault proxy against a real echo server, phase detection, cell names."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from twinstream.orchestrator.record import GenerationEndpoint, RolloutRecord, RolloutStatus
from twinstream.safety.faults import (
    NO_FAULT,
    Action,
    Fault,
    FaultProxy,
    Phase,
    Target,
    replica_pids,
)
from twinstream.safety.faults import observe_phase as phase
from twinstream.safety.matrix import Cell, full_matrix, quick_matrix


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    p = FaultProxy("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    await p.start()
    try:
        yield p
    finally:
        await p.close()
        server.close()
        await server.wait_closed()


async def _roundtrip(
    r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes, timeout_s: float = 5.0
) -> bytes:
    w.write(data)
    await w.drain()
    async with asyncio.timeout(timeout_s):
        return await r.readexactly(len(data))


async def test_proxy_forwards_partitions_and_heals(proxy: FaultProxy) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _roundtrip(r, w, b"hello") == b"hello"
    proxy.partition()
    w.write(b"held")
    await w.drain()
    read = asyncio.create_task(r.readexactly(4))
    done, _ = await asyncio.wait({read}, timeout=0.3)
    assert not done, "a partition forwards nothing"
    proxy.heal()
    async with asyncio.timeout(5):
        assert await read == b"held", "bytes sent during the partition arrive after the heal"
    w.close()


async def test_proxy_drop_closes_connections_but_accepts_new_ones(proxy: FaultProxy) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _roundtrip(r, w, b"a") == b"a"
    proxy.drop()
    async with asyncio.timeout(5):
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await r.readexactly(1)
    r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _roundtrip(r2, w2, b"b") == b"b"
    w2.close()


async def test_proxy_delay_still_delivers(proxy: FaultProxy) -> None:
    proxy.delay_s = 0.05
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _roundtrip(r, w, b"slow") == b"slow"
    w.close()


def _rec(status: RolloutStatus, active: int, gens: list[int]) -> RolloutRecord:
    eps = {str(g): GenerationEndpoint(g, "127.0.0.1", 1, 2, 3) for g in gens}
    return RolloutRecord(active + 1, active, status, eps)


def test_phases_from_the_record() -> None:
    assert phase(None, 0, None) is Phase.STEADY
    assert phase(_rec(RolloutStatus.APPLIED, 0, [0]), 0, None) is Phase.STEADY
    assert phase(_rec(RolloutStatus.APPLYING, 0, [0]), 0, None) is Phase.STEADY
    assert phase(_rec(RolloutStatus.APPLYING, 0, [0, 1]), 0, None) is Phase.CATCHING_UP
    assert phase(_rec(RolloutStatus.READY_TO_PROMOTE, 0, [0, 1]), 0, None) is Phase.READY
    assert phase(_rec(RolloutStatus.PROMOTING, 0, [0, 1]), 0, "Promoting") is Phase.PROMOTING
    assert phase(_rec(RolloutStatus.PROMOTING, 0, [0, 1]), 0, "IsLeader") is Phase.JUST_PROMOTED
    assert phase(_rec(RolloutStatus.APPLIED, 1, [0, 1]), 0, None) is Phase.CUTOVER
    assert phase(_rec(RolloutStatus.APPLIED, 1, [1]), 0, None) is Phase.DONE
    assert phase(_rec(RolloutStatus.FAILED_DEPLOY, 0, [0]), 0, None) is Phase.DONE


def test_replica_pids_are_the_live_processes_of_one_generation(tmp_path: Path) -> None:
    """The replica fault target finds clusterd processes by the ports files environmentd's
    process orchestrator writes (`clusterd/<cluster>-replica-<id>-gen-<G>.json`)."""
    state = tmp_path / "clusterd"
    state.mkdir()
    gone = subprocess.Popen(["true"])  # an exited process: its pid is gone
    gone.wait()
    live = os.getpid()
    files = {
        "quickstart-replica-u1-gen-1.json": {"pid": live, "port": 1, "name": "x"},
        "c-replica-u2-gen-1.json": {"pid": gone.pid, "port": 2, "name": "y"},
        "quickstart-replica-u1-gen-2.json": {"pid": live, "port": 3, "name": "z"},
        "broken-gen-1.json": "{not json",
    }
    for name, body in files.items():
        (state / name).write_text(body if isinstance(body, str) else json.dumps(body))
    assert replica_pids(tmp_path, 1) == [live]
    assert replica_pids(tmp_path, 2) == [live]
    assert replica_pids(tmp_path, 3) == []


def test_full_matrix_covers_every_target_action_and_phase() -> None:
    cells = {c.name for c in full_matrix()}
    phases = [p for p in Phase if Phase.CATCHING_UP <= p <= Phase.CUTOVER]
    for backend in ("sqlite", "postgres"):
        targets = [t for t in Target if t not in (Target.NONE, Target.PROXY)]
        if backend == "sqlite":
            targets.remove(Target.CONSENSUS_PG)
        for target in targets:
            for action in (Action.KILL, Action.STOP):
                for p in phases:
                    assert Cell(backend, Fault(target, action, p)).name in cells
        if backend == "postgres":
            for action in (Action.DELAY, Action.DROP, Action.PARTITION):
                for p in phases:
                    assert Cell(backend, Fault(Target.PROXY, action, p)).name in cells
        assert f"{backend}/repeat-20" in cells
        assert f"{backend}/no-fault" in cells
    replica = Cell.parse("sqlite/kill-old-replica@ready")
    assert replica.fault.target is Target.OLD_REPLICA and replica.replicas
    assert not Cell.parse("sqlite/kill-old-envd@ready").replicas


def test_cell_names_round_trip_and_matrix_sizes() -> None:
    cells = full_matrix()
    assert len({c.name for c in cells}) == len(cells)
    for cell in cells + quick_matrix():
        assert Cell.parse(cell.name) == cell
    assert len(quick_matrix()) >= 20
    assert {c.backend for c in quick_matrix()} == {"sqlite", "postgres"}
    kill = Fault(Target.ORCHESTRATOR, Action.KILL, Phase.PROMOTING)
    assert Cell("sqlite", kill).name == "sqlite/kill-orchestrator@promoting"
    assert Cell("sqlite", NO_FAULT, upgrades=20).name == "sqlite/repeat-20"
