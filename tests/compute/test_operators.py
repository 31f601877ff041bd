"""One test (or a few) per operator, with retractions and NULLs, through `Dataflow`."""

from __future__ import annotations

from decimal import Decimal

import pytest
from _compute_helpers import Harness, bag, dels, ins

from twinstream.compute.dataflow import (
    ERRORS,
    NULL,
    Agg,
    Col,
    Consolidate,
    Constant,
    Dataflow,
    Distinct,
    Filter,
    Get,
    Join,
    Lit,
    Map,
    Negate,
    PlanError,
    Project,
    Reduce,
    SetOp,
    SortKey,
    TopK,
    Union,
    call,
)

R = Get("r", 2)  # r(a, b)
S = Get("s", 2)  # s(a, c)


def h(**outputs: object) -> Harness:
    return Harness(Dataflow(outputs))  # type: ignore[arg-type]


# ---------------------------------------------------------------- map / filter / project


def test_filter_project_map_with_nulls_and_retractions() -> None:
    plan = Project(
        Map(Filter(R, (call(">", Col(1), Lit(1)),)), (call("+", Col(0), Col(1)),)), (2, 0)
    )
    x = h(out=plan)
    x.step(1, r=ins(0, (1, 2), (None, 5), (3, None), (4, 0), (1, 2)))
    assert x.rows("out") == bag((3, 1), (3, 1), (None, None))
    x.step(2, r=dels(1, (1, 2), (None, 5)))
    assert x.rows("out") == bag((3, 1))
    assert x.last["out"] == [((3, 1), 1, -1), ((None, None), 1, -1)]


def test_filter_keeps_only_true() -> None:
    # WHERE NOT (b = 1): NULL b is neither kept by b = 1 nor by NOT (b = 1).
    x = h(
        eq=Filter(R, (call("=", Col(1), Lit(1)),)),
        ne=Filter(R, (call("not", call("=", Col(1), Lit(1))),)),
    )
    x.step(1, r=ins(0, (1, 1), (2, 2), (3, None)))
    assert x.set("eq") == {(1, 1)}
    assert x.set("ne") == {(2, 2)}


def test_evaluation_errors_go_to_the_error_collection() -> None:
    plan = Map(R, (call("/", Lit(10), Col(1)),))
    x = h(out=plan)
    out = x.step(1, r=ins(0, (1, 2), (2, 0), (3, 5)))
    assert x.rows("out") == bag((1, 2, 5), (3, 5, 2))
    assert out[ERRORS] == [(("22012", "division by zero"), 0, 1)]
    x.step(2, r=dels(1, (2, 0)))
    assert x.rows(ERRORS) == bag()


# ---------------------------------------------------------------- union / negate / consolidate


def test_union_all_negate_consolidate() -> None:
    x = h(
        all=Union((R, S)),
        minus=Consolidate(Union((R, Negate(S)))),
        union=Distinct(Union((R, S))),
    )
    x.step(1, r=ins(0, (1, 1), (2, 2)), s=ins(0, (1, 1), (3, 3)))
    assert x.rows("all") == bag((1, 1), (1, 1), (2, 2), (3, 3))
    assert dict(x.acc["minus"]) == {(2, 2): 1, (3, 3): -1}
    assert x.rows("union") == bag((1, 1), (2, 2), (3, 3))
    x.step(2, s=dels(1, (1, 1)))
    assert x.rows("union") == bag((1, 1), (2, 2), (3, 3))
    x.step(3, r=dels(2, (1, 1)))
    assert x.rows("union") == bag((2, 2), (3, 3))


def test_constant() -> None:
    x = h(out=Union((Constant((((1, "a"), 1), ((2, "b"), 2)), 2), R)))
    x.step(5)
    assert x.rows("out") == bag((1, "a"), (2, "b"), (2, "b"))
    assert x.last["out"][0][1] == 0  # constants appear at as_of
    x.step(6, r=ins(5, (9, "z")))
    assert x.rows("out") == bag((1, "a"), (2, "b"), (2, "b"), (9, "z"))


# ---------------------------------------------------------------- distinct / set operations


