"""`twinstream up | upgrade | status | promote | down`: run an environment and upgrade it.

`up` is the long-running process (orchestrator + balancer + control API); the others are
short commands that talk to it through the control API (`DIR/control.json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from twinstream.orchestrator.control import ControlServer, control_file
from twinstream.orchestrator.rollout import Orchestrator, Strategy

_err = Console(stderr=True)
_out = Console()

DataDir = Annotated[Path, typer.Option(help="The environment's directory.")]


def _control(data_dir: Path) -> int:
    try:
        return int(json.loads(control_file(data_dir).read_text())["port"])
    except (FileNotFoundError, ValueError, KeyError):
        _err.print(
            f"[red]error:[/red] no running environment in {data_dir} "
            "(start one with `twinstream up`)"
        )
        raise typer.Exit(2) from None


def _call(
    data_dir: Path, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    port = _control(data_dir)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except urllib.error.URLError as e:
        _err.print(f"[red]error:[/red] the environment in {data_dir} does not answer: {e}")
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        data_dir: DataDir = Path("twinstream-data"),
        consensus: Annotated[str | None, typer.Option(help="Consensus URL.")] = None,
        blob: Annotated[str | None, typer.Option(help="Blob URL.")] = None,
        port: Annotated[int, typer.Option(help="The balancer's SQL port.")] = 6875,
    ) -> None:
        """Start (or resume) an environment: generation 0, balancer, orchestrator."""
        raise typer.Exit(asyncio.run(_up(data_dir, consensus, blob, port)))

    @app.command("upgrade")
    def upgrade(
        data_dir: DataDir = Path("twinstream-data"),
        strategy: Annotated[Strategy, typer.Option()] = Strategy.WAIT_UNTIL_READY,
        rollout_timeout: Annotated[
            float | None, typer.Option(help="Seconds to wait for ReadyToPromote.")
        ] = None,
        force_promote: Annotated[bool, typer.Option(help="Skip catch-up.")] = False,
        to: Annotated[
            str | None, typer.Option(help="Command of another twinstream install to run.")
        ] = None,
    ) -> None:
        """Upgrade the running environment to a new generation, showing live progress."""
        code, body = _call(
            data_dir,
            "POST",
            "/upgrade",
            {
                "strategy": strategy.value,
                "rollout_timeout_s": rollout_timeout,
                "force_promote": force_promote,
                "to": to,
            },
        )
        if code != 202:
            _err.print(f"[red]refused:[/red] {body.get('message')}")
            raise typer.Exit(1)
        started = time.monotonic()
        with Live(console=_err, refresh_per_second=8) as live:
            while True:
                _code, status = _call(data_dir, "GET", "/status")
                live.update(_progress_table(status, time.monotonic() - started))
                if not status["rollout_running"]:
                    break
                time.sleep(0.1)  # refresh interval of the live view
        if status.get("last_error"):
            _err.print(f"[red]upgrade failed:[/red] {status['last_error']}")
            raise typer.Exit(1)
        record = status["record"] or {}
        _out.print(
            f"upgrade done: generation {record.get('active_generation')} is "
            f"{record.get('status')} ({record.get('message', '')}) in "
            f"{time.monotonic() - started:.1f} s"
        )

    @app.command("status")
    def status(
        data_dir: DataDir = Path("twinstream-data"),
        json_output: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Show the rollout record and the running generations."""
        _code, body = _call(data_dir, "GET", "/status")
        if json_output:
            sys.stdout.write(json.dumps(body) + "\n")
            return
        _out.print(_progress_table(body, None))

    @app.command("promote")
    def promote(data_dir: DataDir = Path("twinstream-data")) -> None:
        """Promote a generation waiting in ReadyToPromote (ManuallyPromote strategy)."""
        code, body = _call(data_dir, "POST", "/promote")
        _out.print(body.get("message"))
        raise typer.Exit(0 if code == 202 else 1)

    @app.command("down")
    def down(data_dir: DataDir = Path("twinstream-data")) -> None:
        """Stop the environment (balancer, orchestrator and every generation)."""
        _call(data_dir, "POST", "/down")
        _out.print("stopping")


def _progress_table(status: dict[str, Any], elapsed: float | None) -> Table:
    record = status.get("record") or {}
    title = f"generation {record.get('active_generation')} active, {record.get('status')}"
    if elapsed is not None:
        title += f" — {elapsed:.1f} s"
    table = Table(title=title)
    table.add_column("generation")
    table.add_column("status")
    table.add_column("restarts", justify="right")
    table.add_column("hydrated", justify="right")
    table.add_column("lag per cluster")
    for gen, info in sorted(status.get("generations", {}).items()):
        hydrated, lags = "", ""
        prog = info.get("progress")
        if prog:
            hydrated = f"{prog['hydrated']}/{prog['collections']} ({prog['hydrated_pct']:.0f}%)"
            lags = ", ".join(
                f"{name}: {c['max_lag_ms']} ms" for name, c in sorted(prog["clusters"].items())
            )
        table.add_row(gen, str(info.get("status")), str(info.get("restarts")), hydrated, lags)
    events = status.get("events") or []
    if events:
        last = events[-1]
        table.caption = f"last step: {last.get('phase')} {last.get('status', '')}"
    return table


async def _up(data_dir: Path, consensus: str | None, blob: str | None, port: int) -> int:
    orch = Orchestrator(data_dir, consensus_url=consensus, blob_url=blob)
    record = await orch.up()
    balancer = await _start_balancer(orch, port)
    if balancer is not None:
        port = int(balancer.port)
    control = ControlServer(orch, balancer_port=port if balancer else None)
    await control.start()
    if orch.rollout_pending(record):
        _out.print(f"resuming the rollout to generation {record.desired_generation}")
        control.run_in_background("rollout", orch.resume_rollout(progress=control.progress))
    ep = record.active_endpoint()
    sql_port = port if balancer is not None else (ep.sql_port if ep else 0)
    _out.print(
        f"twinstream is up (generation {record.active_generation}): "
        f"postgresql://twinstream@127.0.0.1:{sql_port}/twinstream"
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, control.stop.set)
    try:
        await control.stop.wait()
    finally:
        await control.close()
        if balancer is not None:
            await balancer.close()
        await orch.down()
        await orch.close()
    return 0


async def _start_balancer(orch: Orchestrator, port: int) -> Any:
    """The balancer in front of the active generation (None until the balancer exists)."""
    try:
        from twinstream.balancer import start_for_orchestrator
    except ImportError:
        return None
    return await start_for_orchestrator(orch, port)
