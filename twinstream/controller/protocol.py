"""The compute protocol: what the compute controller (in environmentd) asks of one cluster replica.

Transport-neutral: `LocalReplica` (`twinstream.compute.replica`) implements it in process, a
`clusterd` client implements it over loopback. Everything crossing it is plain data (frozen
dataclasses of ints, strings, tuples and dataflow plans), so a wire codec can carry it.

The controller drives every replica of a cluster with the same commands; replicas are
interchangeable, so a reader may use whichever answers first and a frontier is the maximum
over replicas. Commands are idempotent, which is what makes reconciliation work: a controller
that restarts simply re-issues `create_dataflow` for everything in its catalog, and a replica
keeps the dataflows whose description is unchanged (they are not rebuilt) and drops the rest
when told (`drop_dataflow`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from twinstream.compute.dataflow.plan import Plan
from twinstream.compute.runtime import OutputBatch
from twinstream.persist.types import Diff, Row

__all__ = [
    "CollectionFrontier",
    "DataflowDesc",
    "OutputBatch",
    "PeekError",
    "Replica",
    "ReplicaStatus",
]


@dataclass(frozen=True)
class DataflowDesc:
    """One dataflow a replica maintains, by collection id.

    Equality is what reconciliation compares: a `create_dataflow` with an id the replica
    already runs and an equal desc is a no-op; an unequal one replaces the dataflow.
    """

    #: The collection id: a materialized view's or index's catalog item id, or a transient
    #: id (a SUBSCRIBE, a one-off peek).
    id: str
    #: The lowered plan (`twinstream.compute.dataflow` plan; `Get` names are `inputs` keys).
    plan: Plan
    #: `Get` name -> persist shard id of that input (a table's shard, an upstream MV's
    #: output shard). Exactly the plan's `Get` names.
    inputs: Mapping[str, str]
    #: A materialized view's output shard (written by the self-correcting sink); None for
    #: an index or a transient dataflow (their output lives only in the replica).
    output_shard: str | None = None
    #: Arrange the output by these columns so `peek` can answer (an index; `()` = one
    #: bucket, for a transient dataflow that is peeked or subscribed whole). None: the
    #: replica keeps no copy of the output (a materialized view is read from its shard).
    index_key: tuple[int, ...] | None = None
    #: Hydrate at this time; None lets the replica pick (the inputs' latest readable time,
    #: no later than the output shard's upper - 1 so a restart resumes where it stopped).
    as_of: int | None = None
    #: Receives the `$errors` collection (rows `(sqlstate, message)`) if given.
    errors_shard: str | None = field(default=None)


@dataclass(frozen=True)
class CollectionFrontier:
    """How far one replica got with one collection."""

    #: The output is complete below this time (0 before hydration).
    write_frontier: int
    #: The output at the dataflow's as-of is computed.
    hydrated: bool
    #: The as-of the dataflow hydrated at (None before it is chosen).
    as_of: int | None = None


@dataclass(frozen=True)
class ReplicaStatus:
    """A replica's health, for `mz_cluster_replica_statuses`-like reporting and tests."""

    name: str
    #: True while sinks write nothing (a read-only generation's replica).
    read_only: bool
    #: Ids of the dataflows it maintains (reconciliation tests count them).
    dataflows: tuple[str, ...]
    #: Dataflow id -> its last failure; the replica restarts failed dataflows itself.
    failures: Mapping[str, str] = field(default_factory=dict)
    #: How many dataflows were (re)built since the replica started: a reconciliation that
    #: keeps its dataflows does not move it.
    builds: int = 0


class PeekError(Exception):
    """A peek or subscribe the replica cannot answer; `code` says why, for the wire codec.

    - `unknown`: no dataflow by that id;
    - `not_arranged`: the dataflow keeps no copy of its output (`index_key` None);
    - `compacted`: the time is before what the replica can still read (`allow_compaction`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@runtime_checkable
class Replica(Protocol):
    """One cluster replica as the controller sees it (see the module docstring)."""

    #: The replica's name (`<cluster>-replica-<id>`), unique within the environment.
    name: str

    async def create_dataflow(self, desc: DataflowDesc) -> None:
        """Maintain `desc` from now on. Idempotent: the same id with an equal desc keeps the
        running dataflow (reconciliation); a different desc replaces it. Returns once the
        dataflow is installed, not once it is hydrated (see `frontiers`)."""
        ...

    async def drop_dataflow(self, id: str) -> None:
        """Stop maintaining `id` and release its read holds. Unknown ids are ignored."""
        ...

    async def allow_writes(self) -> None:
        """Leave read-only mode in place: every sink, current and future, starts writing
        (only what the output shard lacks). Idempotent; never reverts."""
        ...

    async def allow_compaction(self, id: str, since: int) -> None:
        """The controller will not peek or subscribe `id` before `since` any more: the
        replica may forget history below it (bounds an arranged collection's memory)."""
        ...

    async def peek(
        self, id: str, timestamp: int, key: tuple[object, ...] | None = None
    ) -> list[tuple[Row, Diff]]:
        """The arranged collection `id` at exactly `timestamp` (waits until its write
        frontier passes it), restricted to rows whose index key equals `key` if given.
        Raises `PeekError`."""
        ...

    def subscribe(self, id: str) -> AsyncIterator[OutputBatch]:
        """The arranged collection `id`: a first batch holding its full contents at some
        time `t` (`lower == t`, `upper == t + 1`; the earliest time it still holds), then
        every later change, batch by batch, until the dataflow is dropped. Raises
        `PeekError` (on first iteration)."""
        ...

    async def frontiers(self) -> dict[str, CollectionFrontier]:
        """Every dataflow's write frontier and hydration status."""
        ...

    async def frontier(self, id: str) -> CollectionFrontier | None:
        """`frontiers().get(id)`, without building the whole map (asked on every index
        peek)."""
        ...

    async def status(self) -> ReplicaStatus: ...
