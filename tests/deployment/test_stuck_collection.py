"""A collection stuck on the old leader is ignored by the caught-up check past the cutoff, with
real processes.

The old generation maintains a materialized view on cluster `c`; its replica is then frozen
(SIGSTOP), so the view's output shard stops advancing: the live frontier the leader publishes is
stuck. The new generation's own replica of `c` is frozen as soon as the generation has booted
(its bootstrap waits for the dataflow to be installed, not hydrated; the view's cross join takes
seconds to hydrate), so the view never hydrates there either — the case the cutoff is for (the
cluster is down on both sides; waiting for it would block the upgrade forever). Persist is on
PostgreSQL: a frozen process may hold SQLite's single write lock. With a cutoff far above the view's
age the new generation stays CatchingUp ("Initializing") and logs the view as a laggard round
after round; with a small cutoff it logs the view as ignored and reaches ReadyToPromote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from twinstream.testing.clients import sql
from twinstream.testing.environmentd import EnvironmentdProcess, replica_processes
from twinstream.testing.http import http, status

DEADLINE_S = 60.0
VIEW = "twinstream.public.mv"
#: Rounds of the caught-up check (200 ms apart by default) the control watches: well past the
#: 2 s stability period after which a caught-up generation would be ReadyToPromote.
CONTROL_ROUNDS = 4
#: Rows of `t`: the view's cross join (ROWS² pairs) takes seconds to hydrate.
ROWS = 3000


def progress(env: EnvironmentdProcess) -> dict[str, object]:
    code, body = http(env.internal_http_port, "GET", "/api/deployment/progress")
    assert code == 200, body
    out: dict[str, object] = json.loads(body)
    return out


def log_text(env: EnvironmentdProcess) -> str:
    return env.log_path.read_text(errors="replace")


def wait_until(env: EnvironmentdProcess, what: str, cond: object) -> None:
    assert callable(cond)
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, f"never {what}:\n{env.log_tail()}"
        time.sleep(0.05)


def stopped(pid: int) -> bool:
    """The process is in state T (stopped by a signal)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def is_c_replica(name: str, generation: int) -> bool:
    return name.startswith("c-replica-") and name.endswith(f"-gen-{generation}")


def freeze_c_replica(data_dir: Path, generation: int) -> int:
    """SIGSTOP the generation's replica process of cluster `c`; its pid."""
    found = [
        pid
        for name, pid in replica_processes(data_dir, generation).items()
        if is_c_replica(name, generation)
    ]
    assert len(found) == 1, found
    os.kill(found[0], signal.SIGSTOP)
    deadline = time.monotonic() + DEADLINE_S
    while not stopped(found[0]):  # the signal is delivered asynchronously
        assert time.monotonic() < deadline, f"clusterd {found[0]} never stopped"
        time.sleep(0.01)
    return found[0]


def hydrated_on(data_dir: Path, generation: int) -> bool:
    """The replica of `c` logged that it hydrated the view."""
    logs = (data_dir / "clusterd").glob(f"c-replica-*-gen-{generation}.log")
    return any(" hydrated at as_of " in p.read_text(errors="replace") for p in logs)


