"""A join+reduce maintaining the arrangements only it reads (one side, or both in one dict)
computes the same as with shared arrangements, and as a brute-force recomputation."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from _compute_helpers import Harness

from twinstream.compute.dataflow import Agg, ArrangeBy, Col, Dataflow, Get, Join, Reduce
from twinstream.compute.dataflow.expr import call
from twinstream.compute.dataflow.operators import ArrangeNode
from twinstream.compute.dataflow.reduce import JoinReduceNode
from twinstream.persist.types import Row, Update

R, S = Get("r", 2), Get("s", 2)  # r(a, b), s(a, c)
# SELECT s.c, count(*), sum(r.b), min(r.b), max(r.b) FROM s JOIN r ON s.a = r.a AND s.c <> r.b
# GROUP BY s.c
QUERY = Reduce(
    Join(S, R, (0,), (0,), "inner", call("<>", Col(1), Col(3))),
    (Col(1),),
    (Agg("count"), Agg("sum", Col(3)), Agg("min", Col(3)), Agg("max", Col(3))),
)
# Other consumers of the same arrangements (s by a, r by a), so they are shared.
BOTH_SHARED = {"q": QUERY, "other": Join(S, R, (0,), (0,))}
RIGHT_SHARED = {"q": QUERY, "other": Join(R, R, (0,), (1,))}


def _join_reduce(df: Dataflow) -> JoinReduceNode:
    (node,) = [n for n in df.nodes if isinstance(n, JoinReduceNode)]
    return node


def test_ownership_follows_sharing() -> None:
    node = _join_reduce(Dataflow({"q": QUERY}))
    assert (node.own_left, node.own_right) == (True, True)
    node = _join_reduce(Dataflow(BOTH_SHARED))
    assert (node.own_left, node.own_right) == (False, False)
    node = _join_reduce(Dataflow(RIGHT_SHARED))
    assert (node.own_left, node.own_right) == (True, False)
    exported = Dataflow({"q": QUERY}, exports={"s_by_a": ArrangeBy(S, (0,))})
    node = _join_reduce(exported)
    assert (node.own_left, node.own_right) == (False, True)


def _expected(r: Counter[Row], s: Counter[Row]) -> Counter[Row]:
    groups: dict[object, list[tuple[object, int]]] = {}
    for (sa, sc), ns in s.items():
        for (ra, rb), nr in r.items():
            if sa is None or sa != ra or sc is None or rb is None or sc == rb:
                continue
            groups.setdefault(sc, []).append((rb, ns * nr))
    out: Counter[Row] = Counter()
    for c, vals in groups.items():
        n = sum(m for _, m in vals)
        if n:
            bs = [b for b, m in vals if m > 0]
            out[(c, n, sum(b * m for b, m in vals), min(bs), max(bs))] += 1
    return out


def _stream(rng: random.Random, times: int) -> list[tuple[int, str, Row, int]]:
    live: dict[str, list[Row]] = {"r": [], "s": []}
    ups: list[tuple[int, str, Row, int]] = []
    for t in range(times):
        for _ in range(rng.randrange(0, 12)):
            name = rng.choice(["r", "s"])
            rows = live[name]
            if rows and rng.random() < 0.4:
                row = rows.pop(rng.randrange(len(rows)))
                ups.append((t, name, row, -1))
            else:
                a = rng.choice([None, 0, 1, 2, 3])
                row = (a, rng.choice([None, 1, 2, 3]))
                rows.append(row)  # duplicates allowed: multiplicities > 1
                ups.append((t, name, row, 1))
    return ups


@pytest.mark.parametrize("seed", range(40))
def test_fused_matches_shared_and_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    as_of = 3
    ups = _stream(rng, 14)
    harnesses = [
        Harness(Dataflow({"q": QUERY}, as_of=as_of)),
        Harness(Dataflow(BOTH_SHARED, as_of=as_of)),
        Harness(Dataflow(RIGHT_SHARED, as_of=as_of)),
    ]
    acc = {"r": Counter[Row](), "s": Counter[Row]()}
    frontier = as_of + 1
    pending: dict[str, list[Update]] = {"r": [], "s": []}
    for t in range(14):
        for tt, name, row, d in ups:
            if tt == t:
                pending[name].append((row, t, d))
                acc[name][row] += d
        if t < as_of or (t < 13 and rng.random() < 0.3):
            continue  # several times in one step, and hydration before the as-of
        frontier = t + 1
        for h in harnesses:
            h.step_map({k: list(v) for k, v in pending.items() if v}, frontier)
        pending = {"r": [], "s": []}
        want = _expected(+acc["r"], +acc["s"])
        for h in harnesses:
            assert h.rows("q") == want, (seed, t)
    sizes = harnesses[0].df.state_sizes()
    arranged = [n for n in harnesses[0].df.nodes if isinstance(n, ArrangeNode)]
    assert all(n.owned for n in arranged)
    rows = sum(sizes[f"{n.index}:arrange"] for n in arranged)
    assert rows == len(+acc["r"]) + len(+acc["s"])  # distinct rows, NULL keys included
