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
    system_relations: frozenset[str] | set[str],
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
    name_output_columns(expr)
    return PlannedQuery(expr.sql(dialect="duckdb"), list(deps.values()))


def pg_column_name(e: exp.Expr) -> str:
    """The name PostgreSQL gives an unaliased output expression (its FigureColname)."""
    if isinstance(e, exp.Column):
        return e.name if not isinstance(e.this, exp.Star) else "?column?"
    if isinstance(e, exp.Cast | exp.TryCast):
        inner = pg_column_name(e.this)
        if inner != "?column?":
            return inner
        return _type_name(e.to)
    if isinstance(e, exp.Paren):
        return pg_column_name(e.this)
    if isinstance(e, exp.Case | exp.If):
        return "case"
    if isinstance(e, exp.Exists):
        return "exists"
    if isinstance(e, exp.Array):
        return "array"
    if isinstance(e, exp.Subquery):
        inner_select = e.this
        if isinstance(inner_select, exp.Select) and inner_select.expressions:
            first = inner_select.expressions[0]
            return first.alias_or_name if isinstance(first, exp.Alias) else pg_column_name(first)
        return "?column?"
    if isinstance(e, exp.Anonymous):
        return str(e.name).lower()
    if isinstance(e, exp.Func):
        return e.sql_name().lower()
    if isinstance(e, exp.Boolean):
        return "bool"
    return "?column?"


_TYPE_NAMES = {
    "INT": "int4",
    "BIGINT": "int8",
    "SMALLINT": "int2",
    "TEXT": "text",
    "VARCHAR": "varchar",
    "BOOLEAN": "bool",
    "DOUBLE": "float8",
    "FLOAT": "float4",
    "DECIMAL": "numeric",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMPTZ": "timestamptz",
    "INTERVAL": "interval",
    "UUID": "uuid",
    "JSONB": "jsonb",
    "JSON": "json",
}


def _type_name(dt: exp.Expr | None) -> str:
    if isinstance(dt, exp.DataType):
        return _TYPE_NAMES.get(
            dt.this.name if hasattr(dt.this, "name") else str(dt.this),
            dt.sql(dialect="postgres").lower(),
        )
    return "?column?"


def name_output_columns(expr: exp.Expr) -> None:
    """Give unaliased output expressions PostgreSQL's column names (DuckDB names them after
    their text, e.g. `count_star()`)."""
    select = expr
    while isinstance(select, exp.SetOperation):
        select = select.this
    if not isinstance(select, exp.Select):
        return
    named: list[exp.Expr] = []
    for proj in select.expressions:
        if isinstance(proj, exp.Alias | exp.Star) or (
            isinstance(proj, exp.Column) and not isinstance(proj.this, exp.Star)
        ):
            named.append(proj)
            continue
        if isinstance(proj, exp.Column):  # t.*
            named.append(proj)
            continue
        named.append(exp.alias_(proj, pg_column_name(proj), quoted=True))
    select.set("expressions", named)


def _set_parts(table: exp.Table, database: str, schema: str, name: str) -> None:
    alias = table.args.get("alias")
    if alias is None and not table.alias:
        # Keep the bare name usable as a qualifier (`t.col`) after full qualification.
        table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
    table.set("this", exp.to_identifier(name, quoted=True))
    table.set("db", exp.to_identifier(schema, quoted=True))
    table.set("catalog", exp.to_identifier(database, quoted=True))
