"""`twinstream environmentd` runs replicas as `clusterd` processes unless told otherwise:
`--no-replica-processes` or `TWINSTREAM_REPLICA_PROCESSES=0|false` keep them in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import twinstream.cli.environmentd as environmentd
from twinstream.cli import main


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, True),
        (["--no-replica-processes"], {}, False),
        (["--replica-processes"], {"TWINSTREAM_REPLICA_PROCESSES": "0"}, True),
        ([], {"TWINSTREAM_REPLICA_PROCESSES": "0"}, False),
        ([], {"TWINSTREAM_REPLICA_PROCESSES": "false"}, False),
        ([], {"TWINSTREAM_REPLICA_PROCESSES": "1"}, True),
    ],
)
def test_replica_processes_by_default_with_an_opt_out(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    expected: bool,
) -> None:
    seen: list[bool] = []

    async def fake_run(config: Any, clock: Any = None) -> int:
        seen.append(config.replica_processes)
        return 0

    monkeypatch.setattr(environmentd, "run_environmentd", fake_run)
    monkeypatch.setattr(main.os, "_exit", lambda code: None)
    monkeypatch.delenv("TWINSTREAM_REPLICA_PROCESSES", raising=False)
    result = CliRunner().invoke(
        main.app,
        ["environmentd", "--data-dir", str(tmp_path), "--deploy-generation", "1", *args],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert seen == [expected]
