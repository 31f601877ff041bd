"""Lowering SQL to dataflow plans: output names and types, values (with their Python types),
plan shapes, name resolution, views, and the errors for invalid or unsupported SQL."""

from __future__ import annotations

import datetime
import pickle
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
import sqlglot

from twinstream.compute.dataflow import (
    ERRORS,
    Call,
    Col,
    Dataflow,
    Distinct,
    Filter,
    Get,
    Join,
    Plan,
    Reduce,
    SetOp,
    TopK,
    Union,
)
from twinstream.compute.dataflow.plan import children
from twinstream.compute.lower import (
    Lowered,
    LoweringError,
    Relation,
    Unsupported,
    View,
    lower,
)
from twinstream.compute.lower.scalar import TOO_MANY_ROWS
from twinstream.persist.types import Row
from twinstream.sql import SqlError, parse_statement

R = Relation("u1", ("a", "b", "t"), ("int4", "int4", "text"))
S = Relation("u2", ("a", "c", "d"), ("int4", "int8", "numeric(6,2)"))
F = Relation("u3", ("k", "f", "day"), ("varchar(10)", "float8", "date"))
CATALOG: dict[tuple[str, ...], Relation | View] = {
    ("r",): R,
    ("public", "r"): R,
    ("db", "public", "r"): R,
    ("s",): S,
    ("f",): F,
}


def resolve(parts: tuple[str, ...]) -> Relation | View | None:
    return CATALOG.get(parts)


def lw(sql: str, resolver: Any = resolve, views: Any = None) -> Lowered:
    return lower(sqlglot.parse_one(sql, read="postgres"), resolver, views)


def run(sql: str, **tables: list[Row]) -> Counter[Row]:
    """The lowered query's result over the given rows (of r, s, f)."""
    low = lw(sql)
    df = Dataflow({"out": low.plan})
    ids = {"r": "u1", "s": "u2", "f": "u3"}
    feed = {ids[n]: [(row, 0, 1) for row in rows] for n, rows in tables.items()}
    out = df.step({k: v for k, v in feed.items() if k in df.inputs}, 1)
    assert ERRORS not in out, out[ERRORS]
    acc: Counter[Row] = Counter()
    for row, _t, d in out["out"]:
        acc[row] += d
    return +acc


def typed(rows: Counter[Row]) -> Counter[tuple[Any, ...]]:
    """Rows with each value paired with its Python type (1 and 1.0 and Decimal(1) differ)."""
    return Counter({tuple((type(v).__name__, v) for v in r): n for r, n in rows.items()})


def nodes(plan: Plan) -> list[Plan]:
    out: list[Plan] = []
    stack = [plan]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children(p))
    return out


# ---------------------------------------------------------------- names and types

