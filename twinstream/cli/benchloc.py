"""Where a benchmark's persist data lives: given URLs, a temp dir, or a throwaway PostgreSQL.

Shared by the benchmarks in ``benchmarks/`` so each one accepts ``--backend``,
``--consensus-url`` and ``--blob-url`` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from urllib.parse import urlparse

from twinstream.cli.bench import BenchmarkError, BenchOptions


@contextlib.asynccontextmanager
async def bench_location(opts: BenchOptions, prefix: str) -> AsyncIterator[tuple[str, str]]:
    """(consensus URL, blob URL): the given ones, or a temp dir (sqlite) / throwaway server."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        if opts.backend == "sqlite":
            cons = opts.consensus_url or f"sqlite://{tmp}/consensus.db"
            if urlparse(cons).scheme != "sqlite":
                raise BenchmarkError(f"--backend sqlite needs a sqlite:// URL, got {cons!r}")
            yield cons, opts.blob_url or f"file://{tmp}/blob"
        elif opts.backend == "postgres":
            if opts.consensus_url:
                if urlparse(opts.consensus_url).scheme not in ("postgres", "postgresql"):
                    raise BenchmarkError(
                        f"--backend postgres needs a postgres:// URL, got {opts.consensus_url!r}"
                    )
                yield opts.consensus_url, opts.blob_url or opts.consensus_url
                return
            from twinstream.testing.pgserver import PgServerError, start_pg_server

            opts.log("starting a throwaway PostgreSQL server ...")
            try:
                server = await asyncio.to_thread(start_pg_server)
            except PgServerError as e:
                raise BenchmarkError(f"cannot start a throwaway PostgreSQL server: {e}") from e
            try:
                yield server.url, opts.blob_url or server.url
            finally:
                await asyncio.to_thread(server.stop)
        else:
            raise BenchmarkError(f"unknown backend {opts.backend!r} (sqlite, postgres)")
