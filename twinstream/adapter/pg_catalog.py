"""PostgreSQL's catalog (`pg_catalog.*`, `information_schema.*`) emulated from ours.

Clients (psql's backslash commands, SQLAlchemy reflection, asyncpg/psycopg type introspection)
learn about the database by querying PostgreSQL's catalog relations and functions. We rebuild
those relations from the in-memory catalog after every change, as DuckDB tables in dedicated
schemas (`memory.pg_catalog_emul`, `memory.information_schema_emul`), and the planner
(`plan.qualify`) routes `pg_catalog.X`, bare `pg_X` and `information_schema.X` to them.

Relations that describe one database (pg_class, pg_namespace, pg_attribute, ...,
information_schema) hold the rows of every database with a hidden leading `_db` column; the
planner reads them through `(SELECT * EXCLUDE (_db) ... WHERE _db = <session database>)`.

Functions clients call (format_type, pg_get_userbyid, pg_get_expr, to_regtype, ...) are DuckDB
macros in `memory.pg_catalog_emul`, created once (`MACROS`); `rewrite` points calls at them.
Functions whose value depends on the session (current_database(), current_schema(),
current_user, pg_table_is_visible(), ...) and `::regclass`-style casts are rewritten by the
planner to literals or lookups. `normalize` first removes the PostgreSQL-isms DuckDB cannot
parse or bind (`pg_catalog.f()`, `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`).

Constraints: a table's PRIMARY KEY appears as PostgreSQL shows it (pg_constraint 'p', its
unique index in pg_class/pg_index, information_schema.table_constraints/key_column_usage).
Not emulated: other constraints and comments (twinstream has none); Materialize indexes are
listed in pg_class/pg_indexes only (no pg_index rows).

OIDs are stable: builtin types use PostgreSQL's own OIDs; catalog objects get an OID derived
from their catalog id (`u5` -> base + 5), per kind (roles, databases, schemas, items).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from twinstream.adapter.errors import UNDEFINED_OBJECT, UNDEFINED_TABLE, AdapterError
from twinstream.adapter.names import CatalogIndex, ItemRef
from twinstream.adapter.temporary import is_temp_schema
from twinstream.adapter.types import lookup as lookup_type

if TYPE_CHECKING:
    from twinstream.adapter.engine import QueryEngine

DATABASE = "memory"
PG_SCHEMA = "pg_catalog_emul"
INFO_SCHEMA = "information_schema_emul"

VERSION = "PostgreSQL 15.0 (twinstream) on x86_64-pc-linux-gnu"
DEFAULT_USER = "twinstream"

# --------------------------------------------------------------------------- OIDs

PG_CATALOG_OID = 11
INFORMATION_SCHEMA_OID = 13183
MZ_CATALOG_OID = 16001
MZ_INTERNAL_OID = 16002
#: System schemas that exist in every database, with fixed OIDs.
SYSTEM_NAMESPACES = {
    "pg_catalog": PG_CATALOG_OID,
    "information_schema": INFORMATION_SCHEMA_OID,
    "mz_catalog": MZ_CATALOG_OID,
    "mz_internal": MZ_INTERNAL_OID,
}
BOOTSTRAP_SUPERUSER_OID = 10
HEAP_AM_OID = 2
BTREE_AM_OID = 403
DEFAULT_COLLATION_OID = 100
C_COLLATION_OID = 950
UTF8_ENCODING = 6
DEFAULT_TABLESPACE_OID = 1663
PG_CLASS_OID = 1259
PG_TYPE_OID = 1247
PG_NAMESPACE_OID = 2615
PG_CONSTRAINT_OID = 2606
PG_PROC_OID = 1255
PG_DATABASE_OID = 1262

_ROLE_BASE = 20_000_000
_DATABASE_BASE = 30_000_000
_SCHEMA_BASE = 40_000_000
_ITEM_BASE = 50_000_000
_SYSTEM_REL_BASE = 12_000
_ATTRDEF_BASE = 200_000_000
_PKEY_INDEX_BASE = 60_000_000
_PKEY_CONSTRAINT_BASE = 70_000_000
_SLOTS = {"u": 0, "s": 1, "t": 2}
_ID = re.compile(r"^([A-Za-z]*)(\d+)$")


def stable_oid(base: int, ident: str) -> int:
    """An OID for catalog id `ident` (`u5`, `s2`, ...) among the objects of one kind."""
    m = _ID.match(ident)
    if m is None:
        return base + 9_000_000 + (sum(ident.encode()) % 1_000_000)
    slot = _SLOTS.get(m.group(1).lower(), 3)
    return base + slot * 1_000_000 + int(m.group(2)) % 1_000_000


def role_oid(ident: str) -> int:
    return stable_oid(_ROLE_BASE, ident)


def database_oid(ident: str) -> int:
    return stable_oid(_DATABASE_BASE, ident)


def schema_oid(ident: str) -> int:
    return stable_oid(_SCHEMA_BASE, ident)


def item_oid(ident: str) -> int:
    return stable_oid(_ITEM_BASE, ident)


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class PgType:
    name: str
    oid: int
    array_oid: int
    length: int
    byval: bool
    category: str
    align: str
    storage: str
    #: format_type's spelling (without modifiers); `head` + `tail` around `(typmod)`.
    head: str
    io: str  # prefix of the in/out/recv/send function names ('' for pseudo types)
    preferred: bool = False
    typtype: str = "b"
    #: How the type modifier prints: '' none, 'len' (n - 4), 'numeric', 'prec' (n).
    modkind: str = ""
    modin: str = "-"
    collation: int = 0
    tail: str = ""
    elem: int = 0
    subscript: str = "-"
    delim: str = ","

    @property
    def display(self) -> str:
        return self.head + self.tail


def _t(
    name: str,
    oid: int,
    array_oid: int,
    length: int,
    byval: bool,
    category: str,
    align: str,
    storage: str,
    head: str,
    io: str,
    **kw: Any,
) -> PgType:
    return PgType(name, oid, array_oid, length, byval, category, align, storage, head, io, **kw)


_TEXT_COLL = {"collation": DEFAULT_COLLATION_OID}

#: PostgreSQL 15's builtin types that clients ask about (real OIDs).
BASE_TYPES: list[PgType] = [
    _t("bool", 16, 1000, 1, True, "B", "c", "p", "boolean", "bool", preferred=True),
    _t("bytea", 17, 1001, -1, False, "U", "i", "x", "bytea", "bytea"),
    _t("char", 18, 1002, 1, True, "Z", "c", "p", '"char"', "char"),
    _t(
        "name",
        19,
        1003,
        64,
        False,
        "S",
        "c",
        "p",
        "name",
        "name",
        collation=C_COLLATION_OID,
        subscript="raw_array_subscript_handler",
        elem=18,
    ),
    _t("int8", 20, 1016, 8, True, "N", "d", "p", "bigint", "int8"),
    _t("int2", 21, 1005, 2, True, "N", "s", "p", "smallint", "int2"),
    _t(
        "int2vector",
        22,
        1006,
        -1,
        False,
        "A",
        "i",
        "p",
        "int2vector",
        "int2vector",
        elem=21,
        subscript="array_subscript_handler",
        delim=" ",
    ),
    _t("int4", 23, 1007, 4, True, "N", "i", "p", "integer", "int4"),
    _t("regproc", 24, 1008, 4, True, "N", "i", "p", "regproc", "regproc"),
    _t("text", 25, 1009, -1, False, "S", "i", "x", "text", "text", preferred=True, **_TEXT_COLL),
    _t("oid", 26, 1028, 4, True, "N", "i", "p", "oid", "oid", preferred=True),
    _t("tid", 27, 1010, 6, False, "U", "s", "p", "tid", "tid"),
    _t("xid", 28, 1011, 4, True, "U", "i", "p", "xid", "xid"),
    _t("cid", 29, 1012, 4, True, "U", "i", "p", "cid", "cid"),
    _t(
        "oidvector",
        30,
        1013,
        -1,
        False,
        "A",
        "i",
        "p",
        "oidvector",
        "oidvector",
        elem=26,
        subscript="array_subscript_handler",
        delim=" ",
    ),
    _t("json", 114, 199, -1, False, "U", "i", "x", "json", "json_"),
    _t("xml", 142, 143, -1, False, "U", "i", "x", "xml", "xml_"),
    _t(
        "pg_node_tree",
        194,
        0,
        -1,
        False,
        "Z",
        "i",
        "x",
        "pg_node_tree",
        "pg_node_tree_",
        **_TEXT_COLL,
    ),
    _t("point", 600, 1017, 16, False, "G", "d", "p", "point", "point_"),
    _t("float4", 700, 1021, 4, True, "N", "i", "p", "real", "float4"),
    _t("float8", 701, 1022, 8, True, "N", "d", "p", "double precision", "float8", preferred=True),
    _t("unknown", 705, 0, -2, False, "X", "c", "p", "unknown", "unknown", typtype="p"),
    _t("money", 790, 791, 8, True, "N", "d", "p", "money", "cash_"),
    _t("macaddr", 829, 1040, 6, False, "U", "i", "p", "macaddr", "macaddr_"),
    _t("inet", 869, 1041, -1, False, "I", "i", "m", "inet", "inet_", preferred=True),
    _t("cidr", 650, 651, -1, False, "I", "i", "m", "cidr", "cidr_"),
    _t("aclitem", 1033, 1034, 12, False, "U", "d", "p", "aclitem", "aclitem"),
    _t(
        "bpchar",
        1042,
        1014,
        -1,
        False,
        "S",
        "i",
        "x",
        "character",
        "bpchar",
        modkind="len",
        modin="bpchartypmodin",
        **_TEXT_COLL,
    ),
    _t(
        "varchar",
        1043,
        1015,
        -1,
        False,
        "S",
        "i",
        "x",
        "character varying",
        "varchar",
        modkind="len",
        modin="varchartypmodin",
        **_TEXT_COLL,
    ),
    _t("date", 1082, 1182, 4, True, "D", "i", "p", "date", "date_"),
    _t(
        "time",
        1083,
        1183,
        8,
        True,
        "D",
        "d",
        "p",
        "time",
        "time_",
        modkind="prec",
        modin="timetypmodin",
        tail=" without time zone",
    ),
    _t(
        "timestamp",
        1114,
        1115,
        8,
        True,
        "D",
        "d",
        "p",
        "timestamp",
        "timestamp_",
        modkind="prec",
        modin="timestamptypmodin",
        tail=" without time zone",
    ),
    _t(
        "timestamptz",
        1184,
        1185,
        8,
        True,
        "D",
        "d",
        "p",
        "timestamp",
        "timestamptz_",
        preferred=True,
        modkind="prec",
        modin="timestamptztypmodin",
        tail=" with time zone",
    ),
    _t(
        "interval",
        1186,
        1187,
        16,
        False,
        "T",
        "d",
        "p",
        "interval",
        "interval_",
        preferred=True,
        modin="intervaltypmodin",
    ),
    _t(
        "timetz",
        1266,
        1270,
        12,
        False,
        "D",
        "d",
        "p",
        "time",
        "timetz_",
        modkind="prec",
        modin="timetztypmodin",
        tail=" with time zone",
    ),
    _t(
        "bit",
        1560,
        1561,
        -1,
        False,
        "V",
        "i",
        "x",
        "bit",
        "bit_",
        modkind="prec",
        modin="bittypmodin",
    ),
    _t(
        "varbit",
        1562,
        1563,
        -1,
        False,
        "V",
        "i",
        "x",
        "bit varying",
        "varbit_",
        preferred=True,
        modkind="prec",
        modin="varbittypmodin",
    ),
    _t(
        "numeric",
        1700,
        1231,
        -1,
        False,
        "N",
        "i",
        "m",
        "numeric",
        "numeric_",
        modkind="numeric",
        modin="numerictypmodin",
    ),
    _t("refcursor", 1790, 2201, -1, False, "U", "i", "x", "refcursor", "text"),
    _t("regprocedure", 2202, 2207, 4, True, "N", "i", "p", "regprocedure", "regprocedure"),
    _t("regoper", 2203, 2208, 4, True, "N", "i", "p", "regoper", "regoper"),
    _t("regoperator", 2204, 2209, 4, True, "N", "i", "p", "regoperator", "regoperator"),
    _t("regclass", 2205, 2210, 4, True, "N", "i", "p", "regclass", "regclass"),
    _t("regtype", 2206, 2211, 4, True, "N", "i", "p", "regtype", "regtype"),
    _t("regrole", 4096, 4097, 4, True, "N", "i", "p", "regrole", "regrole"),
    _t("regnamespace", 4089, 4090, 4, True, "N", "i", "p", "regnamespace", "regnamespace"),
    _t("uuid", 2950, 2951, 16, False, "U", "c", "p", "uuid", "uuid_"),
    _t("pg_lsn", 3220, 3221, 8, True, "U", "d", "p", "pg_lsn", "pg_lsn_"),
    _t("jsonb", 3802, 3807, -1, False, "U", "i", "x", "jsonb", "jsonb_"),
    _t("jsonpath", 4072, 4073, -1, False, "U", "i", "x", "jsonpath", "jsonpath_"),
    _t("record", 2249, 2287, -1, False, "P", "d", "x", "record", "record_", typtype="p"),
    _t("cstring", 2275, 1263, -2, False, "P", "c", "p", "cstring", "cstring_", typtype="p"),
    _t("any", 2276, 0, 4, True, "P", "i", "p", '"any"', "any_", typtype="p"),
    _t("anyarray", 2277, 0, -1, False, "P", "d", "x", "anyarray", "anyarray_", typtype="p"),
    _t("void", 2278, 0, 4, True, "P", "i", "p", "void", "void_", typtype="p"),
    _t("trigger", 2279, 0, 4, True, "P", "i", "p", "trigger", "trigger_", typtype="p"),
    _t("internal", 2281, 0, 8, True, "P", "d", "p", "internal", "internal_", typtype="p"),
    _t("anyelement", 2283, 0, 4, True, "P", "i", "p", "anyelement", "anyelement_", typtype="p"),
    _t("anynonarray", 2776, 0, 4, True, "P", "i", "p", "anynonarray", "anynonarray_", typtype="p"),
]


def _array_of(t: PgType) -> PgType:
    return PgType(
        name="_" + t.name,
        oid=t.array_oid,
        array_oid=0,
        length=-1,
        byval=False,
        category="A",
        align="d" if t.align == "d" else "i",
        storage="x",
        head=t.head,
        io="array_",
        modkind=t.modkind,
        modin=t.modin,
        collation=t.collation,
        tail=t.tail,
        elem=t.oid,
        subscript="array_subscript_handler",
        delim=t.delim if t.delim != " " else ",",
    )


ALL_TYPES: list[PgType] = [*BASE_TYPES, *(_array_of(t) for t in BASE_TYPES if t.array_oid)]
TYPES_BY_OID: dict[int, PgType] = {t.oid: t for t in ALL_TYPES}
TYPES_BY_NAME: dict[str, PgType] = {t.name: t for t in ALL_TYPES}

#: Spellings `to_regtype`/`::regtype` accept -> OID (PostgreSQL's aliases included).
_TYPE_ALIASES = {
    "integer": "int4",
    "int": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "real": "float4",
    "float": "float8",
    "double precision": "float8",
    "boolean": "bool",
    "character varying": "varchar",
    "char varying": "varchar",
    "character": "bpchar",
    "decimal": "numeric",
    "dec": "numeric",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
    "bit varying": "varbit",
    '"char"': "char",
    '"any"': "any",
}


def _type_spellings() -> dict[str, int]:
    out: dict[str, int] = {}
    for t in ALL_TYPES:
        out[t.name] = t.oid
        if t.elem and t.category == "A" and t.name.startswith("_"):
            out[t.name[1:] + "[]"] = t.oid
            out[TYPES_BY_OID[t.elem].display + "[]"] = t.oid
        else:
            out.setdefault(t.display, t.oid)
    for alias, name in _TYPE_ALIASES.items():
        base = TYPES_BY_NAME[name]
        out[alias] = base.oid
        if base.array_oid:
            out[alias + "[]"] = base.array_oid
    for spelling, oid in list(out.items()):
        out.setdefault("pg_catalog." + spelling, oid)
    return out


TYPE_SPELLINGS: dict[str, int] = _type_spellings()


def regtype_oid(text: str) -> int | None:
    """The OID `text::regtype` names (None: no such type)."""
    key = " ".join(text.strip().split()).lower()
    key = re.sub(r"\s*\(\s*\d+(\s*,\s*\d+)?\s*\)", "", key)  # modifiers don't change the type
    key = key.replace(" []", "[]")
    if key.startswith('pg_catalog."') and key.endswith('"'):
        key = key[len('pg_catalog."') : -1]
    elif key.startswith('"') and key.endswith('"') and key != '"char"' and key != '"any"':
        key = key[1:-1]
    return TYPE_SPELLINGS.get(key)


def type_of_column(type_text: str) -> tuple[int, int]:
    """(type OID, typmod) of a stored column type such as `numeric(10,2)` or `int4[]`."""
    text = type_text.strip()
    dims = 0
    while text.endswith("[]"):
        text, dims = text[:-2].strip(), dims + 1
    base = text.split("(", 1)[0].strip()
    mods: list[int] = []
    if "(" in text:
        inner = text[text.index("(") + 1 : text.rindex(")")]
        mods = [int(m) for m in inner.split(",") if m.strip().lstrip("-").isdigit()]
    t = TYPES_BY_NAME.get(base)
    if t is None:
        try:
            oid = lookup_type(base).oid
        except AdapterError:
            oid = 25
        t = TYPES_BY_OID.get(oid, TYPES_BY_NAME["text"])
    typmod = -1
    if mods:
        if t.modkind == "len":
            typmod = mods[0] + 4
        elif t.modkind == "numeric":
            scale = mods[1] if len(mods) > 1 else 0
            typmod = ((mods[0] << 16) | (scale & 0xFFFF)) + 4
        elif t.modkind == "prec":
            typmod = mods[0]
    oid = t.array_oid if dims and t.array_oid else t.oid
    return oid, typmod


def format_type(oid: int | None, typmod: int | None) -> str | None:
    """PostgreSQL's format_type(oid, typmod)."""
    if oid is None:
        return None
    if oid == 0:
        return "-"
    t = TYPES_BY_OID.get(oid)
    if t is None:
        return "???"
    suffix = ""
    if t.category == "A" and t.name.startswith("_"):
        suffix = "[]"
    if typmod is None or typmod < 0 or not t.modkind:
        if t.name == "bpchar" and typmod is not None and typmod < 0:
            return "bpchar"
        return t.display + suffix
    if t.modkind == "len":
        mods = f"({typmod - 4})"
    elif t.modkind == "numeric":
        raw = typmod - 4
        mods = f"({(raw >> 16) & 0xFFFF},{raw & 0xFFFF})"
    else:
        mods = f"({typmod})"
    return t.head + mods + t.tail + suffix


