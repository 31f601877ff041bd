"""CDC against a real PostgreSQL: snapshot + change stream, atomic transactions, resume
after ack without duplicates or gaps, progress while idle, value types, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from twinstream.storage.postgres import (
    PgReplicator,
    Progress,
    Row,
    SourceError,
    Txn,
    UpstreamTable,
    parse_lsn,
    validate,
)
from twinstream.testing.pgupstream import Upstream

DEADLINE_S = 60.0


async def _items_table(up: Upstream, rows: int) -> list[UpstreamTable]:
    await up.execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text, n numeric, at timestamptz)",
        "ALTER TABLE items REPLICA IDENTITY FULL",
        "INSERT INTO items SELECT g, 'v' || g, g * 1.5, "
        "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second' "
        f"FROM generate_series(1, {rows}) g",
        "CREATE PUBLICATION p FOR TABLE items",
    )
    return await validate(up.info, "p", [("public", "items")])


async def _upstream_rows(up: Upstream, table: str) -> Counter[Row]:
    cur = await up.sql.execute(f"SELECT * FROM {table}")
    return Counter(tuple(r) for r in await cur.fetchall())


async def _random_workload(
    up: Upstream, first_id: int, live: list[int], changes: int, seed: int
) -> list[tuple[int, int]]:
    """`changes` single-row statements in multi-statement transactions; returns each
    transaction's (xid, number of row changes it must deliver) in commit order."""
    rnd = random.Random(seed)
    next_id = first_id
    done = 0
    txns: list[tuple[int, int]] = []
    while done < changes:
        n = min(rnd.randint(1, 12), changes - done)
        expected = 0
        async with up.sql.transaction():
            xid = int(str(await up.one("SELECT txid_current()"))) & 0xFFFFFFFF
            for _ in range(n):
                op = rnd.random()
                if op < 0.4 or len(live) < 10:
                    await up.sql.execute(
                        "INSERT INTO items VALUES (%s, %s, %s, now())",
                        (next_id, f"new{next_id}", Decimal(next_id) / 7),
                    )
                    live.append(next_id)
                    next_id += 1
                    expected += 1
                elif op < 0.75:
                    key = rnd.choice(live)
                    await up.sql.execute(
                        "UPDATE items SET v = v || '+', n = n + 1 WHERE id = %s", (key,)
                    )
                    expected += 2
                else:
                    key = live.pop(rnd.randrange(len(live)))
                    await up.sql.execute("DELETE FROM items WHERE id = %s", (key,))
                    expected += 1
        txns.append((xid, expected))
        done += n
    return txns


