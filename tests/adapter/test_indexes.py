"""Indexes as arrangements: `SELECT ... FROM obj [WHERE key = v]` answered by a peek at the
index (counted by the `twinstream_index_peeks_total` metric), always equal to what the engine
answers, and fresh (a read after an acknowledged write sees it)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import random
import signal
import time
import urllib.request
from collections import Counter
from typing import Any

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess

_names = itertools.count()


def connect(envd: EnvironmentdProcess) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(envd.conninfo(), autocommit=True)


def peeks(envd: EnvironmentdProcess) -> int:
    url = f"http://127.0.0.1:{envd.internal_http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("twinstream_index_peeks_total "):
                return int(line.split()[1])
    raise AssertionError("no twinstream_index_peeks_total metric")


def name() -> str:
    return f"ix_{os.getpid()}_{next(_names)}"


def test_point_selects_by_index_are_fresh_and_match_the_engine(envd: EnvironmentdProcess) -> None:
    t = name()
    with connect(envd) as conn, connect(envd) as other:
        conn.execute(f"CREATE TABLE {t} (k int NOT NULL, v text, n bigint)")
        conn.execute(f"INSERT INTO {t} SELECT g, 'v' || g, g * 2 FROM generate_series(1, 50) g")
        before = peeks(envd)
        no_index = {
            k: conn.execute(f"SELECT * FROM {t} WHERE k = %s", (k,)).fetchall() for k in (1, 7, 99)
        }
        assert peeks(envd) == before  # no index yet: the engine answers
        conn.execute(f"CREATE INDEX {t}_k ON {t} (k)")
        for k, rows in no_index.items():
            assert conn.execute(f"SELECT * FROM {t} WHERE k = %s", (k,)).fetchall() == rows
        assert conn.execute(f"SELECT v FROM {t} WHERE k = 3").fetchall() == [("v3",)]
        assert peeks(envd) == before + 4
        # Fresh: an acknowledged write on one connection is visible to the next peek anywhere.
        rng = random.Random(5)
        for i in range(30):
            k = rng.randrange(1, 60)
            if rng.random() < 0.5:
                conn.execute(f"INSERT INTO {t} VALUES (%s, %s, %s)", (k, f"w{i}", i))
            else:
                conn.execute(f"DELETE FROM {t} WHERE k = %s", (k,))
            got = other.execute(f"SELECT * FROM {t} WHERE k = %s", (k,), prepare=True).fetchall()
            with other.transaction():  # inside a transaction block the engine answers
                want = other.execute(f"SELECT * FROM {t} WHERE k = %s", (k,)).fetchall()
            assert Counter(got) == Counter(want), (k, got, want)
        assert peeks(envd) == before + 4 + 30
        # Shapes the index cannot answer fall back to the engine (and stay right).
        n_before = peeks(envd)
        rows = conn.execute(f"SELECT k FROM {t} WHERE v = 'v3'").fetchall()
        assert rows == conn.execute(f"SELECT k FROM {t} WHERE v || '' = 'v3'").fetchall()
        conn.execute(f"SELECT count(*) FROM {t} WHERE k = 3").fetchall()
        assert peeks(envd) == n_before
        # The column description is the table's.
        cur = conn.execute(f"SELECT n, k FROM {t} WHERE k = 3")
        assert [(d.name, d.type_code) for d in cur.description or []] == [("n", 20), ("k", 23)]
        conn.execute(f"DROP INDEX {t}_k")
        n_before = peeks(envd)
        conn.execute(f"SELECT * FROM {t} WHERE k = 3").fetchall()
        assert peeks(envd) == n_before


def test_default_index_on_a_view_and_bad_keys(envd: EnvironmentdProcess) -> None:
    t = name()
    with connect(envd) as conn:
        conn.execute(f"CREATE TABLE {t} (k int, v int)")
        conn.execute(f"INSERT INTO {t} VALUES (1, 1), (1, 2), (2, 3)")
        conn.execute(
            f"CREATE MATERIALIZED VIEW {t}_mv AS SELECT k, count(*) AS n FROM {t} GROUP BY k"
        )
        conn.execute(f"CREATE DEFAULT INDEX ON {t}_mv")
        before = peeks(envd)
        assert sorted(conn.execute(f"SELECT * FROM {t}_mv").fetchall()) == [(1, 2), (2, 1)]
        conn.execute(f"INSERT INTO {t} VALUES (2, 9), (3, 3)")
        assert sorted(conn.execute(f"SELECT * FROM {t}_mv").fetchall()) == [(1, 2), (2, 2), (3, 1)]
        assert conn.execute(f"SELECT n FROM {t}_mv WHERE k = 2 AND n = 2").fetchall() == [(2,)]
        assert peeks(envd) == before + 3
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="index keys"):
            conn.execute(f"CREATE INDEX {t}_bad ON {t} (k + 1)")
        assert conn.execute(
            "SELECT count(*) FROM mz_catalog.mz_indexes WHERE name = %s", (f"{t}_bad",)
        ).fetchone() == (0,)


#: A SELECT while the replica is frozen must answer within this (the engine fallback is
#: bounded by `PEEK_REPLICA_TIMEOUT_S`, 2 s; an unbounded wait would hang until SIGCONT).
FROZEN_READ_DEADLINE_S = 30.0


def wait_for_peek(envd: EnvironmentdProcess, conn: psycopg.Connection[Any], sql: str) -> None:
    """Repeat `sql` until one execution is answered by an index peek (deadline 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = peeks(envd)
        conn.execute(sql).fetchall()
        if peeks(envd) > before:
            return
    raise AssertionError(f"no index peek answered {sql!r}")


def test_a_frozen_replica_makes_the_engine_answer(envd: EnvironmentdProcess) -> None:
    """A SIGSTOPped replica keeps its connection open but never answers: an index read
    falls back to the engine within a bounded time, and peeks resume after SIGCONT."""
    t = name()
    with connect(envd) as conn:
        conn.execute(f"CREATE TABLE {t} (k int NOT NULL, v text)")
        conn.execute(f"INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 20) g")
        conn.execute(f"CREATE INDEX {t}_k ON {t} (k)")
        wait_for_peek(envd, conn, f"SELECT * FROM {t} WHERE k = 1")
        pids = list(envd.replica_pids().values())
        assert pids, "no clusterd process"
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            before = peeks(envd)
            # In a worker thread: if the read hung, the deadline fails the test (and SIGCONT
            # below lets the thread finish) instead of hanging the suite.
            read = pool.submit(
                lambda: conn.execute(f"SELECT * FROM {t} WHERE k = %s", (7,)).fetchall()
            )
            assert read.result(timeout=FROZEN_READ_DEADLINE_S) == [(7, "v7")]
            # A write is acknowledged (no replica involved) and the next read sees it.
            conn.execute(f"INSERT INTO {t} VALUES (7, 'w')")
            read = pool.submit(lambda: conn.execute(f"SELECT v FROM {t} WHERE k = 7").fetchall())
            assert sorted(read.result(timeout=FROZEN_READ_DEADLINE_S)) == [("v7",), ("w",)]
            assert peeks(envd) == before  # the engine answered both
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            pool.shutdown(wait=True)
        # Thawed: the fast path answers again (once the replica has caught up).
        wait_for_peek(envd, conn, f"SELECT * FROM {t} WHERE k = 7")
        rows = conn.execute(f"SELECT v FROM {t} WHERE k = 7").fetchall()
        assert sorted(rows) == [("v7",), ("w",)]
