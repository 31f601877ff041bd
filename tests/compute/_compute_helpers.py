"""Test helpers: drive a dataflow and keep every output's accumulated contents."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from twinstream.compute.dataflow import ERRORS, Dataflow
from twinstream.persist.types import Row, Update


class Harness:
    """Steps a dataflow and accumulates its outputs (and errors) as multisets."""

    def __init__(self, df: Dataflow) -> None:
        self.df = df
        self.acc: dict[str, Counter[Row]] = {name: Counter() for name in df.outputs}
        self.acc[ERRORS] = Counter()
        self.last: dict[str, list[Update]] = {}

    def step(self, frontier: int, **inputs: Sequence[Update]) -> dict[str, list[Update]]:
        return self.step_map(inputs, frontier)

    def step_map(
        self, inputs: Mapping[str, Sequence[Update]], frontier: int
    ) -> dict[str, list[Update]]:
        before = self.df.frontier
        out = self.df.step(inputs, frontier)
        for name, ups in out.items():
            for row, t, d in ups:
                assert before <= t < frontier or (t == self.df.as_of), (name, row, t)
                self.acc[name][row] += d
        for c in self.acc.values():
            for row in [r for r, n in c.items() if n == 0]:
                del c[row]
        self.last = out
        return out

    def rows(self, name: str) -> Counter[Row]:
        got = self.acc[name]
        assert all(n > 0 for n in got.values()), f"negative multiplicity in {name}: {got}"
        return Counter(dict(got))

    def set(self, name: str) -> set[Row]:
        return set(self.rows(name))


def ins(t: int, *rows: Row) -> list[Update]:
    return [(r, t, 1) for r in rows]


def dels(t: int, *rows: Row) -> list[Update]:
    return [(r, t, -1) for r in rows]


def bag(*rows: Row) -> Counter[Row]:
    return Counter(rows)


__all__ = ["Harness", "bag", "dels", "ins"]