def test_distinct_with_retractions() -> None:
    x = h(out=Distinct(R))
    x.step(1, r=ins(0, (1, None), (1, None), (2, 2)))
    assert x.rows("out") == bag((1, None), (2, 2))
    x.step(2, r=dels(1, (1, None)))
    assert x.rows("out") == bag((1, None), (2, 2))
    assert x.last["out"] == []
    x.step(3, r=dels(2, (1, None)))
    assert x.rows("out") == bag((2, 2))


@pytest.mark.parametrize(
    ("op", "all_", "expected"),
    [
        ("except", False, bag((3,))),
        ("except", True, bag((1,), (3,), (3,))),
        ("intersect", False, bag((1,), (None,))),
        ("intersect", True, bag((1,), (None,))),
    ],
)
def test_except_intersect(op: str, all_: bool, expected: object) -> None:
    a = Project(R, (0,))
    b = Project(S, (0,))
    x = h(out=SetOp(op, all_, a, b))  # type: ignore[arg-type]
    x.step(
        1,
        r=ins(0, (1, 0), (1, 0), (3, 0), (3, 0), (None, 0)),
        s=ins(0, (1, 0), (2, 0), (None, 0)),
    )
    assert x.rows("out") == expected
    # Retract everything on the right: EXCEPT becomes the left side, INTERSECT empty.
    x.step(2, s=dels(1, (1, 0), (2, 0), (None, 0)))
    if op == "except":
        left = bag((1,), (1,), (3,), (3,), (None,))
        assert x.rows("out") == (left if all_ else bag((1,), (3,), (None,)))
    else:
        assert x.rows("out") == bag()


# ---------------------------------------------------------------- joins


def test_inner_join_with_retractions_on_both_sides_and_null_keys() -> None:
    x = h(out=Join(R, S, (0,), (0,)))
    x.step(1, r=ins(0, (1, "x"), (None, "n"), (2, "y")), s=ins(0, (1, 10), (None, 0), (1, 11)))
    assert x.rows("out") == bag((1, "x", 1, 10), (1, "x", 1, 11))
    # Both sides change at the same time.
    x.step(2, r=ins(1, (1, "z")), s=dels(1, (1, 10)) + ins(1, (2, 20)))
    assert x.rows("out") == bag((1, "x", 1, 11), (1, "z", 1, 11), (2, "y", 2, 20))
    x.step(3, r=dels(2, (1, "x"), (1, "z")))
    assert x.rows("out") == bag((2, "y", 2, 20))


def test_join_multiplicities() -> None:
    x = h(out=Join(R, S, (0,), (0,)))
    x.step(1, r=[((1, "x"), 0, 2)], s=[((1, 5), 0, 3)])
    assert x.rows("out") == bag(*[(1, "x", 1, 5)] * 6)


def test_multi_column_join_key() -> None:
    a, b = Get("a", 3), Get("b", 3)
    x = h(out=Project(Join(a, b, (0, 1), (0, 1)), (0, 1, 2, 5)))
    x.step(1, a=ins(0, (1, 1, "p"), (1, None, "q")), b=ins(0, (1, 1, "P"), (1, None, "Q")))
    assert x.rows("out") == bag((1, 1, "p", "P"))


def test_cross_join() -> None:
    x = h(out=Filter(Join(R, S), (call("<", Col(1), Col(3)),)))
    x.step(1, r=ins(0, (1, 5), (2, 15)), s=ins(0, (7, 10), (8, 20)))
    assert x.rows("out") == bag((1, 5, 7, 10), (1, 5, 8, 20), (2, 15, 8, 20))
    x.step(2, s=dels(1, (8, 20)))
    assert x.rows("out") == bag((1, 5, 7, 10))


def test_left_join() -> None:
    x = h(out=Join(R, S, (0,), (0,), "left"))
    x.step(1, r=ins(0, (1, "x"), (2, "y"), (None, "n")))
    assert x.rows("out") == bag((1, "x", None, None), (2, "y", None, None), (None, "n", None, None))
    x.step(2, s=ins(1, (1, 10), (1, 11)))
    assert x.rows("out") == bag(
        (1, "x", 1, 10), (1, "x", 1, 11), (2, "y", None, None), (None, "n", None, None)
    )
    x.step(3, s=dels(2, (1, 10)))
    assert x.rows("out") == bag((1, "x", 1, 11), (2, "y", None, None), (None, "n", None, None))
    x.step(4, s=dels(3, (1, 11)), r=ins(3, (1, "w")))
    assert x.rows("out") == bag(
        (1, "x", None, None), (1, "w", None, None), (2, "y", None, None), (None, "n", None, None)
    )
    x.step(5, r=dels(4, (None, "n"), (1, "x")))
    assert x.rows("out") == bag((1, "w", None, None), (2, "y", None, None))


