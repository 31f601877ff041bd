"""Errors of the pgwire layer.

`PgError` is what a backend raises to make the server send an ErrorResponse (a FATAL one closes
the connection). `ProtocolViolation` is what the codec raises on bytes that are not the
PostgreSQL v3 protocol; the server answers it with FATAL 08P01 and closes only that connection.
"""

from __future__ import annotations

from dataclasses import dataclass


class SqlState:
    """The SQLSTATE codes this layer (and its tests) use. See PostgreSQL's errcodes.txt."""

    SUCCESSFUL_COMPLETION = "00000"
    WARNING = "01000"
    CONNECTION_EXCEPTION = "08000"
    PROTOCOL_VIOLATION = "08P01"
    FEATURE_NOT_SUPPORTED = "0A000"
    INVALID_PARAMETER_VALUE = "22023"
    NUMERIC_VALUE_OUT_OF_RANGE = "22003"
    DATETIME_FIELD_OVERFLOW = "22008"
    CHARACTER_NOT_IN_REPERTOIRE = "22021"
    INVALID_TEXT_REPRESENTATION = "22P02"
    INVALID_BINARY_REPRESENTATION = "22P03"
    BAD_COPY_FILE_FORMAT = "22P04"
    INVALID_CURSOR_STATE = "24000"
    INVALID_SQL_STATEMENT_NAME = "26000"
    INVALID_AUTHORIZATION_SPECIFICATION = "28000"
    INVALID_PASSWORD = "28P01"
    INVALID_CURSOR_NAME = "34000"
    INVALID_CATALOG_NAME = "3D000"
    SYNTAX_ERROR = "42601"
    DATATYPE_MISMATCH = "42804"
    UNDEFINED_TABLE = "42P01"
    DUPLICATE_CURSOR = "42P03"
    DUPLICATE_PREPARED_STATEMENT = "42P05"
    TOO_MANY_CONNECTIONS = "53300"
    PROGRAM_LIMIT_EXCEEDED = "54000"
    QUERY_CANCELED = "57014"
    ADMIN_SHUTDOWN = "57P01"
    CANNOT_CONNECT_NOW = "57P03"
    INTERNAL_ERROR = "XX000"


#: The message PostgreSQL sends with 57P01 on a fast shutdown.
ADMIN_SHUTDOWN_MESSAGE = "terminating connection due to administrator command"


class PgError(Exception):
    """An error the client sees as an ErrorResponse.

    Raised by a backend (or by this layer) with a SQLSTATE code; `severity` is ERROR unless the
    error ends the session, in which case it is FATAL and the server closes the connection
    after sending it.
    """

    def __init__(
        self,
        sqlstate: str,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        severity: str = "ERROR",
        position: int | None = None,
    ) -> None:
        super().__init__(message)
        if len(sqlstate) != 5:
            raise ValueError(f"SQLSTATE must have 5 characters, not {sqlstate!r}")
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.severity = severity
        self.position = position

    @property
    def fatal(self) -> bool:
        return self.severity in ("FATAL", "PANIC")

    def __repr__(self) -> str:
        return f"PgError({self.sqlstate!r}, {self.message!r}, severity={self.severity!r})"


@dataclass(frozen=True)
class Notice:
    """A NoticeResponse a backend wants delivered (severity NOTICE, WARNING, INFO, LOG, DEBUG)."""

    message: str
    severity: str = "NOTICE"
    sqlstate: str = SqlState.SUCCESSFUL_COMPLETION
    detail: str | None = None
    hint: str | None = None


class ProtocolViolation(Exception):
    """Bytes that are not the frontend protocol. Fatal for the connection that sent them."""

    sqlstate = SqlState.PROTOCOL_VIOLATION


class MessageDecodeError(ProtocolViolation):
    """A well-framed message whose content is invalid (for example not UTF-8).

    The parser has consumed the whole message, so the stream is still in sync: the server
    answers with a plain ERROR (not FATAL) and goes on, as PostgreSQL does.
    """

    def __init__(self, message: str, sqlstate: str = SqlState.PROTOCOL_VIOLATION) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        #: The type byte of the message that failed, set by the parser (None in startup).
        self.message_type: str | None = None
