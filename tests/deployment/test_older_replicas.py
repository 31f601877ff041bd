"""The new leader removes the replica processes of older generations (reference: "the new
leader removes replicas of older generations"), with real `clusterd` processes: generation 1
is killed -9 after generation 2 caught up, so its replica outlives it and only generation 2's
sweep can stop it; a process named for a HIGHER generation is never touched."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from twinstream.orchestrator.processes import generation_of, pid_alive
from twinstream.testing.environmentd import EnvironmentdProcess
from twinstream.testing.http import http, status
from twinstream.testing.waiting import wait_for

REPLICAS = ["--replica-processes"]


def replica_pids(data_dir: Path) -> dict[str, int]:
    """Replica process name -> pid, from the orchestrators' ports files."""
    out = {}
    for p in (data_dir / "clusterd").glob("*.json"):
        with contextlib.suppress(ValueError, OSError, KeyError):
            out[p.stem] = int(json.loads(p.read_text())["pid"])
    return out


def of_generation(pids: dict[str, int], generation: int) -> dict[str, int]:
    return {name: pid for name, pid in pids.items() if generation_of(name) == generation}


def test_new_leader_removes_older_generations_replicas_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "env"
    old = EnvironmentdProcess(data_dir, generation=1, extra_args=REPLICAS)
    new = EnvironmentdProcess(data_dir, generation=2, extra_args=REPLICAS)
    higher: subprocess.Popen[bytes] | None = None
    started: set[int] = set()
    try:
        old.start()
        with psycopg.connect(old.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (a int)")
            conn.execute("INSERT INTO t VALUES (1)")
        gen1 = wait_for(lambda: of_generation(replica_pids(data_dir), 1), "generation 1's replica")
        started |= set(gen1.values())
        # A process named for generation 3 (as if a newer rollout had started already): its
        # command line carries its name, like a clusterd's.
        name3 = "quickstart-replica-u9-gen-3"
        higher = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", name3],
            start_new_session=True,
        )
        started.add(higher.pid)
        (data_dir / "clusterd" / f"{name3}.json").write_text(
            json.dumps({"pid": higher.pid, "port": 1, "name": name3})
        )

        new.start()
        wait_for(lambda: status(new) == "ReadyToPromote", "ReadyToPromote")
        gen2 = wait_for(lambda: of_generation(replica_pids(data_dir), 2), "generation 2's replica")
        started |= set(gen2.values())
        old.kill9()  # its replica keeps running (own session): only the new leader can stop it
        assert all(pid_alive(pid) for pid in gen1.values())

        assert http(new.internal_http_port, "POST", "/api/leader/promote")[0] == 200
        wait_for(lambda: status(new) == "IsLeader", "IsLeader")
        wait_for(
            lambda: (
                not any(pid_alive(pid) for pid in gen1.values())
                and of_generation(replica_pids(data_dir), 1) == {}  # and its ports file gone
            ),
            "generation 1's replica to be stopped",
        )
        assert all(pid_alive(pid) for pid in gen2.values()), "our own replicas keep running"
        assert pid_alive(higher.pid), "a higher generation's process is never touched"
        assert higher.poll() is None
        assert "removed replicas of older generations" in new.log_tail(20_000)
        with psycopg.connect(new.conninfo(), autocommit=True) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            assert conn.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (2,)]
    finally:
        new.stop()
        old.stop()
        if higher is not None:
            higher.kill()
            higher.wait()
        for pid in started | set(replica_pids(data_dir).values()):  # whatever a failure left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
