"""Materialized views maintained by dataflows, through a real environmentd process.

Each view is compared with the same query run ad hoc (DuckDB over the mirrored tables) after
every change: both must agree as multisets, whatever the mix of inserts, deletes and updates.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process

DEADLINE_S = 30.0
_names = itertools.count()


def connect(envd: EnvironmentdProcess) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(envd.conninfo(), autocommit=True)


def norm(v: object) -> object:
    if isinstance(v, Decimal | float):
        f = round(float(v), 6)
        return int(f) if f == int(f) else f
    return v


def bag(rows: list[tuple[Any, ...]]) -> Counter[tuple[object, ...]]:
    return Counter(tuple(norm(v) for v in r) for r in rows)


def assert_same(conn: psycopg.Connection[tuple[Any, ...]], mv: str, query: str) -> None:
    got = bag(conn.execute(f"SELECT * FROM {mv}").fetchall())
    want = bag(conn.execute(query).fetchall())
    assert got == want, f"{mv} differs from its query:\n got {got}\nwant {want}"


def suffix() -> str:
    return f"{os.getpid()}_{next(_names)}"


QUERIES = {
    "agg": "SELECT a, count(*) AS n, sum(b) AS s, min(b) AS lo, max(b) AS hi FROM {p} GROUP BY a",
    "join": "SELECT {p}.a, {q}.c FROM {p} JOIN {q} ON {p}.b = {q}.b",
    "left_agg": (
        "SELECT {p}.a, count({q}.c) AS n, sum({q}.c) AS s "
        "FROM {p} LEFT JOIN {q} ON {p}.b = {q}.b GROUP BY {p}.a"
    ),
    "distinct": "SELECT DISTINCT b FROM {p} WHERE a > 1",
    "except": "SELECT a FROM {p} EXCEPT SELECT c FROM {q}",
    "having": "SELECT b, count(*) AS n FROM {p} GROUP BY b HAVING count(*) > 1",
}


def make_tables(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[str, str]:
    s = suffix()
    p, q = f"p_{s}", f"q_{s}"
    conn.execute(f"CREATE TABLE {p} (a int, b int)")
    conn.execute(f"CREATE TABLE {q} (b int, c int)")
    return p, q


def test_views_follow_inserts_deletes_updates(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        p, q = make_tables(conn)
        conn.execute(f"INSERT INTO {p} VALUES (1, 1), (2, 1), (2, 2), (3, NULL)")
        conn.execute(f"INSERT INTO {q} VALUES (1, 10), (2, 20), (2, 2)")
        views = {}
        for key, text in QUERIES.items():
            query = text.format(p=p, q=q)
            name = f"mv_{key}_{p}"
            conn.execute(f"CREATE MATERIALIZED VIEW {name} AS {query}")
            views[name] = query
        steps = [
            f"INSERT INTO {p} VALUES (4, 2), (1, 3)",
            f"DELETE FROM {p} WHERE a = 2",
            f"UPDATE {q} SET c = c + 1 WHERE b = 2",
            f"INSERT INTO {q} VALUES (3, 1), (3, 4)",
            f"UPDATE {p} SET b = 3 WHERE b IS NULL",
            f"DELETE FROM {q}",
            f"INSERT INTO {p} SELECT a + 10, b FROM {p}",
        ]
        for name, query in views.items():
            assert_same(conn, name, query)
        for step in steps:
            conn.execute(step)
            for name, query in views.items():
                assert_same(conn, name, query)
        # Reads of a view joined with a table in one ad-hoc query see both up to date.
        conn.execute(f"INSERT INTO {p} VALUES (7, 7)")
        rows = conn.execute(
            f"SELECT v.a, v.n, t.b FROM mv_agg_{p} v JOIN {p} t ON v.a = t.a WHERE v.a = 7"
        ).fetchall()
        assert rows == [(7, 1, 7)]
        # Column types come from the lowered query (not text).
        types = dict(
            conn.execute(
                "SELECT c.name, c.type FROM mz_catalog.mz_columns c "
                "JOIN mz_catalog.mz_objects o ON c.id = o.id WHERE o.name = %s",
                (f"mv_agg_{p}",),
            ).fetchall()
        )
        assert types == {"a": "int4", "n": "int8", "s": "int8", "lo": "int4", "hi": "int4"}


def test_view_on_view_and_drop(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        p, _q = make_tables(conn)
        conn.execute(f"INSERT INTO {p} VALUES (1, 1), (1, 2), (2, 5)")
        conn.execute(
            f"CREATE MATERIALIZED VIEW base_{p} AS SELECT a, sum(b) AS s FROM {p} GROUP BY a"
        )
        conn.execute(f"CREATE VIEW plain_{p} AS SELECT a, s FROM base_{p} WHERE s > 2")
        conn.execute(
            f"CREATE MATERIALIZED VIEW top_{p} (total, groups) AS "
            f"SELECT sum(s), count(*) FROM plain_{p}"
        )
        assert conn.execute(f"SELECT * FROM top_{p}").fetchall() == [(8, 2)]
        conn.execute(f"INSERT INTO {p} VALUES (3, 1)")
        conn.execute(f"DELETE FROM {p} WHERE b = 5")
        assert conn.execute(f"SELECT * FROM top_{p}").fetchall() == [(3, 1)]
        assert conn.execute(f"SELECT total FROM top_{p}").fetchall() == [(3,)]
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute(f"DROP MATERIALIZED VIEW base_{p}")
        conn.execute(f"DROP MATERIALIZED VIEW base_{p} CASCADE")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(f"SELECT * FROM top_{p}")
        left = conn.execute(
            "SELECT name FROM mz_catalog.mz_objects WHERE name LIKE %s", (f"%_{p}",)
        ).fetchall()
        assert left == []
        # The dataflows are gone from the replica too (the frontier table refreshes ~1/s).
        deadline = time.monotonic() + DEADLINE_S
        ids = [r[0] for r in conn.execute("SELECT id FROM mz_catalog.mz_objects").fetchall()]
        while True:
            reported = {
                r[0]
                for r in conn.execute(
                    "SELECT object_id FROM mz_catalog.mz_hydration_statuses"
                ).fetchall()
            }
            if reported <= set(ids):
                break
            assert time.monotonic() < deadline, reported - set(ids)
            time.sleep(0.1)


def replica_dataflows(envd: EnvironmentdProcess) -> list[str] | None:
    """The dataflows the generation's replica process runs (None: replicas in-process)."""
    import asyncio
    import json

    from twinstream.controller.remote import RemoteReplica

    files = sorted((envd.data_dir / "clusterd").glob("*.json"))
    if not files:
        return None
    info = json.loads(files[0].read_text())

    async def ask() -> list[str]:
        r = RemoteReplica(files[0].stem, ("127.0.0.1", int(info["port"])))
        try:
            return sorted((await r.status()).dataflows)
        finally:
            await r.close()

    return asyncio.run(ask())


