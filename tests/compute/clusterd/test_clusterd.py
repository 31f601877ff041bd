"""Real `twinstream clusterd` processes driven over the wire by `RemoteReplica`: dataflows over
persist inputs (SQLite consensus), peeks, subscriptions, frontiers and hydration; a controller
that reconnects keeps the dataflows (build count unchanged); garbage on one connection closes
only that connection; two replicas on one output shard with one killed -9 mid-stream; a
read-only replica writes nothing until `allow_writes`; SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
from collections import Counter
from typing import Any

import pytest
from _runtime_helpers import (
    FILTER_SQL,
    JOIN_SQL,
    Tables,
    assert_consistent,
    inputs_of,
    plan_of,
    recompute,
)

from twinstream.adapter.indexes import PEEK_REPLICA_TIMEOUT_S, peek_while_alive
from twinstream.controller.messages import ReplicaError
from twinstream.controller.protocol import DataflowDesc, PeekError, Replica
from twinstream.controller.remote import RemoteReplica, ReplicaUnavailable
from twinstream.controller.wire import ERROR, FrameDecoder
from twinstream.persist import PersistClient
from twinstream.persist.types import Row

OUT = "mv-out"
WAIT_S = 120.0


def mv_desc(out: str = OUT) -> DataflowDesc:
    return DataflowDesc("u1", plan_of(JOIN_SQL), inputs_of(JOIN_SQL), out)


def index_desc() -> DataflowDesc:
    return DataflowDesc("i1", plan_of(FILTER_SQL), inputs_of(FILTER_SQL), index_key=(0,))


async def start_tables(client: PersistClient, *extra: str) -> Tables:
    tables = Tables(client)
    await tables.hold_everything(*extra)
    await tables.run(3, 10, pause_s=0)
    return tables


async def eventually(cond: Any, what: str, timeout_s: float = WAIT_S) -> None:
    """Await `cond()` (an async predicate) until true, within a deadline."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def caught_up(replica: Replica, id: str, upper: int) -> bool:
    f = (await replica.frontiers()).get(id)
    return f is not None and f.hydrated and f.write_frontier >= upper


async def snapshots(client: PersistClient, t: int) -> dict[str, list[tuple[Row, int]]]:
    return {n: await client.open(s).snapshot(t) for n, s in inputs_of(FILTER_SQL).items()}


