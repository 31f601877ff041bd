"""One client session: the pgwire `Session` the server talks to.

It parses each statement (`twinstream.sql`), keeps the session's variables and transaction,
reads through the engine (a DuckDB cursor of its own; inside a transaction block every read
sees one snapshot) and sends writes and DDL to the coordinator.

Transactions follow Materialize: a transaction block either reads or writes tables, never
both; its writes are buffered and committed atomically by group commit at COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
from sqlglot import exp

from twinstream.adapter import errors as E
from twinstream.adapter.coordinator import Coordinator, SessionInfo
from twinstream.adapter.copy_options import copy_format
from twinstream.adapter.ddl import _cluster_id as cluster_id
from twinstream.adapter.ddl import execute_ddl, is_ddl
from twinstream.adapter.dml import Changes, delete_changes, insert_rows, update_changes
from twinstream.adapter.duck_errors import translate
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.group_commit import CommitOutcomeUnknown, CommitterShutDown
from twinstream.adapter.indexes import fast_select
from twinstream.adapter.mviews import SubscriptionErrors
from twinstream.adapter.names import ItemRef
from twinstream.adapter.plan import PlannedQuery, output_names, qualify
from twinstream.adapter.show import execute_show
from twinstream.adapter.subscribe import SubscribePlan, plan_subscribe
from twinstream.adapter.subscribe_compute import ComputeSubscribePlan, plan_compute_subscribe
from twinstream.adapter.system_tables import NAMES as SYSTEM_RELATIONS
from twinstream.adapter.temporary import is_temporary_id, temp_schema
from twinstream.adapter.timeouts import MS_SETTINGS
from twinstream.adapter.types import oid_of, oid_of_name
from twinstream.adapter.vars import VARS, SessionVars, canonical
from twinstream.aio import DeadlineExceeded, run_with_deadline
from twinstream.catalog import FenceError
from twinstream.persist.types import Row
from twinstream.pgwire.backend import (
    Column,
    ConnectionContext,
    CopyInRequest,
    CopyOutStream,
    ExecuteResult,
    QueryResult,
    Session,
    StatementDescription,
)
from twinstream.pgwire.copy import CopyFormat
from twinstream.pgwire.errors import ADMIN_SHUTDOWN_MESSAGE, PgError
from twinstream.pgwire.messages import TransactionStatus
from twinstream.sql import SqlError, ast, infer_param_types, parse_statement

log = logging.getLogger(__name__)

_conn_ids = itertools.count(1)
#: How long a transaction waits for another's table write lock before giving up (deadlock).
WRITE_LOCK_TIMEOUT_S = 10.0
_PARSE_CACHE_MAX = 256


@dataclass
class Txn:
    explicit: bool = False
    kind: str = "none"  # none | read | write
    writes: dict[str, Changes] = field(default_factory=dict)
    failed: bool = False
    duck_open: bool = False
    locks: list[asyncio.Lock] = field(default_factory=list)
    read_then_written: set[str] = field(default_factory=set)
    #: (name, buffered writes when it was taken), innermost last.
    savepoints: list[tuple[str, dict[str, Changes]]] = field(default_factory=list)


class SubscribeCursor:
    """A `DECLARE c CURSOR FOR SUBSCRIBE ...`: rows are pulled by FETCH."""

    def __init__(self, columns: list[Column], rows: AsyncIterator[tuple[Any, ...]]) -> None:
        self.columns = columns
        self._rows = rows
        self._next: asyncio.Future[tuple[Any, ...]] | None = None

        #: The error that ended the rows, held back while a FETCH returns rows before it.
        self._error: BaseException | None = None

    async def take(self, count: int, timeout_s: float | None) -> list[tuple[Any, ...]]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        out: list[tuple[Any, ...]] = []
        while len(out) < count:
            if self._next is None:
                self._next = asyncio.ensure_future(anext(self._rows))
            wait = timeout_s if not out else 0.0
            done, _ = await asyncio.wait({self._next}, timeout=wait)
            if not done:
                break
            task, self._next = self._next, None
            try:
                out.append(task.result())
            except StopAsyncIteration:
                break
            except Exception as e:  # e.g. a view's evaluation error: after the rows before it
                if not out:
                    raise
                self._error = e
                break
        return out

    async def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            with contextlib.suppress(BaseException):
                await self._next
        with contextlib.suppress(Exception):
            await self._rows.aclose()  # type: ignore[attr-defined]


#: Startup parameters `startup` handles itself (leniently, as it always has).
_STARTUP_OWN = frozenset(
    ("database", "application_name", "client_encoding", "datestyle", "timezone")
)


def _startup_settings(params: Any) -> list[tuple[str, str]]:
    """Settings from the startup packet: parameters named after a setting
    (`statement_timeout=...`, asyncpg's server_settings) and `options` (`-c name=value` /
    `--name=value`, as libpq's PGOPTIONS). `startup` applies the usual four itself."""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        name = canonical(str(key))
        if name in VARS and name not in _STARTUP_OWN and value:
            out.append((name, str(value)))
    words = re.findall(r"(?:\\.|\S)+", str(params.get("options") or ""))
    words = [re.sub(r"\\(.)", r"\1", w) for w in words]
    i = 0
    while i < len(words):
        word = words[i]
        setting = None
        if word == "-c" and i + 1 < len(words):
            setting, i = words[i + 1], i + 1
        elif word.startswith(("-c", "--")):
            setting = word[2:]
        if setting is not None and "=" in setting:
            name, value = setting.split("=", 1)
            out.append((name.replace("-", "_"), value))
        i += 1
    return out


def parse_interval_s(text: str) -> float:
    from twinstream.deployment.params import ParamError, parse_duration_ms

    try:
        return parse_duration_ms("timeout", text) / 1000
    except ParamError as e:
        raise AdapterError(E.INVALID_PARAMETER_VALUE, str(e)) from None


@dataclass
class SqlCursor:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    pos: int = 0


def to_pg_error(e: BaseException) -> PgError:
    if isinstance(e, PgError):
        return e
    if isinstance(e, AdapterError):
        return PgError(e.sqlstate, e.message, detail=e.detail, hint=e.hint)
    if isinstance(e, SqlError):
        return PgError(e.sqlstate, e.message)
    if isinstance(e, duckdb.Error):
        return to_pg_error(translate(e))
    if isinstance(e, FenceError):
        return PgError(
            "57P01", "terminating connection: this generation was fenced out", severity="FATAL"
        )
    if isinstance(e, CommitterShutDown):  # not applied: the client may send it elsewhere
        return PgError("57P01", ADMIN_SHUTDOWN_MESSAGE, severity="FATAL")
    if isinstance(e, DeadlineExceeded):  # cancelled before any commit point: nothing landed
        return PgError(E.QUERY_CANCELED, "canceling statement due to statement timeout")
    if isinstance(e, CommitOutcomeUnknown):  # may have landed: never to be re-sent blindly
        return PgError("40003", f"statement completion unknown: {e}")
    log.exception("internal error")
    return PgError(E.INTERNAL_ERROR, f"internal error: {e}")


_JSON_OIDS = (114, 3802)
_NAME = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)'
_SAVEPOINT = re.compile(
    r"^\s*(?:(savepoint)\s+"
    + _NAME
    + r"|(release)(?:\s+savepoint)?\s+"
    + _NAME
    + r"|(rollback)(?:\s+(?:work|transaction))?\s+to(?:\s+savepoint)?\s+"
    + _NAME
    + r")\s*;?\s*$",
    re.IGNORECASE,
)


