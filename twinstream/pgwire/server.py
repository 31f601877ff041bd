"""The asyncio PostgreSQL wire-protocol server.

    server = PgWireServer(session_factory, host="127.0.0.1", port=0)
    await server.start()
    server.port                       # the bound port (port 0 → ephemeral)
    ...
    await server.shutdown()           # no new work; running statements are answered, then
                                      # FATAL 57P01 to every session and close

One task per connection (`Connection.run`), tracked by the server so that `shutdown` can end
them all; a failure on one connection (garbage bytes → FATAL 08P01) never touches another.
CancelRequests arrive on their own connections and are matched to a session by its
`BackendKey` (pid, secret); `cancel(pid, secret)` is public so that a proxy can forward them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Mapping

from twinstream.pgwire.auth import Authenticator, TrustAuthenticator
from twinstream.pgwire.backend import BackendKey, KeyAllocator, SessionFactory
from twinstream.pgwire.connection import Connection
from twinstream.pgwire.errors import ADMIN_SHUTDOWN_MESSAGE, PgError, SqlState
from twinstream.pgwire.limits import (
    MAX_CONNECTIONS_DEFAULT,
    MAX_MESSAGE_BYTES,
    SHUTDOWN_FLUSH_TIMEOUT_S,
    SHUTDOWN_GRACE_S,
    STARTUP_TIMEOUT_S,
)

__all__ = ["PgWireServer", "SequentialKeyAllocator"]

log = logging.getLogger(__name__)

_KEY_ATTEMPTS = 1000


class SequentialKeyAllocator:
    """Default keys: pids 1, 2, 3, ... (wrapping below 2**31), random 32-bit secrets."""

    def __init__(self, start: int = 1) -> None:
        self._pids = itertools.count(start)

    def __call__(self) -> BackendKey:
        pid = next(self._pids) % (2**31 - 1) or 1
        return BackendKey(pid, secrets.randbits(32))


class PgWireServer:
    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        authenticator: Authenticator | None = None,
        key_allocator: KeyAllocator | None = None,
        max_connections: int = MAX_CONNECTIONS_DEFAULT,
        parameters: Mapping[str, str] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.session_factory = session_factory
        self.authenticator: Authenticator = authenticator or TrustAuthenticator()
        self.key_allocator: KeyAllocator = key_allocator or SequentialKeyAllocator()
        self.max_connections = max_connections
        #: ParameterStatus values overriding the defaults (before the session's own).
        self.parameters: dict[str, str] = dict(parameters or {})
        self.max_message_bytes = max_message_bytes
        self.startup_timeout_s = startup_timeout_s
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._admitted: set[Connection] = set()
        self._by_key: dict[tuple[int, int], Connection] = {}
        self._closing = False
        self._shutdown_error: PgError | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = await asyncio.start_server(self._on_connect, self._host, self._port)

    async def __aenter__(self) -> PgWireServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when constructed with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def closing(self) -> bool:
        """True once shutdown has begun: new sessions get FATAL 57P03."""
        return self._closing

    @property
    def connection_count(self) -> int:
        """Connections past their startup packet, i.e. counted against max_connections."""
        return len(self._admitted)

    def begin_shutdown(self, reason: str = ADMIN_SHUTDOWN_MESSAGE) -> None:
        """Stop listening and take no new work: idle sessions get FATAL 57P01 `reason` at
        once, a session running a statement finishes it (and its extended-protocol unit) and
        gets the FATAL after the answer; statements arriving now are refused unrun."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        self._shutdown_error = PgError(SqlState.ADMIN_SHUTDOWN, reason, severity="FATAL")
        for conn in list(self._connections):
            conn.terminate(self._shutdown_error)

    async def shutdown(
        self,
        reason: str = ADMIN_SHUTDOWN_MESSAGE,
        *,
        grace_s: float = SHUTDOWN_GRACE_S,
        timeout_s: float = SHUTDOWN_FLUSH_TIMEOUT_S,
    ) -> None:
        """`begin_shutdown` (unless begun), wait up to `grace_s` for running statements to be
        answered, then cut off the rest with the FATAL and close every connection."""
        if self._shutdown_error is None:
            self.begin_shutdown(reason)
        assert self._shutdown_error is not None
        error = self._shutdown_error
        conns = list(self._connections)
        for conn in conns:  # connections that raced with begin_shutdown
            conn.terminate(error)
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            _done, running = await asyncio.wait(tasks, timeout=grace_s)
            if running:
                log.info("shutdown: cutting off %d statements still running", len(running))
            for conn in conns:
                if conn.task in running:
                    conn.terminate(error, force=True)
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s + 1.0)
            for task in pending:
                log.warning("pgwire connection did not close in time; abandoning it")
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        conn = Connection(self, reader, writer)
        self._connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._forget(conn)
            self._connections.discard(conn)

    def _admit(self, conn: Connection) -> bool:
        """Count `conn` against the connection limit; False when the limit is reached."""
        if len(self._admitted) >= self.max_connections:
            return False
        self._admitted.add(conn)
        conn.admitted = True
        return True

    def _register(self, conn: Connection) -> BackendKey:
        for _ in range(_KEY_ATTEMPTS):
            key = self.key_allocator()
            if not (0 <= key.pid < 2**32 and 0 <= key.secret < 2**32):
                raise ValueError(f"key allocator returned a key out of 32-bit range: {key}")
            if (key.pid, key.secret) not in self._by_key:
                self._by_key[(key.pid, key.secret)] = conn
                return key
        raise PgError(
            SqlState.TOO_MANY_CONNECTIONS, "could not allocate a backend key", severity="FATAL"
        )

    def _forget(self, conn: Connection) -> None:
        self._admitted.discard(conn)
        if conn.key is not None and self._by_key.get((conn.key.pid, conn.key.secret)) is conn:
            del self._by_key[(conn.key.pid, conn.key.secret)]

    def cancel(self, pid: int, secret: int) -> bool:
        """Cancel the running statement of the session with this key; False if none matched."""
        conn = self._by_key.get((pid, secret))
        if conn is None:
            return False
        conn.request_cancel()
        return True
