"""SET TimeZone through a real environmentd: timestamptz text output and unzoned input follow
the session's zone (as in PostgreSQL), binary output and storage stay UTC instants, and a bad
zone is 22023."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess


def test_session_timezone(envd: EnvironmentdProcess) -> None:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE tz_events (id int, at timestamptz)")
        conn.execute("SET TimeZone = 'America/New_York'")
        assert conn.info.parameter_status("TimeZone") == "America/New_York"
        # an unzoned literal is read in the session's zone
        conn.execute("INSERT INTO tz_events VALUES (1, '2024-07-01 08:00:00')")
        text = conn.execute("SELECT at::text FROM tz_events").fetchone()
        assert text == ("2024-07-01 08:00:00-04",)
        conn.execute("UPDATE tz_events SET id = 2 WHERE id = 1")  # retracts the stored row
        with conn.cursor(binary=True) as cur:
            got = cur.execute("SELECT id, at FROM tz_events").fetchall()
        assert got == [(2, dt.datetime(2024, 7, 1, 12, tzinfo=dt.UTC))]
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SET TimeZone = 'Nowhere/Special'")
        assert conn.execute("SHOW TimeZone").fetchone() == ("America/New_York",)
        conn.execute("RESET TimeZone")
        text = conn.execute("SELECT at::text FROM tz_events").fetchone()
        assert text == ("2024-07-01 12:00:00+00",)
        assert conn.execute("SELECT count(*) FROM tz_events").fetchone() == (1,)
