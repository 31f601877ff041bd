"""The error every function of `twinstream.sql` raises for bad or unsupported SQL."""

from __future__ import annotations

SYNTAX_ERROR = "42601"
FEATURE_NOT_SUPPORTED = "0A000"


class SqlError(Exception):
    """A SQL statement that cannot be accepted.

    `sqlstate` is the five-character PostgreSQL error code (`42601` syntax_error, `0A000`
    feature_not_supported). `position`, when known, is the 1-based character offset into the
    text given to the parser, as in the `P` field of a PostgreSQL ErrorResponse.
    """

    def __init__(self, sqlstate: str, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.position = position

    def __reduce__(self) -> tuple[type[SqlError], tuple[str, str, int | None]]:
        return (SqlError, (self.sqlstate, self.message, self.position))

    def __repr__(self) -> str:
        return f"SqlError({self.sqlstate!r}, {self.message!r}, position={self.position!r})"

    def shifted(self, offset: int) -> SqlError:
        """The same error with its position moved `offset` characters right."""
        position = None if self.position is None else self.position + offset
        return SqlError(self.sqlstate, self.message, position)


def syntax_error(message: str, position: int | None = None) -> SqlError:
    return SqlError(SYNTAX_ERROR, message, position)


def not_supported(message: str, position: int | None = None) -> SqlError:
    return SqlError(FEATURE_NOT_SUPPORTED, message, position)
