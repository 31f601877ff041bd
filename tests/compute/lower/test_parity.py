"""Parity: SQL lowered to a dataflow, maintained incrementally, equals DuckDB recomputing it.

Random small tables r(a int4, b int4, t text) and s(a int4, c int8, d numeric(6,2)) with NULLs
and duplicates receive insert/delete streams over several timestamps (the first batch before
`as_of`, i.e. hydration; sometimes several timestamps per `step`). Every query string below is
lowered with `twinstream.compute.lower.lower` into one dataflow (so common sub-plans are
shared, as in production); at every timestamp the accumulated output of each query must equal,
as a multiset, DuckDB's answer to the *same SQL text* over the accumulated tables.

DuckDB runs with `SET integer_division=true` (PostgreSQL's `int / int`) and PostgreSQL's
NULL ordering (`nulls_last_on_asc_first_on_desc`). Values are compared after normalisation
(`_norm`): Decimals and floats become floats rounded to 6 places (integral ones become ints),
because the two engines type some results differently (DuckDB: avg -> DOUBLE, int / numeric
-> DOUBLE, sum(bigint) -> HUGEINT; PostgreSQL/twinstream: numeric) and print numeric with
different scales; bools, strings, ints and NULLs compare exactly. The queries avoid
behaviour where PostgreSQL and DuckDB differ (division by zero, ties at a LIMIT boundary).
"""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal
from typing import Any

import duckdb
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinstream.compute.dataflow import ERRORS, Dataflow
from twinstream.compute.lower import Lowered, Relation, lower
from twinstream.persist.types import Row, Update

TABLES = {
    "r": Relation("u1", ("a", "b", "t"), ("int4", "int4", "text")),
    "s": Relation("u2", ("a", "c", "d"), ("int4", "int8", "numeric(6,2)")),
}
DUCK_DDL = {
    "r": "CREATE TABLE r (a INTEGER, b INTEGER, t VARCHAR)",
    "s": "CREATE TABLE s (a INTEGER, c BIGINT, d DECIMAL(6,2))",
}

