"""COPY's option list -> a `CopyFormat`, validated with PostgreSQL's errors and defaults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.pgwire.copy import CopyFormat
from twinstream.sql import ast

_KNOWN = frozenset({"format", "delimiter", "null", "header", "quote", "escape", "encoding"})
_KINDS: dict[str, Literal["text", "csv", "binary"]] = {
    "text": "text",
    "csv": "csv",
    "binary": "binary",
}
_FORCE = frozenset({"force_quote", "force_not_null", "force_null", "freeze", "default"})


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "on", "1"):
        return True
    if text in ("false", "off", "0"):
        return False
    raise AdapterError(E.INVALID_PARAMETER_VALUE, f"{name} requires a Boolean value")


def _char(what: str, value: object) -> str:
    text = str(value)
    if len(text.encode()) != 1:
        raise AdapterError(
            E.FEATURE_NOT_SUPPORTED, f"COPY {what} must be a single one-byte character"
        )
    return text


def copy_format(options: Sequence[ast.Option], direction: str) -> CopyFormat:
    given: dict[str, object] = {}
    for opt in options:
        name = opt.name.replace(" ", "_")
        if name in _FORCE:
            raise AdapterError(
                E.FEATURE_NOT_SUPPORTED, f"COPY option {name.upper()} is not supported yet"
            )
        if name not in _KNOWN:
            raise AdapterError(E.SYNTAX_ERROR, f'option "{name}" not recognized')
        if name in given:
            raise AdapterError(E.SYNTAX_ERROR, "conflicting or redundant options")
        given[name] = opt.value
    kind_name = str(given.get("format", "text")).lower()
    kind = _KINDS.get(kind_name)
    if kind is None:
        raise AdapterError(E.INVALID_PARAMETER_VALUE, f'COPY format "{kind_name}" not recognized')
    encoding = str(given.get("encoding", "utf8")).lower().replace("-", "").replace("_", "")
    if encoding not in ("utf8", "unicode"):
        raise AdapterError(
            E.FEATURE_NOT_SUPPORTED, f'COPY encoding "{given["encoding"]}" is not supported'
        )
    if kind == "binary":
        for name in ("delimiter", "null"):
            if name in given:
                raise AdapterError(E.SYNTAX_ERROR, f"cannot specify {name.upper()} in BINARY mode")
        if "header" in given:
            raise AdapterError(E.FEATURE_NOT_SUPPORTED, "cannot specify HEADER in BINARY mode")
    if kind != "csv":
        for name in ("quote", "escape"):
            if name in given:
                raise AdapterError(
                    E.FEATURE_NOT_SUPPORTED, f"COPY {name} available only in CSV mode"
                )
    header = given.get("header", False)
    if str(header).lower() == "match":
        if direction == "to":
            raise AdapterError(E.FEATURE_NOT_SUPPORTED, 'cannot use "match" with HEADER in COPY TO')
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "COPY HEADER MATCH is not supported yet")
    csv = kind == "csv"
    delimiter = _char("delimiter", given.get("delimiter", "," if csv else "\t"))
    null = str(given.get("null", "" if csv else "\\N"))
    quote = _char("quote", given.get("quote", '"'))
    escape = _char("escape", given.get("escape", quote))
    if delimiter in ("\n", "\r") or (not csv and delimiter == "\\"):
        raise AdapterError(
            E.INVALID_PARAMETER_VALUE, "COPY delimiter cannot be newline, carriage return or \\"
        )
    if csv and delimiter == quote:
        raise AdapterError(E.INVALID_PARAMETER_VALUE, "COPY delimiter and quote must be different")
    if delimiter in null:
        raise AdapterError(
            E.INVALID_PARAMETER_VALUE, "COPY delimiter must not appear in the NULL specification"
        )
    return CopyFormat(kind, delimiter, null, _bool("header", header), quote, escape)
