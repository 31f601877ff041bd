"""Regression tests for bugs the safety matrix found in twinstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinstream.orchestrator.control import ControlServer
from twinstream.orchestrator.rollout import Orchestrator
from twinstream.orchestrator.supervisor import GenerationProcess


async def test_status_survives_a_generation_removed_while_it_is_asked(tmp_path: Path) -> None:
    """GET /status awaits each generation's status; the old generation is torn down meanwhile
    (cell sqlite/no-fault: "dictionary changed size during iteration", HTTP 500)."""
    orch = Orchestrator(tmp_path / "env")
    try:
        for gen in (0, 1):
            orch.supervisor.generations[gen] = GenerationProcess(
                gen, [], tmp_path, tmp_path / f"{gen}.log"
            )

        async def status(generation: int) -> str:
            orch.supervisor.generations.pop(0, None)  # the teardown racing the request
            return "IsLeader"

        orch.status = status  # type: ignore[method-assign]
        server = ControlServer(orch, balancer_port=None)
        response: Any = await server._status(None)  # type: ignore[arg-type]
        body = json.loads(response.body)
        assert response.status == 200
        assert set(body["generations"]) == {"0", "1"}
    finally:
        await orch.close()
