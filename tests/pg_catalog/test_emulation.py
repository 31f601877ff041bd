"""The pg_catalog / information_schema emulation in process: relations, functions, reg* casts,
session functions and output column names, planned as a session plans them and run on DuckDB."""

from __future__ import annotations

from typing import Any

import pytest

from twinstream.adapter import pg_catalog as pc
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.plan import output_names

# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("oid", "typmod", "text"),
    [
        (23, -1, "integer"),
        (23, None, "integer"),
        (1043, 24, "character varying(20)"),
        (1043, -1, "character varying"),
        (1042, 7, "character(3)"),
        (1700, ((10 << 16) | 2) + 4, "numeric(10,2)"),
        (1700, -1, "numeric"),
        (1114, 3, "timestamp(3) without time zone"),
        (1184, -1, "timestamp with time zone"),
        (1015, 24, "character varying(20)[]"),
        (1007, -1, "integer[]"),
        (18, -1, '"char"'),
        (0, -1, "-"),
        (999999, -1, "???"),
        (None, -1, None),
    ],
)
def test_format_type_python(oid: int | None, typmod: int | None, text: str | None) -> None:
    assert pc.format_type(oid, typmod) == text


@pytest.mark.parametrize(
    ("spelling", "oid"),
    [
        ("int4", 23),
        ("integer", 23),
        ("INTEGER", 23),
        ("pg_catalog.int4", 23),
        ("character varying(20)", 1043),
        ("varchar", 1043),
        ("int4[]", 1007),
        ("_int4", 1007),
        ("integer[]", 1007),
        ("timestamp with time zone", 1184),
        ("double precision", 701),
        ('"char"', 18),
        ("jsonb", 3802),
        ("no_such_type", None),
    ],
)
def test_regtype_spellings(spelling: str, oid: int | None) -> None:
    assert pc.regtype_oid(spelling) == oid


def test_column_type_facts() -> None:
    assert pc.type_of_column("varchar(20)") == (1043, 24)
    assert pc.type_of_column("numeric(10,2)") == (1700, ((10 << 16) | 2) + 4)
    assert pc.type_of_column("numeric(10)") == (1700, (10 << 16) + 4)
    assert pc.type_of_column("numeric") == (1700, -1)
    assert pc.type_of_column("int4[]") == (1007, -1)
    assert pc.type_of_column("jsonb") == (3802, -1)


def test_type_oids_agree_with_the_wire() -> None:
    """pg_type's OIDs are the ones RowDescription uses for the same types."""
    from twinstream.adapter import types

    for name, t in types._TYPES.items():
        assert pc.TYPES_BY_NAME[name].oid == t.oid, name
        assert pc.format_type(t.oid, -1) == t.display or name == "bpchar", name


def test_stable_oids_are_distinct_per_kind() -> None:
    assert pc.item_oid("u5") == pc.item_oid("u5")
    assert len({pc.item_oid("u5"), pc.schema_oid("u5"), pc.role_oid("u5")}) == 3
    assert pc.item_oid("u5") != pc.item_oid("s5")
    assert all(0 < o < 2**31 for o in (pc.item_oid("u999999"), pc.item_oid("t999999")))


def test_every_emulated_relation_row_matches_its_columns(catalog: Any) -> None:
    rows = pc.build_rows(catalog.index).tables
    for key in pc.ALL_KEYS:
        _table, cols = pc._duck_table(key)
        for row in rows.get(key, []):
            assert len(row) == len(cols), key


# --------------------------------------------------------------------------- relations


def test_pg_namespace_has_real_and_system_schemas(catalog: Any) -> None:
    names = {r[0] for r in catalog.run("SELECT nspname FROM pg_catalog.pg_namespace")}
    assert names == {
        "public",
        "s2",
        "pg_catalog",
        "information_schema",
        "mz_catalog",
        "mz_internal",
    }
    oid = catalog.one("SELECT oid FROM pg_namespace WHERE nspname = 'pg_catalog'")
    assert oid == pc.PG_CATALOG_OID
    # the other database sees its own schemas
    other = catalog.run("SELECT nspname FROM pg_namespace ORDER BY 1", database="other")
    assert ("s2",) not in other and ("public",) in other


