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
from twinstream.testing.parity_queries import PARITY_QUERIES

TABLES = {
    "r": Relation("u1", ("a", "b", "t"), ("int4", "int4", "text")),
    "s": Relation("u2", ("a", "c", "d"), ("int4", "int8", "numeric(6,2)")),
    "f": Relation("u3", ("k", "f", "day"), ("varchar(10)", "float8", "date")),
}

QUERIES: dict[str, str] = dict(PARITY_QUERIES)

# Plus queries with literals of every value type.
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
