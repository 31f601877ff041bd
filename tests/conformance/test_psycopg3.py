"""Conformance through psycopg 3: the shared scenarios (extended protocol with text and
binary results, and client-side binding over the simple protocol), then psycopg 3 features:
pipeline mode, prepared statements, server-side cursors, COPY, cancellation, introspection."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
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
from psycopg.types.json import Jsonb

from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process

MODES = ("text", "binary", "client")

#: A query that runs for minutes unless cancelled (DuckDB counts generate_series(1, 1e9)
#: in well under a second, so a cross join it is).
LONG_QUERY = (
    "SELECT sum(a.generate_series * b.generate_series) "
    "FROM generate_series(1, 100000) a, generate_series(1, 100000) b"
)


def connect(envd: EnvironmentdProcess, **kw: Any) -> psycopg.Connection[Any]:
    kw.setdefault("autocommit", True)
    return psycopg.connect(envd.conninfo(), connect_timeout=10, **kw)


def adapt(v: Any) -> Any:
    return Jsonb(v.obj) if isinstance(v, Json) else v


def make_cursor(conn: psycopg.Connection[Any], mode: str) -> psycopg.Cursor[Any]:
    if mode == "binary":
        return conn.cursor(binary=True)
    if mode == "client":
        return psycopg.ClientCursor(conn)
    return conn.cursor()


def run_step(conn: psycopg.Connection[Any], mode: str, step: Step) -> Outcome:
    with make_cursor(conn, mode) as cur:
        try:
            if step.params:
                cur.execute(to_format_params(step.sql), [adapt(p) for p in step.params])
            else:
                cur.execute(step.sql)
        except psycopg.Error as e:
            return Outcome(sqlstate=e.sqlstate or "?????", message=str(e))
        if cur.description is None:
            return Outcome(rowcount=cur.rowcount)
        return Outcome(
            rows=cur.fetchall(),
            rowcount=cur.rowcount,
            columns=tuple(d.name for d in cur.description),
        )


@pytest.fixture(scope="module")
def setup_done(envd: EnvironmentdProcess) -> EnvironmentdProcess:
    with connect(envd) as conn:
        run_scenario(SETUP, lambda step: run_step(conn, "text", step))
    return envd


@pytest.fixture(scope="module")
def servers(
    setup_done: EnvironmentdProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, EnvironmentdProcess]]:
    """One environmentd per mode (the scenarios write fixed ids), started on first use."""
    started: dict[str, EnvironmentdProcess] = {"text": setup_done}
    stack = contextlib.ExitStack()
    with stack:

        class Lazy(dict[str, EnvironmentdProcess]):
            def __missing__(self, mode: str) -> EnvironmentdProcess:
                env = stack.enter_context(environmentd_process(tmp_path_factory.mktemp(mode)))
                with connect(env) as conn:
                    run_scenario(SETUP, lambda step: run_step(conn, "text", step))
                self[mode] = env
                return env

        yield Lazy(started)


def _all_params() -> list[Any]:
    out = []
    for mode in MODES:
        for p in scenario_params(f"psycopg3-{mode}"):
            (scenario,) = p.values
            out.append(pytest.param(mode, scenario, id=f"{mode}-{scenario.name}", marks=p.marks))
    return out


@pytest.mark.parametrize(("mode", "scenario"), _all_params())
def test_scenario(servers: dict[str, EnvironmentdProcess], mode: str, scenario: Scenario) -> None:
    env = servers[mode]
    conns = [connect(env) for _ in range(scenario.sessions)]
    try:
        run_scenario(scenario, lambda step: run_step(conns[step.session], mode, step))
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------------------------- features


@pytest.fixture
def conn(setup_done: EnvironmentdProcess) -> Iterator[psycopg.Connection[Any]]:
    with connect(setup_done) as c:
        yield c


def test_simple_query_protocol_multi_statement(conn: psycopg.Connection[Any]) -> None:
    # psycopg sends a parameterless execute() with several statements as one simple Query.
    cur = psycopg.ClientCursor(conn)
    cur.execute("SELECT 1; SELECT 2")
    assert cur.fetchall() == [(1,)]
    assert cur.nextset()
    assert cur.fetchall() == [(2,)]


def test_pipeline_mode(conn: psycopg.Connection[Any]) -> None:
    with conn.pipeline():
        conn.execute("INSERT INTO conf_types (id, t) VALUES (%s, %s)", (20001, "p1"))
        conn.execute("INSERT INTO conf_types (id, t) VALUES (%s, %s)", (20002, "p2"))
        cur = conn.execute(
            "SELECT t FROM conf_types WHERE id BETWEEN %s AND %s ORDER BY id", (20001, 20009)
        )
    assert cur.fetchall() == [("p1",), ("p2",)]


def test_pipeline_error_recovers(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable), conn.pipeline():
        conn.execute("SELECT 1")
        conn.execute("SELECT * FROM no_such_table")
        conn.execute("SELECT 2")
    assert conn.execute("SELECT 3").fetchone() == (3,)


def test_executemany(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO conf_types (id, t) VALUES (%s, %s)",
            [(20010 + i, f"m{i}") for i in range(5)],
        )
    rows = conn.execute(
        "SELECT count(*) FROM conf_types WHERE id BETWEEN %s AND %s", (20010, 20019)
    ).fetchone()
    assert rows == (5,)


def test_prepared_statements(conn: psycopg.Connection[Any]) -> None:
    for i in range(1, 6):
        row = conn.execute(
            "SELECT name FROM conf_people WHERE id = %s", (i,), prepare=True
        ).fetchone()
        assert row is not None
    # psycopg names server-side prepared statements _pg3_N; they survive across calls.
    assert conn.execute(
        "SELECT name FROM conf_people WHERE id = %s", (3,), prepare=True
    ).fetchone() == ("carol",)
    conn.prepare_threshold = 0
    assert conn.execute("SELECT %s::int4 + 1", (1,)).fetchone() == (2,)


def test_server_side_cursor_in_transaction(setup_done: EnvironmentdProcess) -> None:
    with connect(setup_done, autocommit=False) as c:
        with c.cursor(name="conf_named") as cur:
            cur.itersize = 2
            cur.execute("SELECT id FROM conf_people ORDER BY id")
            assert cur.fetchone() == (1,)
            assert cur.fetchmany(2) == [(2,), (3,)]
            assert [r[0] for r in cur] == [4, 5]
        c.commit()


def test_server_side_cursor_scroll_and_binary(setup_done: EnvironmentdProcess) -> None:
    with connect(setup_done, autocommit=False) as c:
        with c.cursor(name="conf_named_bin", binary=True) as cur:
            cur.execute("SELECT id, salary, hired FROM conf_people ORDER BY id")
            rows = cur.fetchall()
        with c.cursor(name="conf_named_scroll", scrollable=True) as cur:
            cur.execute("SELECT id FROM conf_people ORDER BY id")
            assert cur.fetchone() == (1,)
            cur.scroll(2)  # MOVE 2: skips 2 and 3
            assert cur.fetchone() == (4,)
            cur.scroll(-3)  # MOVE -3: back before 2
            assert cur.fetchone() == (2,)
            cur.scroll(0, mode="absolute")  # MOVE ABSOLUTE 0: before the first row
            assert cur.fetchmany(2) == [(1,), (2,)]
        c.commit()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]


def test_copy_in_and_out_text(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        with cur.copy("COPY conf_types (id, t, i4) FROM STDIN") as cp:
            cp.write_row((20101, "tab\there", 1))
            cp.write_row((20102, None, None))
            cp.write_row((20103, "back\\slash", -5))
        assert cur.rowcount == 3
        with cur.copy(
            "COPY (SELECT id, t, i4 FROM conf_types WHERE id BETWEEN 20101 AND 20109 "
            "ORDER BY id) TO STDOUT"
        ) as cp:
            cp.set_types(["int4", "text", "int4"])
            rows = list(cp.rows())
    assert rows == [(20101, "tab\there", 1), (20102, None, None), (20103, "back\\slash", -5)]


def test_copy_to_stdout_table(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur, cur.copy("COPY conf_depts TO STDOUT") as cp:
        data = b"".join(bytes(b) for b in cp).decode()
    assert sorted(data.splitlines()) == ["10\teng", "20\tsales", "30\tempty"]


def test_copy_out_csv_header(conn: psycopg.Connection[Any]) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY (SELECT id, name FROM conf_depts ORDER BY id) TO STDOUT (FORMAT CSV, HEADER)"
        ) as cp,
    ):
        data = b"".join(bytes(b) for b in cp).decode()
    assert data.splitlines() == ["id,name", "10,eng", "20,sales", "30,empty"]


def test_copy_in_csv_options(conn: psycopg.Connection[Any]) -> None:
    """Quoted delimiters, quotes and newlines; NULL vs quoted empty; HEADER skipped."""
    with conn.cursor() as cur:
        with cur.copy(
            "COPY conf_types (id, t, i4) FROM STDIN (FORMAT csv, HEADER true, NULL 'nil')"
        ) as cp:
            cp.write('id,t,i4\n20301,"a,b ""q""\nline",7\n20302,"",nil\n20303,nil,8\n')
        assert cur.rowcount == 3
        rows = cur.execute(
            "SELECT id, t, i4 FROM conf_types WHERE id BETWEEN 20301 AND 20309 ORDER BY id"
        ).fetchall()
    assert rows == [(20301, 'a,b "q"\nline', 7), (20302, "", None), (20303, None, 8)]


def test_copy_text_delimiter_and_null(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        with cur.copy("COPY conf_types (id, t) FROM STDIN (DELIMITER '|', NULL 'nil')") as cp:
            cp.write("20401|x\\|y\n20402|nil\n")
        with cur.copy(
            "COPY (SELECT id, t FROM conf_types WHERE id BETWEEN 20401 AND 20409 ORDER BY id) "
            "TO STDOUT (DELIMITER '|', NULL 'nil')"
        ) as cp:
            data = b"".join(bytes(b) for b in cp).decode()
    assert data == "20401|x\\|y\n20402|nil\n"


def test_copy_binary_round_trip(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        with cur.copy("COPY conf_types (id, t, n) FROM STDIN (FORMAT BINARY)") as cp:
            # psycopg follows the format the server announces; PostgreSQL announces binary.
            assert cp.formatter.format == psycopg.pq.Format.BINARY
            cp.set_types(["int4", "text", "numeric"])
            cp.write_row((20201, "bin", Decimal("1.25")))
            cp.write_row((20202, None, None))
        assert cur.rowcount == 2
        with cur.copy(
            "COPY (SELECT id, t, n FROM conf_types WHERE id BETWEEN 20201 AND 20209 "
            "ORDER BY id) TO STDOUT (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["int4", "text", "numeric"])
            rows = list(cp.rows())
    assert rows == [(20201, "bin", Decimal("1.25")), (20202, None, None)]


def test_cancel_long_query(setup_done: EnvironmentdProcess) -> None:
    with connect(setup_done) as c:
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as info:
                c.execute(LONG_QUERY)
        finally:
            timer.cancel()
        assert info.value.sqlstate == "57014"
        assert time.monotonic() - t0 < 20
        assert c.execute("SELECT 1").fetchone() == (1,)
        # the session keeps working for real queries too
        assert c.execute("SELECT count(*) FROM conf_people").fetchone() == (5,)


def test_cancel_generate_series_count(setup_done: EnvironmentdProcess) -> None:
    # The query of the brief: DuckDB finishes it before a cancel lands, which is fine too;
    # either way the session must stay usable.
    with connect(setup_done) as c:
        timer = threading.Timer(0.2, c.cancel)
        timer.start()
        try:
            row = c.execute("SELECT count(*) FROM generate_series(1, 1000000000)").fetchone()
            assert row == (1000000000,)
        except psycopg.errors.QueryCanceled:
            pass
        finally:
            timer.cancel()
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_statement_timeout_style_cancel_in_transaction(setup_done: EnvironmentdProcess) -> None:
    with connect(setup_done, autocommit=False) as c:
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute(LONG_QUERY)
        finally:
            timer.cancel()
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        c.rollback()
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_parameter_status(conn: psycopg.Connection[Any]) -> None:
    assert conn.info.parameter_status("server_encoding") == "UTF8"
    assert conn.info.parameter_status("integer_datetimes") == "on"
    assert conn.info.server_version >= 90000


def test_description_type_oids_of_columns(conn: psycopg.Connection[Any]) -> None:
    cur = conn.execute(
        "SELECT id, b, i2, i4, i8, f4, f8, n, t, d, ts, tz, iv, u, j, by FROM conf_types LIMIT 0"
    )
    assert [d.type_code for d in cur.description or []] == [
        23,
        16,
        21,
        23,
        20,
        700,
        701,
        1700,
        25,
        1082,
        1114,
        1184,
        1186,
        2950,
        3802,
        17,
    ]


def test_description_varchar_oid(conn: psycopg.Connection[Any]) -> None:
    cur = conn.execute("SELECT v FROM conf_types LIMIT 0")
    assert cur.description is not None and cur.description[0].type_code == 1043
    cur = conn.execute("SELECT c.v AS x, c.n, c.v || '' FROM conf_types c LIMIT 0")
    assert [d.type_code for d in cur.description or []] == [1043, 1700, 25]
    assert cur.description is not None and cur.description[0].display_size == 20


def test_description_numeric_typmod(conn: psycopg.Connection[Any]) -> None:
    cur = conn.execute("SELECT n FROM conf_types LIMIT 0")
    assert cur.description is not None
    assert (cur.description[0].precision, cur.description[0].scale) == (10, 2)


def test_params_without_spaces(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT %s::int4,%s::int4", (1, 2)).fetchone() == (1, 2)
    conn.execute("INSERT INTO conf_types (id,t) VALUES (%s,%s)", (20301, "x"))


def test_jsonb_param_echo(conn: psycopg.Connection[Any]) -> None:
    value = {"a": [1, None], "b": "x"}
    assert conn.execute("SELECT %s::jsonb", (Jsonb(value),)).fetchone() == (value,)


def test_typeinfo_fetch(conn: psycopg.Connection[Any]) -> None:
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(conn, "jsonb")
    assert info is not None and info.oid == 3802 and info.array_oid == 3807


def test_nested_transaction_savepoint(setup_done: EnvironmentdProcess) -> None:
    with connect(setup_done, autocommit=False) as c:
        c.execute("SELECT 1")
        with c.transaction():
            c.execute("SELECT 2")


def test_error_then_connection_usable_non_autocommit(setup_done: EnvironmentdProcess) -> None:
    with connect(setup_done, autocommit=False) as c:
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM no_such_table")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        assert c.execute("SELECT 1").fetchone() == (1,)
        c.commit()


def test_rollback_after_prepared_statement(setup_done: EnvironmentdProcess) -> None:
    with connect(setup_done, autocommit=False) as c:
        c.execute("SELECT %s::int4", (1,), prepare=True)
        c.rollback()
        assert c.execute("SELECT 1").fetchone() == (1,)
