"""Catch-up progress of a generation, for people: hydration and lag per cluster.

`twinstream upgrade` shows it live (through the orchestrator's control API, which reads each
generation's `GET /api/deployment/progress`), and `/metrics` exports the per-collection figures.
The caught-up decision itself is `caught_up.py`; this only summarizes the same facts.
"""

from __future__ import annotations

from typing import Any

from twinstream.adapter.coordinator import Coordinator
from twinstream.deployment.caught_up import CollectionFrontiers
from twinstream.deployment.promotion import compute_frontiers, table_frontiers

#: The pseudo-cluster of collections the adapter itself mirrors (tables, sources).
TABLES = "(tables)"


async def collections(coord: Coordinator) -> list[CollectionFrontiers]:
    return [*await table_frontiers(coord), *await compute_frontiers(coord)]


def summarize(cols: list[CollectionFrontiers], cluster_names: dict[str, str]) -> dict[str, Any]:
    """{"collections", "hydrated", "hydrated_pct", "clusters": {name: {collections, hydrated,
    max_lag_ms}}, "laggiest": [name, lag_ms] | None} — lag = live frontier - ours (>= 0)."""
    clusters: dict[str, dict[str, int]] = {}
    laggiest: tuple[str, int] | None = None
    for c in cols:
        name = TABLES if c.cluster is None else cluster_names.get(c.cluster, c.cluster)
        entry = clusters.setdefault(name, {"collections": 0, "hydrated": 0, "max_lag_ms": 0})
        lag = max(0, c.live_frontier - c.write_frontier)
        entry["collections"] += 1
        entry["hydrated"] += int(c.hydrated)
        entry["max_lag_ms"] = max(entry["max_lag_ms"], lag)
        if laggiest is None or lag > laggiest[1]:
            laggiest = (c.name, lag)
    hydrated = sum(int(c.hydrated) for c in cols)
    return {
        "collections": len(cols),
        "hydrated": hydrated,
        "hydrated_pct": 100.0 if not cols else round(100.0 * hydrated / len(cols), 1),
        "clusters": clusters,
        "laggiest": None if laggiest is None else list(laggiest),
    }


async def progress(coord: Coordinator) -> dict[str, Any]:
    names = {cid: name for name, cid in coord.index.clusters.items()}
    return summarize(await collections(coord), names)


def metric_lines(cols: list[CollectionFrontiers]) -> list[str]:
    """Prometheus lines: per-collection lag and hydration."""
    out = []
    for c in cols:
        label = c.name.replace("\\", "\\\\").replace('"', '\\"')
        lag = max(0, c.live_frontier - c.write_frontier)
        out.append(f'twinstream_collection_lag_ms{{collection="{label}"}} {lag}')
        out.append(f'twinstream_collection_hydrated{{collection="{label}"}} {int(c.hydrated)}')
    return out
