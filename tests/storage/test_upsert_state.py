"""UpsertState (pure): latest value per key wins, deletes remove the key, the old row is
retracted with the new one, a repeated upsert is no change; the invariant (one row per key)
is asserted when committed updates are applied."""

from __future__ import annotations

import pytest

from twinstream.storage.generators import KeyValue
from twinstream.storage.upsert import UpsertState


def committed(state: UpsertState, records: list[tuple[object, tuple[object, ...] | None]]) -> None:
    state.apply(state.diff(records))


def test_insert_update_delete() -> None:
    s = UpsertState()
    assert s.diff([("a", ("a", 1))]) == [(("a", 1), 1)]
    committed(s, [("a", ("a", 1)), ("b", ("b", 1))])
    assert s.diff([("a", ("a", 2))]) == [(("a", 1), -1), (("a", 2), 1)]
    committed(s, [("a", ("a", 2))])
    assert s.diff([("b", None)]) == [(("b", 1), -1)]
    committed(s, [("b", None)])
    assert s.rows == {"a": ("a", 2)}
    assert s.diff([("zz", None)]) == []  # deleting an absent key is no change


def test_last_record_per_key_wins_within_a_batch() -> None:
    s = UpsertState.from_rows([(("a", 0), 1)])
    records: list[tuple[object, tuple[object, ...] | None]] = [("a", ("a", i)) for i in range(100)]
    assert s.diff(records) == [(("a", 0), -1), (("a", 99), 1)]
    assert s.diff([("a", ("a", 5)), ("a", None)]) == [(("a", 0), -1)]
    assert s.diff([("a", None), ("a", ("a", 0))]) == []  # ends where it started


def test_applying_an_upsert_twice_is_no_change() -> None:
    s = UpsertState()
    committed(s, [("k", ("k", "v"))])
    assert s.diff([("k", ("k", "v"))]) == []


def test_invariant_violations_are_caught() -> None:
    with pytest.raises(AssertionError):
        UpsertState.from_rows([(("a", 1), 1), (("a", 2), 1)])  # two rows for one key
    with pytest.raises(AssertionError):
        UpsertState.from_rows([(("a", 1), 2)])
    s = UpsertState.from_rows([(("a", 1), 1)])
    with pytest.raises(AssertionError):
        s.apply([(("a", 2), -1)])  # retracting a row that is not there


def test_net_updates_over_several_timestamps() -> None:
    s = UpsertState.from_rows([(("a", 1), 1)])
    # a listen batch spanning two commits: a 1 -> 2, then a 2 -> 3
    s.apply([(("a", 1), -1), (("a", 2), 1), (("a", 2), -1), (("a", 3), 1)])
    assert s.rows == {"a": ("a", 3)}


def test_key_value_generator_is_a_function_of_the_offset() -> None:
    g = KeyValue(keys=4, batch=3)
    rows, nxt = g.batch(5, now_ms=0)
    assert nxt == 8 and rows == {"key value": [(1, 5), (2, 6), (3, 7)]}
    assert g.batch(5, now_ms=99) == (rows, nxt)
