"""Errors: SQLSTATE, a message naming what was expected, and a 1-based position."""

from __future__ import annotations

import pytest

from twinstream.sql import (
    FEATURE_NOT_SUPPORTED,
    SYNTAX_ERROR,
    SqlError,
    parse_statement,
    parse_statements,
)

SYNTAX = SYNTAX_ERROR
UNSUPPORTED = FEATURE_NOT_SUPPORTED

# (sql, sqlstate, substring of the message, position or None for "don't check")
ERRORS: list[tuple[str, str, str, int | None]] = [
    ("", SYNTAX, "empty query", 1),
    (" ;; -- c", SYNTAX, "empty query", 1),
    ("SELECT 1; SELECT 2", SYNTAX, "multiple commands", 11),
    ("SELEC 1", SYNTAX, "Expected a statement (SELECT, INSERT, UPDATE, DELETE, CREATE", 1),
    ("42", SYNTAX, "Expected a statement", 1),
    ("SELECT 'abc", SYNTAX, "unterminated quoted string", 8),
    ('SELECT "abc', SYNTAX, "unterminated quoted identifier", 8),
    ('SELECT ""', SYNTAX, "zero-length delimited identifier", 8),
    ("SELECT 1 /* x /* y */", SYNTAX, "unterminated /* comment", 10),
    ("SELECT $$abc", SYNTAX, "unterminated dollar-quoted string", 8),
    ("SELECT E'\\u12'", SYNTAX, "invalid Unicode escape", None),
    # errors inside embedded queries come from sqlglot, positioned in the original text
    ("SELECT 1 FROM", SYNTAX, 'syntax error at or near "FROM"', 10),
    ("SELECT * FROM t WHERE", SYNTAX, "syntax error at end of input", 17),
    ("SELECT a b c FROM t", SYNTAX, 'at or near "c"', 12),
    ("CREATE VIEW v AS SELECT (1", SYNTAX, "syntax error", None),
    ("INSERT INTO t VALUES (1,)", SYNTAX, 'syntax error at or near ")"', 25),
    ("SELECT a, FROM t", SYNTAX, 'syntax error at or near "FROM"', 11),
    ("SELECT f(1,) FROM t", SYNTAX, 'syntax error at or near ")"', 12),
    ("SELECT 1,", SYNTAX, "syntax error at end of input", 10),
    # shells
    ("CREATE TABLE", SYNTAX, "Expected table name, found end of input", 13),
    ("CREATE TABLE t", SYNTAX, 'Expected "(" and column definitions', 15),
    ("CREATE TABLE t (a)", SYNTAX, 'Expected type name, found ")"', 18),
    ("CREATE TABLE t (a int,)", SYNTAX, "Expected column name", 23),
    ("CREATE TABLE t (a int FOO)", SYNTAX, 'Expected NOT NULL, NULL, DEFAULT, "," or ")"', 23),
    ("CREATE TABLE a.b.c.d (x int)", SYNTAX, "improper qualified name", 14),
    ("CREATE SCHEMA a.b.c", SYNTAX, "improper qualified name", 15),
    ("CREATE DATABASE a.b", SYNTAX, "Expected an unqualified database name", 17),
    ("CREATE FOO", SYNTAX, "Expected TABLE, VIEW, MATERIALIZED VIEW", 8),
    ("CREATE VIEW v SELECT 1", SYNTAX, 'Expected AS, found "select"', 15),
    ("CREATE INDEX i ON t", SYNTAX, 'Expected "(" and index keys', 20),
    ("CREATE CLUSTER c (SIZE =)", SYNTAX, "Expected a value for option SIZE", 25),
    ("CREATE CLUSTER REPLICA r SIZE '1'", SYNTAX, "cluster_name.replica_name", 24),
    ("CREATE SOURCE s FROM FILE 'x'", SYNTAX, "Expected LOAD GENERATOR, WEBHOOK, POSTGRES", 22),
    ("CREATE SOURCE s FROM WEBHOOK BODY FORMAT XML", SYNTAX, "JSON, JSON ARRAY, TEXT", 42),
    ("CREATE CONNECTION c TO (HOST 'h')", SYNTAX, "Expected connection type", 24),
    ("DROP FOO x", SYNTAX, "Expected DATABASE, SCHEMA, TABLE", 6),
    ("DROP TABLE", SYNTAX, "Expected table name, found end of input", 11),
    ("DROP CLUSTER REPLICA r", SYNTAX, "Expected cluster_name.replica_name", 22),
    ("DROP TABLE t t2", SYNTAX, 'Expected end of statement, found "t2"', 14),
    ("INSERT INTO t", SYNTAX, "Expected VALUES, a query or DEFAULT VALUES", 14),
    ("INSERT t VALUES (1)", SYNTAX, 'Expected INTO, found "t"', 8),
    ("UPDATE t a = 1", SYNTAX, 'Expected SET, found "="', 12),
    ("SET", SYNTAX, "Expected configuration parameter name", 4),
    ("SET x", SYNTAX, 'Expected TO or "="', 6),
    ("SET x =", SYNTAX, "Expected a value", 8),
    ("SHOW", SYNTAX, "Expected configuration parameter name", 5),
    ("SHOW CREATE FOO x", SYNTAX, "after SHOW CREATE", 13),
    ("SUBSCRIBE", SYNTAX, "Expected object name or (query)", 10),
    ("SUBSCRIBE t AS OF now()", SYNTAX, "Expected a timestamp (integer) after AS OF", 19),
    ("SUBSCRIBE t ENVELOPE FOO", SYNTAX, "Expected UPSERT or DEBEZIUM", 22),
    ("COPY t", SYNTAX, "Expected FROM STDIN or TO STDOUT", 7),
    ("COPY (SELECT 1) FROM STDIN", SYNTAX, "Expected a table name for COPY ... FROM", None),
    ("COPY (DROP TABLE t) TO STDOUT", SYNTAX, "Expected a query or SUBSCRIBE", 7),
    ("BEGIN ISOLATION LEVEL FOO", SYNTAX, "Expected SERIALIZABLE, STRICT SERIALIZABLE", 23),
    ("BEGIN FOO", SYNTAX, "Expected ISOLATION LEVEL, READ ONLY", 7),
    ("FETCH", SYNTAX, "Expected cursor name", 6),
    ("DECLARE c CURSOR FOR DELETE FROM t", SYNTAX, "Expected SELECT or SUBSCRIBE", 22),
    ("DISCARD EVERYTHING", SYNTAX, "Expected ALL, PLANS, SEQUENCES or TEMP", 9),
    ("EXPLAIN DROP TABLE t", SYNTAX, "Expected a query, CREATE VIEW", 9),
    ("EXPLAIN AS YAML FOR SELECT 1", SYNTAX, "Expected TEXT, JSON, VERBOSE TEXT or DOT", 12),
    ("ALTER SYSTEM FOO", SYNTAX, "Expected SET or RESET after ALTER SYSTEM", 14),
    ("ALTER TABLE t", SYNTAX, "Expected RENAME TO, SWAP WITH, SET or RESET", 14),
    ("PREPARE p AS PREPARE q AS SELECT 1", SYNTAX, "Expected a preparable statement", 1),
    ("CREATE CLUSTER c (REPLICATION FACTOR = 'two')", SYNTAX, "must be an integer", None),
    ("SELECT 1 AS OF 5 x", SYNTAX, 'Expected end of statement, found "x"', 18),
    # valid PostgreSQL (or Materialize), not supported here
    ("SELECT * FROM t AS OF now()", UNSUPPORTED, "AS OF with anything but an integer", 23),
    ("CREATE TEMP INDEX i ON t (a)", UNSUPPORTED, "CREATE TEMPORARY for CREATE INDEX", 1),
    ("TRUNCATE t", UNSUPPORTED, "TRUNCATE is not supported", 1),
    ("VACUUM", UNSUPPORTED, "VACUUM is not supported", 1),
    ("LISTEN ch", UNSUPPORTED, "LISTEN is not supported", 1),
    ("NOTIFY ch", UNSUPPORTED, "NOTIFY is not supported", 1),
    ("GRANT SELECT ON t TO r", UNSUPPORTED, "GRANT is not supported", 1),
    ("SAVEPOINT s", UNSUPPORTED, "SAVEPOINT is not supported", 1),
    ("RELEASE SAVEPOINT s", UNSUPPORTED, "RELEASE SAVEPOINT is not supported", 1),
    ("ROLLBACK TO SAVEPOINT s", UNSUPPORTED, "ROLLBACK TO SAVEPOINT", 10),
    ("COMMIT AND CHAIN", UNSUPPORTED, "AND CHAIN is not supported", 8),
    ("COMMIT PREPARED 'x'", UNSUPPORTED, "two-phase commit", 8),
    ("PREPARE TRANSACTION 'x'", UNSUPPORTED, "PREPARE TRANSACTION is not supported", 9),
    ("DO $$ BEGIN END $$", UNSUPPORTED, "DO is not supported", 1),
    (
        "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
        UNSUPPORTED,
        "CREATE FUNCTION is not supported",
        1,
    ),
    ("CREATE ROLE r", UNSUPPORTED, "CREATE ROLE is not supported", 1),
    ("CREATE SEQUENCE s", UNSUPPORTED, "CREATE SEQUENCE is not supported", 1),
    ("CREATE EXTENSION hstore", UNSUPPORTED, "CREATE EXTENSION is not supported", 1),
    (
        "CREATE SINK s FROM t INTO KAFKA CONNECTION k (TOPIC 't')",
        UNSUPPORTED,
        "CREATE SINK is not supported",
        1,
    ),
    ("CREATE UNLOGGED TABLE t (a int)", UNSUPPORTED, "CREATE UNLOGGED TABLE", 8),
    ("CREATE TABLE t AS SELECT 1", UNSUPPORTED, "CREATE TABLE ... AS", 16),
    ("CREATE TABLE t (a int UNIQUE)", UNSUPPORTED, "column constraint UNIQUE", 23),
    ("CREATE TABLE t (a int REFERENCES u)", UNSUPPORTED, "column constraint REFERENCES", 23),
    ("CREATE TABLE t (a int, UNIQUE (a))", UNSUPPORTED, "table constraint UNIQUE", 24),
    ("CREATE TABLE t (a int list)", UNSUPPORTED, "list types", 23),
    ("CREATE TABLE t (a map[text=>int])", UNSUPPORTED, "map types", 19),
    ("CREATE OR REPLACE TABLE t (a int)", UNSUPPORTED, "CREATE OR REPLACE for CREATE TABLE", 1),
    ("CREATE TEMP MATERIALIZED VIEW v AS SELECT 1", UNSUPPORTED, "CREATE TEMPORARY", 1),
    ("CREATE UNIQUE INDEX i ON t (a)", UNSUPPORTED, "CREATE UNIQUE INDEX", 8),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", UNSUPPORTED, "CREATE INDEX CONCURRENTLY", 14),
    ("CREATE INDEX i ON t USING btree (a)", UNSUPPORTED, "index method 'btree'", 27),
    ("CREATE INDEX i ON t (a) WHERE a > 1", UNSUPPORTED, "CREATE INDEX ... WHERE", 25),
    ("CREATE SOURCE s FROM MYSQL CONNECTION c", UNSUPPORTED, "FROM MYSQL", 22),
    ("CREATE DATABASE d OWNER r", UNSUPPORTED, "CREATE DATABASE options", 19),
    ("DROP ROLE r", UNSUPPORTED, "DROP ROLE is not supported", 6),
    ("DROP OWNED BY r", UNSUPPORTED, "DROP OWNED is not supported", 6),
    ("DROP INDEX CONCURRENTLY i", UNSUPPORTED, "DROP INDEX CONCURRENTLY", 12),
    ("ALTER TABLE t ADD COLUMN x int", UNSUPPORTED, "ALTER TABLE ... ADD", 15),
    ("ALTER ROLE r SUPERUSER", UNSUPPORTED, "ALTER ROLE is not supported", 7),
    ("ALTER VIEW a SWAP WITH b", UNSUPPORTED, "ALTER VIEW ... SWAP", 1),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", UNSUPPORTED, "ON CONFLICT", 26),
    ("INSERT INTO t AS x VALUES (1)", UNSUPPORTED, "INSERT ... AS alias", 15),
    ("UPDATE t SET a = 1 FROM u", UNSUPPORTED, "UPDATE ... FROM", 20),
    ("UPDATE t SET (a, b) = (1, 2)", UNSUPPORTED, "multiple-column UPDATE", 14),
    ("UPDATE t SET a = 1 WHERE CURRENT OF c", UNSUPPORTED, "WHERE CURRENT OF", 26),
    ("DELETE FROM t USING u", UNSUPPORTED, "DELETE ... USING", 15),
    (
        "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
        UNSUPPORTED,
        "WITH ... INSERT/UPDATE/DELETE",
        1,
    ),
    ("SELECT 1 INTO t2", UNSUPPORTED, "SELECT ... INTO", 1),
    ("COPY t FROM '/tmp/x'", UNSUPPORTED, "COPY FROM anything but STDIN", 13),
    ("COPY t TO PROGRAM 'x'", UNSUPPORTED, "COPY TO anything but STDOUT", 11),
    ("COPY t FROM STDIN WHERE a > 1", UNSUPPORTED, "COPY ... WHERE", 19),
    ("FETCH BACKWARD 1 c", UNSUPPORTED, "FETCH BACKWARD", 7),
    ("FETCH ABSOLUTE 1 c", UNSUPPORTED, "FETCH ABSOLUTE", 7),
    ("DECLARE c BINARY CURSOR FOR SELECT 1", UNSUPPORTED, "DECLARE ... BINARY", 11),
    ("DECLARE c BINARY CURSOR FOR SELECT 1", UNSUPPORTED, "DECLARE ... BINARY", 11),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", UNSUPPORTED, "WITH HOLD", 18),
    ("EXPLAIN ANALYZE SELECT 1", UNSUPPORTED, "EXPLAIN ANALYZE", 17),
    ("EXPLAIN (ANALYZE) SELECT 1", UNSUPPORTED, "EXPLAIN ANALYZE", None),
    ("SET ROLE r", UNSUPPORTED, "SET ROLE", 5),
    ("SET SESSION AUTHORIZATION u", UNSUPPORTED, "SET SESSION AUTHORIZATION", 5),
    ("SET TRANSACTION SNAPSHOT 'x'", UNSUPPORTED, "SET TRANSACTION SNAPSHOT", 17),
    ("SHOW FULL TABLES", UNSUPPORTED, "SHOW FULL", 6),
]


@pytest.mark.parametrize(
    ("sql", "sqlstate", "message", "position"), ERRORS, ids=[e[0][:50] for e in ERRORS]
)
def test_errors(sql: str, sqlstate: str, message: str, position: int | None) -> None:
    with pytest.raises(SqlError) as info:
        parse_statement(sql)
    error = info.value
    assert (error.sqlstate, message in error.message) == (sqlstate, True), error.message
    if position is not None:
        assert error.position == position, error.message
    assert str(error) == error.message


def test_parse_statements_positions_are_relative_to_the_whole_string() -> None:
    with pytest.raises(SqlError) as info:
        parse_statements("SELECT 1;\nDROP TABLE")
    assert info.value.position == len("SELECT 1;\nDROP TABLE") + 1
    with pytest.raises(SqlError) as info:
        parse_statements("SELECT 1;\nSELECT 1 FROM")
    assert info.value.position == len("SELECT 1;\nSELECT 1 ") + 1


def test_shifted() -> None:
    error = SqlError(SYNTAX, "x", 3)
    assert error.shifted(10).position == 13
    assert SqlError(SYNTAX, "x").shifted(10).position is None
