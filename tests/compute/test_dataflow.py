"""Driving dataflows: frontiers, as-of hydration, buffering, shared arrangements."""

from __future__ import annotations

import random

import pytest
from _compute_helpers import Harness, bag, dels, ins

from twinstream.compute.dataflow import (
    ERRORS,
    Agg,
    ArrangeBy,
    Arrangement,
    Col,
    Dataflow,
    Get,
    Import,
    Join,
    Map,
    PlanError,
    Project,
    Reduce,
    call,
)

R = Get("r", 2)
S = Get("s", 2)


def test_output_times_are_input_times_and_steps_cover_many_times() -> None:
    df = Dataflow({"out": Project(R, (1,))})
    out = df.step({"r": ins(0, (1, "a")) + ins(3, (2, "b")) + dels(5, (1, "a"))}, 6)
    assert out["out"] == [(("a",), 0, 1), (("b",), 3, 1), (("a",), 5, -1)]
    assert df.frontier == 6


def test_many_times_in_one_step_in_any_order() -> None:
    """A step holding many times (a runner catching up) gives the same outputs whether its
    updates come sorted by time (split by bisection) or not, before the as-of or after."""
    rng = random.Random(3)
    ups = [((rng.randrange(5), rng.randrange(3)), rng.randrange(0, 12), 1) for _ in range(200)]
    ups += [(r, t + rng.randrange(0, 3), -1) for r, t, _ in ups[:60]]
    plan = Reduce(R, (Col(0),), (Agg("count"), Agg("sum", Col(1))))
    results = []
    for order in ("sorted", "shuffled"):
        batch = sorted(ups, key=lambda u: u[1]) if order == "sorted" else list(ups)
        if order == "shuffled":
            rng.shuffle(batch)
        x = Harness(Dataflow({"n": plan, "rows": R}, as_of=5))
        first = x.step(15, r=batch)
        assert min(t for _r, t, _d in first["rows"]) == 5  # earlier times advanced to as-of
        results.append(({k: sorted(v, key=repr) for k, v in first.items()}, dict(x.acc["n"])))
    assert results[0] == results[1]
    want: dict[int, list[int]] = {}
    for (a, b), _t, d in ups:
        g = want.setdefault(a, [0, 0])
        g[0] += d
        g[1] += b * d
    assert results[0][1] == {(a, n, s): 1 for a, (n, s) in want.items() if n > 0}


def test_updates_beyond_the_frontier_wait() -> None:
    x = Harness(Dataflow({"out": R}))
    x.step(2, r=ins(1, (1, 1)) + ins(7, (2, 2)))
    assert x.rows("out") == bag((1, 1))
    x.step(7)
    assert x.rows("out") == bag((1, 1))
    x.step(8)
    assert x.rows("out") == bag((1, 1), (2, 2))
    assert x.last["out"] == [((2, 2), 7, 1)]


def test_closed_times_are_rejected_atomically() -> None:
    df = Dataflow({"out": Join(R, S, (0,), (0,))})
    df.step({"r": ins(0, (1, 1))}, 5)
    with pytest.raises(ValueError):
        df.step({"s": ins(5, (1, 2)), "r": ins(4, (1, 3))}, 6)
    # Nothing of the rejected step was taken.
    assert df.step({}, 6)["out"] == []
    with pytest.raises(ValueError):
        df.step({}, 3)
    with pytest.raises(KeyError):
        df.step({"nope": ins(7, (1,))}, 8)


def test_as_of_hydration() -> None:
    # A snapshot at T=100 whose updates carry older times (and a retraction) is advanced to T.
    snapshot = ins(10, (1, "a"), (2, "b")) + dels(50, (2, "b")) + ins(100, (3, "c"))
    red = Reduce(R, (), (Agg("count"),))
    x = Harness(Dataflow({"rows": R, "n": red}, as_of=100))
    out = x.step(101, r=snapshot)
    assert {t for _r, t, _d in out["rows"]} == {100}
    assert out["n"] == [((2,), 100, 1)]
    assert x.rows("rows") == bag((1, "a"), (3, "c"))
    x.step(102, r=ins(101, (4, "d")))
    assert x.rows("n") == bag((3,))
    with pytest.raises(ValueError):
        x.step(103, r=ins(50, (5, "e")))  # once running, old times are errors


def test_nothing_happens_before_as_of() -> None:
    x = Harness(Dataflow({"n": Reduce(R, (), (Agg("count"),))}, as_of=10))
    assert x.step(5, r=ins(3, (1, 1))) == {"n": []}
    x.step(11)
    assert x.last["n"] == [((1,), 10, 1)]


def test_zero_diffs_are_harmless() -> None:
    x = Harness(Dataflow({"j": Join(R, S, (0,), (0,)), "n": Reduce(R, (), (Agg("count"),))}))
    x.step(1, r=[((1, 1), 0, 0)], s=[((1, 2), 0, 1)])
    assert x.rows("j") == bag()
    assert x.rows("n") == bag((0,))


