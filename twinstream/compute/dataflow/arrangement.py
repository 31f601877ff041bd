"""Arrangements: a collection indexed by key, shareable between dataflows.

State is `key -> {row: count}` at the newest applied time. A single-column key is the bare
value; a multi-column key is a tuple; the empty key (cross joins) is `()`.

Sharing. One owner applies updates (`apply(time, batch)`, times non-decreasing) and announces
progress (`advance_upper(upper)`: every delta at a time < upper is applied). Readers (other
dataflows importing the arrangement) register a hold with `reader(as_of)`; while some reader
might still need a time, the deltas at that time are kept in a log, so a reader that lags the
owner can (a) replay the deltas it has not consumed and (b) look keys up as of its own time
(current state minus later deltas). Deltas no reader needs are folded away: `since` is the
earliest time the arrangement can still be read at.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeAlias

from twinstream.compute.dataflow.expr import PlanError, build
from twinstream.persist.types import Row, Update

Key: TypeAlias = Hashable
#: A batch is a list of updates `(row, time, diff)`, inside operators all at one time.
Batch: TypeAlias = list[Update]
Bucket: TypeAlias = dict[Row, int]
Lookup: TypeAlias = Callable[[Key], "Bucket | None"]


def key_source(key_cols: tuple[int, ...], var: str = "r") -> str:
    """Python source of the key of row `var`."""
    if len(key_cols) == 1:
        return f"{var}[{key_cols[0]}]"
    if not key_cols:
        return "()"
    return "(" + ", ".join(f"{var}[{c}]" for c in key_cols) + ")"


def null_key_test(key_cols: tuple[int, ...], var: str = "k") -> str | None:
    """Source testing whether key `var` contains a NULL (such keys never join), or None."""
    if not key_cols:
        return None
    if len(key_cols) == 1:
        return f"{var} is None"
    return f"None in {var}"


def apply_lines(row: str, key: str, diff: str, state: str, get: str) -> list[str]:
    """Source lines (indent 0) adding `diff` copies of `row` under `key` to `state`
    (`key -> {row: count}`, empty buckets removed; `get` is `state.get`). Uses the names
    `_m`, `_c`."""
    return [
        f"_m = {get}({key})",
        "if _m is None:",
        f"    if {diff}:",
        f"        {state}[{key}] = {{{row}: {diff}}}",
        "else:",
        f"    _c = _m.get({row}, 0) + {diff}",
        "    if _c:",
        f"        _m[{row}] = _c",
        "    else:",
        f"        _m.pop({row}, None)",
        "        if not _m:",
        f"            del {state}[{key}]",
    ]


def _compile_apply(
    key_cols: tuple[int, ...],
) -> Callable[[Iterable[Update], dict[Key, Bucket]], None]:
    body = "\n".join("        " + ln for ln in apply_lines("r", "k", "d", "state", "get"))
    src = f"""
def _apply(batch, state):
    get = state.get
    for r, _t, d in batch:
        k = {key_source(key_cols)}
{body}
"""
    fn: Callable[[Iterable[Update], dict[Key, Bucket]], None] = build(src, {}, "_apply")
    return fn


def _compile_by_key(key_cols: tuple[int, ...]) -> Callable[[Iterable[Update]], dict[Key, Bucket]]:
    src = f"""
def _by_key(batch):
    out = {{}}
    get = out.get
    for r, _t, d in batch:
        k = {key_source(key_cols)}
        m = get(k)
        if m is None:
            out[k] = {{r: d}}
        else:
            m[r] = m.get(r, 0) + d
    return out
"""
    fn: Callable[[Iterable[Update]], dict[Key, Bucket]] = build(src, {}, "_by_key")
    return fn


def subtract(bucket: Bucket | None, delta: Bucket) -> Bucket | None:
    """`bucket - delta` as a new bucket (None if empty)."""
    out = dict(bucket) if bucket else {}
    for r, d in delta.items():
        c = out.get(r, 0) - d
        if c:
            out[r] = c
        else:
            out.pop(r, None)
    return out or None


class _LogEntry:
    __slots__ = ("batch", "by_key", "time")

    def __init__(self, time: int, batch: Batch) -> None:
        self.time = time
        self.batch = batch
        self.by_key: dict[Key, Bucket] | None = None


class ReadHold:
    """A reader's claim on an arrangement: deltas at times >= `position` are kept for it."""

    def __init__(self, arrangement: Arrangement, token: int, position: int) -> None:
        self.arrangement = arrangement
        self.token = token
        self.position = position

    def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self.arrangement._set_hold(self.token, position)

    def release(self) -> None:
        self.arrangement._drop_hold(self.token)


