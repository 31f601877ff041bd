"""The `twinstream` command line: ``bench`` and its one-JSON-line contract."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinstream.cli.main import app

PERSIST_KEYS = {
    "backend",
    "cas_per_s",
    "raw_tx_per_s",
    "ratio",
    "p50_ms",
    "p99_ms",
    "notify_p50_ms",
}


def _twinstream(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    # `python -m` runs the same `main()` as the console script, whatever PATH says.
    return subprocess.run(
        [sys.executable, "-m", "twinstream.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bench_persist_sqlite_json_is_one_line() -> None:
    proc = _twinstream("bench", "persist", "--json", "--backend", "sqlite", "--seconds", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    assert proc.stdout.endswith("\n")
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    assert result.keys() >= PERSIST_KEYS
    assert result["backend"] == "sqlite"
    for key in PERSIST_KEYS - {"backend"}:
        assert isinstance(result[key], int | float), (key, result[key])
        assert result[key] > 0, (key, result[key])
    assert result["notify_missed"] == 0


def test_bench_unknown_name_fails_with_nothing_on_stdout() -> None:
    proc = _twinstream("bench", "no-such-benchmark", "--json", timeout=60.0)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "persist" in proc.stderr  # the error lists what exists


def test_bench_rejects_a_consensus_url_of_another_backend() -> None:
    proc = _twinstream(
        "bench", "persist", "--json", "--backend", "postgres",
        "--consensus-url", "sqlite:///tmp/x.db", timeout=60.0,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "postgres://" in proc.stderr


def test_help_lists_bench() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "bench" in result.output


def test_bench_balancer_json_shape() -> None:
    proc = _twinstream("bench", "balancer", "--json", "--seconds", "0.5")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    for key in ("direct_p50_ms", "balancer_p50_ms", "balancer_added_p50_ms", "balancer_ratio"):
        assert isinstance(result[key], int | float), (key, result)
    assert result["samples"] >= 250
    assert result["pgbouncer"] in ("measured", "not installed")
    if result["pgbouncer"] == "not installed":
        assert result["pgbouncer_p50_ms"] is None and result["added_vs_pgbouncer"] is None
    else:
        assert isinstance(result["pgbouncer_p50_ms"], int | float)


def test_bench_promote_json_shape() -> None:
    proc = _twinstream("bench", "promote", "--json", "--rows", "2000", timeout=600.0)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    assert result["rows"] == 2000 and result["collections"] == ["big"]
    for key in ("promote_to_leader_ms", "old_exit_ms", "catch_up_s", "cold_hydration_s"):
        assert isinstance(result[key], int | float) and result[key] > 0, (key, result)
    assert result["old_exit_code"] == 0
    assert result["writes_lost"] == 0


DEMO_KEYS = {
    "upgrades",
    "statements",
    "failed_statements",
    "retried_statements",
    "lost_writes",
    "max_stall_ms",
    "p99_steady_ms",
    "p99_upgrade_ms",
    "promote_ms",
}


def test_demo_quick_json_and_png(tmp_path: Path) -> None:
    """The README's main job, shortened: upgrades under the full workload through the balancer,
    one JSON line whose figures say nothing was lost, and a valid PNG chart."""
    chart = tmp_path / "latency.png"
    proc = _twinstream(
        "demo", "--quick", "--json", "--upgrades", "2", "--writers", "2", "--readers", "1",
        "--png", str(chart), timeout=400.0,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    [line] = proc.stdout.splitlines()
    report = json.loads(line)
    assert report.keys() >= DEMO_KEYS
    assert report["upgrades"] == 2
    assert report["statements"] > 0 and report["acknowledged_writes"] > 0
    assert report["failed_statements"] == 0 and report["lost_writes"] == 0
    assert report["duplicated_writes"] == 0
    assert report["read_your_writes_violations"] == 0
    assert report["mv_mismatches"] == 0 and report["materialized_views"] >= 3
    assert report["subscribe_matches_view"] is True
    assert report["subscribe_resume_mismatches"] == 0
    # The balancer resumes the SUBSCRIBE on the new generation itself (AS OF its last
    # progress); the client resumes only if a stream ends anyway. Either way it kept going.
    assert report["subscribe_progress"] > 0 and report["subscribe_rows"] > 0
    assert report["source_bids"] > 0 and report["ddl_statements"] > 0
    assert len(report["promote_ms_each"]) == 2
    data = chart.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    (size,) = struct.unpack(">I", data[idat - 4 : idat])
    raw = zlib.decompress(data[idat + 4 : idat + 4 + size])
    assert len(raw) == height * (1 + 3 * width)


def test_png_encoder_refuses_a_bad_shape() -> None:
    from twinstream.cli.png import encode_png

    with pytest.raises(ValueError):
        encode_png(2, 1, [b"\x00" * 5])
    assert encode_png(1, 1, [b"\xff\x00\x00"]).endswith(b"IEND\xaeB`\x82")
