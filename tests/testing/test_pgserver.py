"""Tests for twinstream.testing.pgserver (needs initdb/postgres of PostgreSQL 15)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from twinstream.testing.pgserver import PgServer, PgServerError, pg_server, start_pg_server

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(shutil.which("initdb") is None, reason="initdb not on PATH"),
]


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()[0]


def test_logical_server_lifecycle() -> None:
    started = time.monotonic()
    server = start_pg_server(wal_level_logical=True)
    startup = time.monotonic() - started
    try:
        assert server.url == f"postgres://postgres@127.0.0.1:{server.port}/postgres"
        assert server.data_dir.is_dir()
        assert server.is_running
        assert server.postmaster_pid_file() == server.pid

        url = server.create_database("ts_test")
        assert url == f"postgres://postgres@127.0.0.1:{server.port}/ts_test"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (k int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
            assert conn.execute("SELECT v FROM t ORDER BY k").fetchall() == [("a",), ("b",)]
            assert conn.execute("SELECT current_database()").fetchone() == ("ts_test",)
        with psycopg.connect(server.conninfo()) as conn:
            row = conn.execute(
                "SELECT current_setting('wal_level'), current_setting('max_connections'),"
                " current_setting('listen_addresses')"
            ).fetchone()
            assert row == ("logical", "200", "127.0.0.1")
    finally:
        server.stop()

    assert server.pid is None
    assert not _accepts_connections(server.port)
    assert not server.root_dir.exists()
    server.stop()  # idempotent
    with pytest.raises(PgServerError):
        server.start()
    assert startup < 30, startup


@pytest.fixture
def base_dir() -> Iterator[Path]:
    # When running as root, base_dir must be searchable by the OS user 'postgres'; pytest's
    # tmp_path (under a 0700 directory) is not, so use a world-searchable temp dir.
    with tempfile.TemporaryDirectory(prefix="pgserver-test-") as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp).resolve()


def test_kill9_sigstop_and_restart(base_dir: Path) -> None:
    with pg_server(base_dir=base_dir) as server:
        assert isinstance(server, PgServer)
        assert server.root_dir.parent == base_dir
        with psycopg.connect(server.url, autocommit=True) as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("replica",)
            conn.execute("CREATE TABLE t (k int)")
            conn.execute("INSERT INTO t VALUES (42)")

        # Freeze and resume: postmaster and its backends are stopped ('T'), then resumed.
        pid = server.pid
        assert pid is not None
        server.sigstop()
        assert _state(pid) == "T"
        server.sigcont()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT k FROM t").fetchall() == [(42,)]

        # Crash (whole process tree) and restart on the same port with crash recovery.
        held = psycopg.connect(server.url, autocommit=True)
        server.kill9()
        assert not server.is_running
        assert not _accepts_connections(server.port)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        held.close()
        server.start()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT k FROM t").fetchall() == [(42,)]

        # A clean stop without removal can be restarted as well.
        server.stop(remove=False, mode="fast")
        assert server.data_dir.is_dir()
        assert not _accepts_connections(server.port)
        server.start()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        root = server.root_dir
    assert not root.exists()
    assert not _accepts_connections(server.port)