#: DuckDB result type -> canonical column type text (for views, whose catalog columns are
#: untyped).
def duck_type_text(duck: str) -> str:
    d = duck.strip().upper()
    if d.endswith("[]"):
        return duck_type_text(d[:-2]) + "[]"
    if d.startswith("DECIMAL"):
        return "numeric" + d[len("DECIMAL") :].replace(" ", "")
    simple = {
        "BOOLEAN": "bool",
        "TINYINT": "int2",
        "SMALLINT": "int2",
        "INTEGER": "int4",
        "BIGINT": "int8",
        "HUGEINT": "numeric",
        "UTINYINT": "int2",
        "USMALLINT": "int4",
        "UINTEGER": "oid",
        "UBIGINT": "numeric",
        "FLOAT": "float4",
        "REAL": "float4",
        "DOUBLE": "float8",
        "VARCHAR": "text",
        "DATE": "date",
        "TIME": "time",
        "TIMESTAMP": "timestamp",
        "TIMESTAMP WITH TIME ZONE": "timestamptz",
        "INTERVAL": "interval",
        "UUID": "uuid",
        "JSON": "jsonb",
        "BLOB": "bytea",
    }
    return simple.get(d, "text")


# --------------------------------------------------------------------------- relations

#: Column type shorthands -> DuckDB types.
_DUCK = {
    "oid": "UINTEGER",  # DuckDB's UINTEGER is PostgreSQL's oid on the wire (engine.py)
    "name": "VARCHAR",
    "text": "VARCHAR",
    "char": "VARCHAR",
    "bool": "BOOLEAN",
    "int2": "SMALLINT",
    "int4": "INTEGER",
    "int8": "BIGINT",
    "float4": "REAL",
    "float8": "DOUBLE",
    "regproc": "VARCHAR",
    "node": "VARCHAR",
    "oid[]": "UINTEGER[]",
    "int2[]": "SMALLINT[]",
    "text[]": "VARCHAR[]",
    "char[]": "VARCHAR[]",
    "acl": "VARCHAR[]",
    "tstz": "TIMESTAMPTZ",
}


#: Column type shorthands -> PostgreSQL type names (pg_attribute of the relations themselves).
_PG = {
    "char": "char",
    "node": "pg_node_tree",
    "acl": "_aclitem",
    "tstz": "timestamptz",
    "oid[]": "_oid",
    "int2[]": "_int2",
    "text[]": "_text",
    "char[]": "_char",
}

Col = tuple[str, str, str]  # name, DuckDB type, PostgreSQL type name


def _cols(spec: str) -> list[Col]:
    out = []
    for part in spec.split():
        name, _, kind = part.partition(":")
        kind = kind or "name"
        out.append((name, _DUCK[kind], _PG.get(kind, kind)))
    return out


