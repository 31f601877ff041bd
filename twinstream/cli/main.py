"""The ``twinstream`` command line (console script ``twinstream = twinstream.cli.main:main``)."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import enum
import json
import logging
import math
import os
import pstats
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from twinstream.cli import bench as bench_registry
from twinstream.cli import ops

app = typer.Typer(
    name="twinstream",
    help="twinstream: a streaming SQL database whose upgrades are invisible to its users.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """twinstream: a streaming SQL database whose upgrades are invisible to its users."""


class Backend(enum.StrEnum):
    sqlite = "sqlite"
    postgres = "postgres"


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: report them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _render_table(name: str, result: dict[str, Any]) -> None:
    table = Table(title=f"twinstream bench {name}")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, float):
            text = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
        elif value is None:
            text = "-"
        else:
            text = str(value)
        table.add_row(key, text)
    Console().print(table)


@app.command("bench")
def bench_command(
    name: Annotated[
        str,
        typer.Argument(
            help=f"Benchmark to run: {', '.join(bench_registry.names())}.", show_default=False
        ),
    ],
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help="Print exactly one JSON line on stdout (everything else to stderr)."
        ),
    ] = False,
    backend: Annotated[
        Backend, typer.Option(help="Persist location: a temp SQLite dir or a throwaway Postgres.")
    ] = Backend.sqlite,
    seconds: Annotated[
        float, typer.Option(min=0.1, help="Length of each timed measurement window.")
    ] = 5.0,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows per appended batch.")] = 10,
    row_bytes: Annotated[int, typer.Option(min=8, help="Approximate encoded row size.")] = 50,
    notify_samples: Annotated[
        int, typer.Option(min=1, help="Cross-process notification samples.")
    ] = 150,
    notify_gap_ms: Annotated[
        float, typer.Option(min=0.0, help="Pause between notification samples (ms).")
    ] = 20.0,
    consensus_url: Annotated[
        str | None,
        typer.Option(help="Use this consensus location instead of a throwaway one."),
    ] = None,
    blob_url: Annotated[
        str | None, typer.Option(help="Use this blob location (default: per backend).")
    ] = None,
    rows: Annotated[
        int, typer.Option(min=0, help="Rows of the data set (0: the benchmark's default).")
    ] = 0,
    profile: Annotated[
        Path | None,
        typer.Option(help="Run under cProfile; write pstats to this file and a summary to stderr."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller workload (benchmarks with sizes: ivm).")
    ] = False,
) -> None:
    """Run benchmark NAME and report its figures (see benchmarks/README.md)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        bench = bench_registry.get(name)
    except bench_registry.BenchmarkError as e:
        _err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    opts = bench_registry.BenchOptions(
        backend=backend.value,
        seconds=seconds,
        batch_rows=batch_rows,
        row_bytes=row_bytes,
        notify_samples=notify_samples,
        notify_gap_ms=notify_gap_ms,
        consensus_url=consensus_url,
        blob_url=blob_url,
        quick=quick,
        rows=rows,
    )
    profiler = cProfile.Profile() if profile is not None else None
    # Under --json stdout belongs to the result line: anything printed meanwhile goes to stderr.
    guard = contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext()
    try:
        with guard:
            if profiler is not None:
                profiler.enable()
            try:
                result = asyncio.run(bench.run(opts))
            finally:
                if profiler is not None:
                    profiler.disable()
    except bench_registry.BenchmarkError as e:
        _err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
        _err.print(f"profile written to {profile}")
    result = {"bench": name, **result}
    if json_output:
        sys.stdout.write(json.dumps(_json_safe(result), allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        _render_table(name, result)


@app.command("environmentd")
def environmentd_command(
    data_dir: Annotated[Path, typer.Option(help="Where this environment keeps its state.")],
    deploy_generation: Annotated[int, typer.Option(min=0, help="This deployment's generation.")],
    consensus: Annotated[
        str | None, typer.Option(help="Consensus URL (default sqlite:///DIR/consensus.db).")
    ] = None,
    blob: Annotated[str | None, typer.Option(help="Blob URL (default file:///DIR/blob).")] = None,
    sql_listen: Annotated[str, typer.Option(help="pgwire HOST:PORT.")] = "127.0.0.1:6877",
    http_listen: Annotated[str, typer.Option(help="Public HTTP HOST:PORT.")] = "127.0.0.1:6876",
    internal_http_listen: Annotated[
        str, typer.Option(help="Internal HTTP HOST:PORT (leader API, metrics).")
    ] = "127.0.0.1:6878",
    internal_api_token: Annotated[
        str | None, typer.Option(help="Bearer token required by the internal API.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "INFO",
    system_param: Annotated[
        list[str] | None,
        typer.Option(
            help="A 0dt parameter NAME=VALUE (e.g. with_0dt_deployment_max_wait=5min); "
            "also read from environment variables named like WITH_0DT_DEPLOYMENT_MAX_WAIT. "
            "Overrides ALTER SYSTEM SET."
        ),
    ] = None,
    replica_processes: Annotated[
        bool,
        typer.Option(
            "--replica-processes/--no-replica-processes",
            envvar="TWINSTREAM_REPLICA_PROCESSES",
            help="Run each cluster replica as a `twinstream clusterd` process (the default); "
            "--no-replica-processes (or TWINSTREAM_REPLICA_PROCESSES=0) runs them inside "
            "environmentd.",
        ),
    ] = True,
) -> None:
    """Run one environment process: catalog, SQL over pgwire, HTTP APIs."""

    from twinstream.cli.environmentd import EnvironmentdConfig, run_environmentd
    from twinstream.cli.listen import parse_listen
    from twinstream.deployment.params import PARAMS, ParamError, validate

    flags: dict[str, str] = {}
    for name in PARAMS:
        if os.environ.get(name.upper()):
            flags[name] = os.environ[name.upper()]
    for item in system_param or []:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in PARAMS:
            _err.print(
                f"[red]error:[/red] --system-param {item!r}: expected one of "
                f"{', '.join(PARAMS)} as NAME=VALUE"
            )
            raise typer.Exit(2)
        try:
            validate(name, value)
        except ParamError as e:
            _err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
        flags[name] = value

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = EnvironmentdConfig(
        data_dir=data_dir,
        deploy_generation=deploy_generation,
        consensus_url=consensus,
        blob_url=blob,
        sql_listen=parse_listen(sql_listen),
        http_listen=parse_listen(http_listen),
        internal_http_listen=parse_listen(internal_http_listen),
        internal_api_token=internal_api_token,
        zero_downtime_flags=flags,
        replica_processes=replica_processes,
    )
    code = asyncio.run(run_environmentd(config))
    # Everything is closed by now (sessions, sockets, persist). Skip interpreter finalization:
    # garbage-collecting the heap at exit took over a second, which a fenced generation's exit
    # (and the orchestrator waiting for it) would otherwise pay.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command(
    "clusterd",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def clusterd_command(ctx: typer.Context) -> None:
    """Run one cluster replica: dataflows over persist, served to the compute controller
    (`twinstream clusterd --help` lists its options)."""
    # One argument parser (argparse, in the module): `python -m twinstream clusterd` reaches
    # it without importing this CLI at all, for a fast start.
    from twinstream.compute.clusterd import main as clusterd_main

    raise typer.Exit(clusterd_main(ctx.args))


ops.register(app)


@app.command("balancerd")
def balancerd_command(
    data_dir: Annotated[
        Path | None, typer.Option(help="Environment directory (its consensus is the default).")
    ] = None,
    consensus: Annotated[str | None, typer.Option(help="Consensus URL to follow.")] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve pgwire on.")] = "127.0.0.1:6875",
    environment: Annotated[str, typer.Option(help="Environment name in the record.")] = "default",
    ddl_policy: Annotated[str, typer.Option(help="hold | error during cutover.")] = "hold",
) -> None:
    """Run the pgwire balancer: routes clients to the active generation, moves them over."""
    from twinstream.balancer import Balancer, RolloutRoute
    from twinstream.cli.listen import parse_listen
    from twinstream.persist.urls import default_consensus_url, open_consensus

    if consensus is None and data_dir is None:
        _err.print("[red]error:[/red] give --data-dir or --consensus")
        raise typer.Exit(2)
    url = consensus or default_consensus_url(data_dir or Path("."))
    host, port = parse_listen(listen)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    async def run() -> None:
        import signal

        route = RolloutRoute(open_consensus(url), environment)
        balancer = Balancer(host, port, route, ddl_policy=ddl_policy)  # type: ignore[arg-type]
        await balancer.start()
        print(f"balancerd listening on {host}:{balancer.port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await balancer.close()
            await route.close()

    asyncio.run(run())


@app.command("demo")
def demo_command(
    upgrades: Annotated[int, typer.Option(min=1, help="How many upgrades to perform.")] = 3,
    quick: Annotated[bool, typer.Option(help="Shorter steady phases (under 60 s).")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON line.")
    ] = False,
    png: Annotated[
        Path | None, typer.Option("--png", help="Also write the latency chart as a PNG here.")
    ] = None,
    writers: Annotated[int, typer.Option(min=1, help="Writer clients.")] = 4,
    readers: Annotated[int, typer.Option(min=1, help="Read-your-writes reader clients.")] = 2,
) -> None:
    """A live upgrade under load, then a report (the main job)."""
    from twinstream.cli.demo import demo_main

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise typer.Exit(
        demo_main(
            upgrades=upgrades,
            quick=quick,
            json_output=json_output,
            png_path=png,
            writers=writers,
            readers=readers,
        )
    )


def main() -> None:
    if sys.argv[1:2] == ["clusterd"]:  # fast path, as in `twinstream/__main__.py`
        from twinstream.compute.clusterd import main as clusterd_main

        sys.exit(clusterd_main(sys.argv[2:]))
    app(prog_name="twinstream")


if __name__ == "__main__":
    main()
