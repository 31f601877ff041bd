"""Small blocking clients for tests against a real environmentd: SQL (psycopg), HTTP POST,
and waiting on a condition with a deadline (never a bare sleep as synchronization)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import psycopg

from twinstream.testing.environmentd import EnvironmentdProcess

DEADLINE_S = 60.0
POLL_S = 0.05


def sql(env: EnvironmentdProcess, *stmts: str) -> list[list[tuple[object, ...]]]:
    out = []
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        for s in stmts:
            cur = conn.execute(s)
            out.append(cur.fetchall() if cur.description else [])
    return out


def post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """(status, headers, body text) of a POST to 127.0.0.1:port."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method="POST", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def wait_for(what: str, cond: Callable[[], bool], env: EnvironmentdProcess | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"{what} never happened" + (f"; log:\n{env.log_tail()}" if env else ""))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def leader_status(env: EnvironmentdProcess) -> str:
    """The deployment status from the internal API (`IsLeader`, `ReadyToPromote`, ...)."""
    code, body = get(env.internal_http_port, "/api/leader/status")
    assert code == 200, body
    return str(json.loads(body)["status"])
