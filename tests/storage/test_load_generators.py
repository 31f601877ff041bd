"""Load-generator sources in a real environmentd: COUNTER ticks and is readable, AUCTION has
consistent keys, kill -9 during ingestion loses and duplicates nothing, bad input errors."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from twinstream.testing.clients import sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess


def counter_values(env: EnvironmentdProcess, name: str = "c") -> list[int]:
    rows = sql(env, f"SELECT counter FROM {name} ORDER BY counter")[0]
    return [int(r[0]) for r in rows]  # type: ignore[call-overload]


def assert_no_gap_no_dup(values: list[int]) -> None:
    assert values == list(range(1, len(values) + 1)), values


def test_counter_ticks_and_is_readable(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(env, "CREATE SOURCE c FROM LOAD GENERATOR COUNTER (TICK INTERVAL '20ms')")
        wait_for("5 counter rows", lambda: len(counter_values(env)) >= 5, env)
        assert_no_gap_no_dup(counter_values(env))
        [[(offset,)]] = sql(env, 'SELECT "offset" FROM c_progress')
        assert isinstance(offset, int) and offset >= 5
        shown = sql(env, "SHOW SOURCES")[0]
        assert [r[:2] for r in shown] == [("c", "load-generator"), ("c_progress", "progress")]
        wait_for(
            "status running",
            lambda: (
                sql(env, "SELECT status FROM mz_internal.mz_source_statuses WHERE name='c'")[0]
                == [("running",)]
            ),
            env,
        )
        with pytest.raises(psycopg.errors.WrongObjectType):
            sql(env, "INSERT INTO c VALUES (1)")
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            sql(env, "DROP SOURCE c_progress")
        sql(env, "DROP SOURCE c")
        assert sql(env, "SHOW SOURCES")[0] == []
        with pytest.raises(psycopg.errors.UndefinedTable):
            sql(env, "SELECT * FROM c")
    finally:
        env.stop()


def test_auction_tables_have_consistent_keys(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(
            env,
            "CREATE SOURCE a FROM LOAD GENERATOR AUCTION (TICK INTERVAL '20ms') FOR ALL TABLES",
        )
        wait_for(
            "20 auctions", lambda: sql(env, "SELECT count(*) FROM auctions")[0][0][0] >= 20, env
        )  # type: ignore[operator]
        [orgs, users, accounts, orphans] = [
            r[0][0]
            for r in sql(
                env,
                "SELECT count(*) FROM organizations",
                "SELECT count(*) FROM users",
                "SELECT count(*) FROM accounts",
                """SELECT (SELECT count(*) FROM bids b LEFT JOIN auctions a ON a.id = b.auction_id
                           WHERE a.id IS NULL)
                        + (SELECT count(*) FROM bids b LEFT JOIN users u ON u.id = b.buyer
                           WHERE u.id IS NULL)
                        + (SELECT count(*) FROM auctions a LEFT JOIN users u ON u.id = a.seller
                           WHERE u.id IS NULL)
                        + (SELECT count(*) FROM users u LEFT JOIN organizations o
                           ON o.id = u.org_id WHERE o.id IS NULL)""",
            )
        ]
        assert orgs == 10 and users == 100 and accounts == 10
        assert orphans == 0
        assert sql(env, "SELECT count(*) FROM bids")[0][0][0] > 0  # type: ignore[operator]
        [[(dups,)]] = sql(env, "SELECT count(*) - count(DISTINCT id) FROM bids")
        assert dups == 0
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            sql(env, "DROP SOURCE bids")
        sql(env, "DROP SOURCE a")
        assert sql(env, "SHOW SOURCES")[0] == []
    finally:
        env.stop()


def test_kill9_during_ingestion_no_dup_no_gap(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(env, "CREATE SOURCE c FROM LOAD GENERATOR COUNTER (TICK INTERVAL '5ms')")
        wait_for("some rows", lambda: len(counter_values(env)) >= 10, env)
        env.kill9()
        env.start()
        before = len(counter_values(env))
        assert_no_gap_no_dup(counter_values(env))
        wait_for("ingestion resumes", lambda: len(counter_values(env)) >= before + 10, env)
        values = counter_values(env)
        assert_no_gap_no_dup(values)
        [[(offset,)]] = sql(env, 'SELECT "offset" FROM c_progress')
        assert offset >= len(values)  # the binding covers every row we can see
    finally:
        env.stop()


BAD_INPUT: list[tuple[str, type[Exception]]] = [
    ("CREATE SOURCE x FROM LOAD GENERATOR NOPE", psycopg.errors.FeatureNotSupported),
    (
        "CREATE SOURCE x FROM LOAD GENERATOR COUNTER (TICK INTERVAL 'soon')",
        psycopg.errors.InvalidParameterValue,
    ),
    (
        "CREATE SOURCE x FROM LOAD GENERATOR COUNTER (TICK INTERVAL '0ms')",
        psycopg.errors.InvalidParameterValue,
    ),
    ("CREATE SOURCE x FROM LOAD GENERATOR AUCTION", psycopg.errors.SyntaxError),
    (
        "CREATE SOURCE x FROM LOAD GENERATOR COUNTER FOR ALL TABLES",
        psycopg.errors.SyntaxError,
    ),
    (
        "CREATE SOURCE x FROM LOAD GENERATOR AUCTION FOR TABLES (nope)",
        psycopg.errors.UndefinedTable,
    ),
    (
        "CREATE SOURCE x FROM LOAD GENERATOR COUNTER (MAX CARDINALITY 3)",
        psycopg.errors.FeatureNotSupported,
    ),
    ("CREATE SOURCE x FROM LOAD GENERATOR COUNTER IN CLUSTER nope", psycopg.errors.SyntaxError),
]


def test_bad_input(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        for stmt, error in BAD_INPUT:
            with pytest.raises(error):
                sql(env, stmt)
        assert sql(env, "SHOW SOURCES")[0] == []
    finally:
        env.stop()
