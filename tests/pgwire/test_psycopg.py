"""The pgwire server driven by psycopg 3 (libpq): simple and extended protocol, COPY, cancel,
notices, pipeline mode, server-side cursors, binary results."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg.types.json import Jsonb

from twinstream.pgwire import PgWireServer


async def connect(dsn: str, **kwargs: object) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, **kwargs)  # type: ignore[arg-type]


async def test_simple_query_and_parameter_status(dsn: str) -> None:
    async with await connect(dsn, application_name="wire-test") as conn:
        cur = await conn.execute("select 1")
        assert await cur.fetchall() == [(1,)]
        assert cur.description is not None and cur.description[0].name == "?column?"
        assert conn.info.server_version == 150000
        assert conn.info.parameter_status("application_name") == "wire-test"
        assert conn.info.parameter_status("TimeZone") == "UTC"
        assert conn.info.parameter_status("twinstream_test") == "yes"
        assert conn.info.backend_pid > 0
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def test_multiple_statements_in_one_query(dsn: str, db: Any) -> None:
    async with await connect(dsn) as conn:
        cur = await conn.execute("select 1; select * from gen(3)")
        assert await cur.fetchall() == [(1,)]
        assert cur.nextset()
        assert await cur.fetchall() == [(1,), (2,), (3,)]
        assert not cur.nextset()


async def test_empty_query(dsn: str) -> None:
    async with await connect(dsn) as conn:
        cur = conn.cursor()
        await cur.execute("  -- nothing here\n ")
        assert cur.pgresult is not None
        assert cur.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY


async def test_error_then_connection_still_usable(dsn: str) -> None:
    async with await connect(dsn) as conn:
        with pytest.raises(pgerr.UndefinedTable) as info:
            await conn.execute("select * from nope")
        assert 'relation "nope" does not exist' in str(info.value)
        # An error in the middle of a multi-statement query stops it.
        with pytest.raises(pgerr.UndefinedTable):
            await conn.execute("select 1; select * from nope; select 1")
        cur = await conn.execute("select 1")
        assert await cur.fetchone() == (1,)


async def test_internal_backend_error_is_xx000(dsn: str) -> None:
    async with await connect(dsn) as conn:
        with pytest.raises(pgerr.InternalError_) as info:
            await conn.execute("select boom()")
        assert "kaboom" in str(info.value)
        assert await (await conn.execute("select 1")).fetchone() == (1,)


async def test_parameters_text_and_binary(dsn: str) -> None:
    async with await connect(dsn) as conn:
        cur = await conn.execute("select %s::int, %s, %s", (42, "hello", None))
        assert await cur.fetchone() == (42, "hello", None)
        # %b: binary parameters
        cur = await conn.execute("select %b::int, %b::text", (7, "bin"))
        assert await cur.fetchone() == (7, "bin")
        with pytest.raises(pgerr.InvalidTextRepresentation):
            await conn.execute("select %s::int", ("abc",))


VALUES: list[object] = [
    True,
    12345,
    2**40,
    1.25,
    Decimal("-3.14159"),
    "text ü",
    dt.date(2021, 12, 31),
    dt.datetime(2021, 12, 31, 23, 59, 59, 123456),
    dt.datetime(2021, 12, 31, 23, 59, 59, 123456, tzinfo=dt.UTC),
    dt.timedelta(days=-2, seconds=5),
    uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    b"\x00\xff raw",
]


@pytest.mark.parametrize("binary", [False, True])
async def test_roundtrip_types(dsn: str, binary: bool) -> None:
    async with await connect(dsn) as conn:
        cur = conn.cursor(binary=binary)
        placeholders = ", ".join("%b" if binary else "%s" for _ in VALUES)
        await cur.execute(f"select {placeholders}", VALUES)
        # psycopg picks the parameter types; the echo returns them with those types
        row = await cur.fetchone()
        assert row is not None
        assert list(row) == VALUES
        await cur.execute("select %s::jsonb", (Jsonb({"k": [1, 2]}),))
        assert await cur.fetchone() == ({"k": [1, 2]},)


@pytest.mark.parametrize("binary", [False, True])
async def test_result_types(
    dsn: str, binary: bool, types_row: list[tuple[str, int, object]]
) -> None:
    async with await connect(dsn) as conn:
        cur = conn.cursor(binary=binary)
        await cur.execute("select types()")
        row = await cur.fetchone()
        assert row is not None
        expected = [v for _, _, v in types_row]
        got = list(row)
        assert got[: len(expected)] == expected


async def test_prepared_statements(dsn: str) -> None:
    async with await connect(dsn) as conn:
        for i in range(8):  # psycopg prepares after prepare_threshold uses
            cur = await conn.execute("select %s::int", (i,), prepare=True)
            assert await cur.fetchone() == (i,)
        cur = await conn.execute("select * from gen(4)", prepare=True)
        assert await cur.fetchall() == [(1,), (2,), (3,), (4,)]


async def test_transaction_status(dsn: str) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn)  # not autocommit: psycopg sends BEGIN
    try:
        await conn.execute("select 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(pgerr.UndefinedTable):
            await conn.execute("select * from nope")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(pgerr.InFailedSqlTransaction):
            await conn.execute("select 1")
        await conn.rollback()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await conn.execute("select 1")
        await conn.commit()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        await conn.close()


async def test_pipeline_mode(dsn: str) -> None:
    async with await connect(dsn) as conn:
        async with conn.pipeline() as p:
            c1 = await conn.execute("select %s::int", (1,))
            c2 = await conn.execute("select * from gen(3)")
            c3 = await conn.execute("select %s", ("x",))
            await p.sync()
            assert await c1.fetchone() == (1,)
            assert await c2.fetchall() == [(1,), (2,), (3,)]
            assert await c3.fetchone() == ("x",)
        # An error inside a pipeline aborts the rest until the next sync.
        with pytest.raises(pgerr.UndefinedTable):
            async with conn.pipeline() as p:
                await conn.execute("select %s::int", (1,))
                await conn.execute("select * from nope where x = %s", (1,))
                await conn.execute("select %s::int", (2,))
        assert await (await conn.execute("select %s::int", (3,))).fetchone() == (3,)
        # executemany runs in a pipeline too
        cur = conn.cursor()
        await cur.executemany("select %s::int", [(i,) for i in range(20)], returning=True)
        results = []
        while True:
            results.append(await cur.fetchone())
            if not cur.nextset():
                break
        assert results == [(i,) for i in range(20)]


async def test_copy_from_stdin_and_to_stdout(dsn: str, db: Any) -> None:
    async with await connect(dsn) as conn:
        cur = conn.cursor()
        async with cur.copy("copy t from stdin") as copy:
            await copy.write_row((1, "one"))
            await copy.write_row((2, "tab\there"))
            await copy.write_row((3, None))
            await copy.write_row((4, "four\nlines"))
        assert cur.rowcount == 4
        async with cur.copy("copy t from stdin") as copy:  # raw data split mid-row
            await copy.write(b"5\tfi")
            await copy.write(b"ve\\\\\n6\t\\N\r\n")
        assert cur.rowcount == 2
        await cur.execute("select * from t")
        assert await cur.fetchall() == [
            (1, "one"),
            (2, "tab\there"),
            (3, None),
            (4, "four\nlines"),
            (5, "five\\"),
            (6, None),
        ]
        rows = []
        async with cur.copy("copy t to stdout") as copy:
            async for row in copy.rows():
                rows.append(row)
        assert rows[:4] == [("1", "one"), ("2", "tab\there"), ("3", None), ("4", "four\nlines")]
        data = b""
        async with cur.copy("copy (select * from gen(3)) to stdout") as copy:
            async for chunk in copy:
                data += bytes(chunk)
        assert data == b"1\n2\n3\n"


async def test_copy_errors(dsn: str, db: Any) -> None:
    async with await connect(dsn) as conn:
        cur = conn.cursor()
        with pytest.raises(pgerr.BadCopyFileFormat):
            async with cur.copy("copy t from stdin") as copy:
                await copy.write(b"1\tone\textra\n")
        with pytest.raises(pgerr.InvalidTextRepresentation):
            async with cur.copy("copy t from stdin") as copy:
                await copy.write(b"notanint\tone\n")

        class Stop(Exception):
            pass

        with pytest.raises(Stop):  # the client aborts: CopyFail
            async with cur.copy("copy t from stdin") as copy:
                await copy.write_row((9, "nine"))
                raise Stop
        assert db.tables["t"] == []
        assert len(db.copy_aborts) == 3
        assert await (await conn.execute("select 1")).fetchone() == (1,)


async def test_cancel_slow_query(dsn: str, db: Any) -> None:
    async with await connect(dsn) as conn:
        task = asyncio.create_task(conn.execute("select pg_sleep(30)"))
        session = db.sessions[-1]
        await asyncio.wait_for(session.busy.wait(), 10)
        await conn.cancel_safe()
        with pytest.raises(pgerr.QueryCanceled):
            await asyncio.wait_for(task, 10)
        assert db.cancels == 1
        assert await (await conn.execute("select 1")).fetchone() == (1,)


async def test_cancel_subscribe_stream(dsn: str, db: Any) -> None:
    async with await connect(dsn) as conn:
        cur = conn.cursor()
        seen = []
        with pytest.raises(pgerr.QueryCanceled):
            async with cur.copy("subscribe") as copy:
                async for row in copy.rows():
                    seen.append(row)
                    if len(seen) == 3:
                        await conn.cancel_safe()
        assert seen[:3] == [("1", "tick"), ("2", "tick"), ("3", "tick")]
        assert await (await conn.execute("select 1")).fetchone() == (1,)


async def test_notice_handler(dsn: str) -> None:
    async with await connect(dsn) as conn:
        notices: list[tuple[str | None, str | None, str | None, str | None]] = []

        def handler(d: psycopg.errors.Diagnostic) -> None:  # d is only valid during the call
            notices.append((d.severity, d.sqlstate, d.message_primary, d.message_hint))

        conn.add_notice_handler(handler)
        cur = await conn.execute("select notice('hello there')")
        assert await cur.fetchone() == ("hello there",)
        assert notices == [
            ("NOTICE", "00000", "hello there", "a hint"),
            ("WARNING", "01000", "careful", None),
        ]


async def test_set_sends_parameter_status(dsn: str) -> None:
    async with await connect(dsn) as conn:
        await conn.execute("set application_name = 'renamed'")
        assert conn.info.parameter_status("application_name") == "renamed"


async def test_server_side_cursor_fetchmany(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.cursor(name="big") as cur:
            await cur.execute("select * from gen(100)")
            assert await cur.fetchmany(10) == [(i,) for i in range(1, 11)]
            assert await cur.fetchmany(5) == [(i,) for i in range(11, 16)]
            rest = await cur.fetchall()
            assert rest == [(i,) for i in range(16, 101)]
        async with conn.cursor(name="bin", binary=True) as cur:
            await cur.execute("select * from gen(5)")
            assert await cur.fetchall() == [(1,), (2,), (3,), (4,), (5,)]


async def test_large_result_streams(dsn: str) -> None:
    async with await connect(dsn) as conn:
        cur = await conn.execute("select * from gen(50000)")
        rows = await cur.fetchall()
        assert len(rows) == 50000 and rows[-1] == (50000,)
        assert cur.rowcount == 50000
        cur = await conn.execute("select * from agen(20000)")
        assert len(await cur.fetchall()) == 20000


async def test_fatal_from_backend_closes_connection(dsn: str) -> None:
    async with await connect(dsn) as conn:
        with pytest.raises(psycopg.Error) as info:
            await conn.execute("select fatal()")
        assert "gives up" in str(info.value)
        assert info.value.sqlstate == "XX001"
        assert conn.closed or conn.broken


async def test_unknown_database_refused(server: PgWireServer) -> None:
    dsn = f"host=127.0.0.1 port={server.port} user=u dbname=nodb sslmode=disable"
    with pytest.raises(psycopg.OperationalError) as info:
        await psycopg.AsyncConnection.connect(dsn)
    assert 'database "nodb" does not exist' in str(info.value)


async def test_sslmode_require_is_refused(server: PgWireServer) -> None:
    dsn = f"host=127.0.0.1 port={server.port} user=u dbname=d sslmode=require connect_timeout=5"
    with pytest.raises(psycopg.OperationalError) as info:
        await psycopg.AsyncConnection.connect(dsn)
    assert "SSL" in str(info.value)
    # sslmode=prefer falls back to plain text on the same server
    dsn = f"host=127.0.0.1 port={server.port} user=u dbname=d sslmode=prefer connect_timeout=5"
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert await (await conn.execute("select 1")).fetchone() == (1,)


async def test_shutdown_sends_admin_shutdown(server: PgWireServer, dsn: str, db: Any) -> None:
    busy = await connect(dsn)
    idle = await connect(dsn)
    task = asyncio.create_task(busy.execute("select pg_sleep(30)"))
    await asyncio.wait_for(db.sessions[0].busy.wait(), 10)
    await server.shutdown()
    with pytest.raises(pgerr.AdminShutdown) as info:
        await asyncio.wait_for(task, 10)
    assert "terminating connection due to administrator command" in str(info.value)
    with pytest.raises(psycopg.OperationalError) as info2:
        await idle.execute("select 1")
    assert "terminating connection due to administrator command" in str(info2.value)
    assert db.closed == 2
    await busy.close()
    await idle.close()


async def test_shutdown_during_subscribe_stream(server: PgWireServer, dsn: str, db: Any) -> None:
    async with await connect(dsn) as conn:
        cur = conn.cursor()
        seen = []
        with pytest.raises(pgerr.AdminShutdown):
            async with cur.copy("subscribe") as copy:
                async for row in copy.rows():
                    seen.append(row)
                    if len(seen) == 2:
                        asyncio.get_running_loop().create_task(server.shutdown())
        assert len(seen) >= 2
    assert db.closed == 1
