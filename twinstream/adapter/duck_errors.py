"""DuckDB exceptions -> PostgreSQL SQLSTATEs (with PostgreSQL's wording where we can)."""

from __future__ import annotations

import re

import duckdb

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError

_COLUMN = re.compile(
    r'Referenced column "([^"]+)" not found|Table "[^"]+" does not have a column named "([^"]+)"'
)
_TABLE = re.compile(r"Table with name (\S+) does not exist")
_FUNCTION = re.compile(
    r"Scalar Function with name (\S+) does not exist|"
    r"Function with name (\S+) does not exist"
)


def _first_line(e: BaseException) -> str:
    text = str(e)
    for prefix in (
        "Binder Error: ",
        "Catalog Error: ",
        "Conversion Error: ",
        "Parser Error: ",
        "Invalid Input Error: ",
        "Out of Range Error: ",
        "Constraint Error: ",
        "Not implemented Error: ",
    ):
        text = text.replace(prefix, "")
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def translate(e: Exception) -> AdapterError:
    msg = _first_line(e)
    if isinstance(e, duckdb.InterruptException):
        return AdapterError(E.QUERY_CANCELED, "canceling statement due to user request")
    if "Division by zero" in msg:
        return AdapterError(E.DIVISION_BY_ZERO, "division by zero")
    if isinstance(e, duckdb.ConversionException):
        if "out of range" in msg.lower() or "overflow" in msg.lower():
            return AdapterError(E.NUMERIC_OUT_OF_RANGE, msg)
        return AdapterError(E.INVALID_TEXT, msg)
    if isinstance(e, duckdb.OutOfRangeException):
        return AdapterError(E.NUMERIC_OUT_OF_RANGE, msg)
    if isinstance(e, duckdb.ConstraintException):
        if "NOT NULL" in msg:
            return AdapterError(E.NOT_NULL_VIOLATION, msg)
        return AdapterError("23000", msg)
    if isinstance(e, duckdb.ParserException):
        return AdapterError(E.SYNTAX_ERROR, msg)
    if isinstance(e, duckdb.BinderException):
        m = _COLUMN.search(msg)
        if m:
            name = m.group(1) or m.group(2)
            return AdapterError(E.UNDEFINED_COLUMN, f'column "{name}" does not exist')
        m = _FUNCTION.search(msg)
        if m:
            return AdapterError(E.UNDEFINED_FUNCTION, msg)
        if "Cannot compare" in msg or "Cannot mix" in msg or "No function matches" in msg:
            return AdapterError(E.UNDEFINED_FUNCTION, msg)
        if "must appear in the GROUP BY" in msg:
            return AdapterError("42803", msg)
        return AdapterError(E.DATATYPE_MISMATCH if "type" in msg.lower() else "42000", msg)
    if isinstance(e, duckdb.CatalogException):
        m = _TABLE.search(msg)
        if m:
            return AdapterError(E.UNDEFINED_TABLE, f'relation "{m.group(1)}" does not exist')
        m = _FUNCTION.search(msg)
        if m:
            name = m.group(1) or m.group(2)
            return AdapterError(E.UNDEFINED_FUNCTION, f"function {name} does not exist")
        if "Type with name" in msg:
            return AdapterError(E.UNDEFINED_OBJECT, msg)
        return AdapterError(E.UNDEFINED_OBJECT, msg)
    if isinstance(e, duckdb.NotImplementedException):
        return AdapterError(E.FEATURE_NOT_SUPPORTED, msg)
    if isinstance(e, duckdb.InvalidInputException):
        return AdapterError(E.INVALID_TEXT if "convert" in msg.lower() else "22023", msg)
    if isinstance(e, duckdb.TypeMismatchException):
        return AdapterError(E.DATATYPE_MISMATCH, msg)
    return AdapterError(E.INTERNAL_ERROR, msg)
