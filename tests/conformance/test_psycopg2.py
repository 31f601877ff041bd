"""Conformance through psycopg2 (libpq, client-side parameter interpolation, simple query
protocol): the shared scenarios, then named cursors, COPY, batch helpers and cancellation."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import pytest
from conformance_scenarios import (
    SETUP,
    Json,
    Outcome,
    Scenario,
    Step,
    run_scenario,
    scenario_params,
    to_format_params,
)

from twinstream.testing.environmentd import EnvironmentdProcess

psycopg2.extras.register_uuid()

LONG_QUERY = (
    "SELECT sum(a.generate_series * b.generate_series) "
    "FROM generate_series(1, 100000) a, generate_series(1, 100000) b"
)


def connect(envd: EnvironmentdProcess, *, autocommit: bool = True) -> Any:
    conn = psycopg2.connect(envd.conninfo(), connect_timeout=10)
    conn.autocommit = autocommit
    return conn


def adapt(v: Any) -> Any:
    return psycopg2.extras.Json(v.obj) if isinstance(v, Json) else v


def run_step(conn: Any, step: Step) -> Outcome:
    with conn.cursor() as cur:
        try:
            if step.params:
                cur.execute(to_format_params(step.sql), [adapt(p) for p in step.params])
            else:
                cur.execute(step.sql)
        except psycopg2.Error as e:
            return Outcome(sqlstate=e.pgcode or "?????", message=str(e))
        if cur.description is None:
            return Outcome(rowcount=cur.rowcount)
        return Outcome(
            rows=cur.fetchall(),
            rowcount=cur.rowcount,
            columns=tuple(d.name for d in cur.description),
        )


@pytest.fixture(scope="module")
def env(envd: EnvironmentdProcess) -> EnvironmentdProcess:
    conn = connect(envd)
    try:
        run_scenario(SETUP, lambda step: run_step(conn, step))
    finally:
        conn.close()
    return envd


@pytest.mark.parametrize("scenario", scenario_params("psycopg2"))
def test_scenario(env: EnvironmentdProcess, scenario: Scenario) -> None:
    conns = [connect(env) for _ in range(scenario.sessions)]
    try:
        run_scenario(scenario, lambda step: run_step(conns[step.session], step))
    finally:
        for c in conns:
            c.close()


@pytest.fixture
def conn(env: EnvironmentdProcess) -> Iterator[Any]:
    c = connect(env)
    try:
        yield c
    finally:
        c.close()


def test_implicit_transaction_commit_and_rollback(env: EnvironmentdProcess) -> None:
    c = connect(env, autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("INSERT INTO conf_types (id, t) VALUES (%s, %s)", (30001, "kept"))
        c.commit()
        with c.cursor() as cur:
            cur.execute("INSERT INTO conf_types (id, t) VALUES (%s, %s)", (30002, "dropped"))
        c.rollback()
        with c.cursor() as cur:
            cur.execute("SELECT id FROM conf_types WHERE id BETWEEN 30001 AND 30009 ORDER BY id")
            assert cur.fetchall() == [(30001,)]
        c.commit()
    finally:
        c.close()


def test_named_cursor(env: EnvironmentdProcess) -> None:
    c = connect(env, autocommit=False)
    try:
        with c.cursor(name="conf_srv") as cur:
            cur.itersize = 2
            cur.execute("SELECT id, name FROM conf_people ORDER BY id")
            assert cur.fetchmany(2) == [(1, "alice"), (2, "bob")]
            assert [r[0] for r in cur] == [3, 4, 5]
        c.commit()
    finally:
        c.close()


def test_copy_expert_in_out(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.copy_expert(
            "COPY conf_types (id, t, n) FROM STDIN",
            io.StringIO("30101\tx\t1.25\n30102\t\\N\t\\N\n"),
        )
        assert cur.rowcount == 2
        out = io.StringIO()
        cur.copy_expert(
            "COPY (SELECT id, t, n FROM conf_types WHERE id BETWEEN 30101 AND 30109 "
            "ORDER BY id) TO STDOUT",
            out,
        )
    assert out.getvalue() == "30101\tx\t1.25\n30102\t\\N\t\\N\n"


def test_copy_from_and_to(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.copy_from(io.StringIO("30201\ty\n"), "conf_types", columns=("id", "t"))
        out = io.StringIO()
        cur.copy_to(out, "conf_depts")
    assert sorted(out.getvalue().splitlines()) == ["10\teng", "20\tsales", "30\tempty"]


def test_execute_values_and_batch(conn: Any) -> None:
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO conf_types (id, t) VALUES %s",
            [(30300 + i, f"v{i}") for i in range(10)],
        )
        psycopg2.extras.execute_batch(
            cur,
            "INSERT INTO conf_types (id, t) VALUES (%s, %s)",
            [(30320 + i, f"b{i}") for i in range(5)],
        )
        cur.execute("SELECT count(*) FROM conf_types WHERE id BETWEEN 30300 AND 30399")
        assert cur.fetchone() == (15,)


def test_dict_cursor(conn: Any) -> None:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT id, name FROM conf_people WHERE id = %s", (2,))
        assert cur.fetchone() == {"id": 2, "name": "bob"}


def test_cancel_long_query(conn: Any) -> None:
    timer = threading.Timer(0.5, conn.cancel)
    timer.start()
    try:
        with pytest.raises(psycopg2.errors.QueryCanceled) as info, conn.cursor() as cur:
            cur.execute(LONG_QUERY)
    finally:
        timer.cancel()
    assert info.value.pgcode == "57014"
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_error_then_usable_in_transaction(env: EnvironmentdProcess) -> None:
    c = connect(env, autocommit=False)
    try:
        with c.cursor() as cur:
            with pytest.raises(psycopg2.errors.DivisionByZero):
                cur.execute("SELECT 1 / 0")
            with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
                cur.execute("SELECT 1")
        c.rollback()
        with c.cursor() as cur:
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
        c.commit()
    finally:
        c.close()


def test_server_version_and_encoding(conn: Any) -> None:
    assert conn.server_version >= 90000
    assert conn.encoding == "UTF8"
    assert conn.get_parameter_status("integer_datetimes") == "on"


def test_bytea_roundtrip(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT %s::bytea", (psycopg2.Binary(b"\x00\x01\xff"),))
        (value,) = cur.fetchone()
    assert bytes(value) == b"\x00\x01\xff"
