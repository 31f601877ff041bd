"""PostgreSQL sources against a misbehaving upstream, end to end (a real environmentd and a
dedicated upstream server with password authentication): a wrong password fails CREATE with
28P01; at run time an upstream that goes away, a password that stops working and a
replication slot taken by someone else each make the source `stalled` with a clear error,
and the source retries (with backoff) until the upstream is back, then continues without a
duplicate or a gap."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from twinstream.testing.clients import sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess
from twinstream.testing.pgserver import PgServer, start_pg_server

USER = "src"
PASSWORD = "src-pw"
_db_counter = itertools.count(1)


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    """Logical decoding; the source's role must log in with a SCRAM password."""
    srv = start_pg_server(wal_level_logical=True)
    try:
        with psycopg.connect(srv.conninfo(), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(f"CREATE ROLE {USER} LOGIN REPLICATION PASSWORD '{PASSWORD}'")
        (srv.data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            f"host all {USER} 127.0.0.1/32 scram-sha-256\n"
            f"host replication {USER} 127.0.0.1/32 scram-sha-256\n"
        )
        with psycopg.connect(srv.conninfo(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def database(server: PgServer) -> Iterator[str]:
    """A fresh upstream database with `t` (100 rows) in publication `p`."""
    if not server.is_running:
        server.start()
    name = f"up{next(_db_counter)}"
    server.create_database(name)
    with psycopg.connect(server.conninfo(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
        conn.execute(f"GRANT SELECT ON t TO {USER}")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) AS g")
    yield name
    if not server.is_running:
        server.start()
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {USER} PASSWORD '{PASSWORD}'")
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE database = %s AND active",
            (name,),
        )
        wait_for(
            "slots released",
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_replication_slots WHERE database = %s AND active",
                    (name,),
                ).fetchone()
                == (0,)
            ),
        )
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s",
            (name,),
        )


def upstream(server: PgServer, db: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.conninfo(db), autocommit=True)


def connection_sql(server: PgServer, db: str, name: str, secret: str, extra: str = "") -> str:
    return (
        f"CREATE CONNECTION {name} TO POSTGRES (HOST '127.0.0.1', PORT {server.port}, "
        f"USER '{USER}', PASSWORD SECRET {secret}, DATABASE '{db}'){extra}"
    )


def create_source(env: EnvironmentdProcess, server: PgServer, db: str) -> None:
    sql(
        env,
        f"CREATE SECRET pw AS '{PASSWORD}'",
        connection_sql(server, db, "pg", "pw"),
        "CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'p') FOR ALL TABLES",
    )
    wait_for("snapshot", lambda: ids(env) == list(range(1, 101)), env)
    wait_for("running", lambda: status(env)[0] == "running", env)


def ids(env: EnvironmentdProcess) -> list[int]:
    got = [int(r[0]) for r in sql(env, "SELECT id FROM t ORDER BY id")[0]]  # type: ignore[call-overload]
    assert len(got) == len(set(got)), "a row appeared twice"
    return got


def status(env: EnvironmentdProcess) -> tuple[str, str]:
    rows = sql(env, "SELECT status, error FROM mz_internal.mz_source_statuses WHERE name = 's'")[0]
    return (str(rows[0][0]), str(rows[0][1])) if rows else ("", "")


def stalled_with(env: EnvironmentdProcess, *words: str) -> bool:
    st, error = status(env)
    return st == "stalled" and any(w in error.lower() for w in words)


def insert(server: PgServer, db: str, lo: int, hi: int) -> None:
    with upstream(server, db) as conn:
        conn.execute(
            "INSERT INTO t SELECT g, 'later' FROM generate_series(%s::int, %s::int) AS g", (lo, hi)
        )


def test_wrong_password(data_dir: Path, server: PgServer, database: str) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(env, "CREATE SECRET bad AS 'nope'")
        with pytest.raises(psycopg.errors.InvalidPassword):
            sql(env, connection_sql(server, database, "c", "bad"))
        # an unvalidated connection: CREATE SOURCE validates and refuses it
        sql(env, connection_sql(server, database, "c", "bad", " WITH (VALIDATE = false)"))
        with pytest.raises(psycopg.errors.InvalidPassword):
            sql(env, "CREATE SOURCE s FROM POSTGRES CONNECTION c (PUBLICATION 'p') FOR ALL TABLES")
        assert sql(env, "SHOW SOURCES")[0] == []
        # the password stops working while the source runs: stalled, then back
        create_source(env, server, database)
        with upstream(server, database) as conn:
            conn.execute(f"ALTER ROLE {USER} PASSWORD 'changed'")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (USER,),
            )
        insert(server, database, 101, 110)
        wait_for("stalled: password", lambda: stalled_with(env, "password"), env)
        with upstream(server, database) as conn:
            conn.execute(f"ALTER ROLE {USER} PASSWORD '{PASSWORD}'")
        wait_for("caught up", lambda: ids(env) == list(range(1, 111)), env)
        wait_for("running again", lambda: status(env)[0] == "running", env)
    finally:
        env.stop()


def test_unreachable_upstream(data_dir: Path, server: PgServer, database: str) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        create_source(env, server, database)
        insert(server, database, 101, 120)
        wait_for("streamed", lambda: len(ids(env)) == 120, env)
        server.kill9()
        wait_for("stalled: unreachable", lambda: stalled_with(env, "connect", "closed"), env)
        assert ids(env) == list(range(1, 121))  # nothing lost while stalled
        server.start()
        insert(server, database, 121, 150)
        wait_for("caught up", lambda: ids(env) == list(range(1, 151)), env)
        wait_for("running again", lambda: status(env)[0] == "running", env)
    finally:
        env.stop()


def test_replication_slot_taken(data_dir: Path, server: PgServer, database: str) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    holder: subprocess.Popen[bytes] | None = None
    try:
        create_source(env, server, database)
        env.stop()
        with upstream(server, database) as conn:
            [(slot,)] = conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
            wait_for(
                "slot released",
                lambda: (
                    conn.execute("SELECT active FROM pg_replication_slots").fetchone() == (False,)
                ),
            )
            # someone else streams from our slot (and consumes nothing: no writes meanwhile)
            holder = subprocess.Popen(
                [
                    "pg_recvlogical",
                    f"--dbname={server.conninfo(database)}",
                    f"--slot={slot}",
                    "--start",
                    "--no-loop",
                    "--file=/dev/null",
                    "--option=proto_version=1",
                    "--option=publication_names=p",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(
                "taken",
                lambda: (
                    conn.execute("SELECT active FROM pg_replication_slots").fetchone() == (True,)
                ),
            )
        env.start()
        wait_for("stalled: slot in use", lambda: stalled_with(env, "active", "in use"), env)
        holder.terminate()
        holder.wait(timeout=30)
        insert(server, database, 101, 130)
        wait_for("caught up", lambda: ids(env) == list(range(1, 131)), env)
        wait_for("running again", lambda: status(env)[0] == "running", env)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait()
        env.stop()
