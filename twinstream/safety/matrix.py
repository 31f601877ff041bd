"""The fault matrix: cell = consensus backend x fault (target, action, phase), plus repeated
upgrades. Each cell brings up a fresh environment, runs the workload through the balancer,
upgrades with the fault injected at its phase, lets the environment settle, takes the final
read and checks the history.

    python -m twinstream.safety.matrix [--quick] [--cell NAME] [--seed N]

`run_cell(cell, seed)` is the unit; a failing cell is replayed with its name and seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from twinstream.orchestrator.record import RolloutRecord, RolloutStatus
from twinstream.safety.checker import check
from twinstream.safety.cluster import Cluster, environmentd_pids
from twinstream.safety.faults import (
    DEAD_S,
    NO_FAULT,
    PAUSE_S,
    PROXY_DELAY_S,
    PROXY_FAULT_S,
    REPLICA_TARGETS,
    Action,
    Fault,
    Phase,
    Target,
    observe_phase,
    replica_pids,
    signal_group,
    signal_pid,
)
from twinstream.safety.history import Outcome
from twinstream.safety.workload import Workload, setup
from twinstream.testing.pgserver import PgServer, start_pg_server

log = logging.getLogger(__name__)

BACKENDS = ("sqlite", "postgres")
#: Load before the upgrade, and after it settled (the "still serving" check).
WARMUP_OPS = 30
AFTER_OPS = 20
#: Waiting for a phase, for the rollout to settle, for ops to complete.
PHASE_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 90.0
OPS_TIMEOUT_S = 60.0
#: Poll interval of the phase watcher (phases like Promoting last ~50 ms).
PHASE_POLL_S = 0.005
#: environmentd parameters of every cell: a shorter catch-up stability period keeps cells short
#: while still leaving a catching-up window to aim at.
ENV_ARGS = ["--system-param", "with_0dt_caught_up_check_stability_period=1s"]
#: What replica cells add: each replica runs as a `clusterd` process (which the fault hits),
#: and the workload reads registers and counters through indexes those replicas maintain.
REPLICA_ENV_ARGS = ["--replica-processes"]
#: How long a generation that stopped running may take for its replica processes to exit.
LEAK_GRACE_S = 15.0


@dataclass(frozen=True)
class Cell:
    backend: str
    fault: Fault
    upgrades: int = 1  # > 1: repeated upgrades with DDL in between (no fault)

    @property
    def replicas(self) -> bool:
        """Replica processes and indexed reads (the replica fault targets need them)."""
        return self.fault.target in REPLICA_TARGETS

    @property
    def name(self) -> str:
        if self.upgrades > 1:
            return f"{self.backend}/repeat-{self.upgrades}"
        return f"{self.backend}/{self.fault.name}"

    @classmethod
    def parse(cls, name: str) -> Cell:
        backend, _, rest = name.partition("/")
        if rest.startswith("repeat-"):
            return cls(backend, NO_FAULT, int(rest.removeprefix("repeat-")))
        if rest == "no-fault":
            return cls(backend, NO_FAULT)
        action_target, _, phase = rest.partition("@")
        action, _, target = action_target.partition("-")
        return cls(backend, Fault(Target(target), Action(action), Phase.parse(phase)))


@dataclass
class CellResult:
    cell: str
    seed: int
    #: upgraded | old-serving | recovered (settled only after the harness restarted the
    #: orchestrator: a wedge an operator would have to clear) | ddl-failed | wedged | error
    outcome: str
    anomalies: int
    anomaly_kinds: dict[str, int]
    client_errors: int
    ops: int
    upgrades: int
    fault_phase: str = ""  # the phase the fault actually hit
    notes: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    #: The most frequent client errors ("SQLSTATE: message" -> count).
    top_errors: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.anomalies == 0 and self.outcome in ("upgraded", "old-serving")


# -- the matrix -------------------------------------------------------------------------------

FAULT_PHASES = (Phase.CATCHING_UP, Phase.READY, Phase.PROMOTING, Phase.JUST_PROMOTED, Phase.CUTOVER)
PROCESS_TARGETS = (
    Target.OLD_ENVD,
    Target.NEW_ENVD,
    Target.OLD_REPLICA,
    Target.NEW_REPLICA,
    Target.BALANCER,
    Target.ORCHESTRATOR,
)


def full_matrix() -> list[Cell]:
    cells: list[Cell] = []
    for backend in BACKENDS:
        cells.append(Cell(backend, NO_FAULT))
        targets = list(PROCESS_TARGETS)
        if backend == "postgres":
            targets.append(Target.CONSENSUS_PG)
        for target in targets:
            for action in (Action.KILL, Action.STOP):
                cells += [Cell(backend, Fault(target, action, p)) for p in FAULT_PHASES]
        if backend == "postgres":
            for action in (Action.DELAY, Action.DROP, Action.PARTITION):
                cells += [Cell(backend, Fault(Target.PROXY, action, p)) for p in FAULT_PHASES]
        cells.append(Cell(backend, NO_FAULT, upgrades=20))
    return cells


def quick_matrix() -> list[Cell]:
    """>= 20 cells: every target and action once, phases spread over them."""
    s, p = "sqlite", "postgres"
    f = Fault
    return [
        Cell(s, NO_FAULT),
        Cell(s, f(Target.OLD_ENVD, Action.KILL, Phase.CATCHING_UP)),
        Cell(s, f(Target.OLD_ENVD, Action.STOP, Phase.PROMOTING)),
        Cell(s, f(Target.NEW_ENVD, Action.KILL, Phase.CATCHING_UP)),
        Cell(s, f(Target.NEW_ENVD, Action.KILL, Phase.JUST_PROMOTED)),
        Cell(s, f(Target.NEW_ENVD, Action.STOP, Phase.READY)),
        Cell(s, f(Target.BALANCER, Action.KILL, Phase.PROMOTING)),
        Cell(s, f(Target.BALANCER, Action.STOP, Phase.CUTOVER)),
        Cell(s, f(Target.ORCHESTRATOR, Action.KILL, Phase.CATCHING_UP)),
        Cell(s, f(Target.ORCHESTRATOR, Action.KILL, Phase.PROMOTING)),
        Cell(s, f(Target.ORCHESTRATOR, Action.STOP, Phase.READY)),
        Cell(s, f(Target.NEW_REPLICA, Action.KILL, Phase.CATCHING_UP)),
        Cell(s, f(Target.OLD_REPLICA, Action.STOP, Phase.PROMOTING)),
        Cell(s, NO_FAULT, upgrades=5),
        Cell(p, NO_FAULT),
        Cell(p, f(Target.CONSENSUS_PG, Action.KILL, Phase.CATCHING_UP)),
        Cell(p, f(Target.CONSENSUS_PG, Action.STOP, Phase.PROMOTING)),
        Cell(p, f(Target.OLD_ENVD, Action.KILL, Phase.READY)),
        Cell(p, f(Target.NEW_ENVD, Action.STOP, Phase.CUTOVER)),
        Cell(p, f(Target.ORCHESTRATOR, Action.KILL, Phase.JUST_PROMOTED)),
        Cell(p, f(Target.NEW_REPLICA, Action.KILL, Phase.JUST_PROMOTED)),
        Cell(p, f(Target.PROXY, Action.DELAY, Phase.CATCHING_UP)),
        Cell(p, f(Target.PROXY, Action.DROP, Phase.PROMOTING)),
        Cell(p, f(Target.PROXY, Action.PARTITION, Phase.READY)),
        Cell(p, f(Target.PROXY, Action.PARTITION, Phase.PROMOTING)),
        Cell(p, NO_FAULT, upgrades=3),
    ]


# -- one cell ---------------------------------------------------------------------------------


@dataclass
class _Run:
    cluster: Cluster
    pg: PgServer | None
    notes: list[str]
    old_gen: int = 0
    restarted: bool = False  # the harness had to restart orchd for the rollout to settle

    async def phase(self) -> Phase:
        record = await self.cluster.record()
        status = None
        if record is not None and record.status is RolloutStatus.PROMOTING:
            status = await self.cluster.generation_status(record, self.old_gen + 1)
        return observe_phase(record, self.old_gen, status)

    async def wait_phase(self, target: Phase) -> Phase:
        loop = asyncio.get_running_loop()
        end = loop.time() + PHASE_TIMEOUT_S
        while loop.time() < end:
            seen = await self.phase()
            if seen >= target:
                return seen
            await asyncio.sleep(PHASE_POLL_S)
        raise TimeoutError(f"phase {target.label} not reached")

    async def wait_record(
        self, cond: Callable[[RolloutRecord], bool], timeout_s: float
    ) -> RolloutRecord | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            record = await self.cluster.record()
            if record is not None and cond(record):
                return record
            await asyncio.sleep(0.05)  # poll interval of the record
        return None

    # -- faults ----------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        """Apply `fault` and undo it the way a service manager or the network would."""
        c = self.cluster
        if fault.target is Target.PROXY:
            assert c.proxy is not None, "proxy faults need the postgres backend"
            if fault.action is Action.DELAY:
                c.proxy.delay_s = PROXY_DELAY_S
                await asyncio.sleep(PROXY_FAULT_S)  # the fault's duration
                c.proxy.heal()
            elif fault.action is Action.DROP:
                c.proxy.drop()
            else:
                c.proxy.partition()
                await asyncio.sleep(PAUSE_S)  # the partition's duration
                c.proxy.heal()
            return
        if fault.target is Target.CONSENSUS_PG:
            assert self.pg is not None
            if fault.action is Action.KILL:
                await asyncio.to_thread(self.pg.kill9)
                await asyncio.sleep(DEAD_S)  # down time
                await asyncio.to_thread(self.pg.start)
            else:
                await asyncio.to_thread(self.pg.sigstop)
                await asyncio.sleep(PAUSE_S)  # frozen time
                await asyncio.to_thread(self.pg.sigcont)
            return
        if fault.target in REPLICA_TARGETS:
            # environmentd's process orchestrator restarts a killed replica (with backoff).
            gen = self.old_gen if fault.target is Target.OLD_REPLICA else self.old_gen + 1
            pids = replica_pids(c.data_dir, gen)
            if not pids:
                self.notes.append(f"{fault.target.value} not running at {fault.phase.label}")
                return
            await self._signal(pids, fault.action, group=True, restart=None)
            return
        pid, group, restart = await self._process(fault.target)
        if pid is None:
            self.notes.append(f"{fault.target.value} not running at {fault.phase.label}")
            return
        await self._signal([pid], fault.action, group=group, restart=restart)

    async def _signal(self, pids: list[int], action: Action, *, group: bool, restart: Any) -> None:
        send = signal_group if group else signal_pid
        if action is Action.KILL:
            for pid in pids:
                send(pid, signal.SIGKILL)
            if restart is not None:
                await asyncio.sleep(DEAD_S)  # down time before the service manager restarts it
                await restart()
        else:
            for pid in pids:
                send(pid, signal.SIGSTOP)
            await asyncio.sleep(PAUSE_S)  # frozen time
            for pid in pids:
                send(pid, signal.SIGCONT)

    async def _process(self, target: Target) -> tuple[int | None, bool, Any]:
        c = self.cluster
        if target is Target.BALANCER:
            assert c.balancerd is not None
            return c.balancerd.pid, False, c.start_balancer
        if target is Target.ORCHESTRATOR:
            assert c.orchd is not None
            return c.orchd.pid, False, c.start_orchd
        record = await c.record()
        gen = self.old_gen if target is Target.OLD_ENVD else self.old_gen + 1
        ep = None if record is None else record.endpoints.get(str(gen))
        return (None if ep is None else ep.pid), True, None


async def _wait_ops(work: Workload, n: int, timeout_s: float) -> bool:
    """Wait until `n` more operations completed ok."""

    def ok() -> int:
        return sum(1 for op in work.history.ops if op.outcome is Outcome.OK)

    target = ok() + n
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while ok() < target:
        if loop.time() > end:
            return False
        await asyncio.sleep(0.05)  # poll interval of the history
    return True


async def _upgrade_once(run: _Run, fault: Fault, work: Workload) -> str:
    """One upgrade with `fault`; returns the phase the fault hit."""
    c = run.cluster
    code, body = await c.control("POST", "/upgrade", {"strategy": "ManuallyPromote"})
    if code != 202:
        raise RuntimeError(f"upgrade refused: {code} {body}")
    hit = ""
    injection: asyncio.Task[None] | None = None
    if fault.target is not Target.NONE and fault.phase <= Phase.READY:
        seen = await run.wait_phase(fault.phase)
        hit = seen.label
        injection = asyncio.create_task(run.inject(fault))
    old = run.old_gen

    def decided(r: RolloutRecord) -> bool:
        return (
            r.status in (RolloutStatus.READY_TO_PROMOTE, RolloutStatus.FAILED_DEPLOY)
            or r.active_generation > old
        )

    ready = await run.wait_record(decided, SETTLE_TIMEOUT_S)
    if ready is not None and ready.status is RolloutStatus.READY_TO_PROMOTE:
        for _ in range(200):  # the orchestrator may be frozen or restarting
            code, body = await c.control("POST", "/promote")
            if code == 202:
                break
            await asyncio.sleep(0.1)  # retry pause while orchd comes back
            record = await c.record()
            if record is None or record.status is not RolloutStatus.READY_TO_PROMOTE:
                break
        if fault.target is not Target.NONE and fault.phase > Phase.READY:
            seen = await run.wait_phase(fault.phase)
            hit = seen.label
            injection = asyncio.create_task(run.inject(fault))
    if injection is not None:
        await injection
    return hit


async def _settle(run: _Run) -> RolloutRecord | None:
    """Wait for a terminal record and an idle orchestrator; restart orchd once if needed."""
    c = run.cluster

    def terminal(r: RolloutRecord) -> bool:
        if r.status is RolloutStatus.FAILED_DEPLOY:
            return True
        return r.status is RolloutStatus.APPLIED and list(r.endpoints) == [str(r.active_generation)]

    for attempt in range(2):
        record = await run.wait_record(terminal, SETTLE_TIMEOUT_S / 2)
        if record is not None:
            loop = asyncio.get_running_loop()
            end = loop.time() + 10.0
            while loop.time() < end:
                code, body = await c.control("GET", "/status")
                if code == 200 and not body.get("rollout_running"):
                    return record
                await asyncio.sleep(0.1)  # poll interval of the control API
        if attempt == 0:
            # Where is every generation stuck? environmentd logs its asyncio tasks on SIGUSR1.
            for pid in environmentd_pids(c.data_dir):
                signal_pid(pid, signal.SIGUSR1)
            await asyncio.sleep(1.0)  # time to write the dump before the restart
            run.notes.append(
                "rollout did not settle: task stacks logged (env/environmentd-gen-*.log), "
                "orchestrator restarted"
            )
            run.restarted = True
            if c.orchd is not None and c.orchd.returncode is None:
                signal_pid(c.orchd.pid, signal.SIGKILL)
                await c.orchd.wait()
            await c.start_orchd()
    return None


async def _ddl(conninfo: str, i: int) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE ddl_{i} (a int)")
        await conn.execute(f"INSERT INTO ddl_{i} VALUES ({i})")
        await conn.execute(f"CREATE VIEW ddl_v{i} AS SELECT a + 1 AS b FROM ddl_{i}")
        if i > 0:
            await conn.execute(f"DROP VIEW ddl_v{i - 1}")


async def _leaked_replicas(run: _Run) -> list[str]:
    """Replica processes of generations that no longer run (a crashed or fenced environmentd
    must not leave its clusterd processes behind); waits a little for them to exit."""
    record = await run.cluster.record()
    if record is None:
        return []
    loop = asyncio.get_running_loop()
    end = loop.time() + LEAK_GRACE_S
    while True:
        leaked = {
            g: pids
            for g in range(record.active_generation + 2)
            if str(g) not in record.endpoints and (pids := replica_pids(run.cluster.data_dir, g))
        }
        if not leaked or loop.time() > end:
            break
        await asyncio.sleep(0.2)  # poll interval while processes exit
    return [f"leaked replica processes of generation {g}: {p}" for g, p in leaked.items()]


async def run_cell(
    cell: Cell, seed: int, *, pg: PgServer | None = None, root: Path | None = None
) -> CellResult:
    """Run one cell in a fresh environment (under `root`, default a temp dir)."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ts-safety-")))
        pg_url = None
        if cell.backend == "postgres":
            assert pg is not None, "postgres cells need a PgServer"
            pg_url = await asyncio.to_thread(pg.create_database, f"safety_{seed}_{id(root)}")
        extra = ENV_ARGS + (REPLICA_ENV_ARGS if cell.replicas else [])
        cluster = Cluster(root, cell.backend, pg, pg_url, extra_args=extra)
        run = _Run(cluster, pg, [])
        try:
            return await _run(cell, seed, run)
        except Exception as e:  # a harness failure is a result, not a crash of the matrix
            log.exception("cell %s failed", cell.name)
            return CellResult(cell.name, seed, "error", 0, {}, 0, 0, 0, notes=[repr(e)])
        finally:
            await cluster.close()


