"""ORDER BY ... LIMIT n OFFSET m, per group or global.

Per group: `{row: count}` and a sorted list of `(sort key, row)` over the distinct rows. The
sort key orders by the ORDER BY columns (ASC/DESC, NULLS FIRST/LAST), then by the whole row, so
ties are broken deterministically (a full recompute with `ORDER BY <keys>, <all columns>` gives
the same answer). At the end of a time each touched group recomputes its first
`offset + limit` rows by walking the sorted list and emits the difference from what it emitted
before: O(offset + limit) per touched group, O(log n) per changed row.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Sequence
from typing import Any

from twinstream.compute.dataflow.arrangement import Batch
from twinstream.compute.dataflow.operators import Node, Tick
from twinstream.compute.dataflow.plan import SortKey
from twinstream.persist.types import Row


class Desc:
    """Reverses the order of a value (for DESC keys)."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: Desc) -> bool:
        return bool(other.v < self.v)

    def __gt__(self, other: Desc) -> bool:
        return bool(other.v > self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Desc) and bool(self.v == other.v)

    def __hash__(self) -> int:
        return hash(self.v)


def total_key(row: Row) -> tuple[tuple[bool, Any], ...]:
    """A key ordering rows totally (NULLs last), usable where values may be None."""
    return tuple((v is None, v) for v in row)


def sort_key_fn(order_by: Sequence[SortKey]) -> Any:
    specs = [(k.col, k.desc, k.desc if k.nulls_first is None else k.nulls_first) for k in order_by]

    def key(row: Row) -> tuple[Any, ...]:
        parts: list[Any] = []
        for c, desc, nulls_first in specs:
            v = row[c]
            # Position of NULLs: flag 0 sorts first. Non-NULLs get the other flag.
            if v is None:
                parts.append((0 if nulls_first else 2, None))
            else:
                parts.append((1, Desc(v) if desc else v))
        parts.append(total_key(row))
        return tuple(parts)

    return key


class SortedList:
    """A list kept sorted in chunks (insert/remove O(sqrt n)-ish, iteration in order)."""

    CHUNK = 512

    def __init__(self) -> None:
        self._chunks: list[list[Any]] = []
        self._maxes: list[Any] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, x: Any) -> None:
        self._len += 1
        if not self._chunks:
            self._chunks.append([x])
            self._maxes.append(x)
            return
        i = bisect_left(self._maxes, x)
        if i == len(self._chunks):
            i -= 1
            self._chunks[i].append(x)
            self._maxes[i] = x
        else:
            insort(self._chunks[i], x)
        chunk = self._chunks[i]
        if len(chunk) > 2 * self.CHUNK:
            half = len(chunk) // 2
            self._chunks[i : i + 1] = [chunk[:half], chunk[half:]]
            self._maxes[i : i + 1] = [chunk[half - 1], chunk[-1]]

    def remove(self, x: Any) -> None:
        i = bisect_left(self._maxes, x)
        if i == len(self._chunks):
            raise ValueError(f"{x!r} not in list")
        chunk = self._chunks[i]
        j = bisect_left(chunk, x)
        if j == len(chunk) or chunk[j] != x:
            raise ValueError(f"{x!r} not in list")
        del chunk[j]
        self._len -= 1
        if not chunk:
            del self._chunks[i]
            del self._maxes[i]
        elif j == len(chunk):
            self._maxes[i] = chunk[-1]

    def __iter__(self) -> Iterator[Any]:
        for chunk in self._chunks:
            yield from chunk

    def __contains__(self, x: Any) -> bool:
        i = bisect_left(self._maxes, x)
        if i == len(self._chunks):
            return False
        chunk = self._chunks[i]
        j = bisect_right(chunk, x)
        return j > 0 and chunk[j - 1] == x


class _Group:
    __slots__ = ("counts", "emitted", "sorted")

    def __init__(self) -> None:
        self.counts: dict[Row, int] = {}
        self.sorted = SortedList()
        self.emitted: dict[Row, int] = {}


class TopKNode(Node):
    label = "topk"
    consolidated = True

    def __init__(
        self,
        input: Node,
        group_key: Sequence[int],
        order_by: Sequence[SortKey],
        limit: int | None,
        offset: int,
    ) -> None:
        super().__init__([input], input.arity)
        self.group_key = tuple(group_key)
        self.limit = limit
        self.offset = offset
        self.key = sort_key_fn(order_by)
        self.groups: dict[Any, _Group] = {}

    def _group_of(self, row: Row) -> Any:
        gk = self.group_key
        if not gk:
            return ()
        if len(gk) == 1:
            return row[gk[0]]
        return tuple(row[c] for c in gk)

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        if self.limit == 0:
            return []
        touched: dict[Any, _Group] = {}
        groups = self.groups
        key = self.key
        for r, _t, d in ins[0]:
            gk = self._group_of(r)
            g = groups.get(gk)
            if g is None:
                g = groups[gk] = _Group()
            touched[gk] = g
            p = g.counts.get(r, 0)
            c = p + d
            if c:
                g.counts[r] = c
            else:
                g.counts.pop(r, None)
            if p <= 0 < c:
                g.sorted.add((key(r), r))
            elif c <= 0 < p:
                g.sorted.remove((key(r), r))
        t = tick.time
        out: Batch = []
        for gk, g in touched.items():
            new = self._top(g)
            old = g.emitted
            for r, c in new.items():
                delta = c - old.get(r, 0)
                if delta:
                    out.append((r, t, delta))
            for r, c in old.items():
                if r not in new:
                    out.append((r, t, -c))
            g.emitted = new
            if not g.counts:
                del groups[gk]
        return out

    def _top(self, g: _Group) -> dict[Row, int]:
        skip = self.offset
        left = self.limit
        out: dict[Row, int] = {}
        for _k, r in g.sorted:
            c = g.counts[r]
            if skip:
                used = min(skip, c)
                skip -= used
                c -= used
                if not c:
                    continue
            if left is not None:
                c = min(c, left)
                left -= c
            out[r] = c
            if left == 0:
                break
        return out

    def state_size(self) -> int:
        return sum(len(g.counts) for g in self.groups.values())
