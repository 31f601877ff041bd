"""environmentd's replica processes (the default): each replica of the generation runs as a
`clusterd` process named `<cluster>-replica-<id>-gen-<G>`; materialized views are maintained
there; an environmentd killed -9 leaves it running and its successor adopts it and reconciles
(every dataflow is kept, not rebuilt: counted); a replica killed -9 while writes stream in is
restarted and reported, and the view's output shard is exact at every time; a clean
environmentd stop ends it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from twinstream.compute.dataflow import plan as P
from twinstream.controller.protocol import DataflowDesc, ReplicaStatus
from twinstream.controller.remote import RemoteReplica
from twinstream.testing.environmentd import EnvironmentdProcess
from twinstream.testing.waiting import wait_for


def replica_files(data_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in (data_dir / "clusterd").glob("*.json"):
        with contextlib.suppress(ValueError, OSError):
            out[p.stem] = json.loads(p.read_text())
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours is not alive
    with contextlib.suppress(OSError):
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return False


def status(port: int, name: str) -> ReplicaStatus:
    async def ask() -> ReplicaStatus:
        r = RemoteReplica(name, ("127.0.0.1", port), unavailable_after_s=30)
        try:
            return await r.status()
        finally:
            await r.close()

    return asyncio.run(ask())


def builds(port: int, name: str) -> int:
    return status(port, name).builds


def dataflows(port: int, name: str) -> int:
    return len(status(port, name).dataflows)


async def create_stale(port: int, name: str) -> None:
    """A dataflow nothing in the catalog asks for (left by a controller that is gone)."""
    r = RemoteReplica(name, ("127.0.0.1", port), unavailable_after_s=30)
    try:
        plan = P.Constant((((1,), 1),), 1)
        await r.create_dataflow(DataflowDesc("stale", plan, {}, index_key=()))
        assert len((await r.status()).dataflows) == 2
    finally:
        await r.close()


def metric(envd: EnvironmentdProcess, series: str) -> int | None:
    url = f"http://127.0.0.1:{envd.internal_http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(series + " "):
                return int(line.split()[-1])
    return None


def mv_matches(envd: EnvironmentdProcess, expected: list[tuple[Any, ...]]) -> bool:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        got = sorted(conn.execute("SELECT * FROM totals").fetchall())
    return got == expected


@pytest.fixture
def envd(tmp_path: Path) -> Iterator[EnvironmentdProcess]:
    env = EnvironmentdProcess(tmp_path)  # replica processes are the default
    env.start()
    try:
        yield env
    finally:
        env.stop()
        for info in replica_files(tmp_path).values():  # whatever a failed test left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(info["pid"]), signal.SIGKILL)


def test_replicas_run_as_processes_and_survive_environmentd(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (k int, v int)")
        conn.execute("INSERT INTO t VALUES (1, 10), (1, 5), (2, 7)")
        conn.execute("CREATE MATERIALIZED VIEW totals AS SELECT k, sum(v) AS s FROM t GROUP BY k")
    wait_for(lambda: mv_matches(envd, [(1, 15), (2, 7)]), "the view")
    [(name, info)] = replica_files(envd.data_dir).items()
    assert re.fullmatch(r"quickstart-replica-\w+-gen-1", name), name
    pid, port = int(info["pid"]), int(info["port"])
    assert alive(pid)
    assert builds(port, name) == 1  # built once (reconciliation at boot did not touch it)

    # The replica process crashes: environmentd restarts it (counted in its metrics) and
    # its dataflow is replayed to the new process.
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: (
            metric(envd, f'twinstream_replica_process_restarts{{name="{name}"}}') == 1
            and metric(envd, f'twinstream_replica_process_up{{name="{name}"}}') == 1
        ),
        "the replica's restart",
    )
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (4, 4)")
    wait_for(lambda: mv_matches(envd, [(1, 15), (2, 7), (4, 4)]), "the view after a crash")
    info = replica_files(envd.data_dir)[name]
    assert int(info["pid"]) != pid
    pid, port = int(info["pid"]), int(info["port"])

    # environmentd crashes: the replica keeps running; the next one adopts it, reconciles
    # (keeps its view's dataflow, drops one no catalog item asks for).
    envd.kill9()
    assert alive(pid)
    asyncio.run(create_stale(port, name))
    envd.start()
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (2, 1), (3, 3)")
    wait_for(lambda: mv_matches(envd, [(1, 15), (2, 8), (3, 3), (4, 4)]), "the view after restart")
    assert replica_files(envd.data_dir)[name]["pid"] == pid  # adopted, not restarted
    wait_for(lambda: dataflows(port, name) == 1, "the stale dataflow to be dropped")
    assert builds(port, name) == 2  # the view's dataflow was kept, not rebuilt (+ the stale)

    # A clean stop ends the generation's replica processes.
    assert envd.stop() == 0
    wait_for(lambda: not alive(pid), "the replica process to exit")


def replica_status(envd: EnvironmentdProcess) -> list[tuple[Any, ...]]:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        return conn.execute(
            "SELECT name || '-gen-1', status, restarts FROM mz_catalog.mz_cluster_replica_statuses"
        ).fetchall()


def only_replica(envd: EnvironmentdProcess) -> tuple[str, int, int]:
    """(name, pid, port) of the generation's one replica process."""
    [(name, info)] = wait_for(lambda: replica_files(envd.data_dir), "the replica").items()
    return name, int(info["pid"]), int(info["port"])


