"""CREATE SOURCE ... FROM POSTGRES in a real environmentd against a real upstream PostgreSQL
(wal_level=logical): snapshot, then inserts / updates / deletes as whole transactions; kill -9
resumes without duplicates or gaps; bad input errors with SQLSTATEs."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import psycopg
import pytest

from twinstream.testing.clients import sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess
from twinstream.testing.http import http


def _connection_sql(pg_url: str, name: str = "pg") -> str:
    u = urllib.parse.urlsplit(pg_url)
    return (
        f"CREATE CONNECTION {name} TO POSTGRES (HOST '{u.hostname}', PORT {u.port}, "
        f"USER '{u.username or 'postgres'}', PASSWORD SECRET pgpass, "
        f"DATABASE '{u.path.lstrip('/')}')"
    )


@pytest.fixture
def upstream(pg_url: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(pg_url, autocommit=True)
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
    conn.execute("CREATE PUBLICATION p FOR TABLE t")
    conn.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) AS g")
    yield conn  # type: ignore[misc]
    conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE database = current_database() AND NOT active"
    )
    conn.close()


def rows(env: EnvironmentdProcess) -> list[tuple[object, ...]]:
    return sql(env, "SELECT id, v FROM t ORDER BY id")[0]


def test_postgres_source_snapshot_changes_restart(
    data_dir: Path, pg_url: str, upstream: psycopg.Connection[tuple[object, ...]]
) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(
            env,
            "CREATE SECRET pgpass AS ''",
            _connection_sql(pg_url),
            "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'p') FOR ALL TABLES",
        )
        wait_for("snapshot", lambda: len(rows(env)) == 1000, env)
        with upstream.transaction():
            upstream.execute("INSERT INTO t VALUES (1001, 'new')")
            upstream.execute("UPDATE t SET v = 'changed' WHERE id = 1")
            upstream.execute("DELETE FROM t WHERE id = 2")
        wait_for("changes", lambda: (1001, "new") in rows(env), env)
        got = rows(env)
        assert (1, "changed") in got and all(r[0] != 2 for r in got) and len(got) == 1000
        env.kill9()
        upstream.execute("INSERT INTO t SELECT g, 'later' FROM generate_series(1002, 1100) AS g")
        env.start()
        wait_for("resumed", lambda: len(rows(env)) == 1099, env)
        got = rows(env)
        assert len({r[0] for r in got}) == len(got) == 1099  # no duplicate
        [[(offset,)]] = sql(env, 'SELECT "offset" FROM s_progress')
        assert isinstance(offset, int) and offset > 0
        wait_for(
            "running",
            lambda: (
                sql(env, "SELECT status FROM mz_internal.mz_source_statuses WHERE name='s'")[0]
                == [("running",)]
            ),
            env,
        )
        sql(env, "DROP SOURCE s")
        wait_for(
            "slot dropped",
            lambda: (
                upstream.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
            ),
        )
    finally:
        env.stop()


def test_postgres_bad_input(
    data_dir: Path, pg_url: str, upstream: psycopg.Connection[tuple[object, ...]]
) -> None:
    upstream.execute("CREATE TABLE nopk (a int)")
    upstream.execute("CREATE PUBLICATION p2 FOR TABLE nopk")
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(env, "CREATE SECRET pgpass AS ''", _connection_sql(pg_url))
        cases: list[tuple[str, type[Exception]]] = [
            (
                "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'nope') FOR ALL TABLES",
                psycopg.errors.UndefinedObject,
            ),
            (
                "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'p2') FOR ALL TABLES",
                psycopg.errors.ObjectNotInPrerequisiteState,
            ),
            (
                "CREATE SOURCE s FROM POSTGRES CONNECTION nope (PUBLICATION 'p') FOR ALL TABLES",
                psycopg.errors.UndefinedObject,
            ),
            (
                "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'p')",
                psycopg.errors.SyntaxError,
            ),
            (
                "CREATE CONNECTION bad TO POSTGRES (HOST '127.0.0.1', PORT 1, USER 'u', "
                "DATABASE 'd')",
                psycopg.errors.SqlclientUnableToEstablishSqlconnection,
            ),
            (
                "CREATE CONNECTION bad TO POSTGRES (HOST '127.0.0.1', PORT 1, USER 'u', "
                "PASSWORD 'plain', DATABASE 'd')",
                psycopg.errors.InvalidParameterValue,
            ),
        ]
        for stmt, error in cases:
            with pytest.raises(error):
                sql(env, stmt)
        assert sql(env, "SHOW SOURCES")[0] == []
    finally:
        env.stop()


def test_postgres_handover_exactly_once(
    data_dir: Path, pg_url: str, upstream: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A row inserted upstream every 10 ms across a promotion appears exactly once."""
    import threading
    import time

    from twinstream.testing.clients import leader_status

    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    stop = threading.Event()
    inserted: list[int] = []

    def writer() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            n = 10_000
            while not stop.is_set():
                conn.execute("INSERT INTO t VALUES (%s, 'w')", (n,))
                inserted.append(n)
                n += 1
                stop.wait(0.01)  # the upstream's insert pace

    thread = threading.Thread(target=writer, daemon=True)
    try:
        sql(
            old,
            "CREATE SECRET pgpass AS ''",
            _connection_sql(pg_url),
            "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'p') FOR ALL TABLES",
        )
        wait_for("snapshot", lambda: len(rows(old)) >= 1000, old)
        thread.start()
        new.start()
        wait_for("ReadyToPromote", lambda: leader_status(new) == "ReadyToPromote", new)
        wait_for("the new one follows", lambda: len(rows(new)) > 1000 + 5, new)
        promoted = http(new.internal_http_port, "POST", "/api/leader/promote", timeout_s=30)
        assert promoted[0] == 200
        wait_for("IsLeader", lambda: leader_status(new) == "IsLeader", new)
        assert old.proc is not None
        old.proc.wait(timeout=30)
        after = len(inserted)
        wait_for("new leader ingests", lambda: len(inserted) >= after + 30)
        stop.set()
        thread.join(timeout=30)
        deadline = time.monotonic() + 60
        want = set(range(1, 1001)) | set(inserted)
        while time.monotonic() < deadline:
            got = [r[0] for r in rows(new)]
            if set(got) == want:
                break
            time.sleep(0.05)
        got = [r[0] for r in rows(new)]
        assert len(got) == len(set(got)), "a row appeared twice"
        assert set(got) == want, f"missing: {sorted(want - set(got))[:10]}"
    finally:
        stop.set()
        old.stop()
        new.stop()


