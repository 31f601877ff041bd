"""The messages of the PostgreSQL v3 protocol as dataclasses, each able to encode itself.

Frontend messages (client → server) are what `codec.FrontendParser` yields; backend messages
(server → client) are what the server sends and what `codec.BackendParser` yields. Both
directions can encode, so that a test client (or the balancer) can speak either side.

Integers on the wire are big-endian; strings are NUL-terminated UTF-8 ("cstrings").
Backend process ids and secret keys are unsigned 32-bit values here (the protocol says Int32;
the bytes are the same, and an unsigned reading leaves all 32 bits to the key allocator).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I32I32 = struct.Struct("!ii")
_U32U32 = struct.Struct("!II")

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
#: The single byte answering SSLRequest / GSSENCRequest when encryption is not offered.
ENCRYPTION_REFUSED = b"N"

TransactionStatus = Literal["I", "T", "E"]
TEXT = 0
BINARY = 1


def cstring(value: str) -> bytes:
    """Encode a protocol string: UTF-8 and a NUL terminator (a NUL inside is refused)."""
    data = value.encode()
    if b"\0" in data:
        raise ValueError(f"protocol strings cannot contain NUL: {value!r}")
    return data + b"\0"


def frame(type_byte: bytes, payload: bytes = b"") -> bytes:
    """A typed message: one type byte, an Int32 length counting itself, the payload."""
    return type_byte + _I32.pack(len(payload) + 4) + payload


def _untyped(payload: bytes) -> bytes:
    return _I32.pack(len(payload) + 4) + payload


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value < 2**32:
        raise ValueError(f"{name} must fit in 32 bits unsigned, not {value}")


# --------------------------------------------------------------------------- frontend


@dataclass(frozen=True, slots=True)
class SSLRequest:
    def encode(self) -> bytes:
        return _untyped(_I32.pack(SSL_REQUEST_CODE))


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return _untyped(_I32.pack(GSSENC_REQUEST_CODE))


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: int

    def encode(self) -> bytes:
        _check_u32("pid", self.pid)
        _check_u32("secret", self.secret)
        return _untyped(_I32.pack(CANCEL_REQUEST_CODE) + _U32U32.pack(self.pid, self.secret))


@dataclass(frozen=True, slots=True)
class StartupMessage:
    params: dict[str, str]
    protocol_version: int = PROTOCOL_3_0

    @property
    def major(self) -> int:
        return self.protocol_version >> 16

    @property
    def minor(self) -> int:
        return self.protocol_version & 0xFFFF

    def encode(self) -> bytes:
        body = b"".join(cstring(k) + cstring(v) for k, v in self.params.items())
        return _untyped(_I32.pack(self.protocol_version) + body + b"\0")


@dataclass(frozen=True, slots=True)
class Query:
    sql: str

    def encode(self) -> bytes:
        return frame(b"Q", cstring(self.sql))


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    query: str
    param_oids: tuple[int, ...] = ()

    def encode(self) -> bytes:
        oids = b"".join(_U32.pack(o) for o in self.param_oids)
        payload = cstring(self.name) + cstring(self.query) + _I16.pack(len(self.param_oids)) + oids
        return frame(b"P", payload)


@dataclass(frozen=True, slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        parts = [cstring(self.portal), cstring(self.statement), _I16.pack(len(self.param_formats))]
        parts.extend(_I16.pack(f) for f in self.param_formats)
        parts.append(_I16.pack(len(self.params)))
        for p in self.params:
            parts.append(_I32.pack(-1) if p is None else _I32.pack(len(p)) + p)
        parts.append(_I16.pack(len(self.result_formats)))
        parts.extend(_I16.pack(f) for f in self.result_formats)
        return frame(b"B", b"".join(parts))


@dataclass(frozen=True, slots=True)
class Describe:
    kind: Literal["S", "P"]
    name: str

    def encode(self) -> bytes:
        return frame(b"D", self.kind.encode() + cstring(self.name))


@dataclass(frozen=True, slots=True)
class Execute:
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return frame(b"E", cstring(self.portal) + _I32.pack(self.max_rows))


@dataclass(frozen=True, slots=True)
class Sync:
    def encode(self) -> bytes:
        return frame(b"S")


@dataclass(frozen=True, slots=True)
class Flush:
    def encode(self) -> bytes:
        return frame(b"H")


@dataclass(frozen=True, slots=True)
class Close:
    kind: Literal["S", "P"]
    name: str

    def encode(self) -> bytes:
        return frame(b"C", self.kind.encode() + cstring(self.name))


@dataclass(frozen=True, slots=True)
class Terminate:
    def encode(self) -> bytes:
        return frame(b"X")


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    password: str

    def encode(self) -> bytes:
        return frame(b"p", cstring(self.password))


@dataclass(frozen=True, slots=True)
class SASLInitialResponse:
    mechanism: str
    data: bytes | None

    def encode(self) -> bytes:
        body = _I32.pack(-1) if self.data is None else _I32.pack(len(self.data)) + self.data
        return frame(b"p", cstring(self.mechanism) + body)


@dataclass(frozen=True, slots=True)
class SASLResponse:
    data: bytes

    def encode(self) -> bytes:
        return frame(b"p", self.data)


@dataclass(frozen=True, slots=True)
class CopyData:
    """Both directions: COPY FROM STDIN payload (frontend) and COPY TO STDOUT rows (backend)."""

    data: bytes

    def encode(self) -> bytes:
        return frame(b"d", self.data)


@dataclass(frozen=True, slots=True)
class CopyDone:
    """Both directions: the end of the COPY data."""

    def encode(self) -> bytes:
        return frame(b"c")


@dataclass(frozen=True, slots=True)
class CopyFail:
    message: str

    def encode(self) -> bytes:
        return frame(b"f", cstring(self.message))


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The legacy fast-path call ('F'); parsed only so that it can be refused politely."""

    payload: bytes

    def encode(self) -> bytes:
        return frame(b"F", self.payload)