def thaw(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def generation_on(pg_url: str, data_dir: Path, generation: int, *args: str) -> EnvironmentdProcess:
    """Persist on PostgreSQL: a frozen replica may hold SQLite's one write lock, and then
    nobody could write (the leader's group commit failed with "database is locked")."""
    return EnvironmentdProcess(
        data_dir,
        generation=generation,
        consensus_url=pg_url,
        blob_url=pg_url,
        extra_args=list(args),
    )


def cutoff(value: str) -> tuple[str, str]:
    return ("--system-param", f"with_0dt_caught_up_check_cutoff={value}")


def start_frozen(env: EnvironmentdProcess) -> int:
    """Start `env` and freeze its replica of `c` at once: the view's dataflow is installed
    (bootstrap waits for that) but far from hydrated (its cross join takes seconds)."""
    env.start()
    pid = freeze_c_replica(env.data_dir, env.generation)
    assert not hydrated_on(env.data_dir, env.generation), "the view hydrated before the freeze"
    return pid


def test_stuck_collection_ignored_by_cutoff(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "env"
    old = generation_on(pg_url, data_dir, 1)
    frozen: list[int] = []
    envs = [old]
    old.start()
    try:
        sql(
            old,
            "CREATE TABLE t (a int)",
            f"INSERT INTO t SELECT generate_series(1, {ROWS})",
            "CREATE CLUSTER c REPLICAS (r1 (SIZE '1'))",
            "CREATE MATERIALIZED VIEW mv IN CLUSTER c AS SELECT count(*) AS n FROM t, t AS u",
        )
        wait_until(
            old, "served the view", lambda: sql(old, "SELECT n FROM mv")[0] == [(ROWS * ROWS,)]
        )
        # Freeze the leader's replica of c: the view's frontier stops advancing (stuck).
        frozen.append(freeze_c_replica(data_dir, 1))
        sql(old, "INSERT INTO t VALUES (0)")  # the table moves on; the view does not

        # Control: a cutoff far above the view's age -> the view is a laggard, round after
        # round, and the generation stays CatchingUp.
        patient = generation_on(pg_url, data_dir, 2, *cutoff("10min"))
        envs.append(patient)
        frozen.append(start_frozen(patient))
        wait_until(
            patient,
            f"{CONTROL_ROUNDS} caught-up rounds",
            lambda: (
                log_text(patient).count(f"not caught up: {VIEW}: not hydrated") >= CONTROL_ROUNDS
            ),
        )
        assert status(patient) == "Initializing", patient.log_tail()
        clusters = progress(patient)["clusters"]
        assert isinstance(clusters, dict)
        assert clusters["c"]["hydrated"] == 0, clusters
        assert f"ignored: {VIEW}" not in log_text(patient)
        thaw(frozen[-1:])
        patient.stop()

        # A small cutoff: the view's live frontier is older than it -> ignored, and the
        # generation reaches ReadyToPromote although the view is not hydrated here.
        hasty = generation_on(pg_url, data_dir, 3, *cutoff("2s"))
        envs.append(hasty)
        frozen.append(start_frozen(hasty))
        wait_until(hasty, "ReadyToPromote", lambda: status(hasty) == "ReadyToPromote")
        text = log_text(hasty)
        assert f"ignored: {VIEW}: stuck" in text, hasty.log_tail()
        assert "caught up with the leader" in text
        clusters = progress(hasty)["clusters"]
        assert isinstance(clusters, dict)
        assert clusters["c"]["hydrated"] == 0, clusters
        assert not hydrated_on(data_dir, 3)
        assert status(old) == "IsLeader"
    finally:
        thaw(frozen)
        for env in reversed(envs):
            env.stop()


def test_cluster_without_replicas_ignored(tmp_path: Path, pg_url: str) -> None:
    """A view on a cluster whose replica was dropped: no replica here hydrates it, so the
    check ignores it (a cluster with no replicas is ignored) — with the default 10 min cutoff
    its recent live frontier would otherwise hold up the upgrade forever."""
    data_dir = tmp_path / "env"
    old = generation_on(pg_url, data_dir, 1)
    new = generation_on(pg_url, data_dir, 2)
    old.start()
    try:
        sql(
            old,
            "CREATE TABLE t (a int)",
            "INSERT INTO t VALUES (1), (2)",
            "CREATE CLUSTER c REPLICAS (r1 (SIZE '1'))",
            "CREATE MATERIALIZED VIEW mv IN CLUSTER c AS SELECT count(*) AS n FROM t",
        )
        wait_until(old, "served the view", lambda: sql(old, "SELECT n FROM mv")[0] == [(2,)])
        sql(old, "DROP CLUSTER REPLICA c.r1", "INSERT INTO t VALUES (3)")
        new.start()
        wait_until(new, "ReadyToPromote", lambda: status(new) == "ReadyToPromote")
        text = log_text(new)
        assert f"{VIEW}: not hydrated" not in text, new.log_tail()
        assert f"ignored: {VIEW}" not in text  # left out, not judged stuck
    finally:
        new.stop()
        old.stop()