def _engine_params(params: Sequence[object], oids: Sequence[int]) -> list[object]:
    """Parameter values as the engine takes them: JSON values travel as their text."""
    out = list(params)
    for i, oid in enumerate(oids[: len(out)]):
        if oid in _JSON_OIDS and out[i] is not None and not isinstance(out[i], str):
            out[i] = json.dumps(out[i])
    return out


#: A value of each parameter type for describing a statement: the engine types a `$n` by its
#: value, so `SELECT $1` with an int4 parameter is described as int4, not as unknown/text.
#: (Text-like types stay NULL: a sample string could fail a cast the query applies.)
_DESCRIBE_SAMPLES: dict[int, object] = {
    16: True,
    20: 2**40,
    21: 1,
    23: 1,
    26: 1,
    700: 1.0,
    701: 1.0,
    1700: Decimal(1),
    1082: dt.date(2000, 1, 1),
    1114: dt.datetime(2000, 1, 1),
    1184: dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    1186: dt.timedelta(0),
    2950: uuid.UUID(int=1),
}


def _utc_row(row: Row) -> Row:
    """timestamptz values as stored: in UTC (the engine hands them out in the session's
    zone; persist compares rows by their encoding)."""
    if not any(isinstance(v, dt.datetime) and v.tzinfo is not None for v in row):
        return row
    return tuple(
        v.astimezone(dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo is not None else v
        for v in row
    )


def _named(plan: PlannedQuery, columns: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """DuckDB's (name, type) columns with the names PostgreSQL gives them (from the plan)."""
    names = output_names(plan)
    if names is None or len(names) != len(columns):
        return columns
    return [(n, oid) for n, (_duck_name, oid) in zip(names, columns, strict=True)]


#: Engine result OID -> declared column OIDs it may stand for (DuckDB has one VARCHAR).
_REFINABLE = {25: (25, 1043, 1042), 1700: (1700,)}


def _described(plan: PlannedQuery, columns: list[tuple[str, int]]) -> list[Column]:
    """Result columns: PostgreSQL's names, and the declared type (varchar, bpchar) and typmod
    (varchar(20), numeric(10,2)) of columns read straight from a table."""
    named = _named(plan, columns)
    declared = plan.column_types
    if declared is None or len(declared) != len(named):
        return [Column(n, oid) for n, oid in named]
    out = []
    for (name, oid), decl in zip(named, declared, strict=True):
        if decl is not None and decl[0] in _REFINABLE.get(oid, ()):
            out.append(Column(name, decl[0], type_modifier=decl[1]))
        else:
            out.append(Column(name, oid))
    return out


_Description = StatementDescription


class AdapterSession(Session):
    def __init__(self, coord: Coordinator, ctx: ConnectionContext) -> None:
        self.coord = coord
        self.ctx = ctx
        self.conn_id = next(_conn_ids)
        self.vars = SessionVars()
        self.vars.temp_schema = temp_schema(self.conn_id)
        self.txn = Txn()
        self.cursor = coord.engine.cursor()
        self.cursors: dict[str, SqlCursor] = {}
        self.subscriptions: dict[str, SubscribeCursor] = {}
        self._parsed: dict[str, ast.Statement] = {}
        self._plans: dict[tuple[object, ...], tuple[exp.Expr, PlannedQuery]] = {}
        #: like `_plans`, plus the given parameter types: a SELECT's description (a client
        #: that does not prepare sends Parse, so a describe, on every execution; inferring
        #: parameter types and asking DuckDB for the columns costs milliseconds)
        self._descriptions: dict[tuple[object, ...], tuple[ast.Statement, _Description]] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def startup(self, params: Any) -> dict[str, str]:
        database = params.get("database") or self.ctx.user or "twinstream"
        if database not in self.coord.index.databases:
            raise PgError("3D000", f'database "{database}" does not exist', severity="FATAL")
        self.vars.set("database", database)
        reported: dict[str, str] = {}
        for key in ("application_name", "client_encoding", "DateStyle", "TimeZone"):
            if params.get(key):
                with contextlib.suppress(AdapterError):
                    out = self._set_var(key, params[key])
                    if out:
                        reported[out[0]] = out[1]
        system = self.coord.catalog.state
        for key in MS_SETTINGS:  # `ALTER SYSTEM SET statement_timeout = ...`: new sessions
            value = system.get("system_parameter", key)
            if value is not None:
                with contextlib.suppress(AdapterError):
                    self.vars.set_default(key, str(value))
        for key, value in _startup_settings(params):
            try:
                if canonical(key) == "timezone":  # the engine cursor follows it
                    out = self._set_var(key, value)
                else:  # what RESET returns to, as in PostgreSQL
                    out = self.vars.set_default(key, value)
            except AdapterError as e:  # PostgreSQL refuses the connection
                raise PgError(e.sqlstate, e.message, hint=e.hint, severity="FATAL") from None
            if out:
                reported[out[0]] = out[1]
        self.coord.register_session(
            SessionInfo(
                self.conn_id,
                self.ctx.user,
                self.vars.get("application_name"),
                self.coord.clock.now_ms(),
                database,
            )
        )
        return reported

    async def close(self) -> None:
        for sub in self.subscriptions.values():
            await sub.close()
        self.subscriptions.clear()
        self._end_txn()
        with contextlib.suppress(Exception):
            await self.coord.drop_session_temporaries(self.conn_id)
        self.coord.unregister_session(self.conn_id)
        with contextlib.suppress(Exception):
            self.cursor.close()

    async def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.interrupt()

    def transaction_status(self) -> TransactionStatus:
        if self.txn.failed:
            return "E"
        return "T" if self.txn.explicit else "I"

    # -- helpers -------------------------------------------------------------------------------

    @property
    def database(self) -> str:
        return self.vars.get("database")

    def _parse(self, sql: str) -> ast.Statement:
        stmt = self._parsed.get(sql)
        if stmt is None:
            stmt = parse_statement(sql)
            if len(self._parsed) >= _PARSE_CACHE_MAX:
                self._parsed.clear()
            self._parsed[sql] = stmt
        return stmt

    def plan(self, query: exp.Expr) -> PlannedQuery:
        """Plans are cached per (query, catalog version, database, search_path)."""
        path = tuple(self.vars.search_path())
        key = (id(query), self.coord.index.version, self.database, path)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is query:
            return cached[1]
        # pg_catalog emulation: session functions (current_user, pg_backend_pid()) need these
        planned = qualify(
            query,
            self.coord.index,
            self.database,
            path,
            SYSTEM_RELATIONS,
            user=self.ctx.user,
            backend_pid=self.conn_id,
            probe=self._probe_types,
        )
        if len(self._plans) >= _PARSE_CACHE_MAX:
            self._plans.clear()
        self._plans[key] = (query, planned)
        return planned

    def _probe_types(self, sql: str) -> list[str] | None:
        """The engine's column types of a probe query (typed_rewrites), None if it fails."""
        try:
            res = self.cursor.execute(sql)
        except duckdb.Error:
            return None
        desc = res.description
        return None if desc is None else [str(d[1]) for d in desc]

    def _plan_subscribe(self, stmt: ast.Subscribe) -> SubscribePlan | ComputeSubscribePlan:
        """Tables and materialized views from their shard, the rest as a dataflow."""
        if isinstance(stmt.target, ast.QualifiedName):
            ref = self.resolve(stmt.target)
            shard = self.coord.tables.get(ref.id)
            mirror = self.coord.mviews.mirrors.get(ref.id)
            if shard is None and mirror is not None:
                shard = mirror.shard
                mviews = self.coord.mviews
                errors = SubscriptionErrors(mviews, mviews.computed_from(self.coord.index, [ref]))
                return plan_subscribe(stmt, ref, shard, errors)
            if shard is not None:
                return plan_subscribe(stmt, ref, shard)
        return plan_compute_subscribe(self, stmt, cluster_id(self, None))

    async def _start_subscribe(
        self, stmt: ast.Subscribe
    ) -> tuple[list[Column], AsyncIterator[tuple[Any, ...]]]:
        """Plan a SUBSCRIBE; it fails now if a view it reads has an evaluation error at the
        read timestamp, as SELECT does (`mviews.SubscriptionErrors`). An error at its as-of
        or later ends its rows with the error as a PgError (and fails an explicit
        transaction)."""
        plan = self._plan_subscribe(stmt)
        if plan.errors is not None:
            await plan.errors.start(self.coord.read_timestamp)
        return plan.columns(), self._subscription_rows(plan.rows())

    async def _subscription_rows(
        self, rows: AsyncIterator[tuple[Any, ...]]
    ) -> AsyncIterator[tuple[Any, ...]]:
        try:
            async for row in rows:
                yield row
        except AdapterError as e:  # COPY (SUBSCRIBE) streams outside `execute`'s handler
            if self.txn.explicit:
                self.txn.failed = True
            raise to_pg_error(e) from e
        finally:
            with contextlib.suppress(Exception):
                await rows.aclose()  # type: ignore[attr-defined]

    def resolve(self, name: ast.QualifiedName) -> ItemRef:
        return self.coord.index.require_item(name.parts, self.database, self.vars.search_path())

    def _resolve_column_type(self, table: ast.QualifiedName, column: str | int) -> str | None:
        ref = self.coord.index.resolve_item(table.parts, self.database, self.vars.search_path())
        if ref is None:
            return None
        cols = ref.columns
        if isinstance(column, int):
            return str(cols[column]["type"]).split("(")[0] if column < len(cols) else None
        for c in cols:
            if c["name"] == column:
                return str(c["type"]).split("(")[0]
        return None

    def _param_oids(self, stmt: ast.Statement, given: Sequence[int]) -> list[int]:
        inferred = infer_param_types(stmt, self._resolve_column_type)
        n = max([len(given), *inferred.keys()], default=0)
        out = []
        for i in range(n):
            g = given[i] if i < len(given) else 0
            out.append(g if g else oid_of_name(inferred.get(i + 1, "text")))
        return out

    def _set_var(self, name: str, value: str | None) -> tuple[str, str] | None:
        """SET / RESET a session variable. TimeZone also goes to the session's engine cursor:
        timestamptz values come out (and unzoned literals are read) in the session's zone."""
        if canonical(name) == "timezone":
            zone = "UTC" if value is None or value.lower() in ("default", "local") else value
            try:
                self.cursor.execute("SET TimeZone = '" + zone.replace("'", "''") + "'")
            except duckdb.Error:
                raise AdapterError(
                    E.INVALID_PARAMETER_VALUE,
                    f'invalid value for parameter "TimeZone": "{zone}"',
                ) from None
            value = None if value is None else zone
        return self.vars.set(name, value)

    def _end_txn(self) -> None:
        if self.txn.duck_open:
            with contextlib.suppress(Exception):
                self.cursor.execute("ROLLBACK")
        for lock in self.txn.locks:
            if lock.locked():
                lock.release()
        self.txn = Txn()
        for name, value in self.vars.end_transaction():  # SET LOCAL ends with its transaction
            with contextlib.suppress(AdapterError):
                reported = self._set_var(name, value)
                if reported is not None:
                    self.ctx.parameter_status(*reported)

    # -- describe ------------------------------------------------------------------------------

    async def describe(self, sql: str, param_oids: Sequence[int]) -> StatementDescription:
        try:
            stmt = self._parse(sql)
            if not isinstance(stmt, ast.Select):
                oids = self._param_oids(stmt, param_oids)
                return StatementDescription(oids, await self._columns_of(stmt, oids))
            key = (
                id(stmt),
                self.coord.index.version,
                self.database,
                tuple(self.vars.search_path()),
                tuple(param_oids),
            )
            cached = self._descriptions.get(key)
            if cached is not None and cached[0] is stmt:
                return cached[1]
            oids = self._param_oids(stmt, param_oids)
            desc = StatementDescription(oids, await self._columns_of(stmt, oids))
            if len(self._descriptions) >= _PARSE_CACHE_MAX:
                self._descriptions.clear()
            self._descriptions[key] = (stmt, desc)
            return desc
        except Exception as e:
            raise to_pg_error(e) from e

    async def _columns_of(self, stmt: ast.Statement, oids: Sequence[int]) -> list[Column] | None:
        if isinstance(stmt, ast.Select):
            plan = self.plan(stmt.query)
            res = await self.coord.engine.query(
                self.cursor,
                f"SELECT * FROM ({plan.duck_sql}) AS _q LIMIT 0",
                [_DESCRIBE_SAMPLES.get(oid) for oid in oids],
            )
            # names from the plan (the wrapper above renames duplicates), types from DuckDB
            return _described(plan, res.columns)
        if isinstance(
            stmt, ast.Explain | ast.Show | ast.ShowObjects | ast.ShowColumns | ast.ShowCreate
        ):
            result = await self._execute(stmt, "", [])
            assert isinstance(result, QueryResult)
            return result.columns
        if isinstance(stmt, ast.Fetch):
            sub = self.subscriptions.get(stmt.cursor)  # psycopg prepares a repeated FETCH
            if sub is not None:
                return sub.columns
            cur = self.cursors.get(stmt.cursor)
            return None if cur is None else cur.columns
        return None

    async def describe_cursor(self, name: str) -> list[Column] | None:
        sub = self.subscriptions.get(name)
        if sub is not None:
            return sub.columns
        cur = self.cursors.get(name)
        if cur is None:
            raise PgError("34000", f'cursor "{name}" does not exist')
        return cur.columns

    # -- execute -------------------------------------------------------------------------------

    async def execute(
        self, sql: str, params: Sequence[object], param_oids: Sequence[int]
    ) -> ExecuteResult:
        try:
            savepoint = _SAVEPOINT.match(sql)
            if savepoint is not None:
                return self._savepoint(savepoint)
            stmt = self._parse(sql)
            if self.txn.failed and not isinstance(stmt, ast.Commit | ast.Rollback):
                raise AdapterError(
                    E.IN_FAILED_TRANSACTION,
                    "current transaction is aborted, commands ignored until end of "
                    "transaction block",
                )
            timeout_s = self._timeout_s(stmt)
            run = self._execute(stmt, sql, _engine_params(params, param_oids))
            return await run_with_deadline(run, timeout_s)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                raise
            if self.txn.explicit:
                self.txn.failed = True
            else:  # an autocommit statement that failed holds nothing afterwards
                self._end_txn()
            raise to_pg_error(e) from e

    def _timeout_s(self, stmt: ast.Statement) -> float | None:
        """The bound `statement_timeout` puts on this statement (None: none). A FETCH with
        its own TIMEOUT option waits for that long instead (it returns what arrived)."""
        ms = self.vars.statement_timeout_ms()
        if ms == 0:
            return None
        if isinstance(stmt, ast.Fetch) and any(o.name == "timeout" for o in stmt.options):
            return None
        return ms / 1000

    async def _execute(self, stmt: ast.Statement, sql: str, params: list[object]) -> ExecuteResult:
        if isinstance(stmt, ast.Select):
            return await self._select(stmt, params)
        if isinstance(stmt, ast.Insert | ast.Update | ast.Delete):
            return await self._dml(stmt, params)
        if isinstance(stmt, ast.Begin):
            return self._begin(stmt)
        if isinstance(stmt, ast.Commit):
            return await self._commit()
        if isinstance(stmt, ast.Rollback):
            self._end_txn()
            return QueryResult(command_tag="ROLLBACK")
        if isinstance(stmt, ast.SetTransaction):
            if stmt.isolation:
                self.vars.set("transaction_isolation", stmt.isolation)
            return QueryResult(command_tag="SET")
        if isinstance(stmt, ast.Set):
            value = None if stmt.values is None else ", ".join(stmt.values)
            if (
                stmt.name.lower() == "database"
                and value
                and value not in self.coord.index.databases
            ):
                self.ctx.notice(f'database "{value}" does not exist', severity="NOTICE")
            if stmt.local and not self.txn.explicit:
                self.ctx.notice(
                    "SET LOCAL can only be used in transaction blocks",
                    severity="WARNING",
                    sqlstate=E.NO_ACTIVE_SQL_TRANSACTION,
                )
                return QueryResult(command_tag="SET")
            if stmt.local:
                self.vars.remember_local(stmt.name)
            reported = self._set_var(stmt.name, value)
            if not stmt.local:
                self.vars.forget_local(stmt.name)
            if reported is not None:
                self.ctx.parameter_status(*reported)
            return QueryResult(command_tag="SET")
        if isinstance(stmt, ast.Reset):
            if stmt.name is None:
                self.vars.reset_all()
                self._set_var("timezone", None)
            else:
                reported = self._set_var(stmt.name, None)
                if reported is not None:
                    self.ctx.parameter_status(*reported)
            return QueryResult(command_tag="RESET")
        if isinstance(stmt, ast.Discard):
            if stmt.target in ("all", "temp"):  # PostgreSQL: drops temporary tables too
                await self.coord.drop_session_temporaries(self.conn_id)
            self._end_txn()
            self.vars.reset_all()
            self._set_var("timezone", None)
            self.cursors.clear()
            return QueryResult(command_tag="DISCARD ALL")
        if isinstance(stmt, ast.Show | ast.ShowObjects | ast.ShowColumns | ast.ShowCreate):
            cols, rows = execute_show(self, stmt)
            return QueryResult(columns=cols, rows=rows)
        if isinstance(stmt, ast.Explain):
            return await self._explain(stmt, params)
        if isinstance(stmt, ast.Copy):
            return await self._copy(stmt, params)
        if isinstance(stmt, ast.Subscribe):
            sub_columns, sub_rows = await self._start_subscribe(stmt)
            return CopyOutStream(columns=sub_columns, rows=sub_rows)
        if isinstance(stmt, ast.Declare):
            return await self._declare(stmt, params)
        if isinstance(stmt, ast.Fetch):
            sub = self.subscriptions.get(stmt.cursor)
            if sub is not None:
                return await self._fetch_subscribe(stmt, sub)
            return self._fetch(stmt)
        if isinstance(stmt, ast.Move):
            return self._move(stmt)
        if isinstance(stmt, ast.Close):
            if stmt.name is None:
                self.cursors.clear()
                for sub in self.subscriptions.values():
                    await sub.close()
                self.subscriptions.clear()
            elif stmt.name in self.subscriptions:
                await self.subscriptions.pop(stmt.name).close()
            elif self.cursors.pop(stmt.name, None) is None:
                raise AdapterError("34000", f'cursor "{stmt.name}" does not exist')
            return QueryResult(command_tag="CLOSE CURSOR")
        if is_ddl(stmt):
            if self.txn.explicit and (self.txn.kind != "none" or self.txn.writes):
                raise AdapterError(
                    E.ACTIVE_SQL_TRANSACTION,
                    "DDL cannot run inside a transaction block that already read or wrote",
                )
            tag = await execute_ddl(self, stmt, sql)
            return QueryResult(command_tag=tag)
        raise AdapterError(
            E.FEATURE_NOT_SUPPORTED, f"{type(stmt).__name__} statements are not supported yet"
        )

    # -- reads ---------------------------------------------------------------------------------

    async def _select(self, stmt: ast.Select, params: list[object]) -> QueryResult:
        if stmt.as_of is not None:
            raise AdapterError(E.FEATURE_NOT_SUPPORTED, "SELECT ... AS OF is not supported yet")
        if not self.txn.explicit:
            fast = await fast_select(self, stmt.query, params)  # an index peek (indexes.py)
            if fast is not None:
                return fast
        plan = self.plan(stmt.query)
        if plan.dependencies:  # reads of system catalogs only do not make this a read txn
            if not self.txn.explicit or not self.txn.duck_open:
                await self.coord.linearize_read()  # strict serializable across a cutover
            await self.coord.wait_views_readable(plan.dependencies)
            await self._begin_read()
        res = await self.coord.engine.query(self.cursor, plan.duck_sql, params)
        return QueryResult(columns=_described(plan, res.columns), rows=res.rows)

    async def _begin_read(self) -> None:
        if not self.txn.explicit:
            return
        if self.txn.kind == "write":
            raise AdapterError(
                E.INVALID_TRANSACTION_STATE,
                "transaction in write-only mode: a transaction either reads or writes tables",
                hint="Run the SELECT outside this transaction.",
            )
        self.txn.kind = "read"
        if not self.txn.duck_open:
            self.coord.engine.flush()  # the snapshot must hold every acknowledged write
            self.cursor.execute("BEGIN TRANSACTION")
            self.txn.duck_open = True

    async def _explain(self, stmt: ast.Explain, params: list[object]) -> QueryResult:
        target = stmt.target
        if not isinstance(target, ast.Select):
            raise AdapterError(
                E.FEATURE_NOT_SUPPORTED, "EXPLAIN of this statement is not supported"
            )
        plan = self.plan(target.query)
        if stmt.kind == "timestamp":
            rows = await self.coord.explain_timestamp(plan.dependencies)
            return QueryResult(columns=[Column("Timestamp", 25)], rows=rows)
        res = await self.coord.engine.query(self.cursor, "EXPLAIN " + plan.duck_sql, params)
        text = "\n".join(str(r[-1]) for r in res.rows)
        return QueryResult(columns=[Column("Optimized Plan", 25)], rows=[(text,)])

    async def _declare(self, stmt: ast.Declare, params: list[object]) -> QueryResult:
        if stmt.name in self.cursors or stmt.name in self.subscriptions:
            raise AdapterError("42P03", f'cursor "{stmt.name}" already exists')
        if isinstance(stmt.statement, ast.Subscribe):
            columns, rows = await self._start_subscribe(stmt.statement)
            self.subscriptions[stmt.name] = SubscribeCursor(columns, rows)
            return QueryResult(command_tag="DECLARE CURSOR")
        result = await self._select(stmt.statement, params)
        assert result.columns is not None
        self.cursors[stmt.name] = SqlCursor(result.columns, list(result.rows))  # type: ignore[arg-type]
        return QueryResult(command_tag="DECLARE CURSOR")

    async def _fetch_subscribe(self, stmt: ast.Fetch, sub: SubscribeCursor) -> QueryResult:
        """Wait for at least one row (up to TIMEOUT, default forever), then take what is
        ready, at most `count`."""
        timeout_s: float | None = None
        for opt in stmt.options:
            if opt.name == "timeout":
                timeout_s = parse_interval_s(str(opt.value))
        want = stmt.count if stmt.count is not None else 10_000
        rows = await sub.take(want, timeout_s)
        return QueryResult(command_tag=f"FETCH {len(rows)}", columns=sub.columns, rows=rows)

    def _fetch(self, stmt: ast.Fetch) -> QueryResult:
        cur = self.cursors.get(stmt.cursor)
        if cur is None:
            raise AdapterError("34000", f'cursor "{stmt.cursor}" does not exist')
        end = len(cur.rows) if stmt.count is None else cur.pos + stmt.count
        rows = cur.rows[cur.pos : end]
        cur.pos += len(rows)
        return QueryResult(command_tag=f"FETCH {len(rows)}", columns=cur.columns, rows=rows)

    def _move(self, stmt: ast.Move) -> QueryResult:
        """Reposition a SQL cursor; the tag counts the rows passed over, as PostgreSQL's."""
        cur = self.cursors.get(stmt.cursor)
        if cur is None:
            raise AdapterError("34000", f'cursor "{stmt.cursor}" does not exist')
        n = len(cur.rows)
        if stmt.mode == "absolute":
            target = stmt.count if stmt.count >= 0 else n + 1 + stmt.count
            # FETCH ABSOLUTE k leaves the cursor on row k: the next FETCH reads row k + 1
            new = min(max(target, 0), n)
            moved = 1 if 0 < target <= n else 0
        else:
            new = min(max(cur.pos + stmt.count, 0), n)
            moved = abs(new - cur.pos)
        cur.pos = new
        return QueryResult(command_tag=f"MOVE {moved}")

    def _savepoint(self, m: re.Match[str]) -> QueryResult:
        """SAVEPOINT / RELEASE / ROLLBACK TO: a savepoint remembers the buffered writes; rolling
        back to it restores them (reads of a transaction change nothing to undo)."""
        groups = [g for g in m.groups() if g is not None]
        verb, raw = groups[0].lower(), groups[1]
        name = raw[1:-1].replace('""', '"') if raw.startswith('"') else raw.lower()
        txn = self.txn
        if not txn.explicit:
            raise AdapterError(
                E.NO_ACTIVE_SQL_TRANSACTION,
                f"{verb.upper()} can only be used in transaction blocks",
            )
        names = [n for n, _w in txn.savepoints]
        if verb == "savepoint":
            if txn.failed:
                raise AdapterError(
                    E.IN_FAILED_TRANSACTION,
                    "current transaction is aborted, commands ignored until end of "
                    "transaction block",
                )
            snapshot = {k: list(v) for k, v in txn.writes.items()}
            txn.savepoints.append((name, snapshot))
            return QueryResult(command_tag="SAVEPOINT")
        if name not in names:
            raise AdapterError("3B001", f'savepoint "{name}" does not exist')
        i = len(names) - 1 - names[::-1].index(name)
        if verb == "release":
            del txn.savepoints[i:]
            return QueryResult(command_tag="RELEASE")
        txn.writes = {k: list(v) for k, v in txn.savepoints[i][1].items()}
        del txn.savepoints[i + 1 :]
        txn.failed = False
        return QueryResult(command_tag="ROLLBACK")

    # -- writes --------------------------------------------------------------------------------

    def _begin(self, stmt: ast.Begin) -> QueryResult:
        if self.txn.explicit:
            self.ctx.notice(
                "there is already a transaction in progress",
                severity="WARNING",
                sqlstate=E.ACTIVE_SQL_TRANSACTION,
            )
            return QueryResult(command_tag="BEGIN")
        self.txn = Txn(explicit=True)
        if stmt.isolation:
            self.vars.set("transaction_isolation", stmt.isolation)
        return QueryResult(command_tag="BEGIN")

    async def _commit(self) -> QueryResult:
        txn = self.txn
        if not txn.explicit:
            self.ctx.notice(
                "there is no transaction in progress",
                severity="WARNING",
                sqlstate=E.NO_ACTIVE_SQL_TRANSACTION,
            )
            return QueryResult(command_tag="COMMIT")
        if txn.failed:
            self._end_txn()
            return QueryResult(command_tag="ROLLBACK")
        try:
            if txn.writes:
                await self.coord.write(txn.writes)
            if txn.duck_open:
                self.cursor.execute("COMMIT")
                txn.duck_open = False
        finally:
            self._end_txn()
        return QueryResult(command_tag="COMMIT")

    async def _lock_table(self, ref: ItemRef) -> None:
        lock = self.coord.write_lock(ref.id)
        if lock in self.txn.locks:
            return
        try:
            async with asyncio.timeout(WRITE_LOCK_TIMEOUT_S):  # not wait_for: see twinstream.aio
                await lock.acquire()
        except TimeoutError:
            raise AdapterError(
                "40P01",
                f'could not lock table "{ref.name}" for writing: another '
                "transaction holds it (deadlock?)",
            ) from None
        self.txn.locks.append(lock)

    async def _dml(
        self, stmt: ast.Insert | ast.Update | ast.Delete, params: list[object]
    ) -> QueryResult:
        ref = self.resolve(stmt.table)
        # a temporary table touches nothing durable: writable in a read-only generation too
        if self.coord.config.read_only and not is_temporary_id(ref.id):
            raise E.read_only_error()
        if self.txn.explicit and self.txn.kind == "read":
            raise AdapterError(
                E.INVALID_TRANSACTION_STATE,
                "transaction in read-only mode: a transaction either reads or writes tables",
            )
        engine, cur, index = self.coord.engine, self.cursor, self.coord.index
        db, path, system = self.database, self.vars.search_path(), SYSTEM_RELATIONS
        if isinstance(stmt, ast.Insert):
            rows = insert_rows(engine, cur, index, stmt, ref, db, path, system, params)
            changes: Changes = [(r, 1) for r in rows]
            tag = f"INSERT 0 {len(rows)}"
            count_rows = len(rows)
        else:
            if ref.id in self.txn.writes:
                raise AdapterError(
                    E.FEATURE_NOT_SUPPORTED,
                    "UPDATE or DELETE after another write to the same table in one transaction "
                    "is not supported",
                )
            await self._lock_table(ref)
            if isinstance(stmt, ast.Update):
                changes = update_changes(engine, cur, index, stmt, ref, db, path, system, params)
            else:
                changes = delete_changes(engine, cur, index, stmt, ref, db, path, system, params)
            count_rows = len(changes) // 2 if isinstance(stmt, ast.Update) else len(changes)
            tag = f"{'UPDATE' if isinstance(stmt, ast.Update) else 'DELETE'} {count_rows}"
        changes = [(_utc_row(r), d) for r, d in changes]
        if self.txn.explicit:
            # a duplicate key fails the statement, as in PostgreSQL (COMMIT checks again)
            self.coord.keys.check(ref, [*self.txn.writes.get(ref.id, ()), *changes])
            self.txn.kind = "write"
            self.txn.writes.setdefault(ref.id, []).extend(changes)
            return QueryResult(command_tag=tag)
        try:
            await self.coord.write({ref.id: changes})
        finally:
            self._end_txn()
        return QueryResult(command_tag=tag)

    # -- COPY ----------------------------------------------------------------------------------

    async def _copy(self, stmt: ast.Copy, params: list[object]) -> ExecuteResult:
        fmt = copy_format(stmt.options, stmt.direction)
        target = stmt.target
        if stmt.direction == "to":
            if isinstance(target, ast.Select):
                result = await self._select(target, params)
            elif isinstance(target, ast.QualifiedName):
                ref = self.resolve(target)
                cols = ", ".join(f'"{c}"' for c in stmt.columns) if stmt.columns else "*"
                query = parse_statement(f"SELECT {cols} FROM {target}")
                assert isinstance(query, ast.Select)
                result = await self._select(query, params)
                del ref
            else:
                columns, rows = await self._start_subscribe(target)
                return CopyOutStream(columns=columns, rows=rows)
            assert result.columns is not None
            return CopyOutStream(columns=result.columns, rows=result.rows, format=fmt)
        if not isinstance(target, ast.QualifiedName):
            raise AdapterError(E.SYNTAX_ERROR, "COPY FROM needs a table")
        ref = self.resolve(target)
        if self.coord.config.read_only and not is_temporary_id(ref.id):
            raise E.read_only_error()
        if ref.type != "table":
            raise AdapterError(E.WRONG_OBJECT_TYPE, f'cannot copy to {ref.type} "{ref.name}"')
        names = [c["name"] for c in ref.columns]
        chosen = list(stmt.columns) or names
        for c in chosen:
            if c not in names:
                raise AdapterError(
                    E.UNDEFINED_COLUMN, f'column "{c}" of relation "{ref.name}" does not exist'
                )
        return _CopyIn(self, ref, chosen, fmt)


class _CopyIn(CopyInRequest):
    def __init__(
        self, session: AdapterSession, ref: ItemRef, columns: list[str], fmt: CopyFormat
    ) -> None:
        by_name = {c["name"]: c for c in ref.columns}
        super().__init__([Column(c, oid_of(by_name[c]["type"])) for c in columns], fmt)
        self.session = session
        self.ref = ref
        self.positions = [[c["name"] for c in ref.columns].index(c) for c in columns]
        self.rows: list[Row] = []

    async def write_rows(self, rows: list[tuple[object, ...]]) -> None:
        width = len(self.ref.columns)
        for r in rows:
            full: list[object] = [None] * width
            for pos, v in zip(self.positions, r, strict=True):
                full[pos] = v
            for col, v in zip(self.ref.columns, full, strict=True):
                if v is None and not col.get("nullable", True):
                    raise PgError(
                        E.NOT_NULL_VIOLATION,
                        f'null value in column "{col["name"]}" of relation "{self.ref.name}" '
                        "violates not-null constraint",
                    )
            self.rows.append(tuple(full))

    async def finish(self, row_count: int) -> str:
        s = self.session
        changes: Changes = [(r, 1) for r in self.rows]
        try:
            if s.txn.explicit:
                s.coord.keys.check(self.ref, [*s.txn.writes.get(self.ref.id, ()), *changes])
                s.txn.kind = "write"
                s.txn.writes.setdefault(self.ref.id, []).extend(changes)
            else:
                await s.coord.write({self.ref.id: changes})
        except AdapterError as e:  # e.g. 23505: the server sends PgErrors only
            if s.txn.explicit:
                s.txn.failed = True
            raise to_pg_error(e) from e
        return f"COPY {row_count}"
