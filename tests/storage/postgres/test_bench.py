"""The CDC benchmark function runs and reports its figures (values are never asserted)."""

from __future__ import annotations

from twinstream.storage.postgres.bench import measure_cdc
from twinstream.testing.pgupstream import Upstream


async def test_measure_cdc_reports_rates_and_cleans_up(upstream: Upstream) -> None:
    figures = await measure_cdc(upstream.info, rows=500, rows_per_txn=50)
    assert figures["rows"] == 500 and figures["txns"] == 10
    for key in ("upstream_insert_rows_per_s", "snapshot_rows_per_s", "cdc_rows_per_s", "ratio"):
        assert figures[key] > 0
    assert (
        await upstream.one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        )
        == 0
    )
    assert await upstream.one("SELECT count(*) FROM pg_publication") == 0