#: pg_catalog relations: name -> (per database?, columns).
PG_RELATIONS: dict[str, tuple[bool, list[Col]]] = {
    "pg_namespace": (True, _cols("oid:oid nspname nspowner:oid nspacl:acl")),
    "pg_class": (
        True,
        _cols(
            "oid:oid relname relnamespace:oid reltype:oid reloftype:oid relowner:oid relam:oid "
            "relfilenode:oid reltablespace:oid relpages:int4 reltuples:float4 "
            "relallvisible:int4 reltoastrelid:oid relhasindex:bool relisshared:bool "
            "relpersistence:char relkind:char relnatts:int2 relchecks:int2 relhasrules:bool "
            "relhastriggers:bool relhassubclass:bool relrowsecurity:bool "
            "relforcerowsecurity:bool relispopulated:bool relreplident:char "
            "relispartition:bool relrewrite:oid relfrozenxid:int8 relminmxid:int8 relacl:acl "
            "reloptions:text[] relpartbound:node"
        ),
    ),
    "pg_attribute": (
        True,
        _cols(
            "attrelid:oid attname atttypid:oid attstattarget:int4 attlen:int2 attnum:int2 "
            "attndims:int4 attcacheoff:int4 atttypmod:int4 attbyval:bool attalign:char "
            "attstorage:char attcompression:char attnotnull:bool atthasdef:bool "
            "atthasmissing:bool attidentity:char attgenerated:char attisdropped:bool "
            "attislocal:bool attinhcount:int4 attcollation:oid attacl:acl attoptions:text[] "
            "attfdwoptions:text[] attmissingval:text"
        ),
    ),
    "pg_attrdef": (True, _cols("oid:oid adrelid:oid adnum:int2 adbin:node")),
    "pg_description": (
        True,
        _cols("objoid:oid classoid:oid objsubid:int4 description:text"),
    ),
    "pg_index": (
        True,
        _cols(
            "indexrelid:oid indrelid:oid indnatts:int2 indnkeyatts:int2 indisunique:bool "
            "indnullsnotdistinct:bool indisprimary:bool indisexclusion:bool "
            "indimmediate:bool indisclustered:bool indisvalid:bool indcheckxmin:bool "
            "indisready:bool indislive:bool indisreplident:bool indkey:int2[] "
            "indcollation:oid[] indclass:oid[] indoption:int2[] indexprs:node indpred:node"
        ),
    ),
    "pg_constraint": (
        True,
        _cols(
            "oid:oid conname connamespace:oid contype:char condeferrable:bool "
            "condeferred:bool convalidated:bool conrelid:oid contypid:oid conindid:oid "
            "conparentid:oid confrelid:oid confupdtype:char confdeltype:char "
            "confmatchtype:char conislocal:bool coninhcount:int4 connoinherit:bool "
            "conkey:int2[] confkey:int2[] conpfeqop:oid[] conppeqop:oid[] conffeqop:oid[] "
            "confdelsetcols:int2[] conexclop:oid[] conbin:node"
        ),
    ),
    "pg_inherits": (
        True,
        _cols("inhrelid:oid inhparent:oid inhseqno:int4 inhdetachpending:bool"),
    ),
    "pg_rewrite": (
        True,
        _cols(
            "oid:oid rulename ev_class:oid ev_type:char ev_enabled:char is_instead:bool "
            "ev_qual:node ev_action:node"
        ),
    ),
    "pg_trigger": (
        True,
        _cols(
            "oid:oid tgrelid:oid tgparentid:oid tgname tgfoid:oid tgtype:int2 tgenabled:char "
            "tgisinternal:bool tgconstrrelid:oid tgconstrindid:oid tgconstraint:oid "
            "tgdeferrable:bool tginitdeferred:bool tgnargs:int2 tgattr:int2[] tgargs:text "
            "tgqual:node tgoldtable tgnewtable"
        ),
    ),
    "pg_policy": (
        True,
        _cols(
            "oid:oid polname polrelid:oid polcmd:char polpermissive:bool polroles:oid[] "
            "polqual:node polwithcheck:node"
        ),
    ),
    "pg_statistic_ext": (
        True,
        _cols(
            "oid:oid stxrelid:oid stxname stxnamespace:oid stxowner:oid stxstattarget:int4 "
            "stxkeys:int2[] stxkind:char[] stxexprs:node"
        ),
    ),
    "pg_foreign_table": (True, _cols("ftrelid:oid ftserver:oid ftoptions:text[]")),
    "pg_partitioned_table": (
        True,
        _cols(
            "partrelid:oid partstrat:char partnatts:int2 partdefid:oid partattrs:int2[] "
            "partclass:oid[] partcollation:oid[] partexprs:node"
        ),
    ),
    "pg_sequence": (
        True,
        _cols(
            "seqrelid:oid seqtypid:oid seqstart:int8 seqincrement:int8 seqmax:int8 "
            "seqmin:int8 seqcache:int8 seqcycle:bool"
        ),
    ),
    "pg_depend": (
        True,
        _cols(
            "classid:oid objid:oid objsubid:int4 refclassid:oid refobjid:oid "
            "refobjsubid:int4 deptype:char"
        ),
    ),
    "pg_publication": (
        True,
        _cols(
            "oid:oid pubname pubowner:oid puballtables:bool pubinsert:bool pubupdate:bool "
            "pubdelete:bool pubtruncate:bool pubviaroot:bool"
        ),
    ),
    "pg_publication_rel": (
        True,
        _cols("oid:oid prpubid:oid prrelid:oid prqual:node prattrs:int2[]"),
    ),
    "pg_publication_namespace": (True, _cols("oid:oid pnpubid:oid pnnspid:oid")),
    "pg_extension": (
        True,
        _cols(
            "oid:oid extname extowner:oid extnamespace:oid extrelocatable:bool extversion:text "
            "extconfig:oid[] extcondition:text[]"
        ),
    ),
    "pg_tables": (
        True,
        _cols(
            "schemaname tablename tableowner tablespace hasindexes:bool hasrules:bool "
            "hastriggers:bool rowsecurity:bool"
        ),
    ),
    "pg_views": (True, _cols("schemaname viewname viewowner definition:text")),
    "pg_matviews": (
        True,
        _cols(
            "schemaname matviewname matviewowner tablespace hasindexes:bool ispopulated:bool "
            "definition:text"
        ),
    ),
    "pg_indexes": (True, _cols("schemaname tablename indexname tablespace indexdef:text")),
    # -- shared by every database
    "pg_type": (
        False,
        _cols(
            "oid:oid typname typnamespace:oid typowner:oid typlen:int2 typbyval:bool "
            "typtype:char typcategory:char typispreferred:bool typisdefined:bool "
            "typdelim:char typrelid:oid typsubscript:regproc typelem:oid typarray:oid "
            "typinput:regproc typoutput:regproc typreceive:regproc typsend:regproc "
            "typmodin:regproc typmodout:regproc typanalyze:regproc typalign:char "
            "typstorage:char typnotnull:bool typbasetype:oid typtypmod:int4 typndims:int4 "
            "typcollation:oid typdefaultbin:node typdefault:text typacl:acl"
        ),
    ),
    "pg_range": (
        False,
        _cols(
            "rngtypid:oid rngsubtype:oid rngmultitypid:oid rngcollation:oid rngsubopc:oid "
            "rngcanonical:regproc rngsubdiff:regproc"
        ),
    ),
    "pg_enum": (False, _cols("oid:oid enumtypid:oid enumsortorder:float4 enumlabel")),
    "pg_collation": (
        False,
        _cols(
            "oid:oid collname collnamespace:oid collowner:oid collprovider:char "
            "collisdeterministic:bool collencoding:int4 collcollate:text collctype:text "
            "colliculocale:text collversion:text"
        ),
    ),
    "pg_opclass": (
        False,
        _cols(
            "oid:oid opcmethod:oid opcname opcnamespace:oid opcowner:oid opcfamily:oid "
            "opcintype:oid opcdefault:bool opckeytype:oid"
        ),
    ),
    "pg_operator": (
        False,
        _cols(
            "oid:oid oprname oprnamespace:oid oprowner:oid oprkind:char oprcanmerge:bool "
            "oprcanhash:bool oprleft:oid oprright:oid oprresult:oid oprcom:oid oprnegate:oid "
            "oprcode:regproc oprrest:regproc oprjoin:regproc"
        ),
    ),
    "pg_proc": (
        False,
        _cols(
            "oid:oid proname pronamespace:oid proowner:oid prolang:oid procost:float4 "
            "prorows:float4 provariadic:oid prosupport:regproc prokind:char prosecdef:bool "
            "proleakproof:bool proisstrict:bool proretset:bool provolatile:char "
            "proparallel:char pronargs:int2 pronargdefaults:int2 prorettype:oid "
            "proargtypes:oid[] proallargtypes:oid[] proargmodes:char[] proargnames:text[] "
            "proargdefaults:node protrftypes:oid[] prosrc:text probin:text prosqlbody:node "
            "proconfig:text[] proacl:acl"
        ),
    ),
    "pg_aggregate": (
        False,
        _cols("aggfnoid:regproc aggkind:char aggnumdirectargs:int2 aggtransfn:regproc"),
    ),
    "pg_language": (
        False,
        _cols(
            "oid:oid lanname lanowner:oid lanispl:bool lanpltrusted:bool lanplcallfoid:oid "
            "laninline:oid lanvalidator:oid lanacl:acl"
        ),
    ),
    "pg_database": (
        False,
        _cols(
            "oid:oid datname datdba:oid encoding:int4 datlocprovider:char datistemplate:bool "
            "datallowconn:bool datconnlimit:int4 datfrozenxid:int8 datminmxid:int8 "
            "dattablespace:oid datcollate:text datctype:text daticulocale:text "
            "datcollversion:text datacl:acl"
        ),
    ),
    "pg_authid": (
        False,
        _cols(
            "oid:oid rolname rolsuper:bool rolinherit:bool rolcreaterole:bool "
            "rolcreatedb:bool rolcanlogin:bool rolreplication:bool rolbypassrls:bool "
            "rolconnlimit:int4 rolpassword:text rolvaliduntil:tstz"
        ),
    ),
    "pg_roles": (
        False,
        _cols(
            "rolname rolsuper:bool rolinherit:bool rolcreaterole:bool rolcreatedb:bool "
            "rolcanlogin:bool rolreplication:bool rolconnlimit:int4 rolpassword:text "
            "rolvaliduntil:tstz rolbypassrls:bool rolconfig:text[] oid:oid"
        ),
    ),
    "pg_user": (
        False,
        _cols(
            "usename usesysid:oid usecreatedb:bool usesuper:bool userepl:bool "
            "usebypassrls:bool passwd:text valuntil:tstz useconfig:text[]"
        ),
    ),
    "pg_auth_members": (
        False,
        _cols("roleid:oid member:oid grantor:oid admin_option:bool"),
    ),
    "pg_am": (False, _cols("oid:oid amname amhandler:regproc amtype:char")),
    # -- empty: objects twinstream does not have, with the columns psql reads
    "pg_cast": (
        False,
        _cols(
            "oid:oid castsource:oid casttarget:oid castfunc:oid castcontext:char castmethod:char"
        ),
    ),
    "pg_opfamily": (
        False,
        _cols("oid:oid opfmethod:oid opfname opfnamespace:oid opfowner:oid"),
    ),
    "pg_event_trigger": (
        False,
        _cols("oid:oid evtname evtevent evtowner:oid evtfoid:oid evtenabled:char evttags:text[]"),
    ),
    "pg_ts_config": (
        False,
        _cols("oid:oid cfgname cfgnamespace:oid cfgowner:oid cfgparser:oid"),
    ),
    "pg_ts_dict": (
        False,
        _cols(
            "oid:oid dictname dictnamespace:oid dictowner:oid dicttemplate:oid dictinitoption:text"
        ),
    ),
    "pg_ts_parser": (
        False,
        _cols(
            "oid:oid prsname prsnamespace:oid prsstart:regproc prstoken:regproc "
            "prsend:regproc prsheadline:regproc prslextype:regproc"
        ),
    ),
    "pg_ts_template": (
        False,
        _cols("oid:oid tmplname tmplnamespace:oid tmplinit:regproc tmpllexize:regproc"),
    ),
    "pg_conversion": (
        False,
        _cols(
            "oid:oid conname connamespace:oid conowner:oid conforencoding:int4 "
            "contoencoding:int4 conproc:regproc condefault:bool"
        ),
    ),
    "pg_foreign_data_wrapper": (
        False,
        _cols(
            "oid:oid fdwname fdwowner:oid fdwhandler:oid fdwvalidator:oid fdwacl:acl "
            "fdwoptions:text[]"
        ),
    ),
    "pg_foreign_server": (
        False,
        _cols(
            "oid:oid srvname srvowner:oid srvfdw:oid srvtype:text srvversion:text srvacl:acl "
            "srvoptions:text[]"
        ),
    ),
    "pg_user_mapping": (False, _cols("oid:oid umuser:oid umserver:oid umoptions:text[]")),
    "pg_db_role_setting": (False, _cols("setdatabase:oid setrole:oid setconfig:text[]")),
    "pg_largeobject_metadata": (False, _cols("oid:oid lomowner:oid lomacl:acl")),
    "pg_tablespace": (
        False,
        _cols("oid:oid spcname spcowner:oid spcacl:acl spcoptions:text[]"),
    ),
    "pg_shdescription": (False, _cols("objoid:oid classoid:oid description:text")),
    "pg_settings": (
        False,
        _cols(
            "name:text setting:text unit:text category:text short_desc:text extra_desc:text "
            "context:text vartype:text source:text min_val:text max_val:text enumvals:text[] "
            "boot_val:text reset_val:text sourcefile:text sourceline:int4 "
            "pending_restart:bool"
        ),
    ),
}

#: information_schema relations: name -> columns (every one is per database).
INFO_RELATIONS: dict[str, list[Col]] = {
    "schemata": _cols(
        "catalog_name schema_name schema_owner default_character_set_catalog "
        "default_character_set_schema default_character_set_name sql_path:text"
    ),
    "tables": _cols(
        "table_catalog table_schema table_name table_type:text "
        "self_referencing_column_name reference_generation:text user_defined_type_catalog "
        "user_defined_type_schema user_defined_type_name is_insertable_into:text "
        "is_typed:text commit_action:text"
    ),
    "columns": _cols(
        "table_catalog table_schema table_name column_name ordinal_position:int4 "
        "column_default:text is_nullable:text data_type:text character_maximum_length:int4 "
        "character_octet_length:int4 numeric_precision:int4 numeric_precision_radix:int4 "
        "numeric_scale:int4 datetime_precision:int4 interval_type:text "
        "interval_precision:int4 character_set_catalog character_set_schema "
        "character_set_name collation_catalog collation_schema collation_name "
        "domain_catalog domain_schema domain_name udt_catalog udt_schema udt_name "
        "scope_catalog scope_schema scope_name maximum_cardinality:int4 dtd_identifier "
        "is_self_referencing:text is_identity:text identity_generation:text "
        "identity_start:text identity_increment:text identity_maximum:text "
        "identity_minimum:text identity_cycle:text is_generated:text "
        "generation_expression:text is_updatable:text"
    ),
    "views": _cols(
        "table_catalog table_schema table_name view_definition:text check_option:text "
        "is_updatable:text is_insertable_into:text is_trigger_updatable:text "
        "is_trigger_deletable:text is_trigger_insertable_into:text"
    ),
    "table_constraints": _cols(
        "constraint_catalog constraint_schema constraint_name table_catalog table_schema "
        "table_name constraint_type:text is_deferrable:text initially_deferred:text "
        "enforced:text nulls_distinct:text"
    ),
    "key_column_usage": _cols(
        "constraint_catalog constraint_schema constraint_name table_catalog table_schema "
        "table_name column_name ordinal_position:int4 position_in_unique_constraint:int4"
    ),
    "constraint_column_usage": _cols(
        "table_catalog table_schema table_name column_name constraint_catalog "
        "constraint_schema constraint_name"
    ),
    "referential_constraints": _cols(
        "constraint_catalog constraint_schema constraint_name unique_constraint_catalog "
        "unique_constraint_schema unique_constraint_name match_option:text update_rule:text "
        "delete_rule:text"
    ),
    "check_constraints": _cols(
        "constraint_catalog constraint_schema constraint_name check_clause:text"
    ),
    "routines": _cols(
        "specific_catalog specific_schema specific_name routine_catalog routine_schema "
        "routine_name routine_type:text data_type:text"
    ),
    "sequences": _cols("sequence_catalog sequence_schema sequence_name data_type:text"),
    "triggers": _cols(
        "trigger_catalog trigger_schema trigger_name event_manipulation:text "
        "event_object_catalog event_object_schema event_object_table action_statement:text"
    ),
}