def test_postgres_stalls_with_error(
    data_dir: Path, pg_url: str, upstream: psycopg.Connection[tuple[object, ...]]
) -> None:
    """An upstream that breaks after CREATE SOURCE: the source reports `stalled` with the
    error and keeps retrying; nothing already ingested is lost."""
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(
            env,
            "CREATE SECRET pgpass AS ''",
            _connection_sql(pg_url),
            "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'p') FOR ALL TABLES",
        )
        wait_for("snapshot", lambda: len(rows(env)) == 1000, env)
        upstream.execute("DROP PUBLICATION p")
        upstream.execute("INSERT INTO t VALUES (5000, 'x')")

        def stalled() -> bool:
            got = sql(env, "SELECT status, error FROM mz_internal.mz_source_statuses")[0]
            return len(got) == 1 and got[0][0] == "stalled" and "publication" in str(got[0][1])

        wait_for("stalled with the error", stalled, env)
        assert len(rows(env)) == 1000
    finally:
        env.stop()


def test_postgres_10k_snapshot_then_10k_changes(data_dir: Path, pg_url: str) -> None:
    """End to end: a 10k-row initial snapshot, then 10k changes upstream (inserts, updates,
    deletes in many transactions); the source ends equal to the upstream table."""
    env = EnvironmentdProcess(data_dir)
    with psycopg.connect(pg_url, autocommit=True) as up:
        up.execute("CREATE TABLE big (id int PRIMARY KEY, v int)")
        up.execute("ALTER TABLE big REPLICA IDENTITY FULL")
        up.execute("CREATE PUBLICATION pb FOR TABLE big")
        up.execute("INSERT INTO big SELECT g, 0 FROM generate_series(1, 10000) AS g")
        env.start()
        try:
            sql(
                env,
                "CREATE SECRET pgpass AS ''",
                _connection_sql(pg_url),
                "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'pb') FOR ALL TABLES",
            )

            def contents() -> list[tuple[object, ...]]:
                return sql(env, "SELECT id, v FROM big ORDER BY id")[0]

            wait_for("snapshot", lambda: len(contents()) == 10_000, env)
            assert contents() == [(i, 0) for i in range(1, 10_001)]
            # 10k changes in 100 transactions: 4k updates, 2k deletes, 4k inserts
            for b in range(100):
                with up.transaction():
                    lo = b * 40 + 1
                    up.execute(
                        "UPDATE big SET v = v + 1 WHERE id BETWEEN %s::int AND %s::int",
                        (lo, lo + 39),
                    )
                    up.execute(
                        "DELETE FROM big WHERE id BETWEEN %s::int AND %s::int",
                        (5001 + b * 20, 5020 + b * 20),
                    )
                    up.execute(
                        "INSERT INTO big SELECT g, 2 FROM generate_series(%s::int, %s::int) AS g",
                        (20_001 + b * 40, 20_040 + b * 40),
                    )
            want = up.execute("SELECT id, v FROM big ORDER BY id").fetchall()
            assert len(want) == 12_000
            wait_for("the changes", lambda: contents() == want, env)
        finally:
            env.stop()
