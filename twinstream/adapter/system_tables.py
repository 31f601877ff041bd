"""The system catalog (`mz_catalog.*`) as tables derived from the in-memory catalog.

Nobody writes these durably — they are recomputed from the catalog after every change — so two
generations never fight over them (the v2 design's "builtin tables become views").

The PostgreSQL catalog emulation (`pg_catalog.*`, `information_schema.*`, see
`adapter/pg_catalog.py`) is refreshed along with them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twinstream.adapter.names import CatalogIndex
from twinstream.adapter.pg_catalog import PgCatalogTables, replace_table

if TYPE_CHECKING:
    from twinstream.adapter.coordinator import SessionInfo
    from twinstream.adapter.engine import QueryEngine

SCHEMA = "memory.mz_catalog"

#: name -> column definitions (DuckDB types).
TABLES: dict[str, list[tuple[str, str]]] = {
    "mz_databases": [("id", "VARCHAR"), ("name", "VARCHAR"), ("owner_id", "VARCHAR")],
    "mz_schemas": [
        ("id", "VARCHAR"),
        ("database_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("owner_id", "VARCHAR"),
    ],
    "mz_objects": [
        ("id", "VARCHAR"),
        ("schema_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("type", "VARCHAR"),
        ("owner_id", "VARCHAR"),
        ("cluster_id", "VARCHAR"),
    ],
    "mz_tables": [
        ("id", "VARCHAR"),
        ("schema_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("owner_id", "VARCHAR"),
    ],
    "mz_views": [
        ("id", "VARCHAR"),
        ("schema_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("definition", "VARCHAR"),
        ("owner_id", "VARCHAR"),
    ],
    "mz_materialized_views": [
        ("id", "VARCHAR"),
        ("schema_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("cluster_id", "VARCHAR"),
        ("definition", "VARCHAR"),
        ("owner_id", "VARCHAR"),
    ],
    "mz_indexes": [
        ("id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("on_id", "VARCHAR"),
        ("cluster_id", "VARCHAR"),
        ("owner_id", "VARCHAR"),
    ],
    "mz_sources": [
        ("id", "VARCHAR"),
        ("schema_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("type", "VARCHAR"),
        ("cluster_id", "VARCHAR"),
        ("owner_id", "VARCHAR"),
    ],
    "mz_columns": [
        ("id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("position", "BIGINT"),
        ("nullable", "BOOLEAN"),
        ("type", "VARCHAR"),
        ("default", "VARCHAR"),
    ],
    "mz_clusters": [
        ("id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("size", "VARCHAR"),
        ("replication_factor", "BIGINT"),
        ("owner_id", "VARCHAR"),
    ],
    "mz_cluster_replicas": [
        ("id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("cluster_id", "VARCHAR"),
        ("size", "VARCHAR"),
    ],
    "mz_roles": [("id", "VARCHAR"), ("name", "VARCHAR"), ("superuser", "BOOLEAN")],
    "mz_audit_events": [
        ("id", "BIGINT"),
        ("event_type", "VARCHAR"),
        ("object_type", "VARCHAR"),
        ("details", "VARCHAR"),
        ("occurred_at_ms", "BIGINT"),
    ],
    "mz_system_parameters": [("name", "VARCHAR"), ("value", "VARCHAR")],
    # Compute: what this generation's replicas report (refreshed by the coordinator's
    # frontier loop, not from the catalog; the leader also publishes them durably).
    "mz_cluster_replica_frontiers": [
        ("object_id", "VARCHAR"),
        ("replica_id", "VARCHAR"),
        ("write_frontier", "BIGINT"),
    ],
    "mz_hydration_statuses": [
        ("object_id", "VARCHAR"),
        ("replica_id", "VARCHAR"),
        ("hydrated", "BOOLEAN"),
    ],
    # Per replica of this generation: "online" while it serves (a `clusterd` process that is
    # listening and answering), "offline" while it is down or restarting or does not answer
    # calls (a frozen process), with the reason; restarts after crashes.
    "mz_cluster_replica_statuses": [
        ("replica_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("status", "VARCHAR"),
        ("restarts", "BIGINT"),
        ("reason", "VARCHAR"),
    ],
    "mz_sessions": [
        ("id", "VARCHAR"),
        ("connection_id", "BIGINT"),
        ("role", "VARCHAR"),
        ("application_name", "VARCHAR"),
        ("database", "VARCHAR"),
        ("connected_at_ms", "BIGINT"),
    ],
}

NAMES = frozenset(TABLES)

#: Tables not derived from the catalog (`refresh` leaves them alone).
_NOT_FROM_CATALOG = frozenset(
    {"mz_cluster_replica_frontiers", "mz_hydration_statuses", "mz_cluster_replica_statuses"}
)


def _rows(index: CatalogIndex) -> dict[str, list[tuple[Any, ...]]]:
    st = index.state
    out: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
    for k, v in st.entries("database").items():
        out["mz_databases"].append((k, v["name"], v.get("owner")))
    for k, v in st.entries("schema").items():
        out["mz_schemas"].append((k, v["database_id"], v["name"], v.get("owner")))
    for ref in index.items_by_id.values():
        v = ref.value
        sid, owner, cluster = v.get("schema_id"), v.get("owner"), v.get("cluster_id")
        out["mz_objects"].append((ref.id, sid, ref.name, ref.type, owner, cluster))
        if ref.type == "table":
            out["mz_tables"].append((ref.id, sid, ref.name, owner))
        elif ref.type == "view":
            out["mz_views"].append((ref.id, sid, ref.name, v.get("create_sql"), owner))
        elif ref.type == "materialized_view":
            out["mz_materialized_views"].append(
                (ref.id, sid, ref.name, cluster, v.get("create_sql"), owner)
            )
        elif ref.type == "index":
            out["mz_indexes"].append((ref.id, ref.name, v.get("on_id"), cluster, owner))
        elif ref.type == "source":
            out["mz_sources"].append((ref.id, sid, ref.name, v.get("source_type"), cluster, owner))
        for pos, col in enumerate(ref.columns, start=1):
            out["mz_columns"].append(
                (
                    ref.id,
                    col["name"],
                    pos,
                    col.get("nullable", True),
                    col["type"],
                    col.get("default"),
                )
            )
    for k, v in st.entries("cluster").items():
        out["mz_clusters"].append(
            (k, v["name"], v.get("size"), v.get("replication_factor"), v.get("owner"))
        )
    for k, v in st.entries("cluster_replica").items():
        out["mz_cluster_replicas"].append((k, v["name"], v["cluster_id"], v.get("size")))
    for k, v in st.entries("role").items():
        out["mz_roles"].append((k, v["name"], bool(v.get("superuser"))))
    for k, v in st.entries("audit_log").items():
        out["mz_audit_events"].append(
            (int(k), v["event"], v["object_type"], json.dumps(v["details"]), v["at_ms"])
        )
    for k, v in st.entries("system_parameter").items():
        out["mz_system_parameters"].append((k, str(v)))
    return out


class SystemTables:
    def __init__(self, engine: QueryEngine) -> None:
        self.engine = engine
        #: Our own connection to the engine's database (used on the event loop thread only).
        self._cur = engine.cursor()
        self._last: dict[str, list[tuple[Any, ...]]] = {}
        engine.execute_ddl(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        for name in TABLES:
            self._fill(name, [])
        self.pg_catalog = PgCatalogTables(engine)

    def _fill(self, name: str, rows: list[tuple[Any, ...]]) -> None:
        """Replace a table's rows in one statement, skipped when they did not change."""
        if name in self._last and self._last[name] == rows:
            return
        replace_table(self._cur, f"{SCHEMA}.{name}", TABLES[name], rows)
        self._last[name] = rows

    def refresh(self, index: CatalogIndex, sessions: Mapping[int, SessionInfo]) -> None:
        for name, rows in _rows(index).items():
            if name not in _NOT_FROM_CATALOG:
                self._fill(name, rows)
        self.pg_catalog.refresh(index)
        self.refresh_sessions(sessions)

    def refresh_compute(
        self,
        frontiers: list[tuple[Any, ...]],
        hydration: list[tuple[Any, ...]],
        statuses: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """`(object_id, replica_id, write_frontier)`, `(object_id, replica_id, hydrated)` and
        `(replica_id, name, status, restarts, reason)`."""
        self._fill("mz_cluster_replica_frontiers", frontiers)
        self._fill("mz_hydration_statuses", hydration)
        if statuses is not None:
            self._fill("mz_cluster_replica_statuses", statuses)

    def refresh_sessions(self, sessions: Mapping[int, SessionInfo]) -> None:
        self._fill(
            "mz_sessions",
            [
                (
                    str(s.conn_id),
                    s.conn_id,
                    s.user,
                    s.application_name,
                    s.database,
                    s.connected_at_ms,
                )
                for s in sessions.values()
            ],
        )