async def _run(cell: Cell, seed: int, run: _Run) -> CellResult:
    c = run.cluster
    await c.start()
    await setup(c.conninfo(), indexed=cell.replicas)
    work = Workload(c.conninfo(), seed=seed)
    upgrades, outcome, hit, ddl_failed = 0, "upgraded", "", False
    async with asyncio.TaskGroup() as tg:
        load = tg.create_task(work.run())
        try:
            if not await _wait_ops(work, WARMUP_OPS, OPS_TIMEOUT_S):
                run.notes.append("warm-up load did not complete")
            for i in range(cell.upgrades):
                record = await c.record()
                run.old_gen = 0 if record is None else record.active_generation
                hit = await _upgrade_once(run, cell.fault, work) or hit
                record = await _settle(run)
                if record is None:
                    outcome = "wedged"
                    break
                if run.restarted:
                    outcome = "recovered"  # settled only after an orchestrator restart
                if record.active_generation > run.old_gen:
                    upgrades += 1
                elif outcome != "recovered":
                    outcome = "old-serving"
                if cell.upgrades > 1:
                    try:
                        await _ddl(c.conninfo(), i)
                    except psycopg.Error as e:  # a twinstream failure to report, not ours
                        run.notes.append(f"DDL {i} failed: {e.sqlstate}: {e}".splitlines()[0])
                        ddl_failed = True
                if not await _wait_ops(work, AFTER_OPS, OPS_TIMEOUT_S):
                    run.notes.append("not serving after the upgrade")
                    outcome = "wedged"
                    break
        finally:
            work.stop.set()
        await load
    if ddl_failed and outcome in ("upgraded", "old-serving"):
        outcome = "ddl-failed"
    if not await work.final_read(c.conninfo()):
        run.notes.append("final read failed")
        outcome = "wedged"
    if cell.replicas:
        run.notes += await _leaked_replicas(run)
    result = check(work.history.ops)
    counts = work.history.counts()
    return CellResult(
        cell.name,
        seed,
        outcome,
        result.total,
        dict(result.counts),
        counts[Outcome.FAIL.value] + counts[Outcome.INFO.value],
        len(work.history.ops),
        upgrades,
        hit,
        run.notes,
        [a.detail for a in result.anomalies[:5]],
        dict(sorted(work.errors.items(), key=lambda kv: -kv[1])[:5]),
    )