def test_pg_class_relkinds(catalog: Any) -> None:
    rows = catalog.run(
        "SELECT c.relname, c.relkind, n.nspname, c.relam, c.relpersistence, c.relnatts "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('public', 's2') ORDER BY 3, 1"
    )
    assert rows == [
        ("people", "r", "public", pc.HEAP_AM_OID, "p", 6),
        ("people_count", "m", "public", pc.HEAP_AM_OID, "p", 1),
        ("people_name_idx", "i", "public", pc.BTREE_AM_OID, "p", 1),
        ("people_v", "v", "public", 0, "p", 2),
        ("t2", "r", "public", pc.HEAP_AM_OID, "p", 1),
        ("t2", "r", "s2", pc.HEAP_AM_OID, "p", 1),
    ]
    assert catalog.run("SELECT relname FROM pg_class WHERE relname = 'elsewhere'") == []
    assert catalog.run(
        "SELECT relname FROM pg_class WHERE relname = 'elsewhere'", database="other"
    ) == [("elsewhere",)]
    assert catalog.one("SELECT count(*) FROM pg_class WHERE relname LIKE 'mz_%'") == 0


def test_pg_class_columns_psql_reads(catalog: Any) -> None:
    row = catalog.run(
        "SELECT c.relchecks, c.relhasindex, c.relhasrules, c.relhastriggers, "
        "c.relrowsecurity, c.relforcerowsecurity, c.relispartition, c.reloptions, "
        "c.reltablespace, c.reloftype, c.relreplident, c.reltuples, c.relowner "
        "FROM pg_class c WHERE c.relname = 'people'"
    )
    assert row == [(0, False, False, False, False, False, False, None, 0, 0, "d", -1.0, ANY)]


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY: Any = _Any()


def test_pg_attribute_types_and_typmods(catalog: Any) -> None:
    rows = catalog.run(
        "SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.atthasdef, a.attnum, "
        "a.attlen, a.attisdropped, a.attidentity, a.attgenerated, a.attcollation "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = 'people'::regclass ORDER BY attnum"
    )
    assert rows == [
        ("id", 23, -1, True, False, 1, 4, False, "", "", 0),
        ("name", 1043, 24, False, True, 2, -1, False, "", "", 100),
        ("salary", 1700, ((10 << 16) | 2) + 4, False, False, 3, -1, False, "", "", 0),
        ("hired", 1184, -1, False, False, 4, 8, False, "", "", 0),
        ("doc", 3802, -1, False, False, 5, -1, False, "", "", 0),
        ("code", 1042, 7, False, False, 6, -1, False, "", "", 100),
    ]


def test_view_columns_have_their_real_types(catalog: Any) -> None:
    rows = catalog.run(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'people_v'::regclass ORDER BY attnum"
    )
    assert rows == [("id", "integer"), ("salary", "numeric(10,2)")]
    mv = catalog.run(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'people_count'::regclass"
    )
    assert mv == [("bigint",)]


def test_pg_attrdef_and_pg_get_expr(catalog: Any) -> None:
    rows = catalog.run(
        "SELECT a.attname, pg_catalog.pg_get_expr(d.adbin, d.adrelid), "
        "pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) "
        "FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = 'people'::regclass"
    )
    assert rows == [("name", "'anon'", "'anon'")]


def test_pg_type_rows(catalog: Any) -> None:
    rows = catalog.run(
        "SELECT typname, oid, typarray, typelem, typtype, typlen, typcategory, typreceive "
        "FROM pg_catalog.pg_type WHERE typname IN ('int4', '_int4', 'text', 'jsonb', 'uuid') "
        "ORDER BY oid"
    )
    assert rows == [
        ("int4", 23, 1007, 0, "b", 4, "N", "int4recv"),
        ("text", 25, 1009, 0, "b", -1, "S", "textrecv"),
        ("_int4", 1007, 0, 23, "b", -1, "A", "array_recv"),
        ("uuid", 2950, 2951, 0, "b", 16, "U", "uuid_recv"),
        ("jsonb", 3802, 3807, 0, "b", -1, "U", "jsonb_recv"),
    ]
    nsp = catalog.one("SELECT DISTINCT typnamespace FROM pg_type")
    assert nsp == pc.PG_CATALOG_OID


