"""SQL through a real environmentd process with psycopg 3: DDL, DML, transactions, errors."""

from __future__ import annotations

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess


def connect(envd: EnvironmentdProcess, **kw: object) -> psycopg.Connection:
    return psycopg.connect(envd.conninfo(), autocommit=True, **kw)  # type: ignore[arg-type]


def test_tables_insert_select_update_delete(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE basics (id int NOT NULL, name text, amount numeric(10,2))")
        conn.execute("INSERT INTO basics VALUES (1, 'a', 1.50), (2, 'b', NULL), (3, 'c', 3)")
        conn.execute("INSERT INTO basics (id, name) VALUES (%s, %s)", (4, "d"))
        rows = conn.execute("SELECT id, name FROM basics ORDER BY id").fetchall()
        assert rows == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
        cur = conn.execute("UPDATE basics SET name = upper(name) WHERE id >= 3")
        assert cur.rowcount == 2
        cur = conn.execute("DELETE FROM basics WHERE id = 1")
        assert cur.rowcount == 1
        rows = conn.execute("SELECT id, name FROM basics ORDER BY id").fetchall()
        assert rows == [(2, "b"), (3, "C"), (4, "D")]
        row = conn.execute("SELECT count(*), sum(id) FROM basics").fetchone()
        assert row == (3, 9)
        cols = [d.name for d in conn.execute("SELECT count(*), sum(id), 1 FROM basics").description]
        assert cols == ["count", "sum", "?column?"]


def test_joins_ctes_subqueries_generate_series(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE j_a (k int, v text)")
        conn.execute("CREATE TABLE j_b (k int, w text)")
        conn.execute("INSERT INTO j_a VALUES (1, 'x'), (2, 'y'), (3, 'z')")
        conn.execute("INSERT INTO j_b VALUES (1, 'p'), (3, 'q'), (3, 'r')")
        rows = conn.execute(
            "WITH c AS (SELECT k, count(*) AS n FROM j_b GROUP BY k) "
            "SELECT a.v, c.n FROM j_a a LEFT JOIN c ON a.k = c.k "
            "WHERE a.k IN (SELECT k FROM j_a WHERE k > 0) ORDER BY a.v"
        ).fetchall()
        assert rows == [("x", 1), ("y", None), ("z", 2)]
        rows = conn.execute("SELECT * FROM generate_series(1, 3) ORDER BY 1").fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        assert conn.execute("SELECT 7 / 2, 7 % 3").fetchone() == (3, 1)


def test_views_and_dependencies(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE v_base (x int)")
        conn.execute("INSERT INTO v_base VALUES (1), (2), (3)")
        conn.execute("CREATE VIEW v_even AS SELECT x FROM v_base WHERE x % 2 = 0")
        conn.execute("CREATE MATERIALIZED VIEW v_sum AS SELECT sum(x) AS s FROM v_base")
        assert conn.execute("SELECT * FROM v_even").fetchall() == [(2,)]
        conn.execute("INSERT INTO v_base VALUES (4)")
        assert conn.execute("SELECT s FROM v_sum").fetchone() == (10,)
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("DROP TABLE v_base")
        conn.execute("DROP TABLE v_base CASCADE")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM v_even")


def test_error_sqlstates_leave_session_usable(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE errs (a int NOT NULL)")
        cases = [
            ("SELECT * FROM no_such_table", psycopg.errors.UndefinedTable),
            ("SELEC 1", psycopg.errors.SyntaxError),
            ("SELECT nope FROM errs", psycopg.errors.UndefinedColumn),
            ("SELECT 1 / 0", psycopg.errors.DivisionByZero),
            ("SELECT 'abc'::int", psycopg.errors.InvalidTextRepresentation),
            ("CREATE TABLE errs (b int)", psycopg.errors.DuplicateTable),
            ("INSERT INTO errs VALUES (NULL)", psycopg.errors.NotNullViolation),
            ("CREATE SOURCE s FROM LOAD GENERATOR TPCH", psycopg.errors.FeatureNotSupported),
        ]
        for sql, err in cases:
            with pytest.raises(err):
                conn.execute(sql)
            assert conn.execute("SELECT 1").fetchone() == (1,), f"session unusable after {sql}"


def test_transactions_read_or_write(envd: EnvironmentdProcess) -> None:
    with connect(envd) as setup:
        setup.execute("CREATE TABLE tx (a int)")
    with psycopg.connect(envd.conninfo()) as conn:  # not autocommit: psycopg sends BEGIN
        conn.execute("INSERT INTO tx VALUES (1)")
        conn.execute("INSERT INTO tx VALUES (2)")
        with connect(envd) as other:
            assert other.execute("SELECT count(*) FROM tx").fetchone() == (0,), "uncommitted"
        conn.commit()
        with connect(envd) as other:
            assert other.execute("SELECT count(*) FROM tx").fetchone() == (2,)
        conn.execute("INSERT INTO tx VALUES (3)")
        with pytest.raises(psycopg.errors.InvalidTransactionState):
            conn.execute("SELECT * FROM tx")
        conn.rollback()
        conn.execute("SELECT * FROM tx")
        with pytest.raises(psycopg.errors.InvalidTransactionState):
            conn.execute("INSERT INTO tx VALUES (4)")
        conn.rollback()
    with connect(envd) as other:
        assert other.execute("SELECT count(*) FROM tx").fetchone() == (2,)


def test_set_show_and_system_catalog(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("SET application_name = 'basics-test'")
        assert conn.execute("SHOW application_name").fetchone() == ("basics-test",)
        assert conn.info.parameter_status("application_name") == "basics-test"
        conn.execute("CREATE TABLE cat_t (a int)")
        names = {r[0] for r in conn.execute("SELECT name FROM mz_tables").fetchall()}
        assert "cat_t" in names
        assert ("quickstart",) in conn.execute("SHOW CLUSTERS").fetchall()
        apps = {r[0] for r in conn.execute("SELECT application_name FROM mz_sessions")}
        assert "basics-test" in apps or "" in apps
        ts = conn.execute("EXPLAIN TIMESTAMP FOR SELECT * FROM cat_t").fetchall()
        assert "query timestamp" in ts[0][0]


def test_copy_from_and_to(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE cp (a int, b text)")
        with conn.cursor().copy("COPY cp FROM STDIN") as copy:
            for i in range(100):
                copy.write_row((i, f"r{i}"))
        assert conn.execute("SELECT count(*) FROM cp").fetchone() == (100,)
        out = []
        with conn.cursor().copy("COPY (SELECT a, b FROM cp WHERE a < 3 ORDER BY a) TO STDOUT") as c:
            for row in c.rows():
                out.append(row)
        assert out == [("0", "r0"), ("1", "r1"), ("2", "r2")]


def test_table_since_advances(envd: EnvironmentdProcess) -> None:
    """The controller's critical hold moves each table's since forward (compaction)."""
    import re
    import time

    with connect(envd) as conn:
        conn.execute("CREATE TABLE sinces (a int)")
        conn.execute("INSERT INTO sinces VALUES (1)")
        deadline = time.monotonic() + 15
        since = 0
        while time.monotonic() < deadline:
            text = "\n".join(
                r[0] for r in conn.execute("EXPLAIN TIMESTAMP FOR SELECT * FROM sinces")
            )
            m = re.search(r"read frontier:\[\s*(\d+)\]", text)
            assert m is not None, text
            since = int(m.group(1))
            if since > 0:
                break
            time.sleep(0.05)
        assert since > 0, "table since never advanced"
        assert conn.execute("SELECT count(*) FROM sinces").fetchone() == (1,)


def test_zero_downtime_parameters(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        assert conn.execute("SHOW with_0dt_deployment_max_wait").fetchone() is not None
        conn.execute("ALTER SYSTEM SET with_0dt_deployment_max_wait = '5min'")
        assert conn.execute("SHOW with_0dt_deployment_max_wait").fetchone() == ("5min",)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="duration"):
            conn.execute("ALTER SYSTEM SET with_0dt_deployment_max_wait = 'soon'")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="on/off"):
            conn.execute("ALTER SYSTEM SET enable_0dt_caught_up_check = 'maybe'")
        conn.execute("ALTER SYSTEM RESET with_0dt_deployment_max_wait")


def test_savepoints_roll_back_buffered_writes(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE sp (a int)")
        with conn.transaction():
            conn.execute("INSERT INTO sp VALUES (1)")
            with pytest.raises(RuntimeError), conn.transaction():  # SAVEPOINT ... ROLLBACK TO
                conn.execute("INSERT INTO sp VALUES (2)")
                raise RuntimeError("undo the inner block")
            with conn.transaction():  # SAVEPOINT ... RELEASE
                conn.execute("INSERT INTO sp VALUES (3)")
        assert conn.execute("SELECT a FROM sp ORDER BY a").fetchall() == [(1,), (3,)]
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction):
            conn.execute("SAVEPOINT nope")
