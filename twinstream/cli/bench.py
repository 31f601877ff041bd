"""The benchmark registry behind ``twinstream bench NAME``.

A benchmark is an async function taking `BenchOptions` and returning a flat dict of JSON
values (one result line). Register one with `register`; look one up with `get`.

Implementations live in the repository's ``benchmarks/`` directory (next to the ``twinstream``
package in a source checkout, which is how the package is installed: ``pip install -e .``).
They are loaded by file path with `load_benchmark_module`, so an unrelated installed package
named ``benchmarks`` can never shadow them; set ``$TWINSTREAM_BENCHMARKS_DIR`` to use another
directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import twinstream

BENCHMARKS_DIR_ENV = "TWINSTREAM_BENCHMARKS_DIR"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchOptions:
    """Options shared by the benchmarks; each uses the ones that make sense for it."""

    #: Persist location kind: "sqlite" (temp dir) or "postgres" (throwaway server).
    backend: str = "sqlite"
    #: Length of each timed measurement window, in seconds.
    seconds: float = 5.0
    #: Rows per appended batch.
    batch_rows: int = 10
    #: Approximate encoded size of one row, in bytes.
    row_bytes: int = 50
    #: Cross-process notification samples (one append each).
    notify_samples: int = 150
    #: Pause between notification samples, in milliseconds.
    notify_gap_ms: float = 20.0
    #: Use this consensus location instead of a throwaway one.
    consensus_url: str | None = None
    #: Use this blob location instead of the default for the backend.
    blob_url: str | None = None
    #: A smaller workload (benchmarks that have sizes: ``ivm`` uses 100k rows instead of 1M).
    quick: bool = False
    #: Rows of the benchmark's data set (0: the benchmark's default).
    rows: int = 0
    #: Progress messages (never stdout: ``--json`` owns it).
    log: Callable[[str], None] = _stderr


BenchFn = Callable[[BenchOptions], Coroutine[Any, Any, dict[str, Any]]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    run: BenchFn


class BenchmarkError(Exception):
    """A benchmark cannot be found, loaded or run as asked (a usage error, not a crash)."""


_REGISTRY: dict[str, Benchmark] = {}


def register(name: str, summary: str) -> Callable[[BenchFn], BenchFn]:
    """Decorator: make `fn` runnable as ``twinstream bench NAME``."""

    def deco(fn: BenchFn) -> BenchFn:
        if name in _REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        _REGISTRY[name] = Benchmark(name, summary, fn)
        return fn

    return deco


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Benchmark:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BenchmarkError(
            f"unknown benchmark {name!r}; available: {', '.join(names()) or '(none)'}"
        ) from None


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` directory of the source checkout this package runs from."""
    override = os.environ.get(BENCHMARKS_DIR_ENV)
    if override:
        directory = Path(override)
        where = f"${BENCHMARKS_DIR_ENV}"
    else:
        directory = Path(twinstream.__file__).resolve().parent.parent / "benchmarks"
        where = "next to the twinstream package"
    if not directory.is_dir():
        raise BenchmarkError(
            f"benchmarks directory {directory} ({where}) does not exist: `twinstream bench` "
            f"runs from a source checkout (pip install -e .), or set ${BENCHMARKS_DIR_ENV}"
        )
    return directory


def load_benchmark_module(stem: str) -> ModuleType:
    """Import ``benchmarks/<stem>.py`` by file path (once per process)."""
    module_name = f"_twinstream_benchmarks_{stem}"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    path = benchmarks_dir() / f"{stem}.py"
    if not path.is_file():
        raise BenchmarkError(f"benchmark implementation {path} does not exist")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BenchmarkError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


async def _run_from_file(stem: str, opts: BenchOptions) -> dict[str, Any]:
    run = getattr(load_benchmark_module(stem), "run", None)
    if run is None:
        raise BenchmarkError(f"benchmarks/{stem}.py has no `run(opts)` function")
    result = await run(opts)
    if not isinstance(result, dict):
        raise BenchmarkError(f"benchmarks/{stem}.py run() returned {type(result).__name__}")
    return result


# -- the benchmarks ---------------------------------------------------------------------------


@register(
    "persist",
    "Shard.compare_and_append rate and latency vs bare insert transactions of the same size; "
    "cross-process change notification latency.",
)
async def persist(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("persist_bench", opts)


@register(
    "catalog",
    "Durable catalog: single-item DDL commit latency and rate; writable re-open (fencing) time.",
)
async def catalog(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("catalog_bench", opts)


@register(
    "pgwire",
    "SQL over pgwire: point SELECT latency and single-row INSERT rate, vs PostgreSQL.",
)
async def pgwire(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("pgwire_bench", opts)


@register(
    "upgrade",
    "The demo's figures (3 zero-downtime upgrades under load) and the naive restart baseline.",
)
async def upgrade(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("upgrade_bench", opts)


@register(
    "sources",
    "PostgreSQL CDC rows/s and end-to-end lag vs the upstream's insert rate; load generator "
    "rows/s; webhook appends/s vs single-row INSERTs.",
)
async def sources(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("sources_bench", opts)


@register(
    "ivm",
    "Materialized views (filter; join + GROUP BY) maintained through persist by a replica "
    "process: updates/s, freshness lag, RSS; vs PostgreSQL REFRESH MATERIALIZED VIEW.",
)
async def ivm(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("ivm_bench", opts)


@register(
    "balancer",
    "Latency the balancer adds to a point SELECT vs a direct connection (and vs PgBouncer when "
    "installed).",
)
async def balancer(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("balancer_bench", opts)


@register(
    "promote",
    "Promotion of a caught-up generation: promote_to_leader_ms, old_exit_ms, catch_up_s, vs "
    "cold_hydration_s of the same data (1M rows by default; --rows).",
)
async def promote(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("promote_bench", opts)


@register(
    "safety",
    "Upgrade safety matrix: fault cells (kill -9 / SIGSTOP / proxy faults at each rollout "
    "phase, both backends) and repeated upgrades; checked histories must have 0 anomalies.",
)
async def safety(opts: BenchOptions) -> dict[str, Any]:
    return await _run_from_file("safety_bench", opts)
