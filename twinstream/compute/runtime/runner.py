"""`DataflowRunner`: maintains one dataflow from persist input shards into a persist output.

What a cluster replica does for a materialized view (or an index, or a SUBSCRIBE):

1. Choose the as-of (default: the latest time every input can serve — `min(upper - 1)` over
   the inputs, and no later than the output shard's `upper - 1` so that a restart recomputes
   only what is not written yet — never below any input's `since`), take a *leased* read hold
   there on every input, and snapshot every input at the as-of. The batches that snapshot
   reads may also hold later times (a compacted batch spanning the as-of): those updates,
   complete below some `U`, are kept rather than decoded again by the listen.
2. Hydrate: step the dataflow with the snapshots (frontier `as_of + 1`): its output at the
   as-of is the full result. `hydrated` is set then.
3. Step the kept updates, then follow every input with `listen(U - 1)`; the dataflow's
   frontier is the minimum of the inputs' frontiers. Each step's output goes to the
   self-correcting `PersistSink` of the output shard (if any) and to subscribers
   (`subscribe()`, `on_batch`).

The read holds are heartbeated and moved forward with the listens; they are leased, so a
runner that dies (or a generation that is abandoned) never blocks compaction for longer than
a lease. A failure of any part (e.g. `LeaseExpired`) ends `run()` with that error; a new
runner resumes from the output shard's upper without duplicating anything (the sink corrects
against what is there).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twinstream.compute.dataflow import ERRORS, Dataflow
from twinstream.compute.dataflow.plan import Get, Plan, children
from twinstream.compute.runtime.reading import (
    listen,
    move_hold,
    reader_id,
    release,
    wait_for_upper,
)
from twinstream.compute.runtime.sink import PersistSink
from twinstream.compute.runtime.tasks import supervise
from twinstream.persist import (
    LeasedReadHandle,
    PersistClient,
    Progress,
    ReadBeforeSince,
    Shard,
    Updates,
)
from twinstream.persist.types import Update

log = logging.getLogger(__name__)

#: The name of the runner's one output inside its `Dataflow`.
OUTPUT = "output"
#: A hydration of at least this many input rows takes the heap out of the cyclic garbage
#: collector's view afterwards (see `freeze_heap`).
GC_FREEZE_MIN_ROWS = 50_000


@dataclass(frozen=True)
class OutputBatch:
    """The dataflow's output at times in `[lower, upper)`: complete below `upper`.

    The first batch (`lower == as_of`) holds the full result at the as-of. `errors` are
    evaluation errors as `((sqlstate, message), time, diff)`, retracted like rows.
    """

    lower: int
    upper: int
    updates: list[Update]
    errors: list[Update] = field(default_factory=list)


class Subscription:
    """An async iterator of `OutputBatch`es from the moment it was taken; it ends when the
    runner stops. Unbounded: a consumer that does not keep up grows its queue."""

    def __init__(self, runner: DataflowRunner) -> None:
        self._runner = runner
        self._queue: asyncio.Queue[OutputBatch | None] = asyncio.Queue()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> OutputBatch:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self._runner._subscriptions.discard(self)
        self._queue.put_nowait(None)


class _Stop(Exception):
    """Raised inside the task group to end `run()` cleanly."""


def plan_inputs(plan: Plan) -> set[str]:
    """The `Get` names a plan reads."""
    seen: set[int] = set()
    names: set[str] = set()
    stack = [plan]
    while stack:
        p = stack.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        if isinstance(p, Get):
            names.add(p.name)
        stack.extend(children(p))
    return names


class DataflowRunner:
    """Runs one dataflow over persist inputs into an optional persist output (module docs).

    `input_shards` maps each `Get` name of `plan` (for a lowered query: `Lowered.inputs`, the
    relation ids) to its shard id. `as_of=None` picks one (see the module docstring); an
    explicit as-of must not be below an input's since (`ReadBeforeSince`). `read_only` runs the
    sink without writing (see `PersistSink`); `allow_writes()` flips it in place.
    `errors_shard_id`, if given, receives the `$errors` collection through a second sink, its
    rows `(sqlstate, message)`.
    """

    def __init__(
        self,
        client: PersistClient,
        plan: Plan,
        input_shards: Mapping[str, str],
        output_shard_id: str | None,
        as_of: int | None = None,
        *,
        read_only: bool = False,
        name: str = "dataflow",
        errors_shard_id: str | None = None,
        on_batch: Callable[[OutputBatch], None] | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        needed = plan_inputs(plan)
        missing = needed - set(input_shards)
        extra = set(input_shards) - needed
        if missing or extra:
            raise ValueError(
                f"{name}: inputs {sorted(needed)} of the plan and input shards "
                f"{sorted(input_shards)} differ"
            )
        self.client = client
        self.plan = plan
        self.input_shards = dict(input_shards)
        self.output_shard_id = output_shard_id
        self.requested_as_of = as_of
        self.name = name
        self.on_batch = on_batch
        #: The as-of actually used (known once the holds are taken).
        self.as_of: int | None = None
        #: W: the dataflow's output is complete below this time (0 before hydration).
        self.write_frontier = 0
        #: Set once the output at the as-of is computed.
        self.hydrated = asyncio.Event()
        self.dataflow: Dataflow | None = None
        self.sink: PersistSink | None = None
        self.errors_sink: PersistSink | None = None
        if output_shard_id is not None:
            self.sink = PersistSink(
                client, output_shard_id, read_only=read_only, name=f"{name}-sink",
                heartbeat_s=heartbeat_s,
            )  # fmt: skip
        if errors_shard_id is not None:
            self.errors_sink = PersistSink(
                client, errors_shard_id, read_only=read_only, name=f"{name}-errors",
                heartbeat_s=heartbeat_s,
            )  # fmt: skip
        self._heartbeat_s = heartbeat_s
        self._holds: dict[str, LeasedReadHandle] = {}
        self._input_frontier: dict[str, int] = {}
        self._pending: dict[str, list[Update]] = {n: [] for n in self.input_shards}
        self._input_changed = asyncio.Event()
        self._progress = asyncio.Event()
        self._subscriptions: set[Subscription] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.steps = 0
        self.updates_in = 0
        self.updates_out = 0

    # -- control -------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run in a new task (kept; `stop()` ends it)."""
        if self._task is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._task = asyncio.create_task(self.run(), name=self.name)
        return self._task

    async def stop(self) -> None:
        """End `run()`: cancel the listens and the sink, release the read holds. Raises the
        runner's failure if it had failed."""
        self._stopping.set()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                if (cur := asyncio.current_task()) is not None and cur.cancelling():
                    raise

    def allow_writes(self) -> None:
        for sink in (self.sink, self.errors_sink):
            if sink is not None:
                sink.allow_writes()

    @property
    def read_only(self) -> bool:
        return self.sink is not None and self.sink.read_only

    async def wait_frontier(self, at_least: int) -> None:
        """Wait until the dataflow's output is complete below `at_least`."""
        while self.write_frontier < at_least:
            event = self._progress
            await event.wait()

    async def wait_persisted(self, at_least: int) -> None:
        """Wait until the output shard's upper (as this runner's sink saw it) is `>= at_least`."""
        if self.sink is None:
            raise ValueError(f"{self.name}: no output shard")
        await self.sink.wait_persisted(at_least)

    def subscribe(self) -> Subscription:
        """Output batches from now on (take it before `start()` to get the hydration batch)."""
        sub = Subscription(self)
        self._subscriptions.add(sub)
        return sub

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "as_of": self.as_of,
            "write_frontier": self.write_frontier,
            "steps": self.steps,
            "updates_in": self.updates_in,
            "updates_out": self.updates_out,
        }
        if self.sink is not None:
            out["sink"] = self.sink.stats.as_dict()
            out["persisted_upper"] = self.sink.persisted_upper
        return out

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Hydrate, then maintain the output until `stop()` or an error (raised as is when
        it is the only one)."""
        coros = [self._stop_watch(), self._main()]
        coros += [sink.run() for sink in (self.sink, self.errors_sink) if sink is not None]
        try:
            await supervise(*coros, name=self.name)
        except _Stop:
            pass
        finally:
            for handle in self._holds.values():
                await release(handle)
            self._holds.clear()
            if self.dataflow is not None:
                self.dataflow.close()
            for sub in list(self._subscriptions):
                sub.close()

    async def _stop_watch(self) -> None:
        await self._stopping.wait()
        raise _Stop

    async def _main(self) -> None:
        as_of = await self._take_holds()
        self.as_of = as_of
        snapshots: dict[str, list[Update]] = {}
        for name, handle in self._holds.items():
            await wait_for_upper(handle.shard, as_of + 1)
            # One read for the snapshot and whatever was appended after the as-of (a
            # catching-up replica would otherwise decode a compacted batch spanning the
            # as-of twice: once for the snapshot, once in the listen's first read).
            rows, later, upper = await handle.shard.snapshot_and_updates(as_of)
            snapshots[name] = [(row, as_of, d) for row, d in rows]
            self._pending[name].extend(later)
            self._input_frontier[name] = upper
        self.dataflow = Dataflow({OUTPUT: self.plan}, as_of=as_of, name=self.name)
        self._step(snapshots, as_of + 1)
        freeze_heap(sum(map(len, snapshots.values())))
        self.hydrated.set()
        log.info("%s hydrated at as_of %d", self.name, as_of)
        await supervise(
            *[
                self._follow_input(name, self.client.open(shard_id), self._input_frontier[name] - 1)
                for name, shard_id in self.input_shards.items()
            ],
            self._heartbeat(),
            self._step_loop(),
            name=f"{self.name}-main",
        )

    async def _take_holds(self) -> int:
        """Pick the as-of and hold every input there (leased holds)."""
        shards = {n: self.client.open(s) for n, s in self.input_shards.items()}
        while True:
            states = {n: await s.fetch_state() for n, s in shards.items()}
            max_since = max((st.since for st in states.values()), default=0)
            if self.requested_as_of is not None:
                as_of = self.requested_as_of
                if as_of < max_since:
                    raise ReadBeforeSince(f"{self.name}: as_of {as_of} < input since {max_since}")
            else:
                as_of = min((st.upper - 1 for st in states.values()), default=0)
                if self.sink is not None:
                    out_upper = await self.client.open(self.sink.shard_id).upper()
                    if out_upper > 0:
                        as_of = min(as_of, out_upper - 1)
                as_of = max(as_of, max_since, 0)
            for name, shard in shards.items():
                self._holds[name] = await shard.leased_reader(
                    reader_id(f"{self.name}-{name}-hold"), as_of
                )
            if all(h.since == as_of for h in self._holds.values()):
                return as_of
            # A since moved past the as-of between reading it and holding it: start over.
            for handle in self._holds.values():
                await release(handle)
            self._holds.clear()
            if self.requested_as_of is not None:
                raise ReadBeforeSince(f"{self.name}: as_of {as_of} was compacted away")

    async def _follow_input(self, name: str, shard: Shard, since: int) -> None:
        """Listen from `since` (the times up to it were read before hydrating)."""
        async with listen(shard, since, reader_id(f"{self.name}-{name}-listen")) as events:
            async for event in events:
                if isinstance(event, Updates):
                    self._pending[name].extend(event.updates)
                elif isinstance(event, Progress):
                    self._input_frontier[name] = event.upper
                    self._input_changed.set()

    async def _step_loop(self) -> None:
        df = self.dataflow
        assert df is not None
        while True:
            self._input_changed.clear()
            frontier = min(self._input_frontier.values(), default=df.frontier)
            if frontier <= df.frontier:
                await self._input_changed.wait()
                continue
            pending = {n: p for n, p in self._pending.items() if p}
            self._pending = {n: [] for n in self.input_shards}
            self._step(pending, frontier)
            await asyncio.sleep(0)  # let the sink and the listens run between steps

    def _step(self, inputs: dict[str, list[Update]], frontier: int) -> None:
        df = self.dataflow
        assert df is not None
        lower = df.frontier
        out = df.step(inputs, frontier)
        self.steps += 1
        self.updates_in += sum(len(u) for u in inputs.values())
        updates = out[OUTPUT]
        errors = out.get(ERRORS, [])
        self.updates_out += len(updates)
        if self.sink is not None:
            self.sink.feed(updates, lower, frontier)
        if self.errors_sink is not None:
            self.errors_sink.feed([(tuple(e), t, d) for e, t, d in errors], lower, frontier)
        batch = OutputBatch(lower, frontier, updates, errors)
        for sub in self._subscriptions:
            sub._queue.put_nowait(batch)
        if self.on_batch is not None:
            self.on_batch(batch)
        self.write_frontier = frontier
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _heartbeat(self) -> None:
        period = self._heartbeat_s
        if period is None:
            period = (
                min(h.shard.lease_ms for h in self._holds.values()) / 3000 if self._holds else 1
            )
        while True:
            await asyncio.sleep(period)
            for name, handle in self._holds.items():
                await move_hold(handle, self._input_frontier.get(name, 1) - 1)


def freeze_heap(rows: int) -> bool:
    """After hydrating `rows` input rows (if at least `GC_FREEZE_MIN_ROWS`): collect once,
    then move every live object to the collector's permanent generation (`gc.freeze`).

    Why: a hydrated dataflow holds millions of tuples, lists and dicts that cannot form
    cycles, and every full collection traverses all of them for nothing — measured in a
    replica catching up on a 1M-row join+agg: full collections took 0.25-0.3 s of a 1.2 s
    catch-up, and ~1.1 s more in the rest of its run. Objects created later are collected as usual;
    frozen ones are still freed by reference counting (a dropped dataflow's state goes when
    its last reference does). The collection first means no existing cyclic garbage is
    frozen; what escapes is only cycles formed among already-frozen objects later."""
    if rows < GC_FREEZE_MIN_ROWS or not gc.isenabled():
        return False
    gc.collect()
    gc.freeze()
    return True