QUERIES: dict[str, str] = {
    "scalar_exprs": (
        "SELECT a, b + 1 AS b1, b * 2 > a, coalesce(b, -1), "
        "CASE WHEN a > 1 THEN 'big' WHEN a IS NULL THEN NULL ELSE 'small' END, 'b=' || b "
        "FROM r WHERE (a IS NOT NULL AND (b > 1 OR a = 0)) OR NOT (b = 2)"
    ),
    "in_list_between": "SELECT * FROM r WHERE a IN (1, 2, NULL) OR b BETWEEN 0 AND 2",
    "text_funcs": (
        "SELECT t, upper(t), lower(t), length(t), substr(t, 2), t || '!' FROM r "
        "WHERE t LIKE 'x%' OR t IS NULL OR t ILIKE 'y_'"
    ),
    "not_between_like_distinct_from": (
        "SELECT a, b, t FROM r WHERE b NOT BETWEEN 1 AND 3 AND t NOT LIKE '%a' "
        "AND a IS DISTINCT FROM 2"
    ),
    "conditional_funcs": (
        "SELECT nullif(a, 1), greatest(a, b), least(a, b, 2), "
        "CASE a WHEN 0 THEN 'zero' WHEN 1 THEN 'one' END, a IS NOT DISTINCT FROM b FROM r"
    ),
    "arith_casts": (
        "SELECT a, b / 2, b % 3, -b, b * d, d + 1, c - b, a / nullif(b, 0) "
        "FROM r JOIN s USING (a) WHERE b <> 0"
    ),
    "explicit_casts": (
        "SELECT CAST(b AS numeric(6,2)) / 4, CAST(b AS double precision) / 4, CAST(d AS int), "
        "abs(b), round(d, 1), floor(d), ceil(d), d * 1.5, CAST(c AS text) || t "
        "FROM r, s WHERE r.a = s.a"
    ),
    "inner_join": "SELECT r.a, r.b, s.c FROM r JOIN s ON r.a = s.a",
    "left_join_using_star": "SELECT * FROM r LEFT JOIN s USING (a)",
    "right_join_using": "SELECT a, b, c FROM r RIGHT JOIN s USING (a) WHERE c > 0",
    "full_join_residual": (
        "SELECT r.a, s.a, r.b, s.c FROM r FULL JOIN s ON r.a = s.a AND r.b < s.c"
    ),
    "natural_full_join": "SELECT * FROM r NATURAL FULL JOIN s",
    "self_join_comma": "SELECT x.a, y.b FROM r x, r y WHERE x.a = y.b AND x.b > 0",
    "cross_join_filter": "SELECT r.a, s.d FROM r CROSS JOIN s WHERE r.b < s.c",
    "left_join_where_right": (
        "SELECT r.a, r.t, s.c FROM r LEFT JOIN s ON r.a = s.a AND s.c > 1 WHERE s.d IS NULL"
    ),
    "group_all_aggs": (
        "SELECT a, count(*), count(b), sum(b), avg(b), min(t), max(b), count(DISTINCT b), "
        "bool_or(b > 2), bool_and(b > 0) FROM r GROUP BY a"
    ),
    "global_aggs": "SELECT count(*), sum(d), avg(d), min(d), max(c), sum(c), avg(c) FROM s",
    "join_group_having": (
        "SELECT s.c, count(*), sum(r.b) FROM r JOIN s ON r.a = s.a GROUP BY s.c HAVING count(*) > 1"
    ),
    "group_ordinal_filter": (
        "SELECT a % 2 AS parity, sum(b) FILTER (WHERE b > 0), count(*) FILTER (WHERE t = 'x') "
        "FROM r GROUP BY 1"
    ),
    "group_expr": (
        "SELECT coalesce(a, 0) + 1 AS k, count(DISTINCT t), sum(DISTINCT b) FROM r "
        "GROUP BY coalesce(a, 0) + 1"
    ),
    "distinct": "SELECT DISTINCT a, t FROM r",
    "union": "SELECT a FROM r UNION SELECT a FROM s",
    "union_all_widening": "SELECT b FROM r UNION ALL SELECT c FROM s",
    "except": "SELECT a FROM r EXCEPT SELECT a FROM s",
    "except_all": "SELECT a FROM r EXCEPT ALL SELECT a FROM s",
    "intersect": "SELECT a FROM r INTERSECT SELECT a FROM s",
    "intersect_all": "SELECT a FROM r INTERSECT ALL SELECT a FROM s",
    "topk": "SELECT a, b FROM r ORDER BY b DESC, a, t LIMIT 3 OFFSET 1",
    "topk_hidden_key": "SELECT t FROM r ORDER BY b, a NULLS FIRST, t LIMIT 2",
    "topk_grouped": "SELECT a, max(b) FROM r GROUP BY a ORDER BY max(b) DESC, a LIMIT 2",
    "topk_setop": "SELECT a FROM r UNION ALL SELECT a FROM s ORDER BY 1 LIMIT 4",
    "in_subquery": "SELECT a, t FROM r WHERE a IN (SELECT a FROM s WHERE c > 0)",
    "not_in_subquery": "SELECT a, b FROM r WHERE a NOT IN (SELECT c FROM s)",
    "exists_or_in": (
        "SELECT a, b FROM r WHERE EXISTS (SELECT 1 FROM s WHERE c > 2) OR b IN (SELECT c FROM s)"
    ),
    "in_subquery_select_list": (
        "SELECT b, b IN (SELECT c FROM s), NOT EXISTS (SELECT 1 FROM s) FROM r"
    ),
    "scalar_subqueries": (
        "SELECT a, b, (SELECT max(c) FROM s) AS mc FROM r WHERE b > (SELECT avg(c) FROM s)"
    ),
    "having_subquery": (
        "SELECT a, count(*) FROM r GROUP BY a HAVING count(*) >= (SELECT count(*) FROM s) - 1"
    ),
    "cte_left_join": (
        "WITH big AS (SELECT a, sum(b) AS sb FROM r GROUP BY a) "
        "SELECT big.a, big.sb, s.c FROM big LEFT JOIN s ON big.a = s.a AND big.sb > s.c"
    ),
    "derived_table": (
        "SELECT q.a, q.n FROM (SELECT a, count(*) AS n FROM r GROUP BY a) AS q WHERE q.n >= 2"
    ),
    "values_join": (
        "SELECT v.x, v.y, r.b FROM (VALUES (1, 'one'), (2, 'two')) AS v(x, y) JOIN r ON r.a = v.x"
    ),
    "union_in_from": (
        "SELECT u.a, u.b FROM (SELECT a, b FROM r UNION ALL SELECT a, c FROM s) AS u "
        "WHERE u.b IS NOT NULL"
    ),
    "generate_series": (
        "SELECT g, count(r.a) FROM generate_series(0, 3) AS g LEFT JOIN r ON r.a = g GROUP BY g"
    ),
}


