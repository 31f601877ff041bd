"""The DuckDB mirror applies many retractions in one set-based DELETE with multiset
semantics (n copies retracted delete exactly n copies, NULLs and JSON compare as values), and
a retraction of a row the mirror lacks is caught."""

from __future__ import annotations

from collections import Counter

import pytest

from twinstream.adapter.engine import QueryEngine

TABLE = "memory.main.t"


def contents(engine: QueryEngine) -> Counter[tuple[object, ...]]:
    cur = engine.cursor()
    try:
        rows = engine.query_sync(cur, f"SELECT a, b, j::VARCHAR FROM {TABLE}").rows
    finally:
        cur.close()
    return Counter(tuple(r) for r in rows)


@pytest.mark.parametrize("retracted", [3, 700])  # one DELETE each / one set-based DELETE
def test_many_retractions_keep_multiset_semantics(retracted: int) -> None:
    engine = QueryEngine()
    try:
        engine.execute_ddl(f"CREATE TABLE {TABLE} (a INTEGER, b VARCHAR, j JSON)")
        rows = [(i % 50, f"v{i % 7}" if i % 11 else None, f'{{"x": {i % 3}}}') for i in range(2000)]
        engine.apply(TABLE, 3, [(r, 1) for r in rows])
        engine.apply(TABLE, 3, [(r, -1) for r in rows[:retracted]])
        engine.flush()
        assert contents(engine) == Counter(rows[retracted:])
        with pytest.raises(AssertionError, match="lacks"):
            engine.apply(TABLE, 3, [((999, "absent", None), -1)] * 40)
            engine.flush()
    finally:
        engine.close()


def test_bulk_retraction_of_other_types() -> None:
    import datetime as dt
    from decimal import Decimal

    engine = QueryEngine()
    try:
        table = "memory.main.u"
        engine.execute_ddl(f"CREATE TABLE {table} (a DECIMAL(10, 2), b TIMESTAMPTZ, c BLOB)")
        t0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        rows = [
            (Decimal(i) / 4, t0 + dt.timedelta(seconds=i), bytes([i % 256])) for i in range(100)
        ]
        engine.apply(table, 3, [(r, 1) for r in rows])
        engine.apply(table, 3, [(r, -1) for r in rows[:60]])
        engine.flush()
        cur = engine.cursor()
        try:
            [[(n,)]] = [engine.query_sync(cur, f"SELECT count(*) FROM {table}").rows]
        finally:
            cur.close()
        assert n == 40
    finally:
        engine.close()
