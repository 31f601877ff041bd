"""Per-session statement caches (parsed statements, plans, SELECT descriptions, fast-path
shapes) are keyed by the catalog version: a statement a client sends again after DDL is
described and answered against the new catalog, never from a stale cache entry."""

from __future__ import annotations

import os
from typing import Any

import psycopg

from twinstream.testing.environmentd import EnvironmentdProcess


def _description(cur: psycopg.Cursor[tuple[Any, ...]]) -> list[tuple[str, int]]:
    return [(d.name, d.type_code) for d in cur.description or []]


def test_repeated_statements_follow_ddl(envd: EnvironmentdProcess) -> None:
    t = f"sc_{os.getpid()}"
    query = f"SELECT * FROM {t} WHERE k = %s"
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {t} (k int NOT NULL, v text)")
        conn.execute(f"INSERT INTO {t} VALUES (1, 'one')")
        for prepare in (False, True, False):  # Parse per execution, then a prepared one
            cur = conn.execute(query, (1,), prepare=prepare)
            assert _description(cur) == [("k", 23), ("v", 25)]
            assert cur.fetchall() == [(1, "one")]
        conn.execute(f"CREATE INDEX {t}_k ON {t} (k)")  # now the fast path answers
        assert conn.execute(query, (1,)).fetchall() == [(1, "one")]
        conn.execute(f"DROP TABLE {t} CASCADE")
        conn.execute(f"CREATE TABLE {t} (k bigint NOT NULL, n float8, v text)")
        conn.execute(f"INSERT INTO {t} VALUES (1, 0.5, 'uno')")
        for _ in range(2):
            cur = conn.execute(query, (1,))
            assert _description(cur) == [("k", 20), ("n", 701), ("v", 25)]
            assert cur.fetchall() == [(1, 0.5, "uno")]
        conn.execute(f"CREATE INDEX {t}_k ON {t} (k)")
        cur = conn.execute(query, (1,))
        assert _description(cur) == [("k", 20), ("n", 701), ("v", 25)]
        assert cur.fetchall() == [(1, 0.5, "uno")]
