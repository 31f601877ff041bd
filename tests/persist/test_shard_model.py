"""Model-based test of one persist shard: a hypothesis state machine against an in-memory model.

The model keeps every update ever appended (with its original time), the upper, the read holds
(leased with their expiry, critical with their opaque token) and the since. After every step the
stored shard state must agree with the model, every read (snapshot, listen) must agree with the
model's updates, and exactly the blobs that the state references must exist. Two `Shard` objects
write to the same shard, so each one's cached state goes stale in turn. Which batches compaction
merges is the shard's business (not modelled); that reads at times >= since do not change is not.

Expiry is modelled the way the shard does it: leases that ran out are dropped only when some
operation writes a new state version (`maintenance` is one), so the stored since moves then.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from twinstream.clock import ManualClock
from twinstream.persist import (
    LeaseExpired,
    OpaqueMismatch,
    PersistClient,
    Progress,
    ReadBeforeSince,
    ReadNotYetAvailable,
    Updates,
    UpperMismatch,
    consolidate,
    consolidate_rows,
    limits,
)
from twinstream.persist.fileblob import FileBlob
from twinstream.persist.machine import CriticalReadHandle, LeasedReadHandle, Shard
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.persist.sqlite import SqliteConsensus

T = TypeVar("T")

SHARD = "model"
LEASE_MS = 1_000
LEASED_IDS = ("r0", "r1", "r2")
CRITICAL_IDS = ("c0", "c1")
#: A row padded so that three of them exceed the inline batch limit.
BIG_PAD = "p" * 1_500
#: Upper bound on how long one listen may take before the test calls it a hang.
LISTEN_DEADLINE_S = 10.0

Update = tuple[tuple[Any, ...], int, int]


@dataclass
class Model:
    now_ms: int
    upper: int = 0
    since: int = 0
    updates: list[Update] = field(default_factory=list)
    #: reader id -> (since, expires_ms), as stored (expired ones linger until a write)
    leased: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: reader id -> (since, opaque)
    critical: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: the largest hold ever placed: the only way since can pass the upper
    max_hold: int = 0

    def holds(self) -> list[int]:
        return [s for s, _ in self.leased.values()] + [s for s, _ in self.critical.values()]

    def recompute_since(self) -> None:
        holds = self.holds()
        if holds:
            self.since = max(self.since, min(holds))

    def expire(self) -> None:
        """What every state write does first: drop leases whose time ran out."""
        self.leased = {k: v for k, v in self.leased.items() if v[1] > self.now_ms}
        self.recompute_since()

    def live_leased(self) -> set[str]:
        return {k for k, (_s, exp) in self.leased.items() if exp > self.now_ms}

    def place_hold(self, value: int) -> None:
        self.max_hold = max(self.max_hold, value)

    def rows_at(self, as_of: int) -> dict[tuple[Any, ...], int]:
        return dict(consolidate_rows([u for u in self.updates if u[1] <= as_of]))

    def updates_between(self, lo_excl: int, hi_excl: int) -> dict[tuple[Any, int], int]:
        ups = [u for u in self.updates if lo_excl < u[1] < hi_excl]
        return {(r, t): d for r, t, d in consolidate(ups)}


def _small_updates(lo: int, hi: int) -> st.SearchStrategy[list[Update]]:
    """Updates of a few small rows at times in [lo, hi); diffs include cancelling ones."""
    if hi <= lo:
        return st.just([])
    return st.lists(
        st.tuples(
            st.tuples(st.integers(0, 4)),
            st.integers(lo, hi - 1),
            st.integers(-2, 2),
        ),
        max_size=6,
    )


def _big_updates(time: int) -> list[Update]:
    """A batch whose encoding is > INLINE_BATCH_MAX_BYTES, so it is written as a blob."""
    return [((100 + i, BIG_PAD), time, 1) for i in range(3)]


class ShardMachine(RuleBasedStateMachine):
    backend = "mem"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp: str | None = None
        self.clock = ManualClock()
        if self.backend == "mem":
            self.client = PersistClient(MemConsensus(), MemBlob(), self.clock)
        else:
            self.tmp = tempfile.mkdtemp(prefix="persist-model-")
            root = Path(self.tmp)
            self.client = PersistClient(
                SqliteConsensus(root / "consensus.db"), FileBlob(root / "blob"), self.clock
            )
        self.shard = self.client.open(SHARD, lease_ms=LEASE_MS)
        # a second writer on the same consensus: each one's cached state goes stale in turn
        self.other = self.client.open(SHARD, lease_ms=LEASE_MS)
        self.model = Model(now_ms=self.clock.now_ms())
        self.leased_handles: dict[str, LeasedReadHandle] = {}
        self.critical_handles: dict[str, CriticalReadHandle] = {}
        self.seen_upper = 0
        self.seen_since = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.client.close())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def _expect_raises(self, exc: type[BaseException], fn: Callable[[], Coroutine[Any, Any, Any]]):
        with pytest.raises(exc) as info:
            self.run(fn())
        return info.value

    def _valid_as_of(self, data: st.DataObject, *, below: int) -> int | None:
        lo = self.model.since
        if lo >= below:
            return None
        return data.draw(st.integers(lo, below - 1), label="as_of")

    async def _listen(self, as_of: int, upper: int) -> tuple[list[list[Update]], list[int]]:
        batches: list[list[Update]] = []
        progress: list[int] = []
        async with contextlib.aclosing(self.shard.listen(as_of)) as events:
            async for ev in events:
                if isinstance(ev, Updates):
                    batches.append(ev.updates)
                else:
                    assert isinstance(ev, Progress)
                    progress.append(ev.upper)
                    if ev.upper >= upper:
                        break
        return batches, progress

    async def _snapshots(self, as_ofs: list[int]) -> dict[int, dict[Any, int]]:
        return {a: dict(await self.shard.snapshot(a)) for a in as_ofs}

    def _append_done(self, updates: list[Update], new_upper: int) -> None:
        m = self.model
        m.expire()
        m.upper = new_upper
        m.updates.extend(updates)

    # -- writes ----------------------------------------------------------------------------

    def _writer(self, other: bool) -> Shard:
        return self.other if other else self.shard

    @rule(data=st.data(), span=st.integers(0, 4), big=st.booleans(), other=st.booleans())
    def append(self, data: st.DataObject, span: int, big: bool, other: bool) -> None:
        lo, hi = self.model.upper, self.model.upper + span
        updates = data.draw(_small_updates(lo, hi), label="updates")
        if big and span > 0:
            updates = updates + _big_updates(data.draw(st.integers(lo, hi - 1), label="big_t"))
        out = self.run(self._writer(other).compare_and_append(updates, lo, hi))
        assert out is None, out
        self._append_done(updates, hi)

    @rule(data=st.data(), n=st.integers(1, limits.COMPACTION_BATCH_COUNT + 2))
    def append_many(self, data: st.DataObject, n: int) -> None:
        """Several one-time batches in a row: enough of them trigger the writer's compaction."""
        for _ in range(n):
            writer = self._writer(data.draw(st.booleans(), label="other"))
            lo = self.model.upper
            updates = data.draw(
                st.lists(
                    st.tuples(st.tuples(st.integers(0, 4)), st.just(lo), st.integers(-1, 2)),
                    min_size=1,
                    max_size=3,
                ),
                label="updates",
            )
            if data.draw(st.integers(0, 4), label="big") == 0:
                updates = updates + _big_updates(lo)
            assert self.run(writer.compare_and_append(updates, lo, lo + 1)) is None
            self._append_done(updates, lo + 1)

    @rule(data=st.data(), big=st.booleans(), other=st.booleans())
    def append_wrong_upper(self, data: st.DataObject, big: bool, other: bool) -> None:
        upper = self.model.upper
        expected = data.draw(st.integers(0, upper + 4), label="expected")
        expected += expected >= upper  # anything but the upper
        new_upper = expected + data.draw(st.integers(1, 3), label="span")
        updates = data.draw(_small_updates(expected, new_upper), label="updates")
        if big:
            updates = updates + _big_updates(expected)
        out = self.run(self._writer(other).compare_and_append(updates, expected, new_upper))
        assert out == UpperMismatch(SHARD, expected, upper)
        # nothing changed: the model is untouched (no state version was written)

    @rule(other=st.booleans())
    def compact(self, other: bool) -> None:
        """Whatever run of batches compaction picks, reads at times >= since do not change."""
        m = self.model
        valid = list(range(m.since, m.upper))
        as_ofs = valid if len(valid) <= 12 else valid[:6] + valid[-6:]
        before = self.run(self._snapshots(as_ofs))
        n_before = len(self.run(self.shard.fetch_state()).batches)
        replaced = self.run(self._writer(other).compact())
        n_after = len(self.run(self.shard.fetch_state()).batches)
        if replaced:
            assert n_after < n_before
            m.expire()  # it wrote a state version: leases that ran out are gone
        else:
            assert n_after == n_before
        # the write may have expired leases and moved since: compare what is still readable
        after = self.run(self._snapshots([a for a in as_ofs if a >= m.since]))
        assert after == {a: rows for a, rows in before.items() if a >= m.since}

    # -- reads -----------------------------------------------------------------------------

    @rule(data=st.data())
    def snapshot(self, data: st.DataObject) -> None:
        as_of = self._valid_as_of(data, below=self.model.upper)
        if as_of is None:
            return
        got = self.run(self.shard.snapshot(as_of))
        assert len({row for row, _ in got}) == len(got), f"not consolidated: {got}"
        assert all(d != 0 for _, d in got)
        assert dict(got) == self.model.rows_at(as_of)

    @rule(data=st.data())
    def snapshot_invalid(self, data: st.DataObject) -> None:
        m = self.model
        choices = [("after", m.upper + d) for d in range(3)]
        if m.since > 0:
            choices.append(("before", data.draw(st.integers(0, m.since - 1), label="before")))
        kind, as_of = data.draw(st.sampled_from(choices), label="invalid")
        if as_of < m.since:
            err = self._expect_raises(ReadBeforeSince, lambda: self.shard.snapshot(as_of))
        else:
            assert kind == "after"
            err = self._expect_raises(ReadNotYetAvailable, lambda: self.shard.snapshot(as_of))
        assert SHARD in str(err)

    @rule(data=st.data())
    def listen(self, data: st.DataObject) -> None:
        m = self.model
        # Registering the listen's hold is a state write, which first drops expired leases:
        # the as-of must be valid against the since *after* that expiry.
        saved = (dict(m.leased), m.since)
        m.expire()
        # listen yields nothing (and waits) unless some time in (as_of, upper) exists
        as_of = self._valid_as_of(data, below=m.upper - 1)
        if as_of is None:
            m.leased, m.since = saved  # nothing was written: expiry did not happen
            return
        upper = m.upper
        batches, progress = self.run(
            asyncio.wait_for(self._listen(as_of, upper), LISTEN_DEADLINE_S)
        )
        assert progress == sorted(progress) and progress[-1] == upper
        got: dict[tuple[Any, int], int] = {}
        last = as_of
        for batch in batches:
            times = [t for _r, t, _d in batch]
            assert times == sorted(times), f"listen batch out of time order: {batch}"
            assert all(t > last for t in times), f"listen went back in time: {batch}"
            last = max(times)
            for row, t, d in batch:
                assert d != 0 and (row, t) not in got, f"not consolidated: {batch}"
                got[(row, t)] = d
        assert got == m.updates_between(as_of, upper)
        # listen held a leased read hold at as_of while it ran, then released it
        m.expire()
        m.place_hold(as_of)
        m.leased["listen"] = (as_of, m.now_ms + LEASE_MS)
        m.recompute_since()
        del m.leased["listen"]

    # -- leased readers --------------------------------------------------------------------

    @rule(rid=st.sampled_from(LEASED_IDS), data=st.data())
    def leased_register(self, rid: str, data: st.DataObject) -> None:
        m = self.model
        want = data.draw(st.integers(0, m.upper + 3), label="since")
        handle = self.run(self.shard.leased_reader(rid, want))
        self.leased_handles[rid] = handle
        m.expire()
        hold = max(want, m.since)
        m.place_hold(hold)
        m.leased[rid] = (hold, m.now_ms + LEASE_MS)
        m.recompute_since()
        assert handle.since == hold

    @precondition(lambda self: self.leased_handles)
    @rule(data=st.data())
    def leased_heartbeat(self, data: st.DataObject) -> None:
        m = self.model
        rid = data.draw(st.sampled_from(sorted(self.leased_handles)), label="rid")
        handle = self.leased_handles[rid]
        if rid not in m.live_leased():
            self._expect_raises(LeaseExpired, handle.heartbeat)
            return
        self.run(handle.heartbeat())
        m.expire()
        since, exp = m.leased[rid]
        m.leased[rid] = (since, max(exp, m.now_ms + LEASE_MS))

    @precondition(lambda self: self.leased_handles)
    @rule(data=st.data())
    def leased_downgrade(self, data: st.DataObject) -> None:
        m = self.model
        rid = data.draw(st.sampled_from(sorted(self.leased_handles)), label="rid")
        want = data.draw(st.integers(0, m.upper + 3), label="since")
        handle = self.leased_handles[rid]
        if rid not in m.live_leased():
            self._expect_raises(LeaseExpired, lambda: handle.downgrade_since(want))
            return
        self.run(handle.downgrade_since(want))
        m.expire()
        hold = max(m.leased[rid][0], want)
        m.place_hold(hold)
        m.leased[rid] = (hold, m.now_ms + LEASE_MS)
        m.recompute_since()
        assert handle.since == hold

    @precondition(lambda self: self.leased_handles)
    @rule(data=st.data())
    def leased_expire(self, data: st.DataObject) -> None:
        m = self.model
        rid = data.draw(st.sampled_from(sorted(self.leased_handles)), label="rid")
        self.run(self.leased_handles[rid].expire())
        m.expire()
        m.leased.pop(rid, None)
        m.recompute_since()

    @rule(ms=st.integers(0, 2 * LEASE_MS), maintenance=st.booleans(), other=st.booleans())
    def advance_clock(self, ms: int, maintenance: bool, other: bool = False) -> None:
        self.clock.advance(ms)
        self.model.now_ms += ms
        if maintenance:
            self.run(self._writer(other).maintenance())
            self.model.expire()

    @precondition(lambda self: self.model.leased)
    @rule(data=st.data(), delta=st.sampled_from([-1, 0, 1]), maintenance=st.booleans())
    def advance_clock_to_lease_edge(
        self, data: st.DataObject, delta: int, maintenance: bool
    ) -> None:
        """Move the clock to just before / at / after a lease's expiry (expired at == expiry)."""
        m = self.model
        rid = data.draw(st.sampled_from(sorted(m.leased)), label="rid")
        target = m.leased[rid][1] + delta
        self.advance_clock(max(0, target - m.now_ms), maintenance)

    # -- critical readers ------------------------------------------------------------------

    @rule(cid=st.sampled_from(CRITICAL_IDS), opaque=st.integers(0, 3))
    def critical_register(self, cid: str, opaque: int) -> None:
        m = self.model
        self.critical_handles[cid] = self.run(self.shard.critical_reader(cid, opaque))
        m.expire()
        if cid not in m.critical:
            m.critical[cid] = (m.since, opaque)

    @precondition(lambda self: self.critical_handles)
    @rule(data=st.data(), correct=st.booleans())
    def critical_downgrade(self, data: st.DataObject, correct: bool) -> None:
        m = self.model
        cid = data.draw(st.sampled_from(sorted(self.critical_handles)), label="cid")
        handle = self.critical_handles[cid]
        cur_since, cur_opaque = m.critical[cid]
        want = data.draw(st.integers(0, m.upper + 2), label="since")
        if not correct:
            stale = cur_opaque - data.draw(st.integers(1, 3), label="stale_by")
            err = self._expect_raises(
                OpaqueMismatch, lambda: handle.compare_and_downgrade_since(stale, stale + 1, want)
            )
            assert (err.expected, err.actual, err.reader_id) == (stale, cur_opaque, cid)
            return
        got = self.run(handle.compare_and_downgrade_since(cur_opaque, cur_opaque + 1, want))
        m.expire()
        hold = max(cur_since, want)
        m.place_hold(hold)
        m.critical[cid] = (hold, cur_opaque + 1)
        m.recompute_since()
        assert got == hold

    # -- invariants ------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        state = self.run(self.shard.fetch_state())
        assert (state.seqno, state.upper, state.since) == (-1, 0, 0)

    @invariant()
    def agrees_with_model(self) -> None:
        m = self.model
        state = self.run(self.shard.fetch_state())
        # upper and since never regress
        assert state.upper >= self.seen_upper, (state.upper, self.seen_upper)
        assert state.since >= self.seen_since, (state.since, self.seen_since)
        # since is the min of the holds, but never goes back
        holds = state.holds()
        if holds:
            assert state.since == max(self.seen_since, min(holds))
        # since passes the upper only when some reader asked for a hold beyond the upper
        assert state.since <= max(state.upper, m.max_hold)
        self.seen_upper, self.seen_since = state.upper, state.since

        assert state.upper == m.upper
        assert state.since == m.since
        # the writer compacts whenever an append leaves more than this many batches
        assert len(state.batches) <= limits.COMPACTION_BATCH_COUNT
        assert {k: (r.since, r.expires_ms) for k, r in state.leased.items()} == m.leased
        assert {k: (r.since, r.opaque) for k, r in state.critical.items()} == m.critical
        # every batch is a well-formed, non-empty time range
        for part in state.batches:
            assert part.lower < part.upper and part.count > 0
        # blobs: exactly the referenced ones exist (no orphan from a lost CAS or compaction)
        live = {p.blob_key(SHARD) for p in state.batches if p.inline is None}
        keys = set(self.run(self.client.blob.list_keys(f"{SHARD}/")))
        assert keys == live


class SqliteShardMachine(ShardMachine):
    backend = "sqlite"


_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}

TestShardModelMem = ShardMachine.TestCase
TestShardModelMem.settings = settings(max_examples=75, stateful_step_count=40, **_COMMON)

TestShardModelSqlite = SqliteShardMachine.TestCase
TestShardModelSqlite.settings = settings(max_examples=20, stateful_step_count=30, **_COMMON)