#: Internal helper tables (shared) behind the macros.
_HELPERS: dict[str, list[Col]] = {
    # format_type: head(typmod)tail[]
    "_types": _cols("oid:oid head:text tail:text modkind:text arr:text plain:text"),
    "_type_spellings": _cols("spelling:text oid:oid"),
    "_defs": _cols("oid:oid def:text"),
}

DB_COLUMN = "_db"
#: Relations of pg_catalog in pg_class (so `\d pg_class` and regclass lookups work).
SYSTEM_REL_OIDS: dict[tuple[str, str], int] = {
    **{("pg_catalog", n): _SYSTEM_REL_BASE + i for i, n in enumerate(sorted(PG_RELATIONS))},
    **{
        ("information_schema", n): _SYSTEM_REL_BASE + 500 + i
        for i, n in enumerate(sorted(INFO_RELATIONS))
    },
}
SYSTEM_REL_OIDS[("pg_catalog", "pg_class")] = PG_CLASS_OID
SYSTEM_REL_OIDS[("pg_catalog", "pg_type")] = PG_TYPE_OID
SYSTEM_REL_OIDS[("pg_catalog", "pg_namespace")] = PG_NAMESPACE_OID
SYSTEM_REL_OIDS[("pg_catalog", "pg_constraint")] = PG_CONSTRAINT_OID
SYSTEM_REL_OIDS[("pg_catalog", "pg_proc")] = PG_PROC_OID
SYSTEM_REL_OIDS[("pg_catalog", "pg_database")] = PG_DATABASE_OID
#: pg_catalog views (the rest are tables).
_SYSTEM_VIEWS = frozenset(
    {"pg_roles", "pg_user", "pg_settings", "pg_tables", "pg_views", "pg_matviews", "pg_indexes"}
)


def table_spec(schema: str, name: str) -> list[Col]:
    """Columns of an emulated relation, without the hidden `_db` column."""
    if schema == "information_schema":
        return INFO_RELATIONS[name]
    return PG_RELATIONS[name][1]


def is_per_database(schema: str, name: str) -> bool:
    return schema == "information_schema" or PG_RELATIONS[name][0]


# --------------------------------------------------------------------------- rows

Row = tuple[Any, ...]

_RELKINDS = {
    "table": "r",
    "source": "r",
    "view": "v",
    "materialized_view": "m",
    "index": "i",
}


@dataclass
class _Rel:
    """One relation as pg_class sees it."""

    oid: int
    name: str
    schema: str
    nsp_oid: int
    kind: str  # relkind
    owner: int
    columns: list[dict[str, Any]]  # name, type (canonical text), nullable, default
    persistence: str = "p"
    definition: str | None = None  # views / indexes
    on: _Rel | None = None  # indexes: the indexed relation
    #: A primary key's index: (constraint OID, key attnums); gets pg_index/pg_constraint rows.
    primary_key: tuple[int, list[int]] | None = None
    has_index: bool = False  # pg_class.relhasindex


@dataclass
class CatalogRows:
    """Every emulated relation's rows (`schema.name` -> rows); per-database relations' rows
    start with the database name."""

    tables: dict[str, list[Row]] = field(default_factory=dict)

    def add(self, key: str, row: Row) -> None:
        self.tables.setdefault(key, []).append(row)


def _system_owner(index: CatalogIndex) -> int:
    roles = index.state.entries("role")
    for k, v in sorted(roles.items(), key=lambda kv: _id_key(kv[0])):
        if v.get("superuser"):
            return role_oid(k)
    return BOOTSTRAP_SUPERUSER_OID


def _id_key(ident: str) -> tuple[int, str]:
    digits = "".join(ch for ch in ident if ch.isdigit())
    return (int(digits) if digits else 0, ident)


def _owner(index: CatalogIndex, value: Mapping[str, Any], default: int) -> int:
    owner = value.get("owner")
    return role_oid(str(owner)) if owner else default


def _system_relations(db_owner: int) -> list[_Rel]:
    out = []
    for (schema, name), oid in sorted(SYSTEM_REL_OIDS.items()):
        cols = table_spec(schema, name)
        kind = "v" if schema == "information_schema" or name in _SYSTEM_VIEWS else "r"
        nsp = SYSTEM_NAMESPACES[schema]
        columns = [{"name": c, "type": _pg_type_text(pg), "nullable": True} for c, _d, pg in cols]
        out.append(_Rel(oid, name, schema, nsp, kind, db_owner, columns))
    return out


def _pg_type_text(name: str) -> str:
    return name[1:] + "[]" if name.startswith("_") else name


def _index_definition(ref: ItemRef, on: ItemRef | None) -> str:
    keys = ", ".join(str(k) for k in ref.value.get("keys", []))
    target = f"{on.schema}.{on.name}" if on is not None else "?"
    return f"CREATE INDEX {ref.name} ON {target} USING arrangement ({keys})"


def _item_relations(
    index: CatalogIndex,
    database: str,
    nsp_oids: Mapping[str, int],
    view_types: Mapping[str, list[str]],
    default_owner: int,
) -> list[_Rel]:
    rels: dict[str, _Rel] = {}
    indexes: list[ItemRef] = []
    for ref in sorted(index.items_by_id.values(), key=lambda r: _id_key(r.id)):
        if ref.database != database or ref.type not in _RELKINDS:
            continue
        if ref.type == "index":
            indexes.append(ref)
            continue
        columns = [dict(c) for c in ref.columns]
        types = view_types.get(ref.id)
        if ref.type in ("view", "materialized_view") and types and len(types) == len(columns):
            for c, t in zip(columns, types, strict=True):
                c["type"] = t
        rels[ref.id] = _Rel(
            oid=item_oid(ref.id),
            name=ref.name,
            schema=ref.schema,
            nsp_oid=nsp_oids.get(ref.schema, 0),
            kind=_RELKINDS[ref.type],
            owner=_owner(index, ref.value, default_owner),
            columns=columns,
            persistence="t" if ref.value.get("temporary_session") is not None else "p",
            definition=ref.value.get("query"),
            has_index=bool(ref.value.get("primary_key")),
        )
    out = list(rels.values())
    for ref in sorted(index.items_by_id.values(), key=lambda r: _id_key(r.id)):
        pk = ref.value.get("primary_key") if ref.type == "table" else None
        if pk and ref.id in rels:
            out.append(_primary_key_index(ref, rels[ref.id], pk))
    for ref in indexes:
        on_ref = index.items_by_id.get(str(ref.value.get("on_id")))
        on = rels.get(on_ref.id) if on_ref is not None else None
        by_name = {c["name"]: c for c in (on.columns if on is not None else [])}
        columns = []
        for key in ref.value.get("keys", []):
            col = by_name.get(str(key))
            columns.append(
                {"name": str(key), "type": col["type"] if col else "text", "nullable": True}
            )
        out.append(
            _Rel(
                oid=item_oid(ref.id),
                name=ref.name,
                schema=ref.schema,
                nsp_oid=nsp_oids.get(ref.schema, 0),
                kind="i",
                owner=_owner(index, ref.value, default_owner),
                columns=columns,
                definition=_index_definition(ref, on_ref),
                on=on,
            )
        )
    return out


def _primary_key_index(ref: ItemRef, table: _Rel, pk: Mapping[str, Any]) -> _Rel:
    """The unique index PostgreSQL creates for a table's PRIMARY KEY."""
    names = [c["name"] for c in table.columns]
    attnums = [names.index(c) + 1 for c in pk["columns"]]
    cols = ", ".join(quote_ident_if_needed(c) for c in pk["columns"])
    return _Rel(
        oid=stable_oid(_PKEY_INDEX_BASE, ref.id),
        name=str(pk["name"]),
        schema=table.schema,
        nsp_oid=table.nsp_oid,
        kind="i",
        owner=table.owner,
        columns=[dict(table.columns[n - 1], nullable=False) for n in attnums],
        definition=f"CREATE UNIQUE INDEX {quote_ident_if_needed(str(pk['name']))} ON "
        f"{table.schema}.{quote_ident_if_needed(table.name)} USING btree ({cols})",
        on=table,
        primary_key=(stable_oid(_PKEY_CONSTRAINT_BASE, ref.id), attnums),
    )


