"""Message framing for the balancer: it splices bytes and only looks at a type byte and a
length word (plus the few bodies it needs), so this is a small splitter rather than the full
decoders of `twinstream.pgwire.codec` (which it still uses for the startup packets)."""

from __future__ import annotations

import asyncio
import struct

from twinstream.pgwire import messages as m
from twinstream.pgwire.codec import FRONTEND_TYPES, FrontendParser
from twinstream.pgwire.errors import ProtocolViolation
from twinstream.pgwire.limits import (
    MAX_MESSAGE_BYTES,
    MAX_SMALL_MESSAGE_BYTES,
    MAX_STARTUP_PACKET_BYTES,
)

__all__ = [
    "BACKEND_MAX_MESSAGE_BYTES",
    "ErrorFields",
    "FrameSplitter",
    "error_frame",
    "parse_error",
    "read_startup_packet",
]

_I32 = struct.Struct("!i")

#: A backend may send big rows; trust it up to PostgreSQL's own 1 GiB limit.
BACKEND_MAX_MESSAGE_BYTES = 1 << 30

_COMPACT_BYTES = 256 * 1024


class FrameSplitter:
    """Splits a byte stream of typed messages into whole frames (type byte, length, payload).

    `frontend=True` validates what a client sends (known types, PostgreSQL's size limits);
    a violation raises `ProtocolViolation` and the stream cannot be trusted any more."""

    def __init__(self, *, frontend: bool, max_message_bytes: int | None = None) -> None:
        self.frontend = frontend
        if max_message_bytes is None:
            max_message_bytes = MAX_MESSAGE_BYTES if frontend else BACKEND_MAX_MESSAGE_BYTES
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and (self._pos >= _COMPACT_BYTES or self._pos == len(self._buf)):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """The next whole frame (type byte included), or None until more bytes arrive."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            return None
        type_byte = buf[pos]
        (length,) = _I32.unpack_from(buf, pos + 1)
        limit = self.max_message_bytes
        if self.frontend:
            small = FRONTEND_TYPES.get(type_byte)
            if small is None:
                raise ProtocolViolation(f"invalid frontend message type {type_byte}")
            if small:
                limit = min(limit, MAX_SMALL_MESSAGE_BYTES)
        if length < 4 or length > limit:
            raise ProtocolViolation(f"invalid message length {length} for type {chr(type_byte)!r}")
        end = pos + 1 + length
        if len(buf) < end:
            return None
        frame = bytes(buf[pos:end])
        self._pos = end
        return frame


async def read_frame(reader: asyncio.StreamReader, splitter: FrameSplitter) -> bytes:
    """The next frame from `reader` (raises `EOFError` at end of stream)."""
    while True:
        frame = splitter.next_frame()
        if frame is not None:
            return frame
        data = await reader.read(64 * 1024)
        if not data:
            raise EOFError
        splitter.feed(data)


async def read_startup_packet(reader: asyncio.StreamReader) -> tuple[m.FrontendMessage, bytes]:
    """One untyped startup-phase packet: the decoded message and its raw bytes. Raises
    `ProtocolViolation` on a bad length word or content, `asyncio.IncompleteReadError` at EOF."""
    head = await reader.readexactly(4)
    (length,) = _I32.unpack(head)
    if length < 8 or length > MAX_STARTUP_PACKET_BYTES:
        raise ProtocolViolation(f"invalid length of startup packet: {length}")
    raw = head + await reader.readexactly(length - 4)
    parser = FrontendParser()
    parser.feed(raw)
    msg = parser.next_message()
    if msg is None:  # cannot happen: the whole packet was fed
        raise ProtocolViolation("incomplete startup packet")
    return msg, raw


class ErrorFields:
    """The fields of an ErrorResponse/NoticeResponse the balancer looks at."""

    __slots__ = ("code", "fields", "message", "severity")

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.severity = fields.get("V", fields.get("S", ""))
        self.code = fields.get("C", "")
        self.message = fields.get("M", "")

    @property
    def fatal(self) -> bool:
        return self.severity in ("FATAL", "PANIC")

    def __repr__(self) -> str:
        return f"ErrorFields({self.severity} {self.code} {self.message!r})"


def parse_error(frame: bytes) -> ErrorFields:
    """The fields of an 'E' or 'N' frame (lenient: a malformed body gives empty fields)."""
    fields: dict[str, str] = {}
    body = frame[5:]
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = body.find(b"\0", pos + 1)
        if end < 0:
            break
        fields[code] = body[pos + 1 : end].decode(errors="replace")
        pos = end + 1
    return ErrorFields(fields)


def error_frame(sqlstate: str, message: str, *, severity: str = "ERROR") -> bytes:
    return m.ErrorResponse(severity, sqlstate, message).encode()


def ready_frame(status: str) -> bytes:
    return b"Z\x00\x00\x00\x05" + status.encode()


def cstring_at(payload: bytes, pos: int) -> tuple[str, int]:
    """The NUL-terminated string at `pos` and the position after it."""
    end = payload.find(b"\0", pos)
    if end < 0:
        raise ValueError("unterminated string")
    return payload[pos:end].decode(errors="replace"), end + 1
