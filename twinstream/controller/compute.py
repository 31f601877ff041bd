"""The compute controller: which dataflows run on which cluster replicas, and how far they got.

One per environmentd. The catalog's clusters and replicas (`sync_replicas`) decide the set of
replicas; each is built by an injected factory (in-process `LocalReplica` by default, a
`clusterd` client later) and driven through the `Replica` protocol only. Every dataflow of a
cluster runs on every replica of that cluster (replicas are interchangeable: a collection's
write frontier is the maximum over replicas, it is hydrated once one replica is).

A read-only generation's controller builds its replicas read-only: dataflows hydrate and keep
up but their sinks write nothing; `allow_writes` (at promotion) flips every replica in place.
Creating a dataflow is idempotent per replica, so a controller that re-issues its catalog's
dataflows reconciles with replicas that kept running.

One replica never holds up the others or the controller's callers: a command that a replica
could not take (`ConnectionError`: down, or not answering within its client's bound — the
client recorded it and delivers it when the replica answers again) is logged, not raised;
frontiers are asked of every replica at once, and a replica that does not answer reports
nothing; one marked unresponsive (`ReportsResponsiveness`) counts as not hydrated, is not
asked for peek targets while another replica is there, and shows `offline` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from twinstream.controller.protocol import CollectionFrontier, DataflowDesc, PeekError, Replica
from twinstream.persist.types import Diff, Row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaSpec:
    """A replica as the catalog describes it."""

    cluster_id: str
    replica_id: str
    #: `<cluster>-replica-<id>`: unique, names the process of a `clusterd` replica.
    name: str


class ManagedReplica(Replica, Protocol):
    """A replica the controller owns: it can shut it down when the catalog drops it."""

    async def close(self) -> None: ...


@runtime_checkable
class ReportsHealth(Protocol):
    """A replica that can be down: a `clusterd` process (`ProcessReplica`). One without this
    runs in environmentd's process and is up while environmentd is."""

    def health(self) -> tuple[bool, int]:
        """(listening now, restarts after crashes so far)."""
        ...


@runtime_checkable
class ReportsResponsiveness(Protocol):
    """A replica behind a client that bounds its calls (`RemoteReplica`)."""

    #: Why the replica counts as not answering now; None while it answers.
    unresponsive: str | None


def unresponsive(replica: Replica) -> str | None:
    """Why `replica` is not answering now (None: it is, as far as its client knows)."""
    return replica.unresponsive if isinstance(replica, ReportsResponsiveness) else None


#: Builds a replica (spec, read_only) -> replica.
ReplicaFactory = Callable[[ReplicaSpec, bool], ManagedReplica]