def quote_ident_if_needed(name: str) -> str:
    """An identifier as PostgreSQL's quote_ident prints it."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _primary_key_rows(out: CatalogRows, database: str, rel: _Rel) -> None:
    assert rel.primary_key is not None and rel.on is not None
    con_oid, attnums = rel.primary_key
    table = rel.on
    n = len(attnums)
    out.add(
        "pg_index",
        (
            database,
            rel.oid,
            table.oid,
            n,
            n,
            True,
            False,
            True,
            False,
            True,
            False,
            True,
            False,
            True,
            True,
            False,
            attnums,
            [DEFAULT_COLLATION_OID] * n,
            [0] * n,
            [0] * n,
            None,
            None,
        ),
    )
    out.add(
        "pg_constraint",
        (
            database,
            con_oid,
            rel.name,
            rel.nsp_oid,
            "p",
            False,
            False,
            True,
            table.oid,
            0,
            rel.oid,
            0,
            0,
            " ",
            " ",
            " ",
            True,
            0,
            True,
            attnums,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
    )
    cols = ", ".join(quote_ident_if_needed(str(c["name"])) for c in rel.columns)
    out.add("_defs", (con_oid, f"PRIMARY KEY ({cols})"))
    out.add(
        "table_constraints",
        (
            database,
            database,
            rel.schema,
            rel.name,
            database,
            table.schema,
            table.name,
            "PRIMARY KEY",
            "NO",
            "NO",
            "YES",
            None,
        ),
    )
    for pos, col in enumerate(rel.columns, start=1):
        out.add(
            "key_column_usage",
            (
                database,
                database,
                rel.schema,
                rel.name,
                database,
                table.schema,
                table.name,
                str(col["name"]),
                pos,
                None,
            ),
        )
        out.add(
            "constraint_column_usage",
            (
                database,
                database,
                table.schema,
                table.name,
                str(col["name"]),
                database,
                rel.schema,
                rel.name,
            ),
        )


def _type_facts(type_text: str) -> tuple[PgType, int, int]:
    """(PgType, OID, typmod) of a column type."""
    oid, typmod = type_of_column(type_text)
    return TYPES_BY_OID[oid], oid, typmod


_SETTINGS_EXTRA = {
    "server_encoding": "UTF8",
    "max_identifier_length": "63",
    "block_size": "8192",
    "lc_collate": "C.UTF-8",
    "lc_ctype": "C.UTF-8",
    "default_transaction_isolation": "strict serializable",
    "default_transaction_read_only": "off",
    "transaction_read_only": "off",
    "max_index_keys": "32",
}


def _settings_rows() -> list[Row]:
    from twinstream.adapter.vars import REPORTED_NAMES, VARS

    out: list[Row] = []
    values = {REPORTED_NAMES.get(k, k): v.default for k, v in VARS.items()}
    values.update(_SETTINGS_EXTRA)
    for name in sorted(values):
        value = values[name]
        out.append(
            (
                name,
                value,
                None,
                "Client Connection Defaults",
                "",
                None,
                "user",
                "string",
                "default",
                None,
                None,
                None,
                value,
                value,
                None,
                None,
                False,
            )
        )
    return out


def _info_column_row(database: str, rel: _Rel, pos: int, col: Mapping[str, Any]) -> Row:
    t, _oid, typmod = _type_facts(str(col["type"]))
    is_array = t.category == "A" and t.name.startswith("_")
    elem = TYPES_BY_OID[t.elem] if is_array else t
    data_type = "ARRAY" if is_array else elem.display
    char_max = char_octets = None
    num_prec = num_radix = num_scale = dt_prec = None
    if not is_array:
        if t.modkind == "len" and typmod >= 4:
            char_max = typmod - 4
            char_octets = char_max * 4
        elif t.category == "S" and t.name != "name":
            char_octets = 1073741824
        bits = {"int2": 16, "int4": 32, "int8": 64, "float4": 24, "float8": 53}
        if t.name in bits:
            num_prec, num_radix = bits[t.name], 2
            num_scale = 0 if t.name.startswith("int") else None
        elif t.name == "numeric":
            num_radix = 10
            if typmod >= 4:
                raw = typmod - 4
                num_prec, num_scale = (raw >> 16) & 0xFFFF, raw & 0xFFFF
        elif t.category in ("D", "T"):
            dt_prec = 0 if t.name == "date" else (typmod if typmod >= 0 else 6)
    updatable = "YES" if rel.kind == "r" and rel.schema not in SYSTEM_NAMESPACES else "NO"
    coll = "default" if t.collation == DEFAULT_COLLATION_OID and not is_array else None
    head: Row = (
        database,
        database,
        rel.schema,
        rel.name,
        col["name"],
        pos,
        col.get("default"),
        "YES" if col.get("nullable", True) else "NO",
        data_type,
        char_max,
        char_octets,
        num_prec,
        num_radix,
        num_scale,
        dt_prec,
        None,
        None,
    )
    tail: Row = (
        None,
        None,
        None,
        database,
        "pg_catalog",
        t.name,
        None,
        None,
        None,
        None,
        str(pos),
        "NO",
        "NO",
        None,
        None,
        None,
        None,
        None,
        "NO",
        "NEVER",
        None,
        updatable,
    )
    return _with_collation(head, coll, tail)


def _with_collation(head: Row, collation: str | None, tail: Row) -> Row:
    # character_set_{catalog,schema,name}, collation_{catalog,schema,name}
    coll: Row = (None, None, None, None, None, collation)
    return head + coll + tail


def build_rows(
    index: CatalogIndex, view_types: Mapping[str, list[str]] | None = None
) -> CatalogRows:
    """Every emulated relation's rows for this catalog."""
    view_types = view_types or {}
    out = CatalogRows()
    system_owner = _system_owner(index)
    st = index.state
    role_names: dict[int, str] = {}
    for k, v in sorted(st.entries("role").items(), key=lambda kv: _id_key(kv[0])):
        oid, name, sup = role_oid(k), str(v["name"]), bool(v.get("superuser"))
        role_names[oid] = name
        out.add(
            "pg_authid",
            (oid, name, sup, True, sup, sup, True, False, sup, -1, None, None),
        )
        out.add(
            "pg_roles",
            (name, sup, True, sup, sup, True, False, -1, "********", None, sup, None, oid),
        )
        out.add("pg_user", (name, oid, sup, sup, False, sup, "********", None, None))
    for k, v in sorted(st.entries("database").items(), key=lambda kv: _id_key(kv[0])):
        out.add(
            "pg_database",
            (
                database_oid(k),
                v["name"],
                _owner(index, v, system_owner),
                UTF8_ENCODING,
                "c",
                False,
                True,
                -1,
                0,
                1,
                DEFAULT_TABLESPACE_OID,
                "C.UTF-8",
                "C.UTF-8",
                None,
                None,
                None,
            ),
        )
    for oid, name, kind, handler in (
        (HEAP_AM_OID, "heap", "t", "heap_tableam_handler"),
        (BTREE_AM_OID, "btree", "i", "bthandler"),
        (405, "hash", "i", "hashhandler"),
        (783, "gist", "i", "gisthandler"),
        (2742, "gin", "i", "ginhandler"),
        (4000, "spgist", "i", "spghandler"),
        (3580, "brin", "i", "brinhandler"),
    ):
        out.add("pg_am", (oid, name, handler, kind))
    out.add("pg_tablespace", (DEFAULT_TABLESPACE_OID, "pg_default", system_owner, None, None))
    out.add("pg_tablespace", (1664, "pg_global", system_owner, None, None))
    for oid, name, provider in (
        (DEFAULT_COLLATION_OID, "default", "d"),
        (C_COLLATION_OID, "C", "c"),
        (951, "POSIX", "c"),
    ):
        coll = None if provider == "d" else name
        out.add(
            "pg_collation",
            (oid, name, PG_CATALOG_OID, system_owner, provider, True, -1, coll, coll, None, None),
        )
    for lang_oid, lang in ((12, "internal"), (13, "c"), (14, "sql")):
        row = (lang_oid, lang, system_owner, False, lang == "sql", 0, 0, 0, None)
        out.add("pg_language", row)
    for t in ALL_TYPES:
        modout = t.modin[:-2] + "out" if t.modin != "-" else "-"
        io = t.io
        out.add(
            "pg_type",
            (
                t.oid,
                t.name,
                PG_CATALOG_OID,
                system_owner,
                t.length,
                t.byval,
                t.typtype,
                t.category,
                t.preferred,
                True,
                t.delim,
                0,
                t.subscript,
                t.elem,
                t.array_oid,
                io + "in",
                io + "out",
                io + "recv",
                io + "send",
                t.modin,
                modout,
                "array_typanalyze" if t.io == "array_" else "-",
                t.align,
                t.storage,
                False,
                0,
                -1,
                0,
                t.collation,
                None,
                None,
                None,
            ),
        )
        suffix = "[]" if t.io == "array_" else ""
        out.add("_types", (t.oid, t.head, t.tail, t.modkind, suffix, t.display + suffix))
    for spelling, oid in sorted(TYPE_SPELLINGS.items()):
        out.add("_type_spellings", (spelling, oid))
    out.tables["pg_settings"] = _settings_rows()
    for db_id, database in sorted(index.database_names.items(), key=lambda kv: _id_key(kv[0])):
        db_value = st.entries("database").get(db_id, {})
        _database_rows(out, index, database, db_value, view_types, system_owner, role_names)
    return out


def _database_rows(
    out: CatalogRows,
    index: CatalogIndex,
    database: str,
    db_value: Mapping[str, Any],
    view_types: Mapping[str, list[str]],
    system_owner: int,
    role_names: Mapping[int, str],
) -> None:
    db_owner = _owner(index, db_value, system_owner)
    nsp_oids: dict[str, int] = dict(SYSTEM_NAMESPACES)
    nsp_owner: dict[str, int] = {n: system_owner for n in SYSTEM_NAMESPACES}
    for s_id, (db, schema) in sorted(index.schema_names.items(), key=lambda kv: _id_key(kv[0])):
        if db != database:
            continue
        nsp_oids[schema] = schema_oid(s_id)
        nsp_owner[schema] = _owner(index, index.state.entries("schema").get(s_id, {}), db_owner)
    for ref in index.items_by_id.values():  # temporary schemas holding items (PostgreSQL too)
        if ref.database == database and is_temp_schema(ref.schema):
            nsp_oids[ref.schema] = schema_oid(ref.schema)
            nsp_owner[ref.schema] = db_owner
    for name, oid in nsp_oids.items():
        out.add("pg_namespace", (database, oid, name, nsp_owner[name], None))
        owner_name = role_names.get(nsp_owner[name], "")
        out.add("schemata", (database, database, name, owner_name, None, None, None, None))
    rels = _system_relations(system_owner) + _item_relations(
        index, database, nsp_oids, view_types, db_owner
    )
    for rel in rels:
        _relation_rows(out, database, rel, role_names)


