"""Anomalies the safety harness found, reproduced deterministically. Fixed ones stay as
regression tests: stale-read-from-paused-fenced-leader (fixed by the read barrier in
adapter/linearize.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import psycopg
import pytest

from twinstream.orchestrator.rollout import Orchestrator, Strategy
from twinstream.safety.checker import check
from twinstream.safety.history import History, Mop, Outcome
from twinstream.safety.matrix import ENV_ARGS

pytestmark = pytest.mark.safety

#: Sessions left on the old generation: each read races the old generation's fence check
#: when it resumes, so several make the anomaly show every time.
READERS = 8


def _conninfo(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=twinstream dbname=twinstream"


async def test_paused_old_generation_serves_no_stale_read(tmp_path: Path) -> None:
    """Matrix cells stop-old-envd@just-promoted / @cutover, made deterministic: the session on
    the old generation (a client the balancer has not moved yet, or a direct one) sends its
    read while the old generation is frozen, after the new one acknowledged a write."""
    clock = asyncio.get_running_loop()
    orch = Orchestrator(tmp_path / "env", extra_args=list(ENV_ARGS))
    history = History()
    try:
        record = await orch.up()
        ep0 = record.active_endpoint()
        assert ep0 is not None
        async with await psycopg.AsyncConnection.connect(
            _conninfo(ep0.sql_port), autocommit=True
        ) as conn:
            await conn.execute("CREATE TABLE reg (k int NOT NULL, v int NOT NULL)")
            await conn.execute("INSERT INTO reg VALUES (0, 0)")
        readers = [
            await psycopg.AsyncConnection.connect(_conninfo(ep0.sql_port), autocommit=True)
            for _ in range(READERS)
        ]
        record = await orch.upgrade(strategy=Strategy.MANUALLY_PROMOTE)
        ep1 = record.endpoints["1"]
        os.killpg(ep0.pid, signal.SIGSTOP)
        try:
            promote = asyncio.create_task(orch.promote())
            end = clock.time() + 60
            while True:
                with contextlib.suppress(Exception):
                    if await orch.status(1) == "IsLeader":
                        break
                assert clock.time() < end, "generation 1 never became leader"
                await asyncio.sleep(0.02)  # poll interval of the status API
            async with await psycopg.AsyncConnection.connect(
                _conninfo(ep1.sql_port), autocommit=True
            ) as conn:
                invoke = clock.time()
                await conn.execute("UPDATE reg SET v = 1 WHERE k = 0")
                history.record("writer", invoke, clock.time(), Outcome.OK, (Mop("w", 0, 1),))
            invoke = clock.time()
            reads = [
                asyncio.create_task(r.execute("SELECT v FROM reg WHERE k = 0")) for r in readers
            ]
            await asyncio.sleep(0.2)  # let the SELECTs reach the frozen process's sockets
        finally:
            os.killpg(ep0.pid, signal.SIGCONT)
        for i, read in enumerate(reads):
            try:
                rows = await (await read).fetchall()
            except psycopg.Error:
                continue  # refusing to answer (57P01) is correct
            found = tuple(int(r[0]) for r in rows)
            history.record(f"r{i}", invoke, clock.time(), Outcome.OK, (Mop("r", 0, found),))
        await promote
        for reader in readers:
            with contextlib.suppress(Exception):
                await reader.close()
    finally:
        await orch.down()
        await orch.close()
    result = check(history.ops)
    assert result.ok, [a.detail for a in result.anomalies]
