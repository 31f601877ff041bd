"""`CREATE CONNECTION ... TO POSTGRES` and `CREATE SOURCE ... FROM POSTGRES` on top of the CDC
library in `storage/postgres/`, and the leader's PostgreSQL ingestion.

Reclocking is the same as for load generators, with the upstream LSN as the offset: the
progress binding is the LSN from which the stream resumes (a snapshot's consistent point, a
transaction's `end_lsn`, or a `Progress` mark). The initial snapshot is committed in ONE
group commit with its binding; then every upstream transaction is committed whole (all its
changes at one timestamp; the transactions already received while the previous commit was in
flight go together in one commit) with its `end_lsn`, and only then acknowledged upstream. Only the
leader talks to the replication slot; a read-only generation follows the output shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.catalog.fence import FenceError
from twinstream.persist import Shard
from twinstream.persist.types import Diff, Row
from twinstream.sql import ast
from twinstream.storage.ingest import RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_MIN_S, Writes
from twinstream.storage.postgres import (
    PgConnInfo,
    PgReplicator,
    Progress,
    SourceError,
    Txn,
    UpstreamTable,
    validate,
)
from twinstream.storage.postgres.connection import UpstreamConnection
from twinstream.storage.progress import PROGRESS_COLUMNS, Binding, advance, durable_binding
from twinstream.storage.status import SourceStatus

if TYPE_CHECKING:
    from twinstream.adapter.names import CatalogIndex
    from twinstream.adapter.session import AdapterSession

log = logging.getLogger(__name__)

#: Upstream transactions committed together at most (each stays whole, at one timestamp).
MAX_TXNS_PER_COMMIT = 1000
#: Items read ahead from the replication stream while a commit is in flight.
MAX_QUEUED_ITEMS = 10_000
#: A replication stream open this long without an error counts as running.
STREAM_HEALTHY_S = 1.0

#: Upstream error kind -> the SQLSTATE CREATE SOURCE / CREATE CONNECTION answers with.
_KIND_SQLSTATE = {
    "unreachable": "08001",
    "auth": "28P01",
    "missing_database": "3D000",
    "permission": "42501",
    "wal_level": "55000",
    "missing_publication": "42704",
    "missing_table": "42P01",
    "no_primary_key": "55000",
    "replica_identity": "55000",
    "slot_in_use": "55006",
}


def sql_error(e: SourceError) -> AdapterError:
    return AdapterError(_KIND_SQLSTATE.get(e.kind, "XX000"), f"upstream PostgreSQL: {e.message}")


def _secret_value(index: CatalogIndex, secret_id: str | None) -> str | None:
    if secret_id is None:
        return None
    ref = index.items_by_id.get(secret_id)
    return None if ref is None else str(ref.value.get("value"))


def conn_info(index: CatalogIndex, connection: dict[str, Any]) -> PgConnInfo:
    return PgConnInfo(
        host=str(connection["host"]),
        port=int(connection["port"]),
        user=str(connection["user"]),
        password=_secret_value(index, connection.get("password_secret_id")),
        database=str(connection["database"]),
    )


async def create_connection(
    s: AdapterSession,
    stmt: ast.CreateConnection,
    owner: str,
    place: tuple[str, str, str],
) -> str:
    if stmt.connection_type != "postgres":
        raise AdapterError(
            E.FEATURE_NOT_SUPPORTED,
            f"CONNECTION TO {stmt.connection_type.upper()} is not supported",
        )
    opts = ast.options_dict(stmt.options)
    known = {"host", "port", "user", "password", "database"}
    for key in opts:
        if key not in known:
            raise AdapterError(E.FEATURE_NOT_SUPPORTED, f"connection option {key.upper()}")
    for key in ("host", "user", "database"):
        if not isinstance(opts.get(key), str):
            raise AdapterError(E.INVALID_PARAMETER_VALUE, f"{key.upper()} '...' is required")
    port = opts.get("port", 5432)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise AdapterError(E.INVALID_PARAMETER_VALUE, f"invalid PORT {port!r}")
    value: dict[str, Any] = {
        "type": "connection",
        "connection_type": "postgres",
        "owner": owner,
        "host": opts["host"],
        "port": port,
        "user": opts["user"],
        "database": opts["database"],
        "password_secret_id": None,
        "create_sql": "",
        "dependencies": [],
    }
    password = opts.get("password")
    if isinstance(password, ast.SecretRef):
        ref = s.coord.index.resolve_item(password.name.parts, s.database, s.vars.search_path())
        if ref is None or ref.type != "secret":
            raise AdapterError(E.UNDEFINED_OBJECT, f'unknown secret "{password.name}"')
        value["password_secret_id"] = ref.id
        value["dependencies"] = [ref.id]
    elif password is not None:
        raise AdapterError(E.INVALID_PARAMETER_VALUE, "PASSWORD must be SECRET name")
    validate_opt = ast.options_dict(stmt.with_options).get("validate", True)
    if validate_opt is not False:
        try:
            conn = await UpstreamConnection.connect(
                conn_info(s.coord.index, value), replication=False
            )
            await conn.close()
        except SourceError as e:
            raise sql_error(e) from None
    database, schema, name = place
    value["create_sql"] = (
        f"CREATE CONNECTION {database}.{schema}.{name} TO POSTGRES "
        f"(HOST '{value['host']}', PORT {port}, USER '{value['user']}', "
        f"DATABASE '{value['database']}')"
    )
    ref = await s.coord.create_item(database, schema, name, value, if_not_exists=stmt.if_not_exists)
    if ref is None:
        s.ctx.notice(f'connection "{name}" already exists, skipping')
    return "CREATE CONNECTION"


def _table_value(t: UpstreamTable) -> dict[str, Any]:
    return {
        "schema": t.schema,
        "name": t.name,
        "oid": t.oid,
        "columns": [[c.name, c.type_oid, c.type_name, c.sql_type, c.nullable] for c in t.columns],
        "key_columns": list(t.key_columns),
    }


def table_from_value(v: dict[str, Any]) -> UpstreamTable:
    from twinstream.storage.postgres import Column

    return UpstreamTable(
        schema=str(v["schema"]),
        name=str(v["name"]),
        oid=int(v["oid"]),
        columns=tuple(
            Column(str(n), int(o), str(tn), str(st), bool(nl)) for n, o, tn, st, nl in v["columns"]
        ),
        key_columns=tuple(v.get("key_columns", [])),
    )


async def plan_postgres_source(
    s: AdapterSession,
    conn: ast.PostgresSourceConnector,
    name: str,
    sql: str,
    common: dict[str, Any],
) -> tuple[list[str], Callable[[list[str]], list[dict[str, Any]]]]:
    ref = s.coord.index.resolve_item(conn.connection.parts, s.database, s.vars.search_path())
    if ref is None or ref.type != "connection":
        raise AdapterError(E.UNDEFINED_OBJECT, f'unknown connection "{conn.connection}"')
    opts = ast.options_dict(conn.options)
    publication = opts.get("publication")
    if not isinstance(publication, str):
        raise AdapterError(E.INVALID_PARAMETER_VALUE, "PUBLICATION '...' is required")
    for key in opts:
        if key != "publication":
            raise AdapterError(E.FEATURE_NOT_SUPPORTED, f"POSTGRES source option {key.upper()}")
    wanted: list[tuple[str, str]] | None
    aliases: list[str] = []
    if isinstance(conn.tables, ast.ForAllTables):
        wanted = None
    elif isinstance(conn.tables, ast.ForTables):
        wanted = []
        for t in conn.tables.tables:
            parts = t.name.parts
            wanted.append((parts[-2] if len(parts) >= 2 else "public", parts[-1]))
            aliases.append(t.alias.parts[-1] if t.alias is not None else parts[-1])
    else:
        raise AdapterError(
            E.SYNTAX_ERROR, "a POSTGRES source needs FOR ALL TABLES or FOR TABLES (...)"
        )
    try:
        tables = await validate(conn_info(s.coord.index, ref.value), publication, wanted)
    except SourceError as e:
        raise sql_error(e) from None
    if wanted is None:
        aliases = [t.name for t in tables]
    if not tables:
        raise AdapterError(E.UNDEFINED_TABLE, f'publication "{publication}" has no tables')
    names = [name, f"{name}_progress", *aliases]

    def make(ids: list[str]) -> list[dict[str, Any]]:
        root_id, progress_id, out_ids = ids[0], ids[1], ids[2:]
        root = dict(
            common,
            source_type="postgres",
            connection_id=ref.id,
            publication=publication,
            slot=f"twinstream_{root_id}",
            tables=[dict(_table_value(t), item_id=i) for t, i in zip(tables, out_ids, strict=True)],
            progress_id=progress_id,
            create_sql=sql,
            dependencies=[ref.id],
        )
        child = dict(common, parent_id=root_id, dependencies=[root_id], create_sql="")
        values = [
            root,
            dict(
                child,
                source_type="progress",
                columns=PROGRESS_COLUMNS,
                shard_id=f"source-{progress_id}",
            ),
        ]
        for t, i in zip(tables, out_ids, strict=True):
            cols = [{"name": c.name, "type": c.sql_type, "nullable": c.nullable} for c in t.columns]
            values.append(
                dict(child, source_type="subsource", columns=cols, shard_id=f"source-{i}")
            )
        return values

    return names, make


@dataclass
class PgIngestionSpec:
    source_id: str
    name: str
    info: PgConnInfo
    publication: str
    slot: str
    #: upstream table oid -> (table as created, output shard)
    tables: dict[int, tuple[UpstreamTable, Shard]]
    progress: Shard


class PgIngestion:
    """The leader's ingestion of one PostgreSQL source (see the module docstring)."""

    def __init__(
        self,
        spec: PgIngestionSpec,
        write: Callable[[Writes], Awaitable[int]],
        report: Callable[[SourceStatus, str | None], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self.write = write
        self.report = report
        self.binding = Binding(0, False)
        self.transactions = 0
        self._status: tuple[SourceStatus, str | None] | None = None

    async def run(self) -> None:
        backoff = RETRY_BACKOFF_MIN_S
        while True:
            try:
                await self._session()
            except FenceError:
                log.info("ingestion of %s stops at the fence", self.spec.name)
                return
            except Exception as e:  # upstream trouble or an unknown commit outcome
                log.warning("ingestion of %s stalled: %s", self.spec.name, e)
                await self._set_status(SourceStatus.STALLED, str(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                continue

    async def _set_status(self, st: SourceStatus, error: str | None) -> None:
        """Record a status when it changes (running only once the stream has proven itself:
        it delivered something, or stayed up for STREAM_HEALTHY_S)."""
        if self._status == (st, error):
            return
        self._status = (st, error)
        try:
            await self.report(st, error)
        except FenceError:
            raise
        except Exception as e:
            log.warning("could not record status of %s: %s", self.spec.name, e)

    async def _commit(self, changes: dict[str, list[tuple[Row, Diff]]], new_lsn: int) -> None:
        writes: Writes = {k: v for k, v in changes.items() if v}
        writes[self.spec.progress.shard_id] = advance(self.binding, new_lsn)
        await self.write(writes)
        self.binding = Binding(new_lsn, True)

    async def _session(self) -> None:
        spec = self.spec
        self.binding = await durable_binding(spec.progress)
        tables = [t for t, _s in spec.tables.values()]
        async with PgReplicator(spec.info, spec.publication, tables) as rep:
            if not self.binding.written:
                await rep.drop_slot(spec.slot, missing_ok=True)  # a half-done first attempt
                changes: dict[str, list[tuple[Row, Diff]]] = {}
                async with rep.snapshot(spec.slot) as snap:
                    async for table, rows in snap.batches():
                        shard = spec.tables[table.oid][1]
                        changes.setdefault(shard.shard_id, []).extend((r, 1) for r in rows)
                    lsn = snap.lsn
                await self._commit(changes, max(lsn, 1))
                log.info("snapshot of %s committed at %x", spec.name, lsn)
                await self._set_status(SourceStatus.RUNNING, None)
            stream = rep.stream(spec.slot, start_lsn=self.binding.offset)
            queue: asyncio.Queue[Txn | Progress] = asyncio.Queue(MAX_QUEUED_ITEMS)

            async def pump() -> None:
                async for item in stream:
                    await queue.put(item)

            pump_task = asyncio.create_task(pump(), name=f"pg-stream-{spec.source_id}")
            try:
                while True:
                    await self._commit_ready(rep, queue, pump_task)
            finally:
                pump_task.cancel()
                with contextlib.suppress(BaseException):
                    await pump_task
                await stream.aclose()

    async def _commit_ready(
        self,
        rep: PgReplicator,
        queue: asyncio.Queue[Txn | Progress],
        pump_task: asyncio.Task[None],
    ) -> None:
        """Wait for the next item, then commit it with every item already queued behind it
        (whole transactions only, in commit order) in ONE group commit, then ack."""
        getter = asyncio.ensure_future(queue.get())
        try:
            done, _ = await asyncio.wait(
                {getter, pump_task}, timeout=STREAM_HEALTHY_S, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the stream is up and quiet: healthy
                await self._set_status(SourceStatus.RUNNING, None)
                await asyncio.wait({getter, pump_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if not getter.done() or getter.cancelled():
            pump_task.result()  # the stream ended or failed: raise why
            raise SourceError("protocol", "the replication stream ended")
        items = [getter.result()]
        while len(items) < MAX_TXNS_PER_COMMIT and not queue.empty():
            items.append(queue.get_nowait())
        changes: dict[str, list[tuple[Row, Diff]]] = {}
        new_lsn = self.binding.offset
        txns = 0
        for item in items:
            if isinstance(item, Txn):
                for ch in item.changes:
                    shard = self.spec.tables[ch.table.oid][1]
                    changes.setdefault(shard.shard_id, []).append((ch.row, ch.diff))
                new_lsn = max(new_lsn, item.end_lsn)
                txns += 1
            else:
                new_lsn = max(new_lsn, item.lsn)
        if new_lsn <= self.binding.offset:
            return
        await self._commit(changes, new_lsn)
        self.transactions += txns
        await rep.ack(new_lsn)
        await self._set_status(SourceStatus.RUNNING, None)


async def drop_slot_later(info: PgConnInfo, publication: str, slot: str) -> None:
    """Best effort after DROP SOURCE: the slot would otherwise pin upstream WAL forever."""
    for attempt in range(10):
        try:
            async with PgReplicator(info, publication, []) as rep:
                await rep.drop_slot(slot, missing_ok=True)
            return
        except SourceError as e:
            if e.kind != "slot_in_use":
                log.warning("could not drop replication slot %s: %s", slot, e)
                return
            await asyncio.sleep(RETRY_BACKOFF_MIN_S * 2**attempt)