def test_roles_databases_settings(catalog: Any) -> None:
    assert catalog.run("SELECT rolname, rolsuper FROM pg_roles ORDER BY 1") == [
        ("alice", False),
        ("twinstream", True),
    ]
    assert catalog.run("SELECT usename FROM pg_user ORDER BY 1") == [("alice",), ("twinstream",)]
    assert catalog.run(
        "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding) "
        "FROM pg_database ORDER BY 1"
    ) == [("other", "alice", "UTF8"), ("twinstream", "twinstream", "UTF8")]
    assert catalog.one("SELECT setting FROM pg_settings WHERE name = 'server_version_num'") == (
        "150000"
    )
    assert catalog.one("SELECT current_setting('max_identifier_length')") == "63"


def test_empty_relations_clients_join(catalog: Any) -> None:
    for rel in (
        "pg_constraint",
        "pg_index",
        "pg_inherits",
        "pg_trigger",
        "pg_rewrite",
        "pg_policy",
        "pg_statistic_ext",
        "pg_foreign_table",
        "pg_partitioned_table",
        "pg_sequence",
        "pg_publication",
        "pg_enum",
        "pg_range",
        "pg_opclass",
        "pg_proc",
        "pg_description",
        "pg_depend",
    ):
        assert catalog.run(f"SELECT * FROM pg_catalog.{rel}") == [], rel


def test_unknown_catalog_relation_is_42p01(catalog: Any) -> None:
    with pytest.raises(AdapterError) as info:
        catalog.plan("SELECT * FROM pg_catalog.pg_no_such_thing")
    assert info.value.sqlstate == "42P01"
    with pytest.raises(AdapterError):
        catalog.plan("SELECT * FROM information_schema.no_such_thing")


def test_sqlalchemy_style_qualified_columns(catalog: Any) -> None:
    rows = catalog.run(
        "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class "
        "JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = "
        "pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relkind = ANY "
        "(ARRAY['r', 'p', 'f', 'v', 'm']) AND pg_catalog.pg_namespace.nspname = 'public' "
        "AND pg_catalog.pg_class.relpersistence != 't' ORDER BY 1"
    )
    assert rows == [("people",), ("people_count",), ("people_v",), ("t2",)]


# --------------------------------------------------------------------------- information_schema


def test_information_schema_tables_and_columns(catalog: Any) -> None:
    assert catalog.run(
        "SELECT table_catalog, table_schema, table_name, table_type FROM "
        "information_schema.tables WHERE table_schema IN ('public', 's2') ORDER BY 2, 3"
    ) == [
        ("twinstream", "public", "people", "BASE TABLE"),
        ("twinstream", "public", "people_count", "MATERIALIZED VIEW"),
        ("twinstream", "public", "people_v", "VIEW"),
        ("twinstream", "public", "t2", "BASE TABLE"),
        ("twinstream", "s2", "t2", "BASE TABLE"),
    ]
    assert catalog.run(
        "SELECT column_name, data_type, is_nullable, column_default, "
        "character_maximum_length, numeric_precision, numeric_scale, udt_name "
        "FROM information_schema.columns WHERE table_name = 'people' ORDER BY ordinal_position"
    ) == [
        ("id", "integer", "NO", None, None, 32, 0, "int4"),
        ("name", "character varying", "YES", "'anon'", 20, None, None, "varchar"),
        ("salary", "numeric", "YES", None, None, 10, 2, "numeric"),
        ("hired", "timestamp with time zone", "YES", None, None, None, None, "timestamptz"),
        ("doc", "jsonb", "YES", None, None, None, None, "jsonb"),
        ("code", "character", "YES", None, 3, None, None, "bpchar"),
    ]
    assert catalog.run(
        "SELECT schema_name FROM information_schema.schemata ORDER BY 1", database="other"
    ) == [("information_schema",), ("mz_catalog",), ("mz_internal",), ("pg_catalog",), ("public",)]
    assert catalog.run(
        "SELECT table_name, view_definition FROM information_schema.views "
        "WHERE table_schema = 'public'"
    ) == [("people_v", "SELECT id, salary FROM people")]


