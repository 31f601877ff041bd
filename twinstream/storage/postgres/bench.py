"""CDC throughput measurement, reusable by ``twinstream bench sources``.

`measure_cdc` writes `rows` rows upstream in transactions of `rows_per_txn` (timed: the
upstream's own insert rate, the baseline), reads them back through a fresh slot's snapshot
(snapshot rows/s), and through the change stream of a slot created before the inserts (CDC
rows/s: decode + transfer + parse of already-written WAL, i.e. catch-up speed). It cleans up
its table, publication and slots. ``python -m twinstream.storage.postgres.bench`` runs it
against a throwaway server and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any

import psycopg

from twinstream.storage.postgres.model import PgConnInfo, Txn
from twinstream.storage.postgres.replicator import PgReplicator
from twinstream.storage.postgres.validate import validate

__all__ = ["measure_cdc"]


async def measure_cdc(
    info: PgConnInfo, *, rows: int = 50_000, rows_per_txn: int = 100
) -> dict[str, Any]:
    """Figures of one run (see the module docstring); rates are rows per second."""
    tag = f"twinstream_bench_{os.getpid()}"
    table, pub = f"{tag}_t", f"{tag}_p"
    cdc_slot, snap_slot = f"{tag}_cdc", f"{tag}_snap"
    sql = await psycopg.AsyncConnection.connect(
        host=info.host,
        port=info.port,
        user=info.user,
        password=info.password,
        dbname=info.database,
        autocommit=True,
    )
    rep: PgReplicator | None = None
    try:
        await sql.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, v text, n numeric, at timestamptz)"
        )
        await sql.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
        await sql.execute(f"CREATE PUBLICATION {pub} FOR TABLE {table}")
        tables = await validate(info, pub, [("public", table)])
        rep = PgReplicator(info, pub, tables)
        start_lsn = await rep.create_slot(cdc_slot)

        t0 = time.perf_counter()
        txns = 0
        for first in range(0, rows, rows_per_txn):
            last = min(first + rows_per_txn, rows)
            await sql.execute(
                f"INSERT INTO {table} SELECT g, 'value ' || g, g * 1.25, now() "
                f"FROM generate_series({first}, {last - 1}) g"
            )
            txns += 1
        insert_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        snapshot_rows = 0
        async with rep.snapshot(snap_slot) as snap:
            async for _table, batch in snap.batches():
                snapshot_rows += len(batch)
        snapshot_s = time.perf_counter() - t0
        assert snapshot_rows == rows, (snapshot_rows, rows)

        t0 = time.perf_counter()
        cdc_rows = 0
        stream = rep.stream(cdc_slot, start_lsn=start_lsn)
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, Txn):
                    cdc_rows += len(item.changes)
                    if cdc_rows >= rows:
                        await rep.ack(item.end_lsn)
                        break
        cdc_s = time.perf_counter() - t0
        assert cdc_rows == rows, (cdc_rows, rows)
        upstream_rate = rows / insert_s
        cdc_rate = rows / cdc_s
        return {
            "rows": rows,
            "txns": txns,
            "upstream_insert_rows_per_s": round(upstream_rate),
            "snapshot_rows_per_s": round(snapshot_rows / snapshot_s),
            "cdc_rows_per_s": round(cdc_rate),
            "ratio": round(cdc_rate / upstream_rate, 3),
        }
    finally:
        if rep is not None:
            for slot in (cdc_slot, snap_slot):
                with contextlib.suppress(Exception):
                    await rep.drop_slot(slot, missing_ok=True)
            await rep.close()
        with contextlib.suppress(Exception):
            await sql.execute(f"DROP PUBLICATION IF EXISTS {pub}")
            await sql.execute(f"DROP TABLE IF EXISTS {table}")
        await sql.close()


def main() -> None:
    from twinstream.testing.pgserver import pg_server

    with pg_server(wal_level_logical=True) as server:
        info = PgConnInfo(server.host, server.port, server.user, None, "postgres")
        print(json.dumps(asyncio.run(measure_cdc(info))), flush=True)


if __name__ == "__main__":
    main()
