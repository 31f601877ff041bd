"""One balancer → backend connection: open it, and (for moves and reconnects) run its startup
handshake silently, which is possible only when the backend trusts the user: the balancer never
holds a password."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable, Sequence

from twinstream.balancer.frames import ErrorFields, FrameSplitter, parse_error, read_frame
from twinstream.balancer.route import Route
from twinstream.pgwire import messages as m

__all__ = ["Backend", "BackendRefused", "NeedsPassword", "cstring_pairs"]

_I32 = struct.Struct("!i")
_U32U32 = struct.Struct("!II")

#: Time to open a TCP connection to a backend.
CONNECT_TIMEOUT_S = 5.0
#: Time a silent handshake (startup, replay) may take.
HANDSHAKE_TIMEOUT_S = 10.0


class NeedsPassword(Exception):
    """The backend asked for a password (or SASL) that the balancer does not have."""


class BackendRefused(Exception):
    """The backend answered the startup (or replay) with an error."""

    def __init__(self, error: ErrorFields) -> None:
        super().__init__(f"{error.code} {error.message}")
        self.error = error


def cstring_pairs(payload: bytes) -> list[str]:
    return [p.decode(errors="replace") for p in payload.split(b"\0")]


_ids = iter(range(1, 1 << 62))


class Backend:
    """A connection to one generation's SQL port, owned by one client session."""

    def __init__(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.id = next(_ids)
        self.route = route
        self.reader = reader
        self.writer = writer
        self.splitter = FrameSplitter(frontend=False)
        self.key: tuple[int, int] | None = None
        #: ParameterStatus values the backend reported during its startup.
        self.params: dict[str, str] = {}
        self.reader_task: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def generation(self) -> int:
        return self.route.generation

    @classmethod
    async def connect(cls, route: Route, timeout_s: float = CONNECT_TIMEOUT_S) -> Backend:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(route.host, route.port), timeout_s
        )
        transport = writer.transport
        with contextlib.suppress(Exception):
            transport.set_write_buffer_limits(high=1 << 20)
        return cls(route, reader, writer)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def note_frame(self, frame: bytes) -> None:
        """Remember what identifies this backend session: its key and parameter values."""
        t = frame[0]
        if t == 0x4B and len(frame) >= 13:  # K
            self.key = _U32U32.unpack_from(frame, 5)
        elif t == 0x53:  # S
            parts = cstring_pairs(frame[5:])
            if len(parts) >= 2:
                self.params[parts[0]] = parts[1]

    async def handshake(
        self, startup: bytes, replay: Sequence[bytes], timeout_s: float = HANDSHAKE_TIMEOUT_S
    ) -> None:
        """Send the client's startup packet, expect trust authentication, read to the first
        ReadyForQuery, then send the `replay` messages (each ends with Sync or is a Query)
        and swallow their answers. Raises `NeedsPassword`, `BackendRefused`, `EOFError`,
        `OSError` or `TimeoutError`."""
        await asyncio.wait_for(self._handshake(startup, replay), timeout_s)

    async def _handshake(self, startup: bytes, replay: Sequence[bytes]) -> None:
        self.writer.write(startup)
        await self.writer.drain()
        while True:
            frame = await read_frame(self.reader, self.splitter)
            t = frame[0]
            if t == 0x52:  # R
                (kind,) = _I32.unpack_from(frame, 5)
                if kind != 0:
                    raise NeedsPassword(f"authentication request {kind}")
            elif t == 0x45:  # E
                raise BackendRefused(parse_error(frame))
            elif t == 0x5A:  # Z
                break
            else:
                self.note_frame(frame)
        if not replay:
            return
        self.writer.write(b"".join(replay))
        await self.writer.drain()
        remaining = len(replay)
        while remaining:
            frame = await read_frame(self.reader, self.splitter)
            t = frame[0]
            if t == 0x5A:
                remaining -= 1
            elif t == 0x45:
                err = parse_error(frame)
                if err.fatal:
                    raise BackendRefused(err)
            elif t == 0x53:
                self.note_frame(frame)

    def start_reader(
        self,
        sink: asyncio.Queue[tuple[str, object, bytes]],
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Copy what the backend sends into `sink` as ("b", self, data); b"" at EOF. `gate` is
        awaited before each read (backpressure from the client side)."""

        async def pump() -> None:
            data = b""
            try:
                while True:
                    if gate is not None:
                        await gate()
                    data = await self.reader.read(64 * 1024)
                    await sink.put(("b", self, data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                await sink.put(("b", self, b""))

        self.reader_task = asyncio.get_running_loop().create_task(
            pump(), name=f"balancer-backend-{self.id}"
        )

    def close(self, *, terminate: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reader_task is not None:
            self.reader_task.cancel()
        with contextlib.suppress(Exception):
            if terminate:
                self.writer.write(m.Terminate().encode())
            self.writer.close()

    def abort(self) -> None:
        self.close(terminate=False)
        with contextlib.suppress(Exception):
            self.writer.transport.abort()
