"""PostgreSQL clients' catalog queries against a real environmentd: psql's backslash commands,
SQLAlchemy reflection, asyncpg and psycopg type introspection, described column names."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa

from twinstream.testing.environmentd import EnvironmentdProcess

SETUP = [
    "CREATE TABLE cat_items (id int4 NOT NULL, name varchar(20) DEFAULT 'none', "
    "amount numeric(10,2), created timestamp, flag bool, doc jsonb)",
    "CREATE TABLE cat_other (a int8)",
    "CREATE VIEW cat_items_v AS SELECT id, amount FROM cat_items",
    "CREATE MATERIALIZED VIEW cat_counts AS SELECT count(*) AS n FROM cat_items",
    "CREATE INDEX cat_items_name_idx ON cat_items (name)",
    "CREATE SCHEMA cat_s2",
    "CREATE TABLE cat_s2.hidden (h text)",
]


@pytest.fixture(scope="module")
def env(envd: EnvironmentdProcess) -> EnvironmentdProcess:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        for sql in SETUP:
            conn.execute(sql)
    return envd


# --------------------------------------------------------------------------- psql

PSQL = shutil.which("psql")
needs_psql = pytest.mark.skipif(PSQL is None, reason="psql is not installed")


def psql(env: EnvironmentdProcess, command: str) -> list[str]:
    """Run one meta-command with psql -X -A (unaligned, titles and headers kept)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    environ.update(PSQLRC="/dev/null", PGCONNECT_TIMEOUT="10")
    proc = subprocess.run(
        [PSQL or "psql", "-X", "-A", "-v", "ON_ERROR_STOP=1", "-d", env.url(), "-c", command],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr + proc.stdout
    return proc.stdout.splitlines()


@needs_psql
def test_psql_dt(env: EnvironmentdProcess) -> None:
    out = psql(env, "\\dt")
    assert out[0] == "List of relations"
    assert out[1] == "Schema|Name|Type|Owner"
    assert "public|cat_items|table|twinstream" in out
    assert "public|cat_other|table|twinstream" in out
    assert not any("hidden" in line or "mz_" in line for line in out)  # not on search_path
    assert psql(env, "\\dt cat_s2.*")[2:3] == ["cat_s2|hidden|table|twinstream"]


@needs_psql
def test_psql_d_table(env: EnvironmentdProcess) -> None:
    out = psql(env, "\\d cat_items")
    assert out[:8] == [
        'Table "public.cat_items"',
        "Column|Type|Collation|Nullable|Default",
        "id|integer||not null|",
        "name|character varying(20)|||'none'",
        "amount|numeric(10,2)|||",
        "created|timestamp without time zone|||",
        "flag|boolean|||",
        "doc|jsonb|||",
    ]
    plus = psql(env, "\\d+ cat_items")
    assert plus[0] == 'Table "public.cat_items"'
    assert "id|integer||not null||plain|||" in plus
    assert "Access method: heap" in plus


@needs_psql
def test_psql_d_lists_everything(env: EnvironmentdProcess) -> None:
    out = psql(env, "\\d")
    assert "public|cat_items|table|twinstream" in out
    assert "public|cat_items_v|view|twinstream" in out
    assert "public|cat_counts|materialized view|twinstream" in out


@needs_psql
def test_psql_views_indexes_matviews(env: EnvironmentdProcess) -> None:
    assert "public|cat_items_v|view|twinstream" in psql(env, "\\dv")
    assert "public|cat_counts|materialized view|twinstream" in psql(env, "\\dm")
    assert any(
        ln.startswith("public|cat_items_name_idx|index|twinstream|") for ln in psql(env, "\\di")
    )
    view = psql(env, "\\d+ cat_items_v")
    assert view[0] == 'View "public.cat_items_v"'
    assert view[2:4] == ["id|integer||||plain|", "amount|numeric(10,2)||||main|"]
    assert "View definition:" in view


@needs_psql
def test_psql_l_dn_du(env: EnvironmentdProcess) -> None:
    databases = psql(env, "\\l")
    assert databases[0] == "List of databases"
    assert any(ln.startswith("twinstream|twinstream|UTF8|") for ln in databases)
    schemas = psql(env, "\\dn")
    assert "public|twinstream" in schemas and "cat_s2|twinstream" in schemas
    assert not any(ln.startswith("pg_") for ln in schemas)
    roles = psql(env, "\\du")
    assert any(ln.startswith("twinstream|Superuser") for ln in roles)


@needs_psql
@pytest.mark.parametrize(
    "command", ["\\df", "\\dT", "\\dx", "\\dp", "\\ds", "\\dd", "\\dL", "\\dC", "\\dy", "\\l+"]
)
def test_psql_other_commands_do_not_fail(env: EnvironmentdProcess, command: str) -> None:
    psql(env, command)


# --------------------------------------------------------------------------- SQLAlchemy


@pytest.fixture(scope="module")
def engine(env: EnvironmentdProcess) -> Iterator[sa.Engine]:
    url = f"postgresql+psycopg://twinstream@127.0.0.1:{env.sql_port}/twinstream"
    # use_native_hstore=False: the hstore lookup needs SAVEPOINT (not supported)
    eng = sa.create_engine(url, use_native_hstore=False, connect_args={"prepare_threshold": None})
    try:
        yield eng
    finally:
        eng.dispose()


def test_sqlalchemy_connects_and_reads_version(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    assert engine.dialect.server_version_info == (15, 0)
    assert engine.dialect.default_schema_name == "public"


def test_sqlalchemy_inspector(engine: sa.Engine) -> None:
    insp = sa.inspect(engine)
    tables = insp.get_table_names()
    assert {"cat_items", "cat_other"} <= set(tables)
    assert not any(t.startswith(("mz_", "pg_")) for t in tables)
    assert "cat_items_v" in insp.get_view_names()
    assert "cat_counts" in insp.get_materialized_view_names()
    assert insp.get_table_names(schema="cat_s2") == ["hidden"]
    assert {"public", "cat_s2", "information_schema"} <= set(insp.get_schema_names())
    assert insp.has_table("cat_items") and not insp.has_table("nope")
    assert insp.has_table("hidden", schema="cat_s2")
    columns = {c["name"]: c for c in insp.get_columns("cat_items")}
    assert list(columns) == ["id", "name", "amount", "created", "flag", "doc"]
    assert isinstance(columns["id"]["type"], sa.Integer) and not columns["id"]["nullable"]
    assert isinstance(columns["name"]["type"], sa.String)
    assert columns["name"]["type"].length == 20 and columns["name"]["default"] == "'none'"
    assert (columns["amount"]["type"].precision, columns["amount"]["type"].scale) == (10, 2)
    assert isinstance(columns["created"]["type"], sa.DateTime)
    assert isinstance(columns["flag"]["type"], sa.Boolean) and columns["flag"]["nullable"]
    assert type(columns["doc"]["type"]).__name__ == "JSONB"
    view_columns = [(c["name"], type(c["type"]).__name__) for c in insp.get_columns("cat_items_v")]
    assert view_columns == [("id", "INTEGER"), ("amount", "NUMERIC")]
    assert insp.get_pk_constraint("cat_items")["constrained_columns"] == []
    assert insp.get_foreign_keys("cat_items") == []
    assert insp.get_indexes("cat_items") == []
    assert insp.get_unique_constraints("cat_items") == []
    assert insp.get_check_constraints("cat_items") == []
    assert insp.get_table_comment("cat_items") == {"text": None}


def test_sqlalchemy_reflect_and_autoload(engine: sa.Engine) -> None:
    md = sa.MetaData()
    md.reflect(engine, only=["cat_items", "cat_other"])
    assert set(md.tables) == {"cat_items", "cat_other"}
    table = sa.Table("cat_items", sa.MetaData(), autoload_with=engine)
    assert table.c.name.type.length == 20
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_sqlalchemy_create_all_checkfirst(engine: sa.Engine) -> None:
    md = sa.MetaData()
    sa.Table("cat_made", md, sa.Column("id", sa.Integer, autoincrement=False))
    md.create_all(engine)
    md.create_all(engine)  # sees it exists
    assert sa.inspect(engine).has_table("cat_made")
    md.drop_all(engine)
    assert not sa.inspect(engine).has_table("cat_made")


# --------------------------------------------------------------------------- asyncpg


def test_asyncpg_type_introspection(env: EnvironmentdProcess) -> None:
    from asyncpg import introspection

    async def go() -> None:
        conn = await asyncpg.connect(env.url(), timeout=10)
        try:
            rows = await conn.fetch(introspection.TYPE_BY_NAME, "int4", "pg_catalog")
            assert [tuple(r) for r in rows] == [(23, 0, "b")]
            # asyncpg's codec API looks the type up in pg_catalog
            await conn.set_type_codec(
                "numeric", schema="pg_catalog", encoder=str, decoder=Decimal, format="text"
            )
            assert await conn.fetchval("SELECT 1.5::numeric") == Decimal("1.5")
            # INTRO_LOOKUP_TYPES_13 itself (its $1::oid[] parameter inlined: pgwire has no
            # array codecs yet)
            sql = introspection.INTRO_LOOKUP_TYPES_13.replace("$1::oid[]", "'{23,3802}'::oid[]")
            got = await conn.fetch(sql)
            assert {r["oid"] for r in got} == {23, 3802}
            stmt = await conn.prepare("SELECT count(*), count(id) FROM cat_items")
            assert [a.name for a in stmt.get_attributes()] == ["count", "count"]
        finally:
            await conn.close()

    asyncio.run(go())


# --------------------------------------------------------------------------- psycopg


@pytest.fixture
def conn(env: EnvironmentdProcess) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(env.conninfo(), autocommit=True) as c:
        yield c


def test_psycopg_typeinfo(conn: psycopg.Connection[Any]) -> None:
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(conn, "int4")
    assert info is not None and (info.oid, info.array_oid) == (23, 1007)
    jsonb = TypeInfo.fetch(conn, "jsonb")
    assert jsonb is not None and (jsonb.oid, jsonb.array_oid) == (3802, 3807)
    assert TypeInfo.fetch(conn, "no_such_type") is None


def test_psycopg_session_functions(conn: psycopg.Connection[Any]) -> None:
    cur = conn.execute(
        "SELECT version(), pg_catalog.version(), current_database(), current_schema(), "
        "current_user, session_user"
    )
    assert cur.fetchone() == (
        "PostgreSQL 15.0 (twinstream) on x86_64-pc-linux-gnu",
        "PostgreSQL 15.0 (twinstream) on x86_64-pc-linux-gnu",
        "twinstream",
        "public",
        "twinstream",
        "twinstream",
    )
    assert cur.description is not None
    assert [d.name for d in cur.description] == [
        "version",
        "version",
        "current_database",
        "current_schema",
        "current_user",
        "session_user",
    ]
    conn.execute("SET search_path = cat_s2, public")
    assert conn.execute("SELECT current_schema()").fetchone() == ("cat_s2",)
    assert conn.execute("SELECT to_regclass('hidden') IS NOT NULL").fetchone() == (True,)
    conn.execute("RESET search_path")


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_column_names(conn: psycopg.Connection[Any], binary: bool) -> None:
    cur = conn.cursor(binary=binary)
    cur.execute(
        "SELECT now(), current_timestamp, string_agg(name, ','), bool_and(flag), "
        "bool_or(flag), count(*), count(id) FROM cat_items"
    )
    assert cur.description is not None
    assert [d.name for d in cur.description] == [
        "now",
        "current_timestamp",
        "string_agg",
        "bool_and",
        "bool_or",
        "count",
        "count",
    ]
