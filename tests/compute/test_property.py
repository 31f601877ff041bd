"""Property: at every timestamp, the accumulated output of each dataflow equals DuckDB's full
recompute of the same query over the accumulated input.

Random small tables r(a, b) and s(a, c) with NULLs and duplicates receive insert/delete streams
over several timestamps (sometimes several timestamps per `step`). One dataflow holds every
query shape below (so common sub-plans are shared as they would be in production).
"""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinstream.compute.dataflow import (
    NULL,
    Agg,
    Case,
    Col,
    Dataflow,
    Distinct,
    Filter,
    Get,
    Join,
    Lit,
    Map,
    Plan,
    Project,
    Reduce,
    SetOp,
    SortKey,
    TopK,
    Union,
    call,
)
from twinstream.persist.types import Row, Update

R = Get("r", 2)  # r(a, b)
S = Get("s", 2)  # s(a, c)
RS = Join(R, S, (0,), (0,))  # r.a, r.b, s.a, s.c

QUERIES: dict[str, tuple[Plan, str]] = {
    "filter_project": (
        Project(
            Map(
                Filter(
                    R,
                    (
                        call(
                            "or",
                            call(
                                "and",
                                call("is_not_null", Col(0)),
                                call("or", call(">", Col(1), Lit(1)), call("=", Col(0), Lit(0))),
                            ),
                            call("not", call("=", Col(1), Lit(2))),
                        ),
                    ),
                ),
                (
                    call("+", Col(1), Lit(1)),
                    call(">", call("*", Col(1), Lit(2)), Col(0)),
                    call("coalesce", Col(1), Lit(-1)),
                    Case(
                        ((call(">", Col(0), Lit(1)), Lit("big")), (call("is_null", Col(0)), NULL)),
                        Lit("small"),
                    ),
                    call("||", Lit("b="), Col(1)),
                ),
            ),
            (0, 2, 3, 4, 5, 6),
        ),
        "SELECT a, b + 1, b * 2 > a, coalesce(b, -1), "
        "CASE WHEN a > 1 THEN 'big' WHEN a IS NULL THEN NULL ELSE 'small' END, 'b=' || b "
        "FROM r WHERE (a IS NOT NULL AND (b > 1 OR a = 0)) OR NOT (b = 2)",
    ),
    "inner_join": (RS, "SELECT r.a, r.b, s.a, s.c FROM r JOIN s ON r.a = s.a"),
    "left_join": (
        Join(R, S, (0,), (0,), "left"),
        "SELECT r.a, r.b, s.a, s.c FROM r LEFT JOIN s ON r.a = s.a",
    ),
    "right_join": (
        Join(R, S, (0,), (0,), "right"),
        "SELECT r.a, r.b, s.a, s.c FROM r RIGHT JOIN s ON r.a = s.a",
    ),
    "full_join_residual": (
        Join(R, S, (0,), (0,), "full", call("<", Col(1), Col(3))),
        "SELECT r.a, r.b, s.a, s.c FROM r FULL JOIN s ON r.a = s.a AND r.b < s.c",
    ),
    "cross_join_filter": (
        Project(Filter(Join(R, S), (call("<", Col(1), Col(3)),)), (0, 3)),
        "SELECT r.a, s.c FROM r, s WHERE r.b < s.c",
    ),
    "group_by_all_aggs": (
        Reduce(
            R,
            (Col(0),),
            (
                Agg("count"),
                Agg("count", Col(1)),
                Agg("sum", Col(1)),
                Agg("avg", Col(1)),
                Agg("min", Col(1)),
                Agg("max", Col(1)),
                Agg("count", Col(1), distinct=True),
                Agg("sum", Col(1), distinct=True),
                Agg("bool_or", call(">", Col(1), Lit(2))),
                Agg("bool_and", call(">", Col(1), Lit(0))),
            ),
        ),
        "SELECT a, count(*), count(b), sum(b), avg(b), min(b), max(b), count(DISTINCT b), "
        "sum(DISTINCT b), bool_or(b > 2), bool_and(b > 0) FROM r GROUP BY a",
    ),
    "global_agg": (
        Reduce(
            R,
            (),
            (
                Agg("count"),
                Agg("sum", Col(1)),
                Agg("min", Col(1)),
                Agg("max", Col(1)),
                Agg("avg", Col(1)),
                Agg("count", Col(0), distinct=True),
            ),
        ),
        "SELECT count(*), sum(b), min(b), max(b), avg(b), count(DISTINCT a) FROM r",
    ),
    "join_group_having": (
        Filter(
            Reduce(RS, (Col(3),), (Agg("count"), Agg("sum", Col(1)), Agg("max", Col(1)))),
            (call(">", Col(1), Lit(1)),),
        ),
        "SELECT s.c, count(*), sum(r.b), max(r.b) FROM r JOIN s ON r.a = s.a "
        "GROUP BY s.c HAVING count(*) > 1",
    ),
    # A join used only by the reduce is fused with it (JoinReduceNode).
    "join_group_fused": (
        Reduce(
            Join(S, R, (0,), (0,), "inner", call("<>", Col(1), Col(3))),
            (Col(1),),
            (
                Agg("count"),
                Agg("sum", Col(3)),
                Agg("min", Col(3)),
                Agg("count", Col(3), distinct=True),
                Agg("avg", call("+", Col(3), Col(1))),
            ),
        ),
        "SELECT s.c, count(*), sum(r.b), min(r.b), count(DISTINCT r.b), avg(r.b + s.c) "
        "FROM s JOIN r ON s.a = r.a AND s.c <> r.b GROUP BY s.c",
    ),
    "left_join_group": (
        Reduce(
            Join(R, S, (0,), (0,), "left", call("<", Col(1), Col(3))),
            (Col(0),),
            (Agg("count"), Agg("count", Col(3)), Agg("min", Col(3))),
        ),
        "SELECT r.a, count(*), count(s.c), min(s.c) FROM r LEFT JOIN s "
        "ON r.a = s.a AND r.b < s.c GROUP BY r.a",
    ),
    "distinct": (Distinct(R), "SELECT DISTINCT a, b FROM r"),
    "union": (
        Distinct(Union((Project(R, (0,)), Project(S, (0,))))),
        "SELECT a FROM r UNION SELECT a FROM s",
    ),
    "union_all": (
        Union((Project(R, (1,)), Project(S, (1,)))),
        "SELECT b FROM r UNION ALL SELECT c FROM s",
    ),
    "topk_global": (
        TopK(R, (), (SortKey(1, desc=True),), limit=3, offset=1),
        "SELECT a, b FROM r ORDER BY b DESC NULLS FIRST, a ASC NULLS LAST, b ASC NULLS LAST "
        "LIMIT 3 OFFSET 1",
    ),
    "topk_per_group": (
        TopK(R, (0,), (SortKey(1),), limit=2),
        "SELECT a, b FROM (SELECT a, b, row_number() OVER (PARTITION BY a ORDER BY "
        "b ASC NULLS LAST, a ASC NULLS LAST, b ASC NULLS LAST) AS rn FROM r) WHERE rn <= 2",
    ),
}
for _op in ("except", "intersect"):
    for _all in (False, True):
        _kw = " ALL" if _all else ""
        QUERIES[f"{_op}{'_all' if _all else ''}"] = (
            SetOp(_op, _all, Project(R, (0,)), Project(S, (0,))),
            f"SELECT a FROM r {_op.upper()}{_kw} SELECT a FROM s",
        )

