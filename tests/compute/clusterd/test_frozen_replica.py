"""Bounded calls to replicas: no controller call waits for ever on a replica that is frozen
(SIGSTOP: its connection open, nothing answered), never listens, or accepts connections and
never answers. With real `clusterd` processes: a frozen one of two replicas leaves the
controller's frontiers, statuses, commands and peek targets answering (the frozen replica is
`offline` with a reason and not hydrated; the other is unaffected); commands recorded while it
was frozen reach it once thawed, it shows `online` again and its frontiers advance."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from _runtime_helpers import FILTER_SQL, Tables, inputs_of, plan_of

from twinstream.controller.compute import ComputeController, ReplicaSpec
from twinstream.controller.protocol import DataflowDesc
from twinstream.controller.remote import RemoteReplica, ReplicaUnavailable, ReplicaUnresponsive
from twinstream.controller.replica_processes import ProcessReplica
from twinstream.persist import PersistClient

#: Small per-call bound so the test is quick; generous next to a live replica's milliseconds.
CALL_S = 1.5
#: A deadline for things that must happen (never a speed check: the machine is loaded).
WAIT_S = 120.0
CLUSTER = "u1"

T = TypeVar("T")


def desc(id: str) -> DataflowDesc:
    return DataflowDesc(id, plan_of(FILTER_SQL), inputs_of(FILTER_SQL), index_key=(0,))


async def returns(call: Awaitable[T], what: str) -> T:
    """`await call`, failing the test if it does not return within `WAIT_S` (a hang)."""
    deadline = asyncio.timeout(WAIT_S)
    try:
        async with deadline:
            return await call
    except TimeoutError:
        if deadline.expired():  # (not the call's own bound: that is a `TimeoutError` too)
            raise AssertionError(f"{what} still waits on a frozen replica") from None
        raise


async def eventually(cond: Any, what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while not await cond():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def status_of(controller: ComputeController, replica_id: str) -> tuple[str, str | None]:
    for r_id, _name, status, _restarts, reason in controller.statuses():
        if r_id == replica_id:
            return status, reason
    raise AssertionError(f"no status row for {replica_id}")


@pytest.fixture
async def two_replicas(procs: Any) -> AsyncIterator[tuple[ComputeController, ProcessReplica]]:
    """A controller over two clusterd replicas of one cluster; the first is returned too."""
    started = {
        name: await procs.start(name, call_timeout_s=CALL_S)
        for name in ("c-replica-r1-gen-1", "c-replica-r2-gen-1")
    }

    def factory(spec: ReplicaSpec, read_only: bool) -> ProcessReplica:
        return started[f"{spec.name}-gen-1"]

    controller = ComputeController(factory)
    await controller.sync_replicas(
        [ReplicaSpec(CLUSTER, r, f"c-replica-{r}") for r in ("r1", "r2")]
    )
    try:
        yield controller, started["c-replica-r1-gen-1"]
    finally:
        for replica in started.values():
            procs.orchestrator.kill(replica.name, signal.SIGCONT)  # never leave one stopped
            await replica.detach()


async def test_frozen_replica_leaves_the_controller_answering_and_recovers(
    procs: Any, tables_client: PersistClient, two_replicas: tuple[ComputeController, Any]
) -> None:
    controller, frozen = two_replicas
    tables = Tables(tables_client)
    await tables.hold_everything()
    await tables.run(3, 10, pause_s=0)
    await controller.create_dataflow(CLUSTER, desc("i1"))

    async def both_hydrated() -> bool:
        per = (await controller.frontiers())["i1"]
        return len(per) == 2 and all(
            f.hydrated and f.write_frontier >= tables.upper for f in per.values()
        )

    await eventually(both_hydrated, "both replicas to hydrate")
    assert status_of(controller, "r1") == ("online", None)

    procs.orchestrator.kill(frozen.name, signal.SIGSTOP)
    try:
        await eventually(lambda: _stopped(procs, frozen.name), "the signal to be delivered")
        # A direct query is a clear error, not a hang; the replica is marked unresponsive.
        with pytest.raises(ReplicaUnresponsive, match="status") as caught:
            await returns(frozen.status(), "status()")
        assert isinstance(caught.value, TimeoutError)
        assert frozen.unresponsive is not None
        status, reason = status_of(controller, "r1")
        assert status == "offline" and reason is not None and "not answering" in reason

        # The controller keeps answering: frontiers (the frozen replica is not hydrated, the
        # other is), the collection's frontier, commands, a peek target.
        await tables.run(2)
        per = (await returns(controller.frontiers(), "frontiers()"))["i1"]
        assert "r1" not in per or not per["r1"].hydrated, per

        async def r2_caught_up() -> bool:
            f = (await returns(controller.frontiers(), "frontiers()"))["i1"].get("r2")
            return f is not None and f.hydrated and f.write_frontier >= tables.upper

        await eventually(r2_caught_up, "the other replica to keep up")
        await eventually(lambda: _online(controller, "r2"), "the other replica to stay online")
        f = await returns(controller.collection_frontier("i1"), "collection_frontier()")
        assert f.hydrated and f.write_frontier >= tables.upper
        target, _f = await returns(controller.peek_target(CLUSTER, "i1"), "peek_target()")
        assert target.name == "c-replica-r2-gen-1"
        # Commands: the first may wait one bound, the next fail fast; none raises.
        await returns(controller.create_dataflow(CLUSTER, desc("i2")), "create_dataflow()")
        await returns(controller.allow_compaction("i1", 1), "allow_compaction()")
        await returns(controller.drop_dataflow("i2"), "drop_dataflow()")
        await returns(controller.create_dataflow(CLUSTER, desc("i3")), "create_dataflow()")
        assert status_of(controller, "r1")[0] == "offline"
    finally:
        procs.orchestrator.kill(frozen.name, signal.SIGCONT)

    # Thawed: online again, its frontiers advance, and what it was told while frozen landed.
    await tables.run(2)
    await eventually(lambda: _online(controller, "r1"), "the thawed replica to be online")

    async def r1_caught_up() -> bool:
        per = await controller.frontiers()
        f = per["i1"].get("r1")
        g = per["i3"].get("r1")
        return (
            f is not None
            and f.hydrated
            and f.write_frontier >= tables.upper
            and g is not None
            and g.hydrated
        )

    await eventually(r1_caught_up, "the thawed replica to catch up")
    assert frozen.unresponsive is None
    assert (await frozen.status()).dataflows == ("i1", "i3")


async def _stopped(procs: Any, name: str) -> bool:
    pid = procs.orchestrator.services[name].pid
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


async def _online(controller: ComputeController, replica_id: str) -> bool:
    await controller.frontiers()  # the frontier loop's probe
    return status_of(controller, replica_id) == ("online", None)


async def test_a_replica_that_never_answers_bounds_every_call() -> None:
    """Accepts connections but never answers (no hello): every call fails within its bound —
    commands too, which a connect would otherwise retry for `unavailable_after_s` — and a
    command to a replica already known not to answer fails at once."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        replica = RemoteReplica(
            "c-replica-9-gen-1", ("127.0.0.1", port), unavailable_after_s=600, call_timeout_s=0.3
        )
        try:
            with pytest.raises(ReplicaUnresponsive, match="create_dataflow"):
                await returns(replica.create_dataflow(desc("i1")), "create_dataflow()")
            assert replica.unresponsive is not None
            with pytest.raises(ReplicaUnresponsive, match="delivered once it does"):
                await returns(replica.allow_writes(), "allow_writes()")
            assert await returns(replica.try_frontiers(0.3), "try_frontiers()") is None
        finally:
            await replica.close()


async def test_a_replica_that_never_starts_bounds_commands() -> None:
    """No address yet (its process never started): a command is recorded and fails within the
    call bound, not after `unavailable_after_s`."""
    replica = RemoteReplica(
        "c-replica-9-gen-1", lambda: None, unavailable_after_s=600, call_timeout_s=0.3
    )
    try:
        with pytest.raises(ReplicaUnavailable, match="not connected within"):
            await returns(replica.create_dataflow(desc("i1")), "create_dataflow()")
        assert replica.unresponsive is not None
    finally:
        await replica.close()
