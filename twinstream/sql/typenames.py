"""Canonical PostgreSQL names of SQL types (`integer` -> `int4`, `double precision` -> `float8`)."""

from __future__ import annotations

# Unquoted spellings (words joined by one space) -> PostgreSQL's canonical type name.
_ALIASES: dict[str, str] = {
    "int": "int4",
    "integer": "int4",
    "int4": "int4",
    "smallint": "int2",
    "int2": "int2",
    "bigint": "int8",
    "int8": "int8",
    "real": "float4",
    "float4": "float4",
    "double precision": "float8",
    "float8": "float8",
    "float": "float8",
    "numeric": "numeric",
    "decimal": "numeric",
    "dec": "numeric",
    "boolean": "bool",
    "bool": "bool",
    "text": "text",
    "varchar": "varchar",
    "character varying": "varchar",
    "char varying": "varchar",
    "char": "bpchar",
    "character": "bpchar",
    "bpchar": "bpchar",
    "name": "name",
    "bytea": "bytea",
    "date": "date",
    "time": "time",
    "time without time zone": "time",
    "time with time zone": "timetz",
    "timetz": "timetz",
    "timestamp": "timestamp",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "timestamptz": "timestamptz",
    "interval": "interval",
    "json": "json",
    "jsonb": "jsonb",
    "uuid": "uuid",
    "oid": "oid",
    "regclass": "regclass",
    "regtype": "regtype",
    "regproc": "regproc",
    "regprocedure": "regprocedure",
    "regoper": "regoper",
    "regoperator": "regoperator",
    "regnamespace": "regnamespace",
    "regrole": "regrole",
    "regconfig": "regconfig",
    "regdictionary": "regdictionary",
    "regcollation": "regcollation",
    "bit": "bit",
    "bit varying": "varbit",
    "varbit": "varbit",
    "mz_timestamp": "mz_timestamp",
    "uint2": "uint2",
    "uint4": "uint4",
    "uint8": "uint8",
    "record": "record",
    "inet": "inet",
    "cidr": "cidr",
    "macaddr": "macaddr",
    "money": "money",
    "xml": "xml",
    "int2vector": "int2vector",
    "oidvector": "oidvector",
    "anyelement": "anyelement",
    "anyarray": "anyarray",
    "void": "void",
    "unknown": "unknown",
}

# Canonical names whose array type PostgreSQL names `_name` (e.g. `_int4` is `int4[]`).
BUILTIN_TYPES = frozenset(_ALIASES.values()) | frozenset({"char"})


def canonical_type_name(words: str) -> str:
    """The canonical name for an unquoted (lower-case) type spelling; unknown names unchanged."""
    return _ALIASES.get(words, words)


def array_element_name(name: str) -> str | None:
    """For `_int4`-style array type names of built-in types, the element type name."""
    if name.startswith("_") and name[1:] in BUILTIN_TYPES:
        return name[1:]
    return None