COLUMNS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("SELECT * FROM r", ("a", "b", "t"), ("int4", "int4", "text")),
    ("SELECT s.*, r.t FROM r JOIN s USING (a)", ("a", "c", "d", "t"),
     ("int4", "int8", "numeric(6,2)", "text")),
    ("SELECT * FROM r JOIN s USING (a)", ("a", "b", "t", "c", "d"),
     ("int4", "int4", "text", "int8", "numeric(6,2)")),
    ("SELECT A, R.B AS \"Bee\", public.r.t FROM PUBLIC.R", ("a", "Bee", "t"),
     ("int4", "int4", "text")),
    ("SELECT r.a + 1, r.a + c, r.a + d, d * 2.5, c / 2, f * 2, r.a + f, d + f FROM r, s, f",
     ("?column?",) * 8,
     ("int4", "int8", "numeric", "numeric", "int8", "float8", "float8", "float8")),
    ("SELECT 1, 2147483648, 10000000000000000000, 1.5, 1e3, 'x', NULL, true",
     ("?column?",) * 7 + ("bool",),
     ("int4", "int8", "numeric", "numeric", "numeric", "text", "text", "bool")),
    ("SELECT count(*), count(b), sum(b), sum(c), sum(d), sum(f), avg(b), avg(d), avg(f), "
     "min(t), max(k), bool_and(b > 1), bool_or(true) FROM r, s, f",
     ("count", "count", "sum", "sum", "sum", "sum", "avg", "avg", "avg", "min", "max",
      "bool_and", "bool_or"),
     ("int8", "int8", "int8", "numeric", "numeric", "float8", "numeric", "numeric", "float8",
      "text", "varchar", "bool", "bool")),
    ("SELECT CAST(a AS numeric(10,2)), a::text, a::float8, '1'::int8, b::bool, "
     "t::varchar(3), CAST(NULL AS real), d::int FROM r JOIN s USING (a)",
     ("a", "a", "a", "int8", "b", "t", "float4", "d"),
     ("numeric(10,2)", "text", "float8", "int8", "bool", "varchar(3)", "float4", "int4")),
    ("SELECT CASE WHEN b > 0 THEN b ELSE d END, coalesce(b, c), greatest(1, 2.5), nullif(b, 1), "
     "lower(t), length(t), substring(t from 2 for 1), trim(t), abs(d), round(b), round(d, 1), "
     "floor(b), ceil(d) FROM r, s",
     ("case", "coalesce", "greatest", "nullif", "lower", "length", "substring", "btrim", "abs",
      "round", "round", "floor", "ceil"),
     ("numeric", "int8", "numeric", "int4", "text", "int4", "text", "text", "numeric",
      "float8", "numeric", "float8", "numeric")),
    ("SELECT a IN (1, 2), a BETWEEN 1 AND 2, t LIKE 'x%', a IS NULL, EXISTS (SELECT 1 FROM s), "
     "(SELECT max(c) FROM s), a IN (SELECT a FROM s) FROM r",
     ("?column?",) * 4 + ("exists", "max", "?column?"),
     ("bool",) * 5 + ("int8", "bool")),
    ("SELECT a FROM r UNION SELECT c FROM s", ("a",), ("int8",)),
    ("SELECT NULL UNION SELECT 1", ("?column?",), ("int4",)),
    ("SELECT 'x' UNION ALL SELECT 'y'", ("?column?",), ("text",)),
    ("SELECT d FROM s UNION SELECT d FROM s", ("d",), ("numeric(6,2)",)),
    ("SELECT d FROM s UNION SELECT 1.5", ("d",), ("numeric",)),
    ("VALUES (1, 'a'), (2.5, NULL)", ("column1", "column2"), ("numeric", "text")),
    ("SELECT * FROM (VALUES (1), (2)) AS v (x)", ("x",), ("int4",)),
    ("WITH w (x, y) AS (SELECT a, t FROM r) SELECT * FROM w", ("x", "y"), ("int4", "text")),
    ("SELECT * FROM r AS q (p)", ("p", "b", "t"), ("int4", "int4", "text")),
    ("SELECT * FROM (r JOIN s ON r.a = s.a) AS j (x)", ("x", "b", "t", "a", "c", "d"),
     ("int4", "int4", "text", "int4", "int8", "numeric(6,2)")),
    ("SELECT * FROM generate_series(1, 3)", ("generate_series",), ("int4",)),
    ("SELECT * FROM generate_series(1, 3) AS g", ("g",), ("int4",)),
    ("SELECT k || 'x', day FROM f WHERE day > '2024-01-01'", ("?column?", "day"),
     ("text", "date")),
    ("TABLE r", ("a", "b", "t"), ("int4", "int4", "text")),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "names", "types"), COLUMNS, ids=[c[0][:60] for c in COLUMNS])
def test_output_names_and_types(sql: str, names: tuple[str, ...], types: tuple[str, ...]) -> None:
    low = lw(sql)
    assert low.columns == names
    assert low.types == types
    Dataflow({"out": low.plan})  # builds


# ---------------------------------------------------------------- values

R_ROWS: list[Row] = [(1, 2, "x"), (1, None, "Yb"), (2, 7, None), (None, 3, "x")]
S_ROWS: list[Row] = [(1, 10, Decimal("0.50")), (2, None, Decimal("-1.25")), (5, 3, None)]
F_ROWS: list[Row] = [("k", 1.5, datetime.date(2024, 1, 2)), ("j", None, None)]

