"""The recorded history: operations with invoke/complete times, micro-operations and outcomes.

An operation is what one client did in one go: a single statement outside a transaction, or
an explicit transaction. It is made of micro-operations (Elle's term) on three kinds of
objects, each in its own key space:

- registers: `("w", k, v)` writes `v`; `("r", k, rows)` read the values found (one expected);
- counters: `("inc", k, None)` adds one; `("rc", k, rows)` read the values found;
- lists: `("append", k, v)` appends `v`; `("rl", k, values)` read the list in order.

Written values are unique per object kind, so a value read names the write that made it. The
outcome says what the client learned: `ok` (done), `fail` (definitely not done) or `info`
(unknown: the connection was lost mid-statement or mid-COMMIT, or the client gave up).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: Micro-operation function names, grouped by object kind.
REGISTER_WRITE, REGISTER_READ = "w", "r"
COUNTER_INC, COUNTER_READ = "inc", "rc"
LIST_APPEND, LIST_READ = "append", "rl"
WRITES = frozenset({REGISTER_WRITE, COUNTER_INC, LIST_APPEND})
READS = frozenset({REGISTER_READ, COUNTER_READ, LIST_READ})

Value = int | None | tuple[int, ...]


class Outcome(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True)
class Mop:
    """One micro-operation: `f` on key `k`; `v` is the written value or the read result."""

    f: str
    k: int
    v: Value = None

    def __post_init__(self) -> None:
        assert self.f in WRITES or self.f in READS, f"unknown micro-operation {self.f!r}"


@dataclass(frozen=True)
class Op:
    """A completed operation. `complete` is when the client learned the outcome."""

    index: int
    process: str
    invoke: float
    complete: float
    outcome: Outcome
    mops: tuple[Mop, ...]
    txn: bool = False
    error: str = ""

    def __post_init__(self) -> None:
        assert self.complete >= self.invoke, "an operation completes after it is invoked"

    @property
    def is_write(self) -> bool:
        return any(m.f in WRITES for m in self.mops)

    def describe(self) -> str:
        body = " ".join(f"{m.f}({m.k},{m.v})" for m in self.mops)
        txn = "txn " if self.txn else ""
        return (
            f"#{self.index} {self.process} {txn}[{body}] {self.outcome.value} "
            f"@{self.invoke:.3f}..{self.complete:.3f}"
        )


@dataclass
class History:
    """Operations in completion order; `record` assigns indexes."""

    ops: list[Op] = field(default_factory=list)

    def record(
        self,
        process: str,
        invoke: float,
        complete: float,
        outcome: Outcome,
        mops: tuple[Mop, ...],
        *,
        txn: bool = False,
        error: str = "",
    ) -> Op:
        op = Op(len(self.ops), process, invoke, complete, outcome, mops, txn, error)
        self.ops.append(op)
        return op

    def counts(self) -> dict[str, int]:
        out = {o.value: 0 for o in Outcome}
        for op in self.ops:
            out[op.outcome.value] += 1
        return out
