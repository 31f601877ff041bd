"""statement_timeout through a real environmentd over pgwire: PostgreSQL's parsing and SHOW
text, 57014 for a statement that runs too long (the session stays usable, a transaction
block is aborted), and writes/DDL that either land and succeed or fail without landing."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from twinstream.aio import DeadlineExceeded, past_cancel_point, run_with_deadline
from twinstream.testing.environmentd import EnvironmentdProcess

TIMEOUT_MESSAGE = "canceling statement due to statement timeout"
#: Longer than any test runs: a statement that returns at all was cut off.
FOREVER_S = 600


def _connect(envd: EnvironmentdProcess, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(envd.conninfo(), autocommit=True, **kwargs)  # type: ignore[arg-type]


def _show(conn: psycopg.Connection[tuple[object, ...]]) -> object:
    row = conn.execute("SHOW statement_timeout").fetchone()
    assert row is not None
    return row[0]


def _assert_timed_out(exc: pytest.ExceptionInfo[psycopg.errors.QueryCanceled]) -> None:
    assert exc.value.sqlstate == "57014"
    assert exc.value.diag.message_primary == TIMEOUT_MESSAGE


# -- SET / SHOW --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("500", "500ms"),
        ("'500ms'", "500ms"),
        ("'2s'", "2s"),
        ("'1min'", "1min"),
        ("'90s'", "90s"),
        ("'1.5s'", "1500ms"),
        ("' 10 s '", "10s"),
        ("'1h'", "1h"),
        ("'1500us'", "2ms"),
        ("0", "0"),
        ("DEFAULT", "0"),
    ],
)
def test_set_show_round_trip(envd: EnvironmentdProcess, value: str, shown: str) -> None:
    with _connect(envd) as conn:
        conn.execute(f"SET statement_timeout = {value}")
        assert _show(conn) == shown
        conn.execute("RESET statement_timeout")
        assert _show(conn) == "0"


@pytest.mark.parametrize(
    ("value", "message", "hint"),
    [
        ("'abc'", 'invalid value for parameter "statement_timeout": "abc"', None),
        (
            "'10 sec'",
            'invalid value for parameter "statement_timeout": "10 sec"',
            'Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".',
        ),
        (
            "-1",
            '-1 ms is outside the valid range for parameter "statement_timeout" (0 .. 2147483647)',
            None,
        ),
        (
            "'99999999999'",
            'invalid value for parameter "statement_timeout": "99999999999"',
            "Value exceeds integer range.",
        ),
    ],
)
def test_bad_values_are_22023(
    envd: EnvironmentdProcess, value: str, message: str, hint: str | None
) -> None:
    with _connect(envd) as conn:
        conn.execute("SET statement_timeout = '3s'")
        with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
            conn.execute(f"SET statement_timeout = {value}")
        assert exc.value.diag.message_primary == message
        assert exc.value.diag.message_hint == hint
        assert _show(conn) == "3s"  # a refused value changes nothing


def test_startup_options(envd: EnvironmentdProcess) -> None:
    with _connect(envd, options="-c statement_timeout=2s") as conn:
        assert _show(conn) == "2s"
        conn.execute("SET statement_timeout = 100")
        conn.execute("RESET statement_timeout")  # back to the session's start value
        assert _show(conn) == "2s"
    with _connect(envd, options="--statement-timeout=250") as conn:
        assert _show(conn) == "250ms"
    with pytest.raises(psycopg.OperationalError, match="invalid value for parameter"):
        _connect(envd, options="-c statement_timeout=soon")


def test_alter_system_sets_the_default_of_new_sessions(envd: EnvironmentdProcess) -> None:
    with _connect(envd) as admin:
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            admin.execute("ALTER SYSTEM SET statement_timeout = 'later'")
        admin.execute("ALTER SYSTEM SET statement_timeout = 90000")
        try:
            with _connect(envd) as conn:
                assert _show(conn) == "90s"
                conn.execute("SET statement_timeout = 0")
                conn.execute("RESET statement_timeout")
                assert _show(conn) == "90s"
            with _connect(envd, options="-c statement_timeout=1s") as conn:
                assert _show(conn) == "1s"  # the client's setting wins
        finally:
            admin.execute("ALTER SYSTEM RESET statement_timeout")
        with _connect(envd) as conn:
            assert _show(conn) == "0"


def test_set_local_lasts_one_transaction(envd: EnvironmentdProcess) -> None:
    with _connect(envd) as conn:
        conn.execute("SET statement_timeout = '5s'")
        conn.execute("SET LOCAL statement_timeout = 100")  # outside a block: a warning only
        assert _show(conn) == "5s"
        with conn.transaction():
            conn.execute("SET LOCAL statement_timeout = '1min'")
            assert _show(conn) == "1min"
        assert _show(conn) == "5s"
        conn.execute("BEGIN")
        conn.execute("SET LOCAL statement_timeout = 100")
        conn.execute("ROLLBACK")
        assert _show(conn) == "5s"
        with conn.transaction():  # SET after SET LOCAL in one block: the SET is kept
            conn.execute("SET LOCAL statement_timeout = 100")
            conn.execute("SET statement_timeout = '7s'")
        assert _show(conn) == "7s"
        conn.execute("BEGIN")  # a refused SET LOCAL changes nothing
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SET LOCAL statement_timeout = 'x'")
        conn.execute("ROLLBACK")
        assert _show(conn) == "7s"
        with conn.transaction():
            conn.execute("SET LOCAL TimeZone = 'America/New_York'")
            assert conn.info.parameter_status("TimeZone") == "America/New_York"
            row = conn.execute("SELECT '2024-07-01 12:00:00+00'::timestamptz::text").fetchone()
            assert row == ("2024-07-01 08:00:00-04",)
        assert conn.info.parameter_status("TimeZone") == "UTC"
        row = conn.execute("SELECT '2024-07-01 12:00:00+00'::timestamptz::text").fetchone()
        assert row == ("2024-07-01 12:00:00+00",)


# -- cancelling --------------------------------------------------------------------------------


def test_slow_select_is_cancelled_and_the_session_goes_on(envd: EnvironmentdProcess) -> None:
    with _connect(envd) as conn:
        conn.execute("SET statement_timeout = 200")
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute(f"SELECT pg_sleep({FOREVER_S})")
        _assert_timed_out(exc)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # a query the engine is busy computing (10^10 rows) is interrupted too
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute(
                "SELECT sum(a.x * b.x) FROM generate_series(1, 100000) AS a(x), "
                "generate_series(1, 100000) AS b(x)"
            )
        _assert_timed_out(exc)
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_zero_never_cancels(envd: EnvironmentdProcess) -> None:
    with _connect(envd) as conn:
        conn.execute("SET statement_timeout = 0")
        assert conn.execute("SELECT pg_sleep(0.3)").fetchone() == (None,)
        conn.execute("SET statement_timeout = '10s'")
        assert conn.execute("SELECT pg_sleep(0.1)").fetchone() == (None,)


def test_read_waiting_for_a_view_that_is_behind(envd: EnvironmentdProcess) -> None:
    """A materialized view on a cluster without replicas never passes the read timestamp:
    its SELECT waits for the frontier, and the timeout cuts the wait off."""
    with _connect(envd) as conn:
        conn.execute("CREATE TABLE behind_src (a int)")
        conn.execute("CREATE CLUSTER stalled (SIZE = '1', REPLICATION FACTOR = 0)")
        conn.execute(
            "CREATE MATERIALIZED VIEW behind_mv IN CLUSTER stalled AS "
            "SELECT count(*) AS n FROM behind_src"
        )
        conn.execute("INSERT INTO behind_src VALUES (1)")
        conn.execute("SET statement_timeout = 300")
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute("SELECT n FROM behind_mv")
        _assert_timed_out(exc)
        assert conn.execute("SELECT count(*) FROM behind_src").fetchone() == (1,)


def test_timeout_in_a_transaction_block_aborts_it(envd: EnvironmentdProcess) -> None:
    with _connect(envd) as conn:
        conn.execute("BEGIN")
        conn.execute("SET LOCAL statement_timeout = 200")
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute(f"SELECT pg_sleep({FOREVER_S})")
        _assert_timed_out(exc)
        for _ in range(2):
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert _show(conn) == "0"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # a read transaction (the engine holds a snapshot) cut off in an engine query
        conn.execute("CREATE TABLE txn_read (a int)")
        conn.execute("INSERT INTO txn_read VALUES (1)")
        conn.execute("BEGIN")
        assert conn.execute("SELECT count(*) FROM txn_read").fetchone() == (1,)
        conn.execute("SET LOCAL statement_timeout = 200")
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute(
                "SELECT sum(a.x * b.x) FROM txn_read, generate_series(1, 100000) AS a(x), "
                "generate_series(1, 100000) AS b(x)"
            )
        _assert_timed_out(exc)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT count(*) FROM txn_read")
        conn.execute("ROLLBACK")
        conn.execute("INSERT INTO txn_read VALUES (2)")
        with conn.transaction():
            assert conn.execute("SELECT count(*) FROM txn_read").fetchone() == (2,)


def test_fetch_from_subscribe(envd: EnvironmentdProcess) -> None:
    """The timeout bounds each FETCH (not the cursor's life); a FETCH with its own TIMEOUT
    option waits that long and returns what arrived."""
    with _connect(envd) as conn:
        conn.execute("CREATE TABLE fetch_src (a int)")
        conn.execute("INSERT INTO fetch_src VALUES (1)")
        conn.execute("SET statement_timeout = 300")
        conn.execute("BEGIN")
        conn.execute("DECLARE c CURSOR FOR SUBSCRIBE fetch_src")
        rows = conn.execute("FETCH ALL c WITH (timeout = '5s')").fetchall()
        assert [r[1:] for r in rows] == [(1, 1)]  # (mz_timestamp, mz_diff, a)
        assert conn.execute("FETCH ALL c WITH (timeout = '600ms')").fetchall() == []
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute("FETCH ALL c")  # nothing new arrives: waits forever
        _assert_timed_out(exc)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("FETCH ALL c WITH (timeout = '0s')")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM fetch_src").fetchone() == (1,)


# -- writes and DDL: committed and acknowledged, or refused and absent -------------------------


def test_writes_under_a_tiny_timeout_land_iff_acknowledged(envd: EnvironmentdProcess) -> None:
    with _connect(envd) as conn:
        conn.execute("CREATE TABLE tiny_w (a int)")
        conn.execute("SET statement_timeout = 1")
        acknowledged: set[int] = set()
        for i in range(30):
            try:
                if i % 3 == 2:
                    with conn.transaction():
                        conn.execute("INSERT INTO tiny_w VALUES (%s)", (i,))
                else:
                    conn.execute("INSERT INTO tiny_w VALUES (%s)", (i,))
            except psycopg.errors.QueryCanceled as e:
                assert e.diag.message_primary == TIMEOUT_MESSAGE
            else:
                acknowledged.add(i)
        conn.execute("SET statement_timeout = 0")
        landed = {r[0] for r in conn.execute("SELECT a FROM tiny_w").fetchall()}
        assert landed == acknowledged


def test_write_cancelled_while_waiting_for_a_lock(envd: EnvironmentdProcess) -> None:
    """An UPDATE waiting for another transaction's table lock is cut off before it wrote
    anything, and leaves no lock behind."""
    with _connect(envd) as holder, _connect(envd) as waiter:
        holder.execute("CREATE TABLE locked_w (k int, v int)")
        holder.execute("INSERT INTO locked_w VALUES (1, 0)")
        holder.execute("BEGIN")
        holder.execute("UPDATE locked_w SET v = 1 WHERE k = 1")
        waiter.execute("SET statement_timeout = 300")
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            waiter.execute("UPDATE locked_w SET v = 2 WHERE k = 1")
        _assert_timed_out(exc)
        holder.execute("COMMIT")
        assert waiter.execute("SELECT v FROM locked_w").fetchall() == [(1,)]
        waiter.execute("UPDATE locked_w SET v = 3 WHERE k = 1")  # the lock is free again
        holder.execute("UPDATE locked_w SET v = v + 1 WHERE k = 1")
        assert holder.execute("SELECT v FROM locked_w").fetchall() == [(4,)]


def test_ddl_under_a_tiny_timeout_lands_iff_acknowledged(envd: EnvironmentdProcess) -> None:
    with _connect(envd) as conn:
        conn.execute("SET statement_timeout = 1")
        created: dict[str, bool] = {}
        for i in range(8):
            name = f"tiny_ddl_{i}"
            try:
                conn.execute(f"CREATE TABLE {name} (a int)")
            except psycopg.errors.QueryCanceled as e:
                assert e.diag.message_primary == TIMEOUT_MESSAGE
                created[name] = False
            else:
                created[name] = True
        conn.execute("SET statement_timeout = 0")
        for name, acknowledged in created.items():
            if acknowledged:
                assert conn.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)
            else:
                with pytest.raises(psycopg.errors.UndefinedTable):
                    conn.execute(f"SELECT count(*) FROM {name}")


# -- the helpers -------------------------------------------------------------------------------


async def test_run_with_deadline_cancels_and_the_cancel_point_protects() -> None:
    with pytest.raises(DeadlineExceeded):
        await run_with_deadline(asyncio.sleep(FOREVER_S), 0.01)
    assert await run_with_deadline(asyncio.sleep(0, "done"), None) == "done"

    finished = asyncio.Event()

    async def commits() -> str:
        with past_cancel_point():
            await asyncio.sleep(0.05)  # past the deadline: still finishes
            finished.set()
        return "committed"

    assert await run_with_deadline(commits(), 0.01) == "committed"
    assert finished.is_set()
    # outside a deadline the cancel point is a no-op
    with past_cancel_point():
        await asyncio.sleep(0)


async def test_a_deadline_passed_without_yielding_stops_before_the_commit_point() -> None:
    committed = False

    async def blocking_then_commit() -> None:
        nonlocal committed
        time.sleep(0.05)  # engine work that never yields: the timer cannot fire
        with past_cancel_point():
            committed = True

    with pytest.raises(DeadlineExceeded):
        await run_with_deadline(blocking_then_commit(), 0.01)
    assert not committed


async def test_an_error_made_of_the_cancellation_reports_the_deadline() -> None:
    async def converts() -> None:
        try:
            await asyncio.sleep(FOREVER_S)
        except asyncio.CancelledError:
            raise RuntimeError("stopped") from None

    with pytest.raises(DeadlineExceeded):
        await run_with_deadline(converts(), 0.01)

    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("its own")

    with pytest.raises(RuntimeError):  # an error of its own stays that error
        await run_with_deadline(fails(), FOREVER_S)


async def test_an_outside_cancel_stays_a_cancel() -> None:
    started = asyncio.Event()

    async def runner() -> None:
        started.set()
        await run_with_deadline(asyncio.sleep(FOREVER_S), FOREVER_S)

    task = asyncio.create_task(runner())
    await started.wait()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
