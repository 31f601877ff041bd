"""Balancer benchmark: ``twinstream bench balancer --json``.

What the balancer adds to a statement's latency. One real environmentd (temp dir) serves a
1,000-row table; the same prepared point SELECT runs, one client (psycopg 3), against:

- the environmentd directly (the baseline);
- `twinstream balancerd` (a real process, routing by the rollout record);
- PgBouncer 1.x in session mode, when a ``pgbouncer`` binary is installed (otherwise its
  figures are null and ``pgbouncer`` is ``"not installed"``).

The targets are measured in interleaved rounds so that machine noise hits them alike. Figures:
p50/p99 per target, ``added_p50_ms`` (target p50 - direct p50), the ratio to direct, and
``added_vs_pgbouncer`` (our added p50 / PgBouncer's added p50).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from twinstream.cli.bench import BenchOptions
from twinstream.orchestrator.record import (
    GenerationEndpoint,
    RolloutRecord,
    RolloutStatus,
    RolloutStore,
)
from twinstream.persist.urls import default_consensus_url, open_consensus
from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process

ROWS = 1000
ROUNDS = 5
#: Statements per target per round (scaled down by --seconds below 5).
PER_ROUND = 400
STARTUP_TIMEOUT_S = 60.0
BALANCERD = [sys.executable, "-m", "twinstream", "balancerd"]
PGBOUNCER_OS_USER_WHEN_ROOT = "postgres"  # pgbouncer refuses to run as root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conninfo(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=twinstream dbname=twinstream"


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)  # poll interval while the process starts
    raise RuntimeError(f"{what} did not listen on {port} in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _write_route(env: EnvironmentdProcess) -> None:
    consensus = open_consensus(default_consensus_url(env.data_dir))
    try:
        assert env.proc is not None
        endpoint = GenerationEndpoint(
            env.generation, "127.0.0.1", env.sql_port, env.internal_http_port, env.proc.pid
        )
        record = RolloutRecord(
            env.generation,
            env.generation,
            RolloutStatus.APPLIED,
            {str(env.generation): endpoint},
        )
        assert await RolloutStore(consensus).write(None, record)
    finally:
        await consensus.close()


@contextlib.contextmanager
def _balancerd(env: EnvironmentdProcess, log: Path) -> Iterator[int]:
    asyncio.run(_write_route(env))
    port = _free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*BALANCERD, "--data-dir", str(env.data_dir), "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_port(port, proc, "balancerd")
        yield port
    finally:
        _stop(proc)


@contextlib.contextmanager
def _pgbouncer(binary: str, backend_port: int, work: Path) -> Iterator[int]:
    work.mkdir()
    work.parent.chmod(0o755)  # pgbouncer may run as another OS user: let it reach `work`
    port = _free_port()
    (work / "users.txt").write_text('"twinstream" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"twinstream = host=127.0.0.1 port={backend_port} dbname=twinstream\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {work / 'users.txt'}\n"
        "pool_mode = session\nserver_reset_query =\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {work / 'pgbouncer.log'}\npidfile = {work / 'pgbouncer.pid'}\n"
    )
    kwargs: dict[str, Any] = {}
    if os.getuid() == 0:
        user = pwd.getpwnam(PGBOUNCER_OS_USER_WHEN_ROOT)
        for path in (work, *work.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid}
    with open(work / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [binary, str(work / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            **kwargs,
        )
    try:
        try:
            _wait_port(port, proc, "pgbouncer")
        except RuntimeError as e:
            logs = [work / "stderr.log", work / "pgbouncer.log"]
            tail = "".join(p.read_text()[-1500:] for p in logs if p.exists())
            raise RuntimeError(f"{e}:\n{tail}") from None
        yield port
    finally:
        _stop(proc)


def _load(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE kv (k int NOT NULL, v text)")
        with conn.cursor().copy("COPY kv FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, f"value-{i}"))


def _samples(conn: psycopg.Connection[Any], n: int, start: int) -> list[float]:
    lat = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        row = conn.execute("SELECT v FROM kv WHERE k = %s", (i % ROWS,), prepare=True).fetchone()
        lat.append((time.perf_counter() - t0) * 1000)
        assert row == (f"value-{i % ROWS}",), row
    return lat


def _measure(ports: dict[str, int], per_round: int) -> dict[str, list[float]]:
    conns = {
        name: psycopg.connect(_conninfo(port), autocommit=True) for name, port in ports.items()
    }
    try:
        for conn in conns.values():  # warm-up: connections, prepared statements, caches
            _samples(conn, 50, 0)
        lat: dict[str, list[float]] = {name: [] for name in ports}
        for r in range(ROUNDS):
            for name, conn in conns.items():
                lat[name] += _samples(conn, per_round, r * per_round)
        return lat
    finally:
        for conn in conns.values():
            conn.close()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _run(opts: BenchOptions) -> dict[str, Any]:
    per_round = max(50, int(PER_ROUND * min(1.0, opts.seconds / 5.0)))
    binary = shutil.which("pgbouncer")
    with tempfile.TemporaryDirectory(prefix="twinstream-bench-balancer-") as tmp:
        work = Path(tmp)
        with environmentd_process(work / "env") as env:
            _load(env.conninfo())
            with contextlib.ExitStack() as stack:
                ports = {"direct": env.sql_port}
                ports["balancer"] = stack.enter_context(_balancerd(env, work / "balancerd.log"))
                if binary is not None:
                    ports["pgbouncer"] = stack.enter_context(
                        _pgbouncer(binary, env.sql_port, work / "pgbouncer")
                    )
                else:
                    opts.log("pgbouncer is not installed: measuring without it")
                opts.log(f"measuring {', '.join(ports)} ({ROUNDS} rounds x {per_round}) ...")
                lat = _measure(ports, per_round)
    direct_p50 = statistics.median(lat["direct"])
    out: dict[str, Any] = {
        "samples": len(lat["direct"]),
        "direct_p50_ms": round(direct_p50, 3),
        "direct_p99_ms": round(_p(lat["direct"], 0.99), 3),
        "pgbouncer": "measured" if "pgbouncer" in lat else "not installed",
    }
    for name in ("balancer", "pgbouncer"):
        if name not in lat:
            for key in ("p50_ms", "p99_ms", "added_p50_ms", "ratio"):
                out[f"{name}_{key}"] = None
            continue
        p50 = statistics.median(lat[name])
        out[f"{name}_p50_ms"] = round(p50, 3)
        out[f"{name}_p99_ms"] = round(_p(lat[name], 0.99), 3)
        out[f"{name}_added_p50_ms"] = round(p50 - direct_p50, 3)
        out[f"{name}_ratio"] = round(p50 / direct_p50, 3)
    bal_added, pgb_added = out["balancer_added_p50_ms"], out["pgbouncer_added_p50_ms"]
    out["added_vs_pgbouncer"] = (
        round(bal_added / pgb_added, 3) if pgb_added is not None and pgb_added > 0 else None
    )
    return out


async def run(opts: BenchOptions) -> dict[str, Any]:
    return await asyncio.to_thread(_run, opts)