def _relation_rows(
    out: CatalogRows, database: str, rel: _Rel, role_names: Mapping[int, str]
) -> None:
    kind = rel.kind
    stored = kind in ("r", "m", "i")
    out.add(
        "pg_class",
        (
            database,
            rel.oid,
            rel.name,
            rel.nsp_oid,
            0,
            0,
            rel.owner,
            BTREE_AM_OID if kind == "i" else (HEAP_AM_OID if kind in ("r", "m") else 0),
            rel.oid if stored else 0,
            0,
            0,
            -1.0,
            0,
            0,
            rel.has_index,
            False,
            rel.persistence,
            kind,
            len(rel.columns),
            0,
            kind == "v",
            False,
            False,
            False,
            False,
            True,
            "d" if kind in ("r", "m") else "n",
            False,
            0,
            0,
            0,
            None,
            None,
            None,
        ),
    )
    owner = role_names.get(rel.owner, "")
    for pos, col in enumerate(rel.columns, start=1):
        t, oid, typmod = _type_facts(str(col["type"]))
        default = col.get("default")
        out.add(
            "pg_attribute",
            (
                database,
                rel.oid,
                col["name"],
                oid,
                -1,
                t.length,
                pos,
                1 if t.io == "array_" else 0,
                -1,
                typmod,
                t.byval,
                t.align,
                t.storage,
                "",
                not col.get("nullable", True),
                default is not None,
                False,
                "",
                "",
                False,
                True,
                0,
                t.collation,
                None,
                None,
                None,
                None,
            ),
        )
        if default is not None:
            def_oid = _ATTRDEF_BASE + ((rel.oid - _ITEM_BASE) * 1600 + pos) % 1_900_000_000
            out.add("pg_attrdef", (database, def_oid, rel.oid, pos, str(default)))
        if kind != "i":
            out.add("columns", _info_column_row(database, rel, pos, col))
    if rel.definition is not None:
        out.add("_defs", (rel.oid, rel.definition))
    if kind == "i":
        if rel.on is not None:
            out.add(
                "pg_indexes", (database, rel.schema, rel.on.name, rel.name, None, rel.definition)
            )
        if rel.primary_key is not None:
            _primary_key_rows(out, database, rel)
        return
    table_type = {"r": "BASE TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}[kind]
    if kind == "r" and rel.persistence == "t":
        table_type = "LOCAL TEMPORARY"
    insertable = "YES" if kind == "r" and rel.schema not in SYSTEM_NAMESPACES else "NO"
    out.add(
        "tables",
        (
            database,
            database,
            rel.schema,
            rel.name,
            table_type,
            None,
            None,
            None,
            None,
            None,
            insertable,
            "NO",
            None,
        ),
    )
    if kind == "r":
        out.add(
            "pg_tables",
            (database, rel.schema, rel.name, owner, None, False, False, False, False),
        )
    elif kind == "v":
        out.add("pg_views", (database, rel.schema, rel.name, owner, rel.definition))
        out.add(
            "views",
            (
                database,
                database,
                rel.schema,
                rel.name,
                rel.definition,
                "NONE",
                "NO",
                "NO",
                "NO",
                "NO",
                "NO",
            ),
        )
    elif kind == "m":
        out.add(
            "pg_matviews",
            (database, rel.schema, rel.name, owner, None, False, True, rel.definition),
        )


# --------------------------------------------------------------------------- DuckDB side


def relation_fqn(schema: str, name: str) -> tuple[str, str, str]:
    """(database, schema, table) of the DuckDB table emulating `schema.name`."""
    return (DATABASE, INFO_SCHEMA if schema == "information_schema" else PG_SCHEMA, name)


def _duck_table(key: str) -> tuple[str, list[tuple[str, str]]]:
    """DuckDB fqn and (column, type) list of the table holding rows for `key`."""
    if key in INFO_RELATIONS:
        cols = [("_db", "VARCHAR")] + [(c, d) for c, d, _ in INFO_RELATIONS[key]]
        return f'{DATABASE}.{INFO_SCHEMA}."{key}"', cols
    if key in PG_RELATIONS:
        per_db, spec = PG_RELATIONS[key]
        cols = ([("_db", "VARCHAR")] if per_db else []) + [(c, d) for c, d, _ in spec]
        return f'{DATABASE}.{PG_SCHEMA}."{key}"', cols
    return f'{DATABASE}.{PG_SCHEMA}."{key}"', [(c, d) for c, d, _ in _HELPERS[key]]


ALL_KEYS: tuple[str, ...] = (*PG_RELATIONS, *INFO_RELATIONS, *_HELPERS)

_Q = f"{DATABASE}.{PG_SCHEMA}"


def _lookup(args: str, select: str, source: str, on: str) -> str:
    """A hygienic lookup subquery for a macro body: DuckDB substitutes macro arguments as
    expressions, so an argument such as the column `oid` written inside a subquery over a
    table with an `oid` column would bind to that table. The arguments are evaluated in a
    FROM-less derived table (`_a`, where they can only mean the caller's columns) instead:
    `args` is e.g. "o AS _o", the rest refers to `_a._o`."""
    return f"(SELECT {select} FROM (SELECT {args}) AS _a JOIN {source} ON {on})"


#: Scalar macros (name -> one or more `(params) AS body` overloads), in PG_SCHEMA.
MACROS: dict[str, list[str]] = {
    "pg_get_userbyid": [
        "(r) AS coalesce("
        + _lookup("r AS _r", "x.rolname", f"{_Q}.pg_authid AS x", "x.oid = _a._r")
        + ", 'unknown (OID=' || CAST(r AS VARCHAR) || ')')"
    ],
    "format_type": [
        "(t, m) AS (CASE WHEN t IS NULL THEN NULL WHEN t = 0 THEN '-' "
        "WHEN t = 1042 AND m = -1 THEN 'bpchar' ELSE coalesce("
        + _lookup(
            "t AS _t, m AS _m",
            "CASE WHEN _a._m IS NULL OR _a._m < 0 OR y.modkind = '' THEN y.plain "
            "WHEN y.modkind = 'len' THEN y.head || '(' || CAST(_a._m - 4 AS VARCHAR) || ')' "
            "|| y.tail || y.arr "
            "WHEN y.modkind = 'numeric' THEN y.head || '(' "
            "|| CAST(((_a._m - 4) >> 16) & 65535 AS VARCHAR) || ',' "
            "|| CAST((_a._m - 4) & 65535 AS VARCHAR) || ')' || y.arr "
            "ELSE y.head || '(' || CAST(_a._m AS VARCHAR) || ')' || y.tail || y.arr END",
            f"{_Q}._types AS y",
            "y.oid = _a._t",
        )
        + ", '???') END)"
    ],
    "pg_get_expr": ["(e, r) AS CAST(e AS VARCHAR)", "(e, r, p) AS CAST(e AS VARCHAR)"],
    "pg_get_indexdef": [
        "(i) AS " + _lookup("i AS _i", "d.def", f"{_Q}._defs AS d", "d.oid = _a._i"),
        "(i, c, p) AS (CASE WHEN c = 0 THEN "
        + _lookup("i AS _i", "d.def", f"{_Q}._defs AS d", "d.oid = _a._i")
        + " ELSE "
        + _lookup(
            "i AS _i, c AS _c",
            "min(x.attname)",
            f"{_Q}.pg_attribute AS x",
            "x.attrelid = _a._i AND x.attnum = _a._c",
        )
        + " END)",
    ],
    "pg_get_viewdef": [
        "(v) AS " + _lookup("v AS _v", "d.def", f"{_Q}._defs AS d", "d.oid = _a._v"),
        "(v, p) AS " + _lookup("v AS _v", "d.def", f"{_Q}._defs AS d", "d.oid = _a._v"),
    ],
    "pg_get_constraintdef": [
        "(c) AS " + _lookup("c AS _c", "d.def", f"{_Q}._defs AS d", "d.oid = _a._c"),
        "(c, p) AS " + _lookup("c AS _c", "d.def", f"{_Q}._defs AS d", "d.oid = _a._c"),
    ],
    "pg_get_triggerdef": ["(c) AS CAST(NULL AS VARCHAR)", "(c, p) AS CAST(NULL AS VARCHAR)"],
    "pg_get_ruledef": ["(c) AS CAST(NULL AS VARCHAR)", "(c, p) AS CAST(NULL AS VARCHAR)"],
    "pg_get_partkeydef": ["(c) AS CAST(NULL AS VARCHAR)"],
    "pg_get_partition_constraintdef": ["(c) AS CAST(NULL AS VARCHAR)"],
    "pg_get_statisticsobjdef_columns": ["(c) AS CAST(NULL AS VARCHAR)"],
    "pg_get_serial_sequence": ["(t, c) AS CAST(NULL AS VARCHAR)"],
    "pg_get_function_result": ["(f) AS CAST(NULL AS VARCHAR)"],
    "pg_get_function_arguments": ["(f) AS CAST(NULL AS VARCHAR)"],
    "pg_get_function_identity_arguments": ["(f) AS CAST(NULL AS VARCHAR)"],
    "obj_description": ["(o) AS CAST(NULL AS VARCHAR)", "(o, c) AS CAST(NULL AS VARCHAR)"],
    "col_description": ["(o, n) AS CAST(NULL AS VARCHAR)"],
    "shobj_description": ["(o, c) AS CAST(NULL AS VARCHAR)"],
    "pg_encoding_to_char": [
        "(e) AS (CASE e WHEN 6 THEN 'UTF8' WHEN 0 THEN 'SQL_ASCII' ELSE '' END)"
    ],
    "pg_char_to_encoding": [
        "(s) AS (CASE upper(s) WHEN 'UTF8' THEN 6 WHEN 'SQL_ASCII' THEN 0 ELSE -1 END)"
    ],
    "pg_client_encoding": ["() AS 'UTF8'"],
    "getdatabaseencoding": ["() AS 'UTF8'"],
    "pg_type_is_visible": [
        "(t) AS coalesce("
        + _lookup("t AS _t", "count(*) > 0", f"{_Q}.pg_type AS y", "y.oid = _a._t")
        + ", false)"
    ],
    "pg_function_is_visible": ["(o) AS true"],
    "pg_collation_is_visible": ["(o) AS true"],
    "pg_opclass_is_visible": ["(o) AS true"],
    "pg_opfamily_is_visible": ["(o) AS true"],
    "pg_operator_is_visible": ["(o) AS true"],
    "pg_conversion_is_visible": ["(o) AS true"],
    "pg_ts_config_is_visible": ["(o) AS true"],
    "pg_ts_dict_is_visible": ["(o) AS true"],
    "pg_ts_parser_is_visible": ["(o) AS true"],
    "pg_ts_template_is_visible": ["(o) AS true"],
    "pg_statistics_obj_is_visible": ["(o) AS true"],
    "pg_relation_size": ["(r) AS CAST(0 AS BIGINT)", "(r, f) AS CAST(0 AS BIGINT)"],
    "pg_total_relation_size": ["(r) AS CAST(0 AS BIGINT)"],
    "pg_table_size": ["(r) AS CAST(0 AS BIGINT)"],
    "pg_indexes_size": ["(r) AS CAST(0 AS BIGINT)"],
    "pg_database_size": ["(d) AS CAST(0 AS BIGINT)"],
    "pg_tablespace_size": ["(t) AS CAST(0 AS BIGINT)"],
    "pg_tablespace_location": ["(o) AS ''"],
    "pg_relation_is_publishable": ["(o) AS false"],
    "pg_is_in_recovery": ["() AS false"],
    "pg_my_temp_schema": ["() AS 0"],
    "pg_is_other_temp_schema": ["(o) AS false"],
    "array_upper": [
        "(a, d) AS (CASE WHEN a IS NULL OR len(a) = 0 OR d <> 1 THEN NULL ELSE len(a) END)"
    ],
    "array_lower": ["(a, d) AS (CASE WHEN a IS NULL OR len(a) = 0 OR d <> 1 THEN NULL ELSE 1 END)"],
    "current_setting": [
        "(n) AS "
        + _lookup(
            "n AS _n", "min(x.setting)", f"{_Q}.pg_settings AS x", "lower(x.name) = lower(_a._n)"
        ),
        "(n, m) AS "
        + _lookup(
            "n AS _n", "min(x.setting)", f"{_Q}.pg_settings AS x", "lower(x.name) = lower(_a._n)"
        ),
    ],
    "set_config": ["(n, v, l) AS v"],
    "quote_ident": [
        "(s) AS (CASE WHEN regexp_full_match(s, '[a-z_][a-z0-9_$]*') THEN s "
        "ELSE '\"' || replace(s, '\"', '\"\"') || '\"' END)"
    ],
    "to_regtype": [
        "(s) AS "
        + _lookup(
            "s AS _s", "min(x.oid)", f"{_Q}._type_spellings AS x", "x.spelling = lower(trim(_a._s))"
        )
    ],
    "to_regrole": [
        "(s) AS " + _lookup("s AS _s", "min(x.oid)", f"{_Q}.pg_authid AS x", "x.rolname = _a._s")
    ],
    "to_regproc": ["(s) AS CAST(NULL AS INTEGER)"],
    "to_regprocedure": ["(s) AS CAST(NULL AS INTEGER)"],
    "to_regoper": ["(s) AS CAST(NULL AS INTEGER)"],
    "to_regoperator": ["(s) AS CAST(NULL AS INTEGER)"],
    # -- helpers for the planner's rewrites (not PostgreSQL functions)
    "_regclass": [
        "(s, db, path) AS (SELECT c.oid FROM (SELECT replace(s, '\"', '') AS _s, db AS _db, "
        f"path AS _path) AS _a JOIN {_Q}.pg_class AS c ON c._db = _a._db "
        f"JOIN {_Q}.pg_namespace AS n ON n.oid = c.relnamespace AND n._db = c._db "
        "WHERE (n.nspname || '.' || c.relname) = _a._s "
        "OR (c.relname = _a._s AND list_contains(_a._path, n.nspname)) "
        "ORDER BY CASE WHEN c.relname = _a._s THEN list_position(_a._path, n.nspname) "
        "ELSE 0 END LIMIT 1)"
    ],
    "_regnamespace": [
        "(s, db) AS "
        + _lookup(
            "replace(s, '\"', '') AS _s, db AS _db",
            "min(n.oid)",
            f"{_Q}.pg_namespace AS n",
            "n._db = _a._db AND n.nspname = _a._s",
        )
    ],
    "_relname": [
        "(o) AS coalesce("
        + _lookup("o AS _o", "min(c.relname)", f"{_Q}.pg_class AS c", "c.oid = _a._o")
        + ", CAST(o AS VARCHAR))"
    ],
    "_nspname": [
        "(o) AS coalesce("
        + _lookup("o AS _o", "min(n.nspname)", f"{_Q}.pg_namespace AS n", "n.oid = _a._o")
        + ", CAST(o AS VARCHAR))"
    ],
}


def macro_statements() -> list[str]:
    return [
        f"CREATE OR REPLACE MACRO {_Q}.{name}" + ", ".join(bodies)
        for name, bodies in MACROS.items()
    ]


def replace_table(
    cur: Any, table: str, cols: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> None:
    """(Re)create `table` with exactly `rows`, in one statement: readers never see it empty,
    and the rows travel as one list per column (far faster than executemany)."""
    assert all(len(r) == len(cols) for r in rows), f"{table}: row width mismatch"
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in cols]
    select = ", ".join(f'unnest(${i + 1}::{t}[]) AS "{c}"' for i, (c, t) in enumerate(cols))
    cur.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT {select}", [list(c) for c in columns])


class PgCatalogTables:
    """Creates the emulation's schemas, tables and macros in the engine and refreshes the
    tables' rows (only those whose rows changed) from the catalog."""

    def __init__(self, engine: QueryEngine) -> None:
        self.engine = engine
        #: Our own connection to the engine's database (used on the event loop thread only).
        self._cur = engine.cursor()
        self._last: dict[str, list[Row]] = {}
        #: item id -> canonical column types of a view / materialized view (from DuckDB).
        self._view_types: dict[str, list[str]] = {}
        engine.execute_ddl(f"CREATE SCHEMA IF NOT EXISTS {DATABASE}.{PG_SCHEMA}")
        engine.execute_ddl(f"CREATE SCHEMA IF NOT EXISTS {DATABASE}.{INFO_SCHEMA}")
        for key in ALL_KEYS:
            self._fill(key, [])
        for stmt in macro_statements():
            engine.execute_ddl(stmt)

    def _fill(self, key: str, rows: list[Row]) -> None:
        if key in self._last and self._last[key] == rows:
            return
        table, cols = _duck_table(key)
        replace_table(self._cur, table, cols, rows)
        self._last[key] = rows

    def refresh(self, index: CatalogIndex) -> None:
        self._update_view_types(index)
        rows = build_rows(index, self._view_types)
        for key in ALL_KEYS:
            self._fill(key, rows.tables.get(key, []))

    def _update_view_types(self, index: CatalogIndex) -> None:
        live = {
            r.id: r
            for r in index.items_by_id.values()
            if r.type in ("view", "materialized_view") and r.value.get("duck_sql")
        }
        for gone in set(self._view_types) - set(live):
            del self._view_types[gone]
        for item_id, ref in live.items():
            if item_id in self._view_types:
                continue
            try:
                res = self._cur.execute(f"SELECT * FROM ({ref.value['duck_sql']}) AS _q LIMIT 0")
                described: list[Any] = res.description or []
            except Exception:
                continue
            self._view_types[item_id] = [duck_type_text(str(d[1])) for d in described]


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PgContext:
    """What the planner's catalog rewrites need to know about the session."""

    index: CatalogIndex
    database: str
    search_path: tuple[str, ...]
    user: str = DEFAULT_USER
    backend_pid: int = 0

    def schemas(self) -> list[str]:
        """The session's existing search_path schemas (current_schemas(false))."""
        out = []
        for s in self.search_path:
            exists = (self.database, s) in self.index.schemas or s in SYSTEM_NAMESPACES
            if exists and s not in out:
                out.append(s)
        return out

    def effective_path(self) -> list[str]:
        """current_schemas(true): the session's temporary schema if it holds items (searched
        implicitly, as in PostgreSQL), then pg_catalog first unless the path names it."""
        path = self.schemas()
        path = path if "pg_catalog" in path else ["pg_catalog", *path]
        temp = [s for s in self.search_path if (self.database, s) in self.index.temp_schemas]
        return [*temp[:1], *path]

    def namespace_oid(self, schema: str) -> int | None:
        if schema in SYSTEM_NAMESPACES:
            return SYSTEM_NAMESPACES[schema]
        if is_temp_schema(schema):
            return schema_oid(schema)
        s_id = self.index.schemas.get((self.database, schema))
        return None if s_id is None else schema_oid(s_id)

    def relation_oid(self, schema: str, name: str) -> int | None:
        if schema in ("pg_catalog", "information_schema"):
            return SYSTEM_REL_OIDS.get((schema, name))
        ref = self.index.items.get((self.database, schema, name))
        if ref is None or ref.type not in _RELKINDS:
            return None
        return item_oid(ref.id)

    def visible_relation_oids(self) -> list[int]:
        """OIDs of the relations pg_table_is_visible() is true for."""
        seen: set[str] = set()
        out: list[int] = []
        for schema in self.effective_path():
            if schema in ("pg_catalog", "information_schema"):
                names = [n for (s, n) in SYSTEM_REL_OIDS if s == schema]
            else:
                names = [
                    r.name
                    for r in self.index.items_by_id.values()
                    if r.database == self.database and r.schema == schema
                ]
            for name in sorted(names):
                if name in seen:
                    continue
                oid = self.relation_oid(schema, name)
                if oid is not None:
                    seen.add(name)
                    out.append(oid)
        return out

    def regclass(self, text: str) -> int | None:
        parts = _split_name(text)
        if parts is None:
            return None
        if len(parts) == 3:
            if parts[0] != self.database:
                return None
            parts = parts[1:]
        if len(parts) == 2:
            return self.relation_oid(parts[0], parts[1])
        if len(parts) == 1:
            for schema in self.effective_path():
                oid = self.relation_oid(schema, parts[0])
                if oid is not None:
                    return oid
        return None

    def role_oid(self, name: str) -> int | None:
        for k, v in self.index.state.entries("role").items():
            if v.get("name") == name:
                return role_oid(k)
        return None


def _split_name(text: str) -> list[str] | None:
    """`a.b`, `"A".b` -> identifier parts (unquoted ones lower-cased); None if malformed."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i <= n:
        if i < n and text[i] == '"':
            j = i + 1
            buf = []
            while j < n:
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            if j >= n:
                return None
            parts.append("".join(buf))
            i = j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            word = text[i:j].strip()
            if not word:
                return None
            parts.append(word.lower())
            i = j
        if i < n and text[i] == ".":
            i += 1
            continue
        if i >= n:
            break
        return None
    return parts if 1 <= len(parts) <= 3 else None


def _lit(value: object) -> exp.Expr:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def _macro(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Dot(
        this=exp.to_identifier(PG_SCHEMA),
        expression=exp.Anonymous(this=name, expressions=list(args)),
    )


def _cast(e: exp.Expr, duck_type: str) -> exp.Cast:
    return exp.Cast(this=e, to=exp.DataType.build(duck_type, dialect="duckdb"))


def _func_name(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return None


# -- normalization (before output columns are named) --------------------------------------

_OPERATORS: dict[str, Callable[[exp.Expr, exp.Expr], exp.Expr]] = {
    "~": lambda a, b: exp.RegexpLike(this=a, expression=b),
    "!~": lambda a, b: exp.Not(this=exp.RegexpLike(this=a, expression=b)),
    "~*": lambda a, b: exp.RegexpILike(this=a, expression=b),
    "!~*": lambda a, b: exp.Not(this=exp.RegexpILike(this=a, expression=b)),
    "~~": lambda a, b: exp.Like(this=a, expression=b),
    "!~~": lambda a, b: exp.Not(this=exp.Like(this=a, expression=b)),
    "~~*": lambda a, b: exp.ILike(this=a, expression=b),
    "!~~*": lambda a, b: exp.Not(this=exp.ILike(this=a, expression=b)),
    "=": lambda a, b: exp.EQ(this=a, expression=b),
    "<>": lambda a, b: exp.NEQ(this=a, expression=b),
    "!=": lambda a, b: exp.NEQ(this=a, expression=b),
    "<": lambda a, b: exp.LT(this=a, expression=b),
    "<=": lambda a, b: exp.LTE(this=a, expression=b),
    ">": lambda a, b: exp.GT(this=a, expression=b),
    ">=": lambda a, b: exp.GTE(this=a, expression=b),
    "+": lambda a, b: exp.Add(this=a, expression=b),
    "-": lambda a, b: exp.Sub(this=a, expression=b),
    "*": lambda a, b: exp.Mul(this=a, expression=b),
    "/": lambda a, b: exp.Div(this=a, expression=b),
    "||": lambda a, b: exp.DPipe(this=a, expression=b),
}

_SYSTEM_QUALIFIERS = frozenset({"pg_catalog", "information_schema"})
_REG_TYPES = frozenset(
    {
        "regclass",
        "regtype",
        "regproc",
        "regprocedure",
        "regoper",
        "regoperator",
        "regnamespace",
        "regrole",
        "regconfig",
        "regdictionary",
        "regcollation",
    }
)
_OID_LIKE = _REG_TYPES | {"oid"}


def normalize(root: exp.Expr) -> exp.Expr:
    """Syntactic PostgreSQL-isms DuckDB does not take: `pg_catalog.fn(...)`,
    `OPERATOR(pg_catalog.~)`, `COLLATE pg_catalog.default`, `::pg_catalog.text`,
    `FROM pg_catalog.unnest(...)`. Returns the (possibly replaced) root."""
    for dot in list(root.find_all(exp.Dot)):
        if _is_system_qualifier(dot.this) and isinstance(dot.expression, exp.Func):
            new = _reparse_function(dot.expression)
            if dot is root:
                root = new
            else:
                dot.replace(new)
    for node in list(root.walk()):
        if isinstance(node, exp.Operator):
            op = str(node.args.get("operator") or "").strip()
            op = op.split(".", 1)[1] if "." in op else op
            build = _OPERATORS.get(op.strip())
            if build is not None:
                node.replace(exp.Paren(this=build(node.this, node.expression)))
        elif isinstance(node, exp.Collate) and _is_default_collation(node.expression):
            node.replace(node.this)
        elif isinstance(node, exp.DataType):
            _normalize_type(node)
        elif (
            isinstance(node, exp.Table)
            and not isinstance(node.this, exp.Identifier)
            and node.db in _SYSTEM_QUALIFIERS
        ):
            node.set("db", None)
    return root


def _is_system_qualifier(e: exp.Expr) -> bool:
    return isinstance(e, exp.Identifier | exp.Var | exp.Column) and e.name in _SYSTEM_QUALIFIERS


def _is_default_collation(e: exp.Expr) -> bool:
    name = e.name if isinstance(e, exp.Column | exp.Identifier | exp.Var | exp.Literal) else ""
    table = e.table if isinstance(e, exp.Column) else ""
    return table == "pg_catalog" or name.lower() in ("default", "c", "posix")


def _reparse_function(fn: exp.Func) -> exp.Expr:
    """`pg_catalog.f(...)` arrives as an Anonymous call; give it sqlglot's own class when it
    has one (e.g. `now()`), so the rest of planning treats both spellings alike."""
    if not isinstance(fn, exp.Anonymous):
        return fn
    name = str(fn.name).lower()
    if name in MACROS or name in _SESSION_FUNCTIONS:
        return exp.Anonymous(this=name, expressions=fn.expressions)
    import sqlglot

    args = list(fn.expressions)
    marks = [f"__pg_arg_{i}" for i in range(len(args))]
    try:
        parsed = sqlglot.parse_one(f"SELECT {name}({', '.join(marks)})", read="postgres")
    except Exception:
        return exp.Anonymous(this=name, expressions=args)
    if not isinstance(parsed, exp.Select) or len(parsed.expressions) != 1:
        return exp.Anonymous(this=name, expressions=args)
    call: exp.Expr = parsed.expressions[0]
    placed = 0
    for col in list(call.find_all(exp.Column)):
        if col.name in marks:
            col.replace(args[marks.index(col.name)])
            placed += 1
    if placed != len(args):
        return exp.Anonymous(this=name, expressions=args)
    return call


_TYPE_REPLACEMENTS = {
    "name": "TEXT",
    "char": "TEXT",
    "int2vector": "SMALLINT[]",
    "oidvector": "BIGINT[]",
    "pg_node_tree": "TEXT",
    "aclitem": "TEXT",
    "regproc": "BIGINT",
}


def _normalize_type(node: exp.DataType) -> None:
    if node.this == exp.DataType.Type.NAME:
        node.replace(exp.DataType.build("TEXT"))
        return
    if node.this != exp.DataType.Type.USERDEFINED:
        return
    kind = node.args.get("kind")
    name: str | None = None
    if isinstance(kind, exp.Dot) and _is_system_qualifier(kind.this):
        name = kind.expression.name
    elif isinstance(kind, exp.Identifier):
        name = kind.name
    if name is None:
        return
    low = name.lower()
    if low in _OID_LIKE:
        node.replace(exp.ObjectIdentifier(this=low.upper()))
    elif low in _TYPE_REPLACEMENTS:
        node.replace(exp.DataType.build(_TYPE_REPLACEMENTS[low], dialect="duckdb"))
    elif isinstance(kind, exp.Dot):
        with contextlib.suppress(Exception):  # else DuckDB rejects the type itself
            node.replace(exp.DataType.build(name, dialect="postgres"))


# -- semantic rewrites (after output columns are named) ------------------------------------

#: Functions whose value is the session's (rewritten to literals).
_SESSION_FUNCTIONS = frozenset(
    {
        "version",
        "current_database",
        "current_catalog",
        "current_schema",
        "current_schemas",
        "current_user",
        "session_user",
        "current_role",
        "pg_backend_pid",
        "pg_table_is_visible",
        "to_regclass",
        "to_regnamespace",
        "pg_has_role",
    }
)


def rewrite(
    root: exp.Expr,
    ctx: PgContext,
    outputs: Callable[[exp.Expr], Iterable[exp.Expr]] = lambda _root: (),
) -> exp.Expr:
    """Session functions -> literals, catalog functions -> macros, reg* casts -> lookups.
    `outputs(root)` gives the query's top-level output expressions (a `::regclass` there prints
    the name, as PostgreSQL's regclass output does). Returns the (possibly replaced) root."""
    nodes = list(root.walk(bfs=False))  # pre-order: parents before children
    for node in nodes:
        if node is not root and node.parent is None:
            continue  # detached by an earlier replacement
        replacement = _rewrite_node(node, ctx)
        if replacement is not None and replacement is not node:
            if node is root:
                root = replacement
            else:
                node.replace(replacement)
    # reg* casts, innermost first (an outer `::text` sees what its operand became)
    for cast in reversed(nodes):
        if not isinstance(cast, exp.Cast) or cast.parent is None or _cast_target(cast) is None:
            continue
        new = _rewrite_cast(cast, ctx)
        if new is not cast:
            cast.replace(new)
    for out in list(outputs(root)):
        node = out.this if isinstance(out, exp.Alias) else out
        reg = node.meta.get("pg_reg") if node.meta else None
        if reg and node.parent is not None:
            node.replace(_reg_output(node.copy(), str(reg)))
    return root


def _rewrite_node(node: exp.Expr, ctx: PgContext) -> exp.Expr | None:
    if isinstance(node, exp.CurrentVersion):
        return _lit(VERSION)
    if isinstance(node, exp.CurrentDatabase):
        return _lit(ctx.database)
    if isinstance(node, exp.CurrentSchema):
        schemas = ctx.schemas()
        return _lit(schemas[0]) if schemas else _cast(exp.Null(), "VARCHAR")
    if isinstance(node, exp.CurrentUser | exp.SessionUser):
        return _lit(ctx.user)
    if isinstance(node, exp.CurrentSchemas):
        return _current_schemas(node.this, ctx)
    # SQL-standard keywords: DuckDB would read `CURRENT_DATE AS "current_date"` (the output
    # name we give it) as a reference to that output column; its function forms are safe
    for keyword, function in _KEYWORD_FUNCTIONS:
        if isinstance(node, keyword) and node.args.get("this") is None:
            return exp.Anonymous(this=function, expressions=[])
    if (
        isinstance(node, exp.Column)
        and not node.table
        and isinstance(node.this, exp.Identifier)
        and not node.this.quoted
        and node.name.lower() == "user"
    ):
        return _lit(ctx.user)
    name = _func_name(node)
    if name is None:
        return None
    assert isinstance(node, exp.Anonymous)
    args = list(node.expressions)
    if name == "version":
        return _lit(VERSION)
    if name in ("current_database", "current_catalog"):
        return _lit(ctx.database)
    if name == "current_schema":
        schemas = ctx.schemas()
        return _lit(schemas[0]) if schemas else _cast(exp.Null(), "VARCHAR")
    if name == "current_schemas":
        return _current_schemas(args[0] if args else exp.Boolean(this=True), ctx)
    if name in ("current_user", "session_user", "current_role"):
        return _lit(ctx.user)
    if name == "pg_backend_pid":
        return _lit(ctx.backend_pid)
    if name == "pg_table_is_visible" and len(args) == 1:
        oids = ctx.visible_relation_oids()
        if not oids:
            return exp.Boolean(this=False)
        return exp.Paren(this=exp.In(this=args[0], expressions=[_lit(o) for o in oids]))
    if (name.startswith("has_") and name.endswith("_privilege")) or name == "pg_has_role":
        return exp.Boolean(this=True)
    if name == "to_regclass" and len(args) == 1:
        arg = args[0]
        if isinstance(arg, exp.Literal) and arg.is_string:
            return _tag(_cast(_lit(ctx.regclass(arg.name)), "INTEGER"), "regclass")
        return _tag(_regclass_lookup(arg, ctx), "regclass")
    if name == "to_regnamespace" and len(args) == 1:
        arg = args[0]
        if isinstance(arg, exp.Literal) and arg.is_string:
            return _tag(_cast(_lit(ctx.namespace_oid(arg.name)), "INTEGER"), "regnamespace")
        return _tag(_macro("_regnamespace", arg, _lit(ctx.database)), "regnamespace")
    if name in ("to_regtype", "to_regrole"):
        return _tag(_macro(name, *args), name[3:])
    if name == "json_build_object":
        return exp.Anonymous(this="json_object", expressions=args)
    if name in MACROS:
        return _macro(name, *args)
    return None


_KEYWORD_FUNCTIONS: tuple[tuple[type[exp.Expr], str], ...] = (
    (exp.CurrentTimestamp, "now"),
    (exp.CurrentDate, "current_date"),
    (exp.CurrentTime, "get_current_time"),
    (exp.Localtimestamp, "current_localtimestamp"),
    (exp.Localtime, "current_localtime"),
)


def _current_schemas(include_implicit: exp.Expr | None, ctx: PgContext) -> exp.Expr:
    full = exp.Array(expressions=[_lit(s) for s in ctx.effective_path()])
    explicit = exp.Array(expressions=[_lit(s) for s in ctx.schemas()])
    if isinstance(include_implicit, exp.Boolean):
        return full if include_implicit.this else explicit
    return exp.Case(ifs=[exp.If(this=include_implicit, true=full)], default=explicit)


def _regclass_lookup(arg: exp.Expr, ctx: PgContext) -> exp.Expr:
    path = exp.Array(expressions=[_lit(s) for s in ctx.effective_path()])
    return _macro("_regclass", arg, _lit(ctx.database), path)


def _cast_target(cast: exp.Cast) -> str | None:
    """The catalog type a cast targets ('regclass', 'oid', 'oid[]', ...) or None."""
    to = cast.args.get("to")
    if isinstance(to, exp.ObjectIdentifier):
        return str(to.name).lower()
    if isinstance(to, exp.DataType):
        if to.this == exp.DataType.Type.ARRAY and to.expressions:
            inner = to.expressions[0]
            if isinstance(inner, exp.ObjectIdentifier):
                return str(inner.name).lower() + "[]"
            return None
        if to.this in (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR):
            inner_meta = cast.this.meta if cast.this is not None else {}
            return "text" if inner_meta.get("pg_reg") else None
    return None


def _is_text_valued(e: exp.Expr) -> bool:
    """Whether `e` is (probably) a name rather than an OID, for `e::regclass`."""
    if isinstance(e, exp.Literal):
        return e.is_string
    if isinstance(e, exp.Column | exp.Null):
        return False
    if isinstance(e, exp.Cast):
        target = _cast_target(e)
        if target is not None:
            return False
        to = e.args.get("to")
        return isinstance(to, exp.DataType) and to.this in (
            exp.DataType.Type.TEXT,
            exp.DataType.Type.VARCHAR,
        )
    return isinstance(e, exp.Parameter | exp.Placeholder | exp.Func | exp.Dot | exp.DPipe)


def _tag(e: exp.Expr, reg: str) -> exp.Expr:
    e.meta["pg_reg"] = reg
    return e


def _rewrite_cast(cast: exp.Cast, ctx: PgContext) -> exp.Expr:
    target = _cast_target(cast)
    arg = cast.this
    if target is None:
        return cast
    if target.endswith("[]"):
        return _cast(arg, "BIGINT[]")
    if target == "text":
        return _reg_output(arg, str(arg.meta["pg_reg"]))
    if target == "oid":
        return _cast(arg, "BIGINT")
    literal = arg.name if isinstance(arg, exp.Literal) and arg.is_string else None
    if target == "regclass":
        if literal is not None:
            oid = ctx.regclass(literal)
            if oid is None:
                raise AdapterError(UNDEFINED_TABLE, f'relation "{literal}" does not exist')
            return _tag(_lit(oid), target)
        if _is_text_valued(arg):
            return _tag(_regclass_lookup(arg, ctx), target)
    elif target == "regtype":
        if literal is not None:
            oid = regtype_oid(literal)
            if oid is None:
                raise AdapterError(UNDEFINED_OBJECT, f'type "{literal}" does not exist')
            return _tag(_lit(oid), target)
        if _is_text_valued(arg):
            return _tag(_macro("to_regtype", arg), target)
    elif target == "regnamespace":
        if literal is not None:
            oid = ctx.namespace_oid(literal)
            if oid is None:
                raise AdapterError("3F000", f'schema "{literal}" does not exist')
            return _tag(_lit(oid), target)
        if _is_text_valued(arg):
            return _tag(_macro("_regnamespace", arg, _lit(ctx.database)), target)
    elif target == "regrole":
        if literal is not None:
            oid = ctx.role_oid(literal)
            if oid is None:
                raise AdapterError(UNDEFINED_OBJECT, f'role "{literal}" does not exist')
            return _tag(_lit(oid), target)
        if _is_text_valued(arg):
            return _tag(_macro("to_regrole", arg), target)
    elif literal is not None and not literal.strip().lstrip("-").isdigit():
        what = "function" if target.startswith("regproc") else "object"
        raise AdapterError("42883", f'{what} "{literal}" does not exist')
    return _tag(_cast(arg, "BIGINT"), target)


def _reg_output(e: exp.Expr, reg: str) -> exp.Expr:
    """The text a reg* value prints as."""
    if reg == "regclass":
        return _macro("_relname", e)
    if reg == "regtype":
        return _macro("format_type", e, exp.Null())
    if reg == "regnamespace":
        return _macro("_nspname", e)
    if reg == "regrole":
        return _macro("pg_get_userbyid", e)
    return _cast(e, "VARCHAR")


# -- relations -------------------------------------------------------------------------------


def is_emulated(schema: str, name: str) -> bool:
    if schema == "information_schema":
        return name in INFO_RELATIONS
    return name in PG_RELATIONS


def emulated_relation(
    table: exp.Table, schema: str, name: str, database: str, *, tableoid: bool = False
) -> exp.Expr:
    """What replaces a reference to the emulated `schema.name` (keeping the table's alias).
    `tableoid`: also provide PostgreSQL's `tableoid` system column (psql's \\dd uses it)."""
    duck_db, duck_schema, duck_name = relation_fqn(schema, name)
    alias = table.args.get("alias")
    alias_expr = (
        alias.copy()
        if isinstance(alias, exp.TableAlias)
        else exp.TableAlias(this=exp.to_identifier(table.alias or name))
    )
    source = exp.Table(
        this=exp.to_identifier(duck_name, quoted=True),
        db=exp.to_identifier(duck_schema, quoted=True),
        catalog=exp.to_identifier(duck_db, quoted=True),
    )
    per_db = is_per_database(schema, name)
    if not per_db and not tableoid:
        source.set("alias", alias_expr)
        return source
    db_col = exp.column(DB_COLUMN, quoted=True)
    projection: list[exp.Expr] = [exp.Star(except_=[db_col.copy()]) if per_db else exp.Star()]
    if tableoid:
        oid = SYSTEM_REL_OIDS.get((schema, name), 0)
        projection.append(exp.alias_(exp.Literal.number(oid), "tableoid"))
    select = exp.select(*projection).from_(source)
    if per_db:
        select = select.where(exp.EQ(this=db_col, expression=exp.Literal.string(database)))
    return exp.Subquery(this=select, alias=alias_expr)


def strip_system_column_qualifiers(root: exp.Expr) -> None:
    """`pg_catalog.pg_class.relname` -> `pg_class.relname` (SQLAlchemy writes these)."""
    for col in root.find_all(exp.Column):
        if col.args.get("db") is not None and col.db in _SYSTEM_QUALIFIERS:
            col.set("db", None)
            col.set("catalog", None)


def fix_function_table_aliases(root: exp.Expr) -> None:
    """`FROM unnest(x) y` / `generate_series(...) s`: PostgreSQL names the single column after
    the alias (`y`, `s`); DuckDB does not unless told. Only done when the query refers to the
    alias as a column (so `a.generate_series` keeps working)."""
    bare = {c.name for c in root.find_all(exp.Column) if not c.table}
    for table in root.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier):
            continue
        alias = table.args.get("alias")
        if not isinstance(alias, exp.TableAlias) or alias.columns or not alias.name:
            continue
        if alias.name in bare:
            alias.set("columns", [exp.to_identifier(alias.name)])