class ComputeController:
    """See the module docstring."""

    def __init__(self, factory: ReplicaFactory, *, read_only: bool = False) -> None:
        self.factory = factory
        self.read_only = read_only
        self.replicas: dict[str, tuple[ReplicaSpec, ManagedReplica]] = {}
        #: collection id -> (cluster id, desc): what every replica of the cluster must run.
        self.dataflows: dict[str, tuple[str, DataflowDesc]] = {}

    # -- replicas ------------------------------------------------------------------------------

    async def sync_replicas(self, specs: Iterable[ReplicaSpec]) -> None:
        """Make the set of replicas exactly `specs`: new ones get their cluster's dataflows,
        gone ones are shut down."""
        want = {s.replica_id: s for s in specs}
        for r_id in [r for r in self.replicas if r not in want]:
            _spec, replica = self.replicas.pop(r_id)
            await replica.close()
        for r_id, spec in want.items():
            if r_id in self.replicas:
                continue
            replica = self.factory(spec, self.read_only)
            self.replicas[r_id] = (spec, replica)
            for cluster_id, desc in list(self.dataflows.values()):
                if cluster_id == spec.cluster_id:
                    await _tell(replica, "create_dataflow", replica.create_dataflow(desc))

    def cluster_replicas(self, cluster_id: str) -> list[tuple[ReplicaSpec, ManagedReplica]]:
        return [(s, r) for s, r in self.replicas.values() if s.cluster_id == cluster_id]

    # -- dataflows -----------------------------------------------------------------------------

    async def create_dataflow(self, cluster_id: str, desc: DataflowDesc) -> None:
        self.dataflows[desc.id] = (cluster_id, desc)
        for _spec, replica in self.cluster_replicas(cluster_id):
            await _tell(replica, "create_dataflow", replica.create_dataflow(desc))

    async def drop_dataflow(self, id: str) -> None:
        entry = self.dataflows.pop(id, None)
        if entry is None:
            return
        for _spec, replica in self.cluster_replicas(entry[0]):
            await _tell(replica, "drop_dataflow", replica.drop_dataflow(id))

    async def allow_writes(self) -> None:
        """Promotion: every replica's sinks start writing (in place), and so do new ones."""
        self.read_only = False
        for _spec, replica in self.replicas.values():
            await _tell(replica, "allow_writes", replica.allow_writes())

    async def allow_compaction(self, id: str, since: int) -> None:
        entry = self.dataflows.get(id)
        if entry is None:
            return
        for _spec, replica in self.cluster_replicas(entry[0]):
            await _tell(replica, "allow_compaction", replica.allow_compaction(id, since))

    async def peek_target(
        self, cluster_id: str, id: str
    ) -> tuple[ManagedReplica, CollectionFrontier | None]:
        """The replica of the cluster a peek at `id` goes to (hydrated ones first) and the
        collection's frontier over the cluster's replicas, as `collection_frontier` computes
        it (one lookup per replica, not a map of every dataflow; asked on every index peek).
        A reader never picks a time older than one another replica let an earlier reader
        see: the peek waits for a lagging replica instead. Raises `PeekError`."""
        replicas = self.cluster_replicas(cluster_id)
        if not replicas:
            raise PeekError("unknown", f"cluster {cluster_id} has no replica")
        answering = [(s, r) for s, r in replicas if unresponsive(r) is None]
        replicas = answering or replicas  # a frozen replica would only eat the peek's bound
        target = replicas[0][1]
        found = False
        fs: list[CollectionFrontier] = []
        for _spec, replica in replicas:
            try:
                f = await replica.frontier(id)
            except ConnectionError as e:  # down or not answering: another replica may be
                if len(replicas) == 1:
                    raise
                log.info("peek target: %s: %s", replica.name, e)
                continue
            if f is None:
                continue
            fs.append(f)
            if f.hydrated and not found:
                target, found = replica, True
        if not fs:
            return target, None
        as_ofs = [f.as_of for f in fs if f.as_of is not None]
        return target, CollectionFrontier(
            max(f.write_frontier for f in fs), found, min(as_ofs) if as_ofs else None
        )

    async def peek(
        self, cluster_id: str, id: str, timestamp: int, key: tuple[object, ...] | None
    ) -> list[tuple[Row, Diff]]:
        """Peek an arranged collection on a replica of its cluster (hydrated ones first)."""
        replica, _f = await self.peek_target(cluster_id, id)
        return await replica.peek(id, timestamp, key)

    # -- frontiers -----------------------------------------------------------------------------

    async def frontiers(self) -> dict[str, dict[str, CollectionFrontier]]:
        """collection id -> replica id -> what that replica reports (dataflows of this
        controller only)."""
        out: dict[str, dict[str, CollectionFrontier]] = {id: {} for id in self.dataflows}
        replicas = list(self.replicas.items())
        async with asyncio.TaskGroup() as tg:  # all at once: a slow replica delays no other
            tasks = [tg.create_task(_frontiers_of(r)) for _r_id, (_s, r) in replicas]
        for (r_id, (_spec, replica)), task in zip(replicas, tasks, strict=True):
            stale = unresponsive(replica) is not None
            for id, f in task.result().items():
                if id in out:
                    # Not answering: what it last reported, but not hydrated (it serves nothing).
                    out[id][r_id] = (
                        CollectionFrontier(f.write_frontier, False, f.as_of) if stale else f
                    )
        return out

    def statuses(self) -> list[tuple[str, str, str, int, str | None]]:
        """Per replica `(replica_id, name, "online" | "offline", restarts, reason)`: offline
        while its process is down or restarting, or while it does not answer calls."""
        out = []
        for r_id, (spec, replica) in sorted(self.replicas.items()):
            up, restarts = replica.health() if isinstance(replica, ReportsHealth) else (True, 0)
            why = None if up else "not running"
            if why is None and (stuck := unresponsive(replica)) is not None:
                why = f"not answering: {stuck}"
            out.append((r_id, spec.name, "online" if why is None else "offline", restarts, why))
        return out

    async def collection_frontier(self, id: str) -> CollectionFrontier:
        """Over the cluster's replicas: the maximum write frontier, hydrated if any is, the
        earliest as-of."""
        per = (await self.frontiers()).get(id, {})
        as_ofs = [f.as_of for f in per.values() if f.as_of is not None]
        return CollectionFrontier(
            max((f.write_frontier for f in per.values()), default=0),
            any(f.hydrated for f in per.values()),
            min(as_ofs) if as_ofs else None,
        )

    async def close(self) -> None:
        for _spec, replica in self.replicas.values():
            await replica.close()
        self.replicas.clear()


async def _frontiers_of(replica: Replica) -> dict[str, CollectionFrontier]:
    """`replica.frontiers()`, or nothing from a replica that is down or does not answer."""
    try:
        return await replica.frontiers()
    except ConnectionError as e:
        log.info("frontiers of %s: %s", replica.name, e)
        return {}
    except Exception as e:  # a bad answer from one replica must not hide the others
        log.warning("frontiers of %s failed: %s: %s", replica.name, type(e).__name__, e)
        return {}


async def _tell(replica: Replica, what: str, command: Awaitable[None]) -> None:
    """Run one command on one replica; a replica that cannot take it now (down, or not
    answering: its client delivers the command once it answers again) does not fail the
    controller's caller, nor hold up the other replicas beyond its client's bound."""
    try:
        await command
    except ConnectionError as e:
        log.warning("%s on %s deferred: %s", what, replica.name, e)
