"""The joint layout of a join+reduce owning both sides (`joint.py`: listed rows, a single-row
or dict other side, negative counts aside) computes what shared dict arrangements compute,
under any diffs: multiplicities > 1, retractions before insertions, unconsolidated batches,
equal rows on both sides; and it frees every entry once the rows are gone."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from _compute_helpers import Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstream.compute.dataflow import Agg, Col, Dataflow, Get, Join, Reduce
from twinstream.compute.dataflow.reduce import JoinReduceNode
from twinstream.persist.types import Row, Update

R, S = Get("r", 2), Get("s", 2)  # r(a, b), s(a, c)


def _query(left: Get, right: Get) -> Reduce:
    """SELECT <s.c>, count(*), sum(<r.b>) FROM left JOIN right ON left.a = right.a GROUP BY 1:
    linear aggregates, so negative multiplicities have a defined answer."""
    j = Join(left, right, (0,), (0,))
    c, b = (3, 1) if left is R else (1, 3)
    return Reduce(j, (Col(c),), (Agg("count"), Agg("sum", Col(b))))


def _node(df: Dataflow) -> JoinReduceNode:
    (node,) = [n for n in df.nodes if isinstance(n, JoinReduceNode)]
    return node


def _expected(r: Counter[Row], s: Counter[Row]) -> Counter[Row]:
    groups: dict[object, list[int]] = {}
    for (sa, sc), ns in s.items():
        for (ra, rb), nr in r.items():
            if sa is None or sa != ra:
                continue
            g = groups.setdefault(sc, [0, 0, 0])
            g[0] += ns * nr
            if rb is not None:
                g[1] += ns * nr
                g[2] += rb * ns * nr
    return Counter({(c, n, s if nn > 0 else None): 1 for c, (n, nn, s) in groups.items() if n > 0})


def _run(steps: list[dict[str, list[Update]]], left: Get, right: Get) -> JoinReduceNode:
    fused = Harness(Dataflow({"q": _query(left, right)}))
    # A left join over the same arrangements makes them shared (not owned by the join+reduce).
    other = Join(left, right, (0,), (0,), "left")
    shared = Harness(Dataflow({"q": _query(left, right), "other": other}))
    node = _node(fused.df)
    assert (node.own_left, node.own_right) == (True, True)
    assert (_node(shared.df).own_left, _node(shared.df).own_right) == (False, False)
    acc = {"r": Counter[Row](), "s": Counter[Row]()}
    proper = True  # no negative multiplicity so far
    for t, step in enumerate(steps):
        for name, ups in step.items():
            for row, _, d in ups:
                acc[name][row] += d
        for h in (fused, shared):
            h.step_map(step, t + 1)
        assert fused.acc["q"] == shared.acc["q"], t
        proper = proper and all(n >= 0 for c in acc.values() for n in c.values())
        if proper:
            # (A reduce drops a group whose row count reaches 0 even if other slots are not
            # 0, which only negative inputs cause: then only the equality above holds.)
            assert fused.acc["q"] == _expected(acc["r"], acc["s"]), t
    return node


ROW = st.tuples(st.sampled_from([None, 0, 1, 2]), st.sampled_from([None, 1, 2, 5]))
UPDATES = st.lists(
    st.tuples(st.sampled_from(["r", "s"]), ROW, st.sampled_from([-2, -1, 1, 1, 1, 2, 3])),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(UPDATES, min_size=1, max_size=6), st.booleans())
def test_any_diffs_match_shared_arrangements(
    times: list[list[tuple[str, Row, int]]], r_first: bool
) -> None:
    steps = [
        {name: [(row, t, d) for n, row, d in ups if n == name] for name in ("r", "s")}
        for t, ups in enumerate(times)
    ]
    _run(steps, R if r_first else S, S if r_first else R)


def test_retraction_before_insertion_and_cleanup() -> None:
    steps = [
        {"r": [((1, 5), 0, -1)], "s": [((1, 7), 0, 1)]},  # r's row negative, joins negatively
        {"r": [((1, 5), 1, 1), ((1, 5), 1, 1)]},  # back to +1
        {"r": [((1, 5), 2, -1), ((1, 5), 2, 1), ((1, 5), 2, -1)], "s": [((1, 7), 2, 1)]},
        {"s": [((1, 7), 3, -2)]},
    ]
    node = _run(steps, R, S)
    assert not node.joint and not node.neg  # nothing left, nothing kept


def test_many_side_is_listed_whichever_side_it_is() -> None:
    rng = random.Random(7)
    customers = [((c, c % 3), 0, 1) for c in range(20)]
    orders = [((rng.randrange(20), rng.randrange(100)), 0, 1) for _ in range(200)]
    for left, right, left_listed in ((R, S, True), (S, R, False)):
        df = Dataflow({"q": _query(left, right)})
        node = _node(df)
        df.step({"r": orders, "s": customers}, 1)
        assert node.left_listed is left_listed
        # one row per customer on the other side: kept inline, not as a dict
        assert all(e[0].__class__ is tuple for e in node.joint.values())
        assert node.side_size(left is R) == len(set(u[0] for u in orders))
        assert node.side_size(left is S) == 20
        # Retract every order one by one with equal (not identical) rows; customers stay.
        later = [(tuple(list(u[0])), 1, -1) for u in orders]
        df.step({"r": later}, 2)
        assert not node.neg
        assert node.side_size(left is R) == 0
        assert len(node.joint) == 20  # only the customers' entries remain


@pytest.mark.parametrize("seed", range(10))
def test_other_side_moves_between_row_and_dict(seed: int) -> None:
    """The other side of a key goes None -> row -> dict -> row -> None as rows come and go."""
    rng = random.Random(seed)
    steps: list[dict[str, list[Update]]] = [
        {"r": [((a, rng.randrange(5)), 0, 1) for a in range(4) for _ in range(3)]}
    ]
    live: list[Row] = []
    for t in range(1, 30):
        ups: list[Update] = []
        for _ in range(rng.randrange(1, 4)):
            if live and rng.random() < 0.5:
                ups.append((live.pop(rng.randrange(len(live))), t, -1))
            else:
                row = (rng.randrange(4), rng.randrange(3))
                live.append(row)
                ups.append((row, t, 1))
        steps.append({"s": ups})
    node = _run(steps, R, S)
    assert node.left_listed