_PG_ARRAY_LITERAL = re.compile(r"^\{([^{}\"':]*)\}$")


def fix_array_literals(root: exp.Expr) -> None:
    """`col = '{0}'`, `'{1,2}'::oid[]` (PostgreSQL array text) -> DuckDB's '[0]', '[1,2]'."""
    sides: list[tuple[exp.Expr, bool]] = []  # (literal?, surely an array)
    for cmp in root.find_all(exp.EQ, exp.NEQ):
        sides += [(cmp.this, False), (cmp.expression, False)]
    for cast in root.find_all(exp.Cast):
        to = cast.args.get("to")
        if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.ARRAY:
            sides.append((cast.this, True))
    for side, surely in sides:
        if isinstance(side, exp.Literal) and side.is_string:
            m = _PG_ARRAY_LITERAL.match(side.name)
            # a bare '{}' compared with something may as well be an empty JSON object
            if m is not None and (surely or m.group(1).strip()):
                side.replace(exp.Literal.string("[" + m.group(1) + "]"))


def check_database(parts: Sequence[str], ctx: PgContext) -> str:
    """The database a `db.pg_catalog.x` reference reads (the session's if not given)."""
    if len(parts) == 3 and parts[0]:
        if parts[0] not in ctx.index.databases:
            raise AdapterError(UNDEFINED_TABLE, f'relation "{".".join(parts)}" does not exist')
        return parts[0]
    return ctx.database
