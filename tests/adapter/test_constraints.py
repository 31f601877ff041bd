"""PRIMARY KEY through a real environmentd: duplicate keys are 23505 with PostgreSQL's message,
key columns are NOT NULL (23502), every write path is checked (INSERT, UPDATE, COPY,
transactions, concurrent sessions), and the key survives a restart."""

from __future__ import annotations

import threading

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess


def connect(envd: EnvironmentdProcess, **kw: object) -> psycopg.Connection:
    return psycopg.connect(envd.conninfo(), autocommit=True, **kw)  # type: ignore[arg-type]


def test_duplicate_and_null_keys_are_rejected(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE pk_basic (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO pk_basic VALUES (1, 'a'), (2, 'b')")
        with pytest.raises(psycopg.errors.UniqueViolation) as info:
            conn.execute("INSERT INTO pk_basic VALUES (1, 'c')")
        assert str(info.value).startswith(
            'duplicate key value violates unique constraint "pk_basic_pkey"'
        )
        assert info.value.diag.message_detail == "Key (id)=(1) already exists."
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO pk_basic VALUES (3, 'c'), (3, 'd')")
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("INSERT INTO pk_basic (v) VALUES ('no key')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE pk_basic SET id = 2 WHERE id = 1")
        # updates that keep the key, and moving a key to a free value, are fine
        conn.execute("UPDATE pk_basic SET v = 'z' WHERE id = 1")
        conn.execute("UPDATE pk_basic SET id = 10 WHERE id = 2")
        conn.execute("DELETE FROM pk_basic WHERE id = 10")
        conn.execute("INSERT INTO pk_basic VALUES (10, 'again')")
        rows = conn.execute("SELECT id, v FROM pk_basic ORDER BY id").fetchall()
        assert rows == [(1, "z"), (10, "again")]


def test_table_constraint_composite_key(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE pk_comp (a int, b text, CONSTRAINT pk_c PRIMARY KEY (a, b))")
        conn.execute("INSERT INTO pk_comp VALUES (1, 'x'), (1, 'y')")
        with pytest.raises(psycopg.errors.UniqueViolation) as info:
            conn.execute("INSERT INTO pk_comp VALUES (1, 'x')")
        assert info.value.diag.constraint_name is None or info.value.diag.constraint_name == "pk_c"
        assert info.value.diag.message_detail == "Key (a, b)=(1, x) already exists."
        with pytest.raises(psycopg.errors.InvalidTableDefinition):
            conn.execute("CREATE TABLE pk_two (a int PRIMARY KEY, b int PRIMARY KEY)")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("CREATE TABLE pk_bad (a int, PRIMARY KEY (c))")


def test_transactions_and_copy_are_checked(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE pk_txn (id int PRIMARY KEY)")
        conn.execute("INSERT INTO pk_txn VALUES (1)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO pk_txn VALUES (2)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO pk_txn VALUES (2)")  # against the buffered write
        conn.execute("ROLLBACK")
        with (
            pytest.raises(psycopg.errors.UniqueViolation),
            conn.cursor().copy("COPY pk_txn FROM STDIN") as cp,
        ):
            cp.write("5\n1\n")
        assert conn.execute("SELECT id FROM pk_txn ORDER BY id").fetchall() == [(1,)]


def test_concurrent_inserts_of_one_key_admit_one(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE pk_race (id int PRIMARY KEY, who int)")
    outcomes: list[str] = []
    lock = threading.Lock()

    def insert(who: int) -> None:
        with connect(envd) as c:
            for key in range(20):
                try:
                    c.execute("INSERT INTO pk_race VALUES (%s, %s)", (key, who))
                    result = "ok"
                except psycopg.errors.UniqueViolation:
                    result = "dup"
                with lock:
                    outcomes.append(result)

    threads = [threading.Thread(target=insert, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 20 and outcomes.count("dup") == 60
    with connect(envd) as conn:
        rows = conn.execute("SELECT id, count(*) FROM pk_race GROUP BY id").fetchall()
        assert sorted(rows) == [(k, 1) for k in range(20)]


def test_primary_key_survives_restart(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        conn.execute("CREATE TABLE pk_restart (id int PRIMARY KEY)")
        conn.execute("INSERT INTO pk_restart VALUES (7)")
    envd.restart()
    with connect(envd) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO pk_restart VALUES (7)")
        row = conn.execute(
            "SELECT conname, contype FROM pg_constraint c JOIN pg_class r ON c.conrelid = r.oid "
            "WHERE r.relname = 'pk_restart'"
        ).fetchone()
        assert row == ("pk_restart_pkey", "p")
