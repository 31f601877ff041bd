"""Throwaway real PostgreSQL servers for tests and benchmarks.

``start_pg_server()`` runs ``initdb`` into a fresh temporary directory and starts a
``postgres`` postmaster on a free port of 127.0.0.1 with trust authentication for the
superuser ``postgres``.  The postmaster is a direct child of this process (in its own
session), so it can be waited for, reaped and signalled precisely:
``stop()``, ``kill9()``, ``sigstop()``/``sigcont()`` and ``start()`` support fault tests.

When this process runs as root (initdb and postgres refuse to run as root), the temporary
directory is chowned to the OS user ``postgres`` and initdb/postgres are executed as that
user (``subprocess`` ``user=``/``group=``, i.e. setuid in the child; no ``runuser``/``su``).

Binaries are taken from ``$TWINSTREAM_PG_BINDIR`` if set, else from the directory that the
``initdb`` found on ``PATH`` resolves to (symlinks followed).

Shell use::

    python -m twinstream.testing.pgserver [--logical] [--base-dir DIR] [-c name=value ...]

prints the URL on stdout, then waits for Ctrl-C/SIGTERM and stops the server.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = [
    "PgServer",
    "PgServerError",
    "ShutdownMode",
    "pg_server",
    "start_pg_server",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
#: OS user that initdb/postgres run as when this process is root.
OS_USER_WHEN_ROOT = "postgres"
DEFAULT_STARTUP_TIMEOUT = 30.0
PORT_ATTEMPTS = 5
BINDIR_ENV = "TWINSTREAM_PG_BINDIR"

_POLL_INTERVAL = 0.01
_STOP_TIMEOUT = 30.0
_LOG_TAIL_BYTES = 4000
# sun_path is 108 bytes including the NUL terminator.
_MAX_SOCKET_PATH = 107
_PORT_IN_USE_MARKERS = (
    "could not bind",
    "Address already in use",
    "could not create any TCP/IP sockets",
)

ShutdownMode = Literal["smart", "fast", "immediate"]
_SHUTDOWN_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


class PgServerError(RuntimeError):
    """A throwaway PostgreSQL server could not be created, started or controlled."""


class _PortUnusable(PgServerError):
    """The chosen port turned out to be taken; retry with another one."""


@dataclass(frozen=True)
class _Identity:
    """Who initdb/postgres run as: ``uid is None`` means "as this process"."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_current_process(cls) -> _Identity:
        if os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam(OS_USER_WHEN_ROOT)
        except KeyError:
            raise PgServerError(
                f"running as root, but there is no OS user {OS_USER_WHEN_ROOT!r} to run "
                "initdb/postgres as (PostgreSQL refuses to run as root)"
            ) from None
        return cls(uid=entry.pw_uid, gid=entry.pw_gid)