VALUES: list[tuple[str, list[tuple[Any, ...]]]] = [
    ("SELECT 7 / 2, -7 / 2, 7 % -3, -7 % 3, 7.0 / 2, 1e3, 2147483648", [
        (3, -3, 1, -1, Decimal("3.5"), Decimal("1000"), 2147483648)]),
    ("SELECT '5'::int + 1, 't'::bool, 'abcd'::varchar(2), 3.14159::numeric(4,2), "
     "5::numeric(6,2), 2.5::int, CAST(1 AS float8) / 4, '2024-03-01'::date, round(5)", [
        (6, True, "ab", Decimal("3.14"), Decimal("5.00"), 3, 0.25, datetime.date(2024, 3, 1),
         5.0)]),
    ("SELECT a + d, c * 1.5, d * f FROM r JOIN s USING (a), f WHERE f IS NOT NULL", [
        (Decimal("1.50"), Decimal("15.0"), 0.75), (Decimal("1.50"), Decimal("15.0"), 0.75),
        (Decimal("0.75"), None, -1.875)]),
    ("SELECT a, avg(b), sum(b), count(*) FROM r GROUP BY a", [
        (1, Decimal(2), 2, 2), (2, Decimal(7), 7, 1), (None, Decimal(3), 3, 1)]),
    ("SELECT sum(c), avg(c), sum(d), max(d) FROM s", [
        (Decimal(13), Decimal("6.5"), Decimal("-0.75"), Decimal("0.50"))]),
    ("SELECT count(*), sum(a), avg(a) FROM r WHERE a > 100", [(0, None, None)]),
    ("SELECT t, count(*) FROM r GROUP BY t HAVING count(*) > 1", [("x", 2)]),
    ("SELECT 1 FROM r HAVING true", [(1,)]),
    ("SELECT 'b=' || b, t || NULL, 1 || 'x' FROM r WHERE a = 2", [("b=7", None, "1x")]),
    ("SELECT a FROM r WHERE t = 'X' OR t ILIKE 'yb'", [(1,)]),
    ("SELECT CASE a WHEN 1 THEN 'one' WHEN 2 THEN 'two' END FROM r", [
        ("one",), ("one",), ("two",), (None,)]),
    ("SELECT a, b FROM r ORDER BY b DESC LIMIT 2", [(1, None), (2, 7)]),
    ("SELECT a FROM r ORDER BY b NULLS FIRST OFFSET 3", [(2,)]),
    ("SELECT a FROM r ORDER BY t DESC, a FETCH FIRST 1 ROW ONLY", [(2,)]),  # NULLS FIRST
    ("SELECT b FROM r WHERE b > (SELECT min(c) FROM s) - 4", [(2,), (3,), (7,)]),
    ("SELECT a FROM r WHERE a NOT IN (SELECT a FROM s WHERE c IS NOT NULL)", [(2,)]),
    ("SELECT a FROM r WHERE a NOT IN (SELECT c FROM s)", []),
    ("SELECT a FROM r WHERE a IN (SELECT a FROM s) AND EXISTS (SELECT 1 FROM s WHERE c > 5)", [
        (1,), (1,), (2,)]),
    ("SELECT t, count(DISTINCT a) FILTER (WHERE b IS NOT NULL) FROM r GROUP BY t", [
        ("x", 1), ("Yb", 0), (None, 1)]),
    ("SELECT * FROM r NATURAL JOIN (SELECT 1 AS a, 'x' AS t) AS z", [(1, "x", 2)]),
    ("SELECT g FROM generate_series(10, 1, -4) AS g", [(10,), (6,), (2,)]),
    ("SELECT k, day FROM f WHERE day >= '2024-01-02' AND k = 'k'", [
        ("k", datetime.date(2024, 1, 2))]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "expected"), VALUES, ids=[v[0][:60] for v in VALUES])
