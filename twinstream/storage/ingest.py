"""The leader's ingestion of one load-generator source.

Loop: read the durable binding (progress shard), then per tick take the generator's rows for
the next offset and commit them WITH the new binding in one group commit (data and progress
atomically, at an oracle timestamp, fenced). On any failure the outcome may be unknown, so the
loop re-reads the durable binding before going on: a write either landed (binding moved) or
did not (binding unchanged) — never a duplicate, never a gap. A fence ends the loop quietly
(the process is exiting; the new leader's ingestion continues from the same binding).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twinstream.catalog.fence import FenceError
from twinstream.clock import Clock
from twinstream.persist import Shard
from twinstream.persist.types import Diff, Row
from twinstream.storage.generators import Generator
from twinstream.storage.progress import Binding, advance, durable_binding
from twinstream.storage.status import SourceStatus
from twinstream.storage.upsert import UpsertState, rebuild

log = logging.getLogger(__name__)

#: Writes keyed by shard id, as group commit takes them.
Writes = dict[str, list[tuple[Row, Diff]]]
#: Backoff after a failed commit, doubling up to the cap.
RETRY_BACKOFF_MIN_S = 0.05
RETRY_BACKOFF_MAX_S = 2.0


@dataclass
class IngestionSpec:
    source_id: str
    name: str
    generator: Generator
    #: output name -> its shard
    outputs: dict[str, Shard]
    progress: Shard
    tick_s: float
    #: outputs with ENVELOPE UPSERT (key = column 0) -> the state handed over by a read-only
    #: follower at promotion, or None (rebuilt from the output shard)
    upsert: dict[str, UpsertState | None] = field(default_factory=dict)


class Ingestion:
    def __init__(
        self,
        spec: IngestionSpec,
        write: Callable[[Writes], Awaitable[int]],
        report: Callable[[SourceStatus, str | None], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self.spec = spec
        self.write = write
        self.report = report
        self.clock = clock
        self.binding = Binding(0, False)
        self.commits = 0
        self.states: dict[str, UpsertState] = {}

    def _writes(self, rows: dict[str, list[Row]], new_offset: int) -> Writes:
        out: Writes = {}
        for name, shard in self.spec.outputs.items():
            got = rows.get(name, [])
            state = self.states.get(name)
            updates = (
                [(r, 1) for r in got] if state is None else state.diff([(r[0], r) for r in got])
            )
            if updates:
                out[shard.shard_id] = updates
        out[self.spec.progress.shard_id] = advance(self.binding, new_offset)
        return out

    async def _resume(self) -> None:
        """Read the durable binding and, for upsert outputs, the state at the same point
        (we are the only writer, so every shard's newest contents agree with the binding)."""
        self.binding = await durable_binding(self.spec.progress)
        for name in self.spec.upsert:
            handed = self.spec.upsert[name]
            self.spec.upsert[name] = None  # a handed-over state is good for the first start only
            shard = self.spec.outputs[name]
            self.states[name] = handed if handed is not None else await rebuild(shard)

    async def run(self) -> None:
        try:
            await self._run()
        except FenceError:
            log.info("ingestion of %s stops at the fence", self.spec.name)

    async def _run(self) -> None:
        await self._resume()
        log.info("ingestion of %s resumes at offset %d", self.spec.name, self.binding.offset)
        await self.report(SourceStatus.RUNNING, None)
        backoff = RETRY_BACKOFF_MIN_S
        stalled = False
        while True:
            rows, nxt = self.spec.generator.batch(self.binding.offset, self.clock.now_ms())
            writes = self._writes(rows, nxt)
            try:
                await self.write(writes)
            except FenceError:
                raise
            except Exception as e:  # the outcome may be unknown: trust only persist
                log.warning("ingestion of %s stalled: %s", self.spec.name, e)
                if not stalled:
                    stalled = True
                    await self._report_quietly(SourceStatus.STALLED, str(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                await self._resume()
                continue
            for name, state in self.states.items():
                state.apply(writes.get(self.spec.outputs[name].shard_id, []))
            self.binding = Binding(nxt, True)
            self.commits += 1
            backoff = RETRY_BACKOFF_MIN_S
            if stalled:
                stalled = False
                await self._report_quietly(SourceStatus.RUNNING, None)
            await asyncio.sleep(self.spec.tick_s)  # pacing of the generator, not a sync

    async def _report_quietly(self, status: SourceStatus, error: str | None) -> None:
        try:
            await self.report(status, error)
        except FenceError:
            raise
        except Exception as e:
            log.warning("could not record status of %s: %s", self.spec.name, e)
