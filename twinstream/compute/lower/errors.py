"""The errors SQL lowering raises: PostgreSQL SQLSTATEs, as `twinstream.sql.SqlError`s."""

from __future__ import annotations

from twinstream.sql.errors import SqlError

FEATURE_NOT_SUPPORTED = "0A000"
SYNTAX_ERROR = "42601"
UNDEFINED_TABLE = "42P01"
UNDEFINED_COLUMN = "42703"
AMBIGUOUS_COLUMN = "42702"
AMBIGUOUS_ALIAS = "42P09"
DUPLICATE_ALIAS = "42712"
DATATYPE_MISMATCH = "42804"
UNDEFINED_FUNCTION = "42883"
AMBIGUOUS_FUNCTION = "42725"
CANNOT_COERCE = "42846"
GROUPING_ERROR = "42803"
INVALID_COLUMN_REFERENCE = "42P10"
INVALID_RECURSION = "42P19"
INVALID_LIMIT = "2201W"
INVALID_OFFSET = "2201X"
INVALID_TEXT = "22P02"
INVALID_DATETIME = "22007"
OUT_OF_RANGE = "22003"


class LoweringError(SqlError):
    """A query that cannot be lowered: `sqlstate` says why (42703 unknown column, ...)."""

    def __init__(self, sqlstate: str, message: str, position: int | None = None) -> None:
        super().__init__(sqlstate, message, position)

    def __reduce__(self) -> tuple[type[SqlError], tuple[str, str, int | None]]:
        return (type(self), (self.sqlstate, self.message, self.position))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sqlstate!r}, {self.message!r})"


class Unsupported(LoweringError):
    """Valid SQL that dataflows do not support (yet): SQLSTATE 0A000 feature_not_supported.

    The message names the construct, e.g. `window functions not supported in dataflows`.
    """

    def __init__(
        self, message: str, sqlstate: str = FEATURE_NOT_SUPPORTED, position: int | None = None
    ) -> None:
        super().__init__(sqlstate, message, position)

    def __reduce__(self) -> tuple[type[SqlError], tuple[str, str, int | None]]:
        return (type(self), (self.message, self.sqlstate, self.position))


def unsupported(construct: str) -> Unsupported:
    return Unsupported(f"{construct} not supported in dataflows")
