"""Temporary tables and views: session-local, in memory only, gone with their session."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from twinstream.adapter.names import CatalogIndex, ItemRef
from twinstream.adapter.temporary import temp_schema
from twinstream.adapter.vars import SessionVars
from twinstream.catalog.state import CatalogState
from twinstream.testing.clients import leader_status, post, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process

#: How long a condition may take to become true before a test fails.
DEADLINE_S = 30.0


def wait_until_gone(env: EnvironmentdProcess, sql: str) -> None:
    """Session end is processed asynchronously by the server: poll with a deadline."""
    deadline = time.monotonic() + DEADLINE_S
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        while conn.execute(sql).fetchone() != (0,):
            assert time.monotonic() < deadline, env.log_tail()
            time.sleep(0.05)  # poll interval


def test_visible_only_to_its_session_and_shadows_durable(envd: EnvironmentdProcess) -> None:
    with (
        psycopg.connect(envd.conninfo(), autocommit=True) as a,
        psycopg.connect(envd.conninfo(), autocommit=True) as b,
    ):
        a.execute("CREATE TABLE shared (k int, v text)")
        a.execute("INSERT INTO shared VALUES (1, 'durable'), (2, 'two')")
        a.execute("CREATE TEMPORARY TABLE scratch (k int, w text)")
        a.execute("INSERT INTO scratch VALUES (1, 'x'), (2, 'y'), (3, 'z')")
        a.execute("UPDATE scratch SET w = 'yy' WHERE k = 2")
        a.execute("DELETE FROM scratch WHERE k = 3")
        with a.cursor().copy("COPY scratch FROM STDIN") as copy:
            copy.write_row((4, "copied"))
        joined = a.execute(
            "SELECT s.k, s.w, d.v FROM scratch s LEFT JOIN shared d ON d.k = s.k ORDER BY s.k"
        ).fetchall()
        assert joined == [(1, "x", "durable"), (2, "yy", "two"), (4, "copied", None)]
        assert a.execute("SELECT count(*) FROM pg_temp.scratch").fetchone() == (3,)
        assert a.execute("SELECT count(*) FROM mz_temp.scratch").fetchone() == (3,)
        # the other session sees nothing, by any name
        for name in ("scratch", "pg_temp.scratch", "mz_temp.scratch", "public.scratch"):
            with pytest.raises(psycopg.errors.UndefinedTable):
                b.execute(f"SELECT * FROM {name}")
        # both sessions may use the same temporary name
        b.execute("CREATE TEMP TABLE scratch (only_b int)")
        b.execute("INSERT INTO scratch VALUES (42)")
        assert b.execute("SELECT * FROM scratch").fetchall() == [(42,)]
        assert a.execute("SELECT count(*) FROM scratch").fetchone() == (3,)
        # a temporary table is searched before public (PostgreSQL's search_path rule)
        a.execute("CREATE TEMP TABLE shared (k int, v text)")
        assert a.execute("SELECT count(*) FROM shared").fetchone() == (0,)
        assert a.execute("SELECT count(*) FROM public.shared").fetchone() == (2,)
        assert b.execute("SELECT count(*) FROM shared").fetchone() == (2,)
        a.execute("DROP TABLE shared")  # the temporary one
        assert a.execute("SELECT count(*) FROM shared").fetchone() == (2,)
        # a view over a temporary table is temporary
        a.execute("CREATE VIEW big AS SELECT k FROM scratch WHERE k > 1")
        assert a.execute("SELECT k FROM big ORDER BY k").fetchall() == [(2,), (4,)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            b.execute("SELECT * FROM big")
        # catalogs: the table is temporary (relpersistence 't') and described by its session
        row = a.execute(
            "SELECT relpersistence FROM pg_catalog.pg_class WHERE relname = 'scratch' "
            "AND pg_catalog.pg_table_is_visible(oid)"
        ).fetchone()
        assert row == ("t",)
        # the temporary schema is searched implicitly: current_schema() stays public
        cur = a.execute("SELECT current_schema(), current_schemas(true)").fetchone()
        assert cur is not None and cur[0] == "public"
        assert cur[1][0].startswith("mz_temp_") and cur[1][1:] == ["pg_catalog", "public"]
        a.execute("DROP VIEW big")
        a.execute("DROP TABLE scratch")
        with pytest.raises(psycopg.errors.UndefinedTable):
            a.execute("SELECT * FROM scratch")
        assert b.execute("SELECT * FROM scratch").fetchall() == [(42,)]


def test_errors(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE t_err (a int)")
        with pytest.raises(psycopg.errors.DuplicateTable):
            conn.execute("CREATE TEMP TABLE t_err (a int)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS t_err (a int)")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("CREATE MATERIALIZED VIEW mv_err AS SELECT a FROM t_err")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("CREATE MATERIALIZED VIEW pg_temp.mv_err AS SELECT 1 AS one")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("CREATE INDEX ON t_err (a)")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("SUBSCRIBE (SELECT a FROM t_err)")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("SUBSCRIBE t_err")
        with pytest.raises(psycopg.errors.InvalidTableDefinition):  # 42P16
            conn.execute("CREATE TEMP TABLE public.t_err2 (a int)")
        # nothing was created by the failed statements
        for name in ("mv_err", "t_err2"):
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute(f"SELECT * FROM {name}")


def test_session_end_drops_and_restart_does_not_bring_back(tmp_path: Path) -> None:
    with environmentd_process(tmp_path / "env") as env:
        with psycopg.connect(env.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE keep (a int)")
            conn.execute("CREATE TEMPORARY TABLE gone (a int)")
            conn.execute("CREATE TEMPORARY VIEW gone_v AS SELECT a FROM keep")
            conn.execute("INSERT INTO gone VALUES (1)")
            n = conn.execute("SELECT count(*) FROM mz_catalog.mz_tables WHERE name = 'gone'")
            assert n.fetchone() == (1,)
        wait_until_gone(env, "SELECT count(*) FROM mz_catalog.mz_tables WHERE name = 'gone'")
        with psycopg.connect(env.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TEMPORARY TABLE survives_nothing (a int)")
            env.restart()
        with psycopg.connect(env.conninfo(), autocommit=True) as conn:
            names = conn.execute(
                "SELECT name FROM mz_catalog.mz_tables WHERE name IN "
                "('gone', 'survives_nothing', 'keep') ORDER BY name"
            ).fetchall()
            assert names == [("keep",)]
            conn.execute("CREATE TEMP TABLE gone (b text)")  # the name is free again
            conn.execute("INSERT INTO gone VALUES ('fresh')")
            assert conn.execute("SELECT * FROM gone").fetchall() == [("fresh",)]


def test_transactions_keys_and_discard(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE durable_tx (a int)")
        conn.execute("CREATE TEMP TABLE keyed (k int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO keyed VALUES (1, 'one')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO keyed VALUES (1, 'again')")
        # one transaction writes a temporary and a durable table: both commit
        conn.execute("BEGIN")
        conn.execute("INSERT INTO keyed VALUES (2, 'two')")
        conn.execute("INSERT INTO durable_tx VALUES (7)")
        conn.execute("COMMIT")
        # a rolled-back write to a temporary table leaves nothing
        conn.execute("BEGIN")
        conn.execute("INSERT INTO keyed VALUES (3, 'three')")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT k FROM keyed ORDER BY k").fetchall() == [(1,), (2,)]
        assert conn.execute("SELECT a FROM durable_tx").fetchall() == [(7,)]
        conn.execute("DISCARD ALL")  # PostgreSQL: drops the session's temporary tables
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM keyed")
        assert conn.execute("SELECT a FROM durable_tx").fetchall() == [(7,)]


PSQL = shutil.which("psql")


@pytest.mark.skipif(PSQL is None, reason="psql is not installed")
def test_psql_describes_a_temporary_table(envd: EnvironmentdProcess) -> None:
    out = subprocess.run(
        [PSQL or "psql", "-X", "-A", "-v", "ON_ERROR_STOP=1", "-d", envd.url(),
         "-c", "CREATE TEMP TABLE described (a int NOT NULL, b text)",
         "-c", "\\d described", "-c", "\\dt"],
        capture_output=True, text=True, timeout=DEADLINE_S, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith('Table "mz_temp_') and "described" in line for line in lines)
    assert "a|integer||not null|" in lines
    assert any(line.startswith("mz_temp_") and "|described|table|" in line for line in lines)


def test_read_only_generation_allows_temporary_tables(tmp_path: Path) -> None:
    """A temporary table touches nothing durable, so a read-only generation serves it; the
    leader (and the catalog it shares) never sees it."""
    data_dir = tmp_path / "env"
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    try:
        with psycopg.connect(old.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE base (k int, v text)")
            conn.execute("INSERT INTO base VALUES (1, 'b1'), (2, 'b2')")
        new.start()
        with psycopg.connect(new.conninfo(), autocommit=True) as conn:
            deadline = time.monotonic() + DEADLINE_S
            while conn.execute("SELECT count(*) FROM base").fetchone() != (2,):
                assert time.monotonic() < deadline, new.log_tail()
                time.sleep(0.05)  # poll interval
            conn.execute("CREATE TEMP TABLE ro_scratch (k int, w text)")
            conn.execute("INSERT INTO ro_scratch VALUES (1, 'w1'), (3, 'w3')")
            conn.execute("UPDATE ro_scratch SET w = 'w3!' WHERE k = 3")
            rows = conn.execute(
                "SELECT s.k, s.w, b.v FROM ro_scratch s LEFT JOIN base b USING (k) ORDER BY 1"
            ).fetchall()
            assert rows == [(1, "w1", "b1"), (3, "w3!", None)]
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO base VALUES (9, 'no')")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE TABLE durable_no (a int)")
            with (
                psycopg.connect(old.conninfo(), autocommit=True) as on_old,
                pytest.raises(psycopg.errors.UndefinedTable),
            ):
                on_old.execute("SELECT * FROM ro_scratch")
            # promotion keeps the session's temporary table; now durable writes work too
            port = new.internal_http_port
            post(port, "/api/leader/promote", b"")
            wait_for("ReadyToPromote", lambda: leader_status(new) != "Initializing", new)
            code, _headers, body = post(port, "/api/leader/promote", b"")
            assert code == 200, body
            wait_for("IsLeader", lambda: leader_status(new) == "IsLeader", new)
            conn.execute("INSERT INTO base VALUES (3, 'b3')")
            conn.execute("INSERT INTO ro_scratch VALUES (2, 'w2')")
            rows = conn.execute(
                "SELECT s.k, b.v FROM ro_scratch s JOIN base b USING (k) ORDER BY 1"
            ).fetchall()
            assert rows == [(1, "b1"), (2, "b2"), (3, "b3")]
            conn.execute("DROP TABLE ro_scratch")
    finally:
        new.stop()
        old.stop()


def test_index_resolution_is_per_session() -> None:
    """Pure: the name index keeps sessions' temporary schemas apart and ignores durable
    temporary rows written by older builds."""
    state = CatalogState(
        {
            ("database", "u1"): {"name": "db"},
            ("schema", "u1"): {"name": "public", "database_id": "u1"},
            ("item", "u1"): {"name": "t", "schema_id": "u1", "type": "table"},
            ("item", "u2"): {
                "name": "legacy",
                "schema_id": "u1",
                "type": "table",
                "temporary_session": 3,
            },
        }
    )
    mine = ItemRef("t1", "db", temp_schema(1), "t", {"type": "table", "temporary_session": 1})
    index = CatalogIndex(state, {"t1": mine})
    assert index.resolve_item(["legacy"], "db", ["public"]) is None
    one, two = SessionVars(), SessionVars()
    one.temp_schema, two.temp_schema = temp_schema(1), temp_schema(2)
    assert one.search_path() == [temp_schema(1), "public"]
    resolved_one = index.resolve_item(["t"], "db", one.search_path())
    resolved_two = index.resolve_item(["t"], "db", two.search_path())
    assert resolved_one is not None and resolved_one.id == "t1"
    assert resolved_two is not None and resolved_two.id == "u1"
    for schema in ("pg_temp", "mz_temp", temp_schema(1)):
        found = index.resolve_item([schema, "t"], "db", one.search_path())
        assert found is not None and found.id == "t1"
        assert index.resolve_item([schema, "t"], "db", two.search_path()) is None
    # naming another session's schema in search_path does not make it searched
    two.set("search_path", f"{temp_schema(1)}, public")
    assert two.search_path() == [temp_schema(2), "public"]
    # pg_temp named explicitly later in the path: temporary items lose to public
    one.set("search_path", "public, pg_temp")
    assert one.search_path() == ["public", temp_schema(1)]
    resolved = index.resolve_item(["t"], "db", one.search_path())
    assert resolved is not None and resolved.id == "u1"
