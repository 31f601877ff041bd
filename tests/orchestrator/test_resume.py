"""The orchestrator (`twinstream up`, a real process) killed in each rollout phase resumes
correctly from the durable rollout record, adopting the generations that still run:

- Applying (SIGKILL while the new generation catches up): the rollout continues;
- ReadyToPromote (SIGKILL, ManuallyPromote): it waits for `promote`, and a second upgrade is
  refused naming the rollout in progress;
- Promoting (crash right after the point of no return is written, and after promote returned):
  the promotion is finished;
- after Applied (crash before the old generation is torn down): the old one is cleaned up.

Exact crash points use failpoints (`orchestrator/failpoints.py`); a crash there is a SIGKILL
for every purpose (exit 137, no cleanup, generations keep running in their own sessions).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from twinstream.orchestrator.failpoints import CRASH_EXIT_CODE
from twinstream.orchestrator.failpoints import ENV as FAILPOINTS_ENV
from twinstream.orchestrator.supervisor import pid_alive

DEADLINE_S = 90.0
UP = [sys.executable, "-m", "twinstream", "up"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)  # poll interval
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Up:
    """`twinstream up` as a real process on a fixed balancer port (kept across restarts)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def control_file(self) -> Path:
        return self.data_dir / "control.json"

    def start(self, **env: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.control_file.unlink(missing_ok=True)
        log = open(self.data_dir / "up.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [*UP, "--data-dir", str(self.data_dir), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        finally:
            log.close()

    def wait_serving(self) -> None:
        def ready() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, self.log_tail()
            return self.control_file.exists() and self.call("GET", "/status")[0] == 200

        wait_until(ready, "twinstream up to serve")

    def log_tail(self) -> str:
        return (self.data_dir / "up.log").read_bytes()[-3000:].decode(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        port = json.loads(self.control_file.read_text())["port"]
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def status(self) -> dict[str, Any]:
        code, body = self.call("GET", "/status")
        assert code == 200, body
        return dict(body)

    def record(self) -> dict[str, Any]:
        return dict(self.status()["record"])

    def sql(self, stmt: str) -> list[tuple[Any, ...]]:
        conninfo = f"host=127.0.0.1 port={self.port} user=twinstream dbname=twinstream"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=30) as conn:
            cur = conn.execute(stmt)
            return cur.fetchall() if cur.description else []

    def shutdown(self) -> None:
        """`twinstream down`; then make sure no process of this environment is left."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.call("POST", "/down")
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for ports in self.data_dir.glob("environmentd-gen-*.json"):
            try:
                pid = int(json.loads(ports.read_text())["pid"])
            except (ValueError, KeyError):
                continue
            if pid_alive(pid):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    env = Up(tmp_path / "env")
    try:
        yield env
    finally:
        env.shutdown()


def gen_pid(status: dict[str, Any], gen: int) -> int:
    return int(status["record"]["endpoints"][str(gen)]["pid"])


def start_with_data(up: Up, **env: str) -> int:
    """Start `up`, create a table with one row; returns generation 0's pid."""
    up.start(**env)
    up.wait_serving()
    up.sql("CREATE TABLE t (a int)")
    up.sql("INSERT INTO t VALUES (1)")
    return gen_pid(up.status(), 0)


def wait_applied(up: Up, gen: int) -> dict[str, Any]:
    def applied() -> bool:
        status = up.status()
        record = status["record"]
        return bool(
            record["status"] == "Applied"
            and record["active_generation"] == gen
            and not status["rollout_running"]
        )

    wait_until(applied, f"generation {gen} Applied")
    status = up.status()
    assert status["last_error"] is None, status
    return status


def check_after(up: Up, status: dict[str, Any], old_pid: int, new_pid: int) -> None:
    assert list(status["record"]["endpoints"]) == ["1"], status["record"]
    assert gen_pid(status, 1) == new_pid, "the new generation was adopted, not started again"
    assert status["generations"]["1"]["status"] == "IsLeader"
    wait_until(lambda: not pid_alive(old_pid), "the old generation to exit")
    up.sql("INSERT INTO t VALUES (3)")
    assert up.sql("SELECT a FROM t ORDER BY a") == [(1,), (2,), (3,)]


def test_killed_while_applying_resumes_the_rollout(up: Up) -> None:
    # A stability period of an hour keeps generation 1 catching up until it is skipped.
    old_pid = start_with_data(up, WITH_0DT_CAUGHT_UP_CHECK_STABILITY_PERIOD="1h")
    assert up.call("POST", "/upgrade", {})[0] == 202
    wait_until(
        lambda: up.record()["status"] == "Applying" and "1" in up.record()["endpoints"],
        "generation 1 started",
    )
    new_pid = gen_pid(up.status(), 1)
    up.kill9()
    assert pid_alive(old_pid) and pid_alive(new_pid), "generations outlive the orchestrator"
    up.start()
    up.wait_serving()
    status = up.status()
    assert status["record"]["status"] == "Applying"
    assert status["rollout_running"], "the rollout resumed"
    assert status["generations"]["0"]["adopted"] and status["generations"]["1"]["adopted"]
    assert gen_pid(status, 0) == old_pid
    up.sql("INSERT INTO t VALUES (2)")  # generation 0 still serves through the balancer
    code, body = up.call("POST", "/upgrade", {})
    assert code == 409 and "generation 1 is in progress (Applying" in body["message"]
    internal = status["record"]["endpoints"]["1"]["internal_http_port"]
    req = urllib.request.Request(
        f"http://127.0.0.1:{internal}/api/leader/skip-catchup", method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 204)
    check_after(up, wait_applied(up, 1), old_pid, new_pid)


def test_killed_at_ready_to_promote_waits_for_promote(up: Up) -> None:
    old_pid = start_with_data(up)
    assert up.call("POST", "/upgrade", {"strategy": "ManuallyPromote"})[0] == 202
    wait_until(
        lambda: up.record()["status"] == "ReadyToPromote" and not up.status()["rollout_running"],
        "ReadyToPromote",
    )
    new_pid = gen_pid(up.status(), 1)
    up.kill9()
    up.start()
    up.wait_serving()
    status = up.status()
    assert status["record"]["status"] == "ReadyToPromote" and not status["rollout_running"]
    assert gen_pid(status, 1) == new_pid and status["generations"]["1"]["adopted"]
    up.sql("INSERT INTO t VALUES (2)")
    code, body = up.call("POST", "/upgrade", {})
    assert code == 409
    assert "generation 1 is in progress (ReadyToPromote" in body["message"]
    assert "twinstream promote" in body["message"]
    # The same refusal through the CLI, and `status --json` shows the rollout.
    cli = [sys.executable, "-m", "twinstream"]
    proc = subprocess.run(
        [*cli, "upgrade", "--data-dir", str(up.data_dir)], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "refused" in proc.stderr and "generation 1 is in progress" in proc.stderr
    proc = subprocess.run(
        [*cli, "status", "--json", "--data-dir", str(up.data_dir)], capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(proc.stdout)["record"]["status"] == "ReadyToPromote"
    proc = subprocess.run(
        [*cli, "promote", "--data-dir", str(up.data_dir)], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_after(up, wait_applied(up, 1), old_pid, new_pid)
    code, body = up.call("POST", "/promote")
    assert code == 409 and "nothing to promote (rollout status Applied)" in body["message"]


@pytest.mark.parametrize("point", ["rollout-after-promoting", "rollout-after-promote"])
def test_crash_while_promoting_finishes_the_promotion(up: Up, point: str) -> None:
    old_pid = start_with_data(up, **{FAILPOINTS_ENV: point})
    up.sql("INSERT INTO t VALUES (2)")
    assert up.call("POST", "/upgrade", {})[0] == 202
    assert up.proc is not None
    assert up.proc.wait(DEADLINE_S) == CRASH_EXIT_CODE, up.log_tail()
    up.control_file.unlink()
    # The record says Promoting: the point of no return was passed.
    from twinstream.orchestrator.record import RolloutStatus, RolloutStore
    from twinstream.persist.urls import default_consensus_url, open_consensus

    async def read_record() -> Any:
        consensus = open_consensus(default_consensus_url(up.data_dir))
        try:
            return (await RolloutStore(consensus).read())[1]
        finally:
            await consensus.close()

    import asyncio

    record = asyncio.run(read_record())
    assert record.status is RolloutStatus.PROMOTING
    new_pid = record.endpoints["1"].pid
    up.start()
    up.wait_serving()  # `up` finishes the promotion before it serves
    status = wait_applied(up, 1)
    assert status["generations"]["1"]["adopted"]
    check_after(up, status, old_pid, new_pid)


def test_crash_after_applied_cleans_up_the_old_generation(up: Up) -> None:
    old_pid = start_with_data(up, **{FAILPOINTS_ENV: "rollout-after-applied"})
    up.sql("INSERT INTO t VALUES (2)")
    assert up.call("POST", "/upgrade", {})[0] == 202
    assert up.proc is not None
    assert up.proc.wait(DEADLINE_S) == CRASH_EXIT_CODE, up.log_tail()
    up.start()
    up.wait_serving()
    status = wait_applied(up, 1)
    new_pid = gen_pid(status, 1)
    check_after(up, status, old_pid, new_pid)
