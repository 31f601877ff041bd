"""Fencing of the durable catalog, on SQLite and PostgreSQL.

- Two OS processes of generations 1 and 2 racing to open writable: generation 2 always ends up
  holding the catalog; the generation-1 process is fenced (at open or at its next commit) and
  exits 0 through `exit_if_fenced` with "fenced out by generation 2".
- The same generation opened twice: the older handle is fenced by epoch.
- A lower generation than the durable one is refused before anything is written.
- A read-only handle follows the leader and refuses to write.
"""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _catalog_helpers import (
    clients,
    commit_item,
    hooked_client,
    item_names,
    open_cat,
    pg_location,
    shard_position,
    sqlite_location,
)

from twinstream.catalog import (
    CatalogChange,
    DeployGenerationFenced,
    EpochFenced,
    FenceError,
    NotWritable,
    OpenMode,
    exit_if_fenced,
    read_catalog_generation,
)
from twinstream.catalog.durable import SINCE_DOWNGRADE_EVERY, DurableCatalog
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import PersistClient
from twinstream.testing.locations import Location

PROC = Path(__file__).with_name("_catalog_proc.py")
ROUNDS = 10
#: Rounds running at once (each on its own location): more timing variety, less wall time.
PARALLEL_ROUNDS = 3
TIMEOUT_S = 60.0


# -- two processes -----------------------------------------------------------------------------


@dataclass
class Child:
    gen: int
    proc: asyncio.subprocess.Process
    first: str = ""

    @classmethod
    async def spawn(cls, loc: Location, gen: int, delay_ms: float) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROC),
            loc.consensus_url,
            loc.blob_url,
            str(gen),
            f"{delay_ms:.1f}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(gen, proc)

    async def first_line(self) -> str:
        """`opened G E` (then it waits for us) or `fenced-at-open` (then it exits)."""
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT_S)
        self.first = raw.decode().strip()
        return self.first

    async def go(self) -> tuple[int, str, str]:
        """Let it commit (if still running); (exit code, rest of stdout, stderr)."""
        out, err = await asyncio.wait_for(self.proc.communicate(b"go\n"), TIMEOUT_S)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode().strip(), err.decode()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def _race_round(loc: Location, kind: str, rng: random.Random) -> str:
    """One round on a fresh location; returns how generation 1 was fenced."""
    children: list[Child] = []
    try:
        if kind == "gen1-first":
            g1 = await Child.spawn(loc, 1, 0)
            children.append(g1)
            assert (await g1.first_line()).startswith("opened 1 "), g1.first
            g2 = await Child.spawn(loc, 2, 0)
            children.append(g2)
            await g2.first_line()
        elif kind == "gen2-first":
            g2 = await Child.spawn(loc, 2, 0)
            children.append(g2)
            assert (await g2.first_line()).startswith("opened 2 "), g2.first
            g1 = await Child.spawn(loc, 1, 0)
            children.append(g1)
            await g1.first_line()
        else:  # started at once, each after a random delay, in random order
            gens = [1, 2]
            rng.shuffle(gens)
            for g in gens:
                children.append(await Child.spawn(loc, g, rng.choice([0, 0, rng.uniform(0, 40)])))
            g1, g2 = sorted(children, key=lambda c: c.gen)
            await asyncio.gather(g1.first_line(), g2.first_line())

        assert g2.first.startswith("opened 2 "), f"generation 2 must open: {g2.first!r}"
        assert g1.first in ("fenced-at-open",) or g1.first.startswith("opened 1 "), g1.first
        if g1.first.startswith("opened 1 "):
            assert g2.first == "opened 2 2", "gen 2 took over gen 1's epoch 1"
        async with clients(loc) as [client]:
            assert await read_catalog_generation(client) == 2
            return await _finish_round(g1, g2, client)
    finally:
        for c in children:
            await c.stop()


