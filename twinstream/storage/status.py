"""`mz_internal.mz_source_statuses`: running / stalled / failed per source, with the error.

Statuses are a durable history in one persist shard, appended ONLY by the leader through
group commit (so a fenced generation's write cannot land), each row tagged with the writer's
deploy generation. `mz_source_statuses` picks, per source, the newest row of the HIGHEST
generation: a late status from an older generation never overrides the current one. A
read-only generation mirrors the shard like a table and never writes it.
"""

from __future__ import annotations

import enum

from twinstream.adapter.engine import QueryEngine
from twinstream.persist.types import Row

#: The shard of the status history (not a catalog item: every environment has one).
STATUS_SHARD = "storage-source-status-history"
HISTORY_TABLE = "memory.mz_catalog.mz_source_status_history"
STATUSES_VIEW = "memory.mz_catalog.mz_source_statuses"
HISTORY_COLUMNS: list[tuple[str, str]] = [
    ("source_id", "VARCHAR"),
    ("status", "VARCHAR"),
    ("error", "VARCHAR"),
    ("generation", "BIGINT"),
    ("occurred_at_ms", "BIGINT"),
]


class SourceStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"
    FAILED = "failed"


def history_row(
    source_id: str, status: SourceStatus, error: str | None, generation: int, at_ms: int
) -> Row:
    return (source_id, status.value, error, generation, at_ms)


def create_relations(engine: QueryEngine) -> None:
    """The history table (a mirror of the shard) and the current-status view."""
    cols = ", ".join(f'"{n}" {t}' for n, t in HISTORY_COLUMNS)
    engine.execute_ddl(f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} ({cols})")
    engine.execute_ddl(
        f"""CREATE OR REPLACE VIEW {STATUSES_VIEW} AS
        SELECT s.id, s.name, s.type, h.occurred_at_ms AS last_status_change_at_ms,
               h.status, h.error, h.generation
        FROM memory.mz_catalog.mz_sources AS s
        JOIN (SELECT *, row_number() OVER (
                  PARTITION BY source_id ORDER BY generation DESC, occurred_at_ms DESC
              ) AS _rank
              FROM {HISTORY_TABLE}) AS h
          ON h.source_id = s.id AND h._rank = 1"""
    )