FrontendMessage = (
    SSLRequest
    | GSSENCRequest
    | CancelRequest
    | StartupMessage
    | Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Sync
    | Flush
    | Close
    | Terminate
    | PasswordMessage
    | SASLInitialResponse
    | SASLResponse
    | CopyData
    | CopyDone
    | CopyFail
    | FunctionCall
)


# --------------------------------------------------------------------------- backend


@dataclass(frozen=True, slots=True)
class AuthenticationOk:
    def encode(self) -> bytes:
        return frame(b"R", _I32.pack(0))


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword:
    def encode(self) -> bytes:
        return frame(b"R", _I32.pack(3))


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password:
    salt: bytes

    def encode(self) -> bytes:
        if len(self.salt) != 4:
            raise ValueError("MD5 salt is 4 bytes")
        return frame(b"R", _I32.pack(5) + self.salt)


@dataclass(frozen=True, slots=True)
class AuthenticationSASL:
    mechanisms: tuple[str, ...]

    def encode(self) -> bytes:
        body = b"".join(cstring(m) for m in self.mechanisms) + b"\0"
        return frame(b"R", _I32.pack(10) + body)


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue:
    data: bytes

    def encode(self) -> bytes:
        return frame(b"R", _I32.pack(11) + self.data)


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal:
    data: bytes

    def encode(self) -> bytes:
        return frame(b"R", _I32.pack(12) + self.data)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(b"S", cstring(self.name) + cstring(self.value))


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    pid: int
    secret: int

    def encode(self) -> bytes:
        _check_u32("pid", self.pid)
        _check_u32("secret", self.secret)
        return frame(b"K", _U32U32.pack(self.pid, self.secret))


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: TransactionStatus

    def encode(self) -> bytes:
        if self.status not in ("I", "T", "E"):
            raise ValueError(f"transaction status must be I, T or E, not {self.status!r}")
        return frame(b"Z", self.status.encode())


@dataclass(frozen=True, slots=True)
class FieldDescription:
    name: str
    type_oid: int
    type_size: int = -1
    type_modifier: int = -1
    format: int = TEXT
    table_oid: int = 0
    column_number: int = 0

    def encode_into(self, parts: list[bytes]) -> None:
        parts.append(cstring(self.name))
        parts.append(
            struct.pack(
                "!IhIhih",
                self.table_oid,
                self.column_number,
                self.type_oid,
                self.type_size,
                self.type_modifier,
                self.format,
            )
        )