def test_right_and_full_join() -> None:
    x = h(
        right=Join(R, S, (0,), (0,), "right"),
        full=Join(R, S, (0,), (0,), "full"),
    )
    x.step(1, r=ins(0, (1, "x"), (2, "y")), s=ins(0, (1, 10), (3, 30), (None, 0)))
    assert x.rows("right") == bag((1, "x", 1, 10), (None, None, 3, 30), (None, None, None, 0))
    assert x.rows("full") == bag(
        (1, "x", 1, 10), (2, "y", None, None), (None, None, 3, 30), (None, None, None, 0)
    )
    x.step(2, r=ins(1, (3, "z")) + dels(1, (1, "x")))
    assert x.rows("full") == bag(
        (None, None, 1, 10), (2, "y", None, None), (3, "z", 3, 30), (None, None, None, 0)
    )


def test_left_join_with_residual_condition() -> None:
    # r LEFT JOIN s ON r.a = s.a AND r.b < s.c
    on = call("<", Col(1), Col(3))
    x = h(out=Join(R, S, (0,), (0,), "left", on))
    x.step(1, r=ins(0, (1, 5), (1, 50)), s=ins(0, (1, 10)))
    assert x.rows("out") == bag((1, 5, 1, 10), (1, 50, None, None))
    x.step(2, s=ins(1, (1, 100)))
    assert x.rows("out") == bag((1, 5, 1, 10), (1, 5, 1, 100), (1, 50, 1, 100))
    x.step(3, s=dels(2, (1, 10), (1, 100)))
    assert x.rows("out") == bag((1, 5, None, None), (1, 50, None, None))


def test_outer_join_then_filter_applies_after_padding() -> None:
    # SELECT ... FROM r LEFT JOIN s ON r.a = s.a WHERE s.c IS NULL  (anti-join)
    plan = Project(Filter(Join(R, S, (0,), (0,), "left"), (call("is_null", Col(3)),)), (0, 1))
    x = h(out=plan)
    x.step(1, r=ins(0, (1, "x"), (2, "y")), s=ins(0, (1, 10)))
    assert x.rows("out") == bag((2, "y"))
    x.step(2, s=dels(1, (1, 10)))
    assert x.rows("out") == bag((1, "x"), (2, "y"))


# ---------------------------------------------------------------- reduce


def test_group_by_every_aggregate_with_retractions() -> None:
    aggs = (
        Agg("count"),
        Agg("count", Col(1)),
        Agg("sum", Col(1)),
        Agg("avg", Col(1)),
        Agg("min", Col(1)),
        Agg("max", Col(1)),
        Agg("count", Col(1), distinct=True),
        Agg("sum", Col(1), distinct=True),
    )
    x = h(out=Reduce(R, (Col(0),), aggs))
    x.step(1, r=ins(0, (1, 5), (1, 5), (1, 2), (1, None), (2, None)))
    assert x.rows("out") == bag(
        (1, 4, 3, 12, Decimal(4), 2, 5, 2, 7),
        (2, 1, 0, None, None, None, None, 0, None),
    )
    x.step(2, r=dels(1, (1, 2)))  # min retracted: recomputed from the multiset
    assert x.rows("out") == bag(
        (1, 3, 2, 10, Decimal(5), 5, 5, 1, 5),
        (2, 1, 0, None, None, None, None, 0, None),
    )
    x.step(3, r=dels(2, (1, 5), (2, None)) + ins(2, (1, 9)))
    assert x.rows("out") == bag((1, 3, 2, 14, Decimal(7), 5, 9, 2, 14))
    x.step(4, r=dels(3, (1, 5), (1, 9), (1, None)))
    assert x.rows("out") == bag()


