"""The balancer's retry / move / abort rules, made deterministic with scripted fake backends.

A real upgrade (test_cutover.py) hits each window only by chance; here a small fake server
(speaking just enough of the protocol) is told exactly how to answer: fatally, not at all,
read-only, fenced, or normally. Each backend records the statements it executed, so "ran
exactly once" is checked directly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import psycopg
import pytest

from twinstream.balancer import Balancer, StaticRoute
from twinstream.balancer.sqlclass import classify
from twinstream.pgwire import (
    Column,
    ExecuteResult,
    Oid,
    PgWireServer,
    QueryResult,
    ScramSha256Authenticator,
    Session,
    StatementDescription,
)
from twinstream.pgwire import messages as m
from twinstream.pgwire.codec import BackendParser, FrontendParser
from twinstream.pgwire.sqlsplit import split_statements

HOST = "127.0.0.1"


class _Killed(Exception):
    pass


@dataclass
class FakePg:
    """A scripted backend of one generation.

    `mode` says how statements whose first word is in `affected` are answered: "ok", "fatal"
    (FATAL 57P01 and close), "close" (close without a word), "readonly" (ERROR 25006),
    "fenced" (the ERROR of a fenced generation's group commit)."""

    generation: int
    mode: str = "ok"
    affected: set[str] = field(default_factory=lambda: {"insert"})
    password: bool = False
    executed: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    idle: set[asyncio.StreamWriter] = field(default_factory=set)
    startups: int = 0
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, 0)

    async def close(self) -> None:
        for w in list(self.writers):
            w.close()
        if self.server is not None:
            self.server.close()

    def kill_idle(self) -> None:
        """What a fenced generation does on its way out: FATAL 57P01 to every session."""
        fatal = m.ErrorResponse("FATAL", "57P01", "terminating connection").encode()
        for w in list(self.writers):
            w.write(fatal)
            w.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self._session(reader, writer)
        except (_Killed, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = FrontendParser()
        while (msg := parser.next_message()) is None:
            parser.feed(await reader.read(65536))
        assert isinstance(msg, m.StartupMessage)
        self.startups += 1
        if self.password:
            writer.write(m.AuthenticationCleartextPassword().encode())
            while (pw := parser.next_message()) is None:
                data = await reader.read(65536)
                if not data:
                    return
                parser.feed(data)
            assert isinstance(pw, m.PasswordMessage)
        pid = self.generation << 24 | next(self._pids)
        writer.write(m.AuthenticationOk().encode())
        writer.write(m.ParameterStatus("server_version", "15.0").encode())
        writer.write(m.BackendKeyData(pid, 7).encode())
        writer.write(m.ReadyForQuery("I").encode())
        status = "I"
        variables: dict[str, str] = {}
        statements: dict[str, str] = {}
        portal = ""
        failed = False
        while True:
            data = await reader.read(65536)
            if not data:
                return
            parser.feed(data)
            for msg in parser:
                if isinstance(msg, m.Terminate):
                    return
                if failed and not isinstance(msg, m.Sync):
                    continue
                if isinstance(msg, m.Query):
                    for stmt in split_statements(msg.sql):
                        status, ok = self._run(writer, stmt, status, variables)
                        if not ok:
                            break
                    writer.write(m.ReadyForQuery(status).encode())  # type: ignore[arg-type]
                elif isinstance(msg, m.Parse):
                    statements[msg.name] = msg.query
                    writer.write(m.ParseComplete().encode())
                elif isinstance(msg, m.Bind):
                    portal = statements[msg.statement]
                    writer.write(m.BindComplete().encode())
                elif isinstance(msg, m.Describe):
                    if msg.kind == "S":
                        writer.write(m.ParameterDescription(()).encode())
                    writer.write(m.NoData().encode())
                elif isinstance(msg, m.Execute):
                    status, ok = self._run(writer, portal, status, variables)
                    failed = not ok
                elif isinstance(msg, m.Close):
                    statements.pop(msg.name, None)
                    writer.write(m.CloseComplete().encode())
                elif isinstance(msg, m.Sync):
                    failed = False
                    writer.write(m.ReadyForQuery(status).encode())  # type: ignore[arg-type]
            await writer.drain()

    def _run(
        self, writer: asyncio.StreamWriter, stmt: str, status: str, variables: dict[str, str]
    ) -> tuple[str, bool]:
        words = stmt.split()
        first = words[0].lower()
        if first in self.affected and self.mode != "ok":
            if self.mode == "fatal":
                writer.write(m.ErrorResponse("FATAL", "57P01", "fenced out").encode())
                writer.close()
                raise _Killed
            if self.mode == "close":
                writer.transport.abort()
                raise _Killed
            if self.mode == "readonly":
                msg = "cannot write in read-only mode"
                writer.write(m.ErrorResponse("ERROR", "25006", msg).encode())
            elif self.mode == "fenced":
                msg = "internal error: group commit has stopped: fenced out by generation 2"
                writer.write(m.ErrorResponse("ERROR", "XX000", msg).encode())
            return ("E" if status != "I" else "I"), False
        kind = classify(stmt).kind
        if kind == "begin":
            writer.write(m.CommandComplete("BEGIN").encode())
            return "T", True
        if kind in ("commit", "rollback"):
            self.executed.append(stmt)
            writer.write(m.CommandComplete(kind.upper()).encode())
            return "I", True
        if kind == "set":
            variables[words[1].lower()] = words[-1].strip("'")
            writer.write(m.CommandComplete("SET").encode())
            return status, True
        if first == "show":
            writer.write(m.RowDescription((m.FieldDescription(words[1], 25),)).encode())
            value = variables.get(words[1].lower(), "")
            writer.write(m.DataRow((value.encode(),)).encode())
            writer.write(m.CommandComplete("SHOW").encode())
            return status, True
        self.executed.append(stmt)
        tag = "INSERT 0 1" if first == "insert" else "SELECT 1"
        if first == "select":
            writer.write(m.RowDescription((m.FieldDescription("x", 25),)).encode())
            writer.write(m.DataRow((b"1",)).encode())
        writer.write(m.CommandComplete(tag).encode())
        return status, True


class Client:
    """A raw protocol client: send messages, read answers up to ReadyForQuery."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = BackendParser()
        self.pending: list[m.BackendMessage] = []
        self.key: tuple[int, int] | None = None

    @classmethod
    async def connect(cls, port: int, password: str | None = None) -> Client:
        reader, writer = await asyncio.open_connection(HOST, port)
        c = cls(reader, writer)
        writer.write(m.StartupMessage({"user": "u", "database": "d"}).encode())
        while True:
            msg = await c.next()
            if isinstance(msg, m.AuthenticationCleartextPassword):
                assert password is not None
                writer.write(m.PasswordMessage(password).encode())
            elif isinstance(msg, m.BackendKeyData):
                c.key = (msg.pid, msg.secret)
            elif isinstance(msg, m.ErrorResponse):
                raise AssertionError(msg)
            elif isinstance(msg, m.ReadyForQuery):
                return c

    async def next(self, timeout: float = 10.0) -> m.BackendMessage:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError
            self.parser.feed(data)
            self.pending.extend(self.parser)
        return self.pending.pop(0)

    def send(self, *msgs: bytes) -> None:
        self.writer.write(b"".join(msgs))

    async def until_ready(self) -> list[m.BackendMessage]:
        out: list[m.BackendMessage] = []
        while True:
            msg = await self.next()
            out.append(msg)
            if isinstance(msg, m.ReadyForQuery):
                return out

    async def query(self, sql: str) -> list[m.BackendMessage]:
        self.send(m.Query(sql).encode())
        return await self.until_ready()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(m.Terminate().encode())
            self.writer.close()


def types(msgs: list[m.BackendMessage]) -> list[str]:
    return [type(x).__name__ for x in msgs]


def error_of(msgs: list[m.BackendMessage]) -> m.ErrorResponse | None:
    return next((x for x in msgs if isinstance(x, m.ErrorResponse)), None)


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakePg, FakePg]]:
    g1, g2 = FakePg(1), FakePg(2)
    await g1.start()
    await g2.start()
    try:
        yield g1, g2
    finally:
        await g1.close()
        await g2.close()


Setup = Callable[..., Awaitable[tuple[Balancer, StaticRoute]]]


@pytest.fixture
async def setup(fakes: tuple[FakePg, FakePg]) -> AsyncIterator[Setup]:
    made: list[Balancer] = []

    async def make(**kwargs: object) -> tuple[Balancer, StaticRoute]:
        route = StaticRoute((1, HOST, fakes[0].port))
        route.add_endpoint(2, HOST, fakes[1].port)
        kwargs.setdefault("hold_timeout_s", 5.0)
        bal = Balancer(HOST, 0, route, **kwargs)  # type: ignore[arg-type]
        await bal.start()
        made.append(bal)
        return bal, route

    yield make
    for bal in made:
        await bal.close()


INSERT = "INSERT INTO t VALUES (1)"


async def test_fatal_in_flight_is_resent_on_the_next_generation(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    g1, g2 = fakes
    bal, route = await setup()
    c = await Client.connect(bal.port)
    g1.mode = "fatal"
    c.send(m.Query(INSERT).encode())
    await asyncio.sleep(0.2)  # held: the route still names the fenced generation
    route.set(2, HOST, g2.port)
    msgs = await c.until_ready()
    assert types(msgs) == ["CommandComplete", "ReadyForQuery"]
    assert (g1.executed, g2.executed) == ([], [INSERT])
    assert bal.stats().retried == 1
    assert (await c.query("SELECT 1"))[-1] == m.ReadyForQuery("I")
    await c.close()


async def test_close_without_answer_is_resent_unless_disabled(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    g1, g2 = fakes
    bal, route = await setup()
    c = await Client.connect(bal.port)
    g1.mode = "close"
    route.set(2, HOST, g2.port)  # c is busy below, so it is not moved first
    c.send(m.Query(INSERT).encode())
    assert types(await c.until_ready()) == ["CommandComplete", "ReadyForQuery"]
    assert g2.executed == [INSERT]
    await c.close()

    bal2, _route2 = await setup(retry_on_eof=False)
    c2 = await Client.connect(bal2.port)
    c2.send(m.Query(INSERT).encode())
    msg = await c2.next()
    assert isinstance(msg, m.ErrorResponse) and msg.severity == "FATAL"
    with pytest.raises(EOFError):
        await c2.next()


async def test_extended_batch_after_flush_is_resent_skipping_the_seen_prefix(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    """asyncpg's way: Parse + Describe + Flush, read the description, then Bind + Execute +
    Sync. The generation dies in between; the whole unit is re-sent and the client gets only
    what it has not seen."""
    g1, g2 = fakes
    bal, route = await setup()
    c = await Client.connect(bal.port)
    c.send(m.Parse("stmt1", INSERT).encode(), m.Describe("S", "stmt1").encode(), m.Flush().encode())
    got = [await c.next(), await c.next(), await c.next()]
    assert types(got) == ["ParseComplete", "ParameterDescription", "NoData"]
    g1.mode = "fatal"
    route.set(2, HOST, g2.port)
    c.send(m.Bind("", "stmt1").encode(), m.Execute("").encode(), m.Sync().encode())
    msgs = await c.until_ready()
    assert types(msgs) == ["BindComplete", "CommandComplete", "ReadyForQuery"]
    assert (g1.executed, g2.executed) == ([], [INSERT])
    # The named statement was recorded: it still works (and is replayed on later moves).
    c.send(m.Bind("", "stmt1").encode(), m.Execute("").encode(), m.Sync().encode())
    assert types(await c.until_ready()) == ["BindComplete", "CommandComplete", "ReadyForQuery"]
    assert g2.executed == [INSERT, INSERT]
    await c.close()


async def test_read_only_answer_is_retried_until_promoted(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    _g1, g2 = fakes
    bal, route = await setup()
    g2.mode = "readonly"
    route.set(2, HOST, g2.port)
    c = await Client.connect(bal.port)
    c.send(m.Query(INSERT).encode())
    await asyncio.sleep(0.3)
    g2.mode = "ok"  # promoted
    assert types(await c.until_ready()) == ["CommandComplete", "ReadyForQuery"]
    assert g2.executed == [INSERT]
    # The same over the extended protocol with a named statement (re-sent on a fresh backend).
    g2.mode = "readonly"
    c.send(
        m.Parse("s", INSERT).encode(),
        m.Bind("", "s").encode(),
        m.Execute("").encode(),
        m.Sync().encode(),
    )
    await asyncio.sleep(0.3)
    g2.mode = "ok"
    msgs = await c.until_ready()
    assert types(msgs) == ["ParseComplete", "BindComplete", "CommandComplete", "ReadyForQuery"]
    assert g2.executed == [INSERT, INSERT]
    assert bal.stats().retried == 2
    await c.close()


async def test_read_only_answer_is_passed_on_after_the_deadline(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    g1, _ = fakes
    bal, _ = await setup(hold_timeout_s=0.4)
    g1.mode = "readonly"
    c = await Client.connect(bal.port)
    msgs = await c.query(INSERT)
    err = error_of(msgs)
    assert err is not None and err.code == "25006"
    assert msgs[-1] == m.ReadyForQuery("I")
    await c.close()


async def test_fenced_error_is_resent_elsewhere(fakes: tuple[FakePg, FakePg], setup: Setup) -> None:
    g1, g2 = fakes
    bal, route = await setup()
    g1.mode = "fenced"
    c = await Client.connect(bal.port)
    c.send(m.Query(INSERT).encode())
    await asyncio.sleep(0.2)
    route.set(2, HOST, g2.port)
    assert types(await c.until_ready()) == ["CommandComplete", "ReadyForQuery"]
    assert (g1.executed, g2.executed) == ([], [INSERT])
    await c.close()


async def test_partly_done_statement_is_not_resent(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    """The first INSERT of a two-statement Query completed before the backend died: re-sending
    could run it twice, so the client gets the FATAL as it would without a balancer."""
    g1, g2 = fakes
    bal, _ = await setup()
    g1.affected = {"update"}
    g1.mode = "fatal"
    c = await Client.connect(bal.port)
    c.send(m.Query(f"{INSERT}; UPDATE t SET a = 2").encode())
    assert await c.next() == m.CommandComplete("INSERT 0 1")
    msg = await c.next()
    assert isinstance(msg, m.ErrorResponse) and (msg.severity, msg.code) == ("FATAL", "57P01")
    with pytest.raises(EOFError):
        await c.next()
    assert (g1.executed, g2.executed) == ([INSERT], [])


async def test_transaction_gets_40001_then_a_fresh_session(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    g1, g2 = fakes
    bal, route = await setup()
    c = await Client.connect(bal.port)
    assert (await c.query("BEGIN"))[-1] == m.ReadyForQuery("T")
    assert (await c.query(INSERT))[-1] == m.ReadyForQuery("T")
    route.set(2, HOST, g2.port)
    await asyncio.sleep(0.1)
    g1.kill_idle()  # fenced while the session idles inside its transaction
    msgs = await c.query("INSERT INTO t VALUES (2)")
    err = error_of(msgs)
    assert err is not None and err.code == "40001" and "new generation" in err.message
    assert msgs[-1] == m.ReadyForQuery("I")
    assert (await c.query(INSERT))[-1] == m.ReadyForQuery("I")
    assert g2.executed == [INSERT]
    # In flight inside a transaction: 40001 at once.
    assert (await c.query("BEGIN"))[-1] == m.ReadyForQuery("T")
    g2.mode = "fatal"
    msgs = await c.query(INSERT)
    err = error_of(msgs)
    assert err is not None and err.code == "40001" and msgs[-1] == m.ReadyForQuery("I")
    assert bal.stats().tx_aborted_40001 == 2
    await c.close()


async def test_rollback_after_a_lost_transaction_just_succeeds(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    g1, g2 = fakes
    bal, route = await setup()
    c = await Client.connect(bal.port)
    await c.query("BEGIN")
    route.set(2, HOST, g2.port)
    g1.kill_idle()
    await asyncio.sleep(0.1)
    msgs = await c.query("ROLLBACK")
    assert types(msgs) == ["CommandComplete", "ReadyForQuery"]
    assert msgs[-1] == m.ReadyForQuery("I")
    await c.close()


async def test_commit_lost_without_57p01_is_not_turned_into_40001(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    g1, g2 = fakes
    bal, route = await setup()
    c = await Client.connect(bal.port)
    await c.query("BEGIN")
    await c.query(INSERT)
    g1.affected = {"commit"}
    g1.mode = "close"
    route.set(2, HOST, g2.port)
    c.send(m.Query("COMMIT").encode())
    msg = await c.next()
    assert isinstance(msg, m.ErrorResponse) and msg.severity == "FATAL"
    assert msg.code == "08006"  # outcome unknown: the client must check, not blindly retry
    assert bal.stats().tx_aborted_40001 == 0


async def test_password_session_is_not_moved(fakes: tuple[FakePg, FakePg], setup: Setup) -> None:
    g1, g2 = fakes
    g1.password = g2.password = True
    bal, route = await setup()
    c = await Client.connect(bal.port, password="secret")
    route.set(2, HOST, g2.port)
    await eventually(lambda: bal.stats().move_failed == 1)
    assert [s.generation for s in bal.sessions()] == [1]
    assert (await c.query(INSERT))[-1] == m.ReadyForQuery("I")
    assert g1.executed == [INSERT]
    await c.close()


async def test_set_state_and_key_translation_across_moves(
    fakes: tuple[FakePg, FakePg], setup: Setup
) -> None:
    _g1, g2 = fakes
    bal, route = await setup()
    c = await Client.connect(bal.port)
    await c.query("SET application_name = 'a'")
    await c.query("SET search_path = x")
    await c.query("SET application_name = 'b'")
    await c.query("SET LOCAL statement_timeout = 5")  # not replayed
    route.set(2, HOST, g2.port)
    await eventually(lambda: bal.stats().moved == 1)
    (info,) = bal.sessions()
    assert info.client_key == c.key and info.backend_key != c.key
    assert info.backend_key is not None and info.backend_key[0] >> 24 == 2
    msgs = await c.query("SHOW application_name")
    assert any(isinstance(x, m.DataRow) and x.values == (b"b",) for x in msgs)
    msgs = await c.query("SHOW search_path")
    assert any(isinstance(x, m.DataRow) and x.values == (b"x",) for x in msgs)
    assert g2.startups == 1
    await c.close()


async def test_cancel_while_waiting_to_retry(fakes: tuple[FakePg, FakePg], setup: Setup) -> None:
    g1, _g2 = fakes
    bal, _route = await setup()
    c = await Client.connect(bal.port)
    g1.mode = "readonly"
    c.send(m.Query(INSERT).encode())
    await asyncio.sleep(0.2)
    assert c.key is not None
    _, w = await asyncio.open_connection(HOST, bal.port)
    w.write(m.CancelRequest(*c.key).encode())
    await w.drain()
    w.close()
    msgs = await c.until_ready()
    err = error_of(msgs)
    assert err is not None and err.code == "57014"
    assert g1.executed == []
    await c.close()


class _OneRowSession(Session):
    async def describe(self, sql: str, param_oids: Sequence[int]) -> StatementDescription:
        return StatementDescription([], [Column("x", Oid.INT4)])

    async def execute(
        self, sql: str, params: Sequence[object], param_oids: Sequence[int]
    ) -> ExecuteResult:
        return QueryResult(columns=[Column("x", Oid.INT4)], rows=[(1,)])


async def test_scram_authentication_is_relayed() -> None:
    """SCRAM-SHA-256 is end to end between client and backend: the balancer only relays it
    (so it can never re-authenticate on its own: such sessions are not moved)."""
    server = PgWireServer(
        lambda ctx: _OneRowSession(),
        authenticator=ScramSha256Authenticator({"alice": "s3cret"}),
    )
    await server.start()
    other = PgWireServer(
        lambda ctx: _OneRowSession(),
        authenticator=ScramSha256Authenticator({"alice": "s3cret"}),
    )
    await other.start()
    route = StaticRoute((1, HOST, server.port))
    try:
        async with Balancer(HOST, 0, route) as bal:
            dsn = f"host={HOST} port={bal.port} user=alice dbname=d"
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                await psycopg.AsyncConnection.connect(dsn + " password=wrong")
            async with await psycopg.AsyncConnection.connect(dsn + " password=s3cret") as conn:
                assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
                route.set(2, HOST, other.port)
                await eventually(lambda: bal.stats().move_failed == 1)
                assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
                assert [s.generation for s in bal.sessions()] == [1]
    finally:
        await server.shutdown()
        await other.shutdown()
