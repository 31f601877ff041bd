"""ENVELOPE UPSERT in a real environmentd: keyed webhooks (insert, update, delete, many updates
to one key consolidate to one row) and the KEY VALUE load generator (latest value per key,
exact); the state survives kill -9 (an update after the restart retracts the old value);
bad input errors with SQLSTATEs / HTTP statuses."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from twinstream.testing.clients import post, sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess

PATH = "/api/webhook/twinstream/public/w"
WEBHOOK = (
    "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON "
    "ENVELOPE UPSERT (KEY (body->>'id'), DELETE WHEN (body->>'op' = 'delete'))"
)
KEYS = 10


def webhook_rows(env: EnvironmentdProcess) -> dict[str, object]:
    """key -> body->>'v', asserting one row per key and that the key is the body's id."""
    rows = sql(env, "SELECT key, body->>'id', body->>'v' FROM w")[0]
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)), f"a key has two rows: {sorted(rows)}"  # type: ignore[type-var]
    assert all(r[0] == r[1] for r in rows), rows
    return {str(r[0]): r[2] for r in rows}


def send(env: EnvironmentdProcess, *bodies: dict[str, object]) -> int:
    data = "\n".join(json.dumps(b) for b in bodies).encode()
    return post(env.http_port, PATH, data)[0]


def kv_values(env: EnvironmentdProcess) -> list[int]:
    """The KEY VALUE state's values, checked: one row per key, value = the latest record of
    its key, so the values are the KEYS consecutive offsets just below the binding."""
    rows = sql(env, "SELECT key, value FROM kv")[0]
    keys = [int(r[0]) for r in rows]  # type: ignore[call-overload]
    values = sorted(int(r[1]) for r in rows)  # type: ignore[call-overload]
    assert len(keys) == len(set(keys)), f"a key has two rows: {sorted(rows)}"  # type: ignore[type-var]
    assert all(int(v) % KEYS == int(k) for k, v in rows), rows  # type: ignore[call-overload]
    if values:
        top = values[-1]
        assert values == list(range(max(top - KEYS + 1, 0), top + 1)), f"gap or stale: {values}"
    return values


def test_webhook_upsert_semantics_and_restart(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(env, WEBHOOK)
        cols = sql(
            env,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'w' ORDER BY ordinal_position",
        )[0]
        assert cols == [("key", "text"), ("body", "jsonb")]
        assert send(env, {"id": "a", "v": 1}, {"id": "b", "v": 1}) == 200
        assert webhook_rows(env) == {"a": "1", "b": "1"}  # visible once acknowledged
        assert send(env, {"id": "a", "v": 2}) == 200  # update
        assert send(env, {"id": "b", "op": "delete"}) == 200  # delete
        assert webhook_rows(env) == {"a": "2"}
        # many updates to one key, in one request and in many: one row, the last value
        assert send(env, *({"id": "c", "v": i} for i in range(50))) == 200
        for i in range(10):
            assert send(env, {"id": "a", "v": 100 + i}) == 200
        assert send(env, {"id": "a", "v": 109}) == 200  # the same upsert again: no change
        assert webhook_rows(env) == {"a": "109", "c": "49"}
        assert send(env, {"id": "zz", "op": "delete"}) == 200  # deleting an absent key
        # bad input loses nothing
        assert send(env, {"v": "no id"}) == 400  # NULL key
        assert post(env.http_port, PATH, b"{broken")[0] == 400
        assert webhook_rows(env) == {"a": "109", "c": "49"}
        env.kill9()
        env.start()
        assert webhook_rows(env) == {"a": "109", "c": "49"}
        # the state was rebuilt from the output shard: an update retracts the old value
        assert send(env, {"id": "a", "v": "after"}, {"id": "d", "v": 1}) == 200
        assert send(env, {"id": "c", "op": "delete"}) == 200
        assert webhook_rows(env) == {"a": "after", "d": "1"}
        [[(n,)]] = sql(env, "SELECT count(*) FROM w WHERE key = 'a'")
        assert n == 1
    finally:
        env.stop()


def test_key_value_generator_upserts_and_survives_kill9(data_dir: Path) -> None:
    env = EnvironmentdProcess(data_dir)
    env.start()
    try:
        sql(
            env,
            f"CREATE SOURCE kv FROM LOAD GENERATOR KEY VALUE (KEYS {KEYS}, BATCH SIZE 3, "
            "TICK INTERVAL '5ms') ENVELOPE UPSERT",
        )
        # far more records than keys: every key is overwritten many times
        wait_for("keys overwritten", lambda: (kv_values(env) or [0])[-1] >= 5 * KEYS, env)
        assert len(kv_values(env)) == KEYS
        env.kill9()
        env.start()
        before = kv_values(env)[-1]
        wait_for("ingestion resumes", lambda: kv_values(env)[-1] >= before + 3 * KEYS, env)
        values = kv_values(env)
        assert len(values) == KEYS
        [[(offset,)]] = sql(env, 'SELECT "offset" FROM kv_progress')
        assert isinstance(offset, int) and offset >= values[-1] + 1
        shown = sql(env, "SHOW SOURCES")[0]
        assert [r[:2] for r in shown] == [("kv", "load-generator"), ("kv_progress", "progress")]
    finally:
        env.stop()


BAD_CREATE: list[tuple[str, type[Exception]]] = [
    (
        "CREATE SOURCE b FROM LOAD GENERATOR KEY VALUE (KEYS 4)",  # no ENVELOPE UPSERT
        psycopg.errors.SyntaxError,
    ),
    (
        "CREATE SOURCE b FROM LOAD GENERATOR KEY VALUE ENVELOPE UPSERT",  # no KEYS
        psycopg.errors.InvalidParameterValue,
    ),
    (
        "CREATE SOURCE b FROM LOAD GENERATOR KEY VALUE (KEYS 0) ENVELOPE UPSERT",
        psycopg.errors.InvalidParameterValue,
    ),
    (
        "CREATE SOURCE b FROM LOAD GENERATOR KEY VALUE (KEYS 4, BATCH SIZE 'x') ENVELOPE UPSERT",
        psycopg.errors.InvalidParameterValue,
    ),
    ("CREATE SOURCE b FROM LOAD GENERATOR COUNTER ENVELOPE UPSERT", psycopg.errors.SyntaxError),
    ("CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON ENVELOPE UPSERT", psycopg.errors.SyntaxError),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON ENVELOPE DEBEZIUM",
        psycopg.errors.FeatureNotSupported,
    ),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON ENVELOPE UPSERT (KEY (nope))",
        psycopg.errors.UndefinedColumn,
    ),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON "
        "ENVELOPE UPSERT (KEY (body->>'id'), DELETE WHEN (length(body::text)))",
        psycopg.errors.DatatypeMismatch,
    ),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON INCLUDE HEADER 'k' AS key "
        "ENVELOPE UPSERT (KEY (body->>'id'))",
        psycopg.errors.DuplicateColumn,
    ),
    (
        "CREATE SOURCE b FROM WEBHOOK BODY FORMAT JSON ENVELOPE UPSERT (KEY body->>'id')",
        psycopg.errors.SyntaxError,
    ),
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