def test_values_and_their_python_types(sql: str, expected: list[tuple[Any, ...]]) -> None:
    got = run(sql, r=R_ROWS, s=S_ROWS, f=F_ROWS)
    assert typed(got) == typed(Counter(expected))


def test_scalar_subquery_with_several_rows_is_an_error_update() -> None:
    low = lw("SELECT a, (SELECT c FROM s) FROM r")
    df = Dataflow({"out": low.plan})
    out = df.step({"u1": [((1, 2, "x"), 0, 1)], "u2": [((1, 1, None), 0, 1)]}, 1)
    assert out["out"] == [((1, 1), 0, 1)]
    out = df.step({"u2": [((2, 2, None), 1, 1)]}, 2)
    assert out["out"] == [((1, 1), 1, -1)]
    assert [(TOO_MANY_ROWS in str(e[1]), t, d) for e, t, d in out[ERRORS]] == [(True, 1, 1)]
    out = df.step({"u2": [((2, 2, None), 2, -1)]}, 3)  # back to one row: the error retracts
    assert out["out"] == [((1, 1), 2, 1)]
    assert [(t, d) for _e, t, d in out[ERRORS]] == [(2, -1)]


# ---------------------------------------------------------------- plan shapes


def test_equalities_become_join_keys_and_the_rest_a_residual() -> None:
    p = lw("SELECT r.a FROM r JOIN s ON r.a = s.a AND r.b < s.c AND s.c > 1").plan
    (j,) = [n for n in nodes(p) if isinstance(n, Join)]
    assert (j.left_key, j.right_key, j.kind) == ((0,), (0,), "inner")
    assert j.on == Call("<", (Col(1), Col(4)))
    assert j.right == Filter(Get("u2", 3), (Call(">", (Col(1), Lit1())),))


def Lit1() -> Any:
    from twinstream.compute.dataflow import Lit

    return Lit(1)


def test_where_conjuncts_are_pushed_into_comma_joins() -> None:
    p = lw("SELECT 1 FROM r, s, f WHERE r.a = s.a AND s.c = r.b + 1 AND f.k = r.t AND r.b > 0").plan
    joins = [n for n in nodes(p) if isinstance(n, Join)]
    assert len(joins) == 2 and all(j.left_key for j in joins)  # no cross join left
    assert not any(isinstance(n, Filter) and isinstance(n.input, Join) for n in nodes(p))


def test_computed_and_converted_join_keys() -> None:
    p = lw("SELECT r.a FROM r JOIN s ON r.a = s.d").plan  # int4 = numeric: r.a as numeric
    (j,) = [n for n in nodes(p) if isinstance(n, Join)]
    assert j.left_key == (3,) and j.right_key == (2,)
    assert run("SELECT r.a FROM r JOIN s ON r.b * 5 = s.c", r=R_ROWS, s=S_ROWS) == Counter([(1,)])


def test_outer_join_predicates_stay_where_they_decide_padding() -> None:
    p = lw(
        "SELECT 1 FROM r LEFT JOIN s ON r.a = s.a AND r.b > 1 AND s.c > 2 "
        "WHERE r.t = 'x' AND s.d IS NULL"
    ).plan
    (j,) = [n for n in nodes(p) if isinstance(n, Join)]
    assert j.kind == "left"
    assert j.on == Call(">", (Col(1), Lit1()))  # left-only ON condition: residual
    assert isinstance(j.left, Filter) and isinstance(j.right, Filter)  # WHERE left, ON right
    assert any(  # WHERE on the padded side: above the join
        isinstance(n, Filter) and isinstance(n.input, Join) for n in nodes(p)
    )


def test_order_by_without_limit_is_dropped() -> None:
    assert not any(isinstance(n, TopK) for n in nodes(lw("SELECT a FROM r ORDER BY b").plan))
    assert any(isinstance(n, TopK) for n in nodes(lw("SELECT a FROM r ORDER BY b LIMIT 1").plan))
    # ... together with whatever its expressions needed
    p = lw("SELECT a FROM r ORDER BY (SELECT max(c) FROM s)").plan
    assert "u2" not in {n.name for n in nodes(p) if isinstance(n, Get)}


