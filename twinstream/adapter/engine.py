"""The ad-hoc query engine: DuckDB holding a mirror of every table, queried by SELECTs.

Each user database is an attached in-memory DuckDB database and each schema a DuckDB schema, so
`db.schema.name` means the same thing in both systems. Tables are mirrored from their persist
shards: the group committer applies each durable commit here before acknowledging it, and a
restart rebuilds the mirror from snapshots. Views are DuckDB views of the transpiled query.
DuckDB is configured towards PostgreSQL semantics (integer division, division-by-zero errors,
UTC); the differences we know of are listed in doc/design/timestamps.md and tested.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from twinstream.adapter.types import duckdb_type
from twinstream.persist.types import Diff, Row
from twinstream.pgwire.arrays import ARRAY_OF
from twinstream.pgwire.types import Interval

#: DuckDB result type (its string form, modifiers stripped) -> PostgreSQL type OID.
DUCKDB_TO_PG_OID = {
    "BOOLEAN": 16,
    "TINYINT": 21,
    "SMALLINT": 21,
    "INTEGER": 23,
    "BIGINT": 20,
    "HUGEINT": 20,  # DuckDB's sum(integer): PostgreSQL's sum(int2/int4) is int8
    "UTINYINT": 21,
    "USMALLINT": 23,
    "UINTEGER": 26,  # no PostgreSQL type is unsigned: the catalog emulation's oid columns
    "UBIGINT": 1700,
    "FLOAT": 700,
    "REAL": 700,
    "DOUBLE": 701,
    "DECIMAL": 1700,
    "VARCHAR": 25,
    "DATE": 1082,
    "TIMESTAMP": 1114,
    "TIMESTAMP WITH TIME ZONE": 1184,
    "INTERVAL": 1186,
    "UUID": 2950,
    "JSON": 3802,
    "BLOB": 17,
    "NULL": 25,
    '"NULL"': 25,
}


#: How often a cancelled query is interrupted again until its thread lets go of the cursor
#: (the first interrupt may come before the thread started the query).
INTERRUPT_RETRY_S = 0.05
#: Rows per INSERT statement when flushing the mirror (DuckDB's parameter count stays bounded).
_INSERT_CHUNK_ROWS = 500
#: Retractions applied one DELETE each; more go through one set-based DELETE.
_DELETE_ONE_BY_ONE_MAX = 16
_RETRACT_TABLE = "temp.main._twinstream_retract"
_RETRACT_COUNT = "_twinstream_n"


def _decode_json(row: tuple[Any, ...], cols: list[int]) -> tuple[Any, ...]:
    """DuckDB hands JSON back as its text; clients want the value (the codec encodes it)."""
    out = list(row)
    for i in cols:
        if isinstance(out[i], str):
            out[i] = json.loads(out[i])
    return tuple(out)


_LIST_SUFFIX = re.compile(r"(\[\d*\])+$")


def _interval_parts_sql(col: int) -> str:
    c = f"#{col + 1}"
    return (
        f"struct_pack(m := datepart('year', {c}) * 12 + datepart('month', {c}), "
        f"d := datepart('day', {c}), us := datepart('hour', {c})::BIGINT * 3600000000 "
        f"+ datepart('minute', {c})::BIGINT * 60000000 + datepart('microseconds', {c}))"
    )


def _with_interval_months(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[object],
    ncols: int,
    intervals: list[int],
    rows: list[tuple[Any, ...]],
) -> list[tuple[Any, ...]]:
    """DuckDB's Python conversion turns an interval's months into 30-day days; PostgreSQL
    keeps them (`1 year 2 mons`). For results with interval columns, run the query again
    with those columns as (months, days, microseconds) and hand out `Interval`s where there
    are months. Statements that cannot be wrapped keep the converted rows."""
    exprs = [_interval_parts_sql(i) if i in intervals else f"#{i + 1}" for i in range(ncols)]
    wrapped = f"SELECT {', '.join(exprs)} FROM ({sql}) AS _q"
    try:
        res = cur.execute(wrapped, list(params)) if params else cur.execute(wrapped)
        exact = res.fetchall()
    except duckdb.Error:
        return rows
    out = []
    for row in exact:
        values = list(row)
        for i in intervals:
            parts = values[i]
            if parts is None or parts["m"] is None:
                values[i] = None
            elif parts["m"]:
                values[i] = Interval(int(parts["m"]), int(parts["d"]), int(parts["us"]))
            else:
                values[i] = dt.timedelta(days=int(parts["d"]), microseconds=int(parts["us"]))
        out.append(tuple(values))
    return out


def pg_oid_of(duck_type: object) -> int:
    name = str(duck_type).upper()
    element = _LIST_SUFFIX.sub("", name)
    if element != name:  # LIST / ARRAY of a scalar: PostgreSQL's array type of the element
        return ARRAY_OF.get(pg_oid_of(element), 1009)
    base = name.split("(", 1)[0].strip()
    return DUCKDB_TO_PG_OID.get(base, 25)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fqn(database: str, schema: str, name: str) -> str:
    return ".".join(quote_ident(p) for p in (database, schema, name))


@dataclass(frozen=True)
class ResultSet:
    columns: list[tuple[str, int]]  # (name, pg type oid)
    rows: list[tuple[Any, ...]]


class QueryEngine:
    """Owns the DuckDB instance; mirror writes go through here (on the event loop thread)."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:")
        self._lock = threading.Lock()  # serializes DDL / mirror writes on the main connection
        self._pending: dict[str, tuple[int, list[tuple[Row, Diff]]]] = {}
        self._configure(self._con)

    @staticmethod
    def _configure(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("SET integer_division = true")
        con.execute("SET TimeZone = 'UTC'")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        self._configure(cur)
        return cur

    def execute_ddl(self, sql: str) -> None:
        with self._lock:
            self._con.execute(sql)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self._lock:
            self._con.executemany(sql, [list(r) for r in rows])

    # -- structure -----------------------------------------------------------------------------

    def create_database(self, name: str) -> None:
        self.execute_ddl(f"ATTACH IF NOT EXISTS ':memory:' AS {quote_ident(name)}")

    def drop_database(self, name: str) -> None:
        self.execute_ddl(f"DETACH DATABASE IF EXISTS {quote_ident(name)}")

    def create_schema(self, database: str, schema: str) -> None:
        self.execute_ddl(
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(database)}.{quote_ident(schema)}"
        )

    def drop_schema(self, database: str, schema: str) -> None:
        self.execute_ddl(
            f"DROP SCHEMA IF EXISTS {quote_ident(database)}.{quote_ident(schema)} CASCADE"
        )

    def create_table(
        self, database: str, schema: str, name: str, columns: Sequence[tuple[str, str]]
    ) -> None:
        cols = ", ".join(f"{quote_ident(c)} {duckdb_type(t)}" for c, t in columns)
        self.execute_ddl(f"CREATE TABLE {fqn(database, schema, name)} ({cols})")

    def create_view(self, database: str, schema: str, name: str, duck_sql: str) -> None:
        self.execute_ddl(f"CREATE OR REPLACE VIEW {fqn(database, schema, name)} AS {duck_sql}")

    def drop_relation(self, kind: str, database: str, schema: str, name: str) -> None:
        assert kind in ("TABLE", "VIEW")
        self.drop_pending(fqn(database, schema, name))
        self.execute_ddl(f"DROP {kind} IF EXISTS {fqn(database, schema, name)}")

    # -- data ----------------------------------------------------------------------------------

    def apply(self, table: str, ncols: int, updates: Sequence[tuple[Row, Diff]]) -> None:
        """Queue consolidated (row, diff) changes for a mirrored table (`table` is its fqn).

        Changes are applied by `flush`, which every read calls first: many small commits
        between two reads cost one engine statement per table instead of one each.
        """
        for row, _diff in updates:
            assert len(row) == ncols, f"row {row!r} has {len(row)} columns, table has {ncols}"
        pending = self._pending.setdefault(table, (ncols, []))
        pending[1].extend(updates)

    def replace_contents(self, table: str, ncols: int, rows: Sequence[tuple[Row, Diff]]) -> None:
        """Make the mirror of `table` exactly `rows` (a snapshot), dropping queued changes."""
        self._pending.pop(table, None)
        with self._lock:
            self._con.execute(f"DELETE FROM {table}")
        self.apply(table, ncols, rows)

    def flush(self) -> None:
        """Apply every queued change (on the caller's thread; the main connection's lock)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        with self._lock:
            for table, (ncols, updates) in pending.items():
                self._apply_now(table, ncols, updates)

    def drop_pending(self, table: str) -> None:
        self._pending.pop(table, None)

    def _apply_now(self, table: str, ncols: int, updates: Sequence[tuple[Row, Diff]]) -> None:
        net: dict[Row, Diff] = {}
        for row, diff in updates:
            net[row] = net.get(row, 0) + diff
        inserts: list[Row] = []
        deletes: list[Row] = []
        for row, diff in net.items():
            if diff > 0:
                inserts.extend([row] * diff)
            elif diff < 0:
                deletes.extend([row] * -diff)
        if len(deletes) > _DELETE_ONE_BY_ONE_MAX:
            self._delete_many(table, ncols, deletes)
        elif deletes:
            cols = self._con.execute(f"SELECT * FROM {table} LIMIT 0").description
            assert cols is not None
            cond = " AND ".join(
                f"{quote_ident(c[0])} IS NOT DISTINCT FROM ${i + 1}" for i, c in enumerate(cols)
            )
            for row in deletes:
                gone = self._con.execute(
                    f"DELETE FROM {table} WHERE rowid = "
                    f"(SELECT rowid FROM {table} WHERE {cond} LIMIT 1) RETURNING 1",
                    list(row),
                ).fetchall()
                assert gone, f"mirror of {table} lacks a row to retract: {row!r}"
        for start in range(0, len(inserts), _INSERT_CHUNK_ROWS):
            chunk = inserts[start : start + _INSERT_CHUNK_ROWS]
            marks = ", ".join(
                "(" + ", ".join(f"${r * ncols + c + 1}" for c in range(ncols)) + ")"
                for r in range(len(chunk))
            )
            self._con.execute(
                f"INSERT INTO {table} VALUES {marks}", [v for row in chunk for v in row]
            )

    def _delete_many(self, table: str, ncols: int, deletes: list[Row]) -> None:
        """Retract many rows in one statement: one row-at-a-time DELETE scans the table per
        row, which for thousands of retractions (an upstream UPDATE burst) blocked the event
        loop for tens of seconds. Multiset semantics: n copies of a row delete n copies."""
        cols = self._con.execute(f"SELECT * FROM {table} LIMIT 0").description
        assert cols is not None
        names = [quote_ident(c[0]) for c in cols]
        counts: dict[Row, int] = {}
        for row in deletes:
            counts[row] = counts.get(row, 0) + 1
        tmp = _RETRACT_TABLE
        self._con.execute(
            f"CREATE OR REPLACE TEMP TABLE {tmp} AS "
            f"SELECT *, 0::BIGINT AS {_RETRACT_COUNT} FROM {table} LIMIT 0"
        )
        try:
            self._fill(tmp, [(*row, n) for row, n in counts.items()], ncols + 1)
            on = " AND ".join(f"t.{n} IS NOT DISTINCT FROM d.{n}" for n in names)
            part = ", ".join(f"t.{n}" for n in names)
            gone = self._con.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT r FROM ("
                f"SELECT t.rowid AS r, d.{_RETRACT_COUNT} AS n, "
                f"row_number() OVER (PARTITION BY {part}) AS k "
                f"FROM {table} AS t JOIN {tmp} AS d ON {on}) WHERE k <= n) RETURNING 1"
            ).fetchall()
        finally:
            self._con.execute(f"DROP TABLE IF EXISTS {tmp}")
        assert len(gone) == len(deletes), (
            f"mirror of {table} lacks rows to retract: {len(deletes) - len(gone)} missing"
        )

    def _fill(self, table: str, items: list[tuple[object, ...]], width: int) -> None:
        """Insert `items` into an empty scratch table: one list parameter per column (about
        8x faster than VALUES with a parameter per value); VALUES if the lists do not bind."""
        columns = [list(c) for c in zip(*items, strict=True)]
        selects = ", ".join(f"unnest(${c + 1})" for c in range(width))
        try:
            self._con.execute(f"INSERT INTO {table} SELECT {selects}", columns)
            return
        except duckdb.Error:
            self._con.execute(f"DELETE FROM {table}")
        for start in range(0, len(items), _INSERT_CHUNK_ROWS):
            chunk = items[start : start + _INSERT_CHUNK_ROWS]
            marks = ", ".join(
                "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                for r in range(len(chunk))
            )
            self._con.execute(f"INSERT INTO {table} VALUES {marks}", [v for i in chunk for v in i])

    # -- queries -------------------------------------------------------------------------------

    @staticmethod
    def _run(cur: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object]) -> ResultSet:
        res = cur.execute(sql, list(params)) if params else cur.execute(sql)
        desc: list[Any] | None = res.description  # None for statements without rows
        if desc is None:
            return ResultSet([], [])
        rows = res.fetchall()
        intervals = [i for i, d in enumerate(desc) if str(d[1]).upper() == "INTERVAL"]
        if intervals and rows:
            rows = _with_interval_months(cur, sql, params, len(desc), intervals, rows)
        columns = [(d[0], pg_oid_of(d[1])) for d in desc]
        json_cols = [i for i, (_n, oid) in enumerate(columns) if oid in (114, 3802)]
        if json_cols and rows:
            rows = [_decode_json(r, json_cols) for r in rows]
        return ResultSet(columns, rows)

    async def query(
        self, cur: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()
    ) -> ResultSet:
        """Run on a session's cursor in a worker thread (DuckDB releases the GIL). Cancelled
        (statement_timeout, shutdown), it interrupts the query and waits for the thread to
        let go of the cursor, so the session's next statement finds it free."""
        self.flush()
        work = asyncio.ensure_future(asyncio.to_thread(self._run, cur, sql, params))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            while not work.done():  # the thread may not have started the query yet
                cur.interrupt()
                await asyncio.wait({work}, timeout=INTERRUPT_RETRY_S)
            if not work.cancelled():
                work.exception()  # retrieved: an InterruptException is the expected outcome
            raise

    def query_sync(
        self, cur: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()
    ) -> ResultSet:
        self.flush()
        return self._run(cur, sql, params)

    def close(self) -> None:
        self._con.close()
