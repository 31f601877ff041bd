"""Planning ad-hoc queries for the DuckDB engine: resolve every relation the query names
against the catalog, rewrite it to its fully qualified `db.schema.name`, and render DuckDB SQL.

Unknown relations are 42P01 here (with PostgreSQL's message) rather than DuckDB's wording.
Relations in system schemas are served by the engine's system tables: `mz_catalog.*` by
`system_tables`, `pg_catalog.*` / bare `pg_*` / `information_schema.*` by the PostgreSQL
catalog emulation (`pg_catalog`), which also rewrites the catalog functions, reg* casts and
session functions (current_database(), version(), ...) clients use.

Output columns get PostgreSQL's names (`PlannedQuery.output_names`), which describing a
statement must report as they are (duplicates included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from twinstream.adapter import pg_catalog, typed_rewrites
from twinstream.adapter.errors import UNDEFINED_TABLE, AdapterError
from twinstream.adapter.names import SYSTEM_SCHEMAS, CatalogIndex, ItemRef

#: System relations we materialize in DuckDB (schema `mz_catalog` of its `memory` database).
SYSTEM_DATABASE = "memory"


@dataclass(frozen=True)
class PlannedQuery:
    duck_sql: str
    dependencies: list[ItemRef]
    #: The output column names PostgreSQL reports (None when the query has a `*`: DuckDB's
    #: names for the expanded columns are the right ones then).
    output_names: tuple[str, ...] | None = None
    #: Per output column, the declared (type OID, typmod) of the table column it reads
    #: directly (varchar(20) is 1043 with typmod 24; DuckDB knows only VARCHAR), else None.
    column_types: tuple[tuple[int, int] | None, ...] | None = None


def output_names(planned: PlannedQuery) -> tuple[str, ...] | None:
    """The output column names of a planned query, as PostgreSQL names them (duplicates kept),
    or None if they are only known once DuckDB expands a `*`."""
    return planned.output_names


def _cte_names(expr: exp.Expr) -> set[str]:
    return {cte.alias_or_name for cte in expr.find_all(exp.CTE)}


def qualify(
    expr: exp.Expr,
    index: CatalogIndex,
    database: str,
    search_path: Sequence[str],
    system_relations: frozenset[str] | set[str],
    *,
    user: str | None = None,
    backend_pid: int = 0,
    probe: typed_rewrites.Probe | None = None,
) -> PlannedQuery:
    """Rewrite table references in place (on a copy) and return DuckDB SQL + dependencies."""
    ctx = pg_catalog.PgContext(
        index, database, tuple(search_path), user or pg_catalog.DEFAULT_USER, backend_pid
    )
    expr = pg_catalog.normalize(expr.copy())
    name_output_columns(expr)
    names = _output_names(expr)
    expr = pg_catalog.rewrite(expr, ctx, _output_expressions)
    pg_catalog.strip_system_column_qualifiers(expr)
    pg_catalog.fix_function_table_aliases(expr)
    pg_catalog.fix_array_literals(expr)
    _bytea_literals(expr)
    _unconstrained_numeric_casts(expr)
    ctes = _cte_names(expr)
    tableoid = any(c.name == "tableoid" for c in expr.find_all(exp.Column))
    deps: dict[str, ItemRef] = {}
    top = _top_select(expr)
    top_tables: dict[str, ItemRef] = {}  # alias -> table read by the top SELECT's FROM
    for table in list(expr.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function such as generate_series(...)
        name, schema, db = table.name, table.db, table.catalog
        if not schema and name in ctes:
            continue
        if schema in ("pg_catalog", "information_schema") or (
            not schema and pg_catalog.is_emulated("pg_catalog", name)
        ):
            _route_emulated(table, schema or "pg_catalog", name, db, ctx, tableoid)
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
            raise AdapterError(UNDEFINED_TABLE, f'relation "{".".join(parts)}" does not exist')
        deps[ref.id] = ref
        alias = table.alias or table.name
        _set_parts(table, ref.database, ref.schema, ref.name)
        parent = table.parent
        if top is not None and isinstance(parent, exp.From | exp.Join) and parent.parent is top:
            top_tables[alias] = ref
    if probe is not None:  # types from the engine: WHERE must be boolean, avg(), bytea input
        typed_rewrites.apply(expr, probe)
    column_types = _declared_column_types(top, top_tables) if names is not None else None
    return PlannedQuery(expr.sql(dialect="duckdb"), list(deps.values()), names, column_types)


def _declared_column_types(
    top: exp.Select | None, tables: dict[str, ItemRef]
) -> tuple[tuple[int, int] | None, ...] | None:
    """(OID, typmod) of output columns that are plain references to a table column."""
    if top is None or not tables:
        return None
    out: list[tuple[int, int] | None] = []
    for proj in top.expressions:
        col = proj.this if isinstance(proj, exp.Alias) else proj
        found: tuple[int, int] | None = None
        if isinstance(col, exp.Column) and not isinstance(col.this, exp.Star):
            ref = tables.get(col.table) if col.table else None
            if ref is None and not col.table and len(tables) == 1:
                ref = next(iter(tables.values()))
            if ref is not None and ref.type == "table":
                for c in ref.columns:
                    if c["name"] == col.name:
                        found = pg_catalog.type_of_column(str(c["type"]))
                        break
        out.append(found)
    return tuple(out)


def _route_emulated(
    table: exp.Table,
    schema: str,
    name: str,
    db: str,
    ctx: pg_catalog.PgContext,
    tableoid: bool,
) -> None:
    if not pg_catalog.is_emulated(schema, name):
        shown = ".".join(p for p in (db, schema, name) if p)
        raise AdapterError(UNDEFINED_TABLE, f'relation "{shown}" does not exist')
    database = pg_catalog.check_database([db, schema, name], ctx)
    replacement = pg_catalog.emulated_relation(table, schema, name, database, tableoid=tableoid)
    table.replace(replacement)


def _top_select(expr: exp.Expr) -> exp.Select | None:
    """The SELECT whose output columns name the query's (the first branch of a UNION)."""
    select = expr
    while isinstance(select, exp.SetOperation | exp.Subquery):
        select = select.this
    return select if isinstance(select, exp.Select) else None


