"""The history checker: hand-built bad histories it must flag, good ones it must pass, and
generated histories of a linearizable in-memory store that must always pass."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstream.safety.checker import FINAL, AnomalyKind, check
from twinstream.safety.history import History, Mop, Outcome, Value

OK, FAIL, INFO = Outcome.OK, Outcome.FAIL, Outcome.INFO


def kinds(h: History) -> set[str]:
    return set(check(h.ops).counts)


def m(f: str, k: int, v: Value = None) -> Mop:
    return Mop(f, k, v)


# -- known-bad histories ----------------------------------------------------------------------


def test_lost_append_is_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, OK, (m("append", 0, 5),))
    h.record(FINAL, 10, 11, OK, (m("rl", 0, ()),))
    assert kinds(h) == {AnomalyKind.LOST_WRITE}


def test_lost_register_write_is_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, OK, (m("w", 0, 1),))
    h.record("c1", 2, 3, OK, (m("w", 0, 2),))
    h.record(FINAL, 10, 11, OK, (m("r", 0, (1,)),))
    assert kinds(h) == {AnomalyKind.LOST_WRITE}


def test_lost_increment_is_flagged() -> None:
    h = History()
    for i in range(3):
        h.record("c1", i, i + 0.5, OK, (m("inc", 0),))
    h.record(FINAL, 10, 11, OK, (m("rc", 0, (2,)),))
    assert kinds(h) == {AnomalyKind.LOST_WRITE}


def test_duplicates_are_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, OK, (m("append", 0, 1),))
    h.record("c2", 2, 3, OK, (m("rl", 0, (1, 1)),))
    assert kinds(h) == {AnomalyKind.DUPLICATE_WRITE}
    h = History()
    h.record("c1", 0, 1, OK, (m("w", 0, 3),))
    h.record("c2", 2, 3, OK, (m("r", 0, (3, 3)),))
    assert kinds(h) == {AnomalyKind.DUPLICATE_WRITE}
    h = History()
    h.record("c1", 0, 1, OK, (m("inc", 0),))
    h.record("c1", 1, 2, INFO, (m("inc", 0),))
    h.record(FINAL, 10, 11, OK, (m("rc", 0, (3,)),))
    assert kinds(h) == {AnomalyKind.DUPLICATE_WRITE}


def test_stale_register_read_across_a_cutover_is_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, OK, (m("w", 0, 1),))  # written on the old generation
    h.record("c1", 2, 3, OK, (m("w", 0, 2),))  # written on the new one
    h.record("c2", 4, 5, OK, (m("r", 0, (1,)),))  # read from the fenced old one: stale
    assert kinds(h) == {AnomalyKind.STALE_READ}


def test_stale_reads_of_initial_value_counter_and_list_are_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, OK, (m("w", 0, 1),))
    h.record("c2", 2, 3, OK, (m("r", 0, (0,)),))
    assert kinds(h) == {AnomalyKind.STALE_READ}
    h = History()
    h.record("c1", 0, 1, OK, (m("inc", 0),))
    h.record("c2", 2, 3, OK, (m("rc", 0, (0,)),))
    assert kinds(h) == {AnomalyKind.STALE_READ}
    h = History()
    h.record("c1", 0, 1, OK, (m("append", 0, 7),))
    h.record("c2", 2, 3, OK, (m("rl", 0, ()),))
    assert kinds(h) == {AnomalyKind.STALE_READ}


def test_non_monotonic_reads_are_flagged() -> None:
    h = History()
    h.record("c1", 0, 10, INFO, (m("append", 0, 7),))
    h.record("c2", 1, 2, OK, (m("rl", 0, (7,)),))
    h.record("c3", 3, 4, OK, (m("rl", 0, ()),))  # saw less than a read before it
    assert kinds(h) == {AnomalyKind.STALE_READ}
    h = History()
    h.record("c1", 0, 10, INFO, (m("inc", 0),))
    h.record("c2", 1, 2, OK, (m("rc", 0, (1,)),))
    h.record("c3", 3, 4, OK, (m("rc", 0, (0,)),))
    assert kinds(h) == {AnomalyKind.STALE_READ}


def test_failed_write_that_became_visible_is_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, FAIL, (m("w", 0, 9),), error="40001")
    h.record("c2", 2, 3, OK, (m("r", 0, (9,)),))
    assert kinds(h) == {AnomalyKind.FAILED_WRITE_VISIBLE}
    h = History()
    h.record("c1", 0, 1, FAIL, (m("append", 0, 9), m("append", 1, 10)), txn=True)
    h.record(FINAL, 5, 6, OK, (m("rl", 0, (9,)),))
    assert kinds(h) == {AnomalyKind.FAILED_WRITE_VISIBLE}
    h = History()
    h.record("c1", 0, 1, FAIL, (m("inc", 0),))
    h.record(FINAL, 5, 6, OK, (m("rc", 0, (1,)),))
    assert kinds(h) == {AnomalyKind.FAILED_WRITE_VISIBLE}


def test_list_order_anomaly_is_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, OK, (m("append", 0, 1),))
    h.record("c1", 2, 3, OK, (m("append", 0, 2),))
    h.record("c2", 4, 5, OK, (m("rl", 0, (1, 2)),))
    h.record("c3", 4, 5, OK, (m("rl", 0, (2, 1)),))
    assert kinds(h) == {AnomalyKind.LIST_ORDER}


def test_fractured_transaction_is_flagged() -> None:
    h = History()
    h.record("c1", 0, 1, OK, (m("append", 0, 1), m("append", 1, 2)), txn=True)
    h.record("c2", 0.5, 0.8, OK, (m("rl", 0, (1,)), m("rl", 1, ())), txn=True)
    assert kinds(h) == {AnomalyKind.FRACTURED_READ}


def test_separate_statements_are_not_one_snapshot() -> None:
    """Two reads outside a transaction may straddle a commit (matrix cell
    sqlite/kill-orchestrator@promoting seed 10 was flagged before this was understood)."""
    h = History()
    h.record("c1", 0, 1, OK, (m("append", 0, 1), m("append", 1, 2)), txn=True)
    h.record("c2", 0.5, 1.5, OK, (m("rl", 0, ()), m("rl", 1, (2,))))
    assert check(h.ops).ok


def test_garbage_is_flagged() -> None:
    h = History()
    h.record("c2", 0, 1, OK, (m("r", 0, (42,)),))
    h.record("c2", 0, 1, OK, (m("rl", 0, (42,)),))
    assert kinds(h) == {AnomalyKind.GARBAGE_READ}


# -- good histories ---------------------------------------------------------------------------


def test_concurrent_and_indeterminate_operations_pass() -> None:
    h = History()
    h.record("c1", 0, 5, OK, (m("w", 0, 1),))
    h.record("c2", 1, 2, OK, (m("r", 0, (0,)),))  # concurrent with the write: either is fine
    h.record("c3", 3, 4, OK, (m("r", 0, (1,)),))
    h.record("c1", 6, 7, INFO, (m("w", 0, 2),))  # lost connection mid-statement
    h.record("c1", 6, 7, INFO, (m("inc", 0),))
    h.record("c1", 6, 7, FAIL, (m("inc", 0),))  # definitely not done
    h.record("c1", 6, 7, INFO, (m("append", 0, 5), m("append", 1, 6)), txn=True)
    h.record("c1", 8, 9, OK, (m("append", 0, 7),))
    h.record("c2", 8.5, 9.5, OK, (m("rl", 0, (5,)), m("rl", 1, (6,))), txn=True)
    h.record("c2", 9, 10, FAIL, (m("rl", 0, ()),))  # failed reads say nothing
    h.record(FINAL, 20, 21, OK, (m("r", 0, (2,)), m("rc", 0, (1,)), m("rl", 0, (5, 7))))
    h.record(FINAL, 20, 21, OK, (m("rl", 1, (6,)),))
    result = check(h.ops)
    assert result.ok, result.anomalies


def test_info_write_may_never_happen() -> None:
    h = History()
    h.record("c1", 0, 1, INFO, (m("w", 0, 1), m("append", 0, 1)))
    h.record("c1", 0, 1, INFO, (m("inc", 0),))
    h.record(FINAL, 5, 6, OK, (m("r", 0, (0,)), m("rl", 0, ()), m("rc", 0, (0,))))
    assert check(h.ops).ok


# -- generated valid histories ----------------------------------------------------------------

KINDS = ["w", "r", "inc", "rc", "append", "rl", "txn-append", "txn-read"]
KEYS = 3


@dataclass
class Spec:
    kind: str
    key: int
    invoke: float
    duration: float
    at: float  # where in [invoke, complete] it takes effect (0..1; > 1 only for info)
    outcome: Outcome
    info_applied: bool


spec = st.builds(
    Spec,
    kind=st.sampled_from(KINDS),
    key=st.integers(0, KEYS - 1),
    invoke=st.integers(0, 100).map(float),
    duration=st.integers(0, 20).map(float),
    at=st.floats(0, 1),
    outcome=st.sampled_from([OK, OK, OK, FAIL, INFO]),
    info_applied=st.booleans(),
)


def simulate(specs: list[Spec]) -> History:
    """Run the operations against a linearizable in-memory store, record what clients see."""
    regs = dict.fromkeys(range(KEYS), 0)
    ctrs = dict.fromkeys(range(KEYS), 0)
    lists: dict[int, list[int]] = {k: [] for k in range(KEYS)}
    next_value = iter(range(1, 1_000_000))
    planned = []
    for s in specs:
        complete = s.invoke + s.duration
        effect = s.invoke + s.at * s.duration
        if s.outcome is INFO:
            effect = s.invoke + s.at * (s.duration + 30)  # may land after the client gave up
        applies = s.outcome is OK or (s.outcome is INFO and s.info_applied)
        planned.append((effect, s, complete, applies))
    h = History()
    for _effect, s, complete, applies in sorted(planned, key=lambda p: p[0]):
        k, k2 = s.key, (s.key + 1) % KEYS
        mops: tuple[Mop, ...]
        if s.kind == "w":
            v = next(next_value)
            mops = (m("w", k, v),)
            if applies:
                regs[k] = v
        elif s.kind == "inc":
            mops = (m("inc", k),)
            if applies:
                ctrs[k] += 1
        elif s.kind in ("append", "txn-append"):
            keys = [k] if s.kind == "append" else [k, k2]
            mops = tuple(m("append", key, next(next_value)) for key in keys)
            if applies:
                for mop in mops:
                    assert isinstance(mop.v, int)
                    lists[mop.k].append(mop.v)
        elif s.kind == "r":
            mops = (m("r", k, (regs[k],)),)
        elif s.kind == "rc":
            mops = (m("rc", k, (ctrs[k],)),)
        elif s.kind == "rl":
            mops = (m("rl", k, tuple(lists[k])),)
        else:
            mops = (m("rl", k, tuple(lists[k])), m("rl", k2, tuple(lists[k2])))
        h.record("c", s.invoke, complete, s.outcome, mops, txn=s.kind.startswith("txn"))
    end = 1000.0
    for k in range(KEYS):
        final = (m("r", k, (regs[k],)), m("rc", k, (ctrs[k],)), m("rl", k, tuple(lists[k])))
        h.record(FINAL, end, end + 1, OK, final)
    return h


@settings(max_examples=300, deadline=None)
@given(st.lists(spec, max_size=60))
def test_generated_linearizable_histories_pass(specs: list[Spec]) -> None:
    h = simulate(specs)
    result = check(h.ops)
    assert result.ok, [a.detail for a in result.anomalies]


@settings(max_examples=100, deadline=None)
@given(st.lists(spec, min_size=1, max_size=40), st.data())
def test_generated_history_with_a_dropped_acknowledged_append_fails(
    specs: list[Spec], data: st.DataObject
) -> None:
    """Remove one acknowledged append from the final state: it must be reported lost."""
    h = simulate([*specs, Spec("append", 0, 0.0, 0.0, 0.0, OK, False)])
    acked = [
        mop.v
        for op in h.ops
        if op.outcome is OK and op.process != FINAL
        for mop in op.mops
        if mop.f == "append"
    ]
    victim = data.draw(st.sampled_from(acked))
    ops = []
    for op in h.ops:
        if op.process == FINAL:
            mops = tuple(
                Mop(x.f, x.k, tuple(v for v in x.v if v != victim))
                if x.f == "rl" and isinstance(x.v, tuple)
                else x
                for x in op.mops
            )
            op = type(op)(op.index, op.process, op.invoke, op.complete, op.outcome, mops)
        ops.append(op)
    assert AnomalyKind.LOST_WRITE in check(ops).counts


@pytest.mark.parametrize("n", [800])
def test_checker_scales(n: int) -> None:
    h = History()
    for i in range(n):
        h.record("c", i, i + 0.5, OK, (m("append", 0, i + 1), m("inc", 0)))
        h.record(
            "r", i + 0.6, i + 0.7, OK, (m("rl", 0, tuple(range(1, i + 2))), m("rc", 0, (i + 1,)))
        )
    assert check(h.ops).ok
