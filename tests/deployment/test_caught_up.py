"""The pure caught-up decision: lag, cutoff, hydration, crash-loop exclusion; and the two
crash-loop parameters (settable, validated, shown)."""

from __future__ import annotations

import pytest

from twinstream.deployment.caught_up import (
    CollectionFrontiers,
    ReplicaHealth,
    StabilityGate,
    check_caught_up,
    crash_looping_clusters,
)
from twinstream.deployment.params import ParamError, default_text, resolve, validate

NOW = 1_000_000


def coll(
    name: str, cluster: str | None, *, lag: int = 0, hydrated: bool = True, age: int = 0
) -> CollectionFrontiers:
    live = NOW - age
    return CollectionFrontiers(name, cluster, hydrated, live - lag, live)


def check(
    collections: list[CollectionFrontiers],
    replicas: list[ReplicaHealth] = [],  # noqa: B006 - read only
    max_restarts: int | None = 3,
) -> tuple[list[str], set[str], list[str]]:
    v = check_caught_up(
        collections,
        now_ms=NOW,
        allowed_lag_ms=1000,
        cutoff_ms=600_000,
        replicas=replicas,
        max_restarts=max_restarts,
    )
    assert v.caught_up == (not v.laggards)
    return [str(x) for x in v.laggards], set(v.excluded_clusters), list(v.stuck)


def test_lag_hydration_and_cutoff() -> None:
    laggards, excluded, stuck = check(
        [
            coll("t_ok", None, lag=1000),
            coll("t_behind", None, lag=1001),
            coll("mv_cold", "c1", hydrated=False),
            coll("mv_stuck", "c1", lag=50_000, age=600_000),  # leader stuck: ignored
            coll("mv_stuck_cold", "c1", hydrated=False, age=700_000),
        ]
    )
    assert laggards == ["t_behind: 1001 ms behind", "mv_cold: not hydrated"]
    assert excluded == set() and stuck == ["mv_stuck", "mv_stuck_cold"]


def test_empty_is_caught_up() -> None:
    assert check([]) == ([], set(), [])


def test_crash_looping_cluster_is_excluded_only_if_every_replica_loops() -> None:
    collections = [
        coll("mv_a", "a", hydrated=False),
        coll("mv_b", "b", hydrated=False),
        coll("t", None, lag=5000),
    ]
    replicas = [
        ReplicaHealth("a", "r1", 4),
        ReplicaHealth("a", "r2", 9),
        ReplicaHealth("b", "r1", 4),
        ReplicaHealth("b", "r2", 3),  # one healthy replica: b can still hydrate
    ]
    laggards, excluded, _ = check(collections, replicas)
    assert excluded == {"a"}
    assert laggards == ["mv_b: not hydrated", "t: 5000 ms behind"], "tables never excluded"
    # Exclusion off: a counts again.
    laggards, excluded, _ = check(collections, replicas, max_restarts=None)
    assert excluded == set() and len(laggards) == 3


@pytest.mark.parametrize(
    ("restarts", "limit", "excluded"),
    [([], 3, set()), ([3], 3, set()), ([4], 3, {"c"}), ([1], 0, {"c"}), ([0], 0, set())],
)
def test_crash_looping_threshold(restarts: list[int], limit: int, excluded: set[str]) -> None:
    replicas = [ReplicaHealth("c", f"r{i}", n) for i, n in enumerate(restarts)]
    assert crash_looping_clusters(replicas, limit) == excluded


def test_crash_loop_parameters() -> None:
    p = resolve({}, {})
    assert p.enable_0dt_caught_up_replica_status_check is True
    assert p.with_0dt_caught_up_check_crash_loop_restarts == 3
    assert default_text("with_0dt_caught_up_check_crash_loop_restarts") == "3"
    assert default_text("enable_0dt_caught_up_replica_status_check") == "on"
    p = resolve(
        {"with_0dt_caught_up_check_crash_loop_restarts": "7"},
        {
            "with_0dt_caught_up_check_crash_loop_restarts": "1",
            "enable_0dt_caught_up_replica_status_check": "off",
        },
    )
    assert p.with_0dt_caught_up_check_crash_loop_restarts == 7  # flag > system
    assert p.enable_0dt_caught_up_replica_status_check is False
    for bad in ("-1", "three", "1.5", ""):
        with pytest.raises(ParamError, match="expected a whole number >= 0"):
            validate("with_0dt_caught_up_check_crash_loop_restarts", bad)


def test_stability_gate_bootstrap_collections_need_the_whole_period() -> None:
    gate = StabilityGate(period_ms=2000)
    assert not gate.observe(0, ["t", "mv"], ["mv"])
    assert not gate.observe(1000, ["t", "mv"], [])  # mv caught up only since 1000
    assert not gate.observe(2500, ["t", "mv"], [])
    assert gate.observe(3000, ["t", "mv"], [])
    assert not gate.observe(3200, ["t", "mv"], ["t"]), "a laggard closes the gate"
    assert not gate.observe(3400, ["t", "mv"], []), "and restarts its period"
    assert gate.observe(5400, ["t", "mv"], [])


def test_stability_gate_objects_added_by_ddl_need_only_be_caught_up_now() -> None:
    """Steady DDL (an object created or dropped every second) must not starve the gate:
    before, every change restarted one global period, and under `twinstream demo`'s DDL client
    an upgrade waited up to 258 s for a gap."""
    gate = StabilityGate(period_ms=2000)
    assert not gate.observe(0, ["t"], [])
    ready = []
    for k in range(1, 20):  # a new object every 1 s, hydrating for 0.5 s, dropped after 1 s
        now = k * 1000
        ready.append(gate.observe(now, ["t", f"ddl{k}"], [f"ddl{k}"]))
        ready.append(gate.observe(now + 500, ["t", f"ddl{k}"], []))
    assert not any(ready[:3]), "not before the bootstrap collections' period"
    assert ready[3] and all(ready[3::2]), "open whenever every object is caught up"
    assert not any(ready[0::2]), "closed while a new object hydrates"


def test_stability_gate_with_no_collections_still_waits_one_period() -> None:
    gate = StabilityGate(period_ms=2000)
    assert not gate.observe(0, [], [])
    assert not gate.observe(1999, [], [])
    assert gate.observe(2000, [], [])
    assert gate.observe(2100, ["new"], []), "an object added later needs only be caught up"
