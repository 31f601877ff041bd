"""Statements that drivers and tools send on their own must parse (as the right kind)."""

from __future__ import annotations

import pytest

from twinstream.sql import ast, infer_param_types, parse_statement

PSQL_DESCRIBE_TABLE = """
SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;
"""

PSQL_TABLE_INFO = """
SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers,
  c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, '',
  c.reltablespace,
  CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END,
  c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '16384';
"""

PSQL_COLUMNS = """
SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation)
     AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16384' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;
"""

PSQL_LIST_TABLES = """
SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
    WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table'
    WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table'
    WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;
"""

PSQL_LIST_DATABASES = """
SELECT
  d.datname as "Name",
  pg_catalog.pg_get_userbyid(d.datdba) as "Owner",
  pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",
  CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' END AS "Locale Provider",
  d.datcollate as "Collate",
  d.datctype as "Ctype",
  NULL as "ICU Rules",
  pg_catalog.array_to_string(d.datacl, E'\\n') AS "Access privileges"
FROM pg_catalog.pg_database d
ORDER BY 1;
"""

JDBC_TYPE_LOOKUP = """
SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid
FROM pg_catalog.pg_type
LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r
           from pg_namespace as ns
           join ( select s.r, (current_schemas(false))[s.r] as nspname
                  from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r
           using ( nspname )
          ) as sp
ON sp.nspoid = typnamespace
WHERE pg_type.oid = $1
ORDER BY sp.r, pg_type.oid DESC
"""

PSYCOPG_TYPE_INFO = """
SELECT
    typname AS name, oid, typarray AS array_oid,
    oid::regtype::text AS regtype, typdelim AS delimiter
FROM pg_type t
WHERE t.oid = 'hstore'::regtype
ORDER BY t.oid
"""

DBEAVER_SCHEMAS = (
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n "
    "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 "
    "AND d.classoid='pg_namespace'::regclass ORDER BY nspname"
)

SELECTS = [
    "SELECT version()",
    "select pg_catalog.version()",
    "SELECT current_schema(), session_user",
    "select current_schema()",
    "SELECT CAST('test plain returns' AS VARCHAR(60)) AS anon_1",
    "SELECT CAST('test unicode returns' AS VARCHAR(60)) AS anon_1",
    "SELECT current_setting('server_version_num')::int",
    "SELECT pg_catalog.set_config('search_path', '', false)",
    "SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns ON typnamespace = ns.oid "
    "WHERE typname = 'hstore'",
    "SELECT t.oid, typname FROM pg_type t WHERE t.oid = ANY($1::oid[])",
    "SELECT 1",
    'select 1 as "x"',
    "SELECT mz_version()",
    "SELECT mz_now()",
    "SELECT * FROM mz_catalog.mz_tables",
    "SELECT name FROM mz_internal.mz_cluster_replica_statuses WHERE status = 'ready'",
    "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE pg_catalog.pg_table_is_visible(c.oid) AND relname = 'x'",
    "SELECT set_config('jit', $1, false)",
    "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
    PSQL_DESCRIBE_TABLE,
    PSQL_TABLE_INFO,
    PSQL_COLUMNS,
    PSQL_LIST_TABLES,
    PSQL_LIST_DATABASES,
    JDBC_TYPE_LOOKUP,
    PSYCOPG_TYPE_INFO,
    DBEAVER_SCHEMAS,
]


@pytest.mark.parametrize("sql", SELECTS, ids=[" ".join(s.split())[:50] for s in SELECTS])
def test_client_selects_parse(sql: str) -> None:
    assert isinstance(parse_statement(sql), ast.Select)


SESSION = [
    ("SET extra_float_digits = 3", ast.Set),
    ("SET application_name = 'PostgreSQL JDBC Driver'", ast.Set),
    ("SET DateStyle = 'ISO'", ast.Set),
    ("SET TIME ZONE 'UTC'", ast.Set),
    ("SET client_encoding TO 'UTF8'", ast.Set),
    ("SHOW transaction_isolation", ast.Show),
    ("SHOW standard_conforming_strings", ast.Show),
    ("show search_path", ast.Show),
    ("SHOW TRANSACTION ISOLATION LEVEL", ast.Show),
    ("BEGIN", ast.Begin),
    ("BEGIN ISOLATION LEVEL READ COMMITTED", ast.Begin),
    ("COMMIT", ast.Commit),
    ("ROLLBACK", ast.Rollback),
    ("DISCARD ALL", ast.Discard),
    ('DECLARE "_pg3_1" CURSOR WITHOUT HOLD FOR SELECT 1', ast.Declare),
    ('FETCH FORWARD 100 FROM "_pg3_1"', ast.Fetch),
    ('CLOSE "_pg3_1"', ast.Close),
]


@pytest.mark.parametrize(("sql", "kind"), SESSION, ids=[s for s, _ in SESSION])
def test_client_session_statements(sql: str, kind: type[ast.Statement]) -> None:
    assert isinstance(parse_statement(sql), kind)


def test_asyncpg_introspection() -> None:
    introspection = pytest.importorskip("asyncpg.introspection")
    for name in ("INTRO_LOOKUP_TYPES", "INTRO_LOOKUP_TYPES_13"):
        query = getattr(introspection, name, None)
        if query is None:
            continue
        stmt = parse_statement(query)
        assert isinstance(stmt, ast.Select)
        assert infer_param_types(stmt) == {1: "oid[]"}
    stmt = parse_statement(introspection.TYPE_BY_NAME)
    assert isinstance(stmt, ast.Select)
    assert infer_param_types(stmt, lambda table, column: "name") == {1: "name", 2: "name"}