def test_restart_keeps_every_dataflow(envd: EnvironmentdProcess) -> None:
    """Reconciliation after an environmentd crash keeps each dataflow: counted."""
    views = {
        "agg": "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k",
        "big": "SELECT k, v FROM t WHERE v > 5",
        "pairs": "SELECT a.k, b.v FROM t a JOIN t b ON a.k = b.k",
    }
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (k int, v int)")
        conn.execute("INSERT INTO t VALUES (1, 10), (1, 5), (2, 7)")
        for name, sql in views.items():
            conn.execute(f"CREATE MATERIALIZED VIEW {name} AS {sql}")
        conn.execute("CREATE INDEX t_k ON t (k)")
        conn.execute("CREATE DEFAULT INDEX ON agg")
    name, pid, port = only_replica(envd)
    wait_for(lambda: dataflows(port, name) == 5, "3 views + 2 indexes on the replica")
    built = builds(port, name)
    assert built == 5

    envd.kill9()
    envd.start()
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (3, 9)")

        def current() -> bool:
            for view, sql in views.items():
                got = sorted(conn.execute(f"SELECT * FROM {view}").fetchall())
                if got != sorted(conn.execute(sql).fetchall()):
                    return False
            return (3, 1, 9) in conn.execute("SELECT * FROM agg").fetchall()

        wait_for(current, "the views after the restart")
    assert replica_files(envd.data_dir)[name]["pid"] == pid  # adopted
    assert dataflows(port, name) == 5
    assert builds(port, name) == built  # none rebuilt


async def _history(
    data_dir: Path, shard_id: str, since: int, upper: int
) -> list[tuple[tuple[Any, ...], int, int]]:
    """Every update of a shard in [since, upper), with its time (held by the test)."""
    from twinstream.persist import PersistClient, Progress, Updates

    client = PersistClient.from_urls(
        f"sqlite://{data_dir / 'consensus.db'}", f"file://{data_dir / 'blob'}"
    )
    try:
        shard = client.open(shard_id)
        out = [(row, since, d) for row, d in await shard.snapshot(since)]
        if upper > since + 1:
            async for event in shard.listen(since, reader_id="test-history"):
                if isinstance(event, Updates):
                    out += [u for u in event.updates if u[1] < upper]
                elif isinstance(event, Progress) and event.upper >= upper:
                    break
        return out
    finally:
        await client.close()


async def _hold(data_dir: Path, *shard_ids: str) -> int:
    """Critical holds on the shards (their history stays readable); the largest since."""
    from twinstream.persist import PersistClient

    client = PersistClient.from_urls(
        f"sqlite://{data_dir / 'consensus.db'}", f"file://{data_dir / 'blob'}"
    )
    try:
        sinces = []
        for shard_id in shard_ids:
            shard = client.open(shard_id)
            await shard.critical_reader("test-hold", None)
            sinces.append(await shard.since())
        return max(sinces)
    finally:
        await client.close()