def test_unsupported_view_creates_nothing(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        p, _q = make_tables(conn)
        name = f"bad_{p}"
        before = replica_dataflows(envd)
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="window functions"):
            conn.execute(
                f"CREATE MATERIALIZED VIEW {name} AS SELECT a, row_number() OVER () FROM {p}"
            )
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="system catalog"):
            conn.execute(f"CREATE MATERIALIZED VIEW {name} AS SELECT * FROM mz_catalog.mz_tables")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute(f"CREATE MATERIALIZED VIEW {name} AS SELECT nope FROM {p}")
        assert conn.execute(
            "SELECT count(*) FROM mz_catalog.mz_objects WHERE name = %s", (name,)
        ).fetchone() == (0,)
        assert replica_dataflows(envd) == before  # no dataflow was started either
        # The name is free: a supported definition works.
        conn.execute(f"INSERT INTO {p} VALUES (1, 2)")
        conn.execute(f"CREATE MATERIALIZED VIEW {name} AS SELECT a + b AS c FROM {p}")
        assert conn.execute(f"SELECT * FROM {name}").fetchall() == [(3,)]


def test_frontiers_and_hydration_tables(envd: EnvironmentdProcess) -> None:
    with connect(envd) as conn:
        p, _q = make_tables(conn)
        conn.execute(f"CREATE MATERIALIZED VIEW fr_{p} AS SELECT count(*) AS n FROM {p}")
        (mv_id,) = conn.execute(
            "SELECT id FROM mz_catalog.mz_objects WHERE name = %s", (f"fr_{p}",)
        ).fetchone() or (None,)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            rows = conn.execute(
                "SELECT f.replica_id, f.write_frontier, h.hydrated "
                "FROM mz_catalog.mz_cluster_replica_frontiers f "
                "JOIN mz_catalog.mz_hydration_statuses h USING (object_id, replica_id) "
                "WHERE f.object_id = %s",
                (mv_id,),
            ).fetchall()
            if rows and rows[0][2] and rows[0][1] > 0:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        replicas = conn.execute("SELECT id FROM mz_catalog.mz_cluster_replicas").fetchall()
        assert rows[0][0] in {r[0] for r in replicas}


