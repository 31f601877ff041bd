"""Catch-up converges under steady DDL on the leader (doc/design/zero-downtime.md, "DDL check
and the race"). Before, every DDL check that saw a change restarted the stability period, so
with DDL more often than the check interval a new generation never became ReadyToPromote (the
demo's third upgrade waited 258 s for a gap in its DDL client)."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from twinstream.testing.clients import leader_status, post, sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess

#: Pause between the DDL client's statements: far below the DDL check interval below.
DDL_PAUSE_S = 0.15


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "env"


def ddl_storm(env: EnvironmentdProcess, stop: threading.Event, done: list[int]) -> None:
    """Create a table, fill it, create a view over it, drop both — until `stop`."""
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        k = 0
        while not stop.is_set():
            k += 1
            for stmt in (
                f"CREATE TABLE storm{k} (x int)",
                f"INSERT INTO storm{k} VALUES ({k})",
                f"CREATE MATERIALIZED VIEW storm_v{k} AS SELECT count(*) AS c FROM storm{k}",
                f"DROP MATERIALIZED VIEW storm_v{k - 1}" if k > 1 else None,
                f"DROP TABLE storm{k - 1}" if k > 1 else None,
            ):
                if stmt is not None:
                    conn.execute(stmt)
                stop.wait(DDL_PAUSE_S)  # the storm's pace, not synchronization
            done.append(k)


def test_catch_up_converges_under_steady_ddl(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(
        data_dir,
        generation=2,
        extra_args=[
            "--system-param", "with_0dt_deployment_ddl_check_interval=1s",
            "--system-param", "with_0dt_caught_up_check_stability_period=1s",
        ],
    )  # fmt: skip
    old.start()
    stop = threading.Event()
    done: list[int] = []
    storm = threading.Thread(target=ddl_storm, args=(old, stop, done), daemon=True)
    try:
        sql(old, "CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)")
        sql(old, "CREATE MATERIALIZED VIEW mv_a AS SELECT sum(x) AS s FROM a")
        storm.start()
        wait_for("the DDL storm runs", lambda: len(done) >= 1, old)
        new.start()
        ready = lambda: leader_status(new) == "ReadyToPromote"  # noqa: E731
        wait_for("ReadyToPromote under steady DDL", ready, new)
        adopted = new.log_path.read_text().count("re-bootstrapping read-only in place")
        assert adopted >= 1, "DDL happened during catch-up and was adopted in place"
        stop.set()
        storm.join(timeout=30)
        assert not storm.is_alive()
        last = done[-1]
        assert post(new.internal_http_port, "/api/leader/promote", b"")[0] == 200
        wait_for("IsLeader", lambda: leader_status(new) == "IsLeader", new)
        # What the storm left (the last table and view) is on the new leader, hydrated.
        assert sql(new, f"SELECT x FROM storm{last}")[0] == [(last,)]
        assert sql(new, f"SELECT c FROM storm_v{last}")[0] == [(1,)]
        assert sql(new, "SELECT s FROM mv_a")[0] == [(1,)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            sql(new, f"SELECT * FROM storm{last - 1}")
    finally:
        stop.set()
        old.stop()
        new.stop()
