"""The engine benchmark runs end to end on a tiny workload (its figures are not asserted)."""

from __future__ import annotations

import json

import pytest

from twinstream.compute.dataflow import bench


def test_bench_engine_shapes() -> None:
    w = bench.Workload(orders=2000, customers=100, regions=5, batches=3, batch=50, seed=3)
    for make in bench.QUERIES.values():
        got = bench.bench_engine(w, make())
        assert got["updates"] == 150
        assert got["updates_per_s"] > 0


def test_bench_main_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--orders", "1000", "--customers", "50", "--batches", "2", "--batch", "20"]
    assert bench.main([*argv, "--only", "join_agg", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["join_agg"]["updates"] == 40
