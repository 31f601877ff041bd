"""The vocabulary of persist: rows, timestamps, diffs and updates."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeAlias

#: A row is a tuple of scalars (int, str, bytes, float, bool, None, Decimal, dates, UUID...).
Row: TypeAlias = tuple[Hashable, ...]
#: Timestamps are milliseconds since the Unix epoch (or any totally ordered non-negative int).
Timestamp: TypeAlias = int
#: A diff says how many copies of the row are added (> 0) or retracted (< 0).
Diff: TypeAlias = int
#: One change to a collection.
Update: TypeAlias = tuple[Row, Timestamp, Diff]


def consolidate(updates: list[Update]) -> list[Update]:
    """Sum diffs of equal (row, time) and drop zeros; output sorted by time for determinism."""
    acc: dict[tuple[Row, Timestamp], Diff] = {}
    for row, t, d in updates:
        key = (row, t)
        acc[key] = acc.get(key, 0) + d
    out = [(row, t, d) for (row, t), d in acc.items() if d != 0]
    out.sort(key=lambda u: u[1])
    return out


def consolidate_rows(updates: list[Update]) -> list[tuple[Row, Diff]]:
    """Sum diffs per row regardless of time and drop zeros (a snapshot's contents)."""
    acc: dict[Row, Diff] = {}
    for row, _t, d in updates:
        acc[row] = acc.get(row, 0) + d
    return [(row, d) for row, d in acc.items() if d != 0]
