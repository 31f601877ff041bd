"""SHOW statements, answered from session variables and the in-memory catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.temporary import is_temp_schema
from twinstream.adapter.vars import canonical
from twinstream.deployment.params import PARAMS as ZERO_DOWNTIME_PARAMS
from twinstream.deployment.params import default_text as default_param_text
from twinstream.pgwire.backend import Column
from twinstream.sql import ast

if TYPE_CHECKING:
    from twinstream.adapter.session import AdapterSession

Rows = list[tuple[Any, ...]]

_OBJECT_TYPES = {
    "tables": "table",
    "views": "view",
    "materialized views": "materialized_view",
    "indexes": "index",
    "sources": "source",
    "secrets": "secret",
    "connections": "connection",
    "sinks": "sink",
    "objects": None,
}


def execute_show(s: AdapterSession, stmt: ast.Statement) -> tuple[list[Column], Rows]:
    index = s.coord.index
    if isinstance(stmt, ast.Show):
        name = stmt.name.lower()
        if name == "all":
            return [Column("name", 25), Column("setting", 25), Column("description", 25)], [
                (k, v, "") for k, v in s.vars.all()
            ]
        if name == "transaction isolation level":
            name = "transaction_isolation"
        if name in ZERO_DOWNTIME_PARAMS:
            system = s.coord.catalog.state.system_parameters()
            return [Column(name, 25)], [(system.get(name, default_param_text(name)),)]
        return [Column(canonical(name), 25)], [(s.vars.get(name),)]
    if isinstance(stmt, ast.ShowObjects):
        kind = stmt.object_type.lower()
        if kind == "databases":
            return [Column("name", 25)], sorted((n,) for n in index.databases)
        if kind == "schemas":
            database = stmt.from_.name if stmt.from_ else s.database
            return [Column("name", 25)], sorted(
                (sch,) for (db, sch) in index.schemas if db == database
            )
        if kind == "clusters":
            return [Column("name", 25)], sorted((n,) for n in index.clusters)
        if kind == "cluster replicas":
            replica_rows: Rows = []
            for (cluster, replica), r_id in sorted(index.replicas.items()):
                size = s.coord.catalog.state.get("cluster_replica", r_id).get("size")
                replica_rows.append((cluster, replica, size))
            cols = [Column("cluster", 25), Column("replica", 25), Column("size", 25)]
            return cols, replica_rows
        if kind in _OBJECT_TYPES:
            want = _OBJECT_TYPES[kind]
            database = s.database
            path = [p for p in s.vars.search_path() if not is_temp_schema(p)]
            schema = path[0] if path else "public"
            if stmt.from_ is not None:
                parts = stmt.from_.parts
                if len(parts) == 2:
                    database, schema = parts
                else:
                    schema = parts[-1]
            rows = sorted(
                (r.name,)
                for r in index.items_by_id.values()
                if r.database == database
                and r.schema == schema
                and (want is None or r.type == want)
                and (stmt.like is None or _like(r.name, stmt.like))
            )
            if kind == "sources":  # Materialize's columns: name, type, cluster
                return _show_sources(s, database, schema, stmt.like)
            return [Column("name", 25)], rows
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, f"SHOW {stmt.object_type} is not supported")
    if isinstance(stmt, ast.ShowColumns):
        ref = s.resolve(stmt.table)
        cols = [Column("name", 25), Column("nullable", 16), Column("type", 25)]
        return cols, [(c["name"], c.get("nullable", True), c["type"]) for c in ref.columns]
    if isinstance(stmt, ast.ShowCreate):
        ref = s.resolve(stmt.name)
        return [Column("name", 25), Column("create_sql", 25)], [
            (ref.fq(), ref.value.get("create_sql", ""))
        ]
    raise AssertionError(type(stmt).__name__)


def _like(name: str, pattern: str) -> bool:
    import re

    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name) is not None


def _show_sources(
    s: AdapterSession, database: str, schema: str, like: str | None
) -> tuple[list[Column], Rows]:
    index = s.coord.index
    clusters = {c_id: name for name, c_id in index.clusters.items()}
    rows = sorted(
        (r.name, r.value.get("source_type"), clusters.get(str(r.value.get("cluster_id"))))
        for r in index.items_by_id.values()
        if r.database == database
        and r.schema == schema
        and r.type == "source"
        and (like is None or _like(r.name, like))
    )
    return [Column("name", 25), Column("type", 25), Column("cluster", 25)], rows