# -- many cells -------------------------------------------------------------------------------


def cell_dir(keep: Path, cell: Cell, seed: int) -> Path:
    """Where a kept cell's logs go: `KEEP/<backend>_<fault>-seed<S>`."""
    return keep / f"{cell.name.replace('/', '_').replace('@', '_at_')}-seed{seed}"


async def run_cells(
    cells: list[Cell],
    seed: int,
    progress: Callable[[CellResult], None] | None = None,
    *,
    keep: Path | None = None,
) -> list[CellResult]:
    """Run `cells` in order, cell i with seed + i; `keep`: a directory for every cell's logs."""
    pg: PgServer | None = None
    if any(cell.backend == "postgres" for cell in cells):
        pg = await asyncio.to_thread(start_pg_server)
    results = []
    try:
        for i, cell in enumerate(cells):
            root = None
            if keep is not None:
                root = cell_dir(keep, cell, seed + i)
                root.mkdir(parents=True, exist_ok=True)
            result = await run_cell(cell, seed + i, pg=pg, root=root)
            results.append(result)
            if progress is not None:
                progress(result)
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.stop)
    return results


def summarize(results: list[CellResult]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    return {
        "cells": len(results),
        "anomalies": sum(r.anomalies for r in results),
        "client_errors": sum(r.client_errors for r in results),
        "upgrades": sum(r.upgrades for r in results),
        "outcomes": outcomes,
        "failed_cells": [f"{r.cell} seed={r.seed}" for r in results if not r.passed],
    }


def table(results: list[CellResult]) -> str:
    head = f"{'cell':44} {'outcome':12} {'hit':14} {'anom':>4} {'errs':>5} {'ops':>6}  notes"
    lines = [head, "-" * len(head)]
    for r in results:
        notes = "; ".join(r.notes + [f"{k}={v}" for k, v in r.anomaly_kinds.items()])
        lines.append(
            f"{r.cell:44} {r.outcome:12} {r.fault_phase:14} {r.anomalies:>4} "
            f"{r.client_errors:>5} {r.ops:>6}  {notes}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinstream.safety.matrix")
    parser.add_argument("--quick", action="store_true", help="the quick matrix (>= 20 cells)")
    parser.add_argument("--cell", action="append", help="run only this cell (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON line of results")
    parser.add_argument(
        "--only", action="append", help="keep the cells whose name contains this (repeatable)"
    )
    parser.add_argument("--backend", choices=BACKENDS, help="only this consensus backend's cells")
    parser.add_argument(
        "--target", action="append", help="only cells faulting this target (repeatable)"
    )
    parser.add_argument("--keep", type=Path, help="keep each cell's logs under this directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.cell:
        cells = [Cell.parse(name) for name in args.cell]
    else:
        cells = quick_matrix() if args.quick else full_matrix()
    if args.only:
        cells = [c for c in cells if any(part in c.name for part in args.only)]
    if args.backend:
        cells = [c for c in cells if c.backend == args.backend]
    if args.target:
        cells = [c for c in cells if c.fault.target.value in args.target]

    def progress(r: CellResult) -> None:
        print(f"{table([r]).splitlines()[-1]} seed={r.seed}", file=sys.stderr, flush=True)

    results = asyncio.run(run_cells(cells, args.seed, progress, keep=args.keep))
    if args.json:
        out = summarize(results) | {"results": [dataclasses.asdict(r) for r in results]}
        print(json.dumps(out))
    else:
        print(table(results))
        print(json.dumps(summarize(results)))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