async def _finish_round(g1: Child, g2: Child, client: PersistClient) -> str:
    rc1, out1, err1 = await g1.go()
    assert rc1 == 0, f"generation 1 must exit 0 when fenced: rc={rc1} stderr={err1}"
    assert "fenced out by generation 2" in err1, err1
    how = g1.first if g1.first == "fenced-at-open" else out1
    assert how in ("fenced-at-open", "fenced-at-commit"), (g1.first, out1)

    rc2, out2, err2 = await g2.go()
    assert rc2 == 0, f"generation 2 must commit: rc={rc2} stderr={err2}"
    assert out2.startswith("committed "), out2

    ro = await open_cat(client, OpenMode.READ_ONLY, None)
    assert item_names(ro) == {"from-gen-2"}, "only the leader's write is durable"
    assert ro.state.fence_token is not None
    assert ro.state.fence_token.deploy_generation == 2
    return how


async def test_two_processes_generation_2_wins(
    location: Location, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    kinds = ["gen1-first", "gen2-first"] + ["together"] * (ROUNDS - 2)

    def fresh(i: int) -> Location:
        if i == 0:
            return location
        if location.backend == "sqlite":
            (tmp_path / f"r{i}").mkdir()
            return sqlite_location(tmp_path / f"r{i}")
        return pg_location(request.getfixturevalue("pg_server"))

    locations = [fresh(i) for i in range(ROUNDS)]
    gate = asyncio.Semaphore(PARALLEL_ROUNDS)

    async def one(i: int) -> str:
        async with gate:
            rng = random.Random(f"fence-race-{location.backend}-{i}")
            return await _race_round(locations[i], kinds[i], rng)

    hows = await asyncio.gather(*(one(i) for i in range(ROUNDS)))
    # The two pinned orders exercise both ways of being fenced.
    assert hows[0] == "fenced-at-commit"
    assert hows[1] == "fenced-at-open"


# -- in one process ----------------------------------------------------------------------------


async def test_same_generation_twice_fences_by_epoch(location: Location) -> None:
    async with clients(location, 4) as [ca, cb, cc, cr]:
        a = await open_cat(ca, OpenMode.WRITABLE, 1)
        await commit_item(a, "a1")
        b = await open_cat(cb, OpenMode.WRITABLE, 1)
        assert a.token is not None and b.token is not None
        assert (b.token.deploy_generation, b.token.epoch) == (1, a.token.epoch + 1)

        # a: confirm_leadership first, then commit.
        with pytest.raises(FenceError.Epoch) as e1:
            await a.confirm_leadership()
        assert isinstance(e1.value, EpochFenced)
        assert (e1.value.current, e1.value.fence) == (a.token.epoch, b.token.epoch)
        with pytest.raises(EpochFenced):
            await commit_item(a, "a2")

        await commit_item(b, "b1")
        c = await open_cat(cc, OpenMode.WRITABLE, 1)
        # b: commit first, then confirm_leadership.
        with pytest.raises(FenceError.Epoch):
            await commit_item(b, "b2")
        with pytest.raises(FenceError.Epoch) as e2:
            await b.confirm_leadership()
        assert not isinstance(e2.value, DeployGenerationFenced)
        exit_if_fenced(e2.value)  # an epoch fence does not exit: it propagates (returns here)

        await c.confirm_leadership()
        await commit_item(c, "c1")
        ro = await open_cat(cr, OpenMode.READ_ONLY, None)
        assert item_names(ro) == {"a1", "b1", "c1"}
        assert await read_catalog_generation(cr) == 1


async def test_lower_generation_is_refused_before_writing(location: Location) -> None:
    async with clients(location, 2) as [c2, c1]:
        g2 = await open_cat(c2, OpenMode.WRITABLE, 2)
        await commit_item(g2, "x")
        before = await shard_position(c1)
        for mode in (OpenMode.WRITABLE, OpenMode.SAVEPOINT):
            with pytest.raises(FenceError.DeployGeneration) as err:
                await open_cat(c1, mode, 1)
            assert isinstance(err.value, DeployGenerationFenced)
            assert (err.value.current, err.value.fence) == (1, 2)
            assert "fenced out by generation 2" in str(err.value)
        assert await shard_position(c1) == before, "a fenced open must not write anything"
        assert await read_catalog_generation(c1) == 2
        await g2.confirm_leadership()  # untouched leader
        await commit_item(g2, "y")


async def test_read_only_follows_the_leader(location: Location) -> None:
    async with clients(location, 3) as [cw, cr, cn]:
        with pytest.raises(NotWritable):  # nothing to follow yet, and it will not create it
            await open_cat(cr, OpenMode.READ_ONLY, None)
        leader = await open_cat(cw, OpenMode.WRITABLE, 1)
        await cr.start_watching()
        ro = await open_cat(cr, OpenMode.READ_ONLY, None)
        queue = ro.subscribe()
        assert item_names(ro) == set()
        assert await ro.sync() == []

        # sync() picks up a commit and publishes it to subscribers.
        item1, _ = await commit_item(leader, "t1")
        changes = await ro.sync()
        assert CatalogChange("item", item1, leader.state.get("item", item1), 1) in changes
        assert queue.get_nowait() == changes
        assert item_names(ro) == {"t1"}
        assert ro.state.get("id_alloc", "item") == leader.state.get("id_alloc", "item")

        # follow() wakes up on the next commit (change notification or its poll fallback).
        follow = ro.follow()
        try:
            nxt = asyncio.ensure_future(anext(follow))
            item2, _ = await commit_item(leader, "t2")
            batch = await asyncio.wait_for(nxt, TIMEOUT_S)
            assert ("item", item2, 1) in {(c.kind, c.key, c.diff) for c in batch}
            assert queue.get_nowait() == batch
        finally:
            await follow.aclose()
        assert ro.state.items() == leader.state.items()

        # A new generation takes over: the follower sees the new fence and keeps following.
        new = await open_cat(cn, OpenMode.WRITABLE, 2)
        await commit_item(new, "t3")
        await ro.sync()
        assert item_names(ro) == {"t1", "t2", "t3"}
        assert ro.state.fence_token == new.token
        await ro.confirm_leadership()  # read-only: never fenced

        # A read-only handle never writes.
        txn = ro.transaction()
        txn.insert("item", "u999", {"type": "table", "name": "nope"})
        before = await shard_position(cr)
        with pytest.raises(NotWritable, match="cannot write in read-only mode"):
            await ro.commit(txn)
        assert await shard_position(cr) == before
        assert "nope" not in item_names(ro)


# -- regressions ----------------------------------------------------------------------------

# Regression 1: a commit that landed must not raise the FenceError of the since downgrade that
# follows it (every SINCE_DOWNGRADE_EVERY-th commit); the fence is reported by the next call.
# Regression 2: the newest generation's open must survive an older holder moving the catalog's
# critical read hold between its read of the opaque token and its swap.


async def test_bug_durable_commit_is_not_reported_as_fenced(location: Location) -> None:
    """Generation 2 opens right after generation 1's SINCE_DOWNGRADE_EVERY-th commit landed
    (before that commit's since downgrade): the commit is durable, so it must be reported as
    committed; the fence shows up on the next call."""
    hooked, consensus = hooked_client(location)
    try:
        async with clients(location, 2) as [c2, cr]:
            g1 = await open_cat(hooked, OpenMode.WRITABLE, 1)
            for i in range(SINCE_DOWNGRADE_EVERY - 1):
                await commit_item(g1, f"t{i}")

            async def generation_2_opens() -> None:
                await open_cat(c2, OpenMode.WRITABLE, 2)

            consensus.after_cas[consensus.cas_calls + 1] = generation_2_opens
            try:
                await commit_item(g1, "landed")  # raises DeployGenerationFenced today
            finally:
                ro = await open_cat(cr, OpenMode.READ_ONLY, None)
                assert "landed" in item_names(ro), "the commit is durable either way"
            with pytest.raises(DeployGenerationFenced):
                await g1.confirm_leadership()
    finally:
        await hooked.close()


async def test_bug_newest_open_survives_an_older_hold_update(location: Location) -> None:
    """Generation 1 holds the catalog (token (1,1)). A restarted generation 1 (A) and
    generation 2 (B) open concurrently: A writes (1,2) and pauses before taking the critical
    hold; B writes (2,3) and reads the hold's opaque (1,1); A moves the hold to (1,2); B's
    compare-and-downgrade (1,1) -> (2,3) then mismatches. B holds the largest durable token,
    so its open must succeed (and A be fenced)."""
    a_client, a_consensus = hooked_client(location)
    b_client, b_consensus = hooked_client(location)
    try:
        async with clients(location) as [c0]:
            await open_cat(c0, OpenMode.WRITABLE, 1)
            paused, release = asyncio.Event(), asyncio.Event()

            async def pause_after_token_write() -> None:
                paused.set()
                await release.wait()

            a_consensus.after_cas[1] = pause_after_token_write
            a_open = asyncio.ensure_future(open_cat(a_client, OpenMode.WRITABLE, 1))
            await asyncio.wait_for(paused.wait(), TIMEOUT_S)

            async def a_takes_the_hold() -> None:
                release.set()
                await a_open

            # B's compare-and-sets: 1 = its fence token, 2 = its critical hold downgrade.
            b_consensus.before_cas[2] = a_takes_the_hold
            try:
                b = await open_cat(b_client, OpenMode.WRITABLE, 2)  # OpaqueMismatch today
            finally:
                assert await read_catalog_generation(c0) == 2
            assert b.token is not None and b.token.deploy_generation == 2
            await commit_item(b, "b")
            with pytest.raises(DeployGenerationFenced):
                await a_open.result().confirm_leadership()
    finally:
        await a_client.close()
        await b_client.close()


async def test_bug_leadership_check_during_own_commit_is_not_out_of_sync(
    tmp_path: Path,
) -> None:
    """Found by `twinstream demo`: a group commit's confirm_leadership that ran while the same
    leader's DDL commit had landed its compare-and-append but not yet recorded the new upper
    saw the catalog "changed under the writer without a fence" (XX000 to an INSERT)."""
    async with clients(sqlite_location(tmp_path)) as [client]:
        cat = await open_cat(client, OpenMode.WRITABLE, 1)
        real_cas = cat.shard.compare_and_append
        landed, gate = asyncio.Event(), asyncio.Event()

        async def gated_cas(*args: Any, **kwargs: Any) -> Any:
            out = await real_cas(*args, **kwargs)
            landed.set()
            await gate.wait()  # the commit is durable, its caller has not seen it yet
            return out

        cat.shard.compare_and_append = gated_cas  # type: ignore[method-assign]
        commit = asyncio.create_task(commit_item(cat, "ddl"))
        await landed.wait()
        check = asyncio.create_task(cat.confirm_leadership())
        # Give the check its chance to run ahead of the commit (it must wait for it, or pass).
        await asyncio.wait({check}, timeout=2.0)
        gate.set()
        await check  # raised CatalogOutOfSync before the fix
        _, ts = await commit
        assert cat.upper == ts + 1
        await cat.confirm_leadership()


async def test_open_from_a_stale_preload_reads_afresh(location: Location) -> None:
    """Promotion opens writable from what the last DDL check read (`preloaded`): DDL or a
    newer fence after that read must not be missed (the compare-and-append expects the
    preloaded upper, so it fails and the open loads afresh)."""
    async with clients(location, 4) as [c1, c2, c3, c4]:
        leader = await open_cat(c1, OpenMode.WRITABLE, 1)
        await commit_item(leader, "before")
        follower = await open_cat(c2, OpenMode.SAVEPOINT, 2)
        preload = follower.loaded
        assert preload is not None
        await commit_item(leader, "after")  # DDL after the preload
        promoted = await DurableCatalog.open(
            c2, OpenMode.WRITABLE, deploy_generation=2, clock=SYSTEM_CLOCK, preloaded=preload
        )
        assert {"before", "after"} <= item_names(promoted)
        with pytest.raises(DeployGenerationFenced):
            await leader.confirm_leadership()
        await commit_item(promoted, "on-2")

        # A newer generation fenced us after the preload: refused, not overwritten.
        lagging = await open_cat(c3, OpenMode.SAVEPOINT, 3)
        stale = lagging.loaded
        await open_cat(c4, OpenMode.WRITABLE, 4)
        with pytest.raises(DeployGenerationFenced):
            await DurableCatalog.open(
                c3, OpenMode.WRITABLE, deploy_generation=3, clock=SYSTEM_CLOCK, preloaded=stale
            )
