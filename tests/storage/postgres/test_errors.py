"""Every bad input gives a SourceError with the right kind and a message that names the
problem: unreachable upstream, authentication, missing publication / table, replica
identity, slots in use / missing / existing, wal_level, permissions, TRUNCATE, schema change."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Iterator

import pytest

from twinstream.storage.postgres import (
    PgConnInfo,
    PgReplicator,
    SourceError,
    Txn,
    UpstreamTable,
    validate,
)
from twinstream.testing.pgserver import PgServer, start_pg_server
from twinstream.testing.pgupstream import Upstream, conn_info

DEADLINE_S = 60.0


async def _fails(kind: str, work: Awaitable[object], *words: str) -> SourceError:
    with pytest.raises(SourceError) as err:
        await work
    assert err.value.kind == kind, err.value
    for word in words:
        assert word in err.value.message, err.value.message
    return err.value


async def _next_txn(rep: PgReplicator, slot: str, lsn: int) -> Txn:
    stream = rep.stream(slot, start_lsn=lsn)
    async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(stream):
        async for item in stream:
            if isinstance(item, Txn):
                return item
    raise AssertionError("stream ended")


async def _published_table(up: Upstream) -> list[UpstreamTable]:
    await up.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "ALTER TABLE t REPLICA IDENTITY FULL",
        "CREATE PUBLICATION p FOR TABLE t",
    )
    return await validate(up.info, "p", [("public", "t")])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_upstream() -> None:
    info = PgConnInfo("127.0.0.1", _closed_port(), "postgres", None, "postgres")
    err = await _fails("unreachable", validate(info, "p"), f"127.0.0.1:{info.port}")
    assert err.retryable
    rep = PgReplicator(info, "p", [])
    await _fails("unreachable", rep.create_slot("s"))


async def test_upstream_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts (backlog) but never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        info = PgConnInfo("127.0.0.1", port, "postgres", None, "postgres", connect_timeout_s=0.5)
        await _fails("unreachable", validate(info, "p"), "did not complete")


async def test_missing_database(upstream: Upstream) -> None:
    info = conn_info(upstream.url.rsplit("/", 1)[0] + "/no_such_db")
    await _fails("missing_database", validate(info, "p"), "no_such_db")


async def test_missing_publication(upstream: Upstream) -> None:
    await _fails("missing_publication", validate(upstream.info, "nope"), "'nope'", "exist")


async def test_publication_without_update_and_delete(upstream: Upstream) -> None:
    await upstream.execute(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE t WITH (publish = 'insert')",
    )
    await _fails("missing_publication", validate(upstream.info, "p"), "UPDATE, DELETE")


async def test_table_not_in_publication_or_missing(upstream: Upstream) -> None:
    await _published_table(upstream)
    await upstream.execute("CREATE TABLE other (id int)")
    await _fails(
        "missing_table",
        validate(upstream.info, "p", [("public", "other")]),
        "public.other is not in publication 'p'",
    )
    await _fails(
        "missing_table",
        validate(upstream.info, "p", [("public", "ghost")]),
        "public.ghost does not exist",
    )


async def test_table_without_primary_key_or_full_identity(upstream: Upstream) -> None:
    await upstream.execute(
        "CREATE TABLE nokey (v text)",
        "CREATE TABLE keyed (id int PRIMARY KEY)",
        "CREATE PUBLICATION p FOR TABLE nokey, keyed",
    )
    await _fails(
        "no_primary_key",
        validate(upstream.info, "p", [("public", "nokey")]),
        "public.nokey has no primary key",
        "REPLICA IDENTITY FULL",
    )
    await _fails(
        "replica_identity",
        validate(upstream.info, "p", [("public", "keyed")]),
        "ALTER TABLE public.keyed REPLICA IDENTITY FULL",
    )
    await upstream.execute("ALTER TABLE nokey REPLICA IDENTITY FULL")
    (table,) = await validate(upstream.info, "p", [("public", "nokey")])
    assert table.key_columns == ()


async def test_slot_in_use_exists_and_missing(upstream: Upstream, slot: str) -> None:
    tables = await _published_table(upstream)
    async with (
        PgReplicator(upstream.info, "p", tables) as a,
        PgReplicator(upstream.info, "p", tables) as b,
    ):
        lsn = await a.create_slot(slot)
        await _fails("slot_exists", b.create_slot(slot), slot)
        await upstream.execute("INSERT INTO t VALUES (1, 'x')")
        stream = a.stream(slot, start_lsn=lsn)
        async with contextlib.aclosing(stream):
            async with asyncio.timeout(DEADLINE_S):
                while not isinstance(await anext(stream), Txn):
                    pass
            err = await _fails("slot_in_use", _next_txn(b, slot, lsn), slot, "active")
            assert err.retryable
            await _fails("slot_in_use", b.drop_slot(slot), slot)
        # once the first stream is closed the slot is free again
        assert (await _next_txn(b, slot, lsn)).changes[0].row == (1, "x")
        await b.drop_slot(slot)
        await _fails("slot_missing", b.drop_slot(slot), slot)
        await b.drop_slot(slot, missing_ok=True)
        await _fails("slot_missing", _next_txn(b, slot, lsn), slot, "does not exist")


async def test_publication_dropped_after_the_slot_was_created(
    upstream: Upstream, slot: str
) -> None:
    tables = await _published_table(upstream)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        await upstream.execute("DROP PUBLICATION p", "INSERT INTO t VALUES (1, 'x')")
        await _fails("missing_publication", _next_txn(rep, slot, lsn), '"p"')


async def test_truncate_stops_the_stream(upstream: Upstream, slot: str) -> None:
    tables = await _published_table(upstream)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        await upstream.execute("INSERT INTO t VALUES (1, 'x')", "TRUNCATE t")
        txn = await _next_txn(rep, slot, lsn)
        await _fails("truncated", _next_txn(rep, slot, txn.end_lsn), "public.t", "truncated")


async def test_schema_change_stops_the_stream(upstream: Upstream, slot: str) -> None:
    tables = await _published_table(upstream)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        await upstream.execute("ALTER TABLE t ADD COLUMN w int", "INSERT INTO t VALUES (1, 'x', 2)")
        await _fails("schema_changed", _next_txn(rep, slot, lsn), "public.t", "'w'")


async def test_recreated_table_is_a_schema_change(upstream: Upstream, slot: str) -> None:
    tables = await _published_table(upstream)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        await upstream.execute(
            "DROP TABLE t",
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "ALTER TABLE t REPLICA IDENTITY FULL",
            "ALTER PUBLICATION p ADD TABLE t",
            "INSERT INTO t VALUES (1, 'x')",
        )
        await _fails("schema_changed", _next_txn(rep, slot, lsn), "recreated")


async def test_replica_identity_lowered_after_validation(upstream: Upstream, slot: str) -> None:
    tables = await _published_table(upstream)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        await upstream.execute(
            "INSERT INTO t VALUES (1, 'x')",
            "ALTER TABLE t REPLICA IDENTITY DEFAULT",
            "UPDATE t SET v = 'y'",
        )
        txn = await _next_txn(rep, slot, lsn)
        await _fails("replica_identity", _next_txn(rep, slot, txn.end_lsn), "UPDATE on public.t")


# ---------------------------------------------------------------------- authentication


def _auth_info(server: PgServer, user: str, password: str | None) -> PgConnInfo:
    return conn_info(server.url, user=user, password=password)


@pytest.mark.parametrize(("user", "password"), [("scram_user", "scram-pw"), ("md5_user", "md5-pw")])
async def test_password_authentication_works_for_queries_and_replication(
    auth_server: PgServer, user: str, password: str, slot: str
) -> None:
    info = _auth_info(auth_server, user, password)
    tables = await validate(info, "p")
    assert [t.name for t in tables] == ["t"]
    async with PgReplicator(info, "p", tables) as rep:
        snap = await rep.create_slot_and_snapshot(slot)
        assert snap.rows == {tables[0]: []}
        await rep.drop_slot(slot)


@pytest.mark.parametrize("user", ["scram_user", "md5_user"])
async def test_wrong_or_missing_password(auth_server: PgServer, user: str) -> None:
    await _fails(
        "auth",
        validate(_auth_info(auth_server, user, "wrong"), "p"),
        "password authentication failed",
        user,
    )
    rep = PgReplicator(_auth_info(auth_server, user, "wrong"), "p", [])
    await _fails("auth", rep.create_slot("never"), "password authentication failed")
    await _fails("auth", validate(_auth_info(auth_server, user, None), "p"), "none given")


async def test_role_without_replication_privilege(auth_server: PgServer) -> None:
    info = _auth_info(auth_server, "plain_user", "plain-pw")
    await _fails("permission", validate(info, "p"), "plain_user", "REPLICATION")
    rep = PgReplicator(info, "p", [])
    await _fails("permission", rep.create_slot("never"))


@pytest.fixture(scope="module")
def replica_level_server() -> Iterator[PgServer]:
    server = start_pg_server()  # wal_level=replica
    try:
        yield server
    finally:
        server.stop()


async def test_wal_level_not_logical(replica_level_server: PgServer) -> None:
    info = conn_info(replica_level_server.url)
    await _fails("wal_level", validate(info, "p"), "wal_level=replica")
    rep = PgReplicator(info, "p", [])
    await _fails("wal_level", rep.create_slot("never"), "wal_level")
