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
from twinstream.testing.parity_queries import PARITY_QUERIES

TABLES = {
    "r": Relation("u1", ("a", "b", "t"), ("int4", "int4", "text")),
    "s": Relation("u2", ("a", "c", "d"), ("int4", "int8", "numeric(6,2)")),
}
DUCK_DDL = {
    "r": "CREATE TABLE r (a INTEGER, b INTEGER, t VARCHAR)",
    "s": "CREATE TABLE s (a INTEGER, c BIGINT, d DECIMAL(6,2))",
}

QUERIES: dict[str, str] = dict(PARITY_QUERIES)


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
