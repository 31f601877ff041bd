"""The orchestrator as its own process, so the harness can kill -9 or SIGSTOP it.

    python -m twinstream.safety.orchd --data-dir D [--consensus URL] [--blob URL]
        [--env-consensus URL] [--env-blob URL] [--extra-arg ARG ...]

It runs `Orchestrator.up()`, resumes a rollout a crashed orchd left half done (in the
background, as `twinstream up` does), and the control API of `twinstream up`
(`DIR/control.json`), without a balancer: the harness runs `balancerd` apart.
`--env-consensus`/`--env-blob` are what environmentd gets (the fault proxy's port), while the
orchestrator itself talks to the store directly. SIGTERM stops every generation; SIGKILL
leaves them running, as a crashed orchestrator would.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from twinstream.orchestrator.control import ControlServer
from twinstream.orchestrator.rollout import Orchestrator


async def serve(args: argparse.Namespace) -> int:
    orch = Orchestrator(
        Path(args.data_dir),
        consensus_url=args.consensus,
        blob_url=args.blob,
        extra_args=list(args.extra_arg or []),
    )
    if args.env_consensus:
        orch.supervisor.consensus_url = args.env_consensus
    if args.env_blob:
        orch.supervisor.blob_url = args.env_blob
    control = ControlServer(orch, balancer_port=None)
    stop = control.stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        record = await orch.up()
        await control.start()
        if orch.rollout_pending(record):  # as `twinstream up` does: finish what a crash left
            control.run_in_background("rollout", orch.resume_rollout(progress=control.progress))
        print(f"orchd up: generation {record.active_generation}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await control.close()
        await orch.down()
        await orch.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinstream.safety.orchd")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--consensus")
    parser.add_argument("--blob")
    parser.add_argument("--env-consensus")
    parser.add_argument("--env-blob")
    parser.add_argument("--extra-arg", action="append")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
