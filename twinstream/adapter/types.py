"""Column types: the canonical PostgreSQL names the catalog stores, and what each maps to in
DuckDB (the engine) and on the wire (type OIDs)."""

from __future__ import annotations

from dataclasses import dataclass

from twinstream.adapter.errors import UNDEFINED_OBJECT, AdapterError
from twinstream.pgwire.arrays import ARRAY_OF


@dataclass(frozen=True)
class SqlType:
    name: str  # canonical (parse_type_name) name
    duckdb: str
    oid: int
    display: str  # as PostgreSQL's format_type shows it


_TYPES = {
    t.name: t
    for t in (
        SqlType("bool", "BOOLEAN", 16, "boolean"),
        SqlType("int2", "SMALLINT", 21, "smallint"),
        SqlType("int4", "INTEGER", 23, "integer"),
        SqlType("int8", "BIGINT", 20, "bigint"),
        SqlType("float4", "REAL", 700, "real"),
        SqlType("float8", "DOUBLE", 701, "double precision"),
        SqlType("numeric", "DECIMAL(38,10)", 1700, "numeric"),
        SqlType("text", "VARCHAR", 25, "text"),
        SqlType("varchar", "VARCHAR", 1043, "character varying"),
        SqlType("bpchar", "VARCHAR", 1042, "character"),
        SqlType("date", "DATE", 1082, "date"),
        SqlType("timestamp", "TIMESTAMP", 1114, "timestamp without time zone"),
        SqlType("timestamptz", "TIMESTAMPTZ", 1184, "timestamp with time zone"),
        SqlType("interval", "INTERVAL", 1186, "interval"),
        SqlType("uuid", "UUID", 2950, "uuid"),
        SqlType("jsonb", "JSON", 3802, "jsonb"),
        SqlType("json", "JSON", 114, "json"),
        SqlType("bytea", "BLOB", 17, "bytea"),
    )
}

#: Serial types are integers with a default; we do not have sequences (yet).
_ALIASES = {"serial": "int4", "bigserial": "int8", "smallserial": "int2"}


def lookup(type_text: str) -> SqlType:
    """A stored type such as `int4`, `numeric(10,2)` or `varchar(20)`."""
    base = type_text.split("(", 1)[0].strip()
    t = _TYPES.get(_ALIASES.get(base, base))
    if t is None:
        raise AdapterError(UNDEFINED_OBJECT, f'type "{type_text}" does not exist')
    return t


def duckdb_type(type_text: str) -> str:
    t = lookup(type_text)
    if t.name == "numeric" and "(" in type_text:
        mods = type_text[type_text.index("(") :]
        precision = int(mods.strip("()").split(",")[0])
        if precision <= 38:
            return "DECIMAL" + mods
    return t.duckdb


def oid_of(type_text: str) -> int:
    return lookup(type_text).oid


#: Parameter types that are not column types (pg_catalog queries cast parameters to them).
_PARAM_ONLY_OIDS = {"oid": 26, "name": 19, "char": 18}


def oid_of_name(name: str) -> int:
    """OID for a canonical name from `infer_param_types` (`int4`, `text`, `int4[]`...)."""
    if name.endswith("[]"):
        return ARRAY_OF.get(oid_of_name(name[:-2]), 1009)
    t = _TYPES.get(_ALIASES.get(name, name))
    if t is None:
        return _PARAM_ONLY_OIDS.get(name, 25)
    return t.oid