# Servers started by this process that still own a temporary directory; stopped at exit.
_LIVE: set[PgServer] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(eq=False)
class PgServer:
    """A running (or stopped) throwaway PostgreSQL server. Create with `start_pg_server`."""

    host: str
    port: int
    user: str
    data_dir: Path
    #: Temporary directory holding ``data_dir``, the log and the unix socket.
    root_dir: Path = field(kw_only=True)
    #: Server log (postmaster stderr), appended across restarts.
    log_path: Path = field(kw_only=True)
    #: Directory of the unix socket, or None when unix sockets are disabled.
    socket_dir: Path | None = field(kw_only=True, default=None)
    #: ``-c name=value`` settings passed to postgres on every start (port excluded).
    settings: dict[str, str] = field(kw_only=True, default_factory=dict, repr=False)
    startup_timeout: float = field(kw_only=True, default=DEFAULT_STARTUP_TIMEOUT, repr=False)
    _bindir: Path = field(kw_only=True, repr=False)
    _identity: _Identity = field(kw_only=True, repr=False, default_factory=_Identity)
    _proc: subprocess.Popen[bytes] | None = field(init=False, default=None, repr=False)
    _removed: bool = field(init=False, default=False, repr=False)
    # Backends orphaned by kill9(tree=False); start() waits for them to exit.
    _orphans: list[int] = field(init=False, default_factory=list, repr=False)
    _owner_pid: int = field(init=False, default_factory=os.getpid, repr=False)

    # ------------------------------------------------------------------ addressing

    @property
    def url(self) -> str:
        """``postgres://postgres@127.0.0.1:PORT/postgres``."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        """URL of database `dbname` on this server."""
        user = urllib.parse.quote(self.user, safe="")
        db = urllib.parse.quote(dbname, safe="")
        return f"postgres://{user}@{self.host}:{self.port}/{db}"

    def conninfo(self, dbname: str = "postgres") -> str:
        """libpq keyword/value connection string for database `dbname`."""
        return make_conninfo(host=self.host, port=str(self.port), user=self.user, dbname=dbname)

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` and return its URL."""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster (None when not running)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def is_running(self) -> bool:
        """True while the postmaster process exists (it may be SIGSTOPped)."""
        return self.pid is not None

    def postmaster_pid_file(self) -> int | None:
        """PID recorded in ``data_dir/postmaster.pid`` (may be stale after `kill9`)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first.strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """Last `max_bytes` of the server log."""
        return _read_tail(self.log_path, 0, max_bytes)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """(Re)start the server on the same port and data directory.

        Use after ``stop(remove=False)`` or `kill9` (PostgreSQL then runs crash recovery).
        Returns once the server accepts connections.
        """
        if self._removed:
            raise PgServerError("server was stopped and its directory removed; cannot restart")
        if self.is_running:
            raise PgServerError(f"server on port {self.port} is already running")
        if self._orphans:
            _wait_dead(self._orphans)
            self._orphans = []
        try:
            self._launch_and_wait()
        except _PortUnusable as exc:
            raise PgServerError(f"cannot restart: {exc}") from None

    def stop(self, *, remove: bool = True, mode: ShutdownMode = "immediate") -> None:
        """Stop the server (default ``-m immediate``); idempotent.

        With ``remove=True`` (default) the temporary directory is deleted as well and the
        server cannot be restarted; with ``remove=False`` `start` can bring it back.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                _signal_tree(proc.pid, signal.SIGCONT)  # in case it was sigstop()ped
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(_SHUTDOWN_SIGNALS[mode])
                try:
                    proc.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._kill_tree(proc)
            self._proc = None
        if remove and not self._removed:
            shutil.rmtree(self.root_dir, ignore_errors=True)
            self._removed = True
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def kill9(self, *, tree: bool = True) -> None:
        """SIGKILL the postmaster and, by default, all its backends (like a crash).

        Returns once the killed processes are gone; `start` then restarts the server with
        crash recovery. With ``tree=False`` only the postmaster is killed; its orphaned
        backends exit on their own once they notice, and a following `start` waits for that.
        """
        proc = self._require_running()
        if tree:
            self._kill_tree(proc)
        else:
            self._orphans = _descendants(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self._proc = None

    def sigstop(self, *, tree: bool = True) -> None:
        """Freeze the server with SIGSTOP: postmaster and, by default, all its backends."""
        proc = self._require_running()
        if tree:
            _signal_tree(proc.pid, signal.SIGSTOP)
        else:
            os.kill(proc.pid, signal.SIGSTOP)

    def sigcont(self, *, tree: bool = True) -> None:
        """Resume a server frozen by `sigstop` (SIGCONT to the same processes)."""
        proc = self._require_running()
        if tree:
            _signal_tree(proc.pid, signal.SIGCONT)
        else:
            os.kill(proc.pid, signal.SIGCONT)

    # ------------------------------------------------------------------ internals

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise PgServerError(f"server on port {self.port} is not running")
        return proc

    @staticmethod
    def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL postmaster and descendants, reap the postmaster, wait for the rest."""
        if proc.poll() is not None:  # reaped: its pid may be reused, do not signal it
            return
        pids = _signal_tree(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_dead(pids)

    def _argv(self) -> list[str]:
        argv = [str(self._bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _launch_and_wait(self) -> None:
        """Start postgres on ``self.port`` and wait until it serves queries.

        Raises `_PortUnusable` if the port is taken, `PgServerError` otherwise.
        """
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        ident = self._identity
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root_dir,
                env=_child_env(),
                start_new_session=True,
                user=ident.uid,
                group=ident.gid,
                extra_groups=None if ident.uid is None else [],
            )
        self._proc = proc
        try:
            self._wait_ready(proc, offset)
        except BaseException:
            self._kill_tree(proc)
            self._proc = None
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_offset: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        want_dir = os.path.realpath(self.data_dir)
        last_error: Exception | None = None
        while True:
            rc = proc.poll()
            if rc is not None:
                log = _read_tail(self.log_path, log_offset, _LOG_TAIL_BYTES)
                if any(marker in log for marker in _PORT_IN_USE_MARKERS):
                    raise _PortUnusable(f"port {self.port} is in use:\n{log}")
                raise PgServerError(
                    f"postgres exited with status {rc} during startup on port "
                    f"{self.port}; log {self.log_path}:\n{log}"
                )
            try:
                with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=2) as conn:
                    row = conn.execute("SHOW data_directory").fetchone()
            except psycopg.Error as exc:
                last_error = exc
            else:
                got_dir = os.path.realpath(row[0]) if row else ""
                if got_dir == want_dir and proc.poll() is None:
                    return
                if got_dir != want_dir:
                    raise _PortUnusable(
                        f"port {self.port} is served by another server ({got_dir!r})"
                    )
            if time.monotonic() >= deadline:
                log = _read_tail(self.log_path, log_offset, _LOG_TAIL_BYTES)
                raise PgServerError(
                    f"postgres did not accept connections on port {self.port} within "
                    f"{self.startup_timeout:g}s (last error: {last_error}); "
                    f"log {self.log_path}:\n{log}"
                )
            time.sleep(_POLL_INTERVAL)


# ---------------------------------------------------------------------- construction


def start_pg_server(
    *,
    wal_level_logical: bool = False,
    base_dir: Path | None = None,
    extra_settings: Mapping[str, str] | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> PgServer:
    """initdb a fresh cluster in a temp dir (under `base_dir`) and start it.

    Returns once the server accepts connections. `extra_settings` are extra ``-c``
    settings (they override the defaults). When running as root, `base_dir` must be
    traversable by the OS user ``postgres``.
    """
    bindir = _find_bindir()
    identity = _Identity.for_current_process()
    root_dir = Path(tempfile.mkdtemp(prefix="twinstream-pg-", dir=base_dir)).resolve()
    try:
        if identity.uid is not None and identity.gid is not None:
            os.chown(root_dir, identity.uid, identity.gid)
        data_dir = root_dir / "data"
        _initdb(bindir, data_dir, identity)

        socket_dir: Path | None = root_dir
        if len(f"{root_dir}/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
            socket_dir = None
        settings: dict[str, str] = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(socket_dir) if socket_dir else "",
            "max_connections": "200",
        }
        if wal_level_logical:
            settings |= {
                "wal_level": "logical",
                "max_replication_slots": "10",
                "max_wal_senders": "10",
            }
        settings |= dict(extra_settings or {})

        server = PgServer(
            host=HOST,
            port=0,
            user=SUPERUSER,
            data_dir=data_dir,
            root_dir=root_dir,
            log_path=root_dir / "server.log",
            socket_dir=socket_dir,
            settings=settings,
            startup_timeout=startup_timeout,
            _bindir=bindir,
            _identity=identity,
        )
        for attempt in range(1, PORT_ATTEMPTS + 1):
            server.port = _free_port()
            try:
                server._launch_and_wait()
                break
            except _PortUnusable as exc:
                if attempt == PORT_ATTEMPTS:
                    raise PgServerError(
                        f"no usable port after {PORT_ATTEMPTS} attempts: {exc}"
                    ) from None
    except BaseException:
        shutil.rmtree(root_dir, ignore_errors=True)
        raise
    with _LIVE_LOCK:
        _LIVE.add(server)
    return server


@contextlib.contextmanager
def pg_server(
    *,
    wal_level_logical: bool = False,
    base_dir: Path | None = None,
    extra_settings: Mapping[str, str] | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> Iterator[PgServer]:
    """Context manager: `start_pg_server`, yield it, then ``stop()`` (removing the dir)."""
    server = start_pg_server(
        wal_level_logical=wal_level_logical,
        base_dir=base_dir,
        extra_settings=extra_settings,
        startup_timeout=startup_timeout,
    )
    try:
        yield server
    finally:
        server.stop()


def _find_bindir() -> Path:
    override = os.environ.get(BINDIR_ENV)
    if override:
        bindir = Path(override)
    else:
        initdb = shutil.which("initdb")
        if initdb is None:
            raise PgServerError(f"initdb not found on PATH (or set ${BINDIR_ENV})")
        bindir = Path(os.path.realpath(initdb)).parent
    for exe in ("initdb", "postgres"):
        if not os.access(bindir / exe, os.X_OK):
            raise PgServerError(f"{exe} not found or not executable in {bindir}")
    return bindir


def _child_env() -> dict[str, str]:
    """Environment for initdb/postgres: ours minus libpq/PG* variables, C messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _initdb(bindir: Path, data_dir: Path, identity: _Identity) -> None:
    argv = [
        str(bindir / "initdb"),
        "-D",
        str(data_dir),
        "--auth=trust",
        f"--username={SUPERUSER}",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
    result = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=data_dir.parent,
        env=_child_env(),
        user=identity.uid,
        group=identity.gid,
        extra_groups=None if identity.uid is None else [],
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        hint = ""
        if identity.uid is not None:
            hint = (
                f"\n(hint: initdb runs as OS user {OS_USER_WHEN_ROOT!r}; every parent of "
                f"{data_dir} must be searchable by it)"
            )
        raise PgServerError(f"initdb failed with status {result.returncode}:\n{output}{hint}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _read_tail(path: Path, offset: int, max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - max_bytes))
            return f.read().decode(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def _proc_stat(pid: int | str) -> tuple[str, int] | None:
    """(state, ppid) of a process from /proc, None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], int(fields[1])


def _is_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (orphans are not always reaped)."""
    if Path("/proc/self/stat").exists():
        st = _proc_stat(pid)
        return st is not None and st[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (Linux /proc; empty elsewhere).

    Postgres puts every child process in its own session, so they cannot be reached
    through the postmaster's process group.
    """
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return []
    children: dict[int, list[int]] = {}
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            st = _proc_stat(entry.name)
            if st is not None and st[0] not in ("Z", "X"):
                children.setdefault(st[1], []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _signal_tree(pid: int, sig: signal.Signals) -> list[int]:
    """Send `sig` to `pid` and all its descendants; return the pids signalled.

    For SIGKILL/SIGSTOP the root is stopped first so that it cannot fork unseen children
    while the tree is being collected.
    """
    if sig in (signal.SIGKILL, signal.SIGSTOP):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            st = _proc_stat(pid)
            if st is None or st[0] in ("T", "t", "Z", "X"):
                break
            time.sleep(0.001)
    pids = [pid, *_descendants(pid)]
    for target in reversed(pids):  # leaves first, the root last
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)
    return pids


def _wait_dead(pids: Sequence[int], timeout: float = 10.0) -> None:
    """Wait until none of `pids` is alive; SIGKILL stragglers after `timeout`."""
    deadline = time.monotonic() + timeout
    killed = False
    while alive := [p for p in pids if _is_alive(p)]:
        if time.monotonic() >= deadline:
            if killed:
                raise PgServerError(f"processes {alive} did not exit")
            for p in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + timeout
        time.sleep(_POLL_INTERVAL)


@atexit.register
def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = [s for s in _LIVE if s._owner_pid == os.getpid()]
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


# ---------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Start a server, print its URL, wait for SIGINT/SIGTERM, stop it."""
    parser = argparse.ArgumentParser(
        prog="python -m twinstream.testing.pgserver",
        description="Start a throwaway PostgreSQL server and print its URL.",
    )
    parser.add_argument("--logical", action="store_true", help="wal_level=logical")
    parser.add_argument("--base-dir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument(
        "-c",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra server setting (repeatable)",
    )
    args = parser.parse_args(argv)
    extra: dict[str, str] = {}
    for item in args.settings:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"-c expects NAME=VALUE, got {item!r}")
        extra[name] = value

    stop_requested = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    started = time.monotonic()
    server = start_pg_server(
        wal_level_logical=args.logical, base_dir=args.base_dir, extra_settings=extra
    )
    try:
        print(server.url, flush=True)
        print(
            f"started in {time.monotonic() - started:.2f}s; data dir {server.data_dir}; "
            f"log {server.log_path}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop_requested.wait(1.0):
            if not server.is_running:
                print(f"postgres exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
