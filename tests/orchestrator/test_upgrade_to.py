"""`upgrade --to COMMAND`: the new generation runs from another install of twinstream.

The second install is real: a wheel built from this tree (with a marked version) installed,
not editable, into a virtualenv that sees the system site-packages for the dependencies. A
`--to` command that cannot run, exits at startup, or crash-loops fails the rollout and leaves
the old generation untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import twinstream
from twinstream.orchestrator.record import RolloutStatus
from twinstream.orchestrator.rollout import Orchestrator, RolloutError
from twinstream.orchestrator.supervisor import pid_alive

MARKED_VERSION = "0.1.0+second.install"
WHICH_TWINSTREAM = "import twinstream; print(twinstream.__version__, twinstream.__file__)"
STABLE_FOREVER = ["--system-param", "with_0dt_caught_up_check_stability_period=1h"]


def query(port: int, sql: str) -> list[tuple[object, ...]]:
    conninfo = f"host=127.0.0.1 port={port} user=twinstream dbname=twinstream"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def run(*args: str | Path) -> str:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def second_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The python of a virtualenv with this tree installed from a wheel; yields its path."""
    root = tmp_path_factory.mktemp("second-install")
    tree = Path(twinstream.__file__).resolve().parent.parent
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (tree / name).exists():
            shutil.copy(tree / name, src / name)
    shutil.copytree(
        tree / "twinstream", src / "twinstream", ignore=shutil.ignore_patterns("__pycache__")
    )
    init = src / "twinstream" / "__init__.py"
    init.write_text(
        init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{MARKED_VERSION}"')
    )
    dist = root / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", dist, src)  # fmt: skip
    wheels = list(dist.glob("twinstream-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "-q", wheels[0])  # fmt: skip
    shutil.rmtree(src)
    yield python


def test_second_install_is_separate(second_install: Path) -> None:
    proc = subprocess.run(
        [second_install, "-c", WHICH_TWINSTREAM],
        capture_output=True, text=True, env=without_pythonpath(), check=True, timeout=60,
        cwd=second_install.parent,
    )  # fmt: skip
    version, path = proc.stdout.split()
    assert version == MARKED_VERSION
    assert Path(path).is_relative_to(second_install.parent.parent), path


async def test_upgrade_to_a_second_install(tmp_path: Path, second_install: Path) -> None:
    orch = Orchestrator(tmp_path / "env")
    try:
        record = await orch.up()
        ep0 = record.active_endpoint()
        assert ep0 is not None
        query(ep0.sql_port, "CREATE TABLE t (a int)")
        query(ep0.sql_port, "INSERT INTO t VALUES (1)")
        # What `twinstream upgrade --to "env -u PYTHONPATH VENV/bin/python -m twinstream"` runs.
        program = ["env", "-u", "PYTHONPATH", str(second_install), "-m", "twinstream"]
        record = await orch.upgrade(program=program)
        assert record.active_generation == 1 and record.status is RolloutStatus.APPLIED
        assert record.program == program
        ep1 = record.active_endpoint()
        assert ep1 is not None
        cmdline = Path(f"/proc/{ep1.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0] == str(second_install).encode(), cmdline
        environ = Path(f"/proc/{ep1.pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"PYTHONPATH=") for v in environ)
        cwd = Path(f"/proc/{ep1.pid}/cwd").resolve()
        assert cwd == orch.supervisor.data_dir.resolve()
        # What that process imports, from where it runs, with its environment:
        proc = subprocess.run(
            [second_install, "-c", WHICH_TWINSTREAM],
            capture_output=True, text=True, env=without_pythonpath(), check=True, timeout=60,
            cwd=cwd,
        )  # fmt: skip
        assert proc.stdout.split()[0] == MARKED_VERSION
        query(ep1.sql_port, "INSERT INTO t VALUES (2)")
        assert query(ep1.sql_port, "SELECT a FROM t ORDER BY a") == [(1,), (2,)]
        assert not pid_alive(ep0.pid)
    finally:
        await orch.down()
        await orch.close()


CRASH_AFTER_START = """
import json, pathlib, subprocess, sys, time
args = sys.argv[1:]
ports = pathlib.Path(args[args.index("--data-dir") + 1]) / (
    "environmentd-gen-" + args[args.index("--deploy-generation") + 1] + ".json"
)
child = subprocess.Popen([sys.executable, "-m", "twinstream", *args])
while child.poll() is None:  # this install serves for a moment, then crashes
    if ports.exists() and json.loads(ports.read_text() or "{}").get("pid") == child.pid:
        time.sleep(1)
        break
    time.sleep(0.05)
child.kill()
sys.exit(1)
"""


@pytest.mark.parametrize("kind", ["missing", "exits", "crash-loops"])
async def test_bad_to_command_fails_and_leaves_the_old_generation(
    tmp_path: Path, kind: str
) -> None:
    orch = Orchestrator(tmp_path / "env", extra_args=STABLE_FOREVER)
    try:
        record = await orch.up()
        ep0 = record.active_endpoint()
        assert ep0 is not None
        query(ep0.sql_port, "CREATE TABLE t (a int)")
        if kind == "missing":
            program, expect = [str(tmp_path / "no-such-twinstream")], "cannot run"
        elif kind == "exits":
            program, expect = [sys.executable, "-c", "import sys; sys.exit(3)"], "exited with 3"
        else:
            script = tmp_path / "crashy.py"
            script.write_text(CRASH_AFTER_START)
            program, expect = [sys.executable, str(script)], "crash"
        with pytest.raises(RolloutError, match=expect) as info:
            await orch.upgrade(program=program)
        assert "generation 0 keeps serving" in str(info.value)
        record = await orch.record() or record
        assert record.status is RolloutStatus.FAILED_DEPLOY
        assert record.active_generation == 0 and list(record.endpoints) == ["0"]
        assert 1 not in orch.supervisor.generations, "the new generation is torn down"
        gp0 = orch.supervisor.generations[0]
        assert gp0.pid == ep0.pid and gp0.restarts == 0, "generation 0 untouched"
        query(ep0.sql_port, "INSERT INTO t VALUES (1)")  # still the leader
        assert query(ep0.sql_port, "SELECT a FROM t") == [(1,)]
    finally:
        await orch.down()
        await orch.close()
