"""SUBSCRIBE to a table: COPY (SUBSCRIBE ...) TO STDOUT and DECLARE ... FETCH."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess


def test_subscribe_with_cursor_and_fetch(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE sub_t (a int, b text)")
        conn.execute("INSERT INTO sub_t VALUES (1, 'x')")
    with psycopg.connect(envd.conninfo()) as sub:  # not autocommit: cursors need a txn
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE sub_t")
        rows = sub.execute("FETCH ALL c WITH (timeout = '5s')").fetchall()
        assert [(r[1], r[2], r[3]) for r in rows] == [(1, 1, "x")], "snapshot"
        with psycopg.connect(envd.conninfo(), autocommit=True) as writer:
            writer.execute("INSERT INTO sub_t VALUES (2, 'y')")
            writer.execute("DELETE FROM sub_t WHERE a = 1")
        got: list[tuple[int, int, str]] = []
        deadline = time.monotonic() + 15
        while len(got) < 2 and time.monotonic() < deadline:
            for r in sub.execute("FETCH 10 c WITH (timeout = '1s')").fetchall():
                got.append((r[1], r[2], r[3]))
        assert sorted(got) == [(-1, 1, "x"), (1, 2, "y")]
        sub.execute("CLOSE c")
        sub.rollback()


def test_copy_subscribe_streams_changes(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE sub_c (a int)")
    seen: list[tuple[str, ...]] = []
    done = threading.Event()

    def writer() -> None:
        with psycopg.connect(envd.conninfo(), autocommit=True) as w:
            for i in range(5):
                w.execute("INSERT INTO sub_c VALUES (%s)", (i,))
        done.set()

    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        t = threading.Thread(target=writer)
        with pytest.raises(psycopg.errors.QueryCanceled):  # noqa: SIM117
            with conn.cursor().copy("COPY (SUBSCRIBE sub_c WITH (PROGRESS)) TO STDOUT") as copy:
                t.start()
                for row in copy.rows():
                    if row[1] == "f":  # data rows (mz_progressed false)
                        seen.append(row)
                    if len(seen) == 5:
                        conn.cancel_safe()  # a SUBSCRIBE never ends by itself
        t.join()
        assert conn.execute("SELECT 1").fetchone() == (1,), "session usable after cancel"
    assert sorted(int(r[3]) for r in seen) == [0, 1, 2, 3, 4]
    assert all(r[2] == "1" for r in seen)


def _fetch(sub: psycopg.Connection[tuple[Any, ...]], n: int) -> list[tuple[Any, ...]]:
    """At least `n` rows (or whatever came within the deadline)."""
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        got += sub.execute("FETCH 100 c WITH (timeout = '1s')").fetchall()
    return got


def test_subscribe_to_views_and_queries(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE sub_v (a int, b int)")
        conn.execute("INSERT INTO sub_v VALUES (1, 10), (2, 20)")
        conn.execute("CREATE MATERIALIZED VIEW sub_mv AS SELECT sum(b) AS s FROM sub_v")
        conn.execute("CREATE VIEW sub_pv AS SELECT a * 2 AS d FROM sub_v WHERE b > 5")
    # target -> (snapshot, changes as (diff, value) after inserting (3, 9))
    targets = {
        "sub_mv": ([(30,)], [(-1, 30), (1, 39)]),  # materialized view: its output shard
        "sub_pv": ([(2,), (4,)], [(1, 6)]),  # plain view: a transient dataflow
        "(SELECT a FROM sub_v WHERE a > 1)": ([(2,)], [(1, 3)]),  # a query
    }
    for target, (snapshot, changes) in targets.items():
        with psycopg.connect(envd.conninfo()) as sub:
            sub.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {target} WITH (PROGRESS)")
            rows = [r for r in _fetch(sub, len(snapshot) + 1) if not r[1]]
            assert sorted(tuple(r[3:]) for r in rows) == snapshot, target
            assert all(r[2] == 1 for r in rows)
            with psycopg.connect(envd.conninfo(), autocommit=True) as w:
                w.execute("INSERT INTO sub_v VALUES (3, 9)")
            got: list[tuple[Any, ...]] = []
            deadline = time.monotonic() + 30
            while len(got) < len(changes) and time.monotonic() < deadline:
                got += [r for r in _fetch(sub, 1) if not r[1]]
            assert sorted((r[2], *r[3:]) for r in got) == changes, target
            progress = [r[0] for r in _fetch(sub, 1) if r[1]]
            assert progress == sorted(progress) and progress
            sub.execute("CLOSE c")
            sub.rollback()
        with psycopg.connect(envd.conninfo(), autocommit=True) as w:
            w.execute("DELETE FROM sub_v WHERE a = 3")


def test_subscribe_to_an_unsupported_query(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE sub_u (a int)")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="window"):
            conn.execute("SUBSCRIBE (SELECT row_number() OVER () FROM sub_u)")


def test_repeated_fetch_is_prepared_with_the_subscription_columns(
    envd: EnvironmentdProcess,
) -> None:
    """psycopg prepares a statement run 5 times: the prepared FETCH must describe the
    subscription's columns (it described none, and its rows broke the protocol)."""
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE sub_p (a int)")
    with (
        psycopg.connect(envd.conninfo()) as sub,
        psycopg.connect(envd.conninfo(), autocommit=True) as writer,
    ):
        sub.execute("DECLARE c CURSOR FOR SUBSCRIBE sub_p")
        got: list[int] = []
        for i in range(8):
            writer.execute("INSERT INTO sub_p VALUES (%s)", (i,))
            deadline = time.monotonic() + 30
            while len(got) <= i and time.monotonic() < deadline:
                got += [r[2] for r in sub.execute("FETCH ALL c WITH (timeout = '1s')")]
        assert sorted(got) == list(range(8))
        sub.execute("CLOSE c")
        sub.rollback()
