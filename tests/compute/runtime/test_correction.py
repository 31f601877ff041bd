"""The correction buffer: consolidation, advancing, retiring, and its accumulations."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from twinstream.compute.runtime import Correction
from twinstream.persist.types import Row, Update


def test_consolidates_and_drops_zeros() -> None:
    c = Correction()
    c.add([(("a",), 1, 1), (("b",), 1, 2), (("a",), 2, 1)])
    c.add([(("a",), 1, 1), (("b",), 1, 2)], negate=True)
    assert c.contents() == {(("a",), 2): 1}
    assert len(c) == 1
    c.add([(("a",), 2, -1)])
    assert len(c) == 0 and c.times() == []


def test_advance_merges_times_below_lower() -> None:
    c = Correction()
    c.add([(("a",), 1, 1), (("a",), 2, -1), (("b",), 3, 1), (("c",), 5, 1)])
    c.advance(4)
    # +a at 1 and -a at 2 cancel once both are at 4; b moves to 4; c stays.
    assert c.contents() == {(("b",), 4): 1, (("c",), 5): 1}
    c.add([(("z",), 0, 1)])  # below lower: placed at lower
    assert c.contents()[(("z",), 4)] == 1
    c.advance(2)  # never goes back
    assert c.lower == 4


def test_updates_before_and_retire() -> None:
    c = Correction()
    c.add([(("a",), 3, 1), (("b",), 1, 1), (("c",), 7, 2)])
    assert c.updates_before(5) == [(("b",), 1, 1), (("a",), 3, 1)]
    assert c.retire_before(5) == 2
    assert c.contents() == {(("c",), 7): 2}
    assert len(c) == 1


updates = st.lists(
    st.tuples(st.tuples(st.sampled_from("abcd")), st.integers(0, 12), st.integers(-2, 2)),
    max_size=12,
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), updates),
        st.tuples(st.just("sub"), updates),
        st.tuples(st.just("advance"), st.integers(0, 14)),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_accumulations_at_or_after_lower_are_exact(script: list[tuple[str, object]]) -> None:
    """At every time >= lower the buffer accumulates to sum(added) - sum(subtracted)."""
    c = Correction()
    log: list[Update] = []
    for op, arg in script:
        if op == "advance":
            assert isinstance(arg, int)
            c.advance(arg)
        else:
            assert isinstance(arg, list)
            c.add(arg, negate=op == "sub")
            log.extend((r, t, -d if op == "sub" else d) for r, t, d in arg)
        assert len(c) == len(c.contents())
        assert all(t >= c.lower and d != 0 for (_r, t), d in c.contents().items())
        for at in range(c.lower, 16):
            want: Counter[Row] = Counter()
            for r, t, d in log:
                if t <= at:
                    want[r] += d
            got: Counter[Row] = Counter()
            for (r, t), d in c.contents().items():
                if t <= at:
                    got[r] += d
            assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
