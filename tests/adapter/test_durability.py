"""Inserts acknowledged before a kill -9 of environmentd are all there after a restart."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg

from twinstream.testing.environmentd import environmentd_process


def test_acknowledged_inserts_survive_kill9(tmp_path: Path) -> None:
    with environmentd_process(tmp_path / "env") as env:
        with psycopg.connect(env.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE d (writer int, n int)")
        acked: list[tuple[int, int]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w: int) -> None:
            try:
                with psycopg.connect(env.conninfo(), autocommit=True) as c:
                    n = 0
                    while not stop.is_set():
                        c.execute("INSERT INTO d VALUES (%s, %s)", (w, n))
                        with lock:
                            acked.append((w, n))
                        n += 1
            except psycopg.Error:
                return  # the server died under us: the last insert was not acknowledged

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        while True:
            with lock:
                if len(acked) >= 200:
                    break
            stop.wait(0.01)
        env.kill9()
        stop.set()
        for t in threads:
            t.join(30)
        with lock:
            expected = set(acked)
        env.start()
        with psycopg.connect(env.conninfo(), autocommit=True) as conn:
            rows = conn.execute("SELECT writer, n FROM d").fetchall()
        present = set(rows)
        assert len(rows) == len(present), "a row is duplicated"
        assert expected <= present, f"lost acknowledged inserts: {sorted(expected - present)[:5]}"
        # Nothing half-visible: per writer, the rows present are a prefix 0..k.
        for w in range(4):
            ns = sorted(n for ww, n in present if ww == w)
            assert ns == list(range(len(ns))), f"writer {w} has gaps: {ns[:10]}"
