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
from pathlib import Path
from typing import Any

from aiohttp import web

from twinstream.orchestrator.record import RolloutStatus
from twinstream.orchestrator.rollout import Orchestrator, RolloutError, Strategy


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

    def _progress(self, phase: str, info: dict[str, object]) -> None:
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
            generations[str(gen)] = {
                "status": state,
                "restarts": gp.restarts,
                "pid": gp.proc.pid if gp.proc else None,
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

    async def _upgrade(self, request: web.Request) -> web.Response:
        if self.task is not None and not self.task.done():
            return web.json_response({"message": "a rollout is already running"}, status=409)
        record = await self.orch.record()
        if record is not None and record.status not in (
            RolloutStatus.APPLIED,
            RolloutStatus.FAILED_DEPLOY,
        ):
            return web.json_response(
                {
                    "message": f"a rollout to generation {record.desired_generation} is in "
                    f"progress ({record.status.value})"
                },
                status=409,
            )
        raw = await request.json() if request.can_read_body else {}
        try:
            strategy = Strategy(raw.get("strategy", Strategy.WAIT_UNTIL_READY.value))
        except ValueError:
            return web.json_response(
                {"message": f"unknown strategy; use one of {[s.value for s in Strategy]}"},
                status=400,
            )
        timeout = raw.get("rollout_timeout_s")
        program = shlex.split(raw["to"]) if raw.get("to") else None
        self.events.clear()
        self.last_error = None

        async def run() -> None:
            try:
                await self.orch.upgrade(
                    strategy=strategy,
                    rollout_timeout_s=None if timeout is None else float(timeout),
                    force_promote=bool(raw.get("force_promote", False)),
                    program=program,
                    progress=self._progress,
                )
            except RolloutError as e:
                self.last_error = str(e)
                self._progress("failed", {"message": str(e)})

        self.task = asyncio.create_task(run(), name="rollout")
        return web.json_response({"message": "upgrade started"}, status=202)

    async def _promote(self, _request: web.Request) -> web.Response:
        if self.task is not None and not self.task.done():
            return web.json_response({"message": "a rollout is already running"}, status=409)

        async def run() -> None:
            try:
                await self.orch.promote(progress=self._progress)
            except RolloutError as e:
                self.last_error = str(e)
                self._progress("failed", {"message": str(e)})

        self.task = asyncio.create_task(run(), name="promote")
        return web.json_response({"message": "promotion started"}, status=202)

    async def _down(self, _request: web.Request) -> web.Response:
        self.stop.set()
        return web.json_response({"message": "stopping"})
