"""Planning ad-hoc queries for the DuckDB engine: resolve every relation the query names
against the catalog, rewrite it to its fully qualified `db.schema.name`, and render DuckDB SQL.

Unknown relations are 42P01 here (with PostgreSQL's message) rather than DuckDB's wording.
Relations in system schemas (pg_catalog, information_schema, mz_catalog) are served by the
engine's system tables and DuckDB's own pg_catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from twinstream.adapter.errors import UNDEFINED_TABLE, AdapterError
from twinstream.adapter.names import SYSTEM_SCHEMAS, CatalogIndex, ItemRef

#: System relations we materialize in DuckDB (schema `mz_catalog` of its `memory` database).
SYSTEM_DATABASE = "memory"


@dataclass(frozen=True)
class PlannedQuery:
    duck_sql: str
    dependencies: list[ItemRef]


def _cte_names(expr: exp.Expr) -> set[str]:
    return {cte.alias_or_name for cte in expr.find_all(exp.CTE)}


def qualify(
    expr: exp.Expr,
    index: CatalogIndex,
    database: str,
    search_path: Sequence[str],
    system_relations: set[str],
) -> PlannedQuery:
    """Rewrite table references in place (on a copy) and return DuckDB SQL + dependencies."""
    expr = expr.copy()
    ctes = _cte_names(expr)
    deps: dict[str, ItemRef] = {}
    for table in list(expr.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function such as generate_series(...)
        name, schema, db = table.name, table.db, table.catalog
        if not schema and name in ctes:
            continue
        if schema in SYSTEM_SCHEMAS:
            if schema == "mz_catalog" or schema == "mz_internal":
                _set_parts(table, SYSTEM_DATABASE, "mz_catalog", name)
            continue
        parts = [p for p in (db, schema, name) if p]
        ref = index.resolve_item(parts, database, search_path)
        if ref is None:
            if len(parts) == 1 and name in system_relations:
                _set_parts(table, SYSTEM_DATABASE, "mz_catalog", name)
                continue
            if len(parts) == 1 and (name.startswith("pg_") or name.startswith("information_")):
                continue  # DuckDB's pg_catalog
            raise AdapterError(UNDEFINED_TABLE, f'relation "{".".join(parts)}" does not exist')
        deps[ref.id] = ref
        _set_parts(table, ref.database, ref.schema, ref.name)
    return PlannedQuery(expr.sql(dialect="duckdb"), list(deps.values()))


def _set_parts(table: exp.Table, database: str, schema: str, name: str) -> None:
    alias = table.args.get("alias")
    if alias is None and not table.alias:
        # Keep the bare name usable as a qualifier (`t.col`) after full qualification.
        table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
    table.set("this", exp.to_identifier(name, quoted=True))
    table.set("db", exp.to_identifier(schema, quoted=True))
    table.set("catalog", exp.to_identifier(database, quoted=True))
