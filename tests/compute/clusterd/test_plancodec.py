"""The plan codec: plans lowered from many queries and arbitrary row values survive
encode -> msgpack -> decode unchanged (sharing included); anything else is refused."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import msgpack
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstream.compute.dataflow import expr as E
from twinstream.compute.dataflow import plan as P
from twinstream.compute.dataflow.plancodec import (
    EXT_REF,
    PlanCodecError,
    decode_plan,
    decode_value,
    encode_plan,
    encode_value,
    pack,
    unpack,
)
from twinstream.compute.lower import Relation, lower

TABLES = {
    "r": Relation("u1", ("a", "b", "t"), ("int4", "int4", "text")),
    "s": Relation("u2", ("a", "c", "d"), ("int4", "int8", "numeric(6,2)")),
    "f": Relation("u3", ("k", "f", "day"), ("varchar(10)", "float8", "date")),
}

# Copied from tests/compute/lower/test_parity.py (test modules do not import each other),
# plus queries with literals of every value type.
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

EXTRA = [
    "SELECT 1, 2147483648, 10000000000000000000, 1.5, 1e3, 'x', NULL, true",
    "SELECT k || 'x', day FROM f WHERE day > '2024-01-01'",
    "SELECT CAST(a AS numeric(10,2)), a::text, a::float8, '1'::int8, b::bool, "
    "t::varchar(3), CAST(NULL AS real), d::int FROM r JOIN s USING (a)",
    "SELECT r.a + 1, r.a + c, r.a + d, d * 2.5, c / 2, f * 2, r.a + f, d + f FROM r, s, f",
    "WITH w (x, y) AS (SELECT a, t FROM r) SELECT * FROM w w1 JOIN w w2 USING (x)",
    "SELECT * FROM generate_series(1, 3) AS g",
    "VALUES (1, 'a'), (2.5, NULL)",
]


def _resolve(parts: tuple[str, ...]) -> Relation | None:
    return TABLES.get(parts[-1]) if len(parts) == 1 else None


PLANS: list[P.Plan] = [
    lower(sqlglot.parse_one(sql, read="postgres"), _resolve).plan
    for sql in [*QUERIES.values(), *EXTRA]
]


def _roundtrip(obj: Any) -> Any:
    return decode_plan(unpack(pack(encode_plan(obj))))


@pytest.mark.parametrize("index", range(len(PLANS)))
def test_lowered_plans_round_trip(index: int) -> None:
    plan = PLANS[index]
    got = _roundtrip(plan)
    assert got == plan
    assert P.arity(got) == P.arity(plan)


def test_shared_subplans_are_sent_once_and_stay_shared() -> None:
    base = P.Filter(P.Get("u1", 3), (E.Call(">", (E.Col(0), E.Lit(1))),))
    plan = P.Join(base, base, (0,), (0,))
    wire = encode_plan(plan)
    assert [row[0] for row in wire[1]].count("Filter") == 1
    got = _roundtrip(plan)
    assert got == plan and got.left is got.right
    # a deep chain of sharing stays linear (a tree encoding would be 2**40 nodes)
    deep: P.Plan = P.Get("u1", 1)
    for _ in range(40):
        deep = P.Union((deep, deep))
    assert len(encode_plan(deep)[1]) == 41
    got = _roundtrip(deep)
    for _ in range(40):  # (== would walk the 2**40 paths)
        assert isinstance(got, P.Union) and got.inputs[0] is got.inputs[1]
        got = got.inputs[0]
    assert got == P.Get("u1", 1)


# ---------------------------------------------------------------- values

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.decimals(allow_nan=False),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.times(),
    st.times(timezones=st.just(dt.UTC)),
    st.timedeltas(),
    st.uuids(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=12)


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 and 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.datetime | dt.time) and a.tzinfo is not None:
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_values_round_trip_with_their_types(v: Any) -> None:
    assert _same(decode_value(unpack(pack(encode_value(v)))), v)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.lists(SCALARS, max_size=4).map(tuple), st.integers(-3, 3))))
def test_constants_and_literals_round_trip(rows: list[tuple[Any, int]]) -> None:
    plan = P.Constant(tuple((r, d) for r, d in rows if len(r) == 2), 2)
    assert _roundtrip(plan) == plan
    for r, _d in rows:
        for v in r:
            if isinstance(v, dt.datetime | dt.time) and v.tzinfo is not None:
                continue  # equal instants; the decoded tzinfo is a fixed offset
            lit = E.Call("=", (E.Col(0), E.Lit(v)))
            assert _roundtrip(lit) == lit


def test_nan_and_special_decimals() -> None:
    got = decode_value(unpack(pack(encode_value((math.nan, Decimal("NaN"), Decimal("-0"))))))
    assert math.isnan(got[0]) and got[1].is_nan() and str(got[2]) == "-0"


# ---------------------------------------------------------------- strictness


class Weird:
    pass


@pytest.mark.parametrize("bad", [Weird(), [1, 2], {"a": 1}, {1}, 1j, bytearray(b"x")])
def test_unknown_values_are_refused(bad: Any) -> None:
    with pytest.raises(PlanCodecError, match="cannot encode"):
        encode_value(bad)
    with pytest.raises(PlanCodecError, match="cannot encode"):
        encode_plan(P.Constant((((bad,), 1),), 1))


def test_unknown_nodes_are_refused() -> None:
    with pytest.raises(PlanCodecError, match="plan node of type Weird"):
        encode_plan(Weird())
    with pytest.raises(PlanCodecError, match="cannot encode"):
        encode_plan(P.Filter(P.Get("u1", 1), (Weird(),)))  # type: ignore[arg-type]


def _ref(i: int) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_REF, msgpack.packb(i))


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ([2, [["Get", "u1", 1]]], "version"),
        ([1, []], "no nodes"),
        ("plan", r"\[version, nodes\]"),
        ([1, [["Gett", "u1", 1]]], "unknown plan node"),
        ([1, [["Get", "u1"]]], "has 1 fields, expected 2"),
        ([1, [["Negate", _ref(0)]]], "not to an earlier node"),
        ([1, [["Get", "u1", 1], ["Project", _ref(0), [3]]]], "invalid plan: project"),
        ([1, [["Get", "u1", 1], ["Negate", msgpack.ExtType(99, b"")]]], "unknown extension"),
        ([1, [["Get", "u1", 1], ["Negate", msgpack.ExtType(1, b"\xff")]]], "malformed"),
        ([1, [["Lit", {"a": 1}]]], "not a value"),
        ([1, [["Get", "u1", 1], ["Negate", [_ref(0)]]]], None),
    ],
)
def test_malformed_plans_are_refused(wire: Any, message: str | None) -> None:
    with pytest.raises(PlanCodecError, match=message or "."):
        decode_plan(unpack(pack(wire)))


def test_garbage_bytes_are_a_codec_error() -> None:
    with pytest.raises(PlanCodecError, match="not msgpack"):
        unpack(b"\xc1\xc1")


def test_uuid_and_bigint_literals() -> None:
    u = uuid.uuid4()
    plan = P.Map(P.Get("u1", 1), (E.Lit(u), E.Lit(10**30), E.Lit(-(10**30)), E.Lit(b"\x00")))
    assert _roundtrip(plan) == plan
