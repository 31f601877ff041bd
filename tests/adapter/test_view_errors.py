"""Evaluation errors of materialized views, over pgwire (psycopg) against a real environmentd.

`CREATE MATERIALIZED VIEW v AS SELECT 1/x FROM t`, then `x = 0` is inserted: as in Materialize,
SELECT from the view fails with the evaluation error (SQLSTATE 22012, `division by zero`)
until the offending row is gone; the dataflow keeps running meanwhile (later changes show up
once the error is retracted), and views computed from the failing one fail too.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process

DEADLINE_S = 60.0
_names = itertools.count()


def connect(envd: EnvironmentdProcess) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(envd.conninfo(), autocommit=True)


def suffix() -> str:
    return f"{os.getpid()}_{next(_names)}"


def eventually(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # poll interval


def select_error(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> tuple[str, str] | None:
    """(sqlstate, message) of the SELECT's failure, or None if it succeeds."""
    try:
        conn.execute(sql).fetchall()
    except psycopg.Error as e:
        assert e.diag.sqlstate is not None
        return e.diag.sqlstate, str(e.diag.message_primary)
    return None


def rows(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(sql).fetchall())


def test_division_by_zero_fails_reads_until_the_row_is_gone(envd: EnvironmentdProcess) -> None:
    s = suffix()
    t, v, w = f"t_{s}", f"v_{s}", f"w_{s}"
    with connect(envd) as conn:
        conn.execute(f"CREATE TABLE {t} (x int)")
        conn.execute(f"INSERT INTO {t} VALUES (1), (2)")
        conn.execute(f"CREATE MATERIALIZED VIEW {v} AS SELECT 10 / x AS q FROM {t}")
        conn.execute(f"CREATE MATERIALIZED VIEW {w} AS SELECT count(*) AS n FROM {v}")
        assert rows(conn, f"SELECT q FROM {v}") == [(5,), (10,)]

        conn.execute(f"INSERT INTO {t} VALUES (0)")
        # Every read after the insert sees the error (reads are at or after the write).
        assert select_error(conn, f"SELECT q FROM {v}") == ("22012", "division by zero")
        assert select_error(conn, f"SELECT count(*) FROM {v} WHERE q > 5") == (
            "22012",
            "division by zero",
        )
        # A view computed from the failing one fails too; the error is not a session state.
        assert select_error(conn, f"SELECT n FROM {w}") == ("22012", "division by zero")
        assert rows(conn, "SELECT 1") == [(1,)]
        with connect(envd) as other:
            assert select_error(other, f"SELECT * FROM {v}") == ("22012", "division by zero")

        # The dataflow keeps running: changes made while it fails are there afterwards.
        conn.execute(f"INSERT INTO {t} VALUES (5)")
        conn.execute(f"DELETE FROM {t} WHERE x = 0")
        assert rows(conn, f"SELECT q FROM {v}") == [(2,), (5,), (10,)]
        assert rows(conn, f"SELECT n FROM {w}") == [(3,)]

        # An UPDATE that makes a row fail, and one that repairs it.
        conn.execute(f"UPDATE {t} SET x = 0 WHERE x = 5")
        assert select_error(conn, f"SELECT * FROM {v}") == ("22012", "division by zero")
        conn.execute(f"UPDATE {t} SET x = 10 WHERE x = 0")
        assert rows(conn, f"SELECT q FROM {v}") == [(1,), (5,), (10,)]


def test_errors_through_an_index_and_after_restart(envd: EnvironmentdProcess) -> None:
    """An indexed view answers by a peek on a replica: the error fails that path too."""
    s = suffix()
    t, v = f"t_{s}", f"v_{s}"
    with connect(envd) as conn:
        conn.execute(f"CREATE TABLE {t} (k int, x int)")
        conn.execute(f"INSERT INTO {t} VALUES (1, 1)")
        conn.execute(f"CREATE MATERIALIZED VIEW {v} AS SELECT k, 100 / x AS q FROM {t}")
        conn.execute(f"CREATE DEFAULT INDEX ON {v}")
        eventually(lambda: rows(conn, f"SELECT * FROM {v}") == [(1, 100)], "the view")
        conn.execute(f"INSERT INTO {t} VALUES (2, 0)")
        assert select_error(conn, f"SELECT * FROM {v}") == ("22012", "division by zero")
        assert select_error(conn, f"SELECT * FROM {v} WHERE k = 1") == (
            "22012",
            "division by zero",
        )
        conn.execute(f"DELETE FROM {t} WHERE k = 2")
        assert rows(conn, f"SELECT * FROM {v}") == [(1, 100)]


def test_error_state_survives_a_restart(tmp_path: Path) -> None:
    """The errors live in persist: a restarted environmentd reports the same error."""
    with environmentd_process(tmp_path / "envd") as env:
        with connect(env) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("CREATE MATERIALIZED VIEW v AS SELECT 1 / x AS q FROM t")
            conn.execute("INSERT INTO t VALUES (0), (1)")
            assert select_error(conn, "SELECT * FROM v") == ("22012", "division by zero")
        env.restart()
        with connect(env) as conn:
            assert select_error(conn, "SELECT * FROM v") == ("22012", "division by zero")
            conn.execute("DELETE FROM t WHERE x = 0")
            assert rows(conn, "SELECT * FROM v") == [(1,)]