async def test_snapshot_10k_rows_then_10k_changes_in_atomic_transactions(
    upstream: Upstream, slot: str
) -> None:
    tables = await _items_table(upstream, 10_000)
    state: Counter[Row] = Counter()
    async with PgReplicator(upstream.info, "p", tables) as rep:
        async with rep.snapshot(slot) as snap:
            async for table, rows in snap.batches(batch_rows=3000):
                assert table == tables[0]
                state.update(rows)
        assert sum(state.values()) == 10_000
        assert state == await _upstream_rows(upstream, "items")

        live = list(range(1, 10_001))
        expected_txns: list[tuple[int, int]] = []
        got: list[Txn] = []

        async def write() -> None:
            expected_txns.extend(await _random_workload(upstream, 20_000, live, 10_000, seed=6))

        async def read() -> None:
            last_end = snap.lsn
            stream = rep.stream(slot, start_lsn=snap.lsn)
            async with contextlib.aclosing(stream):
                async for item in stream:
                    lsn = item.end_lsn if isinstance(item, Txn) else item.lsn
                    assert lsn > last_end
                    last_end = lsn
                    if isinstance(item, Txn):
                        assert item.commit_lsn < item.end_lsn
                        got.append(item)
                        for change in item.changes:
                            state[change.row] += change.diff
                            assert state[change.row] >= 0, change
                        await rep.ack(item.end_lsn)
                        progressed.set()

        # The reader cannot tell the last transaction by itself (it may arrive before the
        # writer returns), so the test waits until it has as many as the writer committed.
        progressed = asyncio.Event()
        async with asyncio.timeout(DEADLINE_S * 3):
            reader = asyncio.create_task(read())
            try:
                await write()
                while len(got) < len(expected_txns):
                    progressed.clear()
                    waiter = asyncio.create_task(progressed.wait())
                    await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if reader.done():
                        reader.result()  # its assertion, if it failed
                        raise AssertionError("the stream ended early")
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    assert [(t.xid, len(t.changes)) for t in got] == expected_txns
    assert sum(n for _, n in expected_txns) > 10_000  # updates deliver two changes each
    assert +state == await _upstream_rows(upstream, "items")
    confirmed = await upstream.one(
        f"SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )
    assert parse_lsn(str(confirmed)) == got[-1].end_lsn


async def _insert_txns(up: Upstream, ids: range) -> None:
    for i in ids:
        async with up.sql.transaction():
            await up.sql.execute("INSERT INTO items VALUES (%s, 'r', %s, now())", (i, i))
            await up.sql.execute("UPDATE items SET v = 'r2' WHERE id = %s", (i,))


async def _take_txns(rep: PgReplicator, slot: str, start: int, count: int) -> list[Txn]:
    out: list[Txn] = []
    stream = rep.stream(slot, start_lsn=start)
    async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(stream):
        async for item in stream:
            if isinstance(item, Txn):
                out.append(item)
                if len(out) == count:
                    break
    return out


def _ids(txns: list[Txn]) -> list[object]:
    return [t.changes[0].row[0] for t in txns]


async def test_resume_from_acked_lsn_has_no_duplicate_and_no_gap(
    upstream: Upstream, slot: str
) -> None:
    tables = await _items_table(upstream, 0)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        snap = await rep.create_slot_and_snapshot(slot)
        assert snap.rows == {tables[0]: []}
        await _insert_txns(upstream, range(1, 21))
        first = await _take_txns(rep, slot, snap.lsn, 10)
        assert _ids(first) == list(range(1, 11))
        await rep.ack(first[-1].end_lsn)

    await _insert_txns(upstream, range(21, 31))
    # a new replicator (a restart) resumes at the durable position
    async with PgReplicator(upstream.info, "p", tables) as rep:
        second = await _take_txns(rep, slot, first[-1].end_lsn, 20)
        assert _ids(second) == list(range(11, 31))
        assert [len(t.changes) for t in second] == [3] * 20  # insert, retract, insert
        await rep.ack(second[4].end_lsn)  # durable up to id 15 only

    # a stale start position (the snapshot's) cannot go back before what was acked
    async with PgReplicator(upstream.info, "p", tables) as rep:
        third = await _take_txns(rep, slot, snap.lsn, 15)
        assert _ids(third) == list(range(16, 31))
        assert [t.end_lsn for t in third] == [t.end_lsn for t in second[5:]]
        assert await rep.slot_position(slot) == second[4].end_lsn
        await rep.drop_slot(slot)
        assert await rep.slot_position(slot) is None


async def test_progress_advances_while_no_replicated_data_changes(
    upstream: Upstream, slot: str
) -> None:
    tables = await _items_table(upstream, 0)
    await upstream.execute("CREATE TABLE other (x int)")
    async with PgReplicator(upstream.info, "p", tables, status_interval_s=0.1) as rep:
        start = await rep.create_slot(slot)
        await upstream.execute("INSERT INTO other VALUES (1)")
        target = parse_lsn(str(await upstream.one("SELECT pg_current_wal_lsn()::text")))
        stream = rep.stream(slot, start_lsn=start)
        async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(stream):
            async for item in stream:
                assert isinstance(item, Progress), item  # nothing of ours changed
                await rep.ack(item.lsn)
                if item.lsn >= target:
                    break
        # resuming from the progress point delivers what comes next, nothing older
        await _insert_txns(upstream, range(1, 2))
        (txn,) = await _take_txns(rep, slot, item.lsn, 1)
        assert txn.changes[0].row[0] == 1


TYPED_COLUMNS = (
    "b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(12,3), t text, "
    "vc varchar(10), c char(3), d date, ts timestamp, tstz timestamptz, iv interval, "
    "u uuid, j json, jb jsonb, by bytea, e mood, arr int[]"
)
TYPED_VALUES = (
    "true, -2, 40000, 9000000000, 1.5, 2.25, 12.345, 'tab\tnew\nline ''q'' \\', "
    "'vc', 'ab', '2024-02-29', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+02', "
    "'1 day 02:03:04', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', "
    "'{\"k\": {\"z\": null}}', '\\x00ff', 'happy', '{1,2}'"
)
EXPECTED_ROW: Row = (
    1,
    True,
    -2,
    40000,
    9000000000,
    1.5,
    2.25,
    Decimal("12.345"),
    "tab\tnew\nline 'q' \\",
    "vc",
    "ab ",
    dt.date(2024, 2, 29),
    dt.datetime(2024, 2, 29, 12, 34, 56, 789000),
    dt.datetime(2024, 2, 29, 10, 34, 56, tzinfo=dt.UTC),
    dt.timedelta(days=1, hours=2, minutes=3, seconds=4),
    uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    {"k": [1, 2]},
    {"k": {"z": None}},
    b"\x00\xff",
    "happy",  # enums (unknown types) arrive as text
    "{1,2}",
)


async def test_values_decode_alike_in_snapshot_and_stream(upstream: Upstream, slot: str) -> None:
    await upstream.execute(
        "CREATE TYPE mood AS ENUM ('sad', 'happy')",
        f"CREATE TABLE typed (id int PRIMARY KEY, {TYPED_COLUMNS})",
        "ALTER TABLE typed REPLICA IDENTITY FULL",
        f"INSERT INTO typed VALUES (1, {TYPED_VALUES})",
        "CREATE TABLE typed_nulls (id int)",
        "ALTER TABLE typed_nulls REPLICA IDENTITY FULL",
        "CREATE PUBLICATION p FOR TABLE typed, typed_nulls",
    )
    tables = await validate(upstream.info, "p", None)
    assert [t.name for t in tables] == ["typed", "typed_nulls"]
    typed = tables[0]
    assert typed.key_columns == ("id",)
    assert [c.sql_type for c in typed.columns][:4] == ["int4", "bool", "int2", "int4"]
    assert typed.columns[-2].sql_type == "text" and typed.columns[-2].type_name == "mood"
    async with PgReplicator(upstream.info, "p", tables) as rep:
        snap = await rep.create_slot_and_snapshot(slot)
        assert snap.rows[typed] == [EXPECTED_ROW]
        await upstream.execute(
            f"INSERT INTO typed VALUES (2, {TYPED_VALUES})",
            "UPDATE typed SET t = NULL WHERE id = 2",
            "INSERT INTO typed_nulls VALUES (NULL)",
        )
        txns = await _take_txns(rep, slot, snap.lsn, 3)
    assert txns[0].changes[0].row == (2, *EXPECTED_ROW[1:])
    old, new = txns[1].changes
    assert (old.row, old.diff) == ((2, *EXPECTED_ROW[1:]), -1)
    assert new.diff == 1 and new.row[8] is None and new.row[:8] == old.row[:8]
    assert txns[2].changes[0].row == (None,)
    assert txns[0].commit_time_us <= txns[1].commit_time_us


async def test_large_toasted_value_survives_an_update_of_another_column(
    upstream: Upstream, slot: str
) -> None:
    big = random.Random(1).randbytes(150_000).hex()  # incompressible: stored out of line
    await upstream.execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, n int)",
        "ALTER TABLE docs REPLICA IDENTITY FULL",
        "CREATE PUBLICATION p FOR TABLE docs",
    )
    tables = await validate(upstream.info, "p", None)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        await upstream.sql.execute("INSERT INTO docs VALUES (1, %s, 0)", (big,))
        await upstream.execute("UPDATE docs SET n = 1 WHERE id = 1")
        ins, upd = await _take_txns(rep, slot, lsn, 2)
    assert ins.changes[0].row == (1, big, 0)
    assert [(c.row, c.diff) for c in upd.changes] == [((1, big, 0), -1), ((1, big, 1), 1)]


