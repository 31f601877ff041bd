"""Errors the adapter raises; each carries the SQLSTATE a client sees."""

from __future__ import annotations


class AdapterError(Exception):
    def __init__(
        self, sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint


# The SQLSTATEs the adapter uses (PostgreSQL errcodes).
UNDEFINED_TABLE = "42P01"
UNDEFINED_COLUMN = "42703"
UNDEFINED_OBJECT = "42704"
UNDEFINED_FUNCTION = "42883"
UNDEFINED_DATABASE = "3D000"
UNDEFINED_SCHEMA = "3F000"
DUPLICATE_TABLE = "42P07"
DUPLICATE_DATABASE = "42P04"
DUPLICATE_SCHEMA = "42P06"
DUPLICATE_OBJECT = "42710"
DATATYPE_MISMATCH = "42804"
SYNTAX_ERROR = "42601"
WRONG_OBJECT_TYPE = "42809"
DEPENDENT_OBJECTS = "2BP01"
INVALID_TEXT = "22P02"
DIVISION_BY_ZERO = "22012"
NUMERIC_OUT_OF_RANGE = "22003"
NOT_NULL_VIOLATION = "23502"
READ_ONLY_TRANSACTION = "25006"
ACTIVE_SQL_TRANSACTION = "25001"
NO_ACTIVE_SQL_TRANSACTION = "25P01"
IN_FAILED_TRANSACTION = "25P02"
INVALID_TRANSACTION_STATE = "25000"
FEATURE_NOT_SUPPORTED = "0A000"
INVALID_PARAMETER_VALUE = "22023"
UNDEFINED_PARAMETER = "42704"
QUERY_CANCELED = "57014"
INTERNAL_ERROR = "XX000"
INSUFFICIENT_PRIVILEGE = "42501"


def read_only_error() -> AdapterError:
    return AdapterError(READ_ONLY_TRANSACTION, "cannot write in read-only mode")