def _output_expressions(expr: exp.Expr) -> list[exp.Expr]:
    """The output expressions of every branch of a (set operation) query."""
    while isinstance(expr, exp.Subquery):
        expr = expr.this
    if isinstance(expr, exp.SetOperation):
        return _output_expressions(expr.this) + _output_expressions(expr.expression)
    return list(expr.expressions) if isinstance(expr, exp.Select) else []


def _output_names(expr: exp.Expr) -> tuple[str, ...] | None:
    select = _top_select(expr)
    if select is None:
        return None
    names = []
    for proj in select.expressions:
        if isinstance(proj, exp.Star) or (
            isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star)
        ):
            return None
        names.append(proj.alias_or_name)
    return tuple(names)


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
    if isinstance(e, exp.Window | exp.WithinGroup):
        return pg_column_name(e.this)
    if isinstance(e, exp.Dot) and isinstance(e.expression, exp.Func):
        return pg_column_name(e.expression)  # schema.f(...)
    if isinstance(e, exp.Anonymous):
        return str(e.name).lower()
    if isinstance(e, exp.CurrentTimestamp):
        return _now_or_current_timestamp(e)
    if isinstance(e, exp.Trim):
        position = str(e.args.get("position") or "").upper()
        return {"LEADING": "ltrim", "TRAILING": "rtrim"}.get(position, "btrim")
    if isinstance(e, exp.Pad):
        return "lpad" if e.args.get("is_left") else "rpad"
    if isinstance(e, exp.Func):
        fixed = _FUNCTION_NAMES.get(type(e).__name__)
        return fixed if fixed is not None else e.sql_name().lower()
    if isinstance(e, exp.Boolean):
        return "bool"
    return "?column?"


#: sqlglot function classes whose SQL name is not the PostgreSQL function's (FigureColname
#: uses the function's name as written; these are the common spellings).
_FUNCTION_NAMES = {
    "GroupConcat": "string_agg",
    "LogicalAnd": "bool_and",
    "LogicalOr": "bool_or",
    "Explode": "unnest",
    "ExplodingGenerateSeries": "generate_series",
    "GenerateSeries": "generate_series",
    "TimestampTrunc": "date_trunc",
    "DateTrunc": "date_trunc",
    "StrPosition": "position",
    "TimeToStr": "to_char",
    "JSONArrayAgg": "json_agg",
    "Rand": "random",
    "UnixToTime": "to_timestamp",
    "ArraySize": "array_length",
    "ArrayConcat": "array_cat",
    "Uuid": "gen_random_uuid",
    "CurrentVersion": "version",
    "CurrentDatabase": "current_database",
    "CurrentSchema": "current_schema",
    "CurrentSchemas": "current_schemas",
    "CurrentUser": "current_user",
    "SessionUser": "session_user",
    "CurrentDate": "current_date",
    "CurrentTime": "current_time",
    "Localtimestamp": "localtimestamp",
    "Localtime": "localtime",
    "ArrayToString": "array_to_string",
}