def raw_exchange(port: int, data: bytes) -> tuple[list[Any], bool]:
    """Send raw bytes on a fresh connection; the frames received and whether it was closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        decoder = FrameDecoder()
        frames: list[Any] = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return frames, True
            frames += decoder.feed(chunk)


async def test_clusterd_serves_reconciles_and_survives_bad_clients(
    procs: Any, tables_client: PersistClient
) -> None:
    tables = await start_tables(tables_client, OUT)
    replica = await procs.start("quickstart-replica-u1-gen-1")
    assert isinstance(replica, Replica)
    await replica.create_dataflow(mv_desc())
    await replica.create_dataflow(index_desc())
    await tables.run(5)
    await eventually(lambda: caught_up(replica, "u1", tables.upper), "the MV to catch up")
    await eventually(lambda: caught_up(replica, "i1", tables.upper), "the index to catch up")
    fr = await replica.frontiers()
    assert fr["u1"].as_of is not None
    status = await replica.status()
    assert status.builds == 2 and status.dataflows == ("i1", "u1") and not status.read_only

    # The MV's output shard, written by the process, equals the recompute at every time.
    await eventually(
        lambda: _upper_at_least(tables_client, OUT, tables.upper), "the output shard upper"
    )
    assert (
        await assert_consistent(
            tables_client, plan_of(JOIN_SQL), inputs_of(JOIN_SQL), OUT, fr["u1"].as_of
        )
        > 0
    )

    # Peeks of the index at exact times, whole and by key.
    t = tables.upper - 1
    expected = recompute(plan_of(FILTER_SQL), await snapshots(tables_client, t), t)
    got = Counter({r: d for r, d in await replica.peek("i1", t)})
    assert got == expected and got
    some = next(iter(expected))
    by_key = await replica.peek("i1", t, (some[0],))
    assert [(r, d) for r, d in by_key] == [(some, expected[some])]
    with pytest.raises(PeekError) as e:
        await replica.peek("nope", t)
    assert e.value.code == "unknown"
    with pytest.raises(PeekError) as e:
        await replica.peek("u1", t)
    assert e.value.code == "not_arranged"

    # A peek its caller abandons (cancelled) leaves the connection usable.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await replica.peek("i1", tables.upper + 10_000)  # never reached
    assert (await replica.status()).builds == 2

    # A subscription: its batches, applied to its first snapshot, track the index.
    sub = replica.subscribe("i1")
    acc: Counter[Row] = Counter()
    first = await anext(sub)
    for r, _t, d in first.updates:
        acc[r] += d
    await tables.run(3)
    target = tables.upper
    upper = first.upper
    while upper < target:
        b = await anext(sub)
        for r, _t, d in b.updates:
            acc[r] += d
        upper = b.upper
    await sub.aclose()  # type: ignore[attr-defined]
    end = upper - 1
    want = recompute(plan_of(FILTER_SQL), await snapshots(tables_client, end), end)
    assert +acc == want

    # Frontier updates are pushed.
    watch = replica.watch_frontiers()
    pushed = await anext(watch)
    assert set(pushed) == {"i1", "u1"}
    await tables.run(1)
    target = tables.upper
    while pushed["i1"].write_frontier < target:
        pushed = await anext(watch)
    await watch.aclose()  # type: ignore[attr-defined]

    # The controller goes away and a new one reconciles: nothing is rebuilt.
    await replica.detach()  # the process keeps running
    await tables.run(2)
    addr = replica.address()
    assert addr is not None
    again = RemoteReplica(replica.name, addr, writable=True)
    try:
        await again.create_dataflow(mv_desc())
        await again.create_dataflow(index_desc())
        status = await again.status()
        assert status.builds == 2 and status.dataflows == ("i1", "u1")
        await eventually(lambda: caught_up(again, "u1", tables.upper), "progress after reconnect")
        # A different description replaces the dataflow (one more build).
        await again.create_dataflow(DataflowDesc("i1", plan_of(FILTER_SQL), inputs_of(FILTER_SQL)))
        assert (await again.status()).builds == 3
        with pytest.raises(PeekError):
            await again.peek("i1", tables.upper - 1)

        # Garbage and oversized frames close that connection only, after an error frame.
        for bad in (b"\x00\x00\x00\x03\xc1\xc1\xc1", struct.pack("!I", 2**31) + b"xx"):
            frames, closed = await asyncio.to_thread(raw_exchange, addr[1], bad)
            assert closed and [f.kind for f in frames] == [ERROR] and frames[0].id == 0
            assert frames[0].body["type"] == "WireError"
        # A malformed request is answered with an error; the connection stays usable.
        with pytest.raises(ReplicaError, match="MessageError"):
            await again._call("create_dataflow", {"id": 1})
        with pytest.raises(ReplicaError, match="unknown op"):
            await again._call("launch_missiles")
        assert (await again.status()).builds == 3

        # Reconciliation's end: what another controller left behind is dropped.
        stale = RemoteReplica(replica.name, addr)
        await stale.create_dataflow(
            DataflowDesc("u9", plan_of(FILTER_SQL), inputs_of(FILTER_SQL), index_key=())
        )
        await stale.close()
        assert (await again.status()).dataflows == ("i1", "u1", "u9")
        assert await again.reconcile() == ["u9"]
        assert (await again.status()).dataflows == ("i1", "u1")
        with pytest.raises(ReplicaError, match="reconcile keep"):
            await again._call("reconcile", {"keep": "all"})
    finally:
        await again.close()

    # SIGTERM: a clean exit.
    assert await procs.orchestrator.stop(replica.name) == 0
    assert procs.orchestrator.services == {}


async def test_index_peek_waits_on_a_live_replica_and_gives_up_on_a_frozen_one(
    procs: Any, tables_client: PersistClient
) -> None:
    """The index fast path's peek (`peek_while_alive`): one that must wait (its time is not
    reached) keeps waiting while the replica answers frontier lookups, and ends with
    TimeoutError once the process is frozen (SIGSTOP) instead of waiting for ever."""
    tables = await start_tables(tables_client)
    name = "quickstart-replica-u1-gen-1"
    replica = await procs.start(name)
    await replica.create_dataflow(index_desc())
    await eventually(lambda: caught_up(replica, "i1", tables.upper), "the index to catch up")
    waiting = asyncio.create_task(peek_while_alive(replica, "i1", tables.upper + 10_000, None))
    try:
        # Alive: the peek outlives several lookup intervals (the replica answers them).
        await asyncio.wait({waiting}, timeout=3 * PEEK_REPLICA_TIMEOUT_S)
        assert not waiting.done(), waiting
        procs.orchestrator.kill(name, signal.SIGSTOP)
        await asyncio.wait({waiting}, timeout=WAIT_S)  # a deadline, not a speed check
        assert waiting.done(), "the peek still waits on a frozen replica"
        with pytest.raises(TimeoutError):
            waiting.result()
    finally:
        procs.orchestrator.kill(name, signal.SIGCONT)  # never leave a stopped process
        waiting.cancel()
        await asyncio.wait({waiting})
    # Thawed: the same connection answers again (the abandoned peek was cancelled there).
    t = tables.upper - 1
    expected = recompute(plan_of(FILTER_SQL), await snapshots(tables_client, t), t)
    assert Counter({r: d for r, d in await replica.peek("i1", t)}) == expected
    f = await replica.frontier("i1")
    assert f is not None and f.hydrated
    assert (await replica.status()).builds == 1


async def _upper_at_least(client: PersistClient, shard: str, upper: int) -> bool:
    return await client.open(shard).upper() >= upper


async def test_unreachable_replica_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        replica = RemoteReplica("c-replica-9-gen-1", ("127.0.0.1", port), unavailable_after_s=0.3)
        with pytest.raises(ReplicaUnavailable, match=f"c-replica-9-gen-1 at 127.0.0.1:{port}"):
            await replica.status()
    later = RemoteReplica("c-replica-9-gen-1", lambda: None, unavailable_after_s=0.2)
    with pytest.raises(ReplicaUnavailable, match="not started"):
        await later.frontiers()


async def test_two_replicas_one_killed_mid_stream(procs: Any, tables_client: PersistClient) -> None:
    tables = await start_tables(tables_client, OUT)
    a = await procs.start("c-replica-1-gen-1")
    b = await procs.start("c-replica-2-gen-1")
    for r in (a, b):
        await r.create_dataflow(mv_desc())
    await tables.run(4)
    await eventually(lambda: caught_up(b, "u1", tables.upper), "replica 2 to hydrate")
    procs.orchestrator.kill(a.name, signal.SIGKILL)  # mid-stream: the writer keeps going
    await tables.run(6)
    await eventually(lambda: caught_up(b, "u1", tables.upper), "the survivor to catch up")
    await eventually(
        lambda: _upper_at_least(tables_client, OUT, tables.upper), "the output shard upper"
    )
    as_of = (await b.frontiers())["u1"].as_of
    assert as_of is not None
    # Complete and never duplicated: at every time, exactly the recompute.
    checked = await assert_consistent(
        tables_client, plan_of(JOIN_SQL), inputs_of(JOIN_SQL), OUT, as_of
    )
    assert checked >= 6
    # The orchestrator restarted the killed one; its client replayed the dataflow to it.
    await eventually(lambda: _restarted(procs, a.name), "the killed replica's restart")
    await eventually(lambda: caught_up(a, "u1", tables.upper), "the restarted replica")
    assert procs.orchestrator.services[a.name].restarts == 1
    assert (await a.status()).builds == 1 and a.connects >= 2


async def _restarted(procs: Any, name: str) -> bool:
    return procs.orchestrator.services[name].address() is not None


async def test_read_only_replica_writes_nothing_until_allowed(
    procs: Any, tables_client: PersistClient
) -> None:
    tables = await start_tables(tables_client, OUT)
    ro = await procs.start("c-replica-1-gen-2", read_only=True)
    await ro.create_dataflow(mv_desc())
    await tables.run(5)
    await eventually(lambda: caught_up(ro, "u1", tables.upper), "the read-only replica")
    assert (await ro.status()).read_only
    assert await tables_client.open(OUT).upper() == 0
    await ro.allow_writes()
    assert not (await ro.status()).read_only
    await eventually(
        lambda: _upper_at_least(tables_client, OUT, tables.upper), "writes after allow_writes"
    )
    as_of = (await ro.frontiers())["u1"].as_of
    assert as_of is not None
    await assert_consistent(tables_client, plan_of(JOIN_SQL), inputs_of(JOIN_SQL), OUT, as_of)
    assert (await ro.status()).builds == 1  # promoted in place


#: What a replica process must not load: the adapter and its SQL engines, the CLI framework,
#: the HTTP stack (start-up time; environmentd starts one process per replica).
HEAVY_MODULES = (
    "twinstream.adapter",
    "twinstream.cli.main",
    "duckdb",
    "sqlglot",
    "typer",
    "aiohttp",
)


def test_clusterd_loads_only_the_engine_and_the_protocol(tmp_path: Any) -> None:
    """`python -m twinstream clusterd` imports neither the adapter nor the CLI: started with
    -X importtime, its import log names the engine, persist and the wire protocol only."""
    import os
    import subprocess
    import sys
    import time

    ports = tmp_path / "ports.json"
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "twinstream",
        "clusterd",
        "--name",
        "c-replica-1-gen-1",
        "--consensus",
        f"sqlite://{tmp_path / 'consensus.db'}",
        "--blob",
        f"file://{tmp_path / 'blob'}",
        "--ports-file",
        str(ports),
    ]
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stderr=err, env=os.environ.copy())
        try:
            deadline = time.monotonic() + WAIT_S
            while not ports.exists():
                assert proc.poll() is None, "clusterd exited"
                assert time.monotonic() < deadline, "clusterd did not start"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    imported = {
        line.split("|")[-1].strip()
        for line in (tmp_path / "stderr").read_text().splitlines()
        if line.startswith("import time:")
    }
    assert "twinstream.compute.dataflow" in imported
    assert "twinstream.controller.wire" in imported
    heavy = sorted(m for m in imported for h in HEAVY_MODULES if m == h or m.startswith(h + "."))
    assert not heavy, f"clusterd imported {heavy}"
