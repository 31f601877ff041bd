"""The leader HTTP API on the internal listener (reference §4), plus health and metrics.

- GET /api/leader/status: 200 {"status": ...} in any state.
- POST /api/leader/promote: ReadyToPromote -> 200 {"result": "Success"} and Promoting;
  Promoting, IsLeader -> 200 (no-op); Initializing, CatchingUp ->
  400 {"result": {"Failure": {"message": ...}}}.
- POST /api/leader/skip-catchup: CatchingUp -> 204 (skip fires); later states -> 204 (no-op);
  Initializing -> 400 {"message": ...}.

With an API token, promote and skip-catchup need `Authorization: Bearer <token>` (401 without).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from twinstream.deployment.state import DeploymentStateHandle

OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "twinstream internal API", "version": "1"},
    "paths": {
        "/api/leader/status": {"get": {"responses": {"200": {"description": "deployment status"}}}},
        "/api/leader/promote": {
            "post": {
                "responses": {
                    "200": {"description": "promotion started (or no-op)"},
                    "400": {"description": "not ready"},
                    "401": {"description": "missing or bad token"},
                }
            }
        },
        "/api/leader/skip-catchup": {
            "post": {
                "responses": {
                    "204": {"description": "skip fired (or no-op)"},
                    "400": {"description": "too early"},
                    "401": {"description": "missing or bad token"},
                }
            }
        },
        "/api/livez": {"get": {"responses": {"200": {"description": "process alive"}}}},
        "/api/readyz": {
            "get": {
                "responses": {
                    "200": {"description": "serving"},
                    "503": {"description": "not serving yet"},
                }
            }
        },
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics"}}}},
    },
}


def leader_routes(
    app: web.Application,
    handle: DeploymentStateHandle,
    *,
    token: str | None,
    ready: Callable[[], bool],
    metrics: Callable[[], Awaitable[str]],
) -> None:
    def authorized(request: web.Request) -> bool:
        if token is None:
            return True
        got = request.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"status": handle.status()})

    async def promote(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        outcome = handle.try_promote()
        if outcome.ok:
            return web.json_response({"result": "Success"})
        return web.json_response({"result": {"Failure": {"message": outcome.message}}}, status=400)

    async def skip_catchup(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        outcome = handle.try_skip_catchup()
        if outcome.ok:
            return web.Response(status=204)
        return web.json_response({"message": outcome.message}, status=400)

    async def livez(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def metrics_route(_request: web.Request) -> web.Response:
        return web.Response(text=await metrics(), content_type="text/plain")

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    app.router.add_get("/api/leader/status", status)
    app.router.add_post("/api/leader/promote", promote)
    app.router.add_post("/api/leader/skip-catchup", skip_catchup)
    app.router.add_get("/api/livez", livez)
    app.router.add_get("/api/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/api/openapi.json", openapi)
