"""Property: however writer handles of different generations and epochs interleave their
opens, commits and leadership checks, the catalog accepts a single, totally ordered history.

A schedule is a list of steps; the operations of one step run concurrently (at most one per
handle), steps run one after another. Operations: open writable at generation 1-3; commit 1-10
DDL-like transactions one after another on a handle; confirm_leadership on a handle. Checked:

- accepted commits have unique timestamps, increasing along each handle and from step to step;
- a fresh read-only open sees exactly the accepted commits (a rejected one raised a FenceError
  and is not visible);
- opens, commits and leadership checks fail only with FenceError;
- the durable fence belongs to the largest generation that tried to open; exactly the handles
  below it are fenced, with the right kind of fence; its holder (if its open returned) still
  commits.

In memory (shared MemConsensus, random scheduling points between store calls), on SQLite, and
(fewer examples) on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _catalog_helpers import HookedConsensus, commit_item, item_names, open_cat, sqlite_location
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from twinstream.catalog import (
    DeployGenerationFenced,
    DurableCatalog,
    EpochFenced,
    FenceError,
    FenceToken,
    OpenMode,
    read_catalog_generation,
)
from twinstream.persist import PersistClient
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.testing.pgserver import PgServer


@dataclass(frozen=True)
class Op:
    kind: str  # "open" | "commit" | "confirm"
    #: open: the generation; else which handle: 0 the newest, 1 the one before, ... (modulo)
    arg: int
    #: commit: how many commits, one after another
    n: int = 1


_handle = st.sampled_from([0, 0, 0, 1, 2, 3, 5])
_op = st.one_of(
    st.builds(Op, st.just("open"), st.integers(1, 3)),
    st.builds(Op, st.just("commit"), _handle, st.integers(1, 10)),
    st.builds(Op, st.just("confirm"), _handle),
)
schedules = st.builds(
    lambda gen, rest: [[Op("open", gen)], *rest],  # someone opens first
    st.integers(1, 3),
    st.lists(st.lists(_op, min_size=1, max_size=3), min_size=1, max_size=30),
)


@dataclass
class Run:
    handles: list[DurableCatalog] = field(default_factory=list)
    #: (step, handle index, tag, timestamp) of every accepted commit, in completion order.
    accepted: list[tuple[int, int, str, int]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    tried_generations: set[int] = field(default_factory=set)
    tags: itertools.count[int] = field(default_factory=itertools.count)


async def _run_schedule(steps: list[list[Op]], new_client: Callable[[], PersistClient]) -> Run:
    run = Run()
    client = new_client()
    for step_no, group in enumerate(steps):
        busy: set[int] = set()
        todo: list[tuple[Op, int]] = []
        for op in group:
            if op.kind == "open":
                todo.append((op, -1))
            elif (
                run.handles and (h := len(run.handles) - 1 - op.arg % len(run.handles)) not in busy
            ):
                busy.add(h)  # one operation per handle at a time
                todo.append((op, h))

        async def do(op: Op, h: int, step_no: int = step_no) -> None:
            if op.kind == "open":
                run.tried_generations.add(op.arg)
                try:
                    cat = await open_cat(client, OpenMode.WRITABLE, op.arg)
                except DeployGenerationFenced as e:
                    assert e.fence > op.arg
                    return
                except EpochFenced:  # a same-generation open overtook it mid-open
                    return
                run.handles.append(cat)
            elif op.kind == "commit":
                cat = run.handles[h]
                for _ in range(op.n):
                    tag = f"c{next(run.tags)}"
                    try:
                        _, ts = await commit_item(cat, tag)
                    except FenceError:
                        run.rejected.append(tag)
                        return
                    run.accepted.append((step_no, h, tag, ts))
            else:
                with contextlib.suppress(FenceError):
                    await run.handles[h].confirm_leadership()

        outcomes = await asyncio.gather(*(do(op, h) for op, h in todo), return_exceptions=True)
        for out in outcomes:
            if isinstance(out, BaseException):
                raise out  # anything but a fence error is a bug
    return run


async def _check(run: Run, reader: PersistClient) -> None:
    # Accepted commits: one history, no two at one timestamp.
    stamps = [ts for _s, _h, _t, ts in run.accepted]
    assert len(set(stamps)) == len(stamps), "two accepted commits share a timestamp"
    for h in range(len(run.handles)):
        mine = [ts for _s, hh, _t, ts in run.accepted if hh == h]
        assert mine == sorted(mine), f"handle {h} went back in time"
    steps = sorted({s for s, _h, _t, _ts in run.accepted})
    for s1, s2 in itertools.pairwise(steps):
        last = max(ts for s, _h, _t, ts in run.accepted if s == s1)
        first = min(ts for s, _h, _t, ts in run.accepted if s == s2)
        assert last < first, f"step {s2} committed before step {s1}'s last commit"

    n = len(run.accepted)
    event(f"handles: {min(len(run.handles), 4)}{'+' if len(run.handles) >= 4 else ''}")
    event(f"accepted commits: {'0' if not n else '1-15' if n < 16 else '16+'}")
    event(f"rejected commits: {'0' if not run.rejected else '1+'}")
    if not run.tried_generations:
        return
    # Exactly the accepted commits are durable.
    ro = await open_cat(reader, OpenMode.READ_ONLY, None)
    accepted_tags = {t for _s, _h, t, _ts in run.accepted}
    assert item_names(ro) == accepted_tags, (
        f"visible-but-rejected: {sorted(item_names(ro) - accepted_tags)}; "
        f"accepted-but-missing: {sorted(accepted_tags - item_names(ro))}"
    )
    assert not accepted_tags & set(run.rejected)

    # The fence belongs to the largest generation that tried; everyone below it is fenced.
    fence = ro.state.fence_token
    assert fence is not None
    assert fence.deploy_generation == max(run.tried_generations)
    assert await read_catalog_generation(reader) == fence.deploy_generation
    holders = 0
    for cat in run.handles:
        token = cat.token
        assert isinstance(token, FenceToken) and token <= fence
        if token == fence:
            holders += 1
            await cat.confirm_leadership()
            await commit_item(cat, "final")  # the holder still writes
            continue
        # A handle reports the first fence it met: an older generation may have been fenced
        # by a newer epoch of its own generation first; a same-generation one only by epoch.
        expected = FenceError if token.deploy_generation < fence.deploy_generation else EpochFenced
        with pytest.raises(expected):
            await cat.confirm_leadership()
        with pytest.raises(expected):
            await commit_item(cat, "stale")
    assert holders <= 1
    await ro.sync()
    assert "stale" not in item_names(ro)
    assert ("final" in item_names(ro)) == (holders == 1)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@_settings(300)
@given(steps=schedules, seed=st.integers(0, 2**32 - 1))
def test_fencing_property_in_memory(steps: list[list[Op]], seed: int) -> None:
    rng = random.Random(seed)
    consensus, blob = MemConsensus(), MemBlob()

    def new_client() -> PersistClient:
        # Random scheduling points between store calls shuffle the concurrent operations.
        return PersistClient(HookedConsensus(consensus, lambda: rng.choice((0, 0, 1, 2, 5))), blob)

    async def main() -> None:
        run = await _run_schedule(steps, new_client)
        await _check(run, PersistClient(consensus, blob))

    asyncio.run(main())


async def _on_location(steps: list[list[Op]], consensus_url: str, blob_url: str) -> None:
    readers = [PersistClient.from_urls(consensus_url, blob_url) for _ in range(2)]
    try:
        run = await _run_schedule(steps, lambda: readers[0])
        await _check(run, readers[1])
    finally:
        for c in readers:
            await c.close()


@_settings(40)
@given(steps=schedules)
def test_fencing_property_sqlite(steps: list[list[Op]]) -> None:
    with tempfile.TemporaryDirectory(prefix="cat-prop-") as tmp:
        loc = sqlite_location(Path(tmp))
        asyncio.run(_on_location(steps, loc.consensus_url, loc.blob_url))


@pytest.mark.postgres
def test_fencing_property_postgres(pg_server: PgServer) -> None:
    from _catalog_helpers import pg_location

    @_settings(10)
    @given(steps=schedules)
    def prop(steps: list[list[Op]]) -> None:
        loc = pg_location(pg_server)
        asyncio.run(_on_location(steps, loc.consensus_url, loc.blob_url))

    prop()
