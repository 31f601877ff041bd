"""A SUBSCRIBE cut by a cutover resumes on the new generation from its last progress timestamp
(balancer/subscribe.py): every change reaches the client exactly once, in timestamp order.
Without WITH (PROGRESS) it cannot be resumed and ends with the old generation's FATAL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from twinstream.balancer import Balancer, StaticRoute
from twinstream.balancer.subscribe import parse_resumable
from twinstream.pgwire import messages as m
from twinstream.testing.environmentd import EnvironmentdProcess

DEADLINE_S = 60.0
FAST_CHECKS = [
    "--system-param",
    "with_0dt_caught_up_check_stability_period=0ms",
    "--system-param",
    "with_0dt_deployment_caught_up_check_interval=50ms",
]


def copy_data(line: str) -> bytes:
    return m.CopyData(line.encode() + b"\n").encode()


@pytest.mark.parametrize(
    ("sql", "resumed"),
    [
        ("SUBSCRIBE t WITH (PROGRESS)", "SUBSCRIBE t WITH (PROGRESS) AS OF 9"),
        (
            "copy (subscribe to s.t with (snapshot, progress = true) as of 3 up to 99) to stdout;",
            "COPY (SUBSCRIBE s.t with (snapshot, progress = true) AS OF 9 up to 99) TO STDOUT",
        ),
        ('SUBSCRIBE "My T" WITH (PROGRESS ON)', 'SUBSCRIBE "My T" WITH (PROGRESS ON) AS OF 9'),
        ("SUBSCRIBE t", None),  # no progress rows: no resume point
        ("SUBSCRIBE t WITH (PROGRESS = false)", None),
        ("SUBSCRIBE (SELECT * FROM t) WITH (PROGRESS)", None),
        ("COPY (SUBSCRIBE t WITH (PROGRESS)) TO STDOUT WITH (FORMAT binary)", None),
        ("SUBSCRIBE t WITH (PROGRESS); SELECT 1", None),
    ],
)
def test_parse_and_rewrite(sql: str, resumed: str | None) -> None:
    sub = parse_resumable(sql)
    if resumed is None:
        assert sub is None
        return
    assert sub is not None and not sub.resumable()
    assert sub.admit(copy_data("10\tt\t\\N\t\\N"))  # progress to 10
    assert sub.resumable()
    assert sub.resume_sql() == resumed


def test_filters_after_a_resume() -> None:
    sub = parse_resumable("SUBSCRIBE t WITH (PROGRESS)")
    assert sub is not None
    assert sub.admit(copy_data("4\tf\t1\tx"))
    assert sub.admit(copy_data("5\tt\t\\N\t\\N"))
    assert sub.admit(copy_data("5\tf\t1\ty"))
    assert sub.admit(copy_data("7\tt\t\\N\t\\N"))
    assert sub.resume_sql().endswith("AS OF 6")
    assert sub.swallow_copy_out
    # The resumed stream: snapshot at 6 (already sent), progress 7 (sent), then new changes.
    assert not sub.admit(copy_data("6\tf\t1\tx"))
    assert not sub.admit(copy_data("6\tf\t1\ty"))
    assert not sub.admit(copy_data("7\tt\t\\N\t\\N"))
    assert sub.admit(copy_data("7\tf\t1\tz"))
    assert sub.admit(copy_data("9\tt\t\\N\t\\N"))
    assert sub.last_progress == 9


def direct(env: EnvironmentdProcess, stmt: str) -> None:
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        conn.execute(stmt)


def internal(env: EnvironmentdProcess, method: str, path: str) -> str:
    url = f"http://127.0.0.1:{env.internal_http_port}{path}"
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return str(r.read().decode())


async def wait_for(pred: object, what: str) -> None:
    assert callable(pred)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)  # poll interval


class Subscriber:
    def __init__(self, dsn: str, sql: str) -> None:
        self.dsn, self.sql = dsn, sql
        self.rows: list[list[str]] = []
        self.error: BaseException | None = None
        self.conn: psycopg.AsyncConnection[object] | None = None

    def values(self) -> Counter[str]:
        return Counter(r[-1] for r in self.rows if r[1] == "f" and r[2] == "1")

    def progress(self) -> list[int]:
        return [int(r[0]) for r in self.rows if r[1] == "t"]

    async def run(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        try:
            async with self.conn.cursor().copy(self.sql) as copy:
                async for chunk in copy:
                    for line in bytes(chunk).decode().splitlines():
                        self.rows.append(line.split("\t"))
        except psycopg.Error as e:
            self.error = e


async def test_subscribe_is_resumed_on_the_new_generation(tmp_path: Path) -> None:
    old = EnvironmentdProcess(tmp_path / "env", generation=1)
    new = EnvironmentdProcess(tmp_path / "env", generation=2, extra_args=FAST_CHECKS)
    await asyncio.to_thread(old.start)
    try:
        await asyncio.to_thread(direct, old, "CREATE TABLE s (a text)")
        for i in range(1, 6):
            await asyncio.to_thread(direct, old, f"INSERT INTO s VALUES ('v{i}')")
        route = StaticRoute((1, "127.0.0.1", old.sql_port))
        async with Balancer("127.0.0.1", 0, route, hold_timeout_s=DEADLINE_S) as bal:
            dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
            sub = Subscriber(dsn, "COPY (SUBSCRIBE s WITH (PROGRESS)) TO STDOUT")
            plain = Subscriber(dsn, "COPY (SUBSCRIBE s) TO STDOUT")  # not resumable
            tasks = [asyncio.create_task(sub.run()), asyncio.create_task(plain.run())]
            await wait_for(lambda: len(sub.values()) == 5 and sub.progress(), "the snapshot")
            await wait_for(lambda: len(plain.rows) == 5, "the plain snapshot")
            await asyncio.to_thread(new.start)
            for i in range(6, 11):
                await asyncio.to_thread(direct, old, f"INSERT INTO s VALUES ('v{i}')")
            await wait_for(lambda: json.loads(internal(new, "GET", "/api/leader/status"))
                           ["status"] == "ReadyToPromote", "ReadyToPromote")  # fmt: skip
            await asyncio.to_thread(internal, new, "POST", "/api/leader/promote")
            await wait_for(lambda: json.loads(internal(new, "GET", "/api/leader/status"))
                           ["status"] == "IsLeader", "IsLeader")  # fmt: skip
            route.set(2, "127.0.0.1", new.sql_port)
            for i in range(11, 16):
                await asyncio.to_thread(direct, new, f"INSERT INTO s VALUES ('v{i}')")
            want = Counter(f"v{i}" for i in range(1, 16))
            await wait_for(lambda: sub.values() == want, "every change once")
            await wait_for(lambda: tasks[1].done(), "the plain SUBSCRIBE to end")
            progress = sub.progress()
            assert progress == sorted(progress) and len(set(progress)) == len(progress)
            data_ts = [int(r[0]) for r in sub.rows if r[1] == "f"]
            assert data_ts == sorted(data_ts)
            assert sub.error is None and bal.stats().subscribes_resumed == 1
            assert isinstance(plain.error, psycopg.OperationalError), plain.error
            assert sub.conn is not None
            await sub.conn.cancel_safe()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(tasks[0], 10)
            for s in (sub, plain):
                if s.conn is not None:
                    await s.conn.close()
    finally:
        await asyncio.to_thread(new.stop)
        await asyncio.to_thread(old.stop)