def _resolve(parts: tuple[str, ...]) -> Relation | None:
    return TABLES.get(parts[-1]) if len(parts) == 1 else None


LOWERED: dict[str, Lowered] = {
    name: lower(sqlglot.parse_one(sql, read="postgres"), _resolve) for name, sql in QUERIES.items()
}

A = st.one_of(st.none(), st.integers(0, 3))
B = st.one_of(st.none(), st.integers(-2, 5))
T = st.one_of(st.none(), st.sampled_from(["x", "y", "xa", "Yb", "a"]))
C = st.one_of(st.none(), st.integers(-1, 4))
D = st.one_of(
    st.none(),
    st.sampled_from([Decimal("0.50"), Decimal("-1.25"), Decimal("2.00"), Decimal("3.75")]),
)
R_ROW = st.tuples(A, B, T)
S_ROW = st.tuples(A, C, D)
R_OP = st.tuples(st.booleans(), R_ROW, st.integers(0, 10_000))  # (delete?, row, pick)
S_OP = st.tuples(st.booleans(), S_ROW, st.integers(0, 10_000))
BATCH = st.tuples(st.lists(R_OP, max_size=7), st.lists(S_OP, max_size=6))


def _norm(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, Decimal | float):
        f = round(float(v), 6)
        return int(f) if f.is_integer() else f
    return v


def _norm_bag(rows: Counter[Row]) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for r, n in rows.items():
        out[tuple(_norm(v) for v in r)] += n
    return out


