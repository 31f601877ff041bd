"""Type encodings: property tests (binary and text roundtrip) and known wire forms."""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinstream.pgwire import PgError
from twinstream.pgwire import types as t
from twinstream.pgwire.types import Oid

json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
# Python None is SQL NULL, so a top-level JSON null cannot be told apart: not generated.
json_values = json_documents.filter(lambda v: v is not None)
decimals = st.builds(
    lambda sign, digits, exp: Decimal((sign, tuple(int(c) for c in str(digits)), exp)),
    st.integers(0, 1),
    st.integers(0, 10**40),
    st.integers(-60, 60),
)
timestamps = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
utc_timestamps = timestamps.map(lambda d: d.replace(tzinfo=dt.UTC))
intervals = st.timedeltas(min_value=dt.timedelta(days=-(10**6)), max_value=dt.timedelta(days=10**6))

STRATEGIES: dict[int, st.SearchStrategy[Any]] = {
    Oid.BOOL: st.booleans(),
    Oid.INT2: st.integers(-(2**15), 2**15 - 1),
    Oid.INT4: st.integers(-(2**31), 2**31 - 1),
    Oid.INT8: st.integers(-(2**63), 2**63 - 1),
    Oid.OID: st.integers(0, 2**32 - 1),
    Oid.FLOAT4: st.floats(width=32),
    Oid.FLOAT8: st.floats(),
    Oid.NUMERIC: decimals
    | st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]),
    Oid.TEXT: st.text(),
    Oid.VARCHAR: st.text(),
    Oid.NAME: st.text(max_size=20),
    Oid.UNKNOWN: st.text(),
    Oid.BYTEA: st.binary(),
    Oid.DATE: st.dates(),
    Oid.TIMESTAMP: timestamps,
    Oid.TIMESTAMPTZ: utc_timestamps,
    Oid.INTERVAL: intervals,
    Oid.UUID: st.uuids(),
    Oid.JSON: json_values,
    Oid.JSONB: json_values,
}


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        if a.is_nan() or b.is_nan():
            return a.is_nan() and b.is_nan()
        if not (a.is_finite() and b.is_finite()):
            return a == b
        ea, eb = a.as_tuple().exponent, b.as_tuple().exponent
        assert isinstance(ea, int) and isinstance(eb, int)
        # PostgreSQL keeps the scale (digits after the point), not positive exponents
        return a == b and (ea == eb or min(ea, eb) >= 0)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("oid", sorted(STRATEGIES), ids=lambda o: t.type_name(o))
@given(data=st.data())
def test_binary_and_text_roundtrip(oid: int, data: st.DataObject) -> None:
    value = data.draw(STRATEGIES[oid])
    for fmt in (0, 1):
        encoded = t.encode(oid, value, fmt)
        assert encoded is not None
        decoded = t.decode(oid, encoded, fmt)
        assert same(decoded, value), (fmt, encoded, decoded, value)


def test_null_everywhere() -> None:
    for oid in t.TYPES:
        for fmt in (0, 1):
            assert t.encode(oid, None, fmt) is None
            assert t.decode(oid, None, fmt) is None
            assert t.encoder(oid, fmt)(None) is None


