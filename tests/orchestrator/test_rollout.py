"""Rollouts with real processes: up, upgrade (each strategy), rollout timeout, resume."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from twinstream.orchestrator.record import RolloutStatus
from twinstream.orchestrator.rollout import (
    Orchestrator,
    RolloutInProgress,
    RolloutTimeout,
    Strategy,
)


def query(port: int, sql: str) -> list[tuple[object, ...]]:
    conninfo = f"host=127.0.0.1 port={port} user=twinstream dbname=twinstream"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


async def test_up_upgrade_twice_keeps_data(tmp_path: Path) -> None:
    orch = Orchestrator(tmp_path / "env")
    try:
        record = await orch.up()
        assert record.active_generation == 0 and record.status is RolloutStatus.APPLIED
        ep = record.active_endpoint()
        assert ep is not None
        query(ep.sql_port, "CREATE TABLE t (a int)")
        query(ep.sql_port, "INSERT INTO t VALUES (1)")
        phases: list[str] = []
        record = await orch.upgrade(progress=lambda phase, _info: phases.append(phase))
        assert record.active_generation == 1 and record.status is RolloutStatus.APPLIED
        assert "promoted" in phases and "done" in phases
        assert list(record.endpoints) == ["1"], "the old generation is torn down"
        ep = record.active_endpoint()
        assert ep is not None
        query(ep.sql_port, "INSERT INTO t VALUES (2)")
        record = await orch.upgrade(strategy=Strategy.MANUALLY_PROMOTE)
        assert record.status is RolloutStatus.READY_TO_PROMOTE
        with pytest.raises(RolloutInProgress):
            await orch.upgrade()
        record = await orch.promote()
        assert record.active_generation == 2
        ep = record.active_endpoint()
        assert ep is not None
        assert query(ep.sql_port, "SELECT a FROM t ORDER BY a") == [(1,), (2,)]
    finally:
        await orch.down()
        await orch.close()


async def test_rollout_timeout_leaves_old_serving(tmp_path: Path) -> None:
    orch = Orchestrator(
        tmp_path / "env",
        extra_args=["--system-param", "with_0dt_caught_up_check_stability_period=1h"],
    )
    try:
        record = await orch.up()
        ep0 = record.active_endpoint()
        assert ep0 is not None
        query(ep0.sql_port, "CREATE TABLE t (a int)")
        with pytest.raises(RolloutTimeout):
            await orch.upgrade(rollout_timeout_s=2.0)
        record = await orch.record() or record
        assert record.status is RolloutStatus.FAILED_DEPLOY
        assert record.active_generation == 0 and list(record.endpoints) == ["0"]
        query(ep0.sql_port, "INSERT INTO t VALUES (1)")  # untouched, still the leader
        record = await orch.upgrade(force_promote=True)  # skip-catchup
        assert record.active_generation == 1
    finally:
        await orch.down()
        await orch.close()


async def test_upgrade_on_postgres_immediately_promote(tmp_path: Path, pg_url: str) -> None:
    """Consensus and blob on PostgreSQL; ImmediatelyPromoteCausingDowntime skips catch-up."""
    orch = Orchestrator(
        tmp_path / "env",
        consensus_url=pg_url,
        blob_url=pg_url,
        # Would never be ready by itself: only skip-catchup gets it promoted.
        extra_args=["--system-param", "with_0dt_caught_up_check_stability_period=1h"],
    )
    try:
        record = await orch.up()
        ep0 = record.active_endpoint()
        assert ep0 is not None
        query(ep0.sql_port, "CREATE TABLE t (a int)")
        query(ep0.sql_port, "INSERT INTO t VALUES (1)")
        record = await orch.upgrade(strategy=Strategy.IMMEDIATELY_PROMOTE_CAUSING_DOWNTIME)
        assert record.active_generation == 1 and record.status is RolloutStatus.APPLIED
        assert record.strategy == Strategy.IMMEDIATELY_PROMOTE_CAUSING_DOWNTIME.value
        assert not (tmp_path / "env" / "consensus.db").exists(), "the record lives in PostgreSQL"
        ep1 = record.active_endpoint()
        assert ep1 is not None
        query(ep1.sql_port, "INSERT INTO t VALUES (2)")
        assert query(ep1.sql_port, "SELECT a FROM t ORDER BY a") == [(1,), (2,)]
    finally:
        await orch.down()
        await orch.close()
