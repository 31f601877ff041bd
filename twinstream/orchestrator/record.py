"""The durable rollout record: what the orchestrator is doing and where clients should go.

Kept in the consensus store under `rollout/<environment>`, changed only by compare-and-set, so
a restarted orchestrator resumes (if it finds `Promoting` it must finish promoting) and the
balancer routes new connections to `active_generation` without asking anyone.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from twinstream.persist.location import Consensus, VersionedData

KEY_PREFIX = "rollout/"


class RolloutStatus(enum.StrEnum):
    APPLYING = "Applying"
    READY_TO_PROMOTE = "ReadyToPromote"
    PROMOTING = "Promoting"  # point of no return: written before calling promote
    APPLIED = "Applied"
    FAILED_DEPLOY = "FailedDeploy"


@dataclass(frozen=True)
class GenerationEndpoint:
    generation: int
    sql_host: str
    sql_port: int
    internal_http_port: int
    pid: int


@dataclass(frozen=True)
class RolloutRecord:
    desired_generation: int
    active_generation: int
    status: RolloutStatus
    #: Endpoints of running generations, by generation number (as a string key for JSON).
    endpoints: dict[str, GenerationEndpoint] = field(default_factory=dict)
    message: str = ""
    #: How the rollout in progress was asked for, so a restarted orchestrator can resume it:
    #: the strategy's name, skip-catchup, and the rollout deadline (wall clock, ms; 0: none).
    strategy: str = "WaitUntilReady"
    force_promote: bool = False
    deadline_ms: int = 0
    #: The command the new generation runs (`--to`); empty: this install.
    program: list[str] = field(default_factory=list)

    def active_endpoint(self) -> GenerationEndpoint | None:
        return self.endpoints.get(str(self.active_generation))

    def to_json(self) -> bytes:
        raw: dict[str, Any] = asdict(self)
        raw["status"] = self.status.value
        return json.dumps(raw, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RolloutRecord:
        raw = json.loads(data)
        return cls(
            desired_generation=int(raw["desired_generation"]),
            active_generation=int(raw["active_generation"]),
            status=RolloutStatus(raw["status"]),
            endpoints={k: GenerationEndpoint(**v) for k, v in raw.get("endpoints", {}).items()},
            message=str(raw.get("message", "")),
            strategy=str(raw.get("strategy", "WaitUntilReady")),
            force_promote=bool(raw.get("force_promote", False)),
            deadline_ms=int(raw.get("deadline_ms", 0)),
            program=[str(a) for a in raw.get("program", [])],
        )


class RolloutStore:
    """Read and compare-and-set the record of one environment."""

    def __init__(self, consensus: Consensus, environment: str = "default") -> None:
        self.consensus = consensus
        self.key = KEY_PREFIX + environment

    async def read(self) -> tuple[int | None, RolloutRecord | None]:
        head = await self.consensus.head(self.key)
        if head is None:
            return None, None
        return head.seqno, RolloutRecord.from_json(head.data)

    async def write(self, expected_seqno: int | None, record: RolloutRecord) -> bool:
        new = 0 if expected_seqno is None else expected_seqno + 1
        return await self.consensus.compare_and_set(
            self.key, expected_seqno, VersionedData(new, record.to_json())
        )
