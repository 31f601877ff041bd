"""Rewrites that need expression types (twinstream.adapter.typed_rewrites), through a real
environmentd: avg() of exact types is numeric, WHERE must be boolean (42804), and a string
compared with bytea is bytea input."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess


def test_typed_rewrites(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE tr (id int, n numeric(10,2), f float8, b bytea, ok bool)")
        conn.execute(
            "INSERT INTO tr VALUES (1, 1.50, 1.5, '\\x00ff41', true), "
            "(2, 2.25, 2.5, '\\x01', false), (3, NULL, NULL, NULL, NULL)"
        )
        row = conn.execute("SELECT avg(id), avg(n), avg(f), avg(-id) FROM tr").fetchone()
        assert row == (Decimal("2"), Decimal("1.875"), 2.0, Decimal("-2"))
        assert row is not None and str(row[1]) == "1.8750000000000000"
        assert conn.execute("SELECT avg(id) FROM tr WHERE false").fetchone() == (None,)
        grouped = conn.execute(
            "SELECT ok, avg(id) FROM tr GROUP BY ok ORDER BY ok NULLS LAST"
        ).fetchall()
        assert grouped == [(False, Decimal(2)), (True, Decimal(1)), (None, Decimal(3))]
        # window and nested averages still run
        assert conn.execute("SELECT avg(id) OVER () FROM tr LIMIT 1").fetchone() is not None
        sub = conn.execute("SELECT (SELECT avg(id) FROM tr) + 1").fetchone()
        assert sub == (Decimal(3),)
        with pytest.raises(psycopg.errors.DatatypeMismatch) as info:
            conn.execute("SELECT id FROM tr WHERE id")
        assert str(info.value) == "argument of WHERE must be type boolean, not type integer"
        assert conn.execute("SELECT id FROM tr WHERE ok").fetchall() == [(1,)]
        assert conn.execute("SELECT id FROM tr WHERE b = '\\x00ff41'").fetchall() == [(1,)]
        assert conn.execute("SELECT id FROM tr WHERE '\\x01' = b").fetchall() == [(2,)]
