"""A handful of matrix cells with real processes: CI's short version of the safety matrix
(select with `-m safety`; the full matrix is `twinstream bench safety --json`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinstream.safety.matrix import Cell, CellResult, run_cell, table
from twinstream.testing.pgserver import PgServer

pytestmark = pytest.mark.safety

SEED = 7


def _assert_safe(result: CellResult, *, upgraded: bool) -> None:
    detail = table([result]) + "\n" + "\n".join(result.examples)
    assert result.anomalies == 0, detail
    assert result.outcome in ("upgraded", "old-serving"), detail
    if upgraded:
        assert result.outcome == "upgraded", detail
    assert result.ops > 0


@pytest.mark.parametrize(
    ("name", "upgraded"),
    [
        ("sqlite/no-fault", True),
        ("sqlite/kill-orchestrator@promoting", True),  # resumes the promotion
        ("sqlite/repeat-3", True),
        # a clusterd replica of the new generation killed while it hydrates the indexes that
        # serve register and counter reads; environmentd restarts it and replays its dataflows
        ("sqlite/kill-new-replica@catching-up", True),
    ],
)
async def test_sqlite_cell(name: str, upgraded: bool, tmp_path: Path) -> None:
    result = await run_cell(Cell.parse(name), SEED, root=tmp_path)
    _assert_safe(result, upgraded=upgraded)
    if name.startswith("sqlite/repeat-"):
        assert result.upgrades == 3
    if "replica" in name:
        assert result.fault_phase == "catching-up", result.notes
        assert not any("not running" in n or "leaked" in n for n in result.notes), result.notes


@pytest.mark.postgres
async def test_postgres_partition_while_promoting(pg_server: PgServer, tmp_path: Path) -> None:
    cell = Cell.parse("postgres/partition-proxy@promoting")
    result = await run_cell(cell, SEED, pg=pg_server, root=tmp_path)
    _assert_safe(result, upgraded=False)