def test_pg_tables_views_indexes(catalog: Any) -> None:
    assert catalog.run(
        "SELECT schemaname, tablename, tableowner FROM pg_tables "
        "WHERE schemaname <> 'pg_catalog' ORDER BY 1, 2"
    ) == [("public", "people", "twinstream"), ("public", "t2", "twinstream"), ("s2", "t2", "alice")]
    assert catalog.run("SELECT viewname FROM pg_views WHERE schemaname = 'public'") == [
        ("people_v",)
    ]
    assert catalog.run("SELECT matviewname FROM pg_matviews") == [("people_count",)]
    assert catalog.run("SELECT tablename, indexname FROM pg_indexes") == [
        ("people", "people_name_idx")
    ]


# --------------------------------------------------------------------------- functions


def test_session_functions(catalog: Any) -> None:
    row = catalog.run(
        "SELECT version(), pg_catalog.version(), current_database(), current_schema(), "
        "current_schema, current_user, session_user, user, pg_backend_pid(), "
        "pg_catalog.current_database()"
    )
    assert row == [
        (
            pc.VERSION,
            pc.VERSION,
            "twinstream",
            "public",
            "public",
            "twinstream",
            "twinstream",
            "twinstream",
            42,
            "twinstream",
        )
    ]
    assert catalog.one("SELECT current_user", user="alice") == "alice"
    assert catalog.one("SELECT current_database()", database="other") == "other"
    assert catalog.one("SELECT current_schema()", search_path=("nope", "s2")) == "s2"
    assert catalog.one("SELECT current_schema()", search_path=("nope",)) is None
    assert catalog.one("SELECT current_schemas(true)") == ["pg_catalog", "public"]
    assert catalog.one("SELECT current_schemas(false)") == ["public"]


def test_version_is_postgresql_15() -> None:
    assert pc.VERSION == "PostgreSQL 15.0 (twinstream) on x86_64-pc-linux-gnu"


def test_catalog_functions(catalog: Any) -> None:
    assert catalog.run("SELECT pg_get_userbyid(r.oid) FROM pg_roles r ORDER BY 1") == [
        ("alice",),
        ("twinstream",),
    ]
    assert catalog.one("SELECT pg_get_userbyid(12345)") == "unknown (OID=12345)"
    row = catalog.run(
        "SELECT has_table_privilege('people', 'SELECT'), "
        "pg_catalog.has_schema_privilege('twinstream', 'public', 'USAGE'), "
        "pg_has_role('twinstream', 'MEMBER'), pg_encoding_to_char(6), "
        "obj_description(1, 'pg_class'), col_description(1, 1), shobj_description(1, 'x'), "
        "pg_get_serial_sequence('people', 'id'), pg_get_function_result(1), "
        "pg_get_constraintdef(1), pg_get_constraintdef(1, true), pg_type_is_visible(23), "
        "pg_type_is_visible(4242), pg_function_is_visible(1), quote_ident('a b'), "
        "quote_ident('ab'), array_to_string(ARRAY['a', 'b'], ','), "
        "pg_catalog.array_to_string(ARRAY['a', 'b'], ',')"
    )
    flags = (True, True, True, "UTF8")
    nulls = (None,) * 7
    visible = (True, False, True)
    assert row == [(*flags, *nulls, *visible, '"a b"', "ab", "a,b", "a,b")]


def test_format_type_macro(catalog: Any) -> None:
    rows = catalog.run(
        "SELECT format_type(a.atttypid, a.atttypmod), pg_catalog.format_type(a.atttypid, NULL) "
        "FROM pg_attribute a WHERE a.attrelid = 'people'::regclass ORDER BY attnum"
    )
    assert rows == [
        ("integer", "integer"),
        ("character varying(20)", "character varying"),
        ("numeric(10,2)", "numeric"),
        ("timestamp with time zone", "timestamp with time zone"),
        ("jsonb", "jsonb"),
        ("character(3)", "character"),
    ]
    for oid, typmod in ((1015, 24), (1007, -1), (1114, 3), (0, -1), (4242, -1), (1042, -1)):
        got = catalog.one("SELECT format_type($1, $2)", oid, typmod)
        assert got == pc.format_type(oid, typmod), (oid, typmod)