def test_restart_keeps_views(tmp_path: Path) -> None:
    with environmentd_process(tmp_path / "env") as env:
        with connect(env) as conn:
            conn.execute("CREATE TABLE r (a int)")
            conn.execute("INSERT INTO r VALUES (1), (2), (2)")
            conn.execute("CREATE MATERIALIZED VIEW rc AS SELECT a, count(*) AS n FROM r GROUP BY a")
            conn.execute("CREATE MATERIALIZED VIEW rt AS SELECT sum(n) AS t FROM rc")
            assert conn.execute("SELECT * FROM rt").fetchall() == [(3,)]
        env.restart()
        with connect(env) as conn:
            assert sorted(conn.execute("SELECT * FROM rc").fetchall()) == [(1, 1), (2, 2)]
            conn.execute("INSERT INTO r VALUES (3)")
            conn.execute("DELETE FROM r WHERE a = 1")
            assert sorted(conn.execute("SELECT * FROM rc").fetchall()) == [(2, 2), (3, 1)]
            assert conn.execute("SELECT * FROM rt").fetchall() == [(3,)]


_ROWS = st.tuples(st.integers(0, 4), st.one_of(st.none(), st.integers(0, 3)))
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["p", "q"]),
        st.sampled_from(["insert", "delete"]),
        st.lists(_ROWS, min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=int(os.environ.get("TWINSTREAM_PROPERTY_EXAMPLES", "8")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=_OPS, query=st.sampled_from(sorted(QUERIES)))
def test_parity_with_ad_hoc_select(envd: EnvironmentdProcess, ops: Any, query: str) -> None:
    """Random insert/delete streams: after every change (a new timestamp) the view (read
    from its mirror), the view read through its default index (a peek), a SUBSCRIBE to the
    view applied to its snapshot, and the ad-hoc SELECT agree."""
    with connect(envd) as conn, connect(envd) as subscriber:
        p, q = make_tables(conn)
        text = QUERIES[query].format(p=p, q=q)
        conn.execute(f"CREATE MATERIALIZED VIEW par_{p} AS {text}")
        conn.execute(f"CREATE DEFAULT INDEX ON par_{p}")
        subscriber.autocommit = False
        subscriber.execute(f"DECLARE c CURSOR FOR SUBSCRIBE par_{p} WITH (PROGRESS)")
        streamed: Counter[tuple[object, ...]] = Counter()

        def converge(target: Counter[tuple[object, ...]]) -> None:
            """Apply the subscription's rows until they add up to `target` (nothing is
            written meanwhile, so a correct stream gets there and stays)."""
            deadline = time.monotonic() + DEADLINE_S
            while +streamed != target:
                assert time.monotonic() < deadline, f"stream {+streamed} != view {target}"
                for row in subscriber.execute("FETCH 1000 c WITH (timeout = '0.2s')").fetchall():
                    if not row[1]:  # data, not progress
                        streamed[tuple(norm(v) for v in row[3:])] += int(row[2])

        for table, kind, rows in ops:
            name = p if table == "p" else q
            cols = ("a", "b") if table == "p" else ("b", "c")
            if kind == "insert":
                conn.execute(
                    f"INSERT INTO {name} VALUES " + ", ".join(["(%s, %s)"] * len(rows)),
                    [v for r in rows for v in r],
                )
            else:
                x, _y = rows[0]
                conn.execute(f"DELETE FROM {name} WHERE {cols[0]} = %s", (x,))
            assert_same(conn, f"par_{p}", text)  # through the index (a peek)
            got = bag(conn.execute(f"SELECT * FROM par_{p} WHERE true").fetchall())  # mirror
            assert got == bag(conn.execute(text).fetchall())
            converge(got)
        subscriber.execute("CLOSE c")
        subscriber.rollback()
        conn.execute(f"DROP MATERIALIZED VIEW par_{p} CASCADE")
