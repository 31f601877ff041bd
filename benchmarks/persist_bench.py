"""Persist benchmark: ``twinstream bench persist [--json] [--backend sqlite|postgres]``.

Three phases on one consensus + blob location (see README.md for what the figures mean):

1. CAS: sequential ``Shard.compare_and_append`` of one small batch (``batch_rows`` rows of about
   ``row_bytes`` bytes, all at a new timestamp, expected upper = current upper) for ``seconds``.
2. Raw: the same consensus store doing bare insert transactions (``raw_insert``) whose payloads
   are real shard states written in phase 1 (same size, same compressibility), for ``seconds``.
3. Notify: a listener in another process (this file run as a script: ``listen`` mode) follows a
   fresh shard with ``Shard.listen``; the writer appends one batch every ``notify_gap_ms`` and
   the wall-clock time from the writer's successful compare-and-set to the listener seeing the
   new upper is measured (both processes use ``time.time()``; they share one machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, cast

from twinstream.cli.bench import BenchmarkError, BenchOptions
from twinstream.cli.benchloc import bench_location
from twinstream.persist import PersistClient, Progress, Shard, codec, open_blob, open_consensus
from twinstream.persist.location import Blob, CasOp, ChangeFeed, Consensus, VersionedData
from twinstream.persist.machine import ListenEvent
from twinstream.persist.types import Update

#: Untimed appends/inserts before each timed window (connections, caches, first versions).
WARMUP_OPS = 20
#: Leading notification samples that are not counted.
NOTIFY_WARMUP = 5
#: Seconds to wait for the listener child to register its read hold.
LISTENER_START_TIMEOUT_S = 60.0


class MeteredConsensus:
    """Forwards to a real consensus store, counting calls (and stamping successful CASes)."""

    def __init__(self, inner: Consensus) -> None:
        self.inner = inner
        self.feed: ChangeFeed = inner.feed
        self.first_ok_wall: float | None = None
        self.reset()

    def reset(self) -> None:
        self.heads = 0
        self.cas_calls = 0
        self.cas_ok = 0
        self.cas_bytes = 0
        self.truncates = 0

    def _ok(self, written: int) -> None:
        if self.first_ok_wall is None:
            self.first_ok_wall = time.time()
        self.cas_ok += 1
        self.cas_bytes += written

    async def head(self, key: str) -> VersionedData | None:
        self.heads += 1
        return await self.inner.head(key)

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool:
        self.cas_calls += 1
        ok = await self.inner.compare_and_set(key, expected, new)
        if ok:
            self._ok(len(new.data))
        return ok

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        self.cas_calls += 1
        ok = await self.inner.compare_and_set_many(ops)
        if ok:
            self._ok(sum(len(new.data) for _k, _e, new in ops))
        return ok

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]:
        return await self.inner.scan(key, from_seqno, limit)

    async def truncate(self, key: str, seqno: int) -> int:
        self.truncates += 1
        return await self.inner.truncate(key, seqno)

    async def start_watching(self) -> None:
        await self.inner.start_watching()

    async def close(self) -> None:
        await self.inner.close()

    async def raw_insert(self, key: str, seqno: int, data: bytes) -> None:
        raw = getattr(self.inner, "raw_insert", None)
        if raw is None:
            raise BenchmarkError(f"{type(self.inner).__name__} has no raw_insert baseline")
        await raw(key, seqno, data)


class MeteredBlob:
    """Forwards to a real blob store, counting writes (compactions and large batches)."""

    def __init__(self, inner: Blob) -> None:
        self.inner = inner
        self.sets = 0
        self.set_bytes = 0

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: str, data: bytes) -> None:
        self.sets += 1
        self.set_bytes += len(data)
        await self.inner.set(key, data)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self.inner.list_keys(prefix)

    async def close(self) -> None:
        await self.inner.close()


class TimedShard(Shard):
    """A shard that adds up the time its writes spend compacting (called inside appends)."""

    compact_s = 0.0

    async def compact(self) -> bool:
        t0 = time.perf_counter()
        try:
            return await super().compact()
        finally:
            self.compact_s += time.perf_counter() - t0


# -- helpers -----------------------------------------------------------------------------------


def _pct(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN when there are no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _pads(batch_rows: int, row_bytes: int) -> list[str]:
    """Row payloads: a row is (int key, pad); msgpack spends ~8 bytes on the rest."""
    pad_len = max(1, row_bytes - 8)
    return [os.urandom(pad_len).hex()[:pad_len] for _ in range(batch_rows)]


def _batch(seq: int, t: int, pads: Sequence[str]) -> list[Update]:
    base = seq * len(pads)
    return [((base + j, pad), t, 1) for j, pad in enumerate(pads)]


def _encoded_row_bytes(pads: Sequence[str]) -> float:
    rows = _batch(1_000_000, 0, pads)
    return statistics.fmean(len(codec.pack(list(row))) for row, _t, _d in rows)


# -- phases ------------------------------------------------------------------------------------


async def _cas_phase(
    shard: TimedShard, metered: MeteredConsensus, pads: Sequence[str], seconds: float
) -> dict[str, Any]:
    upper = await shard.upper()
    for _ in range(WARMUP_OPS):
        assert await shard.compare_and_append(_batch(upper, upper, pads), upper, upper + 1) is None
        upper += 1
    metered.reset()
    shard.compact_s = 0.0
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    end = start
    while end < deadline:
        batch = _batch(upper, upper, pads)
        t0 = time.perf_counter()
        out = await shard.compare_and_append(batch, upper, upper + 1)
        end = time.perf_counter()
        if out is not None:
            raise BenchmarkError(f"unexpected concurrent writer: {out}")
        latencies.append(end - t0)
        upper += 1
    ops = len(latencies)
    return {
        "ops": ops,
        "cas_per_s": ops / (end - start),
        "p50_ms": _ms(_pct(latencies, 50)),
        "p99_ms": _ms(_pct(latencies, 99)),
        "max_ms": _ms(max(latencies)),
        "compaction_share": round(shard.compact_s / (end - start), 3),
        "state_bytes": round(metered.cas_bytes / max(1, metered.cas_ok)),
        "consensus_reads_per_op": round(metered.heads / ops, 3),
        "consensus_writes_per_op": round((metered.cas_calls + metered.truncates) / ops, 3),
    }


async def _raw_phase(
    metered: MeteredConsensus, key: str, payloads: Sequence[bytes], seconds: float
) -> dict[str, Any]:
    seqno = 0
    for _ in range(WARMUP_OPS):
        await metered.raw_insert(key, seqno, payloads[seqno % len(payloads)])
        seqno += 1
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    end = start
    while end < deadline:
        data = payloads[seqno % len(payloads)]
        t0 = time.perf_counter()
        await metered.raw_insert(key, seqno, data)
        end = time.perf_counter()
        latencies.append(end - t0)
        seqno += 1
    # Keep the store small for whoever runs next (a --consensus-url may be long-lived).
    await metered.truncate(key, seqno)
    ops = len(latencies)
    return {
        "raw_ops": ops,
        "raw_tx_per_s": ops / (end - start),
        "raw_p50_ms": _ms(_pct(latencies, 50)),
        "raw_p99_ms": _ms(_pct(latencies, 99)),
        "raw_bytes": round(statistics.fmean(len(p) for p in payloads)),
    }


async def _notify_phase(
    client: PersistClient,
    metered: MeteredConsensus,
    urls: tuple[str, str],
    pads: Sequence[str],
    opts: BenchOptions,
) -> dict[str, Any]:
    shard = client.open(f"bench-notify-{uuid.uuid4().hex[:12]}")
    assert await shard.compare_and_append(_batch(0, 0, pads), 0, 1) is None
    upper = 1
    total = opts.notify_samples + NOTIFY_WARMUP
    gap_s = opts.notify_gap_ms / 1000.0
    child_timeout = LISTENER_START_TIMEOUT_S + total * (gap_s + 1.0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "listen",
        urls[0],
        urls[1],
        shard.shard_id,
        str(upper + total),
        str(child_timeout),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        # The child registers its read hold after it started watching: then it cannot miss one.
        waited = time.monotonic() + LISTENER_START_TIMEOUT_S
        while not (await shard.fetch_state()).leased:
            if proc.returncode is not None or time.monotonic() > waited:
                raise BenchmarkError("the listener process did not start listening")
            await asyncio.sleep(0.01)
        commits: dict[int, tuple[float, float]] = {}
        for _ in range(total):
            await asyncio.sleep(gap_s)
            metered.first_ok_wall = None
            called = time.time()
            out = await shard.compare_and_append(_batch(upper, upper, pads), upper, upper + 1)
            if out is not None:
                raise BenchmarkError(f"unexpected concurrent writer: {out}")
            upper += 1
            commits[upper] = (called, metered.first_ok_wall or time.time())
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=60.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise BenchmarkError(f"the listener process exited with status {proc.returncode}")
    lines = stdout.decode().strip().splitlines()
    received: list[tuple[int, float]] = [
        (int(u), float(t)) for u, t in json.loads(lines[-1])["received"]
    ]
    from_commit: list[float] = []
    from_call: list[float] = []
    missed = 0
    for new_upper in sorted(commits)[NOTIFY_WARMUP:]:
        called, committed = commits[new_upper]
        seen = next((t for u, t in received if u >= new_upper), None)
        if seen is None:
            missed += 1
            continue
        from_commit.append(seen - committed)
        from_call.append(seen - called)
    return {
        "notify_samples": len(from_commit),
        "notify_missed": missed,
        "notify_p50_ms": _ms(_pct(from_commit, 50)),
        "notify_p99_ms": _ms(_pct(from_commit, 99)),
        "notify_from_call_p50_ms": _ms(_pct(from_call, 50)),
    }


async def run(opts: BenchOptions) -> dict[str, Any]:
    """The benchmark entry point (``twinstream bench persist``)."""
    pads = _pads(opts.batch_rows, opts.row_bytes)
    async with bench_location(opts, "twinstream-bench-") as urls:
        metered = MeteredConsensus(open_consensus(urls[0]))
        blob = MeteredBlob(open_blob(urls[1]))
        client = PersistClient(metered, blob)
        try:
            shard = TimedShard(f"bench-{uuid.uuid4().hex[:12]}", metered, blob, client.clock)
            opts.log(f"[persist/{opts.backend}] compare_and_append for {opts.seconds:g}s ...")
            sets_before = blob.sets
            cas = await _cas_phase(shard, metered, pads, opts.seconds)
            cas["blob_writes_per_op"] = round((blob.sets - sets_before) / cas["ops"], 3)
            # Real states from the CAS phase (the kept versions) are the raw payloads.
            payloads = [v.data for v in await metered.scan(shard.shard_id, 0, 1000)]
            opts.log(f"[persist/{opts.backend}] raw insert transactions for {opts.seconds:g}s ...")
            raw = await _raw_phase(metered, f"{shard.shard_id}-raw", payloads, opts.seconds)
            opts.log(
                f"[persist/{opts.backend}] cross-process notify, {opts.notify_samples} samples ..."
            )
            notify = await _notify_phase(client, metered, urls, pads, opts)
        finally:
            await client.close()
    cas_per_s = cas.pop("cas_per_s")
    raw_per_s = raw.pop("raw_tx_per_s")
    return {
        "backend": opts.backend,
        "cas_per_s": round(cas_per_s, 1),
        "raw_tx_per_s": round(raw_per_s, 1),
        "ratio": round(cas_per_s / raw_per_s, 3),
        # What the ratio would be if appends did not compact inline (see README.md).
        "ratio_without_compaction": round(
            cas_per_s / max(1e-9, 1.0 - cas["compaction_share"]) / raw_per_s, 3
        ),
        "p50_ms": cas.pop("p50_ms"),
        "p99_ms": cas.pop("p99_ms"),
        "notify_p50_ms": notify.pop("notify_p50_ms"),
        "seconds": opts.seconds,
        "batch_rows": opts.batch_rows,
        "row_bytes": round(_encoded_row_bytes(pads), 1),
        **cas,
        **raw,
        **notify,
    }


# -- listener child ----------------------------------------------------------------------------


async def _listen(
    consensus_url: str, blob_url: str, shard_id: str, until: int, timeout: float
) -> list[tuple[int, float]]:
    """Follow `shard_id` until its upper reaches `until`; (upper, wall time seen) per event."""
    received: list[tuple[int, float]] = []
    client = PersistClient.from_urls(consensus_url, blob_url)
    try:
        await client.start_watching()
        shard = client.open(shard_id)
        start = await shard.upper()
        events = cast(AsyncGenerator[ListenEvent, None], shard.listen(start - 1))
        try:
            async with asyncio.timeout(timeout):
                async for event in events:
                    if isinstance(event, Progress):
                        received.append((event.upper, time.time()))
                        if event.upper >= until:
                            break
        except TimeoutError:
            print(f"listener: timed out after {timeout:g}s", file=sys.stderr)
        finally:
            await events.aclose()  # releases the read hold
    finally:
        await client.close()
    return received


def _listener_main(argv: Sequence[str]) -> int:
    if len(argv) != 6 or argv[0] != "listen":
        print("usage: persist_bench.py listen CONSENSUS BLOB SHARD UNTIL TIMEOUT", file=sys.stderr)
        return 2
    _, consensus_url, blob_url, shard_id, until, timeout = argv
    received = asyncio.run(_listen(consensus_url, blob_url, shard_id, int(until), float(timeout)))
    sys.stdout.write(json.dumps({"received": received}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_listener_main(sys.argv[1:]))