async def _replication_sessions(up: Upstream) -> int:
    return int(
        str(
            await up.one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'twinstream'"
            )
        )
    )


async def _wait_for(up: Upstream, query: str, want: object) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while await up.one(query) != want:
            await asyncio.sleep(0.02)


async def test_cancelled_stream_leaves_no_session_and_frees_the_slot(
    upstream: Upstream, slot: str
) -> None:
    tables = await _items_table(upstream, 0)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        await _insert_txns(upstream, range(1, 3))
        first = asyncio.Event()

        async def consume() -> None:
            async for item in rep.stream(slot, start_lsn=lsn):
                if isinstance(item, Txn):
                    first.set()

        task = asyncio.create_task(consume())
        async with asyncio.timeout(DEADLINE_S):
            await first.wait()
        assert await upstream.one(
            f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # closing waited for upstream to hang up: the walsender has released the slot
        assert not await upstream.one(
            f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
        )
        await rep.drop_slot(slot)
    await _wait_for(
        upstream,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'twinstream'",
        0,
    )


async def test_closing_the_replicator_ends_a_running_stream(upstream: Upstream, slot: str) -> None:
    tables = await _items_table(upstream, 0)
    rep = PgReplicator(upstream.info, "p", tables)
    lsn = await rep.create_slot(slot)
    stream = rep.stream(slot, start_lsn=lsn)
    await _insert_txns(upstream, range(1, 2))
    async with asyncio.timeout(DEADLINE_S):
        item = await anext(stream)
        while not isinstance(item, Txn):
            item = await anext(stream)
    assert await _replication_sessions(upstream) == 1
    await rep.close()
    assert not await upstream.one(
        f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )
    with pytest.raises(SourceError) as err:
        await anext(stream)
    assert err.value.kind == "unreachable"
    await stream.aclose()


async def test_tables_outside_the_source_are_skipped(upstream: Upstream, slot: str) -> None:
    await upstream.execute(
        "CREATE TABLE mine (id int PRIMARY KEY)",
        "CREATE TABLE theirs (id int PRIMARY KEY)",
        "ALTER TABLE mine REPLICA IDENTITY FULL",
        "CREATE PUBLICATION p FOR TABLE mine, theirs",  # theirs: default identity
    )
    tables = await validate(upstream.info, "p", [("public", "mine")])
    async with PgReplicator(upstream.info, "p", tables) as rep:
        lsn = await rep.create_slot(slot)
        async with upstream.sql.transaction():
            await upstream.execute("INSERT INTO mine VALUES (1)", "INSERT INTO theirs VALUES (1)")
        await upstream.execute(
            "UPDATE theirs SET id = 2", "DELETE FROM theirs", "INSERT INTO mine VALUES (2)"
        )
        got = await _take_txns(rep, slot, lsn, 2)
    assert [[(c.table.name, c.row, c.diff) for c in t.changes] for t in got] == [
        [("mine", (1,), 1)],
        [("mine", (2,), 1)],
    ]


async def test_abandoned_snapshot_releases_its_session_and_slot(
    upstream: Upstream, slot: str
) -> None:
    tables = await _items_table(upstream, 10_000)
    async with PgReplicator(upstream.info, "p", tables) as rep:
        async with rep.snapshot(slot) as snap:
            async for _table, rows in snap.batches(batch_rows=1000):
                assert len(rows) == 1000
                break  # stop midway: the session is closed, nothing else is sent on it
        assert not await upstream.one(
            f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
        )
        await rep.drop_slot(slot)
    assert await _replication_sessions(upstream) == 0


async def test_identify_system(upstream: Upstream) -> None:
    async with PgReplicator(upstream.info, "p", []) as rep:
        info = await rep.identify_system()
        again = await rep.identify_system()
    assert info.system_id == str(
        await upstream.one("SELECT system_identifier FROM pg_control_system()")
    )
    assert info.timeline == 1 and info.database == upstream.info.database
    assert 0 < info.wal_position <= again.wal_position
