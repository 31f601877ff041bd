"""Kill the replica during ingestion: with `--replica-processes`, materialized views over a
COUNTER and a KEY VALUE (UPSERT) source are maintained in a `clusterd` process; kill -9 of
that process while the sources keep ingesting loses and duplicates nothing (the restarted
replica rebuilds from the source shards; ingestion itself never stopped)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinstream.testing.clients import sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess

KEYS = 8


def replica_pids(data_dir: Path) -> list[int]:
    out = []
    for p in (data_dir / "clusterd").glob("*.json"):
        with contextlib.suppress(ValueError, OSError, KeyError):
            out.append(int(json.loads(p.read_text())["pid"]))
    return out


@pytest.fixture
def env(data_dir: Path) -> Iterator[EnvironmentdProcess]:
    e = EnvironmentdProcess(data_dir, extra_args=["--replica-processes"])
    e.start()
    try:
        yield e
    finally:
        e.stop()
        for pid in replica_pids(data_dir):  # whatever a failed test left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def counted(env: EnvironmentdProcess) -> int:
    """The view's newest counter value, checked: every value 1..hi exactly once."""
    [[(n, distinct, lo, hi)]] = sql(env, "SELECT n, d, lo, hi FROM counted")
    if n == 0:
        return 0
    assert n == distinct == hi and lo == 1, f"dup or gap in the view: {(n, distinct, lo, hi)}"
    return int(hi)  # type: ignore[call-overload]


def keyed(env: EnvironmentdProcess) -> tuple[int, int]:
    [[(n, distinct)]] = sql(env, "SELECT n, d FROM keyed")
    assert n == distinct, f"a key has two rows in the view: {(n, distinct)}"
    return int(n), int(distinct)  # type: ignore[call-overload]


def test_kill_replica_during_ingestion(env: EnvironmentdProcess, data_dir: Path) -> None:
    sql(
        env,
        "CREATE SOURCE c FROM LOAD GENERATOR COUNTER (TICK INTERVAL '10ms')",
        f"CREATE SOURCE kv FROM LOAD GENERATOR KEY VALUE (KEYS {KEYS}, TICK INTERVAL '10ms') "
        "ENVELOPE UPSERT",
        "CREATE MATERIALIZED VIEW counted AS SELECT count(*) AS n, count(DISTINCT counter) AS d, "
        "min(counter) AS lo, max(counter) AS hi FROM c",
        "CREATE MATERIALIZED VIEW keyed AS SELECT count(*) AS n, count(DISTINCT key) AS d FROM kv",
    )
    wait_for("the views follow", lambda: counted(env) >= 20 and keyed(env)[0] == KEYS, env)
    [pid] = replica_pids(data_dir)
    os.kill(pid, signal.SIGKILL)
    wait_for("a new replica process", lambda: replica_pids(data_dir) not in ([], [pid]), env)
    at_kill = counted(env)
    wait_for("the views move on", lambda: counted(env) >= at_kill + 20, env)
    assert keyed(env) == (KEYS, KEYS)
    # the view is never ahead of the source itself (read afterwards)
    hi = counted(env)
    [[(n,)]] = sql(env, "SELECT count(DISTINCT counter) FROM c")
    assert int(n) >= hi  # type: ignore[call-overload]
