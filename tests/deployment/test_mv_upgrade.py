"""Materialized views across a zero-downtime upgrade, with real processes.

The old generation maintains a view while a writer changes its table; the new generation
boots read-only, hydrates the view on its own replica (its sink writes nothing), reports it in
`mz_hydration_statuses`, and is caught up only once the view is. After promotion its sink
writes: at every time in the output shard's history, the view equals the query over the
table at that time (so neither generation duplicated or lost anything).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from twinstream.persist import PersistClient, Progress, Updates
from twinstream.persist.urls import default_blob_url, default_consensus_url
from twinstream.testing.environmentd import EnvironmentdProcess, replica_processes
from twinstream.testing.http import http, status

DEADLINE_S = 60.0
QUERY = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k"


def wait_status(env: EnvironmentdProcess, want: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while status(env) != want:
        assert time.monotonic() < deadline, f"never {want}:\n{env.log_tail()}"
        time.sleep(0.05)


def sql(env: EnvironmentdProcess, stmt: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        cur = conn.execute(stmt, args or None)
        return cur.fetchall() if cur.description else []


class Writer(threading.Thread):
    """Random inserts and deletes on `t` until stopped."""

    def __init__(self, env: EnvironmentdProcess) -> None:
        super().__init__(daemon=True)
        self.env = env
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(self.env.conninfo(), autocommit=True) as conn:
                while not self.stop.is_set():
                    if rng.random() < 0.7:
                        conn.execute(
                            "INSERT INTO t VALUES (%s, %s)", (rng.randrange(5), rng.randrange(50))
                        )
                    else:
                        conn.execute("DELETE FROM t WHERE v = %s", (rng.randrange(50),))
                    self.writes += 1
        except BaseException as e:  # reported by the test
            self.error = e


def expected(rows: list[tuple[Any, int]]) -> Counter[tuple[Any, ...]]:
    groups: dict[Any, list[int]] = {}
    for (k, v), d in rows:
        assert d > 0
        groups.setdefault(k, []).extend([v] * d)
    return Counter({(k, len(vs), sum(vs)): 1 for k, vs in groups.items()})


async def history_times(client: PersistClient, shard_id: str, since: int) -> list[int]:
    """Every time at which the shard has updates, from `since` to its upper."""
    shard = client.open(shard_id)
    upper = await shard.upper()
    times: set[int] = set()
    listen = shard.listen(since)
    async for event in listen:
        if isinstance(event, Updates):
            times.update(t for _r, t, _d in event.updates)
        elif isinstance(event, Progress) and event.upper >= upper:
            break
    await listen.aclose()  # type: ignore[attr-defined]
    return sorted(times)


async def test_read_only_generation_hydrates_views_then_writes_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "env"
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    writer = Writer(old)
    client = PersistClient.from_urls(default_consensus_url(data_dir), default_blob_url(data_dir))
    try:
        sql(old, "CREATE TABLE t (k int, v int)")
        sql(old, "INSERT INTO t VALUES (1, 1), (2, 2)")
        sql(old, f"CREATE MATERIALIZED VIEW mv AS {QUERY}")
        sql(old, "CREATE INDEX t_k ON t (k)")
        ids = dict(sql(old, "SELECT name, id FROM mz_catalog.mz_objects"))
        table_shard, mv_shard = f"table-{ids['t']}", f"mv-{ids['mv']}"
        # Keep every time of both shards readable for the check at the end.
        await client.start_watching()
        since = 0
        for shard_id in (table_shard, mv_shard):
            handle = await client.open(shard_id).critical_reader("test-history", 0)
            since = max(since, await handle.since())
        writer.start()
        old_replicas = replica_processes(data_dir, 1)
        assert list(old_replicas) == ["quickstart-replica-u1-gen-1"], old_replicas
        new.start()
        wait_status(new, "ReadyToPromote")
        assert writer.writes > 0 and writer.error is None, writer.error
        # Both generations run their replica processes side by side; generation 2's
        # environmentd left generation 1's alone (same process).
        assert replica_processes(data_dir, 1) == old_replicas
        new_replicas = replica_processes(data_dir, 2)
        assert list(new_replicas) == ["quickstart-replica-u1-gen-2"], new_replicas
        # The read-only generation hydrated the view on its own replica.
        hydrated = sql(
            new,
            "SELECT hydrated FROM mz_catalog.mz_hydration_statuses WHERE object_id = %s",
            ids["mv"],
        )
        deadline = time.monotonic() + DEADLINE_S
        while hydrated != [(True,)]:
            assert time.monotonic() < deadline, hydrated
            time.sleep(0.2)
            hydrated = sql(
                new,
                "SELECT hydrated FROM mz_catalog.mz_hydration_statuses WHERE object_id = %s",
                ids["mv"],
            )
        # Catch-up progress for `twinstream upgrade` and /metrics: every collection hydrated.
        code, body = http(new.internal_http_port, "GET", "/api/deployment/progress")
        assert code == 200, body
        prog = json.loads(body)
        assert prog["collections"] >= 2 and prog["hydrated"] == prog["collections"], prog
        assert prog["hydrated_pct"] == 100.0
        assert set(prog["clusters"]) >= {"(tables)", "quickstart"}, prog
        code, body = http(new.internal_http_port, "GET", "/metrics")
        assert code == 200 and "twinstream_collection_hydrated{" in body, body
        writer.stop.set()
        writer.join(timeout=30)
        assert writer.error is None, writer.error
        # Once the writes stop, the follower's view and its table mirror agree.
        deadline = time.monotonic() + DEADLINE_S
        while Counter(sql(new, "SELECT * FROM mv")) != Counter(sql(new, QUERY)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        code, body = http(new.internal_http_port, "POST", "/api/leader/promote")
        assert code == 200, body
        wait_status(new, "IsLeader")
        assert old.proc is not None
        old.proc.wait(timeout=20)
        # The fenced generation's clean exit ended its replica; the leader's is untouched.
        assert replica_processes(data_dir, 1) == {}
        assert replica_processes(data_dir, 2) == new_replicas
        # The new leader's sink writes the view from now on.
        for i in range(10):
            sql(new, "INSERT INTO t VALUES (%s, %s)", 9, i)
        sql(new, "DELETE FROM t WHERE k = 1")
        assert Counter(sql(new, "SELECT * FROM mv")) == Counter(sql(new, QUERY))
        assert (9, 10, 45) in sql(new, "SELECT * FROM mv")
        # The index hydrated on the new generation answers point reads, fresh.
        assert sorted(sql(new, "SELECT v FROM t WHERE k = 9")) == [(i,) for i in range(10)]
        assert sql(new, "SELECT * FROM t WHERE k = 1") == []
        # Every time of the output's history equals the query over the table at that time.
        times = await history_times(client, mv_shard, since)
        assert len(times) > 10
        table, out = client.open(table_shard), client.open(mv_shard)
        for t in times:
            got = Counter(dict(await out.snapshot(t)))
            assert got == expected(await table.snapshot(t)), f"output differs at {t}"
    finally:
        writer.stop.set()
        old.stop()
        new.stop()
        await client.close()
