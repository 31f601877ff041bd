"""A tiny fake SQL backend for the pgwire tests, and fixtures serving it on an ephemeral port.

The fake understands a handful of statements by regular expression (nothing here is SQL):

    select 1                              one int4 row
    select $1::int, $2, ...               echoes its parameters (types: cast, else the
                                          client's, else text)
    select * from gen(N) / agen(N)        N int4 rows, from a generator / async generator
    select * from t                       the rows COPYed into t (id int4, name text)
    select types()                        one row with a value of every supported type
    select pg_sleep(S)                    waits S seconds unless cancelled (57014)
    select notice('msg')                  sends a NOTICE, returns one row
    select boom() / select fatal()        a Python exception / a FATAL PgError
    begin / commit / rollback             transaction status T / I (E after an error in T)
    set NAME = VALUE / to VALUE           ParameterStatus NAME
    copy t from stdin                     COPY IN into t
    copy t to stdout, copy (select * from gen(N)) to stdout
    subscribe                             an endless COPY OUT stream of (i, 'tick') rows
    declare NAME cursor for Q, fetch forward N from NAME, close NAME   SQL-level cursors
    anything else                         42P01
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest

from twinstream.pgwire import (
    Column,
    ConnectionContext,
    CopyInRequest,
    CopyOutStream,
    ExecuteResult,
    PgError,
    PgWireServer,
    QueryResult,
    Session,
    SqlState,
    StatementDescription,
)
from twinstream.pgwire.messages import TransactionStatus
from twinstream.pgwire.types import Oid

CASTS = {
    "int": Oid.INT4,
    "int4": Oid.INT4,
    "integer": Oid.INT4,
    "int2": Oid.INT2,
    "smallint": Oid.INT2,
    "int8": Oid.INT8,
    "bigint": Oid.INT8,
    "text": Oid.TEXT,
    "varchar": Oid.VARCHAR,
    "numeric": Oid.NUMERIC,
    "float4": Oid.FLOAT4,
    "real": Oid.FLOAT4,
    "float8": Oid.FLOAT8,
    "bool": Oid.BOOL,
    "boolean": Oid.BOOL,
    "date": Oid.DATE,
    "timestamp": Oid.TIMESTAMP,
    "timestamptz": Oid.TIMESTAMPTZ,
    "interval": Oid.INTERVAL,
    "uuid": Oid.UUID,
    "json": Oid.JSON,
    "jsonb": Oid.JSONB,
    "bytea": Oid.BYTEA,
}

T_COLUMNS = [Column("id", Oid.INT4), Column("name", Oid.TEXT)]

TYPES_ROW: list[tuple[str, int, object]] = [
    ("b", Oid.BOOL, True),
    ("i2", Oid.INT2, -32768),
    ("i4", Oid.INT4, 2147483647),
    ("i8", Oid.INT8, -9223372036854775808),
    ("f4", Oid.FLOAT4, 1.5),
    ("f8", Oid.FLOAT8, 0.1),
    ("num", Oid.NUMERIC, Decimal("-12345.678900")),
    ("txt", Oid.TEXT, "héllo\tworld"),
    ("vc", Oid.VARCHAR, "v"),
    ("d", Oid.DATE, dt.date(2024, 2, 29)),
    ("ts", Oid.TIMESTAMP, dt.datetime(2024, 2, 29, 12, 34, 56, 789)),
    ("tstz", Oid.TIMESTAMPTZ, dt.datetime(2024, 2, 29, 12, 34, 56, 789, tzinfo=dt.UTC)),
    ("iv", Oid.INTERVAL, dt.timedelta(days=3, hours=4, minutes=5, seconds=6, microseconds=7)),
    ("u", Oid.UUID, uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("jb", Oid.JSONB, {"a": [1, 2, {"b": None}], "c": "ü"}),
    ("js", Oid.JSON, [1, "two", 3.5]),
    ("by", Oid.BYTEA, b"\x00\x01\xffbytes"),
    ("nul", Oid.TEXT, None),
]


@dataclass
class Plan:
    param_oids: list[int]
    columns: list[Column] | None
    run: Callable[[Sequence[object]], Awaitable[ExecuteResult]]


def _const(result: ExecuteResult) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
    async def run(params: Sequence[object]) -> ExecuteResult:
        return result

    return run


class TableCopyIn(CopyInRequest):
    def __init__(self, db: FakeDatabase, table: str) -> None:
        super().__init__(T_COLUMNS)
        self.db = db
        self.table = table
        self.staged: list[tuple[object, ...]] = []

    async def write_rows(self, rows: list[tuple[object, ...]]) -> None:
        self.staged.extend(rows)

    async def finish(self, row_count: int) -> str:
        self.db.tables[self.table].extend(self.staged)
        return f"COPY {row_count}"

    async def abort(self, reason: str) -> None:
        self.db.copy_aborts.append(reason)


class FakeDatabase:
    def __init__(self) -> None:
        self.tables: dict[str, list[tuple[object, ...]]] = {"t": []}
        self.sessions: list[FakeSession] = []
        self.closed = 0
        self.copy_aborts: list[str] = []
        self.cancels = 0

    def session(self, ctx: ConnectionContext) -> FakeSession:
        s = FakeSession(self, ctx)
        self.sessions.append(s)
        return s


@dataclass
class Cursor:
    columns: list[Column]
    rows: Iterator[Sequence[object]]


class FakeSession(Session):
    def __init__(self, db: FakeDatabase, ctx: ConnectionContext) -> None:
        self.db = db
        self.ctx = ctx
        self.status: TransactionStatus = "I"
        self.cancel_event = asyncio.Event()
        self.busy = asyncio.Event()
        self.cursors: dict[str, Cursor] = {}
        self.executed: list[str] = []
        self.startup_params: dict[str, str] = {}

    async def startup(self, params: Mapping[str, str]) -> Mapping[str, str]:
        self.startup_params = dict(params)
        if params.get("database") == "nodb":
            raise PgError(
                SqlState.INVALID_CATALOG_NAME, 'database "nodb" does not exist', severity="FATAL"
            )
        return {"twinstream_test": "yes"}

    def transaction_status(self) -> TransactionStatus:
        return self.status

    async def cancel(self) -> None:
        self.db.cancels += 1
        self.cancel_event.set()

    async def close(self) -> None:
        self.db.closed += 1

    async def describe_cursor(self, name: str) -> list[Column] | None:
        cursor = self.cursors.get(name)
        if cursor is None:
            return await super().describe_cursor(name)
        return cursor.columns

    async def describe(self, sql: str, param_oids: Sequence[int]) -> StatementDescription:
        plan = self._guarded_plan(sql, param_oids)
        return StatementDescription(plan.param_oids, plan.columns)

    async def execute(
        self, sql: str, params: Sequence[object], param_oids: Sequence[int]
    ) -> ExecuteResult:
        self.executed.append(sql)
        self.cancel_event.clear()
        try:
            return await self._guarded_plan(sql, param_oids).run(params)
        except PgError:
            if self.status == "T":
                self.status = "E"
            raise

    def _guarded_plan(self, sql: str, param_oids: Sequence[int]) -> Plan:
        low = sql.strip().lower()
        if self.status == "E" and not re.match(r"(rollback|commit|end|abort)\b", low):
            raise PgError(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        try:
            return self.plan(sql, param_oids)
        except PgError:
            if self.status == "T":
                self.status = "E"
            raise

    # ------------------------------------------------------------------ the "planner"

    def plan(self, sql: str, param_oids: Sequence[int]) -> Plan:
        s = sql.strip().rstrip(";").strip()
        low = s.lower()

        if low in ("begin", "begin transaction", "start transaction"):
            return Plan([], None, self._set_status("T", "BEGIN"))
        if low in ("commit", "end", "commit transaction"):
            return Plan(
                [], None, self._set_status("I", "ROLLBACK" if self.status == "E" else "COMMIT")
            )
        if low in ("rollback", "abort", "rollback transaction"):
            return Plan([], None, self._set_status("I", "ROLLBACK"))
        if low == "select 1":
            return Plan(
                [],
                [Column("?column?", Oid.INT4)],
                _const(QueryResult("SELECT 1", [Column("?column?", Oid.INT4)], [(1,)])),
            )
        if m := re.fullmatch(r"select\s+(\$\d+(?:::\w+)?(?:\s*,\s*\$\d+(?:::\w+)?)*)", low):
            return self._echo(m.group(1), param_oids)
        if m := re.fullmatch(r"select \* from (a?gen)\((\d+)\)", low):
            return self._gen(m.group(1) == "agen", int(m.group(2)))
        if low == "select * from t":
            rows = list(self.db.tables["t"])
            return Plan([], T_COLUMNS, _const(QueryResult(None, T_COLUMNS, rows)))
        if low == "select types()":
            cols = [Column(name, oid) for name, oid, _ in TYPES_ROW]
            row = tuple(v for _, _, v in TYPES_ROW)
            return Plan([], cols, _const(QueryResult("SELECT 1", cols, [row])))
        if m := re.fullmatch(r"select pg_sleep\(([\d.]+)\)", low):
            return Plan([], [Column("pg_sleep", Oid.TEXT)], self._sleep(float(m.group(1))))
        if m := re.fullmatch(r"select notice\('([^']*)'\)", s, re.IGNORECASE):
            return Plan([], [Column("notice", Oid.TEXT)], self._notice(m.group(1)))
        if low == "select boom()":
            return Plan([], [Column("boom", Oid.TEXT)], self._boom())
        if low == "select fatal()":
            raise PgError("XX001", "the fake backend gives up", severity="FATAL")
        if m := re.fullmatch(r"set\s+(\w+)\s*(?:=|to)\s*'?([^']*)'?", s, re.IGNORECASE):
            return Plan([], None, self._set(m.group(1), m.group(2)))
        low = re.sub(r'"(\w+)"', r"\1", low)
        if low == "copy t from stdin":
            return Plan([], None, self._copy_in())
        if low == "copy t to stdout":
            rows = list(self.db.tables["t"])
            return Plan([], None, _const(CopyOutStream(T_COLUMNS, rows)))
        if m := re.fullmatch(r"copy \(select \* from gen\((\d+)\)\) to stdout", low):
            n = int(m.group(1))
            return Plan(
                [],
                None,
                _const(CopyOutStream([Column("n", Oid.INT4)], ((i,) for i in range(1, n + 1)))),
            )
        if low == "subscribe":
            return Plan([], None, self._subscribe())
        if m := re.fullmatch(
            r'declare\s+"?(\w+)"?\s+(?:[a-z ]*?)cursor(?:\s+with(?:out)?\s+hold)?\s+for\s+(.*)',
            s,
            re.IGNORECASE | re.DOTALL,
        ):
            return self._declare(m.group(1), m.group(2), param_oids)
        if m := re.fullmatch(r'fetch\s+(?:forward\s+)?(\d+|all)\s+from\s+"?(\w+)"?', low):
            return self._fetch(m.group(2), m.group(1))
        if m := re.fullmatch(r'close\s+"?(\w+)"?', low):
            name = m.group(1)

            async def close(params: Sequence[object]) -> ExecuteResult:
                self.cursors.pop(name, None)
                return QueryResult("CLOSE CURSOR")

            return Plan([], None, close)
        if m := re.search(r"from\s+(\w+)", low):
            raise PgError(SqlState.UNDEFINED_TABLE, f'relation "{m.group(1)}" does not exist')
        raise PgError(
            SqlState.SYNTAX_ERROR, f'syntax error at or near "{s.split()[0] if s else s}"'
        )

    def _set_status(
        self, status: TransactionStatus, tag: str
    ) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
        async def run(params: Sequence[object]) -> ExecuteResult:
            self.status = status
            return QueryResult(tag)

        return run

    def _echo(self, items: str, param_oids: Sequence[int]) -> Plan:
        refs = []
        for item in items.split(","):
            m = re.fullmatch(r"\s*\$(\d+)(?:::(\w+))?\s*", item)
            assert m is not None
            refs.append((int(m.group(1)) - 1, m.group(2)))
        n = max(i for i, _ in refs) + 1
        oids = [param_oids[i] if i < len(param_oids) and param_oids[i] else 0 for i in range(n)]
        for i, cast in refs:
            if cast is not None:
                if cast not in CASTS:
                    raise PgError("42704", f'type "{cast}" does not exist')
                oids[i] = CASTS[cast]
        oids = [o or Oid.TEXT for o in oids]
        columns = [Column(cast or "?column?", oids[i]) for i, cast in refs]

        async def run(params: Sequence[object]) -> ExecuteResult:
            return QueryResult("SELECT 1", columns, [tuple(params[i] for i, _ in refs)])

        return Plan(oids, columns, run)

    def _gen(self, is_async: bool, n: int) -> Plan:
        columns = [Column("n", Oid.INT4)]

        async def run(params: Sequence[object]) -> ExecuteResult:
            if is_async:

                async def agen() -> AsyncIterator[tuple[int]]:
                    for i in range(1, n + 1):
                        if i % 100 == 0:
                            await asyncio.sleep(0)
                        yield (i,)

                return QueryResult(None, columns, agen())
            return QueryResult(None, columns, ((i,) for i in range(1, n + 1)))

        return Plan([], columns, run)

    def _sleep(self, seconds: float) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
        async def run(params: Sequence[object]) -> ExecuteResult:
            self.busy.set()
            try:
                await asyncio.wait_for(self.cancel_event.wait(), seconds)
            except TimeoutError:
                return QueryResult("SELECT 1", [Column("pg_sleep", Oid.TEXT)], [("",)])
            finally:
                self.busy.clear()
            raise PgError(SqlState.QUERY_CANCELED, "canceling statement due to user request")

        return run

    def _notice(self, text: str) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
        async def run(params: Sequence[object]) -> ExecuteResult:
            self.ctx.notice(text, hint="a hint")
            self.ctx.notice("careful", severity="WARNING", sqlstate="01000")
            return QueryResult("SELECT 1", [Column("notice", Oid.TEXT)], [(text,)])

        return run

    def _boom(self) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
        async def run(params: Sequence[object]) -> ExecuteResult:
            raise RuntimeError("kaboom")

        return run

    def _set(self, name: str, value: str) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
        async def run(params: Sequence[object]) -> ExecuteResult:
            self.ctx.parameter_status(name, value)
            return QueryResult("SET")

        return run

    def _copy_in(self) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
        async def run(params: Sequence[object]) -> ExecuteResult:
            return TableCopyIn(self.db, "t")

        return run

    def _subscribe(self) -> Callable[[Sequence[object]], Awaitable[ExecuteResult]]:
        async def rows() -> AsyncIterator[tuple[int, str]]:
            i = 0
            while True:
                self.busy.set()
                try:
                    await asyncio.wait_for(self.cancel_event.wait(), 0.02)
                except TimeoutError:
                    i += 1
                    yield (i, "tick")
                    continue
                raise PgError(SqlState.QUERY_CANCELED, "canceling statement due to user request")

        async def run(params: Sequence[object]) -> ExecuteResult:
            return CopyOutStream([Column("i", Oid.INT8), Column("what", Oid.TEXT)], rows())

        return run

    def _declare(self, name: str, query: str, param_oids: Sequence[int]) -> Plan:
        inner = self.plan(query, param_oids)

        async def run(params: Sequence[object]) -> ExecuteResult:
            result = await inner.run(params)
            assert isinstance(result, QueryResult) and result.columns is not None
            assert not hasattr(result.rows, "__aiter__")
            self.cursors[name] = Cursor(result.columns, iter(result.rows))
            return QueryResult("DECLARE CURSOR")

        return Plan(inner.param_oids, None, run)

    def _fetch(self, name: str, count: str) -> Plan:
        cursor = self.cursors.get(name)
        if cursor is None:
            raise PgError(SqlState.INVALID_CURSOR_NAME, f'cursor "{name}" does not exist')

        async def run(params: Sequence[object]) -> ExecuteResult:
            n = None if count == "all" else int(count)
            rows = (
                list(cursor.rows)
                if n is None
                else [r for _, r in zip(range(n), cursor.rows, strict=False)]
            )
            return QueryResult(f"FETCH {len(rows)}", cursor.columns, rows)

        return Plan([], cursor.columns, run)


@pytest.fixture
def types_row() -> list[tuple[str, int, object]]:
    return TYPES_ROW


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
async def server(db: FakeDatabase) -> AsyncIterator[PgWireServer]:
    srv = PgWireServer(db.session, host="127.0.0.1", port=0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.shutdown()


@pytest.fixture
def dsn(server: PgWireServer) -> str:
    return (
        f"host=127.0.0.1 port={server.port} user=twinstream dbname=twinstream "
        "sslmode=disable connect_timeout=5"
    )