def test_replica_killed_mid_write_leaves_the_output_exact(envd: EnvironmentdProcess) -> None:
    """A replica process killed -9 while inserts stream in: environmentd reports it down and
    restarts it (metrics), the restarted process resumes from the output shard's upper, and
    at every time of the output shard's history it equals the query over the table at that
    time — nothing lost, nothing written twice."""
    import threading

    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE w (k int, v int)")
        conn.execute(
            "CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS n, sum(v) AS s FROM w GROUP BY k"
        )
        [(table_id,)] = conn.execute("SELECT id FROM mz_catalog.mz_tables WHERE name = 'w'")
        [(mv_id,)] = conn.execute(
            "SELECT id FROM mz_catalog.mz_materialized_views WHERE name = 'agg'"
        ).fetchall()
    table_shard, mv_shard = f"table-{table_id}", f"mv-{mv_id}"
    since = asyncio.run(_hold(envd.data_dir, table_shard, mv_shard))
    name, pid, _port = only_replica(envd)

    inserted = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal inserted
        with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO w VALUES (%s, %s)", (inserted % 7, inserted))
                inserted += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: inserted >= 30, "some inserts")
        os.kill(pid, signal.SIGKILL)  # mid-stream: the sink is appending
        wait_for(
            lambda: (
                metric(envd, f'twinstream_replica_process_restarts{{name="{name}"}}') == 1
                and metric(envd, f'twinstream_replica_process_up{{name="{name}"}}') == 1
            ),
            "the replica's restart",
        )
        wait_for(lambda: replica_status(envd) == [(name, "online", 1)], "its status row")
        wait_for(lambda: inserted >= 60, "more inserts after the restart")
    finally:
        stop.set()
        thread.join()
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        want = sorted(conn.execute("SELECT k, count(*), sum(v) FROM w GROUP BY k").fetchall())
        wait_for(lambda: sorted(conn.execute("SELECT * FROM agg").fetchall()) == want, "agg")
        assert sum(n for _k, n, _s in want) == inserted

    async def uppers() -> tuple[int, int]:
        from twinstream.persist import PersistClient

        client = PersistClient.from_urls(
            f"sqlite://{envd.data_dir / 'consensus.db'}", f"file://{envd.data_dir / 'blob'}"
        )
        try:
            return await client.open(table_shard).upper(), await client.open(mv_shard).upper()
        finally:
            await client.close()

    table_upper, mv_upper = asyncio.run(uppers())
    upper = min(table_upper, mv_upper)
    table = asyncio.run(_history(envd.data_dir, table_shard, since, upper))
    output = asyncio.run(_history(envd.data_dir, mv_shard, since, upper))
    times = sorted({t for _r, t, _d in table} | {t for _r, t, _d in output})
    rows: dict[tuple[Any, ...], int] = {}
    out: dict[tuple[Any, ...], int] = {}
    by_time_t: dict[int, list[tuple[tuple[Any, ...], int]]] = {}
    by_time_o: dict[int, list[tuple[tuple[Any, ...], int]]] = {}
    for row, t, d in table:
        by_time_t.setdefault(t, []).append((row, d))
    for row, t, d in output:
        by_time_o.setdefault(t, []).append((row, d))
    for t in times:
        for row, d in by_time_t.get(t, []):
            rows[row] = rows.get(row, 0) + d
        for row, d in by_time_o.get(t, []):
            out[row] = out.get(row, 0) + d
        expected: dict[tuple[Any, ...], int] = {}
        groups: dict[int, list[int]] = {}
        for (k, v), n in rows.items():
            assert n > 0
            groups.setdefault(k, []).extend([v] * n)
        for k, vs in groups.items():
            expected[(k, len(vs), sum(vs))] = 1
        got = {r: n for r, n in out.items() if n}
        assert got == expected, f"output at time {t} differs: {got} vs {expected}"
    assert len(times) > 10
