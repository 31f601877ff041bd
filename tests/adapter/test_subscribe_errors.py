"""Evaluation errors of materialized views through SUBSCRIBE, over pgwire (psycopg) against a
real environmentd.

As for SELECT (`test_view_errors.py`): a SUBSCRIBE to a view that has an error (`10 / x` over
a row with `x = 0`, SQLSTATE 22012) fails at once, in both its forms (`DECLARE ... CURSOR FOR
SUBSCRIBE` + FETCH, and `COPY (SUBSCRIBE ...) TO STDOUT`), and so does one to a view or query
computed from it; a running subscription ends with the error when it appears; the session goes
on (an explicit transaction is aborted, as for any error); once the row is gone a new
SUBSCRIBE works, and subscriptions to views without errors never notice.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess

DEADLINE_S = 60.0
_names = itertools.count()

Conn = psycopg.Connection[tuple[Any, ...]]


def suffix() -> str:
    return f"{os.getpid()}_{next(_names)}"


def connect(envd: EnvironmentdProcess, *, autocommit: bool = True) -> Conn:
    return psycopg.connect(envd.conninfo(), autocommit=autocommit)


def assert_division_by_zero(e: psycopg.Error) -> None:
    assert e.diag.sqlstate == "22012", (e.diag.sqlstate, str(e))
    assert e.diag.message_primary == "division by zero"


def cursor_error(conn: Conn, target: str, *, deadline_s: float = 15.0) -> psycopg.Error | None:
    """DECLARE a SUBSCRIBE cursor (in a transaction) and FETCH until it fails or the deadline
    passes; the failure (None if none), with the transaction rolled back."""
    name = f"c_{next(_names)}"
    deadline = time.monotonic() + deadline_s
    try:
        conn.execute(f"DECLARE {name} CURSOR FOR SUBSCRIBE {target}")
        while time.monotonic() < deadline:
            conn.execute(f"FETCH ALL {name} WITH (timeout = '0.5s')").fetchall()
    except psycopg.Error as e:
        conn.rollback()
        return e
    conn.execute(f"CLOSE {name}")
    conn.rollback()
    return None


def copy_error(conn: Conn, target: str) -> psycopg.Error | None:
    """`COPY (SUBSCRIBE ... WITH (PROGRESS))`: its failure, or None if its first progress row
    (the snapshot is complete) came without one (the COPY is then cancelled)."""
    canceled = False
    try:
        with conn.cursor().copy(f"COPY (SUBSCRIBE {target} WITH (PROGRESS)) TO STDOUT") as copy:
            for row in copy.rows():
                if row[1] == "t" and not canceled:
                    conn.cancel_safe()  # a SUBSCRIBE never ends by itself
                    canceled = True
    except psycopg.errors.QueryCanceled:
        assert canceled, "canceled before its snapshot was complete"
        return None
    except psycopg.Error as e:
        return e
    raise AssertionError("COPY (SUBSCRIBE) ended by itself")


def test_error_present_before_subscribe_fails_at_start(envd: EnvironmentdProcess) -> None:
    s = suffix()
    t, v, w, pv = f"t_{s}", f"v_{s}", f"w_{s}", f"pv_{s}"
    with connect(envd) as conn, connect(envd, autocommit=False) as txn:
        conn.execute(f"CREATE TABLE {t} (x int)")
        conn.execute(f"INSERT INTO {t} VALUES (1), (2)")
        conn.execute(f"CREATE MATERIALIZED VIEW {v} AS SELECT 10 / x AS q FROM {t}")
        conn.execute(f"CREATE MATERIALIZED VIEW {w} AS SELECT count(*) AS n FROM {v}")
        conn.execute(f"CREATE VIEW {pv} AS SELECT q + 1 AS r FROM {v}")
        # Indexes (on the view and on a plain view over it) change nothing.
        conn.execute(f"CREATE DEFAULT INDEX ON {v}")
        conn.execute(f"CREATE DEFAULT INDEX ON {pv}")
        conn.execute(f"INSERT INTO {t} VALUES (0)")

        # The view, a view computed from it, a plain view and a query over it, and a query
        # whose own dataflow divides by zero.
        targets = [v, w, pv, f"(SELECT q FROM {v} WHERE q > 1)", f"(SELECT 10 / x FROM {t})"]
        for target in targets:
            err = cursor_error(txn, target)
            assert err is not None, f"SUBSCRIBE {target} (cursor) did not fail"
            assert_division_by_zero(err)
            assert txn.execute("SELECT 1").fetchone() == (1,), "session usable after it"
            txn.rollback()
            err = copy_error(conn, target)
            assert err is not None, f"COPY (SUBSCRIBE {target}) did not fail"
            assert_division_by_zero(err)
            assert conn.execute("SELECT 1").fetchone() == (1,), "session usable after it"

        # Fails at start: the DECLARE itself, before any FETCH, for a materialized view.
        with pytest.raises(psycopg.errors.DivisionByZero):
            txn.execute(f"DECLARE early CURSOR FOR SUBSCRIBE {v}")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            txn.execute("SELECT 1")
        txn.rollback()
        # COPY (SUBSCRIBE) in a transaction aborts it too.
        txn.execute("SELECT 1")
        err = copy_error(txn, f"(SELECT 10 / x FROM {t})")
        assert err is not None
        assert_division_by_zero(err)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            txn.execute("SELECT 1")
        txn.rollback()

        # Once the row is gone, a new SUBSCRIBE works (both forms) and sees the view.
        conn.execute(f"DELETE FROM {t} WHERE x = 0")
        for target in targets:
            assert cursor_error(txn, target, deadline_s=1.0) is None, target
            assert copy_error(conn, target) is None, target
        txn.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {v}")
        got = sorted(r[1:] for r in txn.execute("FETCH ALL c WITH (timeout = '5s')").fetchall())
        assert got == [(1, 5), (1, 10)]
        txn.execute("CLOSE c")
        txn.rollback()


def _fetch_until_error(txn: Conn, cursor: str) -> tuple[list[tuple[Any, ...]], psycopg.Error]:
    """FETCH from a subscription until it fails; the rows before the failure and it."""
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            got += txn.execute(f"FETCH ALL {cursor} WITH (timeout = '0.5s')").fetchall()
        except psycopg.Error as e:
            return got, e
    raise AssertionError(f"the subscription did not fail within {DEADLINE_S} s: {got}")


@pytest.mark.parametrize("target", ["view", "query"])
def test_error_while_subscribed_ends_the_fetch(envd: EnvironmentdProcess, target: str) -> None:
    s = suffix()
    t, v = f"t_{s}", f"v_{s}"
    with connect(envd) as conn, connect(envd, autocommit=False) as txn:
        conn.execute(f"CREATE TABLE {t} (x int)")
        conn.execute(f"INSERT INTO {t} VALUES (1), (2)")
        conn.execute(f"CREATE MATERIALIZED VIEW {v} AS SELECT 10 / x AS q FROM {t}")
        sub = v if target == "view" else f"(SELECT q * 2 AS d FROM {v})"
        txn.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {sub}")
        snapshot = sorted(r[1:] for r in txn.execute("FETCH ALL c WITH (timeout = '10s')"))
        want = [(1, 5), (1, 10)] if target == "view" else [(1, 10), (1, 20)]
        assert snapshot == want
        conn.execute(f"INSERT INTO {t} VALUES (5)")
        conn.execute(f"INSERT INTO {t} VALUES (0)")
        rows, err = _fetch_until_error(txn, "c")
        assert_division_by_zero(err)
        # Changes before the error came first (never one at or after its time).
        assert [r[1:] for r in rows] in ([], [(1, 2 if target == "view" else 4)]), rows
        # The usual aborted-transaction rules; after ROLLBACK the session goes on.
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            txn.execute("SELECT 1")
        txn.rollback()
        assert txn.execute("SELECT 1").fetchone() == (1,)
        txn.execute("CLOSE c")
        txn.rollback()
        conn.execute(f"DELETE FROM {t} WHERE x = 0")
        assert cursor_error(txn, sub, deadline_s=1.0) is None


def test_error_while_subscribed_ends_the_copy(envd: EnvironmentdProcess) -> None:
    s = suffix()
    t, v, pv = f"t_{s}", f"v_{s}", f"pv_{s}"
    with connect(envd) as conn, connect(envd) as writer:
        conn.execute(f"CREATE TABLE {t} (x int)")
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        conn.execute(f"CREATE MATERIALIZED VIEW {v} AS SELECT 10 / x AS q FROM {t}")
        conn.execute(f"CREATE VIEW {pv} AS SELECT q FROM {v}")
        for target in (v, pv):
            data: list[tuple[str, ...]] = []
            inserted = False
            deadline = time.monotonic() + DEADLINE_S
            sql = f"COPY (SUBSCRIBE {target} WITH (PROGRESS)) TO STDOUT"
            with pytest.raises(psycopg.errors.DivisionByZero) as failed:  # noqa: SIM117
                with conn.cursor().copy(sql) as copy:
                    for row in copy.rows():
                        assert time.monotonic() < deadline, "no error within the deadline"
                        if row[1] == "f":
                            data.append(row)
                        elif not inserted:  # the snapshot is complete
                            writer.execute(f"INSERT INTO {t} VALUES (0)")
                            inserted = True
            assert_division_by_zero(failed.value)
            assert [(r[2], r[3]) for r in data] == [("1", "10")], "the snapshot, then the error"
            assert conn.execute("SELECT 1").fetchone() == (1,), "session usable after it"
            writer.execute(f"DELETE FROM {t} WHERE x = 0")
            assert copy_error(conn, target) is None


def test_subscribe_without_errors_is_unaffected(envd: EnvironmentdProcess) -> None:
    """A view without errors streams as before, beside a view that has one."""
    s = suffix()
    t, good, bad = f"t_{s}", f"good_{s}", f"bad_{s}"
    with connect(envd) as conn, connect(envd, autocommit=False) as txn:
        conn.execute(f"CREATE TABLE {t} (x int)")
        conn.execute(f"INSERT INTO {t} VALUES (1), (2)")
        conn.execute(f"CREATE MATERIALIZED VIEW {good} AS SELECT x * 10 AS y FROM {t}")
        conn.execute(f"CREATE MATERIALIZED VIEW {bad} AS SELECT 10 / x AS q FROM {t}")
        txn.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {good}")
        got = sorted(r[1:] for r in txn.execute("FETCH ALL c WITH (timeout = '10s')"))
        assert got == [(1, 10), (1, 20)]
        conn.execute(f"INSERT INTO {t} VALUES (0)")  # an error in `bad` only
        conn.execute(f"DELETE FROM {t} WHERE x = 1")
        changes: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(changes) < 2 and time.monotonic() < deadline:
            changes += [r[1:] for r in txn.execute("FETCH ALL c WITH (timeout = '1s')")]
        assert sorted(changes) == [(-1, 10), (1, 0)]
        txn.execute("CLOSE c")
        txn.rollback()
        assert copy_error(conn, good) is None
        err = copy_error(conn, bad)
        assert err is not None
        assert_division_by_zero(err)