def test_set_operations() -> None:
    assert isinstance(lw("SELECT a FROM r UNION SELECT a FROM s").plan, Distinct)
    assert isinstance(lw("SELECT a FROM r UNION ALL SELECT a FROM s").plan, Union)
    p = lw("SELECT a FROM r EXCEPT ALL SELECT a FROM s").plan
    assert isinstance(p, SetOp) and (p.op, p.all) == ("except", True)
    p = lw("SELECT a FROM r INTERSECT SELECT a FROM s").plan
    assert isinstance(p, SetOp) and (p.op, p.all) == ("intersect", False)


def test_in_subquery_in_where_is_a_semi_join() -> None:
    p = lw("SELECT a FROM r WHERE a IN (SELECT a FROM s)").plan
    (j,) = [n for n in nodes(p) if isinstance(n, Join)]
    assert j.kind == "inner" and isinstance(j.right, Distinct)
    p = lw("SELECT a FROM r WHERE a NOT IN (SELECT a FROM s)").plan
    assert {n.kind for n in nodes(p) if isinstance(n, Join)} == {"left", "inner"}


def test_cte_is_one_shared_subplan() -> None:
    p = lw(
        "WITH g AS (SELECT a, count(*) AS n FROM r GROUP BY a) "
        "SELECT x.a FROM g x JOIN g y ON x.n = y.n"
    ).plan
    reduces = [n for n in nodes(p) if isinstance(n, Reduce)]
    assert len(reduces) == 2 and reduces[0] is reduces[1]


def test_inputs_are_the_relations_the_plan_reads() -> None:
    assert lw("SELECT * FROM s, r").inputs == ("u2", "u1")
    assert lw("WITH unused AS (SELECT * FROM s) SELECT 1 FROM r").inputs == ("u1",)
    assert lw("SELECT 1").inputs == ()


# ---------------------------------------------------------------- names and views


def test_names_resolve_with_their_qualifiers() -> None:
    seen: list[tuple[str, ...]] = []

    def spy(parts: tuple[str, ...]) -> Relation | View | None:
        seen.append(parts)
        return resolve(parts)

    low = lw('SELECT public.r.a, r.b, "T" FROM db.public.r, (SELECT 1 AS "T") q', spy)
    assert seen == [("db", "public", "r")]
    assert low.columns == ("a", "b", "T")


def test_views_are_inlined() -> None:
    inner: dict[tuple[str, ...], Relation | View] = {
        ("base",): Relation("u9", ("x", "y"), ("int4", "text"))
    }
    v = View(
        "v1",
        sqlglot.parse_one("SELECT x * 2 AS x2, y FROM base WHERE x > 0", read="postgres"),
        columns=("double",),
        resolve=inner.get,
    )
    w = View("v2", sqlglot.parse_one("SELECT double FROM myview", read="postgres"))

    def catalog(parts: tuple[str, ...]) -> Relation | View | None:
        views: dict[tuple[str, ...], View] = {("myview",): v, ("w",): w}
        return views.get(parts) or resolve(parts)

    low = lw("SELECT w.double, r.a FROM w JOIN r ON r.a = w.double", catalog)
    assert low.columns == ("double", "a") and low.inputs == ("u9", "u1")
    assert low.views == ("v1", "v2")
    df = Dataflow({"o": low.plan})
    out = df.step({"u9": [((1, "p"), 0, 1), ((-1, "q"), 0, 1)], "u1": [((2, 0, "z"), 0, 1)]}, 1)
    assert out["o"] == [((2, 2), 0, 1)]


def test_second_resolver_for_views() -> None:
    v = View("v1", sqlglot.parse_one("SELECT a FROM r", read="postgres"))
    low = lw("SELECT * FROM v", resolve, {("v",): v}.get)
    assert low.views == ("v1",) and low.inputs == ("u1",)


