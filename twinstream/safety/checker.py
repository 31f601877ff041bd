"""Checks a recorded history for the anomalies an upgrade must never cause. Pure: no I/O.

The model is strict serializability: every operation takes effect at one instant between its
invoke and its complete (an `info` operation possibly later, or never; a `fail` one never).
Only anomalies that no such placement can explain are reported, so a report is never a false
alarm:

- lost-write: an acknowledged write is missing from the final read (reads by `FINAL`);
- duplicate-write: a value appears twice, a register/counter has several rows, or a counter
  counts more increments than were attempted;
- stale-read: a read misses a write that completed before the read was invoked (or is older
  than a read that completed before it was invoked) — real-time order across the cutover;
- failed-write-visible: a write whose client was told it failed (definitely) is read;
- garbage-read: a value that no operation wrote;
- list-order: two reads of one list where neither is a prefix of the other;
- fractured-read: one read transaction shows some but not all of a transaction's appends.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from twinstream.safety.history import (
    COUNTER_INC,
    COUNTER_READ,
    LIST_APPEND,
    LIST_READ,
    REGISTER_READ,
    REGISTER_WRITE,
    Mop,
    Op,
    Outcome,
)

#: The process name of the reads taken after the workload stopped: their misses are lost writes.
FINAL = "final"
#: Registers start with this value (the workload seeds one row per key).
REGISTER_INITIAL = 0
#: Anomaly descriptions kept per kind (the counts are always complete).
MAX_EXAMPLES = 20


class AnomalyKind(enum.StrEnum):
    LOST_WRITE = "lost-write"
    DUPLICATE_WRITE = "duplicate-write"
    STALE_READ = "stale-read"
    FAILED_WRITE_VISIBLE = "failed-write-visible"
    GARBAGE_READ = "garbage-read"
    LIST_ORDER = "list-order"
    FRACTURED_READ = "fractured-read"


@dataclass(frozen=True)
class Anomaly:
    kind: AnomalyKind
    key: int
    detail: str


@dataclass
class CheckResult:
    anomalies: list[Anomaly] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def add(self, kind: AnomalyKind, key: int, detail: str) -> None:
        self.counts[kind.value] = self.counts.get(kind.value, 0) + 1
        if self.counts[kind.value] <= MAX_EXAMPLES:
            self.anomalies.append(Anomaly(kind, key, detail))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no anomalies"
        return ", ".join(f"{k}={n}" for k, n in sorted(self.counts.items()))


def _done_by(op: Op) -> float:
    """The latest instant at which `op` can have taken effect (never, for a failed one)."""
    return op.complete if op.outcome is Outcome.OK else math.inf


def _reads(ops: Iterable[Op], f: str) -> list[tuple[Op, Mop]]:
    return [(op, m) for op in ops if op.outcome is Outcome.OK for m in op.mops if m.f == f]


def _writes(ops: Iterable[Op], f: str) -> list[tuple[Op, Mop]]:
    return [(op, m) for op in ops for m in op.mops if m.f == f]


def _miss_kind(read: Op) -> AnomalyKind:
    return AnomalyKind.LOST_WRITE if read.process == FINAL else AnomalyKind.STALE_READ


def check(ops: list[Op]) -> CheckResult:
    """All checks over one history (workload operations plus the `FINAL` reads)."""
    result = CheckResult()
    _check_registers(ops, result)
    _check_counters(ops, result)
    _check_lists(ops, result)
    return result


def _regressions(seen: list[tuple[Op, int]]) -> Iterable[tuple[Op, int, Op, int]]:
    """Reads that saw less than a read that completed before they were invoked:
    (later read, its size, earlier read, its size). O(n log n)."""
    by_complete = sorted(seen, key=lambda rn: rn[0].complete)
    completes = [r.complete for r, _n in by_complete]
    best: list[tuple[Op, int]] = []
    for r, n in by_complete:
        best.append((r, n) if not best or n > best[-1][1] else best[-1])
    for r2, n2 in seen:
        i = bisect.bisect_left(completes, r2.invoke)
        if i > 0 and best[i - 1][1] > n2:
            r1, n1 = best[i - 1]
            yield r2, n2, r1, n1


# -- registers --------------------------------------------------------------------------------


def _check_registers(ops: list[Op], result: CheckResult) -> None:
    writer: dict[tuple[int, int], Op] = {}
    by_key: dict[int, list[Op]] = defaultdict(list)
    for op, m in _writes(ops, REGISTER_WRITE):
        assert isinstance(m.v, int), "register writes carry an int"
        assert (m.k, m.v) not in writer, f"register value {m.v} written twice to key {m.k}"
        writer[(m.k, m.v)] = op
        if op.outcome is Outcome.OK:
            by_key[m.k].append(op)
    for read, m in _reads(ops, REGISTER_READ):
        assert isinstance(m.v, tuple), "register reads carry the rows found"
        if len(m.v) != 1:
            result.add(
                AnomalyKind.DUPLICATE_WRITE,
                m.k,
                f"register read found {len(m.v)} rows {m.v}: {read.describe()}",
            )
            continue
        value = m.v[0]
        source: Op | None = None
        if value != REGISTER_INITIAL:
            source = writer.get((m.k, value))
            if source is None:
                result.add(AnomalyKind.GARBAGE_READ, m.k, f"value {value}: {read.describe()}")
                continue
            if source.outcome is Outcome.FAIL:
                result.add(
                    AnomalyKind.FAILED_WRITE_VISIBLE,
                    m.k,
                    f"{read.describe()} saw {source.describe()}",
                )
                continue
        # Stale: some acknowledged write W completed before the read began, and the value read
        # was definitely overwritten by W (its writer finished before W started).
        source_done = -math.inf if source is None else _done_by(source)
        for w in by_key[m.k]:
            if w is source:
                continue
            if w.complete < read.invoke and source_done < w.invoke:
                result.add(
                    _miss_kind(read),
                    m.k,
                    f"{read.describe()} returned {value} but {w.describe()} had completed",
                )
                break


# -- counters ---------------------------------------------------------------------------------


def _check_counters(ops: list[Op], result: CheckResult) -> None:
    incs: dict[int, list[Op]] = defaultdict(list)
    for op, m in _writes(ops, COUNTER_INC):
        incs[m.k].append(op)
    reads = _reads(ops, COUNTER_READ)
    values: dict[int, list[tuple[Op, int]]] = defaultdict(list)
    for read, m in reads:
        assert isinstance(m.v, tuple), "counter reads carry the rows found"
        if len(m.v) != 1:
            result.add(
                AnomalyKind.DUPLICATE_WRITE,
                m.k,
                f"counter read found {len(m.v)} rows {m.v}: {read.describe()}",
            )
            continue
        n = m.v[0]
        assert isinstance(n, int)
        values[m.k].append((read, n))
        done_before = sum(
            1 for w in incs[m.k] if w.outcome is Outcome.OK and w.complete < read.invoke
        )
        possible = sum(
            1 for w in incs[m.k] if w.outcome is not Outcome.FAIL and w.invoke < read.complete
        )
        attempted = sum(1 for w in incs[m.k] if w.invoke < read.complete)
        if n < done_before:
            result.add(
                _miss_kind(read),
                m.k,
                f"{read.describe()} counted {n} but {done_before} increments had completed",
            )
        elif n > possible:
            kind = (
                AnomalyKind.FAILED_WRITE_VISIBLE if n <= attempted else AnomalyKind.DUPLICATE_WRITE
            )
            result.add(
                kind,
                m.k,
                f"{read.describe()} counted {n} but at most {possible} increments "
                f"could have happened ({attempted} attempted)",
            )
    for key, seen in values.items():
        for r2, n2, r1, n1 in _regressions(seen):
            result.add(
                _miss_kind(r2),
                key,
                f"{r2.describe()} counted {n2} after {r1.describe()} counted {n1}",
            )
            break


# -- lists ------------------------------------------------------------------------------------


def _check_lists(ops: list[Op], result: CheckResult) -> None:
    writer: dict[int, tuple[Op, int]] = {}
    for op, m in _writes(ops, LIST_APPEND):
        assert isinstance(m.v, int), "appends carry an int"
        assert m.v not in writer, f"list value {m.v} appended twice"
        writer[m.v] = (op, m.k)
    reads = _reads(ops, LIST_READ)
    by_key: dict[int, list[tuple[Op, tuple[int, ...]]]] = defaultdict(list)
    for read, m in reads:
        assert isinstance(m.v, tuple), "list reads carry the list"
        values = tuple(int(v) for v in m.v if v is not None)
        by_key[m.k].append((read, values))
        _check_list_read(read, m.k, values, writer, result)
    acked: dict[int, list[tuple[Op, int]]] = defaultdict(list)
    for value, (op, key) in writer.items():
        if op.outcome is Outcome.OK:
            acked[key].append((op, value))
    for key, seen in by_key.items():
        for read, values in seen:
            present = set(values)
            for w, value in acked[key]:
                if w.complete < read.invoke and value not in present:
                    result.add(
                        _miss_kind(read),
                        key,
                        f"{read.describe()} misses {value} of {w.describe()}",
                    )
                    break
        _check_prefixes(key, seen, result)
    _check_fractured(ops, writer, result)


def _check_list_read(
    read: Op,
    key: int,
    values: tuple[int, ...],
    writer: dict[int, tuple[Op, int]],
    result: CheckResult,
) -> None:
    if len(set(values)) != len(values):
        dup = sorted({v for v in values if values.count(v) > 1})
        result.add(AnomalyKind.DUPLICATE_WRITE, key, f"values {dup} twice: {read.describe()}")
    for v in values:
        source = writer.get(v)
        if source is None or source[1] != key:
            result.add(AnomalyKind.GARBAGE_READ, key, f"value {v}: {read.describe()}")
        elif source[0].outcome is Outcome.FAIL:
            result.add(
                AnomalyKind.FAILED_WRITE_VISIBLE,
                key,
                f"{read.describe()} saw {v} of {source[0].describe()}",
            )


def _check_prefixes(key: int, seen: list[tuple[Op, tuple[int, ...]]], result: CheckResult) -> None:
    ordered = sorted(seen, key=lambda rv: len(rv[1]))
    for (r1, l1), (r2, l2) in itertools.pairwise(ordered):
        if l2[: len(l1)] != l1:
            result.add(
                AnomalyKind.LIST_ORDER,
                key,
                f"{r1.describe()} is not a prefix of {r2.describe()}",
            )
            return
    sizes = [(read, len(values)) for read, values in seen]
    for r2, n2, r1, n1 in _regressions(sizes):
        result.add(
            _miss_kind(r2), key, f"{r2.describe()} has {n2} items after {r1.describe()} had {n1}"
        )
        return


def _check_fractured(ops: list[Op], writer: dict[int, tuple[Op, int]], result: CheckResult) -> None:
    """A read of several lists in one snapshot sees a transaction's appends all or none.
    Only a read transaction is one snapshot: reads outside one are separate statements."""
    for read in ops:
        if read.outcome is not Outcome.OK or not read.txn:
            continue
        lists = {m.k: m.v for m in read.mops if m.f == LIST_READ}
        if len(lists) < 2:
            continue
        present = {v for vs in lists.values() if isinstance(vs, tuple) for v in vs}
        txns = {writer[v][0].index: writer[v][0] for v in present if v in writer}
        for txn in txns.values():
            parts = [m for m in txn.mops if m.f == LIST_APPEND and m.k in lists]
            missing = [m for m in parts if m.v not in present]
            if missing and len(missing) < len(parts):
                result.add(
                    AnomalyKind.FRACTURED_READ,
                    missing[0].k,
                    f"{read.describe()} sees part of {txn.describe()}",
                )