A = st.one_of(st.none(), st.integers(0, 3))
V = st.one_of(st.none(), st.integers(-2, 5))
OP = st.tuples(st.booleans(), st.tuples(A, V), st.integers(0, 10_000))  # (delete?, row, pick)
BATCH = st.tuples(st.lists(OP, max_size=8), st.lists(OP, max_size=8))


def _norm(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, int | str):
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


def _load(con: Any, name: str, cols: tuple[str, str], rows: Counter[Row]) -> None:
    con.execute(f"CREATE OR REPLACE TABLE {name} ({cols[0]} INTEGER, {cols[1]} INTEGER)")
    values = [r for r, n in rows.items() for _ in range(n)]
    if values:
        lits = ", ".join(
            "(" + ", ".join("NULL" if v is None else str(v) for v in r) + ")" for r in values
        )
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
    yield c
    c.close()


@settings(
    max_examples=int(os.environ.get("TWINSTREAM_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(BATCH, min_size=1, max_size=4),
    group=st.lists(st.integers(1, 2), min_size=4, max_size=4),
    as_of=st.sampled_from([0, 5]),
)
def test_dataflow_matches_duckdb(
    con: Any, batches: list[Any], group: list[int], as_of: int
) -> None:
    df = Dataflow({name: plan for name, (plan, _sql) in QUERIES.items()}, as_of=as_of)
    live_r: Counter[Row] = Counter()
    live_s: Counter[Row] = Counter()
    # Input contents after each time, and the time of each batch (as_of for the first).
    snapshots: dict[int, tuple[Counter[Row], Counter[Row]]] = {}
    inputs: list[tuple[int, list[Update], list[Update]]] = []
    for i, (r_ops, s_ops) in enumerate(batches):
        t = as_of + 2 * i  # gaps between times
        ur = _apply_ops(live_r, r_ops, t - as_of if i == 0 else t)  # first: before as_of
        us = _apply_ops(live_s, s_ops, t)
        snapshots[t] = (+live_r, +live_s)
        inputs.append((t, ur, us))
    acc: dict[str, Counter[Row]] = {name: Counter() for name in QUERIES}
    i = 0
    g = 0
    while i < len(inputs):
        n = group[g % len(group)]
        g += 1
        chunk = inputs[i : i + n]
        i += n
        feed: dict[str, list[Update]] = {"r": [], "s": []}
        for _t, ur, us in chunk:
            feed["r"] += ur
            feed["s"] += us
        frontier = chunk[-1][0] + 1
        out = df.step(feed, frontier)
        assert "$errors" not in out
        for t, _ur, _us in chunk:
            for name in QUERIES:
                for row, ut, d in out[name]:
                    assert ut in snapshots, (name, ut)
                    if ut == t:
                        acc[name][row] += d
            rows_r, rows_s = snapshots[t]
            _load(con, "r", ("a", "b"), rows_r)
            _load(con, "s", ("a", "c"), rows_s)
            for name, (_plan, sql) in QUERIES.items():
                got = +acc[name]
                assert all(c >= 0 for c in acc[name].values()), (name, acc[name])
                expected = Counter(con.execute(sql).fetchall())
                assert _norm_bag(got) == _norm_bag(expected), (name, t, rows_r, rows_s)
