"""INSERT / UPDATE / DELETE: compute the (row, diff) changes with the engine.

INSERT evaluates its source into a session-local staging table shaped like the target (types,
defaults, NOT NULL), so DuckDB applies casts, defaults and constraints; UPDATE and DELETE read
the affected rows (old and new values) in one query. The caller makes the changes durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
from sqlglot import exp

from twinstream.adapter import errors as E
from twinstream.adapter.engine import QueryEngine, quote_ident
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.names import CatalogIndex, ItemRef
from twinstream.adapter.plan import qualify
from twinstream.adapter.types import duckdb_type
from twinstream.persist.types import Diff, Row
from twinstream.sql import ast

STAGE = "_twinstream_stage"

Changes = list[tuple[Row, Diff]]


def _default_sql(col: dict[str, Any]) -> str:
    default = col.get("default")
    if not default:
        return ""
    from sqlglot import transpile

    return " DEFAULT (" + transpile(default, read="postgres", write="duckdb")[0] + ")"


def _table_expr(ref: ItemRef, alias: str | None) -> exp.Table:
    table = exp.Table(
        this=exp.to_identifier(ref.name, quoted=True),
        db=exp.to_identifier(ref.schema, quoted=True),
        catalog=exp.to_identifier(ref.database, quoted=True),
    )
    table.set("alias", exp.TableAlias(this=exp.to_identifier(alias or ref.name)))
    return table


def require_table(ref: ItemRef, verb: str) -> None:
    if ref.type != "table":
        raise AdapterError(
            E.WRONG_OBJECT_TYPE, f'cannot {verb} "{ref.name}": it is a {ref.type.replace("_", " ")}'
        )


def insert_rows(
    engine: QueryEngine,
    cur: duckdb.DuckDBPyConnection,
    index: CatalogIndex,
    stmt: ast.Insert,
    ref: ItemRef,
    database: str,
    search_path: Sequence[str],
    system_relations: set[str],
    params: Sequence[object],
) -> list[Row]:
    require_table(ref, "insert into")
    if stmt.returning:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "INSERT ... RETURNING is not supported")
    cols = ref.columns
    names = [c["name"] for c in cols]
    for c in stmt.columns:
        if c not in names:
            raise AdapterError(
                E.UNDEFINED_COLUMN, f'column "{c}" of relation "{ref.name}" does not exist'
            )
    defs = ", ".join(
        f"{quote_ident(c['name'])} {duckdb_type(c['type'])}"
        f"{'' if c.get('nullable', True) else ' NOT NULL'}{_default_sql(c)}"
        for c in cols
    )
    target = ", ".join(quote_ident(c) for c in (stmt.columns or names))
    source = stmt.source
    if isinstance(source, ast.DefaultValues):
        source_sql = "DEFAULT VALUES"
        target_sql = ""
    elif isinstance(source, ast.ValuesRows):
        values = exp.Values(expressions=[exp.Tuple(expressions=list(r)) for r in source.rows])
        source_sql = qualify(values, index, database, search_path, system_relations).duck_sql
        target_sql = f"({target})"
    else:
        source_sql = qualify(source.query, index, database, search_path, system_relations).duck_sql
        target_sql = f"({target})"
    cur.execute(f"CREATE OR REPLACE TEMP TABLE {STAGE} ({defs})")
    try:
        sql = f"INSERT INTO {STAGE} {target_sql} {source_sql}"
        if params:
            cur.execute(sql, list(params))
        else:
            cur.execute(sql)
        rows = cur.execute(f"SELECT * FROM {STAGE}").fetchall()
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {STAGE}")
    return [tuple(r) for r in rows]


def _check_not_null(ref: ItemRef, row: Sequence[object]) -> None:
    for col, value in zip(ref.columns, row, strict=True):
        if value is None and not col.get("nullable", True):
            raise AdapterError(
                E.NOT_NULL_VIOLATION,
                f'null value in column "{col["name"]}" of relation "{ref.name}" violates '
                "not-null constraint",
            )


def update_changes(
    engine: QueryEngine,
    cur: duckdb.DuckDBPyConnection,
    index: CatalogIndex,
    stmt: ast.Update,
    ref: ItemRef,
    database: str,
    search_path: Sequence[str],
    system_relations: set[str],
    params: Sequence[object],
) -> Changes:
    require_table(ref, "update")
    if stmt.returning:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "UPDATE ... RETURNING is not supported")
    alias = stmt.alias or ref.name
    names = [c["name"] for c in ref.columns]
    assigned: dict[str, exp.Expr] = {}
    for a in stmt.assignments:
        if a.column not in names:
            raise AdapterError(
                E.UNDEFINED_COLUMN, f'column "{a.column}" of relation "{ref.name}" does not exist'
            )
        assigned[a.column] = a.value
    old = [exp.column(n, table=alias, quoted=True) for n in names]
    new: list[exp.Expr] = []
    for c in ref.columns:
        value = assigned.get(c["name"])
        if value is None:
            new.append(exp.column(c["name"], table=alias, quoted=True))
        else:
            to = exp.DataType.build(duckdb_type(c["type"]), dialect="duckdb")
            new.append(exp.Cast(this=value.copy(), to=to))
    select = exp.select(*old, *new).from_(_table_expr(ref, alias))
    if stmt.where is not None:
        select = select.where(stmt.where.copy())
    plan = qualify(select, index, database, search_path, system_relations)
    rows = engine.query_sync(cur, plan.duck_sql, params).rows
    n = len(names)
    changes: Changes = []
    for r in rows:
        before, after = tuple(r[:n]), tuple(r[n:])
        _check_not_null(ref, after)
        changes.append((before, -1))
        changes.append((after, +1))
    return changes


def delete_changes(
    engine: QueryEngine,
    cur: duckdb.DuckDBPyConnection,
    index: CatalogIndex,
    stmt: ast.Delete,
    ref: ItemRef,
    database: str,
    search_path: Sequence[str],
    system_relations: set[str],
    params: Sequence[object],
) -> Changes:
    require_table(ref, "delete from")
    if stmt.returning:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "DELETE ... RETURNING is not supported")
    alias = stmt.alias or ref.name
    cols = [exp.column(c["name"], table=alias, quoted=True) for c in ref.columns]
    select = exp.select(*cols).from_(_table_expr(ref, alias))
    if stmt.where is not None:
        select = select.where(stmt.where.copy())
    plan = qualify(select, index, database, search_path, system_relations)
    rows = engine.query_sync(cur, plan.duck_sql, params).rows
    return [(tuple(r), -1) for r in rows]
