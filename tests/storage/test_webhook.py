"""Webhook sources on a real environmentd's public HTTP listener: 200 only once durable, 400
bad body, 401 failed CHECK, 404 unknown source, 503 + Retry-After on a read-only generation;
CREATE-time validation with SQLSTATEs."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from twinstream.testing.clients import post, sql
from twinstream.testing.environmentd import EnvironmentdProcess

PATH = "/api/webhook/twinstream/public/w"


def test_webhook_statuses_and_durability(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(
            env,
            "CREATE SECRET key AS 'sekrit'",
            """CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON INCLUDE HEADERS
               CHECK (WITH (HEADERS, SECRET key) headers->'x-api-key' = key)""",
        )
        good = {"x-api-key": "sekrit", "content-type": "application/json"}
        code, _, _ = post(env.http_port, PATH, json.dumps({"a": 1}).encode(), good)
        assert code == 200
        # the row is visible as soon as the 200 arrived (acknowledged only once durable)
        rows = sql(env, "SELECT body->>'a', headers->>'x-api-key' FROM w")[0]
        assert rows == [("1", "sekrit")]
        assert post(env.http_port, PATH, b"{not json", good)[0] == 400
        assert post(env.http_port, PATH, b'{"a": 2}', {"x-api-key": "wrong"})[0] == 401
        assert post(env.http_port, PATH, b'{"a": 2}', {})[0] == 401  # NULL check fails too
        assert post(env.http_port, "/api/webhook/twinstream/public/nope", b"{}", good)[0] == 404
        assert post(env.http_port, "/api/webhook/nodb/public/w", b"{}", good)[0] == 404
        # newline-delimited JSON: one row per line
        assert post(env.http_port, PATH, b'{"a": 3}\n{"a": 4}\n', good)[0] == 200
        assert sql(env, "SELECT body->>'a' FROM w ORDER BY 1")[0] == [("1",), ("3",), ("4",)]
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            sql(env, "DROP SECRET key")
        with pytest.raises(psycopg.errors.WrongObjectType):
            sql(env, "INSERT INTO w VALUES ('{}', '{}')")
        env.kill9()
        env.start()
        assert sql(env, "SELECT body->>'a' FROM w ORDER BY 1")[0] == [("1",), ("3",), ("4",)]
        assert post(env.http_port, PATH, b'{"a": 5}', good)[0] == 200
        assert sql(env, "SELECT count(*) FROM w")[0] == [(4,)]
        [[(st,)]] = sql(env, "SELECT status FROM mz_internal.mz_source_statuses WHERE name = 'w'")
        assert st == "running"
    finally:
        env.stop()


def test_webhook_formats(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(
            env,
            "CREATE SOURCE arr FROM WEBHOOK BODY FORMAT JSON ARRAY",
            "CREATE SOURCE txt FROM WEBHOOK BODY FORMAT TEXT INCLUDE HEADER 'x-id' AS id",
        )
        base = "/api/webhook/twinstream/public/"
        assert post(env.http_port, base + "arr", b'[{"k": 1}, {"k": 2}]')[0] == 200
        assert sql(env, "SELECT body->>'k' FROM arr ORDER BY 1")[0] == [("1",), ("2",)]
        assert post(env.http_port, base + "txt", b"hello", {"x-id": "7"})[0] == 200
        assert post(env.http_port, base + "txt", b"\xff\xfe")[0] == 400
        assert sql(env, "SELECT body, id FROM txt")[0] == [("hello", "7")]
    finally:
        env.stop()


BAD_CREATE: list[tuple[str, type[Exception]]] = [
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON CHECK (WITH (SECRET nope) nope = 'x')",
        psycopg.errors.UndefinedObject,
    ),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON CHECK (WITH (BODY) missing = 'x')",
        psycopg.errors.UndefinedColumn,
    ),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON CHECK (WITH (BODY) length(body))",
        psycopg.errors.DatatypeMismatch,
    ),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON INCLUDE HEADER 'a' AS body",
        psycopg.errors.DuplicateColumn,
    ),
    ("CREATE SOURCE b FROM KAFKA CONNECTION k (TOPIC 't')", psycopg.errors.FeatureNotSupported),
]


def test_bad_create(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        for stmt, error in BAD_CREATE:
            with pytest.raises(error):
                sql(env, stmt)
        assert sql(env, "SHOW SOURCES")[0] == []
    finally:
        env.stop()


def test_read_only_generation_refuses_with_503(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    try:
        sql(old, "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON")
        assert post(old.http_port, PATH, b'{"n": 1}')[0] == 200
        new.start()
        code, headers, _ = post(new.http_port, PATH, b'{"n": 2}')
        assert code == 503 and headers.get("Retry-After") == "1"
        assert post(new.http_port, "/api/webhook/twinstream/public/nope", b"{}")[0] == 404
        assert sql(old, "SELECT body->>'n' FROM w")[0] == [("1",)]
    finally:
        old.stop()
        new.stop()