def test_min_max_retract_the_extreme_repeatedly() -> None:
    x = h(out=Reduce(R, (), (Agg("min", Col(1)), Agg("max", Col(1)))))
    x.step(1, r=ins(0, *[(0, v) for v in range(10)]))
    assert x.rows("out") == bag((0, 9))
    for t, v in enumerate(range(9), start=1):
        x.step(t + 1, r=dels(t, (0, v)))
        assert x.rows("out") == bag((v + 1, 9))
    x.step(20, r=dels(19, (0, 9)))
    assert x.rows("out") == bag((None, None))


def test_global_aggregate_over_empty_input() -> None:
    aggs = (
        Agg("count"),
        Agg("count", Col(1)),
        Agg("sum", Col(1)),
        Agg("avg", Col(1)),
        Agg("min", Col(1)),
        Agg("max", Col(1)),
        Agg("bool_and", call(">", Col(1), Lit(0))),
    )
    x = h(out=Reduce(R, (), aggs))
    x.step(1)
    assert x.rows("out") == bag((0, 0, None, None, None, None, None))
    x.step(2, r=ins(1, (1, 4), (2, None)))
    assert x.rows("out") == bag((2, 1, 4, Decimal(4), 4, 4, True))
    x.step(3, r=dels(2, (1, 4), (2, None)))
    assert x.rows("out") == bag((0, 0, None, None, None, None, None))


def test_grouped_aggregate_over_empty_input_is_empty() -> None:
    x = h(out=Reduce(R, (Col(0),), (Agg("count"),)))
    x.step(1)
    assert x.rows("out") == bag()


def test_sum_types_and_float_exactness() -> None:
    x = h(out=Reduce(R, (Col(0),), (Agg("sum", Col(1)), Agg("avg", Col(1)))))
    x.step(1, r=ins(0, ("f", 1e20), ("f", 1.0), ("d", Decimal("1.5")), ("d", Decimal("2.25"))))
    x.step(2, r=dels(1, ("f", 1e20)))
    # Floats are summed exactly, so retracting 1e20 leaves exactly 1.0 (naive summing: 0.0).
    assert x.rows("out") == bag(("f", 1.0, 1.0), ("d", Decimal("3.75"), Decimal("1.875")))


def test_bool_aggregates() -> None:
    x = h(out=Reduce(R, (Col(0),), (Agg("bool_and", Col(1)), Agg("bool_or", Col(1)))))
    x.step(1, r=ins(0, (1, True), (1, False), (2, True), (3, None)))
    assert x.rows("out") == bag((1, False, True), (2, True, True), (3, None, None))
    x.step(2, r=dels(1, (1, False)))
    assert x.rows("out") == bag((1, True, True), (2, True, True), (3, None, None))


def test_having_is_a_filter_after_reduce() -> None:
    red = Reduce(R, (Col(0),), (Agg("count"),))
    x = h(out=Filter(red, (call(">", Col(1), Lit(1)),)))
    x.step(1, r=ins(0, (1, 0), (1, 1), (2, 0)))
    assert x.rows("out") == bag((1, 2))
    x.step(2, r=ins(1, (2, 5)) + dels(1, (1, 0)))
    assert x.rows("out") == bag((2, 2))


def test_group_by_expression_with_fused_filter() -> None:
    # SELECT a % 2, sum(b) FROM r WHERE b IS NOT NULL GROUP BY a % 2
    m = Map(Filter(R, (call("is_not_null", Col(1)),)), (call("%", Col(0), Lit(2)),))
    x = h(out=Reduce(m, (Col(2),), (Agg("sum", Col(1)),)))
    x.step(1, r=ins(0, (1, 1), (2, 2), (3, 3), (4, None)))
    assert x.rows("out") == bag((1, 4), (0, 2))


def test_join_then_group_by() -> None:
    # SELECT s.c, count(*), sum(r.b) FROM r JOIN s ON r.a = s.a GROUP BY s.c
    j = Join(R, S, (0,), (0,))
    x = h(out=Reduce(j, (Col(3),), (Agg("count"), Agg("sum", Col(1)))))
    x.step(1, r=ins(0, (1, 10), (1, 20), (2, 5)), s=ins(0, (1, "eu"), (2, "us")))
    assert x.rows("out") == bag(("eu", 2, 30), ("us", 1, 5))
    x.step(2, s=dels(1, (2, "us")) + ins(1, (2, "eu")))
    assert x.rows("out") == bag(("eu", 3, 35))
    x.step(3, r=dels(2, (1, 10)), s=ins(2, (1, "eu")))
    assert x.rows("out") == bag(("eu", 3, 45))  # r(1, 20) matches both s(1, eu) copies


