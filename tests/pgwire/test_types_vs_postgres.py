"""Our type encodings against a real PostgreSQL: for each value, the text and binary bytes
PostgreSQL sends must decode to the same Python value, and our encoders must produce exactly
PostgreSQL's bytes (with the session settings pgwire announces: DateStyle ISO, TimeZone UTC,
IntervalStyle postgres, extra_float_digits 1)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from twinstream.pgwire import types as t
from twinstream.pgwire.types import Oid

pytestmark = pytest.mark.postgres

CASES: list[tuple[str, int]] = [
    ("true", Oid.BOOL),
    ("(-32768)::int2", Oid.INT2),
    ("2147483647::int4", Oid.INT4),
    ("(-9223372036854775808)::int8", Oid.INT8),
    ("4294967295::oid", Oid.OID),
    ("1.5::float8", Oid.FLOAT8),
    ("1e15::float8", Oid.FLOAT8),
    ("123456789012345::float8", Oid.FLOAT8),
    ("0.0001::float8", Oid.FLOAT8),
    ("1e-5::float8", Oid.FLOAT8),
    ("'-0'::float8", Oid.FLOAT8),
    ("(0.1 + 0.2)::float8", Oid.FLOAT8),
    ("'-Infinity'::float8", Oid.FLOAT8),
    ("'NaN'::float8", Oid.FLOAT8),
    ("1.7976931348623157e308::float8", Oid.FLOAT8),
    ("5e-324::float8", Oid.FLOAT8),
    ("0.1::float4", Oid.FLOAT4),
    ("1e6::float4", Oid.FLOAT4),
    ("100000::float4", Oid.FLOAT4),
    ("3.4028235e38::float4", Oid.FLOAT4),
    ("1.17549435e-38::float4", Oid.FLOAT4),
    ("0::numeric", Oid.NUMERIC),
    ("0.00::numeric", Oid.NUMERIC),
    ("12345.6789::numeric", Oid.NUMERIC),
    ("(-0.00012)::numeric", Oid.NUMERIC),
    ("1e8::numeric", Oid.NUMERIC),
    ("100000000.000::numeric", Oid.NUMERIC),
    ("123456789012345678901234567890.123456789::numeric", Oid.NUMERIC),
    ("0.000000000000000000001::numeric", Oid.NUMERIC),
    ("'NaN'::numeric", Oid.NUMERIC),
    ("'Infinity'::numeric", Oid.NUMERIC),
    ("'-Infinity'::numeric", Oid.NUMERIC),
    ("'héllo'::text", Oid.TEXT),
    ("'v'::varchar", Oid.VARCHAR),
    ("'\\x00ff10'::bytea", Oid.BYTEA),
    ("'2024-02-29'::date", Oid.DATE),
    ("'0001-01-02'::date", Oid.DATE),  # (0001-01-01 is date.min, which means -infinity)
    ("'infinity'::date", Oid.DATE),
    ("'2024-02-29 12:34:56.000789'::timestamp", Oid.TIMESTAMP),
    ("'1999-12-31 23:59:59.5'::timestamp", Oid.TIMESTAMP),
    ("'-infinity'::timestamp", Oid.TIMESTAMP),
    ("'2024-02-29 12:34:56.5+02'::timestamptz", Oid.TIMESTAMPTZ),
    ("'1970-01-01 00:00:00+00'::timestamptz", Oid.TIMESTAMPTZ),
    ("'3 days 04:05:06.000007'::interval", Oid.INTERVAL),
    ("'-3 days -04:00:00'::interval", Oid.INTERVAL),
    ("'1 day'::interval", Oid.INTERVAL),
    ("'0'::interval", Oid.INTERVAL),
    ("'-00:00:00.000001'::interval", Oid.INTERVAL),
    ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", Oid.UUID),
    ('\'{"a": [1, "é", null, 2.5, true]}\'::jsonb', Oid.JSONB),
    ('\'[1, {"b": "c"}]\'::json', Oid.JSON),
    ("ARRAY[1, NULL, 3]::int4[]", 1007),
    ("ARRAY[[1, 2], [3, 4]]::int8[]", 1016),
    ("'{}'::int4[]", 1007),
    ("ARRAY['a b', '', NULL, 'x\"y\\z', 'NULL', 'é{,}']::text[]", 1009),
    ("ARRAY[1.5, NULL, 'Infinity']::numeric[]", 1231),
    ("ARRAY[23, 4294967295]::oid[]", 1028),
    ("ARRAY[true, false]", 1000),
    ("'1 2 3'::int2vector", 22),
]


@pytest.fixture(scope="module")
def pg(pg_server: object) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    url = pg_server.create_database("pgwire_types")  # type: ignore[attr-defined]
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(
        "set TimeZone = 'UTC'; set DateStyle = 'ISO, MDY'; set IntervalStyle = 'postgres';"
        " set extra_float_digits = 1"
    )
    yield conn
    conn.close()


@pytest.mark.parametrize(("expr", "oid"), CASES, ids=[c[0] for c in CASES])
def test_matches_postgres(pg: psycopg.Connection[tuple[object, ...]], expr: str, oid: int) -> None:
    query = f"select {expr}".encode()
    text_res = pg.pgconn.exec_params(query, [], result_format=0)
    bin_res = pg.pgconn.exec_params(query, [], result_format=1)
    assert text_res.ftype(0) == oid
    pg_text = text_res.get_value(0, 0)
    pg_bin = bin_res.get_value(0, 0)
    assert pg_text is not None and pg_bin is not None
    from_text = t.decode(oid, pg_text, 0)
    from_bin = t.decode(oid, pg_bin, 1)
    if from_text == from_text:  # NaN aside
        assert from_text == from_bin
    assert t.encode(oid, from_text, 0) == pg_text
    assert t.encode(oid, from_bin, 1) == pg_bin
    # and PostgreSQL reads our binary form back as the same value
    echo = pg.pgconn.exec_params(
        f"select $1::{t.type_name(oid) if oid != Oid.OID else 'oid'}".encode(),
        [t.encode(oid, from_bin, 1)],
        [oid],
        [1],
        result_format=0,
    )
    assert echo.get_value(0, 0) == pg_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (t.Interval(14, 3, 0), "1 year 2 mons 3 days"),
        (t.Interval(-10, -3, 14_706_500_000), "-10 mons -3 days +04:05:06.5"),
        (t.Interval(-1, 3, 0), "-1 mons +3 days"),
        (t.Interval(12, 0, -1_000_000), "1 year -00:00:01"),
    ],
)
def test_interval_with_months_matches_postgres(
    pg: psycopg.Connection[tuple[object, ...]], value: t.Interval, text: str
) -> None:
    """`Interval` keeps months: its text is PostgreSQL's, and its binary form reads back as
    the same interval in PostgreSQL."""
    assert t.encode(Oid.INTERVAL, value, 0) == text.encode()
    echo = pg.pgconn.exec_params(
        b"select $1::interval", [t.encode(Oid.INTERVAL, value, 1)], [Oid.INTERVAL], [1]
    )
    assert echo.get_value(0, 0) == text.encode()