@pytest.mark.parametrize(
    ("oid", "value", "text"),
    [
        (Oid.BOOL, True, "t"),
        (Oid.FLOAT8, 1.0, "1"),
        (Oid.FLOAT8, 1e15, "1e+15"),
        (Oid.FLOAT8, 123456789012345.0, "123456789012345"),
        (Oid.FLOAT8, 0.0001, "0.0001"),
        (Oid.FLOAT8, 1e-05, "1e-05"),
        (Oid.FLOAT8, -0.0, "-0"),
        (Oid.FLOAT8, math.inf, "Infinity"),
        (Oid.FLOAT8, 0.1 + 0.2, "0.30000000000000004"),
        (Oid.FLOAT4, 0.1, "0.1"),
        (Oid.FLOAT4, 1e6, "1e+06"),
        (Oid.FLOAT4, 100000.0, "100000"),
        (Oid.NUMERIC, Decimal("1E+5"), "100000"),
        (Oid.NUMERIC, Decimal("-0.00"), "0.00"),
        (Oid.NUMERIC, Decimal("NaN"), "NaN"),
        (Oid.BYTEA, b"\x00\xab", "\\x00ab"),
        (Oid.DATE, dt.date(2000, 1, 1), "2000-01-01"),
        (Oid.DATE, dt.date.max, "infinity"),
        (Oid.TIMESTAMP, dt.datetime(2020, 5, 6, 7, 8, 9, 500000), "2020-05-06 07:08:09.5"),
        (Oid.TIMESTAMP, dt.datetime(33, 1, 1), "0033-01-01 00:00:00"),
        (
            Oid.TIMESTAMPTZ,
            dt.datetime(2020, 5, 6, 9, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2020-05-06 09:08:09+02",  # in the value's own zone (the session's TimeZone)
        ),
        (Oid.INTERVAL, dt.timedelta(0), "00:00:00"),
        (Oid.INTERVAL, dt.timedelta(days=1), "1 day"),
        (
            Oid.INTERVAL,
            dt.timedelta(days=-3, hours=-4, microseconds=-10),
            "-3 days -04:00:00.00001",
        ),
        (Oid.INTERVAL, dt.timedelta(days=2, hours=3), "2 days 03:00:00"),
        (Oid.UUID, uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Oid.JSONB, {"a": [1, "é"]}, '{"a": [1, "é"]}'),
    ],
)
def test_text_output(oid: int, value: object, text: str) -> None:
    assert t.encode_text(oid, value) == text


@pytest.mark.parametrize(
    ("value", "header", "digits"),
    [
        (Decimal("0"), (0, 0, 0x0000, 0), ()),
        (Decimal("12345.6789"), (3, 1, 0x0000, 4), (1, 2345, 6789)),
        (Decimal("-0.00012"), (2, -1, 0x4000, 5), (1, 2000)),
        (Decimal("1E+8"), (1, 2, 0x0000, 0), (1,)),
        (Decimal("NaN"), (0, 0, 0xC000, 0), ()),
        (Decimal("-Infinity"), (0, 0, 0xF000, 32), ()),
    ],
)
def test_numeric_binary_format(
    value: Decimal, header: tuple[int, int, int, int], digits: tuple[int, ...]
) -> None:
    expected = struct.pack("!hhHH", *header) + struct.pack(f"!{len(digits)}h", *digits)
    assert t.encode_binary(Oid.NUMERIC, value) == expected


def test_binary_forms() -> None:
    assert t.encode_binary(Oid.DATE, dt.date(2000, 1, 2)) == struct.pack("!i", 1)
    assert t.encode_binary(Oid.TIMESTAMP, dt.datetime(2000, 1, 1, 0, 0, 1)) == struct.pack(
        "!q", 10**6
    )
    assert t.encode_binary(Oid.INTERVAL, dt.timedelta(days=-1, hours=1)) == struct.pack(
        "!qii", -23 * 3600 * 10**6, 0, 0
    )
    assert t.encode_binary(Oid.JSONB, [1]) == b"\x01[1]"
    assert t.decode_binary(Oid.INTERVAL, struct.pack("!qii", 0, 1, 2)) == dt.timedelta(days=61)
    assert t.decode_binary(Oid.DATE, struct.pack("!i", 0x7FFFFFFF)) == dt.date.max
    assert t.decode_binary(Oid.TIMESTAMPTZ, struct.pack("!q", -(2**63))) == dt.datetime.min.replace(
        tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    ("oid", "text", "value"),
    [
        (Oid.BOOL, " YES ", True),
        (Oid.BOOL, "of", False),
        (Oid.INT4, " -12 ", -12),
        (Oid.FLOAT8, "-Infinity", -math.inf),
        (Oid.NUMERIC, "1.50", Decimal("1.50")),
        (Oid.BYTEA, "a\\\\b\\001", b"a\\b\x01"),
        (Oid.TIMESTAMP, "2020-01-02T03:04:05.1234567", dt.datetime(2020, 1, 2, 3, 4, 5, 123457)),
        (Oid.TIMESTAMP, "2020-01-02 03:04:60", dt.datetime(2020, 1, 2, 3, 5)),
        (
            Oid.TIMESTAMPTZ,
            "2020-01-02 03:04:05-0130",
            dt.datetime(2020, 1, 2, 4, 34, 5, tzinfo=dt.UTC),
        ),
        (
            Oid.TIMESTAMPTZ,
            "2020-01-02 03:04:05+05:30:15",
            dt.datetime(2020, 1, 1, 21, 33, 50, tzinfo=dt.UTC),
        ),
        (Oid.TIMESTAMPTZ, "2020-01-02", dt.datetime(2020, 1, 2, tzinfo=dt.UTC)),
        (Oid.DATE, "-infinity", dt.date.min),
        (
            Oid.INTERVAL,
            "1 year 2 mons 3 days 04:05:06.5",
            dt.timedelta(days=360 + 60 + 3, seconds=14706.5),
        ),
        (Oid.INTERVAL, "@ 3 hours ago", dt.timedelta(hours=-3)),
        (Oid.INTERVAL, "1.5 days", dt.timedelta(days=1, hours=12)),
        (Oid.INTERVAL, "P1Y2M3DT4H5M6S", dt.timedelta(days=423, hours=4, minutes=5, seconds=6)),
        (Oid.INTERVAL, "-1 days +23:00:00", dt.timedelta(hours=-1)),
        (Oid.INTERVAL, "90", dt.timedelta(seconds=90)),
        (
            Oid.UUID,
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (12345, "whatever", "whatever"),  # unknown OID: text stays text
    ],
)
def test_text_input(oid: int, text: str, value: object) -> None:
    assert t.decode_text(oid, text) == value


@pytest.mark.parametrize(
    ("oid", "data", "fmt", "code"),
    [
        (Oid.INT4, b"abc", 0, "22P02"),
        (Oid.INT2, b"40000", 0, "22003"),
        (Oid.INT4, b"\x00\x01", 1, "22P03"),
        (Oid.BOOL, b"maybe", 0, "22P02"),
        (Oid.NUMERIC, b"1.2.3", 0, "22P02"),
        (Oid.NUMERIC, b"\x00\x01\x00\x00\x00\x00\x00\x00\x27\x10", 1, "22P03"),
        (Oid.DATE, b"2021-02-30", 0, "22008"),
        (Oid.DATE, b"yesterday", 0, "22P02"),
        (Oid.TIMESTAMP, b"20:00", 0, "22P02"),
        (Oid.INTERVAL, b"3 fortnights", 0, "22P02"),
        (Oid.UUID, b"not-a-uuid", 0, "22P02"),
        (Oid.JSONB, b"{", 0, "22P02"),
        (Oid.JSONB, b"\x02{}", 1, "22P03"),
        (Oid.TEXT, b"\xff", 0, "22021"),
        (Oid.BYTEA, b"\\xz", 0, "22P02"),
        (Oid.FLOAT8, b"inf", 0, "22P02"),
    ],
)
def test_decode_errors(oid: int, data: bytes, fmt: int, code: str) -> None:
    with pytest.raises(PgError) as info:
        t.decode(oid, data, fmt)
    assert info.value.sqlstate == code


@pytest.mark.parametrize(
    ("oid", "value", "code"),
    [
        (Oid.INT2, 2**15, "22003"),
        (Oid.INT4, "12", "XX000"),
        (Oid.BOOL, "yes", "XX000"),
        (Oid.NUMERIC, Decimal("1E-20000"), "22003"),
        (Oid.JSONB, {"x": math.nan}, "XX000"),
        (Oid.FLOAT4, 1e300, "22003"),
        (99999, 3, "0A000"),  # unknown OID has no binary form
    ],
)
def test_encode_errors(oid: int, value: object, code: str) -> None:
    with pytest.raises(PgError) as info:
        t.encode(oid, value, 1)
    assert info.value.sqlstate == code


def test_infer_oid_and_sizes() -> None:
    assert [t.infer_oid(v) for v in (True, 1, 1.0, Decimal(1), "s", b"b", None)] == [
        Oid.BOOL,
        Oid.INT8,
        Oid.FLOAT8,
        Oid.NUMERIC,
        Oid.TEXT,
        Oid.BYTEA,
        Oid.TEXT,
    ]
    assert t.infer_oid(dt.datetime(2020, 1, 1, tzinfo=dt.UTC)) == Oid.TIMESTAMPTZ
    assert t.infer_oid({"a": 1}) == Oid.JSONB
    assert (t.type_size(Oid.INT8), t.type_size(Oid.TEXT), t.type_size(424242)) == (8, -1, -1)
    # an unknown OID encodes text by the value's natural type
    assert t.encode(424242, 1.5, 0) == b"1.5"