def test_left_join_then_group_by() -> None:
    j = Join(R, S, (0,), (0,), "left")
    x = h(out=Reduce(j, (Col(0),), (Agg("count"), Agg("count", Col(3)))))
    x.step(1, r=ins(0, (1, 10), (2, 5)), s=ins(0, (1, "eu"), (1, "us")))
    assert x.rows("out") == bag((1, 2, 2), (2, 1, 0))


# ---------------------------------------------------------------- top-k


def test_topk_global_with_offset_and_retractions() -> None:
    plan = TopK(R, (), (SortKey(1, desc=True),), limit=2, offset=1)
    x = h(out=plan)
    x.step(1, r=ins(0, (1, 10), (2, 20), (3, 30), (4, None)))
    # DESC puts NULLs first (PostgreSQL default): NULL, 30, 20, 10 -> offset 1, limit 2.
    assert x.rows("out") == bag((3, 30), (2, 20))
    x.step(2, r=dels(1, (4, None)))
    assert x.rows("out") == bag((2, 20), (1, 10))
    x.step(3, r=ins(2, (5, 25)))
    assert x.rows("out") == bag((5, 25), (2, 20))


def test_topk_per_group_with_duplicates() -> None:
    plan = TopK(R, (0,), (SortKey(1),), limit=2)
    x = h(out=plan)
    x.step(1, r=ins(0, (1, 5), (1, 5), (1, 5), (1, 1), (2, 7), (2, None)))
    assert x.rows("out") == bag((1, 1), (1, 5), (2, 7), (2, None))
    x.step(2, r=dels(1, (1, 1)))
    assert x.rows("out") == bag((1, 5), (1, 5), (2, 7), (2, None))
    x.step(3, r=dels(2, (2, 7), (2, None)))
    assert x.rows("out") == bag((1, 5), (1, 5))


def test_topk_nulls_first_and_ties_broken_by_row() -> None:
    plan = TopK(R, (), (SortKey(1, nulls_first=True),), limit=3)
    x = h(out=plan)
    x.step(1, r=ins(0, (3, 1), (2, 1), (1, 1), (0, None)))
    assert x.rows("out") == bag((0, None), (1, 1), (2, 1))


def test_topk_large_group_uses_chunks() -> None:
    plan = TopK(R, (), (SortKey(0),), limit=3)
    x = h(out=plan)
    x.step(1, r=ins(0, *[(i, i) for i in range(5000)]))
    for t in range(1, 6):
        x.step(t + 1, r=dels(t, *[(i, i) for i in range((t - 1) * 1000, t * 1000)]))
        lo = t * 1000
        expected = bag(*[(i, i) for i in range(lo, min(lo + 3, 5000))])
        assert x.rows("out") == expected


# ---------------------------------------------------------------- plans


def test_plan_validation() -> None:
    with pytest.raises(PlanError):
        Dataflow({"o": Project(R, (5,))})
    with pytest.raises(PlanError):
        Dataflow({"o": Union((R, Get("x", 3)))})
    with pytest.raises(PlanError):
        Dataflow({"o": Filter(R, (call("+", Col(0), Col(9)),))})
    with pytest.raises(PlanError):
        Dataflow({"o": Reduce(R, (), (Agg("sum"),))})
    with pytest.raises(PlanError):
        Dataflow({"o": Union((R, Get("r", 3)))})


def test_common_subplans_share_operators() -> None:
    j = Join(R, S, (0,), (0,))
    df = Dataflow({"a": Project(j, (0,)), "b": Reduce(j, (Col(0),), (Agg("count"),))})
    labels = [n.label for n in df.nodes]
    assert labels.count("join") == 1
    assert labels.count("arrange") == 2


def test_null_literal_in_projection() -> None:
    x = h(out=Map(R, (NULL, call("coalesce", Col(1), Lit(0)))))
    x.step(1, r=ins(0, (1, None)))
    assert x.rows("out") == bag((1, None, None, 0))