def test_view_recursion_is_bounded() -> None:
    loop = View("v", sqlglot.parse_one("SELECT * FROM v", read="postgres"))
    with pytest.raises(LoweringError) as e:
        lw("SELECT * FROM v", {("v",): loop}.get)
    assert e.value.sqlstate == "54001"


def test_a_parsed_materialized_view_lowers() -> None:
    stmt = parse_statement(
        "CREATE MATERIALIZED VIEW mv AS SELECT T, count(*) AS N FROM R GROUP BY t"
    )
    low = lower(stmt.query, resolve)  # type: ignore[attr-defined]
    assert (low.columns, low.types) == (("t", "n"), ("text", "int8"))


def test_relation_from_catalog_columns() -> None:
    rel = Relation.from_columns(
        "u1", [{"name": "a", "type": "int4"}, {"name": "t", "type": "text"}]
    )
    assert rel == Relation("u1", ("a", "t"), ("int4", "text"))
    with pytest.raises(ValueError):
        Relation("x", ("a",), ())


# ---------------------------------------------------------------- errors

ERRORS_: list[tuple[str, str, str]] = [
    ("SELECT nope FROM r", "42703", 'column "nope" does not exist'),
    ("SELECT q.a FROM r", "42P01", 'missing FROM-clause entry for table "q"'),
    ("SELECT a FROM nope", "42P01", 'relation "nope" does not exist'),
    ("SELECT a FROM r, s", "42702", 'column reference "a" is ambiguous'),
    ("SELECT 1 FROM r, r", "42712", 'table name "r" specified more than once'),
    ("SELECT a, b FROM r GROUP BY a", "42803", 'column "b" must appear in the GROUP BY'),
    ("SELECT * FROM r GROUP BY a", "42803", 'column "r.b" must appear in the GROUP BY'),
    ("SELECT a FROM r WHERE count(*) > 1", "42803", "not allowed in WHERE"),
    ("SELECT sum(count(*)) FROM r", "42803", "cannot be nested"),
    ("SELECT 1 FROM r GROUP BY count(*)", "42803", "not allowed in GROUP BY"),
    ("SELECT a FROM r WHERE b = 'x'", "22P02", 'invalid input syntax for type integer: "x"'),
    ("SELECT a FROM r WHERE a", "42804", "argument of WHERE must be type boolean"),
    ("SELECT a + t FROM r", "42883", "operator does not exist: integer + text"),
    ("SELECT a = t FROM r", "42883", "operator does not exist: integer = text"),
    ("SELECT a LIKE 'x' FROM r", "42883", "operator does not exist: integer ~~ unknown"),
    ("SELECT sum(t) FROM r", "42883", "function sum(text) does not exist"),
    ("SELECT max(a > 1) FROM r", "42883", "function max(boolean) does not exist"),
    ("SELECT '1' + '2'", "42725", "operator is not unique"),
    ("SELECT a FROM r UNION SELECT t FROM r", "42804", "UNION types integer and text"),
    ("SELECT CASE WHEN true THEN 1 ELSE t END FROM r", "42804", "CASE types integer and text"),
    ("SELECT a FROM r UNION SELECT a, b FROM r", "42601", "same number of columns"),
    ("SELECT (SELECT a, b FROM r)", "42601", "subquery must return only one column"),
    ("SELECT a FROM r ORDER BY 3 LIMIT 1", "42P10", "ORDER BY position 3 is not in select list"),
    ("SELECT 1 FROM r GROUP BY 2", "42P10", "GROUP BY position 2 is not in select list"),
    ("SELECT DISTINCT a FROM r ORDER BY b LIMIT 1", "42P10", "must appear in select list"),
    ("SELECT a FROM r LIMIT -1", "2201W", "LIMIT must not be negative"),
    ("SELECT * FROM r JOIN s USING (c)", "42703", "does not exist in left table"),
    ("SELECT CAST(d AS bool) FROM s", "42846", "cannot cast type numeric to boolean"),
    ("SELECT '99999999999'::int", "22003", "out of range for type integer"),
    ("WITH x AS (SELECT 1), x AS (SELECT 2) SELECT 1", "42712", "specified more than once"),
    ("SELECT * FROM r AS q (x, y, z, w)", "42P10", "4 columns specified"),
    ("SELECT *", "42601", "SELECT * with no tables specified"),
    ("SELECT a FROM r WHERE EXISTS (SELECT r.zz FROM s)", "42703", "column r.zz does not exist"),
    ("SELECT (SELECT x.a FROM s)", "42P01", 'missing FROM-clause entry for table "x"'),
]


