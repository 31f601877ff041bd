"""A frozen replica process (SIGSTOP) under a real environmentd: the compute status tables keep
answering and refreshing — `mz_cluster_replica_statuses` shows the replica `offline` with the
reason, `mz_hydration_statuses` not hydrated — and an indexed read is answered by the engine;
thawed (SIGCONT), it is `online` and hydrated again and its frontier advances. Persist is on
PostgreSQL: a frozen process may hold SQLite's one write lock."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess, replica_processes
from twinstream.testing.waiting import wait_for


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture
def envd(tmp_path: Path, pg_url: str) -> Iterator[EnvironmentdProcess]:
    env = EnvironmentdProcess(tmp_path, consensus_url=pg_url, blob_url=pg_url)
    env.start()
    try:
        yield env
    finally:
        for pid in replica_processes(tmp_path).values():  # never leave one stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        env.stop()
        for pid in replica_processes(tmp_path).values():  # whatever a failed test left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def query(envd: EnvironmentdProcess, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(envd.conninfo(), autocommit=True, connect_timeout=30) as conn:
        return conn.execute(sql).fetchall()


def execute(envd: EnvironmentdProcess, sql: str) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True, connect_timeout=30) as conn:
        conn.execute(sql)


def replica_state(envd: EnvironmentdProcess) -> tuple[str, str | None, bool | None, int]:
    """(status, reason, the index hydrated?, its write frontier) of the one replica."""
    [(status, reason)] = query(
        envd, "SELECT status, reason FROM mz_catalog.mz_cluster_replica_statuses"
    )
    hydrated = query(
        envd,
        "SELECT h.hydrated FROM mz_catalog.mz_hydration_statuses h "
        "JOIN mz_catalog.mz_indexes i ON i.id = h.object_id WHERE i.name = 't_k'",
    )
    front = query(
        envd,
        "SELECT f.write_frontier FROM mz_catalog.mz_cluster_replica_frontiers f "
        "JOIN mz_catalog.mz_indexes i ON i.id = f.object_id WHERE i.name = 't_k'",
    )
    return (
        status,
        reason,
        hydrated[0][0] if hydrated else None,
        int(front[0][0]) if front else 0,
    )


def test_frozen_replica_shows_offline_and_recovers(envd: EnvironmentdProcess) -> None:
    execute(envd, "CREATE TABLE t (k int, v int)")
    execute(envd, "INSERT INTO t VALUES (1, 10), (2, 20)")
    execute(envd, "CREATE INDEX t_k ON t (k)")
    wait_for(lambda: replica_state(envd)[:3] == ("online", None, True), "the index to hydrate")
    [pid] = replica_processes(envd.data_dir, 1).values()

    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: stopped(pid), "the signal to be delivered")
        # The status tables keep refreshing (each query returns; the loop is a deadline).
        state = wait_for(
            lambda: (s := replica_state(envd))[0] == "offline" and s[2] is False and s,
            "the frozen replica to show offline and not hydrated",
        )
        assert state[1] is not None and "not answering" in state[1], state
        frozen_at = state[3]
        # An indexed read is answered without the replica.
        assert sorted(query(envd, "SELECT * FROM t WHERE k = 1")) == [(1, 10)]
        execute(envd, "INSERT INTO t VALUES (3, 30)")
    finally:
        os.kill(pid, signal.SIGCONT)

    wait_for(
        lambda: (s := replica_state(envd))[:3] == ("online", None, True) and s[3] > frozen_at,
        "the thawed replica to be online, hydrated and advancing",
    )
    assert sorted(query(envd, "SELECT * FROM t")) == [(1, 10), (2, 20), (3, 30)]


def test_restart_adopting_a_frozen_replica_is_not_held_up(envd: EnvironmentdProcess) -> None:
    """environmentd killed -9, its replica frozen: the successor adopts the frozen process and
    still becomes ready and serves (its bootstrap re-creates the index's dataflow: one bound
    for that replica, not a connect retried for 60 s); thawed, the replica is online again."""
    execute(envd, "CREATE TABLE t (k int, v int)")
    execute(envd, "INSERT INTO t VALUES (1, 10), (2, 20)")
    execute(envd, "CREATE INDEX t_k ON t (k)")
    wait_for(lambda: replica_state(envd)[:3] == ("online", None, True), "the index to hydrate")
    [pid] = replica_processes(envd.data_dir, 1).values()
    envd.kill9()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: stopped(pid), "the signal to be delivered")
        envd.start()  # ready, within its start-up deadline
        execute(envd, "INSERT INTO t VALUES (3, 30)")
        assert sorted(query(envd, "SELECT * FROM t WHERE k = 3")) == [(3, 30)]
        state = wait_for(
            lambda: (s := replica_state(envd))[0] == "offline" and s,
            "the adopted frozen replica to show offline",
        )
        assert state[1] is not None and "not answering" in state[1], state
        assert replica_processes(envd.data_dir, 1) == {"quickstart-replica-u1-gen-1": pid}
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: replica_state(envd)[:3] == ("online", None, True), "the thawed replica online")
    execute(envd, "INSERT INTO t VALUES (4, 40)")
    assert sorted(query(envd, "SELECT * FROM t WHERE k = 4")) == [(4, 40)]
