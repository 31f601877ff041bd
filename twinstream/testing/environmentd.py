"""Run a real `twinstream environmentd` process for tests and benchmarks.

    with environmentd_process(data_dir) as env:
        psycopg.connect(env.conninfo())

Ports are chosen by the process (port 0) and read back from the ports file it writes once it
serves. `kill9()` simulates a crash; `restart()` starts the same data dir again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT_S = 60.0


class EnvironmentdError(RuntimeError):
    pass


@dataclass
class EnvironmentdProcess:
    data_dir: Path
    generation: int = 1
    consensus_url: str | None = None
    blob_url: str | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    sql_port: int = 0
    internal_http_port: int = 0
    http_port: int = 0

    @property
    def ports_file(self) -> Path:
        return self.data_dir / f"environmentd-gen-{self.generation}.json"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"environmentd-gen-{self.generation}.log"

    def conninfo(self, dbname: str = "twinstream", user: str = "twinstream") -> str:
        return f"host=127.0.0.1 port={self.sql_port} user={user} dbname={dbname}"

    def url(self, dbname: str = "twinstream") -> str:
        return f"postgresql://twinstream@127.0.0.1:{self.sql_port}/{dbname}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.ports_file.unlink()
        args = [
            sys.executable,
            "-m",
            "twinstream",
            "environmentd",
            "--data-dir",
            str(self.data_dir),
            "--deploy-generation",
            str(self.generation),
            "--sql-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--internal-http-listen",
            "127.0.0.1:0",
        ]
        if self.consensus_url:
            args += ["--consensus", self.consensus_url]
        if self.blob_url:
            args += ["--blob", self.blob_url]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                args + self.extra_args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvironmentdError(
                    f"environmentd exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.ports_file.exists():
                try:
                    info = json.loads(self.ports_file.read_text())
                except ValueError:
                    info = None
                if info and info.get("pid") == self.proc.pid:
                    self.sql_port = int(info["sql_port"])
                    self.internal_http_port = int(info["internal_http_port"])
                    self.http_port = int(info.get("http_port", 0))
                    return
            time.sleep(0.02)
        self.kill9()
        raise EnvironmentdError(f"environmentd did not start in time:\n{self.log_tail()}")

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not exit. Returns the exit code. Then kills this
        generation's replica processes that outlived it (a clean exit stops them itself;
        after `kill9()` they keep running, for a restarted environmentd to adopt)."""
        code = self._terminate(timeout_s)
        self.reap_replicas()
        return code

    def _terminate(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def restart(self) -> None:
        """Stop and start again; replica processes left by a `kill9()` are adopted."""
        self._terminate()
        self.start()

    def replica_pids(self) -> dict[str, int]:
        """This generation's live `clusterd` processes (name -> pid), from their ports files."""
        return replica_processes(self.data_dir, self.generation)

    def reap_replicas(self) -> list[str]:
        """SIGKILL this generation's replica processes still running; their names."""
        found = self.replica_pids()
        for pid in found.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return sorted(found)


@contextlib.contextmanager
def environmentd_process(data_dir: Path, **kwargs: object) -> Iterator[EnvironmentdProcess]:
    env = EnvironmentdProcess(data_dir, **kwargs)  # type: ignore[arg-type]
    env.start()
    try:
        yield env
    finally:
        env.stop()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def replica_processes(data_dir: Path, generation: int | None = None) -> dict[str, int]:
    """Live `twinstream clusterd` processes started for `data_dir` (of one generation, or
    all): name -> pid, from the orchestrator's ports files, checked against the process's
    command line (a reused pid is not theirs)."""
    out: dict[str, int] = {}
    suffix = f"-gen-{generation}" if generation is not None else ""
    for path in sorted((data_dir / "clusterd").glob("*.json")):
        name = path.stem
        if not name.endswith(suffix):
            continue
        try:
            pid = int(json.loads(path.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        cmd = _cmdline(pid)
        if "clusterd" in cmd and name in cmd:
            out[name] = pid
    return out
