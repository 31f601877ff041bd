"""Real `clusterd` processes for the tests here: `procs` starts them through the process
orchestrator (cleaned up after each test) on a SQLite + file-blob persist location in the test's
tmp dir, `tables_client` is this process's own client on it. `_runtime_helpers.py` (writers of
the `orders`/`customers` input shards, recompute checks) is loaded by path from
tests/compute/runtime (the suite runs with --import-mode=importlib)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from twinstream.controller.remote import REPLICA_CALL_TIMEOUT_S
from twinstream.controller.replica_processes import ProcessReplica, clusterd_command
from twinstream.orchestrator.processes import ProcessOrchestrator
from twinstream.persist import PersistClient

_NAME = "_runtime_helpers"

if _NAME not in sys.modules:
    _path = Path(__file__).parent.parent / "runtime" / f"{_NAME}.py"
    _spec = importlib.util.spec_from_file_location(_NAME, _path)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)

#: A clusterd process imports the whole engine: be generous on a loaded machine.
START_TIMEOUT_S = 120.0


@dataclass
class Procs:
    root: Path
    orchestrator: ProcessOrchestrator

    @property
    def consensus_url(self) -> str:
        return f"sqlite://{self.root / 'consensus.db'}"

    @property
    def blob_url(self) -> str:
        return f"file://{self.root / 'blob'}"

    async def start(
        self,
        name: str,
        *,
        read_only: bool = False,
        call_timeout_s: float = REPLICA_CALL_TIMEOUT_S,
    ) -> ProcessReplica:
        cmd = clusterd_command(
            name, consensus_url=self.consensus_url, blob_url=self.blob_url, read_only=read_only
        )
        replica = ProcessReplica(
            self.orchestrator, name, cmd, read_only=read_only, call_timeout_s=call_timeout_s
        )
        await self.orchestrator.wait_ready(name, START_TIMEOUT_S)
        return replica


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[Procs]:
    p = Procs(tmp_path, ProcessOrchestrator(tmp_path / "procs"))
    try:
        yield p
    finally:
        await p.orchestrator.stop_all()


@pytest.fixture
async def tables_client(procs: Procs) -> AsyncIterator[PersistClient]:
    c = PersistClient.from_urls(procs.consensus_url, procs.blob_url)
    await c.start_watching()
    try:
        yield c
    finally:
        await c.close()
