"""The process orchestrator with a tiny stand-in service (fast to start): a crash is
restarted and counted, a live process is adopted by a new orchestrator (an environmentd that
restarted) and still watched, stop ends only the named process, and two generations' services
in one directory never touch each other."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from twinstream.orchestrator.processes import ProcessOrchestrator, _alive

SERVICE = """
import json, os, signal, socket, sys, time
path = sys.argv[sys.argv.index("--ports-file") + 1]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
info = {"pid": os.getpid(), "port": s.getsockname()[1], "name": sys.argv[1]}
with open(path + ".tmp", "w") as f:
    json.dump(info, f)
os.replace(path + ".tmp", path)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
"""
WAIT_S = 60.0


def command(name: str) -> list[str]:
    return [sys.executable, "-c", SERVICE, name]


async def wait_for(cond: object, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_restart_adopt_stop_and_generations(tmp_path: Path) -> None:
    gen1, gen2 = ProcessOrchestrator(tmp_path), ProcessOrchestrator(tmp_path)
    a, b = "c-replica-1-gen-1", "c-replica-1-gen-2"
    try:
        sa = gen1.ensure(a, command(a))
        sb = gen2.ensure(b, command(b))
        assert gen1.ensure(a, command(a)) is sa  # idempotent
        await gen1.wait_ready(a, WAIT_S)
        await gen2.wait_ready(b, WAIT_S)
        pid_a, pid_b = sa.pid, sb.pid
        assert pid_a is not None and pid_b is not None

        # A crash is restarted (new pid, new port) and counted; the other generation's
        # process is untouched.
        gen1.kill(a, signal.SIGKILL)
        await wait_for(lambda: sa.restarts == 1 and sa.address() is not None, "the restart")
        assert sa.pid != pid_a and sa.exit_codes == [-signal.SIGKILL]
        assert sb.restarts == 0 and sb.pid == pid_b and _alive(pid_b)

        # The orchestrator goes away (environmentd crashed): the process keeps running and a
        # new orchestrator adopts it instead of starting another.
        pid_a = sa.pid
        assert pid_a is not None
        await gen1.detach()
        assert _alive(pid_a)
        gen1 = ProcessOrchestrator(tmp_path)
        sa = gen1.ensure(a, command(a))
        assert sa.adopted and sa.pid == pid_a
        assert await gen1.wait_ready(a, WAIT_S) == ("127.0.0.1", sa.port)

        # An adopted process that dies is noticed (pid polling) and restarted.
        os.kill(pid_a, signal.SIGKILL)
        await wait_for(lambda: sa.restarts == 1 and sa.address() is not None, "adopted restart")
        assert sa.pid != pid_a and not sa.adopted

        # stop: SIGTERM, exit 0, ports file gone; the other generation still runs.
        assert await gen1.stop(a) == 0
        assert not (tmp_path / f"{a}.json").exists()
        assert _alive(pid_b) and sb.restarts == 0
    finally:
        await gen1.stop_all()
        await gen2.stop_all()
    assert not _alive(pid_b)


async def test_stop_leftovers_of_a_torn_down_generation(tmp_path: Path) -> None:
    """A generation's environmentd died without stopping its replicas (detach leaves them
    running): tearing that generation down stops exactly its processes, not the next one's."""
    from twinstream.orchestrator.processes import stop_leftovers

    orch = ProcessOrchestrator(tmp_path)
    names = ["c-replica-1-gen-1", "c-replica-2-gen-1", "c-replica-1-gen-11", "c-replica-1-gen-2"]
    pids: dict[str, int | None] = {}
    try:
        for name in names:
            orch.ensure(name, command(name))
        for name in names:
            await orch.wait_ready(name, WAIT_S)
            pids[name] = orch.services[name].pid
        await orch.detach()  # the environmentd is gone; its processes keep running
        assert all(_alive(pid) for pid in pids.values() if pid is not None)

        stopped = await stop_leftovers(tmp_path, "-gen-1")
        assert stopped == ["c-replica-1-gen-1", "c-replica-2-gen-1"]
        for name, pid in pids.items():
            assert pid is not None
            assert _alive(pid) == (name not in stopped), name
        assert await stop_leftovers(tmp_path, "-gen-1") == []  # nothing left: a no-op
    finally:
        for pid in pids.values():
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