def test_lookup_macros_are_hygienic(catalog: Any) -> None:
    """Macro arguments named like the looked-up table's columns (`oid`) are the caller's."""
    rows = catalog.run(
        "SELECT oid::regclass, relname FROM pg_class WHERE relname IN ('pg_type', 'people') "
        "ORDER BY 2"
    )
    assert rows == [("people", "people"), ("pg_type", "pg_type")]
    rows = catalog.run("SELECT oid::regtype::text, typname FROM pg_type WHERE oid IN (23, 1043)")
    assert sorted(rows) == [("character varying", "varchar"), ("integer", "int4")]
    assert catalog.run("SELECT rolname, pg_get_userbyid(oid) FROM pg_roles ORDER BY 1") == [
        ("alice", "alice"),
        ("twinstream", "twinstream"),
    ]


def test_table_visibility_follows_search_path(catalog: Any) -> None:
    sql = (
        "SELECT n.nspname, pg_table_is_visible(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 't2' ORDER BY 1"
    )
    assert catalog.run(sql) == [("public", True), ("s2", False)]
    assert catalog.run(sql, search_path=("s2", "public")) == [("public", False), ("s2", True)]
    assert catalog.one("SELECT pg_table_is_visible('pg_class'::regclass)") is True


def test_regclass_casts(catalog: Any) -> None:
    people = catalog.one("SELECT 'people'::regclass::oid")
    assert people == pc.item_oid("u1")
    assert catalog.one("SELECT 'public.people'::regclass::oid") == people
    assert catalog.one("SELECT '\"people\"'::regclass::oid") == people
    assert catalog.one("SELECT 'pg_catalog.pg_class'::regclass::oid") == pc.PG_CLASS_OID
    assert catalog.one("SELECT 'pg_class'::regclass::oid") == pc.PG_CLASS_OID
    assert catalog.one("SELECT 't2'::regclass::oid") == pc.item_oid("u4")
    assert catalog.one("SELECT 't2'::regclass::oid", search_path=("s2",)) == pc.item_oid("u5")
    assert catalog.one("SELECT 'people'::regclass") == "people"  # output: the name
    assert catalog.one("SELECT 'people'::regclass::text") == "people"
    assert catalog.one("SELECT CAST('people' AS REGCLASS)::oid") == people
    assert catalog.one("SELECT to_regclass('public.people')") == "people"
    assert catalog.one("SELECT to_regclass('nope')") is None
    assert catalog.one("SELECT to_regclass($1)::oid", "people") == people
    assert catalog.one("SELECT $1::regclass::oid", "s2.t2") == pc.item_oid("u5")
    with pytest.raises(AdapterError) as info:
        catalog.plan("SELECT 'nope'::regclass")
    assert info.value.sqlstate == "42P01"


def test_regtype_and_other_reg_casts(catalog: Any) -> None:
    assert catalog.one("SELECT 'int4'::regtype::oid") == 23
    assert catalog.one("SELECT 'integer'::regtype") == "integer"
    assert catalog.one("SELECT 'character varying'::pg_catalog.regtype::pg_catalog.text") == (
        "character varying"
    )
    assert catalog.one("SELECT 23::regtype::text") == "integer"
    assert catalog.one("SELECT to_regtype('jsonb')::oid") == 3802
    assert catalog.one("SELECT to_regtype($1)::oid", "int8[]") == 1016
    assert catalog.one("SELECT to_regtype('nope')") is None
    assert catalog.one("SELECT 'public'::regnamespace::oid") == pc.schema_oid("u1")
    assert catalog.one("SELECT 'pg_catalog'::regnamespace") == "pg_catalog"
    assert catalog.one("SELECT 'alice'::regrole::oid") == pc.role_oid("u2")
    assert catalog.one("SELECT '16384'::oid") == 16384
    with pytest.raises(AdapterError) as info:
        catalog.plan("SELECT 'nope'::regtype")
    assert info.value.sqlstate == "42704"


def test_psycopg_typeinfo_query(catalog: Any) -> None:
    sql = (
        "SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, "
        "typdelim AS delimiter FROM pg_type t WHERE t.oid = to_regtype($1) ORDER BY t.oid"
    )
    assert catalog.run(sql, "jsonb") == [("jsonb", 3802, 3807, "jsonb", ",")]
    assert catalog.run(sql, "int4") == [("int4", 23, 1007, "integer", ",")]
    assert catalog.run(sql, "nope") == []


