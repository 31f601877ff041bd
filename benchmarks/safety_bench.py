"""Upgrade safety benchmark: ``twinstream bench safety --json [--quick]``.

Runs the fault matrix of `twinstream.safety.matrix` (the quick one with ``--quick``: >= 20
cells over both consensus backends) and prints the totals:
``{"cells", "anomalies", "client_errors", "upgrades", "outcomes": {...}}``. Anomalies must be
0. The baseline measured in the same run is the no-fault cells: `baseline_client_errors` is
their mean client errors per cell, `client_error_ratio` the faulted cells' mean over it.
Seed: ``$TWINSTREAM_SAFETY_SEED`` (default 1); a failing cell is listed with the seed that
replays it (``python -m twinstream.safety.matrix --cell NAME --seed N``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from twinstream.cli.bench import BenchOptions
from twinstream.safety.matrix import CellResult, full_matrix, quick_matrix, run_cells, summarize


async def run(opts: BenchOptions) -> dict[str, Any]:
    seed = int(os.environ.get("TWINSTREAM_SAFETY_SEED", "1"))
    cells = quick_matrix() if opts.quick else full_matrix()
    started = time.monotonic()

    def progress(r: CellResult) -> None:
        notes = "; ".join(r.notes)
        opts.log(
            f"{r.cell} seed={r.seed}: {r.outcome}, anomalies {r.anomalies} {r.anomaly_kinds}, "
            f"client errors {r.client_errors}, hit {r.fault_phase or '-'} {notes}"
        )
        for example in r.examples:
            opts.log(f"    {example}")

    results = await run_cells(cells, seed, progress)
    out = summarize(results)
    base = [r.client_errors for r in results if "no-fault" in r.cell]
    faulted = [r.client_errors for r in results if "no-fault" not in r.cell]
    base_mean = sum(base) / len(base) if base else 0.0
    fault_mean = sum(faulted) / len(faulted) if faulted else 0.0
    out["baseline_client_errors"] = round(base_mean, 2)
    out["fault_client_errors"] = round(fault_mean, 2)
    out["client_error_ratio"] = round(fault_mean / base_mean, 2) if base_mean else None
    out["seconds"] = round(time.monotonic() - started, 1)
    out["seed"] = seed
    return out
