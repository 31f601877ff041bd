"""The fault proxy against a real echo server, phase detection, cell names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from twinstream.orchestrator.record import GenerationEndpoint, RolloutRecord, RolloutStatus
from twinstream.safety.faults import NO_FAULT, Action, Fault, FaultProxy, Phase, Target
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
