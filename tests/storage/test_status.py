"""mz_source_statuses: the current generation's newest status wins over a later one from an
older generation."""

from __future__ import annotations

from twinstream.adapter.engine import QueryEngine
from twinstream.adapter.system_tables import SystemTables
from twinstream.storage import status
from twinstream.storage.status import SourceStatus, history_row


def test_older_generation_never_overrides() -> None:
    engine = QueryEngine()
    try:
        SystemTables(engine)
        status.create_relations(engine)
        engine.executemany(
            "INSERT INTO memory.mz_catalog.mz_sources VALUES (?, ?, ?, ?, ?, ?)",
            [("u1", "u0", "c", "load-generator", None, None)],
        )
        rows = [
            history_row("u1", SourceStatus.RUNNING, None, 1, 100),
            history_row("u1", SourceStatus.STALLED, "boom", 2, 200),
            history_row("u1", SourceStatus.RUNNING, None, 2, 300),
            history_row("u1", SourceStatus.FAILED, "late, from the old leader", 1, 400),
        ]
        engine.apply(status.HISTORY_TABLE, len(status.HISTORY_COLUMNS), [(r, 1) for r in rows])
        cur = engine.cursor()
        got = engine.query_sync(
            cur, f"SELECT name, status, error, generation FROM {status.STATUSES_VIEW}"
        ).rows
        assert got == [("c", "running", None, 2)]
    finally:
        engine.close()