@dataclass(frozen=True, slots=True)
class RowDescription:
    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        parts = [_I16.pack(len(self.fields))]
        for f in self.fields:
            f.encode_into(parts)
        return frame(b"T", b"".join(parts))


def encode_data_row(values: Sequence[bytes | None]) -> bytes:
    """The DataRow message of already-encoded column values (None is SQL NULL). Hot path."""
    parts = [b"", _I16.pack(len(values))]
    size = 6  # length word + column count
    pack = _I32.pack
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
            size += 4
        else:
            parts.append(pack(len(v)))
            parts.append(v)
            size += 4 + len(v)
    parts[0] = b"D" + pack(size)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class DataRow:
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return encode_data_row(self.values)


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str

    def encode(self) -> bytes:
        return frame(b"C", cstring(self.tag))


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse:
    def encode(self) -> bytes:
        return frame(b"I")


@dataclass(frozen=True, slots=True)
class _ErrorOrNotice:
    severity: str
    code: str
    message: str
    detail: str | None = None
    hint: str | None = None
    position: int | None = None
    #: Any other (field code, value) pairs, e.g. ("W", where) — kept when parsing.
    other: tuple[tuple[str, str], ...] = field(default=())

    def _payload(self) -> bytes:
        parts = [
            b"S" + cstring(self.severity),
            b"V" + cstring(self.severity),
            b"C" + cstring(self.code),
            b"M" + cstring(self.message),
        ]
        if self.detail is not None:
            parts.append(b"D" + cstring(self.detail))
        if self.hint is not None:
            parts.append(b"H" + cstring(self.hint))
        if self.position is not None:
            parts.append(b"P" + cstring(str(self.position)))
        for code, value in self.other:
            parts.append(code.encode() + cstring(value))
        parts.append(b"\0")
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ErrorResponse(_ErrorOrNotice):
    def encode(self) -> bytes:
        return frame(b"E", self._payload())


@dataclass(frozen=True, slots=True)
class NoticeResponse(_ErrorOrNotice):
    def encode(self) -> bytes:
        return frame(b"N", self._payload())


@dataclass(frozen=True, slots=True)
class ParseComplete:
    def encode(self) -> bytes:
        return frame(b"1")


@dataclass(frozen=True, slots=True)
class BindComplete:
    def encode(self) -> bytes:
        return frame(b"2")


@dataclass(frozen=True, slots=True)
class CloseComplete:
    def encode(self) -> bytes:
        return frame(b"3")


@dataclass(frozen=True, slots=True)
class NoData:
    def encode(self) -> bytes:
        return frame(b"n")


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(
            b"t", _I16.pack(len(self.type_oids)) + b"".join(_U32.pack(o) for o in self.type_oids)
        )


@dataclass(frozen=True, slots=True)
class PortalSuspended:
    def encode(self) -> bytes:
        return frame(b"s")


@dataclass(frozen=True, slots=True)
class CopyInResponse:
    format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(b"G", _copy_response_payload(self.format, self.column_formats))


@dataclass(frozen=True, slots=True)
class CopyOutResponse:
    format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(b"H", _copy_response_payload(self.format, self.column_formats))


def _copy_response_payload(fmt: int, column_formats: tuple[int, ...]) -> bytes:
    return (
        bytes([fmt])
        + _I16.pack(len(column_formats))
        + b"".join(_I16.pack(f) for f in column_formats)
    )


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return frame(b"A", _U32.pack(self.pid) + cstring(self.channel) + cstring(self.payload))


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    newest_minor: int
    unrecognized: tuple[str, ...] = ()

    def encode(self) -> bytes:
        body = _I32.pack(self.newest_minor) + _I32.pack(len(self.unrecognized))
        return frame(b"v", body + b"".join(cstring(o) for o in self.unrecognized))


BackendMessage = (
    AuthenticationOk
    | AuthenticationCleartextPassword
    | AuthenticationMD5Password
    | AuthenticationSASL
    | AuthenticationSASLContinue
    | AuthenticationSASLFinal
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | RowDescription
    | DataRow
    | CommandComplete
    | EmptyQueryResponse
    | ErrorResponse
    | NoticeResponse
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | ParameterDescription
    | PortalSuspended
    | CopyInResponse
    | CopyOutResponse
    | CopyData
    | CopyDone
    | NotificationResponse
    | NegotiateProtocolVersion
)