@pytest.mark.parametrize(("sql", "code", "message"), ERRORS_, ids=[e[0] for e in ERRORS_])
def test_errors(sql: str, code: str, message: str) -> None:
    with pytest.raises(LoweringError) as e:
        lw(sql)
    assert e.value.sqlstate == code, e.value
    assert message in e.value.message


UNSUPPORTED: list[tuple[str, str]] = [
    ("SELECT a FROM r WHERE EXISTS (SELECT 1 FROM s WHERE s.a = r.a)", "correlated subqueries"),
    ("SELECT a, (SELECT count(*) FROM s WHERE s.c = r.b) FROM r", "correlated subqueries"),
    ("SELECT row_number() OVER (ORDER BY a) FROM r", "window functions"),
    ("SELECT sum(a) OVER () FROM r", "window functions"),
    ("WITH RECURSIVE x AS (SELECT 1) SELECT * FROM x", "WITH RECURSIVE"),
    ("SELECT DISTINCT ON (a) a, b FROM r", "DISTINCT ON"),
    ("SELECT a FROM r GROUP BY ROLLUP (a)", "ROLLUP"),
    ("SELECT string_agg(t, ',') FROM r", "aggregate function"),
    ("SELECT * FROM r, LATERAL (SELECT r.a) x", "LATERAL"),
    ("SELECT * FROM unnest(ARRAY[1])", "UNNEST"),
    ("SELECT * FROM foo(1)", "table function foo()"),
    ("SELECT now()", "current_timestamp"),
    ("SELECT md5(t) FROM r", "function md5()"),
    ("SELECT a FROM r WHERE t ~ 'x'", "regular expression"),
    ("SELECT a > ANY (SELECT c FROM s) FROM r", "> ANY (subquery)"),
    ("SELECT a = ANY (ARRAY[1, 2]) FROM r", "array"),
    ("SELECT $1", "parameters"),
    ("SELECT interval '1 day'", "interval"),
    ("SELECT a::char(2) FROM r", "casting to character"),
    ("SELECT t::date FROM r", "casting text to date"),
    ("SELECT day + 1 FROM f", "operator + on date"),
    ("SELECT a FROM r LIMIT (SELECT 1)", "LIMIT with a non-constant"),
    ("SELECT a FROM r FOR UPDATE", "FOR UPDATE"),
    ("SELECT 1 FROM r JOIN s ON r.a IN (SELECT a FROM s)", "subqueries in JOIN conditions"),
    ("SELECT a FROM r UNION SELECT a FROM s ORDER BY a + 1 LIMIT 1", "result columns"),
    ("SELECT ltrim(t) FROM r", "trim"),
    ("SELECT t LIKE 'x' ESCAPE '!' FROM r", "ESCAPE"),
    ("SELECT a FROM r WHERE a BETWEEN SYMMETRIC 1 AND 2", "BETWEEN SYMMETRIC"),
]


@pytest.mark.parametrize(("sql", "construct"), UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported(sql: str, construct: str) -> None:
    with pytest.raises(Unsupported) as e:
        lw(sql)
    assert e.value.sqlstate == "0A000"
    assert construct in e.value.message, e.value.message


def test_non_queries_are_unsupported() -> None:
    with pytest.raises(Unsupported):
        lower(sqlglot.parse_one("INSERT INTO r VALUES (1)", read="postgres"), resolve)


def test_errors_are_sql_errors_and_pickle() -> None:
    for err in (LoweringError("42703", "x"), Unsupported("y not supported in dataflows")):
        assert isinstance(err, SqlError)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert (back.sqlstate, back.message) == (err.sqlstate, err.message)
