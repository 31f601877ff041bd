"""The control API of a running `twinstream up`: what `twinstream upgrade | status | promote |
down` talk to. Loopback only; its port is in `DIR/control.json`.

    GET  /status    the rollout record, per-generation status and restarts, rollout progress
    POST /upgrade   {"strategy", "rollout_timeout_s", "force_promote", "to"} -> 202, or 409
    POST /promote   finish a ManuallyPromote rollout
    POST /down      stop everything
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from twinstream.orchestrator.record import RolloutRecord, RolloutStatus
from twinstream.orchestrator.rollout import (
    Orchestrator,
    RolloutError,
    Strategy,
    in_progress_message,
)


def control_file(data_dir: Path) -> Path:
    return data_dir / "control.json"


class ControlServer:
    def __init__(self, orch: Orchestrator, *, balancer_port: int | None) -> None:
        self.orch = orch
        self.balancer_port = balancer_port
        self.events: list[dict[str, Any]] = []
        self.task: asyncio.Task[Any] | None = None
        self.last_error: str | None = None
        self.stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def progress(self, phase: str, info: dict[str, object]) -> None:
        self.events.append({"phase": phase, "at": time.time(), **info})
        del self.events[:-200]

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_post("/upgrade", self._upgrade)
        app.router.add_post("/promote", self._promote)
        app.router.add_post("/down", self._down)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        control_file(self.orch.data_dir).write_text(
            json.dumps({"port": self.port, "balancer_port": self.balancer_port})
        )
        return self.port

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            control_file(self.orch.data_dir).unlink()

    async def _status(self, _request: web.Request) -> web.Response:
        record = await self.orch.record()
        generations = {}
        for gen, gp in list(self.orch.supervisor.generations.items()):
            state = "unknown"
            with contextlib.suppress(Exception):
                state = await self.orch.status(gen)
            progress = None
            if state in ("Initializing", "ReadyToPromote", "Promoting"):
                with contextlib.suppress(Exception):
                    progress = await self.orch.progress(gen)
            generations[str(gen)] = {
                "progress": progress,
                "status": state,
                "restarts": gp.restarts,
                "pid": gp.pid,
                "adopted": gp.adopted_pid is not None,
            }
        body: dict[str, Any] = {
            "record": None if record is None else json.loads(record.to_json()),
            "generations": generations,
            "balancer_port": self.balancer_port,
            "rollout_running": self.task is not None and not self.task.done(),
            "last_error": self.last_error,
            "events": self.events[-20:],
        }
        return web.json_response(body)

    def run_in_background(self, name: str, work: Coroutine[Any, Any, RolloutRecord | None]) -> None:
        """Run a rollout step as the control API's task (status shows it running)."""

        async def run() -> None:
            try:
                await work
            except RolloutError as e:
                self.last_error = str(e)
                self.progress("failed", {"message": str(e)})

        self.task = asyncio.create_task(run(), name=name)

    async def _refusal(self) -> str | None:
        """Why an upgrade cannot start now (naming the rollout in progress), or None."""
        record = await self.orch.record()
        if record is not None and record.status not in (
            RolloutStatus.APPLIED,
            RolloutStatus.FAILED_DEPLOY,
        ):
            return in_progress_message(record)
        if self.task is not None and not self.task.done():
            gen = "?" if record is None else record.desired_generation
            return f"a rollout to generation {gen} is still finishing; wait for it"
        return None

    async def _upgrade(self, request: web.Request) -> web.Response:
        refusal = await self._refusal()
        if refusal is not None:
            return web.json_response({"message": refusal}, status=409)
        try:
            raw = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"message": "the body must be a JSON object"}, status=400)
        if not isinstance(raw, dict):
            return web.json_response({"message": "the body must be a JSON object"}, status=400)
        try:
            strategy = Strategy(raw.get("strategy", Strategy.WAIT_UNTIL_READY.value))
        except ValueError:
            return web.json_response(
                {"message": f"unknown strategy; use one of {[s.value for s in Strategy]}"},
                status=400,
            )
        timeout = raw.get("rollout_timeout_s")
        try:
            program = shlex.split(raw["to"]) if raw.get("to") else None
            timeout_s = None if timeout is None else float(timeout)
        except (ValueError, TypeError) as e:
            return web.json_response({"message": f"bad upgrade request: {e}"}, status=400)
        if timeout_s is not None and timeout_s <= 0:
            return web.json_response({"message": "rollout_timeout_s must be positive"}, status=400)
        self.events.clear()
        self.last_error = None
        self.run_in_background(
            "rollout",
            self.orch.upgrade(
                strategy=strategy,
                rollout_timeout_s=timeout_s,
                force_promote=bool(raw.get("force_promote", False)),
                program=program,
                progress=self.progress,
            ),
        )
        return web.json_response({"message": "upgrade started"}, status=202)

    async def _promote(self, _request: web.Request) -> web.Response:
        if self.task is not None and not self.task.done():
            record = await self.orch.record()
            gen = "?" if record is None else record.desired_generation
            return web.json_response(
                {"message": f"a rollout to generation {gen} is running; it promotes by itself"},
                status=409,
            )
        record = await self.orch.record()
        if record is None or record.status is not RolloutStatus.READY_TO_PROMOTE:
            state = "no environment" if record is None else record.status.value
            return web.json_response(
                {"message": f"nothing to promote (rollout status {state})"}, status=409
            )
        self.last_error = None
        self.run_in_background("promote", self.orch.promote(progress=self.progress))
        return web.json_response({"message": "promotion started"}, status=202)

    async def _down(self, _request: web.Request) -> web.Response:
        self.stop.set()
        return web.json_response({"message": "stopping"})