def test_export_and_import_an_arrangement_in_lockstep() -> None:
    # The index: s arranged by column 0, maintained by one dataflow, used by two others.
    owner = Dataflow({}, exports={"s_by_a": ArrangeBy(S, (0,))})
    arr = owner.arrangement("s_by_a")
    owner.step({"s": ins(0, (1, "eu"), (2, "us"))}, 1)
    assert arr.upper == 1

    imp = Import("s_by_a", 2)
    q1 = Join(R, imp, (0,), (0,))
    q2 = Reduce(Join(R, imp, (0,), (0,)), (Col(3),), (Agg("count"),))
    x = Harness(Dataflow({"j": q1, "g": q2}, imports={"s_by_a": arr}))
    y = Harness(Dataflow({"s": Project(imp, (1,))}, imports={"s_by_a": arr}))
    # Only r is arranged here; the import is used as is by the (shared) join.
    assert [n.label for n in x.df.nodes].count("arrange") == 1
    x.step(1, r=ins(0, (1, 10), (2, 20), (2, 21)))
    y.step(1)
    assert x.rows("j") == bag((1, 10, 1, "eu"), (2, 20, 2, "us"), (2, 21, 2, "us"))
    assert x.rows("g") == bag(("eu", 1), ("us", 2))
    assert y.rows("s") == bag(("eu",), ("us",))

    for t in range(1, 4):
        owner.step({"s": dels(t, (2, "us" if t == 1 else "x")) + ins(t, (2, "x"))}, t + 1)
        x.step(t + 1, r=ins(t, (1, t)))
        y.step(t + 1)
    assert x.rows("g") == bag(("eu", 4), ("x", 2))
    assert y.rows("s") == bag(("eu",), ("x",))
    # Arrangement state is shared: only the owner holds it.
    assert len(arr) == 2


def test_importer_cannot_pass_the_owner_and_can_lag_it() -> None:
    owner = Dataflow({}, exports={"idx": ArrangeBy(S, (0,))})
    arr = owner.arrangement("idx")
    owner.step({"s": ins(0, (1, "a"))}, 1)
    x = Harness(Dataflow({"j": Join(R, Import("idx", 2), (0,), (0,))}, imports={"idx": arr}))
    # The importer asks for frontier 10 but the index is only complete to 1.
    x.step(10, r=ins(0, (1, 0)) + ins(5, (1, 5)))
    assert x.df.frontier == 1
    assert x.rows("j") == bag((1, 0, 1, "a"))
    # The owner runs ahead several times; the importer then catches up in one step and
    # must see the index as of each of its own times.
    owner.step({"s": ins(3, (1, "b"))}, 4)
    owner.step({"s": dels(6, (1, "a"))}, 7)
    assert arr.stats()["log_entries"] == 2  # kept for the lagging reader
    x.step(10)
    assert x.df.frontier == 7
    # r(1,0) at 0 saw a; b arrived at 3; r(1,5) at 5 sees a and b; a left at 6.
    assert x.rows("j") == bag((1, 0, 1, "b"), (1, 5, 1, "b"))
    times = sorted({t for _r, t, _d in x.last["j"]})
    assert times == [3, 5, 6]
    assert arr.stats()["log_entries"] == 0  # compacted once the reader moved on


def test_import_hydrates_from_an_existing_arrangement() -> None:
    owner = Dataflow({}, exports={"idx": ArrangeBy(S, (0,))})
    arr = owner.arrangement("idx")
    owner.step({"s": ins(0, (1, "a"), (2, "b"))}, 3)
    owner.step({"s": ins(3, (3, "c"))}, 4)
    # A new dataflow at as_of=3 sees the index's contents as of 3 as its first delta.
    x = Harness(
        Dataflow(
            {"n": Reduce(Import("idx", 2), (), (Agg("count"),))}, imports={"idx": arr}, as_of=3
        )
    )
    x.step(4)
    assert x.last["n"] == [((3,), 3, 1)]
    with pytest.raises(PlanError):
        Dataflow({"x": Import("idx", 2)}, imports={"idx": arr}, as_of=0)  # before since


def test_import_with_a_different_key_is_rearranged() -> None:
    owner = Dataflow({}, exports={"idx": ArrangeBy(S, (0,))})
    arr = owner.arrangement("idx")
    owner.step({"s": ins(0, (1, "a"), (2, "b"))}, 1)
    x = Harness(Dataflow({"j": Join(R, Import("idx", 2), (1,), (1,))}, imports={"idx": arr}))
    x.step(1, r=ins(0, (9, "a")))
    assert x.rows("j") == bag((9, "a", 1, "a"))


def test_standalone_arrangement_api() -> None:
    arr = Arrangement((0,), 2, "t")
    hold = arr.reader(0)
    arr.apply(0, ins(0, (1, "a"), (1, "b"), (None, "n")))
    arr.advance_upper(1)
    arr.apply(1, dels(1, (1, "a")))
    arr.advance_upper(2)
    assert arr.lookup(1)(1) == {(1, "b"): 1}
    assert arr.lookup(0)(1) == {(1, "a"): 1, (1, "b"): 1}
    assert sorted(arr.snapshot(0), key=repr) == sorted(
        [((1, "a"), 1), ((1, "b"), 1), ((None, "n"), 1)], key=repr
    )
    hold.advance(2)
    assert arr.since == 1
    hold.release()
    with pytest.raises(PlanError):
        arr.apply(0, ins(0, (2, "c")))


def test_explain_and_state_sizes() -> None:
    df = Dataflow({"o": Reduce(Join(R, S, (0,), (0,)), (Col(1),), (Agg("count"),))})
    df.step({"r": ins(0, (1, 1)), "s": ins(0, (1, 2))}, 1)
    assert "join+reduce" in df.explain()
    assert sum(df.state_sizes().values()) >= 3


def test_error_collection_retracts_with_its_input() -> None:
    x = Harness(Dataflow({"o": Project(Map(R, (call("/", Col(0), Col(1)),)), (2,))}))
    x.step(1, r=ins(0, (1, 0), (4, 2)))
    assert x.rows("o") == bag((2,))
    assert x.rows(ERRORS) == bag(("22012", "division by zero"))
    x.step(2, r=dels(1, (1, 0)))
    assert x.rows(ERRORS) == bag()