def test_asyncpg_introspection_queries(catalog: Any) -> None:
    from asyncpg import introspection

    rows = catalog.run(introspection.TYPE_BY_NAME, "int4", "pg_catalog")
    assert rows == [(23, 0, "b")]
    sql = introspection.INTRO_LOOKUP_TYPES_13.replace("$1::oid[]", "'{23,3802,1007}'::oid[]")
    rows = catalog.run(sql)
    by_oid = {r[0]: r for r in rows}
    assert set(by_oid) == {23, 3802, 1007}
    assert by_oid[1007][2] == "_int4" and by_oid[1007][5] == 23  # name, elemtype
    assert by_oid[1007][12] == "integer"  # elemtype_name


def test_psql_describe_queries(catalog: Any) -> None:
    """The queries psql 15 runs for `\\d people` (condensed), with its PostgreSQL-isms."""
    oid = catalog.one(
        "SELECT c.oid FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(people)$' "
        "COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1"
    )
    row = catalog.run(
        "SELECT c.relchecks, c.relkind, c.relhasindex, false AS relhasoids, "
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from "
        "pg_catalog.unnest(tc.reloptions) x), ', '), CASE WHEN c.reloftype = 0 THEN '' "
        "ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, am.amname "
        "FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_class tc ON "
        "(c.reltoastrelid = tc.oid) LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid) "
        f"WHERE c.oid = '{oid}'"
    )
    assert row == [(0, "r", False, False, None, "", "heap")]
    cols = catalog.run(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), "
        "(SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d "
        "WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), a.attnotnull, "
        "(SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t "
        "WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> "
        "t.typcollation) AS attcollation, a.attidentity, a.attgenerated "
        f"FROM pg_catalog.pg_attribute a WHERE a.attrelid = '{oid}' AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum"
    )
    assert cols[:2] == [
        ("id", "integer", None, True, None, "", ""),
        ("name", "character varying(20)", "'anon'", False, None, "", ""),
    ]
    policies = catalog.run(
        "SELECT pol.polname, CASE WHEN pol.polroles = '{0}' THEN NULL ELSE "
        "pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = "
        "any (pol.polroles) order by 1),',') END FROM pg_catalog.pg_policy pol "
        f"WHERE pol.polrelid = '{oid}' ORDER BY 1"
    )
    assert policies == []


# --------------------------------------------------------------------------- output names


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("SELECT count(*), count(id) FROM people", ("count", "count")),
        ("SELECT 1 AS a, 2 AS a", ("a", "a")),
        ("SELECT string_agg(name, ','), bool_and(id > 0), bool_or(true) FROM people", None),
        ("SELECT now(), current_timestamp, NOW()", ("now", "current_timestamp", "now")),
        ("SELECT current_date, localtimestamp", ("current_date", "localtimestamp")),
        ("SELECT version(), pg_catalog.version()", ("version", "version")),
        ("SELECT current_database(), current_user, session_user", None),
        ("SELECT 'people'::regclass, 23::regtype", ("regclass", "regtype")),
        ("SELECT pg_catalog.format_type(23, NULL)", ("format_type",)),
        ("SELECT unnest(ARRAY[1]), generate_series(1, 2)", ("unnest", "generate_series")),
        ("SELECT row_number() OVER (), trim(' a ')", ("row_number", "btrim")),
        ("SELECT * FROM people", None),
    ],
)
def test_output_names(catalog: Any, sql: str, names: tuple[str, ...] | None) -> None:
    planned = catalog.plan(sql)
    if names is None and "*" in sql:
        assert output_names(planned) is None
        return
    expected = names
    if expected is None:
        expected = {
            "SELECT string_agg(name, ','), bool_and(id > 0), bool_or(true) FROM people": (
                "string_agg",
                "bool_and",
                "bool_or",
            ),
            "SELECT current_database(), current_user, session_user": (
                "current_database",
                "current_user",
                "session_user",
            ),
        }[sql]
    assert output_names(planned) == expected
    # and the plan runs, with the same names DuckDB reports
    cur = catalog.engine.cursor()
    desc = cur.execute(planned.duck_sql).description
    assert tuple(d[0] for d in desc) == expected


def test_now_and_current_timestamp_run(catalog: Any) -> None:
    (row,) = catalog.run("SELECT now(), current_timestamp, current_date, now() IS NOT NULL")
    assert row[0] is not None and row[1] is not None and row[2] is not None and row[3] is True
