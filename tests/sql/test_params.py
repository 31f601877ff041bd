"""find_params / infer_param_types."""

from __future__ import annotations

import pytest

from twinstream.sql import find_params, infer_param_types, parse_statement
from twinstream.sql.ast import QualifiedName

SCHEMA: dict[tuple[str, ...], dict[str, str]] = {
    ("t",): {
        "a": "integer",
        "b": "text",
        "c": "timestamp with time zone",
        "d": "numeric(10,2)",
        "e": "int8[]",
    },
    ("s", "u"): {"id": "bigint", "n": "character varying(10)", "flag": "boolean"},
}


def resolve(table: QualifiedName, column: str | int) -> str | None:
    columns = SCHEMA.get(table.parts)
    if columns is None:
        return None
    if isinstance(column, int):
        types = list(columns.values())
        return types[column] if column < len(types) else None
    return columns.get(column)


CASES: list[tuple[str, dict[int, str]]] = [
    ("SELECT 1", {}),
    ("SELECT $1", {1: "text"}),
    ("SELECT $3", {1: "text", 2: "text", 3: "text"}),
    ("SELECT $1::int, $2::float, CAST($3 AS bigint)", {1: "int4", 2: "float8", 3: "int8"}),
    ("SELECT $1::timestamp with time zone, $2::varchar(3)", {1: "timestamptz", 2: "varchar"}),
    ('SELECT $1::int[], $2::oid[], $3::"char"', {1: "int4[]", 2: "oid[]", 3: "char"}),
    ("SELECT $1::text::int", {1: "text"}),
    ("SELECT * FROM t WHERE a = $1", {1: "int4"}),
    ("SELECT * FROM t WHERE $1 = a", {1: "int4"}),
    ("SELECT * FROM t WHERE a = ($1)", {1: "int4"}),
    ("SELECT * FROM t WHERE a <> $1 OR c >= $2", {1: "int4", 2: "timestamptz"}),
    ("SELECT * FROM t WHERE b LIKE $1 AND b ILIKE $2", {1: "text", 2: "text"}),
    ("SELECT * FROM t LIMIT $1 OFFSET $2", {1: "int8", 2: "int8"}),
    ("SELECT * FROM t WHERE a IN ($1, $2)", {1: "int4", 2: "int4"}),
    ("SELECT * FROM t WHERE d BETWEEN $1 AND $2", {1: "numeric", 2: "numeric"}),
    ("SELECT * FROM t WHERE a = ANY($1)", {1: "int4[]"}),
    ("SELECT * FROM t WHERE $1 AND NOT $2", {1: "bool", 2: "bool"}),
    ("SELECT * FROM t WHERE a IS DISTINCT FROM $1", {1: "int4"}),
    ("SELECT a + $1, $2 * 1.5, $3 - 1 FROM t", {1: "int4", 2: "numeric", 3: "int4"}),
    ("SELECT coalesce(b, $1) FROM t", {1: "text"}),
    (
        "SELECT * FROM t x JOIN s.u ON x.a = u.id WHERE x.c > $1 AND u.n = $2 AND $3 < s.u.id",
        {1: "timestamptz", 2: "varchar", 3: "int8"},
    ),
    # unqualified columns resolve in the innermost query first, then outer queries
    ("SELECT * FROM t WHERE a IN (SELECT id FROM s.u WHERE n = $1)", {1: "varchar"}),
    ("SELECT (SELECT 1 FROM s.u WHERE id = t.a AND b = $1) FROM t", {1: "text"}),
    # CTE names are not catalog tables
    ("WITH t AS (SELECT 1 AS a) SELECT * FROM t WHERE a = $1", {1: "text"}),
    ("INSERT INTO t VALUES ($1, $2, $3)", {1: "int4", 2: "text", 3: "timestamptz"}),
    (
        "INSERT INTO t (d, a) VALUES ($1, $2), ($3, $4)",
        {1: "numeric", 2: "int4", 3: "numeric", 4: "int4"},
    ),
    ("INSERT INTO t SELECT $1, $2", {1: "int4", 2: "text"}),
    ("INSERT INTO t (b) VALUES ($1::int)", {1: "int4"}),
    ("INSERT INTO t (a) VALUES ($1) RETURNING a + $2", {1: "int4", 2: "int4"}),
    ("UPDATE t SET b = $1 WHERE a = $2", {1: "text", 2: "int4"}),
    ("UPDATE t AS x SET d = $1 WHERE x.e = $2", {1: "numeric", 2: "int8[]"}),
    ("DELETE FROM s.u WHERE flag = $1 AND id > $2", {1: "bool", 2: "int8"}),
    ("SELECT * FROM nowhere WHERE x = $1", {1: "text"}),
    ("PREPARE p (int8) AS SELECT $1, $2::bool", {1: "int8", 2: "bool"}),
    ("EXPLAIN SELECT * FROM t WHERE a = $1", {1: "int4"}),
    ("DECLARE c CURSOR FOR SELECT * FROM t WHERE c < $1", {1: "timestamptz"}),
    ("SUBSCRIBE (SELECT * FROM t WHERE a = $1)", {1: "int4"}),
    ("COPY (SELECT * FROM t WHERE b = $1) TO STDOUT", {1: "text"}),
]


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_infer_param_types(sql: str, expected: dict[int, str]) -> None:
    assert infer_param_types(parse_statement(sql), resolve) == expected


def test_without_resolver() -> None:
    stmt = parse_statement("SELECT * FROM t WHERE a = $1 AND b = $2::int LIMIT $3")
    assert infer_param_types(stmt) == {1: "text", 2: "int4", 3: "int8"}


def test_find_params() -> None:
    assert find_params(parse_statement("SELECT $2, $1, $2 FROM t WHERE x = $5")) == [1, 2, 5]
    assert find_params(parse_statement("INSERT INTO t VALUES ($1) RETURNING $2")) == [1, 2]
    assert find_params(parse_statement("SELECT '$1', $$ $2 $$")) == []


def test_resolver_sees_normalized_names_and_positions() -> None:
    calls: list[tuple[QualifiedName, str | int]] = []

    def spy(table: QualifiedName, column: str | int) -> str | None:
        calls.append((table, column))
        return None

    infer_param_types(parse_statement('INSERT INTO Db."Sch".T VALUES ($1)'), spy)
    infer_param_types(parse_statement('SELECT * FROM "T" WHERE "Col" = $1'), spy)
    assert calls == [
        (QualifiedName(("db", "Sch", "t")), 0),
        (QualifiedName(("T",)), "Col"),
    ]
