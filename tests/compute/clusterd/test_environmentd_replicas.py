"""environmentd with `--replica-processes`: each replica of the generation runs as a
`clusterd` process named `<cluster>-replica-<id>-gen-<G>`; materialized views are maintained
there; an environmentd killed -9 leaves it running and its successor adopts it and reconciles
(the dataflow is kept, not rebuilt); a clean environmentd stop ends it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
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

DEADLINE_S = 120.0


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


def wait_for(cond: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
    env = EnvironmentdProcess(tmp_path, extra_args=["--replica-processes"])
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