class Arrangement:
    """An indexed collection: `state[key] = {row: count}`; see the module docstring."""

    def __init__(self, key_cols: tuple[int, ...], arity: int | None = None, name: str = "") -> None:
        self.key_cols = tuple(key_cols)
        self.arity = arity
        self.name = name
        self.state: dict[Key, Bucket] = {}
        self.upper = 0
        self.since = 0
        self._last_time = -1
        self._log: list[_LogEntry] = []
        self._holds: dict[int, int] = {}
        self._next_token = 0
        self._apply_fn = _compile_apply(self.key_cols)
        self.by_key = _compile_by_key(self.key_cols)
        self._key_fn: Callable[[Row], Key] = build(
            f"def _key(r):\n    return {key_source(self.key_cols)}\n", {}, "_key"
        )

    # ---------------------------------------------------------------- owner side

    def apply(self, time: int, batch: Batch) -> None:
        """Apply the updates at `time` (the owner's call; times must not go backwards; every
        update in `batch` must be at `time`)."""
        if time < self._last_time or time < self.upper:
            last = max(self._last_time, self.upper)
            raise PlanError(f"arrangement {self.name!r}: apply at {time} after {last}")
        if not batch:
            return
        self._last_time = time
        self._apply_fn(batch, self.state)
        if self._holds and min(self._holds.values()) <= time:
            if self._log and self._log[-1].time == time:
                self._log[-1].batch = self._log[-1].batch + batch
                self._log[-1].by_key = None
            else:
                self._log.append(_LogEntry(time, batch))
        else:
            self.since = max(self.since, time)

    def mark_applied(self, time: int) -> None:
        """Bookkeeping for an owner that changed `state` itself at `time` (a fused operator
        maintaining a private arrangement: no readers, so nothing is logged)."""
        if time < self._last_time or time < self.upper or self._holds:
            raise PlanError(f"arrangement {self.name!r}: cannot mark {time} applied")
        self._last_time = time
        self.since = max(self.since, time)

    def advance_upper(self, upper: int) -> None:
        if upper < self.upper:
            raise PlanError(f"arrangement {self.name!r}: upper {upper} < {self.upper}")
        self.upper = upper

    def key_of(self, row: Row) -> Key:
        return self._key_fn(row)

    # ---------------------------------------------------------------- reader side

    def reader(self, as_of: int) -> ReadHold:
        """Register a reader that will read times >= `as_of` (must be >= `since`)."""
        if as_of < self.since:
            raise PlanError(f"arrangement {self.name!r}: as_of {as_of} < since {self.since}")
        token = self._next_token
        self._next_token += 1
        self._holds[token] = as_of
        return ReadHold(self, token, as_of)

    def _set_hold(self, token: int, position: int) -> None:
        if token in self._holds:
            self._holds[token] = position
            self._compact()

    def _drop_hold(self, token: int) -> None:
        self._holds.pop(token, None)
        self._compact()

    def _compact(self) -> None:
        low = min(self._holds.values()) if self._holds else None
        keep = [e for e in self._log if low is not None and e.time >= low]
        for e in self._log:
            if low is None or e.time < low:
                self.since = max(self.since, e.time)
        self._log = keep

    def deltas(self, lo: int, hi: int) -> list[tuple[int, Batch]]:
        """Logged updates at times in [lo, hi) (needs a hold at or below lo)."""
        return [(e.time, e.batch) for e in self._log if lo <= e.time < hi]

    def lookup(self, time: int) -> Lookup:
        """A function key -> {row: count} (or None) giving the contents as of `time`."""
        later = [e for e in self._log if e.time > time]
        if not later:
            return self.state.get
        for e in later:
            if e.by_key is None:
                e.by_key = self.by_key(e.batch)
        maps = [e.by_key for e in later if e.by_key is not None]
        get = self.state.get

        def lookup_at(k: Key) -> Bucket | None:
            m = get(k)
            for bk in maps:
                dk = bk.get(k)
                if dk is not None:
                    m = subtract(m, dk)
            return m

        return lookup_at

    def snapshot(self, time: int | None = None) -> list[tuple[Row, int]]:
        """All (row, count) as of `time` (default: the newest state)."""
        if time is not None and time < self.since:
            raise PlanError(f"arrangement {self.name!r}: snapshot at {time} < since {self.since}")
        later = [e for e in self._log if time is not None and e.time > time]
        if not later:
            return [(r, c) for m in self.state.values() for r, c in m.items()]
        acc: dict[Row, int] = {r: c for m in self.state.values() for r, c in m.items()}
        for e in later:
            for r, _t, d in e.batch:
                c = acc.get(r, 0) - d
                if c:
                    acc[r] = c
                else:
                    acc.pop(r, None)
        return list(acc.items())

    def __len__(self) -> int:
        return sum(len(m) for m in self.state.values())

    def stats(self) -> dict[str, Any]:
        return {
            "keys": len(self.state),
            "rows": len(self),
            "log_entries": len(self._log),
            "upper": self.upper,
            "since": self.since,
        }