def _sql_value(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def _load(con: Any, name: str, rows: Counter[Row]) -> None:
    con.execute(f"DELETE FROM {name}")
    values = [r for r, n in rows.items() for _ in range(n)]
    if values:
        lits = ", ".join("(" + ", ".join(_sql_value(v) for v in r) + ")" for r in values)
        con.execute(f"INSERT INTO {name} VALUES {lits}")


def _apply_ops(live: Counter[Row], ops: list[tuple[bool, Row, int]], t: int) -> list[Update]:
    out: list[Update] = []
    for is_delete, row, pick in ops:
        present = sorted((r for r, n in live.items() if n > 0), key=repr)
        if is_delete and present:
            victim = present[pick % len(present)]
            live[victim] -= 1
            out.append((victim, t, -1))
        else:
            live[row] += 1
            out.append((row, t, 1))
    return out


@pytest.fixture(scope="module")
def con() -> Any:
    c = duckdb.connect()
    c.execute("SET integer_division = true")
    c.execute("SET default_null_order = 'nulls_last_on_asc_first_on_desc'")
    for ddl in DUCK_DDL.values():
        c.execute(ddl)
    yield c
    c.close()


def _check(con: Any, name: str, got: Counter[Row], context: Any) -> None:
    assert all(n > 0 for n in got.values()), (name, got)
    expected = Counter(con.execute(QUERIES[name]).fetchall())
    assert _norm_bag(got) == _norm_bag(expected), (name, context)


FIXED_R: list[Row] = [
    (0, 1, "x"), (0, 1, "x"), (1, 2, "xa"), (1, None, "Yb"), (2, 5, None), (2, -2, "y"),
    (3, 3, "a"), (None, 4, "x"), (None, None, None), (1, 0, "y"),
]  # fmt: skip
FIXED_S: list[Row] = [
    (0, 2, Decimal("0.50")), (1, 3, Decimal("-1.25")), (1, None, Decimal("2.00")),
    (3, 4, None), (None, 1, Decimal("3.75")), (2, 0, Decimal("0.50")),
]  # fmt: skip


@pytest.mark.parametrize("name", list(QUERIES))
def test_query_matches_duckdb_on_fixed_data(con: Any, name: str) -> None:
    """Each query on its own, hydrated from a fixed snapshot then changed once."""
    df = Dataflow({name: LOWERED[name].plan}, as_of=1)
    live_r, live_s = Counter(FIXED_R), Counter(FIXED_S)
    feed: dict[str, list[Update]] = {
        "u1": [(r, 0, 1) for r in FIXED_R],
        "u2": [(r, 0, 1) for r in FIXED_S],
    }
    acc: Counter[Row] = Counter()
    changes: list[dict[str, list[Update]]] = [
        {"u1": [((0, 1, "x"), 2, -1), ((3, 7, "xa"), 2, 1)], "u2": [((3, 4, None), 2, -1)]},
        {"u2": [((0, 2, Decimal("0.50")), 3, -1), ((2, 9, Decimal("1.00")), 3, 1)]},
    ]
    for step, t in ((feed, 1), *((c, i + 2) for i, c in enumerate(changes))):
        for rel, live in (("u1", live_r), ("u2", live_s)):
            if t > 1:
                for row, _t, d in step.get(rel, []):
                    live[row] += d
        out = df.step({k: v for k, v in step.items() if k in df.inputs}, t + 1)
        assert ERRORS not in out, out[ERRORS]
        for row, _t, d in out[name]:
            acc[row] += d
        _load(con, "r", +live_r)
        _load(con, "s", +live_s)
        _check(con, name, +acc, t)


@settings(
    max_examples=int(os.environ.get("TWINSTREAM_PROPERTY_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(BATCH, min_size=1, max_size=4),
    group=st.lists(st.integers(1, 2), min_size=4, max_size=4),
    as_of=st.sampled_from([0, 5]),
)
def test_lowered_dataflows_match_duckdb(
    con: Any, batches: list[Any], group: list[int], as_of: int
) -> None:
    df = Dataflow({name: low.plan for name, low in LOWERED.items()}, as_of=as_of)
    live_r: Counter[Row] = Counter()
    live_s: Counter[Row] = Counter()
    snapshots: dict[int, tuple[Counter[Row], Counter[Row]]] = {}
    inputs: list[tuple[int, list[Update], list[Update]]] = []
    for i, (r_ops, s_ops) in enumerate(batches):
        t = as_of + 2 * i
        ur = _apply_ops(live_r, r_ops, t - as_of if i == 0 else t)  # first: before as_of
        us = _apply_ops(live_s, s_ops, t)
        snapshots[t] = (+live_r, +live_s)
        inputs.append((t, ur, us))
    acc: dict[str, Counter[Row]] = {name: Counter() for name in QUERIES}
    i = g = 0
    while i < len(inputs):
        n = group[g % len(group)]
        g += 1
        chunk = inputs[i : i + n]
        i += n
        feed: dict[str, list[Update]] = {"u1": [], "u2": []}
        for _t, ur, us in chunk:
            feed["u1"] += ur
            feed["u2"] += us
        out = df.step(feed, chunk[-1][0] + 1)
        assert ERRORS not in out, out[ERRORS]
        for t, _ur, _us in chunk:
            for name in QUERIES:
                for row, ut, d in out[name]:
                    assert ut in snapshots, (name, ut)
                    if ut == t:
                        acc[name][row] += d
            rows_r, rows_s = snapshots[t]
            _load(con, "r", rows_r)
            _load(con, "s", rows_s)
            for name in QUERIES:
                _check(
                    con,
                    name,
                    +acc[name],
                    (t, sorted(rows_r.elements(), key=repr), sorted(rows_s.elements(), key=repr)),
                )
