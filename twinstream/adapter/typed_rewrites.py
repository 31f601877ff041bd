"""Rewrites that need the types of expressions, learned from the engine by a probe query.

The planner knows names, not types. Three PostgreSQL behaviours depend on types:

- `WHERE <expr>` must be boolean: PostgreSQL raises 42804 where DuckDB casts an integer.
- `avg()` of an integer or numeric is numeric (DuckDB: DOUBLE): rewritten to an exact
  decimal average with PostgreSQL's usual 16 fractional digits.
- a string literal compared with a bytea value is bytea input (`by = '\\x00ff'`), which DuckDB
  reads with its own escape syntax: rewritten to the bytes.

For a SELECT with such a candidate, `probe` runs `SELECT <exprs> FROM <its FROM and joins>
LIMIT 0` (parameters as NULL) and returns the column types; a probe that fails (correlated
references, ...) leaves the query as it is. Plans are cached, so a query is probed once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from twinstream.adapter.errors import DATATYPE_MISMATCH, AdapterError

#: Runs a probe query and returns its column types (DuckDB's names), or None if it fails.
Probe = Callable[[str], list[str] | None]

_EXACT_AVG_SCALE = 16
_INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"})
_BYTEA_LITERAL = re.compile(r"^\\")
_BOOLEAN_NODES = (exp.Predicate, exp.Not, exp.And, exp.Or, exp.Boolean, exp.Exists)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)

#: DuckDB type -> PostgreSQL's name in "argument of WHERE must be type boolean, not type X".
_PG_NAMES = {
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "numeric",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "VARCHAR": "text",
    "DATE": "date",
    "TIMESTAMP": "timestamp without time zone",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "INTERVAL": "interval",
    "UUID": "uuid",
    "JSON": "jsonb",
    "BLOB": "bytea",
}


def _owner(node: exp.Expr) -> exp.Select | None:
    parent = node.parent
    while parent is not None and not isinstance(parent, exp.Select):
        parent = parent.parent
    return parent


def _where_candidate(cond: exp.Expr) -> bool:
    """A WHERE condition that might not be boolean (comparisons and the like are)."""
    if isinstance(cond, exp.Paren):
        return _where_candidate(cond.this)
    if isinstance(cond, (*_BOOLEAN_NODES, exp.Connector)):
        return False
    if isinstance(cond, exp.Literal):
        return not cond.is_string  # 'true' is boolean input in PostgreSQL
    return isinstance(cond, exp.Column | exp.Anonymous | exp.Binary | exp.Func)


def _pg_type_name(duck: str) -> str:
    base = duck.upper().split("(")[0].strip()
    if base == "DECIMAL":
        return "numeric"
    if duck.endswith("[]"):
        return _pg_type_name(duck[:-2]) + "[]"
    return _PG_NAMES.get(base, duck.lower())


def _exact_avg(avg: exp.Avg, duck_type: str) -> exp.Expr | None:
    """avg(x) as an exact decimal: round-half-away(sum * 10^16 / count) * 1e-16."""
    base = duck_type.upper().split("(")[0].strip()
    if base in _INTEGER_TYPES:
        scale_in = 0
    elif base == "DECIMAL":
        match = re.search(r",\s*(\d+)\)", duck_type)
        scale_in = int(match.group(1)) if match else 0
    else:
        return None
    scale = max(_EXACT_AVG_SCALE, scale_in)
    if scale > 30:
        return None
    arg = avg.this.sql(dialect="duckdb")
    shift = 10 ** (scale - scale_in)
    unit = "0." + "0" * (scale - 1) + "1"
    sql = (
        f"CAST((2 * (CAST(sum({arg}) * {10**scale_in} AS HUGEINT) * CAST({shift} AS HUGEINT))"
        f" + sign(sum({arg})) * count({arg})) // (2 * NULLIF(count({arg}), 0))"
        f" AS DECIMAL(38, 0)) * CAST('{unit}' AS DECIMAL(38, {scale}))"
    )
    from sqlglot import parse_one

    return exp.Paren(this=parse_one(sql, read="duckdb"))


def _probe_sql(root: exp.Expr, select: exp.Select, exprs: list[exp.Expr]) -> str:
    probe = select.copy()
    for key in ("where", "group", "having", "order", "limit", "offset", "distinct", "qualify"):
        probe.set(key, None)
    probe.set("windows", None)
    probe.set(
        "expressions",
        [exp.alias_(e.copy(), f"_p{i}", quoted=True) for i, e in enumerate(exprs)],
    )
    with_ = root.args.get("with")
    if select is not root and with_ is not None and probe.args.get("with") is None:
        probe.set("with", with_.copy())
    for param in list(probe.find_all(exp.Parameter, exp.Placeholder)):
        param.replace(exp.Null())
    return f"SELECT * FROM ({probe.sql(dialect='duckdb')}) AS _probe LIMIT 0"


def apply(root: exp.Expr, probe: Probe) -> None:
    """Check WHERE types and rewrite avg() / bytea literals in every SELECT of `root`."""
    from twinstream.pgwire.errors import PgError
    from twinstream.pgwire.types import BYTEA

    for select in list(root.find_all(exp.Select)):
        wheres: list[exp.Expr] = []
        where = select.args.get("where")
        if isinstance(where, exp.Where) and _where_candidate(where.this):
            wheres.append(where.this)
        avgs = [
            a
            for a in select.find_all(exp.Avg)
            if _owner(a) is select
            and not a.find(exp.Distinct)
            and not isinstance(a.parent, exp.Window)  # a window avg stays DuckDB's
        ]
        literals: list[tuple[exp.Literal, exp.Expr]] = []
        for cmp in select.find_all(*_COMPARISONS):
            if _owner(cmp) is not select:
                continue
            for lit, other in ((cmp.left, cmp.right), (cmp.right, cmp.left)):
                if (
                    isinstance(lit, exp.Literal)
                    and lit.is_string
                    and _BYTEA_LITERAL.match(lit.this)
                    and not isinstance(other, exp.Literal)
                ):
                    literals.append((lit, other))
        targets = wheres + [a.this for a in avgs] + [o for _l, o in literals]
        if not targets:
            continue
        types = probe(_probe_sql(root, select, targets))
        if types is None or len(types) != len(targets):
            continue
        where_types = types[: len(wheres)]
        avg_types = types[len(wheres) : len(wheres) + len(avgs)]
        literal_types = types[len(wheres) + len(avgs) :]
        for t in where_types:
            if t.upper() not in ("BOOLEAN", "NULL", '"NULL"'):
                raise AdapterError(
                    DATATYPE_MISMATCH,
                    f"argument of WHERE must be type boolean, not type {_pg_type_name(t)}",
                )
        for avg, t in zip(avgs, avg_types, strict=True):
            exact = _exact_avg(avg, t)
            if exact is not None:
                avg.replace(exact)
        for (lit, _other), t in zip(literals, literal_types, strict=True):
            if t.upper() != "BLOB":
                continue
            try:
                data = BYTEA.text_in(lit.this)
            except PgError as e:
                raise AdapterError(e.sqlstate, e.message) from None
            assert isinstance(data, bytes)
            lit.replace(
                exp.Anonymous(this="from_hex", expressions=[exp.Literal.string(data.hex())])
            )
