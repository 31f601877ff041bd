"""The caught-up decision, pure: which collections hold up the cutover.

Inputs are facts gathered elsewhere — per collection: which cluster maintains it, whether it is
hydrated, our write frontier and the live frontier the leader publishes; per replica: how often
it restarted. Output: the laggards (with their lag, for the log) and the clusters excluded for
crash-looping. No I/O, no clock: `now_ms` is passed in.

Crash-loop exclusion (reference §5, "replicas that crash-loop are excluded"): a cluster ALL of
whose replicas restarted more than `max_restarts` times is excluded from the check — it will not
hydrate however long we wait, and waiting for it would block every upgrade (Materialize does the
same with OOM-looping replicas). A cluster with one healthy replica is kept: that replica can
hydrate. Collections without a cluster (tables: mirrored by the adapter itself) are never
excluded.

Where restart counts come from: with replica processes (the default), environmentd's process
orchestrator (`orchestrator/processes.py`) counts each clusterd's restarts and
`cli/environmentd.py` feeds them in (`CaughtUpFeeds.replica_health`); collections name the
cluster id their dataflow runs on (`deployment/promotion.py: compute_frontiers`). In-process
replicas have no restart counts (they cannot crash without environmentd).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CollectionFrontiers:
    name: str
    #: The cluster maintaining it (None: not cluster-maintained, e.g. a table).
    cluster: str | None
    hydrated: bool
    #: This generation's write frontier and the leader's live frontier (ms timestamps).
    write_frontier: int
    live_frontier: int


@dataclass(frozen=True)
class ReplicaHealth:
    cluster: str
    replica: str
    restarts: int


@dataclass(frozen=True)
class Laggard:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class CaughtUpVerdict:
    laggards: tuple[Laggard, ...]
    #: Clusters left out of the check because every replica crash-loops.
    excluded_clusters: frozenset[str]
    #: Collections ignored because the leader's frontier is older than the cutoff.
    stuck: tuple[str, ...]

    @property
    def caught_up(self) -> bool:
        return not self.laggards


def crash_looping_clusters(replicas: Iterable[ReplicaHealth], max_restarts: int) -> frozenset[str]:
    """Clusters whose replicas ALL restarted more than `max_restarts` times."""
    assert max_restarts >= 0, max_restarts
    healthy: dict[str, bool] = {}
    for r in replicas:
        ok = r.restarts <= max_restarts
        healthy[r.cluster] = healthy.get(r.cluster, False) or ok
    return frozenset(cluster for cluster, any_ok in healthy.items() if not any_ok)


def check_caught_up(
    collections: Iterable[CollectionFrontiers],
    *,
    now_ms: int,
    allowed_lag_ms: int,
    cutoff_ms: int,
    replicas: Iterable[ReplicaHealth] = (),
    max_restarts: int | None = None,
) -> CaughtUpVerdict:
    """The reference's check: a collection is caught up if hydrated and its live frontier is
    within `allowed_lag_ms` of ours; a live frontier older than `cutoff_ms` is ignored (the
    leader is stuck too). `max_restarts=None` turns crash-loop exclusion off."""
    excluded = (
        frozenset() if max_restarts is None else crash_looping_clusters(replicas, max_restarts)
    )
    laggards: list[Laggard] = []
    stuck: list[str] = []
    for c in collections:
        if c.cluster is not None and c.cluster in excluded:
            continue
        if c.live_frontier + cutoff_ms <= now_ms:
            stuck.append(c.name)
            continue
        if not c.hydrated:
            laggards.append(Laggard(c.name, "not hydrated"))
            continue
        lag = c.live_frontier - c.write_frontier
        if lag > allowed_lag_ms:
            laggards.append(Laggard(c.name, f"{lag} ms behind"))
    return CaughtUpVerdict(tuple(laggards), excluded, tuple(stuck))


@dataclass
class StabilityGate:
    """The stability period, per collection, so that DDL on the leader cannot starve it.

    Collections present at the first observation (bootstrap) must stay caught up for
    `period_ms` without a break (a replica that flaps or crash-loops shows here). Collections
    that appear later — installed by the DDL check — only need to be caught up (hydrated and
    within the allowed lag) when the gate is asked: the clusters they run on are the ones the
    bootstrap collections already vouch for. Restarting one global period on every DDL change
    (the previous rule) never converged under steady DDL: `twinstream demo`'s DDL client changes
    the catalog about every 1.9 s and the check ran every 2 s, so readiness waited for a beat
    between the two periods (one upgrade took 258 s)."""

    period_ms: int
    #: When each collection was last seen lagging -> caught up (absent: lagging now).
    _since: dict[str, int] = field(default_factory=dict)
    #: Collections present at the first observation (None until then).
    _established: frozenset[str] | None = None
    _started_ms: int = 0

    def observe(self, now_ms: int, present: Iterable[str], lagging: Iterable[str]) -> bool:
        """Record one caught-up round; True if the cutover may proceed now."""
        names = set(present)
        behind = set(lagging)
        assert behind <= names, f"laggards {behind - names} are not present"
        if self._established is None:
            self._established = frozenset(names)
            self._started_ms = now_ms
        for name in list(self._since):
            if name not in names or name in behind:
                del self._since[name]
        for name in names - behind:
            self._since.setdefault(name, now_ms)
        if behind or now_ms - self._started_ms < self.period_ms:
            return False
        return all(
            now_ms - self._since[name] >= self.period_ms for name in names & self._established
        )
