"""`twinstream bench ivm --json --quick` runs end to end (tiny size) and prints one JSON line
with its figures; only their presence and types are checked, never their values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.postgres

INT_OR_FLOAT = {
    "filter_updates_per_s",
    "join_agg_updates_per_s",
    "lag_p50_ms",
    "lag_p99_ms",
    "replica_rss_mib",
    "refresh_ms_per_batch",
    "ratio",
    "filter_ratio",
    "engine_ratio",
    "engine_filter_updates_per_s",
    "engine_join_agg_updates_per_s",
    "join_agg_replica_cpu_updates_per_s",
}


def test_bench_ivm_quick_prints_one_json_line() -> None:
    if shutil.which("initdb") is None and shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    env = {**os.environ, "TWINSTREAM_IVM_BENCH_ORDERS": "2000"}  # the internal size knob
    proc = subprocess.run(
        [sys.executable, "-m", "twinstream.cli.main", "bench", "ivm", "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["bench"] == "ivm"
    assert result["orders"] == 2000
    assert result["customers"] == 200
    for key in INT_OR_FLOAT:
        assert isinstance(result[key], int | float), (key, result[key])
        assert result[key] >= 0, (key, result[key])
    assert isinstance(result["pg_version"], str)
