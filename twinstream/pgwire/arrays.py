"""Array types: PostgreSQL's text (`{1,2,NULL}`) and binary (`array_send`) formats.

An array value is a Python list (nested lists for more dimensions, every sub-list of a level
the same length); NULL elements are None. Text output quotes an element when PostgreSQL does
(empty, `NULL`, or containing braces, quotes, backslashes, the delimiter or white space).
`int2vector` and `oidvector` (pg_index.indkey, pg_proc.proargtypes) are one-dimensional
arrays whose text form is space-separated without braces.

The element types are the scalar types of `twinstream.pgwire.types`; `types` registers the
array types built here in its `TYPES` at import.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from twinstream.pgwire.errors import PgError, SqlState
from twinstream.pgwire.types import PgType

__all__ = ["ARRAY_OF", "array_types", "format_array", "parse_array"]

#: element OID -> array OID (PostgreSQL's pg_type.typarray)
ARRAY_OF: dict[int, int] = {
    16: 1000,  # bool
    17: 1001,  # bytea
    18: 1002,  # "char"
    19: 1003,  # name
    20: 1016,  # int8
    21: 1005,  # int2
    23: 1007,  # int4
    25: 1009,  # text
    26: 1028,  # oid
    114: 199,  # json
    700: 1021,  # float4
    701: 1022,  # float8
    1042: 1014,  # bpchar
    1043: 1015,  # varchar
    1082: 1182,  # date
    1114: 1115,  # timestamp
    1184: 1185,  # timestamptz
    1186: 1187,  # interval
    1700: 1231,  # numeric
    2950: 2951,  # uuid
    3802: 3807,  # jsonb
}
INT2VECTOR = 22
OIDVECTOR = 30
_MAX_DIMS = 6
_HEADER = struct.Struct("!iii")
_DIM = struct.Struct("!ii")
_LEN = struct.Struct("!i")


def _bad(text: str, why: str) -> PgError:
    return PgError(
        SqlState.INVALID_TEXT_REPRESENTATION, f'malformed array literal: "{text}"', detail=why
    )


def _needs_quotes(s: str, delim: str) -> bool:
    if s == "" or s.upper() == "NULL":
        return True
    return any(ch in '{}"\\' or ch == delim or ch.isspace() for ch in s)


def format_array(value: object, elem_out: Callable[[Any], str], delim: str = ",") -> str:
    """The text form of a (nested) list."""
    if not isinstance(value, list | tuple):
        raise PgError(
            SqlState.DATATYPE_MISMATCH, f"expected a list for an array value, got {value!r}"
        )
    parts = []
    for v in value:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, list | tuple):
            parts.append(format_array(v, elem_out, delim))
        else:
            s = elem_out(v)
            if _needs_quotes(s, delim):
                s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(s)
    return "{" + delim.join(parts) + "}"


def parse_array(text: str, elem_in: Callable[[str], Any], delim: str = ",") -> list[Any]:
    """`{1,2,NULL}`, `{{1,2},{3,4}}`, `{"a b",c}` -> nested lists of element values."""
    s = text.strip()
    if s.startswith("["):  # explicit bounds `[1:2]={...}`: keep the elements
        eq = s.find("=")
        if eq < 0:
            raise _bad(text, 'Missing "=" after array dimensions.')
        s = s[eq + 1 :].strip()
    if not s.startswith("{"):
        raise _bad(text, 'Array value must start with "{" or dimension information.')
    pos = 0

    def parse_level() -> list[Any]:
        nonlocal pos
        assert s[pos] == "{"
        pos += 1
        out: list[Any] = []
        while True:
            while pos < len(s) and s[pos].isspace():
                pos += 1
            if pos >= len(s):
                raise _bad(text, "Unexpected end of input.")
            ch = s[pos]
            if ch == "}" and not out:
                pos += 1
                return out
            if ch == "{":
                out.append(parse_level())
            elif ch == '"':
                pos += 1
                buf = []
                while pos < len(s) and s[pos] != '"':
                    if s[pos] == "\\" and pos + 1 < len(s):
                        pos += 1
                    buf.append(s[pos])
                    pos += 1
                if pos >= len(s):
                    raise _bad(text, "Unexpected end of input.")
                pos += 1
                out.append(elem_in("".join(buf)))
            else:
                buf = []
                while pos < len(s) and s[pos] not in (delim, "}"):
                    if s[pos] == "\\" and pos + 1 < len(s):
                        pos += 1
                    buf.append(s[pos])
                    pos += 1
                raw = "".join(buf).strip()
                if raw == "":
                    raise _bad(text, "Unexpected end of input.")
                out.append(None if raw.upper() == "NULL" else elem_in(raw))
            while pos < len(s) and s[pos].isspace():
                pos += 1
            if pos >= len(s):
                raise _bad(text, "Unexpected end of input.")
            if s[pos] == delim:
                pos += 1
                continue
            if s[pos] == "}":
                pos += 1
                return out
            raise _bad(text, f'Unexpected "{s[pos]}" character.')

    result = parse_level()
    if s[pos:].strip():
        raise _bad(text, "Junk after closing right brace.")
    return result


def _dims(value: Sequence[Any]) -> list[int]:
    dims = [len(value)]
    first: Any = value[0] if value else None
    while isinstance(first, list | tuple):
        dims.append(len(first))
        first = first[0] if first else None
    if len(dims) > _MAX_DIMS:
        raise PgError(SqlState.PROGRAM_LIMIT_EXCEEDED, "number of array dimensions exceeds 6")
    return dims


def _flatten(value: Sequence[Any], depth: int, out: list[Any]) -> None:
    for v in value:
        if depth > 1:
            if not isinstance(v, list | tuple):
                raise PgError(
                    SqlState.INVALID_TEXT_REPRESENTATION,
                    "multidimensional arrays must have sub-arrays with matching dimensions",
                )
            _flatten(v, depth - 1, out)
        else:
            out.append(v)


def _binary_out(elem: PgType, lbound: int = 1) -> Callable[[Any], bytes]:
    def out(value: Any) -> bytes:
        if not isinstance(value, list | tuple):
            raise PgError(
                SqlState.DATATYPE_MISMATCH, f"expected a list for an array value, got {value!r}"
            )
        if not value:
            return _HEADER.pack(0, 0, elem.oid)
        dims = _dims(value)
        flat: list[Any] = []
        _flatten(value, len(dims), flat)
        has_null = any(v is None for v in flat)
        parts = [_HEADER.pack(len(dims), int(has_null), elem.oid)]
        parts.extend(_DIM.pack(d, lbound) for d in dims)
        for v in flat:
            if v is None:
                parts.append(_LEN.pack(-1))
            else:
                data = elem.binary_out(v)
                parts.append(_LEN.pack(len(data)))
                parts.append(data)
        return b"".join(parts)

    return out


def _binary_in(elem: PgType) -> Callable[[bytes], list[Any]]:
    def bad(why: str) -> PgError:
        return PgError(SqlState.INVALID_BINARY_REPRESENTATION, f"invalid array binary: {why}")

    def decode(data: bytes) -> list[Any]:
        if len(data) < _HEADER.size:
            raise bad("short header")
        ndim, _flags, _oid = _HEADER.unpack_from(data, 0)
        if not 0 <= ndim <= _MAX_DIMS:
            raise bad(f"{ndim} dimensions")
        pos = _HEADER.size
        dims = []
        for _ in range(ndim):
            if pos + _DIM.size > len(data):
                raise bad("short dimensions")
            size, _lbound = _DIM.unpack_from(data, pos)
            if size < 0:
                raise bad("negative dimension")
            dims.append(size)
            pos += _DIM.size
        total = 1
        for d in dims:
            total *= d
        if ndim == 0:
            total = 0
        flat: list[Any] = []
        for _ in range(total):
            if pos + 4 > len(data):
                raise bad("short element")
            (n,) = _LEN.unpack_from(data, pos)
            pos += 4
            if n < 0:
                flat.append(None)
                continue
            if pos + n > len(data):
                raise bad("short element")
            flat.append(elem.binary_in(data[pos : pos + n]))
            pos += n
        if pos != len(data):
            raise bad("trailing bytes")
        for d in reversed(dims[1:]):
            flat = [flat[i : i + d] for i in range(0, len(flat), d)]
        return flat

    return decode


def _array_type(oid: int, name: str, elem: PgType) -> PgType:
    return PgType(
        oid,
        name,
        -1,
        lambda v: format_array(v, elem.text_out),
        lambda s: parse_array(s, elem.text_in),
        _binary_out(elem),
        _binary_in(elem),
    )


def _vector_type(oid: int, name: str, elem: PgType) -> PgType:
    """int2vector / oidvector: space-separated text, one-dimensional array binary."""

    def text_out(v: Any) -> str:
        if not isinstance(v, list | tuple):
            raise PgError(SqlState.DATATYPE_MISMATCH, f"expected a list for {name}, got {v!r}")
        return " ".join(elem.text_out(x) for x in v)

    return PgType(
        oid,
        name,
        -1,
        text_out,
        lambda s: [elem.text_in(x) for x in s.split()],
        _binary_out(elem, lbound=0),  # vectors are zero-based
        _binary_in(elem),
    )


def array_types(scalars: dict[int, PgType]) -> dict[int, PgType]:
    """The array types of the given scalar types (by OID), plus int2vector and oidvector."""
    out: dict[int, PgType] = {}
    for elem_oid, array_oid in ARRAY_OF.items():
        elem = scalars.get(elem_oid)
        if elem is not None:
            out[array_oid] = _array_type(array_oid, elem.name + "[]", elem)
    out[INT2VECTOR] = _vector_type(INT2VECTOR, "int2vector", scalars[21])
    out[OIDVECTOR] = _vector_type(OIDVECTOR, "oidvector", scalars[26])
    return out
