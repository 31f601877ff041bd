"""INSERT / UPDATE / DELETE: compute the (row, diff) changes with the engine.

INSERT evaluates its source into a session-local staging table shaped like the target (types,
defaults, NOT NULL), so DuckDB applies casts, defaults and constraints; UPDATE and DELETE read
the affected rows (old and new values) in one query. The caller makes the changes durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
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


def _typed_literals(row: Sequence[exp.Expr], types: Sequence[str]) -> list[exp.Expr]:
    """A string literal going into a bytea column is bytea input (hex or escape format), as in
    PostgreSQL; mark it so planning decodes it (DuckDB's own blob cast reads it differently)."""
    out: list[exp.Expr] = []
    for e, t in zip(row, types, strict=False):
        if t == "bytea" and isinstance(e, exp.Literal) and e.is_string:
            out.append(exp.Cast(this=e.copy(), to=exp.DataType.build("bytea", dialect="postgres")))
        else:
            out.append(e.copy())
    out.extend(e.copy() for e in row[len(types) :])
    return out


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
    system_relations: frozenset[str] | set[str],
    params: Sequence[object],
) -> list[Row]:
    require_table(ref, "insert into")
    if stmt.returning:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "INSERT ... RETURNING is not supported")
    fast = fast_insert_rows(stmt, ref, params)
    if fast is not None:
        return fast
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
        target_types = [str(cols[names.index(t)]["type"]) for t in (stmt.columns or names)]
        typed = [_typed_literals(r, target_types) for r in source.rows]
        values = exp.Values(expressions=[exp.Tuple(expressions=r) for r in typed])
        source_sql = qualify(values, index, database, search_path, system_relations).duck_sql
        target_sql = f"({target})"
    else:
        source_sql = qualify(source.query, index, database, search_path, system_relations).duck_sql
        target_sql = f"({target})"
    engine.flush()  # INSERT ... SELECT reads the mirror
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
    system_relations: frozenset[str] | set[str],
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
    system_relations: frozenset[str] | set[str],
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


# -- fast path ------------------------------------------------------------------------------------

#: Column types whose values the fast path converts in Python exactly as the engine would.
_FAST_TYPES = {
    "bool",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "text",
    "varchar",
    "bpchar",
    "date",
    "timestamp",
    "timestamptz",
    "uuid",
}
_INT_RANGE = {"int2": 2**15, "int4": 2**31, "int8": 2**63}


class _SlowPath(Exception):
    """The fast path cannot decide this value exactly: let the engine evaluate the INSERT."""


def _convert(value: object, col: dict[str, Any]) -> object:
    import datetime as dt
    import uuid

    from twinstream.adapter.types import lookup
    from twinstream.pgwire import types as wire_types
    from twinstream.pgwire.errors import PgError

    type_text = str(col["type"])
    base = lookup(type_text).name
    if value is None:
        return None
    if isinstance(value, str) and base not in ("text", "varchar", "bpchar"):
        if base == "timestamptz" and not wire_types.timestamp_has_zone(value):
            raise _SlowPath  # read in the session's TimeZone: the engine's cursor has it
        try:
            value = wire_types.decode_text(lookup(type_text).oid, value)
        except PgError as e:
            raise AdapterError(e.sqlstate, e.message) from None
    if base in _INT_RANGE:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise _SlowPath
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise _SlowPath  # PostgreSQL rounds; let the engine decide
            value = int(value)
        bound = _INT_RANGE[base]
        if not -bound <= value < bound:
            raise AdapterError(E.NUMERIC_OUT_OF_RANGE, f"{lookup(type_text).display} out of range")
        return value
    if base in ("float4", "float8"):
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise _SlowPath
        return float(value)
    if base == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
            raise _SlowPath
        dec = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        scale = 10
        if "(" in type_text:
            mods = type_text[type_text.index("(") + 1 : -1].split(",")
            precision, scale = int(mods[0]), int(mods[1]) if len(mods) > 1 else 0
            dec = dec.quantize(Decimal(1).scaleb(-scale))
            if dec.adjusted() >= precision - scale:
                raise AdapterError(E.NUMERIC_OUT_OF_RANGE, "numeric field overflow")
        else:
            dec = dec.quantize(Decimal(1).scaleb(-scale))
        return dec
    if base in ("text", "varchar", "bpchar"):
        if not isinstance(value, str):
            raise _SlowPath
        if "(" in type_text and base == "varchar":
            limit = int(type_text[type_text.index("(") + 1 : -1])
            if len(value) > limit:
                raise AdapterError("22001", f"value too long for type character varying({limit})")
        if base == "bpchar":
            raise _SlowPath  # blank padding rules: the engine's business
        return value
    if base == "bool":
        if not isinstance(value, bool):
            raise _SlowPath
        return value
    if base == "date":
        if type(value) is not dt.date:
            raise _SlowPath
        return value
    if base == "timestamp":
        if not isinstance(value, dt.datetime) or value.tzinfo is not None:
            raise _SlowPath
        return value
    if base == "timestamptz":
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise _SlowPath
        return value.astimezone(dt.UTC)
    if base == "uuid":
        if not isinstance(value, uuid.UUID):
            raise _SlowPath
        return value
    raise _SlowPath


def _literal(e: exp.Expr, params: Sequence[object]) -> object:
    from twinstream.sql.params import param_number

    n = param_number(e)
    if n is not None:
        if n > len(params):
            raise AdapterError("08P01", f"there is no parameter ${n}")
        return params[n - 1]
    if isinstance(e, exp.Null):
        return None
    if isinstance(e, exp.Boolean):
        return bool(e.this)
    if isinstance(e, exp.Literal):
        if e.is_string:
            return e.this
        text = str(e.this)
        return int(text) if text.isdigit() else Decimal(text)
    if isinstance(e, exp.Neg) and isinstance(e.this, exp.Literal) and not e.this.is_string:
        inner = _literal(e.this, params)
        assert isinstance(inner, int | Decimal)
        return -inner
    raise _SlowPath


def fast_insert_rows(stmt: ast.Insert, ref: ItemRef, params: Sequence[object]) -> list[Row] | None:
    """Rows of `INSERT ... VALUES` with only literals and parameters, converted in Python; None
    when the engine must evaluate the statement (expressions, defaults, unusual types)."""
    if not isinstance(stmt.source, ast.ValuesRows) or stmt.returning:
        return None
    cols = ref.columns
    names = [c["name"] for c in cols]
    targets = list(stmt.columns) or names
    if len(set(targets)) != len(targets) or any(t not in names for t in targets):
        return None
    positions = [names.index(t) for t in targets]
    for i, c in enumerate(cols):
        if str(c["type"]).split("(")[0] not in _FAST_TYPES:
            return None
        if i not in positions and c.get("default"):
            return None
    out: list[Row] = []
    try:
        for values in stmt.source.rows:
            if len(values) != len(targets):
                return None
            row: list[object] = [None] * len(cols)
            for pos, e in zip(positions, values, strict=True):
                row[pos] = _convert(_literal(e, params), cols[pos])
            _check_not_null(ref, row)
            out.append(tuple(row))
    except _SlowPath:
        return None
    return out
