"""Conformance through asyncpg (extended protocol only, binary results, server-described
parameter types): the shared scenarios, then fetch/fetchrow/fetchval, executemany, prepared
statements, cursors, COPY, introspection, and timeout -> cancel -> reuse."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from asyncpg import introspection
from conformance_scenarios import (
    SETUP,
    Json,
    Outcome,
    Scenario,
    Step,
    check_step,
    scenario_params,
)

from twinstream.testing.environmentd import EnvironmentdProcess

LONG_QUERY = (
    "SELECT sum(a.generate_series * b.generate_series) "
    "FROM generate_series(1, 100000) a, generate_series(1, 100000) b"
)


async def connect(envd: EnvironmentdProcess) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1",
        port=envd.sql_port,
        user="twinstream",
        database="twinstream",
        timeout=10,
    )


def adapt(v: Any) -> Any:
    return json.dumps(v.obj) if isinstance(v, Json) else v


def _count(status: str) -> int | None:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else None


async def run_step(conn: asyncpg.Connection, step: Step) -> Outcome:
    params = [adapt(p) for p in step.params]
    try:
        if step.rows is not None:
            stmt = await asyncio.wait_for(conn.prepare(step.sql), 30)
            records = await asyncio.wait_for(stmt.fetch(*params), 30)
            is_json = [a.type.name in ("json", "jsonb") for a in stmt.get_attributes()]
            return Outcome(
                rows=[
                    tuple(
                        json.loads(v) if j and isinstance(v, str) else v
                        for v, j in zip(r, is_json, strict=True)
                    )
                    for r in records
                ],
                columns=tuple(a.name for a in stmt.get_attributes()),
            )
        status = await asyncio.wait_for(conn.execute(step.sql, *params), 30)
        return Outcome(rowcount=_count(status))
    except asyncpg.PostgresError as e:
        return Outcome(sqlstate=e.sqlstate, message=str(e))
    except TimeoutError:
        return Outcome(sqlstate="TIMEOUT", message="no answer within 30 s")


async def run_async_scenario(scenario: Scenario, conns: list[asyncpg.Connection]) -> None:
    for i, step in enumerate(scenario.steps):
        check_step(scenario, i, step, await run_step(conns[step.session], step))


@pytest.fixture(scope="module")
def env(envd: EnvironmentdProcess) -> EnvironmentdProcess:
    async def setup() -> None:
        conn = await connect(envd)
        try:
            await run_async_scenario(SETUP, [conn])
        finally:
            await conn.close()

    asyncio.run(setup())
    return envd


@pytest.fixture
async def conn(env: EnvironmentdProcess) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(env)
    try:
        yield c
    finally:
        await c.close()


@pytest.mark.parametrize("scenario", scenario_params("asyncpg"))
async def test_scenario(env: EnvironmentdProcess, scenario: Scenario) -> None:
    conns = [await connect(env) for _ in range(scenario.sessions)]
    try:
        await run_async_scenario(scenario, conns)
    finally:
        for c in conns:
            await c.close()


# --------------------------------------------------------------------------- API surface


async def test_fetch_fetchrow_fetchval(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT id, name FROM conf_people WHERE dept_id = $1 ORDER BY id", 10)
    assert [tuple(r) for r in rows] == [(1, "alice"), (2, "bob")]
    assert rows[0]["name"] == "alice"
    row = await conn.fetchrow("SELECT name, salary, hired FROM conf_people WHERE id = $1", 3)
    assert row is not None
    assert tuple(row) == ("carol", Decimal("6000.00"), dt.date(2019, 7, 30))
    assert await conn.fetchrow("SELECT 1 WHERE false") is None
    assert await conn.fetchval("SELECT count(*) FROM conf_people") == 5
    assert await conn.fetchval("SELECT name FROM conf_people WHERE id = $1", 4) == "dave"


async def test_execute_status(conn: asyncpg.Connection) -> None:
    assert await conn.execute("INSERT INTO conf_types (id, t) VALUES ($1, $2)", 40001, "a") == (
        "INSERT 0 1"
    )
    assert await conn.execute("UPDATE conf_types SET t = 'b' WHERE id = 40001") == "UPDATE 1"
    assert await conn.execute("DELETE FROM conf_types WHERE id = $1", 40001) == "DELETE 1"


async def test_executemany(conn: asyncpg.Connection) -> None:
    await conn.executemany(
        "INSERT INTO conf_types (id, t, n) VALUES ($1, $2, $3)",
        [(40100 + i, f"row{i}", Decimal(i) / 4) for i in range(20)],
    )
    rows = await conn.fetch(
        "SELECT id, n FROM conf_types WHERE id BETWEEN 40100 AND 40199 ORDER BY id"
    )
    assert len(rows) == 20
    assert rows[3]["n"] == Decimal("0.75")


async def test_prepared_statement_reuse(conn: asyncpg.Connection) -> None:
    stmt = await conn.prepare("SELECT name, salary FROM conf_people WHERE id = $1")
    assert [p.name for p in stmt.get_parameters()] == ["int4"]
    assert [(a.name, a.type.name) for a in stmt.get_attributes()] == [
        ("name", "text"),
        ("salary", "numeric"),
    ]
    for i, name in [(1, "alice"), (5, "eve"), (2, "bob")]:
        assert (await stmt.fetchrow(i))["name"] == name
    assert await stmt.fetchval(3) == "carol"
    many = await conn.prepare("SELECT id FROM conf_people WHERE salary > $1 ORDER BY id")
    assert [r[0] for r in await many.fetch(Decimal("5000"))] == [3, 5]


async def test_duplicate_column_names_described(conn: asyncpg.Connection) -> None:
    stmt = await conn.prepare("SELECT 1 AS a, 2 AS a")
    assert [a.name for a in stmt.get_attributes()] == ["a", "a"]


async def test_cursor_prefetch_in_transaction(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        got = [
            r["id"] async for r in conn.cursor("SELECT id FROM conf_people ORDER BY id", prefetch=2)
        ]
    assert got == [1, 2, 3, 4, 5]


async def test_cursor_fetch_forward(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        cur = await conn.cursor("SELECT id FROM conf_people WHERE id > $1 ORDER BY id", 1)
        assert [r[0] for r in await cur.fetch(2)] == [2, 3]
        await cur.forward(1)
        row = await cur.fetchrow()
        assert row is not None and row[0] == 5
        assert await cur.fetchrow() is None


async def test_transaction_rollback_context(conn: asyncpg.Connection) -> None:
    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await conn.execute("INSERT INTO conf_types (id) VALUES (40201)")
            raise RuntimeError("roll back")
    assert await conn.fetchval("SELECT count(*) FROM conf_types WHERE id = 40201") == 0
    async with conn.transaction():
        await conn.execute("INSERT INTO conf_types (id) VALUES (40202)")
    assert await conn.fetchval("SELECT count(*) FROM conf_types WHERE id = 40202") == 1


ECHO_VALUES: list[tuple[str, Any]] = [
    ("bool", True),
    ("int2", -12),
    ("int4", 2**31 - 1),
    ("int8", -(2**63)),
    ("float4", 0.5),
    ("float8", 1e-300),
    ("numeric(12,6)", Decimal("-12345.678900")),
    ("text", "tab\there ü"),
    ("varchar", "v"),
    ("date", dt.date(2024, 2, 29)),
    ("timestamp", dt.datetime(2024, 2, 29, 1, 2, 3, 4)),
    ("timestamptz", dt.datetime(2024, 2, 29, 1, 2, 3, 4, tzinfo=dt.UTC)),
    ("interval", dt.timedelta(days=2, seconds=3, microseconds=4)),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("bytea", b"\x00\xff\x10"),
]


@pytest.mark.parametrize(("type_name", "value"), ECHO_VALUES, ids=[t for t, _ in ECHO_VALUES])
async def test_binary_echo(conn: asyncpg.Connection, type_name: str, value: Any) -> None:
    got = await conn.fetchval(f"SELECT $1::{type_name}", value)
    assert got == value
    assert isinstance(got, type(value))


async def test_binary_echo_unconstrained_numeric(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("SELECT $1::numeric", Decimal("-12345.678900")) == Decimal(
        "-12345.678900"
    )


async def test_jsonb_echo(conn: asyncpg.Connection) -> None:
    got = await conn.fetchval("SELECT $1::jsonb", json.dumps({"a": [1, 2]}))
    assert json.loads(got) == {"a": [1, 2]}


async def test_timeout_cancel_and_reuse(conn: asyncpg.Connection) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.fetch(LONG_QUERY), 0.5)
    assert await conn.fetchval("SELECT 7") == 7
    assert await conn.fetchval("SELECT count(*) FROM conf_people") == 5


async def test_query_timeout_argument(conn: asyncpg.Connection) -> None:
    with pytest.raises(TimeoutError):
        await conn.fetchval(LONG_QUERY, timeout=0.5)
    assert await conn.fetchval("SELECT 8") == 8


async def test_errors_are_raised_promptly(conn: asyncpg.Connection) -> None:
    # asyncpg prepares with Parse/Describe/Flush (no Sync): the error must arrive anyway.
    with pytest.raises(asyncpg.UndefinedTableError):
        await asyncio.wait_for(conn.fetch("SELECT * FROM no_such_table"), 5)
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await asyncio.wait_for(conn.fetch("SELEC 1"), 5)
    with pytest.raises(asyncpg.DivisionByZeroError):
        await asyncio.wait_for(conn.fetch("SELECT 1 / $1::int4", 0), 5)
    assert await conn.fetchval("SELECT 1") == 1


async def test_copy_to_table_text(conn: asyncpg.Connection) -> None:
    status = await conn.copy_to_table(
        "conf_types", source=io.BytesIO(b"40301\tcopied\n40302\t\\N\n"), columns=["id", "t"]
    )
    assert status == "COPY 2"
    rows = await conn.fetch(
        "SELECT id, t FROM conf_types WHERE id BETWEEN 40301 AND 40309 ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [(40301, "copied"), (40302, None)]


async def test_copy_from_query(conn: asyncpg.Connection) -> None:
    out = io.BytesIO()
    status = await conn.copy_from_query("SELECT id, name FROM conf_depts ORDER BY id", output=out)
    assert status == "COPY 3"
    assert out.getvalue() == b"10\teng\n20\tsales\n30\tempty\n"


async def test_copy_records_to_table_binary(conn: asyncpg.Connection) -> None:
    status = await conn.copy_records_to_table(
        "conf_types", records=[(40401, "rec"), (40402, None)], columns=["id", "t"]
    )
    assert status == "COPY 2"
    rows = await conn.fetch(
        "SELECT id, t FROM conf_types WHERE id BETWEEN 40401 AND 40409 ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [(40401, "rec"), (40402, None)]


async def test_introspection_type_by_name(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(introspection.TYPE_BY_NAME, "int4", "pg_catalog")
    assert [tuple(r) for r in rows] == [(23, 0, "b")]


async def test_introspection_lookup_types(conn: asyncpg.Connection) -> None:
    rows = await asyncio.wait_for(conn.fetch(introspection.INTRO_LOOKUP_TYPES_13, [23, 3802]), 10)
    assert {r["oid"] for r in rows} == {23, 3802}


async def test_array_param_and_result(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("SELECT ARRAY[1, 2]") == [1, 2]
    assert await conn.fetchval("SELECT $1::int4[]", [1, 2]) == [1, 2]
    assert await conn.fetchval("SELECT $1::text[]", ["a b", None, ""]) == ["a b", None, ""]
    assert await conn.fetchval("SELECT ARRAY[[1, 2], [3, 4]]") == [[1, 2], [3, 4]]


async def test_set_type_codec_builtin(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "numeric", schema="pg_catalog", encoder=str, decoder=float, format="text"
    )
    assert await conn.fetchval("SELECT salary FROM conf_people WHERE id = 1") == 5000.0
