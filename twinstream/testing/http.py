"""Tiny HTTP helpers for tests that drive environmentd's internal API (leader status,
promote, progress, metrics) with real requests; errors come back as (status, body)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Protocol


class _HasInternalPort(Protocol):
    @property
    def internal_http_port(self) -> int: ...


def http(
    port: int, method: str, path: str, token: str | None = None, timeout_s: float = 10.0
) -> tuple[int, str]:
    """`method path` on 127.0.0.1:`port` -> (status, body), also for 4xx/5xx answers."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def status(env: _HasInternalPort) -> str:
    """The deployment status of `env` (`GET /api/leader/status`)."""
    code, body = http(env.internal_http_port, "GET", "/api/leader/status")
    assert code == 200, body
    return str(json.loads(body)["status"])
