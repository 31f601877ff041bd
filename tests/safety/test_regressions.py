"""Regression tests for bugs the safety matrix found in twinstream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from twinstream.orchestrator.control import ControlServer
from twinstream.orchestrator.record import GenerationEndpoint, RolloutRecord, RolloutStatus
from twinstream.orchestrator.rollout import Orchestrator
from twinstream.orchestrator.supervisor import GenerationProcess
from twinstream.safety.cluster import Cluster
from twinstream.safety.matrix import ENV_ARGS


async def test_status_survives_a_generation_removed_while_it_is_asked(tmp_path: Path) -> None:
    """GET /status awaits each generation's status; the old generation is torn down meanwhile
    (cell sqlite/no-fault: "dictionary changed size during iteration", HTTP 500)."""
    orch = Orchestrator(tmp_path / "env")
    try:
        for gen in (0, 1):
            orch.supervisor.generations[gen] = GenerationProcess(
                gen, [], tmp_path, tmp_path / f"{gen}.log"
            )

        async def status(generation: int) -> str:
            orch.supervisor.generations.pop(0, None)  # the teardown racing the request
            return "IsLeader"

        orch.status = status  # type: ignore[method-assign]
        server = ControlServer(orch, balancer_port=None)
        response: Any = await server._status(None)  # type: ignore[arg-type]
        body = json.loads(response.body)
        assert response.status == 200
        assert set(body["generations"]) == {"0", "1"}
    finally:
        await orch.close()


async def test_a_restarted_generation_is_routed_to_on_its_new_ports(tmp_path: Path) -> None:
    """kill -9 of environmentd: the supervisor restarts it on new ports; the record (what the
    balancer routes by) must follow, or every client waits forever (cell
    sqlite/kill-new-envd@just-promoted, seed 104: wedged)."""
    orch = Orchestrator(tmp_path / "env")
    try:
        record = await orch.up()
        before = record.active_endpoint()
        assert before is not None
        os.killpg(before.pid, signal.SIGKILL)
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        after = before
        while after.pid == before.pid:
            assert loop.time() < end, "the record never learned the restarted endpoint"
            await asyncio.sleep(0.1)  # poll interval of the record
            current = await orch.record()
            assert current is not None
            after = current.active_endpoint() or before
        assert after.sql_port == orch.supervisor.generations[0].endpoint.sql_port  # type: ignore[union-attr]
        conninfo = f"host=127.0.0.1 port={after.sql_port} user=twinstream dbname=twinstream"
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchall() == [(1,)]
    finally:
        await orch.down()
        await orch.close()


async def test_a_restarted_endpoint_is_recorded_even_if_the_store_was_down(
    tmp_path: Path,
) -> None:
    """The consensus store being down is what crashed the generation: recording its new
    endpoint must be retried until the store answers (cell
    postgres/kill-consensus-pg@catching-up, seed 14: wedged on the stale endpoint)."""
    orch = Orchestrator(tmp_path / "env")
    try:
        endpoint = GenerationEndpoint(0, "127.0.0.1", 1111, 2222, 3333)
        await orch.store.write(None, RolloutRecord(0, 0, RolloutStatus.APPLIED, {"0": endpoint}))
        gp = GenerationProcess(0, [], tmp_path, tmp_path / "0.log")
        moved = GenerationEndpoint(0, "127.0.0.1", 4444, 5555, 6666)
        gp.endpoint = moved
        orch.supervisor.generations[0] = gp
        real_update = orch._update
        failures = [RuntimeError("store down"), RuntimeError("store down")]

        async def flaky_update(change: Any) -> RolloutRecord:
            if failures:
                raise failures.pop()
            return await real_update(change)

        orch._update = flaky_update  # type: ignore[method-assign]
        await orch._respawned(moved)
        assert not failures
        record = await orch.record()
        assert record is not None and record.active_endpoint() == moved
    finally:
        await orch.close()


@pytest.mark.safety
async def test_a_restarted_orchd_resumes_the_rollout_a_crash_left(tmp_path: Path) -> None:
    """orchd killed while the new generation catches up: the restarted one adopts both
    generations and must drive the rollout on (to ReadyToPromote), as `twinstream up` does;
    it left the record in Applying forever (cell postgres/kill-orchestrator@catching-up,
    seed 6004: wedged)."""
    cluster = Cluster(tmp_path, extra_args=list(ENV_ARGS))
    try:
        await cluster.start()
        code, body = await cluster.control("POST", "/upgrade", {"strategy": "ManuallyPromote"})
        assert code == 202, body
        loop = asyncio.get_running_loop()
        end = loop.time() + 120
        record = await cluster.record()
        while record is None or "1" not in record.endpoints:
            assert loop.time() < end, "generation 1 never started"
            await asyncio.sleep(0.05)  # poll interval of the record
            record = await cluster.record()
        assert cluster.orchd is not None
        cluster.orchd.kill()
        await cluster.orchd.wait()
        await cluster.start_orchd()
        end = loop.time() + 180
        while record is None or record.status is not RolloutStatus.READY_TO_PROMOTE:
            assert record is None or record.status is not RolloutStatus.FAILED_DEPLOY, record
            assert loop.time() < end, f"the rollout was not resumed: {record}"
            await asyncio.sleep(0.1)  # poll interval of the record
            record = await cluster.record()
    finally:
        await cluster.close()
