"""The zero-downtime flow with real processes: the old generation serves, the new one boots
read-only and follows, DDL on the old appears on the new, promote fences the old (exit 0
within a second), and the new one serves reads and writes with every row present."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest

from twinstream.testing.clients import sql
from twinstream.testing.environmentd import EnvironmentdProcess
from twinstream.testing.http import http, status
from twinstream.testing.locations import Location

DEADLINE_S = 30.0


def wait_status(env: EnvironmentdProcess, want: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if status(env) == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"status never became {want}; log:\n{env.log_tail()}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "env"


def on(location: Location, data_dir: Path, generation: int) -> EnvironmentdProcess:
    """A generation of the environment whose consensus and blob are `location`."""
    return EnvironmentdProcess(
        data_dir,
        generation=generation,
        consensus_url=location.consensus_url,
        blob_url=location.blob_url,
    )


def metrics(env: EnvironmentdProcess) -> str:
    code, body = http(env.internal_http_port, "GET", "/metrics")
    assert code == 200
    return body


def test_basic_upgrade_flow(data_dir: Path, location: Location) -> None:
    old = on(location, data_dir, 1)
    new = on(location, data_dir, 2)
    old.start()
    try:
        sql(old, "CREATE TABLE t (a int)", "INSERT INTO t VALUES (1), (2)")
        assert status(old) == "IsLeader"
        new.start()
        assert status(new) == "Initializing"
        # Writes and DDL on the old generation appear on the new one.
        sql(
            old,
            "INSERT INTO t VALUES (3)",
            "CREATE TABLE u (b text)",
            "INSERT INTO u VALUES ('x')",
            "CREATE TEMPORARY TABLE tmp (z int)",
        )
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            sql(new, "INSERT INTO t VALUES (99)")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            sql(new, "CREATE TABLE nope (a int)")
        code, body = http(new.internal_http_port, "POST", "/api/leader/promote")
        assert code in (200, 400)
        wait_status(new, "ReadyToPromote")
        # /metrics while catching up: state, per-collection lag and hydration.
        body = metrics(new)
        assert 'twinstream_deployment_state{state="ReadyToPromote"} 1' in body
        assert re.search(r'twinstream_collection_lag_ms\{collection="[^"]*\bt"\} \d+', body)
        assert re.search(r'twinstream_collection_hydrated\{collection="[^"]*\bu"\} 1', body)
        assert 'twinstream_fence_events_total{event="fenced_predecessor"} 0' in body
        assert sql(new, "SELECT count(*) FROM t")[0] == [(3,)]
        assert sql(new, "SELECT b FROM u")[0] == [("x",)]
        sql(old, "INSERT INTO t VALUES (4)")  # acknowledged just before promotion
        code, body = http(new.internal_http_port, "POST", "/api/leader/promote")
        assert (code, json.loads(body)) == (200, {"result": "Success"})
        wait_status(new, "IsLeader")
        promoted = time.monotonic()
        assert old.proc is not None
        old.proc.wait(timeout=10)
        assert old.proc.returncode == 0, old.log_tail()
        assert time.monotonic() - promoted < 5.0
        assert "fenced out by generation 2" in old.log_tail()
        # /metrics after the promotion: state, promotion duration, the fence event.
        body = metrics(new)
        assert 'twinstream_deployment_state{state="IsLeader"} 1' in body
        assert re.search(r"^twinstream_promotion_duration_ms \d+\.\d+$", body, re.M)
        assert 'twinstream_fence_events_total{event="fenced_predecessor"} 1' in body
        sql(new, "INSERT INTO t VALUES (5)")
        rows = sql(new, "SELECT a FROM t ORDER BY a")[0]
        assert rows == [(1,), (2,), (3,), (4,), (5,)], "every acknowledged row is present"
        # promote is idempotent once leader; skip-catchup is a no-op (204)
        assert http(new.internal_http_port, "POST", "/api/leader/promote")[0] == 200
        assert http(new.internal_http_port, "POST", "/api/leader/skip-catchup")[0] == 204
    finally:
        old.stop()
        new.stop()


def test_lower_generation_exits_zero(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir, generation=3)
    env.start()
    try:
        sql(env, "CREATE TABLE x (a int)")
    finally:
        env.stop()
    stale = EnvironmentdProcess(data_dir, generation=2)
    with pytest.raises(Exception, match="exited with 0"):
        stale.start()
    assert "this deployment has been fenced out" in stale.log_tail()


def test_unknown_route_and_method(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir, generation=1)
    env.start()
    try:
        assert http(env.internal_http_port, "GET", "/api/nope")[0] == 404
        assert http(env.internal_http_port, "GET", "/api/leader/promote")[0] == 405
        assert http(env.internal_http_port, "GET", "/api/livez")[0] == 200
        assert http(env.internal_http_port, "GET", "/api/readyz")[0] == 200
        code, body = http(env.internal_http_port, "GET", "/metrics")
        assert code == 200 and 'twinstream_deployment_state{state="IsLeader"} 1' in body
    finally:
        env.stop()


def test_skip_catchup_and_token(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(
        data_dir,
        generation=2,
        extra_args=[
            "--internal-api-token",
            "sekrit",
            "--system-param",
            "with_0dt_caught_up_check_stability_period=1h",
        ],
    )
    old.start()
    try:
        sql(old, "CREATE TABLE t (a int)")
        new.start()
        assert http(new.internal_http_port, "POST", "/api/leader/skip-catchup")[0] == 401
        deadline = time.monotonic() + DEADLINE_S
        while True:
            code, _ = http(new.internal_http_port, "POST", "/api/leader/skip-catchup", "sekrit")
            if code == 204:
                break
            assert code == 400 and time.monotonic() < deadline
            time.sleep(0.05)
        wait_status(new, "ReadyToPromote")  # without the 1 h stability period
        assert http(new.internal_http_port, "POST", "/api/leader/promote")[0] == 401
        code, _ = http(new.internal_http_port, "POST", "/api/leader/promote", "sekrit")
        assert code == 200
        wait_status(new, "IsLeader")
    finally:
        old.stop()
        new.stop()


def test_two_successors_promoted_at_once_higher_wins(data_dir: Path, location: Location) -> None:
    g1 = on(location, data_dir, 1)
    g2 = on(location, data_dir, 2)
    g3 = on(location, data_dir, 3)
    g1.start()
    try:
        sql(g1, "CREATE TABLE t (a int)", "INSERT INTO t VALUES (1)")
        g2.start()
        g3.start()
        wait_status(g2, "ReadyToPromote")
        wait_status(g3, "ReadyToPromote")
        threads = [
            threading.Thread(
                target=http, args=(g.internal_http_port, "POST", "/api/leader/promote")
            )
            for g in (g2, g3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_status(g3, "IsLeader")
        for g in (g1, g2):
            assert g.proc is not None
            g.proc.wait(timeout=15)
            assert g.proc.returncode == 0, g.log_tail()
        sql(g3, "INSERT INTO t VALUES (2)")
        assert sql(g3, "SELECT a FROM t ORDER BY a")[0] == [(1,), (2,)]
    finally:
        for g in (g1, g2, g3):
            g.stop()


def test_ddl_on_old_during_catch_up_is_hydrated(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    try:
        sql(old, "CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)")
        new.start()
        wait_status(new, "ReadyToPromote")
        # DDL after the last check, right before promotion: the promotion re-checks.
        sql(old, "CREATE TABLE late (y int)", "INSERT INTO late VALUES (7)", "DROP TABLE a")
        assert http(new.internal_http_port, "POST", "/api/leader/promote")[0] == 200
        wait_status(new, "IsLeader")
        assert sql(new, "SELECT y FROM late")[0] == [(7,)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            sql(new, "SELECT * FROM a")
    finally:
        old.stop()
        new.stop()


def test_kill_new_during_catch_up_and_during_promoting(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    try:
        sql(old, "CREATE TABLE t (a int)", "INSERT INTO t VALUES (1)")
        new.start()
        new.kill9()  # during catch-up: the old generation is untouched
        sql(old, "INSERT INTO t VALUES (2)")
        new.start()
        wait_status(new, "ReadyToPromote")
        http(new.internal_http_port, "POST", "/api/leader/promote")
        new.kill9()  # during (or right after) promoting
        new.start()  # C == G -> leader at once; C < G -> read-only again
        if status(new) != "IsLeader":
            wait_status(new, "ReadyToPromote")
            http(new.internal_http_port, "POST", "/api/leader/promote")
            wait_status(new, "IsLeader")
        assert old.proc is not None
        old.proc.wait(timeout=15)
        assert old.proc.returncode == 0
        assert sql(new, "SELECT a FROM t ORDER BY a")[0] == [(1,), (2,)]
    finally:
        old.stop()
        new.stop()


def test_kill_old_during_catch_up(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    try:
        sql(old, "CREATE TABLE t (a int)", "INSERT INTO t VALUES (1)")
        new.start()
        old.kill9()
        wait_status(new, "ReadyToPromote")
        http(new.internal_http_port, "POST", "/api/leader/promote")
        wait_status(new, "IsLeader")
        sql(new, "INSERT INTO t VALUES (2)")
        assert sql(new, "SELECT a FROM t ORDER BY a")[0] == [(1,), (2,)]
    finally:
        old.stop()
        new.stop()


@pytest.mark.parametrize("panic", [False, True])
def test_max_wait(data_dir: Path, panic: bool) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    params = [
        "--system-param",
        "with_0dt_deployment_max_wait=1s",
        "--system-param",
        "with_0dt_caught_up_check_stability_period=1h",
        "--system-param",
        f"enable_0dt_deployment_panic_after_timeout={'on' if panic else 'off'}",
    ]
    new = EnvironmentdProcess(data_dir, generation=2, extra_args=params)
    old.start()
    try:
        sql(old, "CREATE TABLE t (a int)")
        new.start()
        if panic:
            assert new.proc is not None
            new.proc.wait(timeout=30)
            assert new.proc.returncode != 0
            assert "not caught up within" in new.log_tail()
            sql(old, "INSERT INTO t VALUES (1)")  # the old generation keeps serving
        else:
            wait_status(new, "ReadyToPromote")
    finally:
        old.stop()
        new.stop()


def catch_up_with_ddl(data_dir: Path, *, temporary: bool) -> None:
    """While generation 2 catches up (stability 1 h), a table is created on generation 1, and
    optionally a temporary table in a session that stays open."""
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(
        data_dir,
        generation=2,
        extra_args=[
            "--system-param", "with_0dt_deployment_ddl_check_interval=100ms",
            "--system-param", "with_0dt_caught_up_check_stability_period=1h",
        ],
    )  # fmt: skip
    old.start()
    try:
        sql(old, "CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)")
        new.start()
        with psycopg.connect(old.conninfo(), autocommit=True) as session:
            if temporary:
                session.execute("CREATE TEMPORARY TABLE scratch (z int)")
                session.execute("INSERT INTO scratch VALUES (5)")
            sql(old, "CREATE TABLE b (y int)", "INSERT INTO b VALUES (2)", "DROP TABLE a")
            deadline = time.monotonic() + DEADLINE_S
            while True:  # adopted in place (created and dropped), while still catching up
                try:
                    if sql(new, "SELECT y FROM b")[0] == [(2,)]:
                        sql(new, "SELECT x FROM a")
                except psycopg.errors.UndefinedTable as e:
                    if '"a"' in str(e):
                        break
                assert time.monotonic() < deadline, new.log_tail()
                time.sleep(0.05)  # poll interval
            assert status(new) == "Initializing"  # CatchingUp shows as Initializing
            log = new.log_path.read_text()
            # one DDL check, or two if it ran between the CREATE and the DROP; no more
            assert 1 <= log.count("re-bootstrapping read-only in place") <= 2, log[-3000:]
            if temporary:
                with pytest.raises(psycopg.errors.UndefinedTable):
                    sql(new, "SELECT z FROM scratch")
    finally:
        old.stop()
        new.stop()


def test_ddl_during_catch_up_is_adopted_in_place(data_dir: Path) -> None:
    catch_up_with_ddl(data_dir, temporary=False)


def test_temporary_tables_are_not_mirrored(data_dir: Path) -> None:
    catch_up_with_ddl(data_dir, temporary=True)