def _now_or_current_timestamp(e: exp.Expr) -> str:
    """sqlglot parses both `now()` and `current_timestamp` to CurrentTimestamp; the function
    call form records where its name was (3 characters: `now`)."""
    meta = e.meta if e.meta else {}
    start, end = meta.get("start"), meta.get("end")
    if isinstance(start, int) and isinstance(end, int) and end - start + 1 == 3:
        return "now"
    return "current_timestamp"


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
    if isinstance(dt, exp.DataType) and dt.this == exp.DataType.Type.ARRAY and dt.expressions:
        return _type_name(dt.expressions[0])  # PostgreSQL names `x::int[]` after the element
    if isinstance(dt, exp.DataType):
        return _TYPE_NAMES.get(
            dt.this.name if hasattr(dt.this, "name") else str(dt.this),
            dt.sql(dialect="postgres").lower(),
        )
    return "?column?"


def name_output_columns(expr: exp.Expr) -> None:
    """Give unaliased output expressions PostgreSQL's column names (DuckDB names them after
    their text, e.g. `count_star()`)."""
    select = _top_select(expr)
    if select is None:
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


def _bytea_literals(expr: exp.Expr) -> None:
    """`'\\x00ff'::bytea` and `'ab\\001'::bytea` mean PostgreSQL's bytea input formats;
    DuckDB's blob parser reads them differently, so decode here and pass the bytes as hex."""
    from twinstream.pgwire.errors import PgError
    from twinstream.pgwire.types import BYTEA

    for cast in list(expr.find_all(exp.Cast)):
        target = cast.to
        literal = cast.this
        if not (isinstance(target, exp.DataType) and target.this == exp.DataType.Type.VARBINARY):
            continue
        if not (isinstance(literal, exp.Literal) and literal.is_string):
            continue
        try:
            data = BYTEA.text_in(literal.this)
        except PgError as e:
            raise AdapterError(e.sqlstate, e.message) from None
        assert isinstance(data, bytes)
        cast.replace(exp.Anonymous(this="from_hex", expressions=[exp.Literal.string(data.hex())]))


#: DuckDB's widest DECIMAL; PostgreSQL's unconstrained numeric has no limit.
_MAX_DECIMAL_PRECISION = 38


def _unconstrained_numeric_casts(expr: exp.Expr) -> None:
    """`x::numeric` without a typmod keeps every digit in PostgreSQL, while DuckDB's bare
    DECIMAL is DECIMAL(18,3) (rounds to 3 places). A literal gets exactly its own precision
    and scale; a parameter is left uncast (the engine types a Decimal parameter by its own
    digits). Other expressions keep DuckDB's default."""
    from decimal import Decimal, InvalidOperation

    from twinstream.sql.params import param_number

    for cast in list(expr.find_all(exp.Cast)):
        to = cast.to
        if not (
            isinstance(to, exp.DataType)
            and to.this == exp.DataType.Type.DECIMAL
            and not to.expressions
        ):
            continue
        arg = cast.this
        if param_number(arg) is not None:
            cast.replace(arg)
            continue
        if not isinstance(arg, exp.Literal):
            continue
        try:
            value = Decimal(str(arg.this).strip())
        except InvalidOperation:
            continue  # DuckDB reports the bad input (22P02)
        if not value.is_finite():
            continue
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        scale = max(0, -exponent)
        digits = max(len(value.as_tuple().digits), scale, 1)
        integer_digits = digits - scale
        if integer_digits + scale > _MAX_DECIMAL_PRECISION:
            continue
        precision = max(_MAX_DECIMAL_PRECISION, integer_digits + scale)
        cast.set("to", exp.DataType.build(f"DECIMAL({precision}, {scale})", dialect="duckdb"))


def _set_parts(table: exp.Table, database: str, schema: str, name: str) -> None:
    alias = table.args.get("alias")
    if alias is None and not table.alias:
        # Keep the bare name usable as a qualifier (`t.col`) after full qualification.
        table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
    table.set("this", exp.to_identifier(name, quoted=True))
    table.set("db", exp.to_identifier(schema, quoted=True))
    table.set("catalog", exp.to_identifier(database, quoted=True))
