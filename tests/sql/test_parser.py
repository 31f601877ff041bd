"""parse_statement: a table of every statement kind, with the exact AST expected."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from twinstream.sql import ast, parse_statement, parse_statements, parse_type_name
from twinstream.sql import errors as sql_errors
from twinstream.sql.ast import (
    ColumnDef,
    ObjectType,
    Option,
    QualifiedName,
    SecretRef,
    TypeName,
)


def q(sql: str) -> exp.Expr:
    """What stock sqlglot makes of an embedded query or expression."""
    return sqlglot.parse_one(sql, read="postgres")


def n(*parts: str) -> QualifiedName:
    return QualifiedName(parts)


def rows(values_sql: str) -> ast.ValuesRows:
    values = q(values_sql)
    return ast.ValuesRows(tuple(tuple(row.expressions) for row in values.expressions))


def T(name: str, *mods: int, dims: int = 0) -> TypeName:
    return TypeName(name, mods, dims)


SELECT_CASES: list[tuple[str, ast.Statement]] = [
    ("SELECT 1", ast.Select(q("SELECT 1"))),
    ("select 1;", ast.Select(q("SELECT 1"))),
    ("-- hello\nSELECT 1 /* tail */", ast.Select(q("SELECT 1 /* tail */"))),
    ("SELECT version()", ast.Select(q("SELECT version()"))),
    ("VALUES (1), (2)", ast.Select(q("VALUES (1), (2)"))),
    ("TABLE t", ast.Select(q("TABLE t"))),
    ("(SELECT 1) UNION ALL (SELECT 2)", ast.Select(q("(SELECT 1) UNION ALL (SELECT 2)"))),
    ("WITH x AS (SELECT 1) SELECT * FROM x", ast.Select(q("WITH x AS (SELECT 1) SELECT * FROM x"))),
    ("SELECT * FROM t AS OF 100", ast.Select(q("SELECT * FROM t"), as_of=100)),
    (
        "SELECT * FROM t AS OF AT LEAST 7",
        ast.Select(q("SELECT * FROM t"), as_of=7, as_of_at_least=True),
    ),
    ("SELECT 1 AS of", ast.Select(q("SELECT 1 AS of"))),
    ("SELECT a AS of FROM t", ast.Select(q("SELECT a AS of FROM t"))),
    ("SELECT a AS of, b FROM t", ast.Select(q("SELECT a AS of, b FROM t"))),
    ("SELECT (SELECT 1 AS of) AS OF 5", ast.Select(q("SELECT (SELECT 1 AS of)"), as_of=5)),
    ("SELECT $1::int", ast.Select(q("SELECT $1::int"))),
]

WRITE_CASES: list[tuple[str, ast.Statement]] = [
    (
        "INSERT INTO t VALUES (1, 'a'), (2, DEFAULT)",
        ast.Insert(n("t"), (), rows("VALUES (1, 'a'), (2, DEFAULT)")),
    ),
    (
        'INSERT INTO "S".t (A, "B") VALUES ($1, $2)',
        ast.Insert(n("S", "t"), ("a", "B"), rows("VALUES ($1, $2)")),
    ),
    (
        "INSERT INTO t SELECT * FROM u RETURNING *, a + 1 AS b",
        ast.Insert(
            n("t"),
            (),
            ast.QuerySource(q("SELECT * FROM u")),
            tuple(q("SELECT *, a + 1 AS b").expressions),
        ),
    ),
    ("INSERT INTO t DEFAULT VALUES", ast.Insert(n("t"), (), ast.DefaultValues())),
    (
        "INSERT INTO t (SELECT 1)",
        ast.Insert(n("t"), (), ast.QuerySource(q("(SELECT 1)"))),
    ),
    (
        "INSERT INTO t VALUES (1) ORDER BY 1",
        ast.Insert(n("t"), (), ast.QuerySource(q("VALUES (1) ORDER BY 1"))),
    ),
    (
        "UPDATE t SET a = a + 1, b = DEFAULT WHERE c = $1 RETURNING a",
        ast.Update(
            n("t"),
            None,
            (ast.Assignment("a", q("a + 1")), ast.Assignment("b", exp.Var(this="DEFAULT"))),
            q("c = $1"),
            (q("a"),),
        ),
    ),
    (
        "UPDATE db.s.t AS x SET a = 1",
        ast.Update(n("db", "s", "t"), "x", (ast.Assignment("a", q("1")),)),
    ),
    ("UPDATE t x SET a = 1", ast.Update(n("t"), "x", (ast.Assignment("a", q("1")),))),
    (
        "UPDATE t SET a = b IS DISTINCT FROM c WHERE d = 1",
        ast.Update(n("t"), None, (ast.Assignment("a", q("b IS DISTINCT FROM c")),), q("d = 1")),
    ),
    ("DELETE FROM t", ast.Delete(n("t"), None)),
    (
        "DELETE FROM t AS x WHERE x.a IN (SELECT 1) RETURNING x.a",
        ast.Delete(n("t"), "x", q("x.a IN (SELECT 1)"), (q("x.a"),)),
    ),
]

CREATE_CASES: list[tuple[str, ast.Statement]] = [
    (
        "CREATE TABLE t (a int NOT NULL, b text DEFAULT 'x', c numeric(10, 2) DEFAULT 1 NOT NULL)",
        ast.CreateTable(
            n("t"),
            (
                ColumnDef("a", T("int4"), nullable=False),
                ColumnDef("b", T("text"), default=q("'x'")),
                ColumnDef("c", T("numeric", 10, 2), nullable=False, default=q("1")),
            ),
        ),
    ),
    (
        'CREATE TEMP TABLE IF NOT EXISTS "T" (x bool NULL, y int[] DEFAULT NULL)',
        ast.CreateTable(
            n("T"),
            (ColumnDef("x", T("bool")), ColumnDef("y", T("int4", dims=1), default=q("NULL"))),
            if_not_exists=True,
            temporary=True,
        ),
    ),
    ("CREATE TABLE e ()", ast.CreateTable(n("e"), ())),
    (
        "CREATE TABLE t (a int) WITH (RETAIN HISTORY FOR '1h')",
        ast.CreateTable(
            n("t"), (ColumnDef("a", T("int4")),), options=(Option("retain history", "1h"),)
        ),
    ),
    (
        "CREATE TABLE t2 FROM SOURCE pg (REFERENCE public.t)",
        ast.CreateTableFromSource(
            n("t2"), n("pg"), options=(Option("reference", n("public", "t")),)
        ),
    ),
    ("CREATE VIEW v AS SELECT 1", ast.CreateView(n("v"), q("SELECT 1"))),
    (
        "CREATE OR REPLACE TEMPORARY VIEW IF NOT EXISTS s.v (a, b) AS SELECT 1, 2",
        ast.CreateView(
            n("s", "v"),
            q("SELECT 1, 2"),
            ("a", "b"),
            or_replace=True,
            temporary=True,
            if_not_exists=True,
        ),
    ),
    (
        "CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM t",
        ast.CreateMaterializedView(n("mv"), q("SELECT count(*) FROM t")),
    ),
    (
        "CREATE OR REPLACE MATERIALIZED VIEW IF NOT EXISTS d.s.mv (c) IN CLUSTER c1 "
        "WITH (ASSERT NOT NULL c) AS SELECT 1",
        ast.CreateMaterializedView(
            n("d", "s", "mv"),
            q("SELECT 1"),
            ("c",),
            in_cluster="c1",
            or_replace=True,
            if_not_exists=True,
            options=(Option("assert not null", "c"),),
        ),
    ),
    (
        "CREATE INDEX i IN CLUSTER c ON t (a, b + 1)",
        ast.CreateIndex("i", n("t"), (q("a"), q("b + 1")), in_cluster="c"),
    ),
    ("CREATE INDEX ON t (a)", ast.CreateIndex(None, n("t"), (q("a"),))),
    (
        "CREATE INDEX IF NOT EXISTS i ON s.t USING ARRANGEMENT (lower(a))",
        ast.CreateIndex("i", n("s", "t"), (q("lower(a)"),), if_not_exists=True),
    ),
    ("CREATE DEFAULT INDEX ON t", ast.CreateIndex(None, n("t"), default_index=True)),
    (
        "CREATE DEFAULT INDEX IN CLUSTER c ON mv",
        ast.CreateIndex(None, n("mv"), in_cluster="c", default_index=True),
    ),
    ("CREATE DATABASE d", ast.CreateDatabase("d")),
    ('CREATE DATABASE IF NOT EXISTS "D"', ast.CreateDatabase("D", if_not_exists=True)),
    ("CREATE SCHEMA s", ast.CreateSchema(n("s"))),
    ("CREATE SCHEMA IF NOT EXISTS d.s", ast.CreateSchema(n("d", "s"), if_not_exists=True)),
    (
        "CREATE CLUSTER c (SIZE = '25cc', REPLICATION FACTOR = 2)",
        ast.CreateCluster(
            "c",
            size="25cc",
            replication_factor=2,
            options=(Option("size", "25cc"), Option("replication factor", 2)),
        ),
    ),
    (
        "CREATE CLUSTER c SIZE '1'",
        ast.CreateCluster("c", size="1", options=(Option("size", "1"),)),
    ),
    (
        "CREATE CLUSTER c REPLICAS (r1 (SIZE = '1'), r2 (SIZE '2'))",
        ast.CreateCluster(
            "c",
            replicas=(
                ast.ReplicaDef("r1", "1", (Option("size", "1"),)),
                ast.ReplicaDef("r2", "2", (Option("size", "2"),)),
            ),
        ),
    ),
    (
        "CREATE CLUSTER c (MANAGED = false, REPLICAS (r1 (SIZE '1')))",
        ast.CreateCluster(
            "c",
            replicas=(ast.ReplicaDef("r1", "1", (Option("size", "1"),)),),
            options=(Option("managed", False),),
        ),
    ),
    (
        "CREATE CLUSTER REPLICA c.r SIZE = '1'",
        ast.CreateClusterReplica("c", "r", "1", (Option("size", "1"),)),
    ),
    (
        "CREATE CLUSTER REPLICA c.r (SIZE = 'xsmall', INTROSPECTION INTERVAL = '1s')",
        ast.CreateClusterReplica(
            "c",
            "r",
            "xsmall",
            (Option("size", "xsmall"), Option("introspection interval", "1s")),
        ),
    ),
    ("CREATE SECRET s AS 'hunter2'", ast.CreateSecret(n("s"), q("'hunter2'"))),
    (
        "CREATE SECRET IF NOT EXISTS s AS decode('aGk=', 'base64')",
        ast.CreateSecret(n("s"), q("decode('aGk=', 'base64')"), if_not_exists=True),
    ),
    (
        "CREATE CONNECTION pg TO POSTGRES (HOST 'h', PORT 5432, USER 'u', "
        "PASSWORD SECRET s, DATABASE 'd', SSL MODE 'require')",
        ast.CreateConnection(
            n("pg"),
            "postgres",
            (
                Option("host", "h"),
                Option("port", 5432),
                Option("user", "u"),
                Option("password", SecretRef(n("s"))),
                Option("database", "d"),
                Option("ssl mode", "require"),
            ),
        ),
    ),
    (
        "CREATE CONNECTION IF NOT EXISTS k TO KAFKA (BROKERS ('a:9092', 'b:9092'), "
        "SSH TUNNEL tun) WITH (VALIDATE = false)",
        ast.CreateConnection(
            n("k"),
            "kafka",
            (Option("brokers", ("a:9092", "b:9092")), Option("ssh tunnel", "tun")),
            if_not_exists=True,
            with_options=(Option("validate", False),),
        ),
    ),
    (
        "CREATE CONNECTION t TO SSH TUNNEL (HOST 'bastion', PORT 22, USER 'mz')",
        ast.CreateConnection(
            n("t"),
            "ssh tunnel",
            (Option("host", "bastion"), Option("port", 22), Option("user", "mz")),
        ),
    ),
]

SOURCE_CASES: list[tuple[str, ast.Statement]] = [
    (
        "CREATE SOURCE counter FROM LOAD GENERATOR COUNTER",
        ast.CreateSource(n("counter"), ast.LoadGenerator("counter")),
    ),
    (
        "CREATE SOURCE IF NOT EXISTS c IN CLUSTER q FROM LOAD GENERATOR COUNTER "
        "(TICK INTERVAL '100ms', UP TO 1000)",
        ast.CreateSource(
            n("c"),
            ast.LoadGenerator("counter", (Option("tick interval", "100ms"), Option("up to", 1000))),
            in_cluster="q",
            if_not_exists=True,
        ),
    ),
    (
        "CREATE SOURCE auction FROM LOAD GENERATOR AUCTION FOR ALL TABLES",
        ast.CreateSource(n("auction"), ast.LoadGenerator("auction", (), ast.ForAllTables())),
    ),
    (
        "CREATE SOURCE kv FROM LOAD GENERATOR KEY VALUE (KEYS 16) ENVELOPE UPSERT",
        ast.CreateSource(
            n("kv"), ast.LoadGenerator("key value", (Option("keys", 16),)), envelope="upsert"
        ),
    ),
    (
        "CREATE SOURCE wh FROM WEBHOOK BODY FORMAT JSON",
        ast.CreateSource(n("wh"), ast.Webhook("json")),
    ),
    (
        "CREATE SOURCE wh IN CLUSTER c FROM WEBHOOK BODY FORMAT JSON ARRAY INCLUDE HEADERS",
        ast.CreateSource(n("wh"), ast.Webhook("json array", ()), in_cluster="c"),
    ),
    (
        "CREATE SOURCE wh FROM WEBHOOK BODY FORMAT TEXT "
        "INCLUDE HEADER 'x-id' AS id BYTES INCLUDE HEADERS (NOT 'authorization', 'x-a') "
        "CHECK (WITH (HEADERS, BODY AS b BYTES, SECRET s AS k) "
        "constant_time_eq(headers->>'x-sig', hmac(b, k, 'sha256')))",
        ast.CreateSource(
            n("wh"),
            ast.Webhook(
                "text",
                ("!authorization", "x-a"),
                (ast.WebhookHeader("x-id", "id", bytes=True),),
                ast.WebhookCheck(
                    (
                        ast.WebhookCheckOption("headers"),
                        ast.WebhookCheckOption("body", "b", bytes=True),
                        ast.WebhookCheckOption("secret", "k", secret=n("s")),
                    ),
                    q("constant_time_eq(headers->>'x-sig', hmac(b, k, 'sha256'))"),
                ),
            ),
        ),
    ),
    (
        "CREATE SOURCE wh FROM WEBHOOK BODY FORMAT BYTES CHECK (length(body) > 0)",
        ast.CreateSource(
            n("wh"), ast.Webhook("bytes", check=ast.WebhookCheck((), q("length(body) > 0")))
        ),
    ),
    (
        "CREATE SOURCE pg IN CLUSTER c FROM POSTGRES CONNECTION pgc (PUBLICATION 'mz_source') "
        "FOR TABLES (t1, s.t2 AS x)",
        ast.CreateSource(
            n("pg"),
            ast.PostgresSourceConnector(
                n("pgc"),
                (Option("publication", "mz_source"),),
                ast.ForTables(
                    (ast.TableReference(n("t1")), ast.TableReference(n("s", "t2"), n("x")))
                ),
            ),
            in_cluster="c",
        ),
    ),
    (
        "CREATE SOURCE pg FROM POSTGRES CONNECTION pgc "
        "(PUBLICATION 'p', TEXT COLUMNS (s.t.a, s.t.b)) FOR ALL TABLES",
        ast.CreateSource(
            n("pg"),
            ast.PostgresSourceConnector(
                n("pgc"),
                (
                    Option("publication", "p"),
                    Option("text columns", (n("s", "t", "a"), n("s", "t", "b"))),
                ),
                ast.ForAllTables(),
            ),
        ),
    ),
    (
        "CREATE SOURCE pg FROM POSTGRES CONNECTION pgc (PUBLICATION 'p') FOR SCHEMAS (a, b)",
        ast.CreateSource(
            n("pg"),
            ast.PostgresSourceConnector(
                n("pgc"), (Option("publication", "p"),), ast.ForSchemas(("a", "b"))
            ),
        ),
    ),
    (
        "CREATE SOURCE k FROM KAFKA CONNECTION kc (TOPIC 't') KEY FORMAT TEXT VALUE FORMAT JSON "
        "INCLUDE KEY AS k, PARTITION ENVELOPE UPSERT EXPOSE PROGRESS AS k_progress "
        "WITH (RETAIN HISTORY = FOR '1h')",
        ast.CreateSource(
            n("k"),
            ast.KafkaSourceConnector(n("kc"), (Option("topic", "t"),)),
            key_format="text",
            value_format="json",
            include=("key as k", "partition"),
            envelope="upsert",
            expose_progress=n("k_progress"),
            options=(Option("retain history", "1h"),),
        ),
    ),
    (
        "CREATE SOURCE k FROM KAFKA CONNECTION kc (TOPIC 't') "
        "FORMAT AVRO USING CONFLUENT SCHEMA REGISTRY CONNECTION csr ENVELOPE DEBEZIUM",
        ast.CreateSource(
            n("k"),
            ast.KafkaSourceConnector(n("kc"), (Option("topic", "t"),)),
            format="avro using confluent schema registry connection csr",
            envelope="debezium",
        ),
    ),
]

DROP_ALTER_CASES: list[tuple[str, ast.Statement]] = [
    ("DROP TABLE t", ast.Drop(ObjectType.TABLE, (n("t"),))),
    (
        "DROP TABLE IF EXISTS a, b.c, d.e.f CASCADE",
        ast.Drop(ObjectType.TABLE, (n("a"), n("b", "c"), n("d", "e", "f")), True, True),
    ),
    ("DROP VIEW v RESTRICT", ast.Drop(ObjectType.VIEW, (n("v"),))),
    ("DROP MATERIALIZED VIEW mv", ast.Drop(ObjectType.MATERIALIZED_VIEW, (n("mv"),))),
    ("DROP INDEX i", ast.Drop(ObjectType.INDEX, (n("i"),))),
    ("DROP SOURCE s CASCADE", ast.Drop(ObjectType.SOURCE, (n("s"),), cascade=True)),
    ("DROP DATABASE IF EXISTS d", ast.Drop(ObjectType.DATABASE, (n("d"),), if_exists=True)),
    ("DROP SCHEMA d.s", ast.Drop(ObjectType.SCHEMA, (n("d", "s"),))),
    ("DROP CLUSTER c", ast.Drop(ObjectType.CLUSTER, (n("c"),))),
    ("DROP CLUSTER REPLICA c.r", ast.Drop(ObjectType.CLUSTER_REPLICA, (n("c", "r"),))),
    ("DROP SECRET s", ast.Drop(ObjectType.SECRET, (n("s"),))),
    ("DROP CONNECTION c", ast.Drop(ObjectType.CONNECTION, (n("c"),))),
    ("ALTER SYSTEM SET max_tables = 100", ast.AlterSystemSet("max_tables", ("100",))),
    ("ALTER SYSTEM SET x TO DEFAULT", ast.AlterSystemSet("x", None)),
    ("ALTER SYSTEM RESET x", ast.AlterSystemReset("x")),
    ("ALTER SYSTEM RESET ALL", ast.AlterSystemReset(None)),
    ("ALTER TABLE t RENAME TO u", ast.AlterRename(ObjectType.TABLE, n("t"), "u")),
    (
        "ALTER MATERIALIZED VIEW IF EXISTS s.mv RENAME TO mv2",
        ast.AlterRename(ObjectType.MATERIALIZED_VIEW, n("s", "mv"), "mv2", True),
    ),
    ("ALTER CLUSTER a SWAP WITH b", ast.AlterSwap(ObjectType.CLUSTER, n("a"), "b")),
    ("ALTER SCHEMA a SWAP WITH b", ast.AlterSwap(ObjectType.SCHEMA, n("a"), "b")),
    (
        "ALTER CLUSTER c SET (REPLICATION FACTOR 2, SIZE = '50cc')",
        ast.AlterCluster("c", (Option("replication factor", 2), Option("size", "50cc"))),
    ),
    ("ALTER CLUSTER c RESET (size)", ast.AlterCluster("c", (), ("size",))),
]

STREAM_CASES: list[tuple[str, ast.Statement]] = [
    ("SUBSCRIBE t", ast.Subscribe(n("t"))),
    ("SUBSCRIBE TO s.mv", ast.Subscribe(n("s", "mv"))),
    (
        "SUBSCRIBE (SELECT * FROM t) WITH (SNAPSHOT = false, PROGRESS) AS OF 5 UP TO 10",
        ast.Subscribe(
            q("SELECT * FROM t"),
            (Option("snapshot", False), Option("progress", True)),
            as_of=5,
            up_to=10,
        ),
    ),
    (
        "SUBSCRIBE t ENVELOPE UPSERT (KEY (a, b)) AS OF AT LEAST 3",
        ast.Subscribe(
            n("t"), as_of=3, as_of_at_least=True, envelope="upsert", envelope_key=("a", "b")
        ),
    ),
    (
        "SUBSCRIBE t WITHIN TIMESTAMP ORDER BY a DESC, b WITH (PROGRESS)",
        ast.Subscribe(
            n("t"),
            (Option("progress", True),),
            order_by=tuple(q("SELECT 1 ORDER BY a DESC, b").args["order"].expressions),
        ),
    ),
    ("COPY t FROM STDIN", ast.Copy(n("t"), "from")),
    (
        "COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER, DELIMITER ',')",
        ast.Copy(
            n("t"),
            "from",
            ("a", "b"),
            (Option("format", "csv"), Option("header", True), Option("delimiter", ",")),
        ),
    ),
    (
        "COPY t FROM STDIN (FORMAT text, NULL '\\N')",
        ast.Copy(n("t"), "from", (), (Option("format", "text"), Option("null", "\\N"))),
    ),
    (
        "COPY t FROM STDIN WITH CSV HEADER DELIMITER AS ';'",
        ast.Copy(
            n("t"),
            "from",
            (),
            (Option("format", "csv"), Option("header", True), Option("delimiter", ";")),
        ),
    ),
    ("COPY (SELECT 1) TO STDOUT", ast.Copy(ast.Select(q("SELECT 1")), "to")),
    (
        "COPY (SUBSCRIBE t WITH (SNAPSHOT = true)) TO STDOUT WITH (FORMAT binary)",
        ast.Copy(
            ast.Subscribe(n("t"), (Option("snapshot", True),)),
            "to",
            (),
            (Option("format", "binary"),),
        ),
    ),
    ("COPY t TO STDOUT", ast.Copy(n("t"), "to")),
    ("DECLARE c CURSOR FOR SELECT 1", ast.Declare("c", ast.Select(q("SELECT 1")))),
    ("DECLARE c CURSOR FOR SUBSCRIBE t", ast.Declare("c", ast.Subscribe(n("t")))),
    (
        'DECLARE "C" NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1',
        ast.Declare("C", ast.Select(q("SELECT 1"))),
    ),
    ("FETCH c", ast.Fetch("c", 1)),
    ("FETCH 100 c", ast.Fetch("c", 100)),
    ("FETCH ALL c", ast.Fetch("c", None)),
    ("FETCH ALL FROM c", ast.Fetch("c", None)),
    ("FETCH FORWARD 5 FROM c", ast.Fetch("c", 5)),
    ("FETCH FORWARD ALL IN c", ast.Fetch("c", None)),
    ("FETCH NEXT FROM c", ast.Fetch("c", 1)),
    ("FETCH 10 c WITH (timeout = '1s')", ast.Fetch("c", 10, (Option("timeout", "1s"),))),
    ("CLOSE c", ast.Close("c")),
    ("CLOSE ALL", ast.Close(None)),
]

SESSION_CASES: list[tuple[str, ast.Statement]] = [
    ("BEGIN", ast.Begin()),
    ("BEGIN WORK", ast.Begin()),
    ("BEGIN TRANSACTION READ ONLY", ast.Begin(read_only=True)),
    (
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE, NOT DEFERRABLE",
        ast.Begin("serializable", False, False),
    ),
    ("START TRANSACTION ISOLATION LEVEL STRICT SERIALIZABLE", ast.Begin("strict serializable")),
    ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ", ast.Begin("repeatable read")),
    ("COMMIT", ast.Commit()),
    ("COMMIT WORK", ast.Commit()),
    ("END TRANSACTION", ast.Commit()),
    ("ROLLBACK", ast.Rollback()),
    ("ROLLBACK AND NO CHAIN", ast.Rollback()),
    ("ABORT", ast.Rollback()),
    ("SET extra_float_digits = 3", ast.Set("extra_float_digits", ("3",))),
    ("SET application_name = 'x'", ast.Set("application_name", ("x",))),
    ("SET application_name TO ''", ast.Set("application_name", ("",))),
    ("SET search_path TO a, \"B\", 'c'", ast.Set("search_path", ("a", "B", "c"))),
    ('SET search_path = "$user", public', ast.Set("search_path", ("$user", "public"))),
    ("SET DateStyle = ISO, MDY", ast.Set("datestyle", ("iso", "mdy"))),
    ("SET LOCAL statement_timeout = DEFAULT", ast.Set("statement_timeout", None, local=True)),
    ("SET SESSION timezone TO 'UTC'", ast.Set("timezone", ("UTC",))),
    ("SET TIME ZONE 'UTC'", ast.Set("timezone", ("UTC",))),
    ("SET TIME ZONE LOCAL", ast.Set("timezone", None)),
    ("SET NAMES 'UTF8'", ast.Set("client_encoding", ("UTF8",))),
    ("SET SCHEMA 'public'", ast.Set("search_path", ("public",))),
    ("SET cluster = quickstart", ast.Set("cluster", ("quickstart",))),
    ("SET x = -1.5", ast.Set("x", ("-1.5",))),
    ("SET client_min_messages TO warning", ast.Set("client_min_messages", ("warning",))),
    ("SET standard_conforming_strings = on", ast.Set("standard_conforming_strings", ("on",))),
    ("SET my.custom = 1", ast.Set("my.custom", ("1",))),
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ast.SetTransaction("serializable"),
    ),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
        ast.SetTransaction("read committed", session=True),
    ),
    ("RESET ALL", ast.Reset(None)),
    ("RESET search_path", ast.Reset("search_path")),
    ("RESET TIME ZONE", ast.Reset("timezone")),
    ("SHOW ALL", ast.Show("all")),
    ("SHOW transaction_isolation", ast.Show("transaction_isolation")),
    ("SHOW TRANSACTION ISOLATION LEVEL", ast.Show("transaction_isolation")),
    ("SHOW TIME ZONE", ast.Show("timezone")),
    ("SHOW server_version", ast.Show("server_version")),
    ("SHOW cluster", ast.Show("cluster")),
    ("SHOW TABLES", ast.ShowObjects("tables")),
    ("SHOW TABLES FROM s LIKE 'a%'", ast.ShowObjects("tables", n("s"), like="a%")),
    ("SHOW VIEWS FROM d.s", ast.ShowObjects("views", n("d", "s"))),
    (
        "SHOW MATERIALIZED VIEWS IN CLUSTER c",
        ast.ShowObjects("materialized views", in_cluster="c"),
    ),
    ("SHOW INDEXES ON t IN CLUSTER c", ast.ShowObjects("indexes", on=n("t"), in_cluster="c")),
    ("SHOW INDICES", ast.ShowObjects("indexes")),
    ("SHOW SOURCES", ast.ShowObjects("sources")),
    ("SHOW CLUSTERS", ast.ShowObjects("clusters")),
    (
        "SHOW CLUSTER REPLICAS WHERE cluster = 'c'",
        ast.ShowObjects("cluster replicas", where=q("cluster = 'c'")),
    ),
    ("SHOW DATABASES", ast.ShowObjects("databases")),
    ("SHOW SCHEMAS FROM d", ast.ShowObjects("schemas", n("d"))),
    ("SHOW SECRETS", ast.ShowObjects("secrets")),
    ("SHOW CONNECTIONS", ast.ShowObjects("connections")),
    ("SHOW COLUMNS FROM t", ast.ShowColumns(n("t"))),
    ("SHOW CREATE TABLE s.t", ast.ShowCreate(ObjectType.TABLE, n("s", "t"))),
    ("SHOW CREATE VIEW v", ast.ShowCreate(ObjectType.VIEW, n("v"))),
    (
        "SHOW CREATE MATERIALIZED VIEW mv",
        ast.ShowCreate(ObjectType.MATERIALIZED_VIEW, n("mv")),
    ),
    ("SHOW CREATE INDEX i", ast.ShowCreate(ObjectType.INDEX, n("i"))),
    ("SHOW CREATE SOURCE s", ast.ShowCreate(ObjectType.SOURCE, n("s"))),
    ("SHOW CREATE CONNECTION c", ast.ShowCreate(ObjectType.CONNECTION, n("c"))),
    ("SHOW CREATE CLUSTER c", ast.ShowCreate(ObjectType.CLUSTER, n("c"))),
    ("DISCARD ALL", ast.Discard("all")),
    ("DISCARD TEMP", ast.Discard("temp")),
    (
        "PREPARE p (int, text) AS SELECT $1, $2",
        ast.Prepare("p", ast.Select(q("SELECT $1, $2")), (T("int4"), T("text"))),
    ),
    (
        "PREPARE p AS INSERT INTO t VALUES ($1)",
        ast.Prepare("p", ast.Insert(n("t"), (), rows("VALUES ($1)"))),
    ),
    ("EXECUTE p", ast.Execute("p")),
    ("EXECUTE p (1, 'a')", ast.Execute("p", (q("1"), q("'a'")))),
    ("DEALLOCATE p", ast.Deallocate("p")),
    ("DEALLOCATE PREPARE ALL", ast.Deallocate(None)),
]

EXPLAIN_CASES: list[tuple[str, ast.Statement]] = [
    ("EXPLAIN SELECT 1", ast.Explain(ast.Select(q("SELECT 1")))),
    (
        "EXPLAIN OPTIMIZED PLAN AS JSON FOR SELECT 1",
        ast.Explain(ast.Select(q("SELECT 1")), format="json"),
    ),
    (
        "EXPLAIN RAW PLAN AS VERBOSE TEXT FOR SELECT 1",
        ast.Explain(ast.Select(q("SELECT 1")), "raw plan", "verbose text"),
    ),
    (
        "EXPLAIN PHYSICAL PLAN WITH (arity, humanized expressions) FOR MATERIALIZED VIEW mv",
        ast.Explain(
            ast.ExplainObject(ObjectType.MATERIALIZED_VIEW, n("mv")),
            "physical plan",
            options=(Option("arity"), Option("humanized", "expressions")),
        ),
    ),
    (
        "EXPLAIN TIMESTAMP FOR SELECT * FROM t",
        ast.Explain(ast.Select(q("SELECT * FROM t")), "timestamp"),
    ),
    (
        "EXPLAIN CREATE MATERIALIZED VIEW mv AS SELECT 1",
        ast.Explain(ast.CreateMaterializedView(n("mv"), q("SELECT 1"))),
    ),
    ("EXPLAIN INDEX i", ast.Explain(ast.ExplainObject(ObjectType.INDEX, n("i")))),
    ("EXPLAIN VIEW v", ast.Explain(ast.ExplainObject(ObjectType.VIEW, n("v")))),
    (
        "EXPLAIN WITH x AS (SELECT 1) SELECT * FROM x",
        ast.Explain(ast.Select(q("WITH x AS (SELECT 1) SELECT * FROM x"))),
    ),
    (
        "EXPLAIN (SELECT 1)",
        ast.Explain(ast.Select(q("(SELECT 1)"))),
    ),
    (
        "EXPLAIN (FORMAT JSON, COSTS false) SELECT 1",
        ast.Explain(
            ast.Select(q("SELECT 1")),
            format="json",
            options=(Option("format", "json"), Option("costs", False)),
        ),
    ),
    (
        "EXPLAIN VERBOSE SELECT 1",
        ast.Explain(ast.Select(q("SELECT 1")), options=(Option("verbose"),)),
    ),
]

ALL_CASES = (
    SELECT_CASES
    + WRITE_CASES
    + CREATE_CASES
    + SOURCE_CASES
    + DROP_ALTER_CASES
    + STREAM_CASES
    + SESSION_CASES
    + EXPLAIN_CASES
)


@pytest.mark.parametrize(("sql", "expected"), ALL_CASES, ids=[c[0][:60] for c in ALL_CASES])
def test_parse(sql: str, expected: ast.Statement) -> None:
    assert parse_statement(sql) == expected


def test_statements_are_hashable() -> None:
    for sql, _ in ALL_CASES:
        hash(parse_statement(sql))


def test_parse_statements() -> None:
    stmts = parse_statements("BEGIN; INSERT INTO t VALUES (1); ; -- c\n COMMIT;")
    assert [type(s) for s in stmts] == [ast.Begin, ast.Insert, ast.Commit]
    assert parse_statements("") == []
    assert parse_statements(" ; -- nothing\n") == []


def test_identifier_folding() -> None:
    stmt = parse_statement('CREATE TABLE Db."Sch".TaB ("Col" INT, cOl2 TEXT)')
    assert isinstance(stmt, ast.CreateTable)
    assert stmt.name == n("db", "Sch", "tab")
    assert [c.name for c in stmt.columns] == ["Col", "col2"]
    assert str(stmt.name) == 'db."Sch".tab'


def test_embedded_query_keeps_sqlglot_identifiers() -> None:
    stmt = parse_statement('SELECT "A", b FROM T')
    assert isinstance(stmt, ast.Select)
    assert stmt.query == q('SELECT "A", b FROM T')


def test_oid_array_casts() -> None:
    # sqlglot 30 cannot parse `::oid[]`; the parser works around it.
    stmt = parse_statement("SELECT x FROM t WHERE x = any($1::oid[]) AND y::regtype[] IS NULL")
    assert isinstance(stmt, ast.Select)
    casts = list(stmt.query.find_all(exp.Cast))
    assert sorted(c.args["to"].sql("postgres") for c in casts) == ["OID[]", "REGTYPE[]"]
    assert "CAST($1 AS OID[])" in stmt.query.sql("postgres")


def test_iter_expressions_and_statements() -> None:
    stmt = parse_statement("EXPLAIN UPDATE t SET a = 1 WHERE b = 2 RETURNING c")
    assert [type(s) for s in ast.iter_statements(stmt)] == [ast.Explain, ast.Update]
    assert list(ast.iter_expressions(stmt)) == [q("1"), q("b = 2"), q("c")]


TYPE_CASES = [
    ("int", "int4"),
    ("INTEGER", "int4"),
    ("bigint", "int8"),
    ("smallint", "int2"),
    ("real", "float4"),
    ("float", "float8"),
    ("float(10)", "float4"),
    ("double precision", "float8"),
    ("numeric", "numeric"),
    ("decimal(10,2)", "numeric(10,2)"),
    ("boolean", "bool"),
    ("character varying(12)", "varchar(12)"),
    ("char", "bpchar(1)"),
    ("character(3)", "bpchar(3)"),
    ('"char"', "char"),
    ("timestamp", "timestamp"),
    ("timestamp(3) without time zone", "timestamp(3)"),
    ("timestamp with time zone", "timestamptz"),
    ("time with time zone", "timetz"),
    ("interval day to second", "interval"),
    ("int[]", "int4[]"),
    ("text[][]", "text[][]"),
    ("int ARRAY", "int4[]"),
    ("_int4", "int4[]"),
    ("pg_catalog.int8", "int8"),
    ("mz_timestamp", "mz_timestamp"),
    ("myschema.mytype", "myschema.mytype"),
    ("jsonb", "jsonb"),
]


@pytest.mark.parametrize(("text", "expected"), TYPE_CASES)
def test_type_names(text: str, expected: str) -> None:
    assert str(parse_type_name(text)) == expected


def test_primary_key_column_and_table_constraints() -> None:
    stmt = parse_statement(
        "CREATE TABLE t (a int CONSTRAINT a_k PRIMARY KEY NOT NULL, b text, PRIMARY KEY (a, b))"
    )
    assert isinstance(stmt, ast.CreateTable)
    assert [c.name for c in stmt.columns] == ["a", "b"]
    assert stmt.columns[0].primary_key and stmt.columns[0].constraint_name == "a_k"
    assert not stmt.columns[0].nullable
    assert stmt.primary_keys == (ast.PrimaryKey(("a", "b")),)
    stmt = parse_statement("CREATE TABLE t (a int, CONSTRAINT t_k PRIMARY KEY (a))")
    assert isinstance(stmt, ast.CreateTable)
    assert stmt.primary_keys == (ast.PrimaryKey(("a",), "t_k"),)


@pytest.mark.parametrize(
    ("sql", "mode", "count"),
    [
        ("MOVE c", "relative", 1),
        ("MOVE NEXT FROM c", "relative", 1),
        ("MOVE PRIOR IN c", "relative", -1),
        ("MOVE FORWARD 3 FROM c", "relative", 3),
        ("MOVE BACKWARD 2 FROM c", "relative", -2),
        ("MOVE -2 FROM c", "relative", -2),
        ("MOVE ABSOLUTE 0 FROM c", "absolute", 0),
        ("MOVE LAST FROM c", "absolute", -1),
        ("MOVE FORWARD ALL FROM c", "relative", 2**62),
    ],
)
def test_move(sql: str, mode: str, count: int) -> None:
    assert parse_statement(sql) == ast.Move("c", mode, count)


def test_envelope_upsert_with_key_and_delete() -> None:
    stmt = parse_statement(
        "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON INCLUDE HEADERS "
        "ENVELOPE UPSERT (KEY (body->>'id'), DELETE WHEN (body->>'op' = 'delete'))"
    )
    assert isinstance(stmt, ast.CreateSource) and stmt.envelope == "upsert"
    assert stmt.connector == ast.Webhook("json", ())
    assert stmt.upsert_key is not None and stmt.upsert_delete is not None
    assert stmt.upsert_key.sql(dialect="postgres") == "body ->> 'id'"
    assert stmt.upsert_delete.sql(dialect="postgres") == "body ->> 'op' = 'delete'"
    raw = parse_statement("CREATE SOURCE k FROM KAFKA CONNECTION c ENVELOPE UPSERT (VALUE X)")
    assert isinstance(raw, ast.CreateSource) and raw.upsert_key is None  # other forms stay raw
    for bad in (
        "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON ENVELOPE UPSERT (DELETE WHEN (true))",
        "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON ENVELOPE UPSERT (KEY body)",
        "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON ENVELOPE UPSERT (KEY (a), NOPE)",
    ):
        with pytest.raises(sql_errors.SqlError):
            parse_statement(bad)
