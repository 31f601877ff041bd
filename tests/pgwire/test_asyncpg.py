"""The pgwire server driven by asyncpg: no parameter types sent (ParameterDescription from the
backend's describe), binary results, prepared statements, cursors with PortalSuspended."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from twinstream.pgwire import PgWireServer, ScramSha256Authenticator
from twinstream.pgwire import messages as m
from twinstream.pgwire.connection import Connection


async def connect(server: PgWireServer, **kwargs: Any) -> asyncpg.Connection:
    options: dict[str, Any] = {"user": "twinstream", "database": "twinstream"}
    options.update(kwargs)
    return await asyncpg.connect(
        host="127.0.0.1", port=server.port, ssl=False, timeout=5, **options
    )


async def test_fetch_and_inferred_parameter_types(server: PgWireServer) -> None:
    conn = await connect(server)
    try:
        assert await conn.fetchval("select 1") == 1
        # asyncpg sends no parameter types: the fake infers int4 from the cast and the
        # server sends it in ParameterDescription; asyncpg then encodes 5 in binary int4.
        assert await conn.fetchval("select $1::int", 5) == 5
        assert await conn.fetchrow("select $1, $2::int8", "text", 2**40) == ("text", 2**40)
        with pytest.raises(asyncpg.DataError):
            await conn.fetchval("select $1::int", "not an int")  # client-side type check
        rows = await conn.fetch("select * from gen(5)")
        assert [r["n"] for r in rows] == [1, 2, 3, 4, 5]
        assert conn.get_server_pid() > 0
        assert conn.get_server_version().major == 15
    finally:
        await conn.close()


async def test_binary_results_of_every_type(
    server: PgWireServer, types_row: list[tuple[str, int, object]]
) -> None:
    conn = await connect(server)
    try:
        row = await conn.fetchrow("select types()")
        assert row is not None
        for (name, _oid, value), got in zip(types_row, row, strict=True):
            if name in ("jb", "js"):
                got = json.loads(got)  # asyncpg returns json and jsonb as text
            assert got == value, name
    finally:
        await conn.close()


VALUES: list[tuple[str, object]] = [
    ("bool", False),
    ("int2", 7),
    ("int4", -100),
    ("int8", 2**62),
    ("float4", 0.5),
    ("float8", 1e-300),
    ("numeric", Decimal("1234567890.0987654321")),
    ("numeric", Decimal("NaN")),
    ("text", "ünïcode"),
    ("date", dt.date(1999, 1, 1)),
    ("timestamp", dt.datetime(1970, 1, 1, 0, 0, 1, 5)),
    ("timestamptz", dt.datetime(2030, 6, 1, 12, tzinfo=dt.UTC)),
    ("interval", dt.timedelta(days=400, microseconds=1)),
    ("uuid", uuid.UUID(int=12345)),
    ("bytea", b"\x00\x01"),
    ("jsonb", '{"a": 1}'),
]


async def test_binary_parameters_roundtrip(server: PgWireServer) -> None:
    conn = await connect(server)
    try:
        for cast, value in VALUES:
            got = await conn.fetchval(f"select $1::{cast}", value)
            if isinstance(value, Decimal) and value.is_nan():
                assert isinstance(got, Decimal) and got.is_nan()
            else:
                assert got == value, cast
        assert await conn.fetchval("select $1::int", None) is None
    finally:
        await conn.close()


async def test_prepared_statement_reuse(server: PgWireServer) -> None:
    conn = await connect(server)
    try:
        stmt = await conn.prepare("select $1::int, $2")
        assert [p.name for p in stmt.get_parameters()] == ["int4", "text"]
        assert [a.name for a in stmt.get_attributes()] == ["int", "?column?"]
        for i in range(5):
            assert tuple(await stmt.fetchrow(i, str(i))) == (i, str(i))
        await conn.executemany("select $1::int", [(i,) for i in range(10)])
    finally:
        await conn.close()


async def test_cursor_prefetch_uses_portal_suspension(
    server: PgWireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    original = Connection._send

    def spy(self: Connection, msg: m.BackendMessage) -> None:
        sent.append(type(msg).__name__)
        original(self, msg)

    monkeypatch.setattr(Connection, "_send", spy)
    conn = await connect(server)
    try:
        async with conn.transaction():
            seen = [r["n"] async for r in conn.cursor("select * from gen(95)", prefetch=10)]
            assert seen == list(range(1, 96))
            assert sent.count("PortalSuspended") == 9  # 95 rows in batches of 10
            cur = await conn.cursor("select * from agen(50)")
            assert [r["n"] for r in await cur.fetch(7)] == list(range(1, 8))
            assert (await cur.fetchrow())["n"] == 8
            assert [r["n"] for r in await cur.fetch(3)] == [9, 10, 11]
            assert len(await cur.fetch(100)) == 39
    finally:
        await conn.close()


async def test_errors_and_transactions(server: PgWireServer) -> None:
    conn = await connect(server)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.fetch("select * from nope")
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.execute("select * from nope")
        tx = conn.transaction()
        await tx.start()
        assert conn.is_in_transaction()
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.fetch("select * from nope")
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            await conn.fetch("select 1")
        await tx.rollback()
        assert not conn.is_in_transaction()
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


async def test_copy_with_asyncpg(server: PgWireServer, db: Any) -> None:
    conn = await connect(server)
    try:
        tag = await conn.copy_to_table("t", source=io.BytesIO(b"1\ta\n2\t\\N\n"))
        assert tag == "COPY 2"
        assert db.tables["t"] == [(1, "a"), (2, None)]
        out = io.BytesIO()
        tag = await conn.copy_from_query("select * from gen(3)", output=out)
        assert tag == "COPY 3"
        assert out.getvalue() == b"1\n2\n3\n"
        out = io.BytesIO()
        await conn.copy_from_table("t", output=out)
        assert out.getvalue() == b"1\ta\n2\t\\N\n"
    finally:
        await conn.close()


async def test_scram_with_asyncpg(db: Any) -> None:
    auth = ScramSha256Authenticator({"alice": "s3cret"})
    async with PgWireServer(db.session, authenticator=auth) as server:
        conn = await connect(server, user="alice", password="s3cret")
        assert await conn.fetchval("select 1") == 1
        await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):  # SQLSTATE 28P01
            await connect(server, user="alice", password="wrong")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await connect(server, user="mallory", password="s3cret")
