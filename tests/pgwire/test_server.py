"""The pgwire server driven by a raw-socket client built on the codec: the protocol corners
that real clients do not reach on purpose (garbage, limits, versions, portals by hand)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import psycopg
import pytest

from twinstream.pgwire import (
    BackendKey,
    CleartextPasswordAuthenticator,
    PgWireServer,
)
from twinstream.pgwire import messages as m
from twinstream.pgwire.codec import BackendParser
from twinstream.pgwire.types import Oid


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = BackendParser()

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, *msgs: m.FrontendMessage | bytes) -> None:
        for msg in msgs:
            self.writer.write(msg if isinstance(msg, bytes) else msg.encode())

    async def recv(self) -> m.BackendMessage:
        while True:
            msg = self.parser.next_message()
            if msg is not None:
                return msg
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                raise EOFError
            self.parser.feed(data)

    async def recv_until_ready(self) -> list[m.BackendMessage]:
        out = []
        while True:
            msg = await self.recv()
            out.append(msg)
            if isinstance(msg, m.ReadyForQuery):
                return out

    async def startup(self, user: str = "u", **params: str) -> list[m.BackendMessage]:
        self.send(m.StartupMessage({"user": user, "database": "d", **params}))
        return await self.recv_until_ready()

    async def eof(self) -> bool:
        """True when the server closed the connection (after any messages it still sent)."""
        try:
            while True:
                await self.recv()
        except EOFError:
            return True
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def errors(msgs: list[m.BackendMessage]) -> list[tuple[str, str]]:
    return [(e.severity, e.code) for e in msgs if isinstance(e, m.ErrorResponse)]


def kinds(msgs: list[m.BackendMessage]) -> list[str]:
    return [type(x).__name__ for x in msgs]


async def fatal_then_eof(client: RawClient) -> m.ErrorResponse:
    msg = await client.recv()
    assert isinstance(msg, m.ErrorResponse), msg
    assert msg.severity == "FATAL"
    assert await client.eof()
    return msg


async def test_startup_sequence(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    msgs = await client.startup(application_name="raw")
    assert isinstance(msgs[0], m.AuthenticationOk)
    params = {p.name: p.value for p in msgs if isinstance(p, m.ParameterStatus)}
    assert params["server_version"] == "15.0 (twinstream)"
    assert params["server_encoding"] == "UTF8"
    assert params["client_encoding"] == "UTF8"
    assert params["DateStyle"] == "ISO, MDY"
    assert params["TimeZone"] == "UTC"
    assert params["integer_datetimes"] == "on"
    assert params["standard_conforming_strings"] == "on"
    assert params["application_name"] == "raw"
    assert params["session_authorization"] == "u"
    assert params["is_superuser"] == "off"
    assert any(isinstance(x, m.BackendKeyData) for x in msgs)
    assert msgs[-1] == m.ReadyForQuery("I")
    client.send(m.Terminate())
    assert await client.eof()


async def test_ssl_and_gssenc_requests_are_refused_with_n(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    client.send(m.SSLRequest())
    assert await client.reader.readexactly(1) == b"N"
    client.send(m.GSSENCRequest())
    assert await client.reader.readexactly(1) == b"N"
    msgs = await client.startup()
    assert msgs[-1] == m.ReadyForQuery("I")
    await client.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x03",  # startup length too small
        b"\x7f\xff\xff\xff",  # startup length huge
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
async def test_garbage_before_startup_is_fatal_08p01(
    server: PgWireServer, dsn: str, garbage: bytes
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        client = await RawClient.open(server.port)
        client.send(garbage)
        err = await fatal_then_eof(client)
        assert err.code == "08P01"
        assert await (await other.execute("select 1")).fetchone() == (1,)


@pytest.mark.parametrize(
    "garbage",
    [
        b"Z\x00\x00\x00\x04",  # not a frontend message type
        b"Q" + struct.pack("!i", 2**31 - 1),  # over the message size limit
        b"S\x00\x00\x00\x00",  # length below 4
        b"\x00\x01\x02\x03\x04\x05\x06\x07",
    ],
)
async def test_garbage_after_startup_kills_only_that_connection(
    server: PgWireServer, dsn: str, garbage: bytes
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        client = await RawClient.open(server.port)
        await client.startup()
        client.send(garbage)
        err = await fatal_then_eof(client)
        assert err.code == "08P01"
        assert await (await other.execute("select * from gen(2)")).fetchall() == [(1,), (2,)]


async def test_malformed_message_content_is_a_plain_error(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    await client.startup()
    client.send(m.frame(b"Q", b"select \xff\xfe\0"))  # not UTF-8
    msgs = await client.recv_until_ready()
    assert errors(msgs) == [("ERROR", "22021")]
    client.send(m.frame(b"P", b"no-terminator"), m.Sync())  # truncated Parse
    msgs = await client.recv_until_ready()
    assert errors(msgs) == [("ERROR", "08P01")]
    client.send(m.Query("select 1"))
    msgs = await client.recv_until_ready()
    assert kinds(msgs) == ["RowDescription", "DataRow", "CommandComplete", "ReadyForQuery"]
    await client.close()


async def test_message_size_limit(db: Any) -> None:
    server = PgWireServer(db.session, max_message_bytes=1024)
    await server.start()
    try:
        client = await RawClient.open(server.port)
        await client.startup()
        client.send(m.Query("select 1 " + "-" * 2000))
        err = await fatal_then_eof(client)
        assert err.code == "08P01"
    finally:
        await server.shutdown()


async def test_unsupported_protocol_version(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    client.send(m.StartupMessage({"user": "u"}, protocol_version=(2 << 16)))
    err = await fatal_then_eof(client)
    assert err.code == "0A000"
    assert "unsupported frontend protocol 2.0" in err.message


async def test_newer_minor_version_is_negotiated_down(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    client.send(m.StartupMessage({"user": "u", "_pq_.future": "1"}, protocol_version=(3 << 16) | 2))
    msgs = await client.recv_until_ready()
    assert msgs[0] == m.NegotiateProtocolVersion(0, ("_pq_.future",))
    assert msgs[-1] == m.ReadyForQuery("I")
    await client.close()


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"database": "d"}, "28000"),  # no user
        ({"user": "u", "client_encoding": "LATIN1"}, "22023"),
        ({"user": "u", "database": "nodb"}, "3D000"),  # refused by the backend's startup
    ],
)
async def test_startup_refusals(server: PgWireServer, params: dict[str, str], code: str) -> None:
    client = await RawClient.open(server.port)
    client.send(m.StartupMessage(params))
    msgs = []
    while True:
        msg = await client.recv()
        msgs.append(msg)
        if isinstance(msg, m.ErrorResponse):
            break
    assert errors(msgs) == [("FATAL", code)]
    assert await client.eof()


async def test_extended_protocol_portal_suspension(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    await client.startup()
    client.send(
        m.Parse("s1", "select * from gen(5)"),
        m.Bind("p1", "s1", (), (), (1,)),
        m.Describe("P", "p1"),
        m.Execute("p1", 2),
        m.Execute("p1", 2),
        m.Sync(),
    )
    msgs = await client.recv_until_ready()
    assert kinds(msgs) == [
        "ParseComplete",
        "BindComplete",
        "RowDescription",
        "DataRow",
        "DataRow",
        "PortalSuspended",
        "DataRow",
        "DataRow",
        "PortalSuspended",
        "ReadyForQuery",
    ]
    desc = msgs[2]
    assert isinstance(desc, m.RowDescription)
    assert desc.fields[0] == m.FieldDescription("n", Oid.INT4, 4, -1, 1)
    rows = [x.values for x in msgs if isinstance(x, m.DataRow)]
    assert rows == [(struct.pack("!i", i),) for i in (1, 2, 3, 4)]
    # At status I the Sync ended the (implicit) transaction: the portal is gone.
    client.send(m.Execute("p1", 2), m.Sync())
    msgs = await client.recv_until_ready()
    assert errors(msgs) == [("ERROR", "34000")]

    # Inside a transaction block the portal survives Syncs and resumes.
    client.send(m.Query("begin"))
    assert (await client.recv_until_ready())[-1] == m.ReadyForQuery("T")
    client.send(m.Bind("p2", "s1"), m.Execute("p2", 3), m.Sync())
    msgs = await client.recv_until_ready()
    assert kinds(msgs)[-2:] == ["PortalSuspended", "ReadyForQuery"]
    assert msgs[-1] == m.ReadyForQuery("T")
    client.send(m.Execute("p2", 0), m.Sync())
    msgs = await client.recv_until_ready()
    assert [x.values for x in msgs if isinstance(x, m.DataRow)] == [(b"4",), (b"5",)]
    assert m.CommandComplete("SELECT 5") in msgs
    client.send(m.Execute("p2", 0), m.Close("P", "p2"), m.Close("S", "s1"), m.Sync())
    msgs = await client.recv_until_ready()
    assert kinds(msgs) == ["CommandComplete", "CloseComplete", "CloseComplete", "ReadyForQuery"]
    client.send(m.Bind("p3", "s1"), m.Sync())
    assert errors(await client.recv_until_ready()) == [("ERROR", "26000")]
    await client.close()


async def test_extended_protocol_errors_skip_until_sync(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    await client.startup()
    client.send(
        m.Parse("", "select * from nope"),
        m.Bind("", ""),
        m.Execute("", 0),
        m.Query("select 1"),  # skipped too: still before the Sync
        m.Sync(),
    )
    msgs = await client.recv_until_ready()
    assert kinds(msgs) == ["ErrorResponse", "ReadyForQuery"]
    assert errors(msgs) == [("ERROR", "42P01")]

    cases: list[tuple[list[m.FrontendMessage], str]] = [
        ([m.Parse("a", "select 1"), m.Parse("a", "select 1")], "42P05"),
        ([m.Parse("", "select 1; select 2")], "42601"),
        ([m.Bind("", "missing")], "26000"),
        ([m.Parse("", "select $1::int"), m.Bind("", "", (), (), ())], "08P01"),
        ([m.Parse("", "select $1::int"), m.Bind("", "", (0,), (b"x",))], "22P02"),
        ([m.Parse("", "select $1::int"), m.Bind("", "", (1,), (b"xy",))], "22P03"),
        ([m.Parse("", "select 1"), m.Bind("", "", (), (), (2,))], "08P01"),
        ([m.Parse("", "select 1"), m.Bind("", "", (), (), (0, 0))], "08P01"),
        ([m.Execute("nope", 0)], "34000"),
        ([m.Describe("S", "nope")], "26000"),
        ([m.Describe("P", "nope")], "34000"),
    ]
    for messages, code in cases:
        client.send(*messages, m.Sync())
        msgs = await client.recv_until_ready()
        assert errors(msgs) == [("ERROR", code)], (messages, msgs)
        client.send(m.Close("S", "a"), m.Sync())
        await client.recv_until_ready()
    await client.close()


async def test_parameter_types_and_formats(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    await client.startup()
    client.send(
        m.Parse("", "select $1, $2::numeric", (Oid.INT8, 0)),
        m.Describe("S", ""),
        m.Bind("", "", (1, 0), (struct.pack("!q", -5), b"1.50"), (0, 1)),
        m.Execute("", 0),
        m.Sync(),
    )
    msgs = await client.recv_until_ready()
    assert m.ParameterDescription((Oid.INT8, Oid.NUMERIC)) in msgs
    rows = [x.values for x in msgs if isinstance(x, m.DataRow)]
    # 1.50 in binary numeric: 2 base-10000 digits (1, 5000), weight 0, positive, dscale 2
    assert rows == [(b"-5", struct.pack("!hhHHhh", 2, 0, 0, 2, 1, 5000))]
    await client.close()


async def test_empty_queries(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    await client.startup()
    client.send(m.Query(""))
    assert kinds(await client.recv_until_ready()) == ["EmptyQueryResponse", "ReadyForQuery"]
    client.send(m.Query(" ; -- only a comment\n;"))
    assert kinds(await client.recv_until_ready()) == ["EmptyQueryResponse", "ReadyForQuery"]
    client.send(m.Parse("", ""), m.Describe("S", ""), m.Bind("", ""), m.Execute("", 0), m.Sync())
    assert kinds(await client.recv_until_ready()) == [
        "ParseComplete",
        "ParameterDescription",
        "NoData",
        "BindComplete",
        "EmptyQueryResponse",
        "ReadyForQuery",
    ]
    await client.close()


async def test_function_call_is_refused(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    await client.startup()
    client.send(m.FunctionCall(b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"))
    msgs = await client.recv_until_ready()
    assert errors(msgs) == [("ERROR", "0A000")]
    await client.close()


async def test_connection_limit(db: Any) -> None:
    server = PgWireServer(db.session, max_connections=1)
    await server.start()
    try:
        first = await RawClient.open(server.port)
        await first.startup()
        assert server.connection_count == 1
        second = await RawClient.open(server.port)
        second.send(m.StartupMessage({"user": "u"}))
        err = await fatal_then_eof(second)
        assert (err.code, err.message) == ("53300", "sorry, too many clients already")
        first.send(m.Terminate())
        assert await first.eof()
        for _ in range(100):
            if server.connection_count == 0:
                break
            await asyncio.sleep(0.01)
        third = await RawClient.open(server.port)
        assert (await third.startup())[-1] == m.ReadyForQuery("I")
        await third.close()
    finally:
        await server.shutdown()


async def test_key_allocator_and_cancel_matching(db: Any) -> None:
    keys = iter([BackendKey(0xDEADBEEF, 7), BackendKey(0xDEADBEEF, 8)])
    server = PgWireServer(db.session, key_allocator=lambda: next(keys))
    await server.start()
    try:
        client = await RawClient.open(server.port)
        msgs = await client.startup()
        assert m.BackendKeyData(0xDEADBEEF, 7) in msgs
        client.send(m.Query("select pg_sleep(30)"))
        await asyncio.wait_for(db.sessions[0].busy.wait(), 5)
        # A wrong secret cancels nothing; the cancel connection is just closed.
        bad = await RawClient.open(server.port)
        bad.send(m.CancelRequest(0xDEADBEEF, 8))
        assert await bad.eof()
        assert db.cancels == 0
        good = await RawClient.open(server.port)
        good.send(m.CancelRequest(0xDEADBEEF, 7))
        assert await good.eof()
        msgs = await client.recv_until_ready()
        assert errors(msgs) == [("ERROR", "57014")]
        assert db.cancels == 1
        assert server.cancel(0xDEADBEEF, 7) is True  # matched, but idle: nothing to cancel
        assert db.cancels == 1
        await client.close()
    finally:
        await server.shutdown()


async def test_cancel_stops_a_long_result_stream(server: PgWireServer, db: Any) -> None:
    client = await RawClient.open(server.port)
    msgs = await client.startup()
    key = next(x for x in msgs if isinstance(x, m.BackendKeyData))
    client.send(m.Query("select * from gen(100000000)"))
    first = await client.recv()
    assert isinstance(first, m.RowDescription)
    server.cancel(key.pid, key.secret)
    msgs = await client.recv_until_ready()
    assert errors(msgs) == [("ERROR", "57014")]
    assert 0 < len(msgs) < 1_000_000
    await client.close()


async def test_startup_timeout(db: Any) -> None:
    server = PgWireServer(db.session, startup_timeout_s=0.2)
    await server.start()
    try:
        silent = await RawClient.open(server.port)
        assert await silent.eof()
        stuck = await RawClient.open(server.port)
        server.authenticator = CleartextPasswordAuthenticator({"u": "pw"})
        stuck.send(m.StartupMessage({"user": "u"}))
        assert await stuck.recv() == m.AuthenticationCleartextPassword()
        err = await fatal_then_eof(stuck)
        assert err.code == "08P01"
    finally:
        await server.shutdown()


async def test_cleartext_password(db: Any) -> None:
    server = PgWireServer(db.session, authenticator=CleartextPasswordAuthenticator({"u": "pw"}))
    await server.start()
    try:
        ok = await RawClient.open(server.port)
        ok.send(m.StartupMessage({"user": "u"}))
        assert await ok.recv() == m.AuthenticationCleartextPassword()
        ok.send(m.PasswordMessage("pw"))
        assert (await ok.recv_until_ready())[0] == m.AuthenticationOk()
        await ok.close()
        bad = await RawClient.open(server.port)
        bad.send(m.StartupMessage({"user": "u"}))
        assert await bad.recv() == m.AuthenticationCleartextPassword()
        bad.send(m.PasswordMessage("wrong"))
        err = await fatal_then_eof(bad)
        assert err.code == "28P01"
        confused = await RawClient.open(server.port)
        confused.send(m.StartupMessage({"user": "u"}))
        assert await confused.recv() == m.AuthenticationCleartextPassword()
        confused.send(m.Query("select 1"))
        err = await fatal_then_eof(confused)
        assert err.code == "08P01"
    finally:
        await server.shutdown()


async def test_shutdown_reaches_connections_in_every_phase(db: Any) -> None:
    server = PgWireServer(db.session, authenticator=CleartextPasswordAuthenticator({"u": "pw"}))
    await server.start()
    port = server.port
    in_auth = await RawClient.open(port)
    in_auth.send(m.StartupMessage({"user": "u"}))
    assert await in_auth.recv() == m.AuthenticationCleartextPassword()
    ready = await RawClient.open(server.port)
    ready.send(m.StartupMessage({"user": "u"}), m.PasswordMessage("pw"))
    await ready.recv_until_ready()
    await server.shutdown("going away for an upgrade")
    for client in (in_auth, ready):
        err = await fatal_then_eof(client)
        assert (err.code, err.message) == ("57P01", "going away for an upgrade")
    assert db.closed == 1  # only `ready` had a session
    with pytest.raises(OSError):
        await RawClient.open(port)


async def test_pipelined_simple_queries_and_notices(server: PgWireServer) -> None:
    client = await RawClient.open(server.port)
    await client.startup()
    client.send(m.Query("select notice('n1')"), m.Query("set TimeZone to 'UTC'"))
    msgs = await client.recv_until_ready()
    assert kinds(msgs) == [
        "NoticeResponse",
        "NoticeResponse",
        "RowDescription",
        "DataRow",
        "CommandComplete",
        "ReadyForQuery",
    ]
    msgs = await client.recv_until_ready()
    assert msgs == [
        m.ParameterStatus("TimeZone", "UTC"),
        m.CommandComplete("SET"),
        m.ReadyForQuery("I"),
    ]
    await client.close()
