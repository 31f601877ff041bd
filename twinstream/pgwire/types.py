"""PostgreSQL type OIDs and the text and binary encodings of the types twinstream speaks.

| type | OID | Python value |
|---|---|---|
| bool | 16 | bool |
| int2 / int4 / int8 / oid | 21 / 23 / 20 / 26 | int (range-checked) |
| float4 / float8 | 700 / 701 | float |
| numeric | 1700 | decimal.Decimal (NaN, ±Infinity included) |
| text / varchar / bpchar / name / "char" / unknown | 25 / 1043 / 1042 / 19 / 18 / 705 | str |
| bytea | 17 | bytes |
| date | 1082 | datetime.date |
| timestamp | 1114 | naive datetime.datetime |
| timestamptz | 1184 | aware datetime.datetime (decoded in UTC; see below) |
| interval | 1186 | datetime.timedelta (months count as 30 days), or `Interval` to send months |
| uuid | 2950 | uuid.UUID |
| json / jsonb | 114 / 3802 | the decoded JSON value (dict, list, str, int, float, bool, None) |

Conventions (the same as asyncpg's where they overlap):
- SQL NULL is Python None; `encode` maps None to None (a NULL column value), `decode` the same.
- PostgreSQL's `infinity` / `-infinity` dates and timestamps are `date.max` / `date.min`
  (`datetime.max` / `datetime.min`), and those Python values encode as the infinities.
- intervals: PostgreSQL keeps (months, days, microseconds); Python's timedelta has no months.
  A decoded month counts as 30 days (PostgreSQL's own `justify_days` rule) and a year as 360
  days; encoding a timedelta sends months = 0 (an `Interval(months, days, microseconds)`
  sends its months). So `interval '1 month'` arrives as 30 days and goes
  back as `30 days`: comparable, not identical. Days and the time part keep the same sign.
- timestamptz text output is in the value's own zone: the backend hands out values in the
  session's TimeZone (naive values count as UTC); binary output is the UTC instant.
- text output follows the session settings the server announces: DateStyle ISO, TimeZone UTC,
  IntervalStyle postgres, extra_float_digits 1 (shortest exact floats), bytea_output hex.
- text input accepts the ISO forms (and what the text output produces), not every input
  syntax PostgreSQL knows (no `BC` dates, no `allballs`, no localized month names).
- binary formats are PostgreSQL's `typsend`/`typrecv` formats (numeric as base-10000 digits
  with weight/sign/dscale; jsonb with its version byte 1).

Errors are `PgError`s with PostgreSQL's SQLSTATE: 22P02 (bad text), 22P03 (bad binary),
22003 (out of range), 22008 (date/time out of range), 22021 (not UTF-8).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from twinstream.pgwire.errors import PgError, SqlState

__all__ = [
    "TYPES",
    "Interval",
    "Oid",
    "PgType",
    "decode",
    "decode_binary",
    "decode_text",
    "decoder",
    "encode",
    "encode_binary",
    "encode_text",
    "encoder",
    "infer_oid",
    "timestamp_has_zone",
    "type_name",
    "type_size",
]


class Oid:
    """The OIDs of the built-in types pgwire knows (PostgreSQL's pg_type.oid)."""

    BOOL = 16
    BYTEA = 17
    CHAR = 18
    NAME = 19
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    OID = 26
    JSON = 114
    FLOAT4 = 700
    FLOAT8 = 701
    UNKNOWN = 705
    BPCHAR = 1042
    VARCHAR = 1043
    DATE = 1082
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    INTERVAL = 1186
    NUMERIC = 1700
    UUID = 2950
    JSONB = 3802


@dataclass(frozen=True)
class PgType:
    oid: int
    name: str
    #: pg_type.typlen: bytes of a fixed-size type, -1 for variable length.
    size: int
    text_out: Callable[[Any], str]
    text_in: Callable[[str], Any]
    binary_out: Callable[[Any], bytes]
    binary_in: Callable[[bytes], Any]


_UTC = dt.UTC
_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_PG_EPOCH_ORDINAL = _PG_EPOCH_DATE.toordinal()
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=_UTC)
_DATE_POS_INF = 0x7FFFFFFF
_DATE_NEG_INF = -0x80000000
_TS_POS_INF = 2**63 - 1
_TS_NEG_INF = -(2**63)
_US_PER_DAY = 86_400_000_000
_ONE_US = dt.timedelta(microseconds=1)


def _out_of_range(value: object, type_name: str) -> PgError:
    return PgError(
        SqlState.NUMERIC_VALUE_OUT_OF_RANGE, f'value "{value}" is out of range for type {type_name}'
    )


def _bad_text(type_name: str, text: str) -> PgError:
    return PgError(
        SqlState.INVALID_TEXT_REPRESENTATION, f'invalid input syntax for type {type_name}: "{text}"'
    )


def _bad_binary(type_name: str, why: str) -> PgError:
    return PgError(
        SqlState.INVALID_BINARY_REPRESENTATION,
        f"incorrect binary data format for type {type_name}: {why}",
    )


def _datetime_range(what: str) -> PgError:
    return PgError(SqlState.DATETIME_FIELD_OVERFLOW, f"{what} out of range")


def _wrong_value(value: object, type_name: str) -> PgError:
    return PgError(
        SqlState.INTERNAL_ERROR,
        f"cannot encode Python {type(value).__name__} value {value!r} as type {type_name}",
    )


# --------------------------------------------------------------------------- bool

_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _bool_text_in(text: str) -> bool:
    s = text.strip().lower()
    if s and s not in ("o",):
        if any(w.startswith(s) for w in _TRUE_WORDS):
            return True
        if any(w.startswith(s) for w in _FALSE_WORDS):
            return False
    raise _bad_text("boolean", text)


def _as_bool(v: object) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise _wrong_value(v, "boolean")


def _bool_binary_in(data: bytes) -> bool:
    if len(data) != 1:
        raise _bad_binary("boolean", f"{len(data)} bytes")
    return data != b"\0"


BOOL = PgType(
    Oid.BOOL,
    "boolean",
    1,
    lambda v: "t" if _as_bool(v) else "f",
    _bool_text_in,
    lambda v: b"\x01" if _as_bool(v) else b"\x00",
    _bool_binary_in,
)


# --------------------------------------------------------------------------- integers


def _int_type(oid: int, name: str, size: int, fmt: str) -> PgType:
    bits = size * 8
    lo, hi = (0, 2**32 - 1) if oid == Oid.OID else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    packer = struct.Struct(fmt)

    def check(v: object) -> int:
        if not isinstance(v, int):
            raise _wrong_value(v, name)
        i = int(v)
        if not lo <= i <= hi:
            raise _out_of_range(i, name)
        return i

    def text_in(text: str) -> int:
        try:
            i = int(text.strip())
        except ValueError:
            raise _bad_text(name, text) from None
        if not lo <= i <= hi:
            raise _out_of_range(text, name)
        return i

    def binary_in(data: bytes) -> int:
        if len(data) != size:
            raise _bad_binary(name, f"{len(data)} bytes")
        return int(packer.unpack(data)[0])

    return PgType(
        oid,
        name,
        size,
        lambda v: str(check(v)),
        text_in,
        lambda v: packer.pack(check(v)),
        binary_in,
    )


INT2 = _int_type(Oid.INT2, "smallint", 2, "!h")
INT4 = _int_type(Oid.INT4, "integer", 4, "!i")
INT8 = _int_type(Oid.INT8, "bigint", 8, "!q")
OID = _int_type(Oid.OID, "oid", 4, "!I")


# --------------------------------------------------------------------------- floats

_F4 = struct.Struct("!f")
_F8 = struct.Struct("!d")


def _as_float(v: object, name: str) -> float:
    if isinstance(v, float):
        return v
    if isinstance(v, int | Decimal) and not isinstance(v, bool):
        return float(v)
    raise _wrong_value(v, name)


def _to_float32(x: float) -> float:
    try:
        return float(_F4.unpack(_F4.pack(x))[0])
    except OverflowError:
        raise _out_of_range(x, "real") from None


def _shortest_digits(x: float, single: bool) -> tuple[str, int]:
    """The shortest decimal digits that read back as x (> 0), and the exponent of the first."""
    s = repr(x)
    if single:
        for precision in range(0, 9):
            s = f"{x:.{precision}e}"
            try:
                if _F4.unpack(_F4.pack(float(s)))[0] == x:
                    break
            except OverflowError:
                continue
    _sign, digit_tuple, exponent = Decimal(s).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    # value = int(all digits) * 10**exponent; the exponent of the leading digit:
    return digits, len(digit_tuple) - 1 + exponent


def _float_text_out(x: float, single: bool) -> str:
    """PostgreSQL's float4out/float8out with extra_float_digits >= 1 (shortest exact)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0"
    digits, lead = _shortest_digits(abs(x), single)
    fixed_max = 6 if single else 15
    if -4 <= lead < fixed_max:
        if lead >= len(digits) - 1:
            body = digits + "0" * (lead - len(digits) + 1)
        elif lead >= 0:
            body = digits[: lead + 1] + "." + digits[lead + 1 :]
        else:
            body = "0." + "0" * (-lead - 1) + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        body = f"{mantissa}e{'-' if lead < 0 else '+'}{abs(lead):02d}"
    return sign + body


def _float_text_in(name: str, single: bool) -> Callable[[str], float]:
    def text_in(text: str) -> float:
        s = text.strip()
        if s.lower() in ("inf", "+inf", "-inf"):
            raise _bad_text(name, text)
        try:
            x = float(s)
        except ValueError:
            raise _bad_text(name, text) from None
        return _to_float32(x) if single else x

    return text_in


def _float_binary_in(packer: struct.Struct, name: str) -> Callable[[bytes], float]:
    def binary_in(data: bytes) -> float:
        if len(data) != packer.size:
            raise _bad_binary(name, f"{len(data)} bytes")
        return float(packer.unpack(data)[0])

    return binary_in


FLOAT4 = PgType(
    Oid.FLOAT4,
    "real",
    4,
    lambda v: _float_text_out(_to_float32(_as_float(v, "real")), True),
    _float_text_in("real", True),
    lambda v: _F4.pack(_to_float32(_as_float(v, "real"))),
    _float_binary_in(_F4, "real"),
)
FLOAT8 = PgType(
    Oid.FLOAT8,
    "double precision",
    8,
    lambda v: _float_text_out(_as_float(v, "double precision"), False),
    _float_text_in("double precision", False),
    lambda v: _F8.pack(_as_float(v, "double precision")),
    _float_binary_in(_F8, "double precision"),
)


# --------------------------------------------------------------------------- numeric

_NUMERIC_POS = 0x0000
_NUMERIC_NEG = 0x4000
_NUMERIC_NAN = 0xC000
_NUMERIC_PINF = 0xD000
_NUMERIC_NINF = 0xF000
_NUMERIC_DSCALE_MAX = 0x3FFF
_NUMERIC_HEADER = struct.Struct("!hhHH")


def _as_decimal(v: object) -> Decimal:
    if isinstance(v, Decimal):
        if v.is_snan():
            raise _wrong_value(v, "numeric")
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return Decimal(v)
    if isinstance(v, float):
        return Decimal(repr(v)) if math.isfinite(v) else Decimal(str(v))
    raise _wrong_value(v, "numeric")


def _numeric_text_out(v: object) -> str:
    d = _as_decimal(v)
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "-Infinity" if d.is_signed() else "Infinity"
    if d.is_zero():
        d = abs(d)
    return format(d, "f")


def _numeric_text_in(text: str) -> Decimal:
    s = text.strip()
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise _bad_text("numeric", text) from None
    if d.is_snan():
        raise _bad_text("numeric", text)
    if d.is_nan():
        return Decimal("NaN")
    return d


def _numeric_binary_out(v: object) -> bytes:
    d = _as_decimal(v)
    if d.is_nan():
        return _NUMERIC_HEADER.pack(0, 0, _NUMERIC_NAN, 0)
    if d.is_infinite():
        # dscale 32 is what PostgreSQL's numeric_send puts there (its short-header dscale
        # bits of the special value); receivers ignore it, we match it byte for byte.
        return _NUMERIC_HEADER.pack(0, 0, _NUMERIC_NINF if d.is_signed() else _NUMERIC_PINF, 32)
    sign, digit_tuple, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    dscale = max(0, -exponent)
    if dscale > _NUMERIC_DSCALE_MAX:
        raise _out_of_range(d, "numeric")
    n = int("".join(map(str, digit_tuple)) or "0")
    # value = n * 10**e with e a multiple of 4: each base-10000 digit is then 4 decimal digits.
    shift = exponent % 4
    n *= 10**shift
    e = exponent - shift
    groups: list[int] = []
    while n:
        n, g = divmod(n, 10000)
        groups.append(g)
    groups.reverse()
    while groups and groups[-1] == 0:
        groups.pop()
        e += 4
    weight = len(groups) - 1 + e // 4 if groups else 0
    if not -32768 <= weight <= 32767:
        raise _out_of_range(d, "numeric")
    flag = _NUMERIC_NEG if sign and groups else _NUMERIC_POS
    return _NUMERIC_HEADER.pack(len(groups), weight, flag, dscale) + struct.pack(
        f"!{len(groups)}h", *groups
    )


def _numeric_binary_in(data: bytes) -> Decimal:
    if len(data) < 8:
        raise _bad_binary("numeric", "short header")
    ndigits, weight, flag, dscale = _NUMERIC_HEADER.unpack_from(data)
    if flag == _NUMERIC_NAN:
        return Decimal("NaN")
    if flag == _NUMERIC_PINF:
        return Decimal("Infinity")
    if flag == _NUMERIC_NINF:
        return Decimal("-Infinity")
    if flag not in (_NUMERIC_POS, _NUMERIC_NEG) or ndigits < 0 or dscale > _NUMERIC_DSCALE_MAX:
        raise _bad_binary("numeric", "invalid header")
    if len(data) != 8 + 2 * ndigits:
        raise _bad_binary("numeric", "length does not match digit count")
    n = 0
    for g in struct.unpack_from(f"!{ndigits}h", data, 8):
        if not 0 <= g < 10000:
            raise _bad_binary("numeric", "invalid digit")
        n = n * 10000 + g
    e = 4 * (weight - ndigits + 1)
    target = -dscale
    if e > target:
        n *= 10 ** (e - target)
    elif e < target:
        n //= 10 ** (target - e)
    digits = tuple(int(c) for c in str(n))
    return Decimal((1 if flag == _NUMERIC_NEG and n else 0, digits, target))


NUMERIC = PgType(
    Oid.NUMERIC,
    "numeric",
    -1,
    _numeric_text_out,
    _numeric_text_in,
    _numeric_binary_out,
    _numeric_binary_in,
)


# --------------------------------------------------------------------------- text-like


def _as_str(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        raise _wrong_value(v, "text")
    return str(v)


def _utf8(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise PgError(
            SqlState.CHARACTER_NOT_IN_REPERTOIRE,
            f'invalid byte sequence for encoding "UTF8": 0x{data[exc.start : exc.start + 1].hex()}',
        ) from None


def _encode_utf8(s: str) -> bytes:
    try:
        return s.encode()
    except UnicodeEncodeError:
        raise PgError(
            SqlState.CHARACTER_NOT_IN_REPERTOIRE, "string is not encodable as UTF8"
        ) from None


def _text_type(oid: int, name: str) -> PgType:
    return PgType(
        oid,
        name,
        -1 if oid != Oid.NAME else 64,
        _as_str,
        lambda s: s,
        lambda v: _encode_utf8(_as_str(v)),
        _utf8,
    )


TEXT = _text_type(Oid.TEXT, "text")
VARCHAR = _text_type(Oid.VARCHAR, "character varying")
BPCHAR = _text_type(Oid.BPCHAR, "character")
NAME = _text_type(Oid.NAME, "name")
UNKNOWN = _text_type(Oid.UNKNOWN, "unknown")
CHAR = PgType(
    Oid.CHAR, '"char"', 1, _as_str, lambda s: s, lambda v: _encode_utf8(_as_str(v)), _utf8
)


# --------------------------------------------------------------------------- bytea


def _as_bytes(v: object) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    raise _wrong_value(v, "bytea")


_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-3][0-7][0-7])")


def _bytea_text_in(text: str) -> bytes:
    if text.startswith("\\x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise _bad_text("bytea", text) from None
    raw = _encode_utf8(text)
    if b"\\" not in raw:
        return raw
    out = bytearray()
    pos = 0
    for match in _BYTEA_ESCAPE.finditer(raw):
        if b"\\" in raw[pos : match.start()]:
            raise _bad_text("bytea", text)
        out += raw[pos : match.start()]
        esc = match.group(1)
        out += b"\\" if esc == b"\\" else bytes([int(esc, 8)])
        pos = match.end()
    if b"\\" in raw[pos:]:
        raise _bad_text("bytea", text)
    out += raw[pos:]
    return bytes(out)


BYTEA = PgType(
    Oid.BYTEA,
    "bytea",
    -1,
    lambda v: "\\x" + _as_bytes(v).hex(),
    _bytea_text_in,
    _as_bytes,
    bytes,
)


# --------------------------------------------------------------------------- date

_I32 = struct.Struct("!i")
_I64 = struct.Struct("!q")
_DATE_RE = re.compile(r"^\s*(\d{4,})-(\d{1,2})-(\d{1,2})\s*$")


def _as_date(v: object) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    raise _wrong_value(v, "date")


def _date_text_out(v: object) -> str:
    d = _as_date(v)
    if d == dt.date.max:
        return "infinity"
    if d == dt.date.min:
        return "-infinity"
    return d.isoformat()


def _date_text_in(text: str) -> dt.date:
    s = text.strip().lower()
    if s == "infinity" or s == "+infinity":
        return dt.date.max
    if s == "-infinity":
        return dt.date.min
    if s == "epoch":
        return dt.date(1970, 1, 1)
    match = _DATE_RE.match(s)
    if match is None:
        raise _bad_text("date", text)
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise _datetime_range(f'date/time field value: "{text}"') from None


def _date_binary_out(v: object) -> bytes:
    d = _as_date(v)
    if d == dt.date.max:
        return _I32.pack(_DATE_POS_INF)
    if d == dt.date.min:
        return _I32.pack(_DATE_NEG_INF)
    return _I32.pack(d.toordinal() - _PG_EPOCH_ORDINAL)


def _date_binary_in(data: bytes) -> dt.date:
    if len(data) != 4:
        raise _bad_binary("date", f"{len(data)} bytes")
    (days,) = _I32.unpack(data)
    if days == _DATE_POS_INF:
        return dt.date.max
    if days == _DATE_NEG_INF:
        return dt.date.min
    try:
        return dt.date.fromordinal(days + _PG_EPOCH_ORDINAL)
    except (ValueError, OverflowError):
        raise _datetime_range("date") from None


DATE = PgType(Oid.DATE, "date", 4, _date_text_out, _date_text_in, _date_binary_out, _date_binary_in)


# --------------------------------------------------------------------------- timestamps

_TS_RE = re.compile(
    r"^\s*(\d{4,})-(\d{1,2})-(\d{1,2})"
    r"(?:[ tT]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d*))?)?)?"
    r"\s*(z|utc|gmt|[+-]\d{1,2}(?::?\d{2}(?::?\d{2})?)?)?\s*$",
    re.IGNORECASE,
)


def _parse_timestamp(text: str, type_name: str) -> tuple[dt.datetime, dt.timedelta | None]:
    """(naive local datetime, UTC offset or None) of an ISO timestamp."""
    match = _TS_RE.match(text)
    if match is None:
        raise _bad_text(type_name, text)
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        base = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0))
        extra = dt.timedelta(seconds=int(second or 0))
        if frac:
            extra += dt.timedelta(microseconds=round(Decimal("0." + frac) * 1_000_000))
        value = base + extra
    except (ValueError, OverflowError):
        raise _datetime_range(f'date/time field value: "{text}"') from None
    offset: dt.timedelta | None = None
    if zone:
        if zone.lower() in ("z", "utc", "gmt"):
            offset = dt.timedelta(0)
        else:
            offset = _parse_offset(zone[1:])
            if zone[0] == "-":
                offset = -offset
    return value, offset


def timestamp_has_zone(text: str) -> bool:
    """Whether a timestamp literal names its zone (else PostgreSQL reads it in the session's
    TimeZone). Unparsable text counts as zoned: decoding it reports the error."""
    match = _TS_RE.match(text)
    return match is None or match.group(8) is not None


def _parse_offset(body: str) -> dt.timedelta:
    if ":" in body:
        fields = [int(f) for f in body.split(":")]
    elif len(body) <= 2:
        fields = [int(body)]
    elif len(body) <= 4:
        fields = [int(body[:-2]), int(body[-2:])]
    else:
        fields = [int(body[:-4]), int(body[-4:-2]), int(body[-2:])]
    fields += [0] * (3 - len(fields))
    return dt.timedelta(hours=fields[0], minutes=fields[1], seconds=fields[2])


def _frac(us: int) -> str:
    return f".{us:06d}".rstrip("0") if us else ""


def _as_naive(v: object) -> dt.datetime:
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None and v.utcoffset() is not None:
            return v.astimezone(_UTC).replace(tzinfo=None)
        return v
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    raise _wrong_value(v, "timestamp")


def _as_utc(v: object) -> dt.datetime:
    if isinstance(v, dt.datetime):
        if v in (dt.datetime.max, dt.datetime.min):
            return v.replace(tzinfo=_UTC)
        if v.tzinfo is None or v.utcoffset() is None:
            return v.replace(tzinfo=_UTC)
        return v.astimezone(_UTC)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day, tzinfo=_UTC)
    raise _wrong_value(v, "timestamp with time zone")


_MAX_UTC = dt.datetime.max.replace(tzinfo=_UTC)
_MIN_UTC = dt.datetime.min.replace(tzinfo=_UTC)


def _iso_date(t: dt.datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def _timestamp_text_out_iso(v: object) -> str:
    t = _as_naive(v)
    if t == dt.datetime.max:
        return "infinity"
    if t == dt.datetime.min:
        return "-infinity"
    return _iso_date(t) + _frac(t.microsecond)


def _offset_text(off: dt.timedelta) -> str:
    """PostgreSQL's zone offset: `+00`, `-05`, `+05:30`, `+00:19:32`."""
    total = int(off.total_seconds())
    sign = "-" if total < 0 else "+"
    hh, rest = divmod(abs(total), 3600)
    mm, ss = divmod(rest, 60)
    text = f"{sign}{hh:02d}"
    if mm or ss:
        text += f":{mm:02d}"
    if ss:
        text += f":{ss:02d}"
    return text


def _timestamptz_text_out(v: object) -> str:
    """In the value's own zone (the session's TimeZone: the engine converts), UTC if naive."""
    t = _as_utc(v)
    if t == _MAX_UTC:
        return "infinity"
    if t == _MIN_UTC:
        return "-infinity"
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        off = v.utcoffset()
        if off:
            return _iso_date(v) + _frac(v.microsecond) + _offset_text(off)
    return _iso_date(t) + _frac(t.microsecond) + "+00"


def _infinity(text: str) -> int:
    s = text.strip().lower()
    if s in ("infinity", "+infinity"):
        return 1
    if s == "-infinity":
        return -1
    return 0


def _timestamp_text_in(text: str) -> dt.datetime:
    inf = _infinity(text)
    if inf:
        return dt.datetime.max if inf > 0 else dt.datetime.min
    if text.strip().lower() == "epoch":
        return dt.datetime(1970, 1, 1)
    value, _offset = _parse_timestamp(text, "timestamp")
    return value


def _timestamptz_text_in(text: str) -> dt.datetime:
    inf = _infinity(text)
    if inf:
        return _MAX_UTC if inf > 0 else _MIN_UTC
    if text.strip().lower() == "epoch":
        return dt.datetime(1970, 1, 1, tzinfo=_UTC)
    value, offset = _parse_timestamp(text, "timestamp with time zone")
    try:
        return (value - (offset or dt.timedelta(0))).replace(tzinfo=_UTC)
    except OverflowError:
        raise _datetime_range("timestamp") from None


def _us_since_epoch(t: dt.datetime, epoch: dt.datetime) -> int:
    return (t - epoch) // _ONE_US


def _timestamp_binary_out(v: object) -> bytes:
    t = _as_naive(v)
    if t == dt.datetime.max:
        return _I64.pack(_TS_POS_INF)
    if t == dt.datetime.min:
        return _I64.pack(_TS_NEG_INF)
    return _I64.pack(_us_since_epoch(t, _PG_EPOCH))


def _timestamptz_binary_out(v: object) -> bytes:
    t = _as_utc(v)
    if t == _MAX_UTC:
        return _I64.pack(_TS_POS_INF)
    if t == _MIN_UTC:
        return _I64.pack(_TS_NEG_INF)
    return _I64.pack(_us_since_epoch(t, _PG_EPOCH_UTC))


def _timestamp_binary_in_with(epoch: dt.datetime, name: str) -> Callable[[bytes], dt.datetime]:
    pos_inf = dt.datetime.max.replace(tzinfo=epoch.tzinfo)
    neg_inf = dt.datetime.min.replace(tzinfo=epoch.tzinfo)

    def binary_in(data: bytes) -> dt.datetime:
        if len(data) != 8:
            raise _bad_binary(name, f"{len(data)} bytes")
        (us,) = _I64.unpack(data)
        if us == _TS_POS_INF:
            return pos_inf
        if us == _TS_NEG_INF:
            return neg_inf
        try:
            return epoch + dt.timedelta(microseconds=us)
        except OverflowError:
            raise _datetime_range("timestamp") from None

    return binary_in


TIMESTAMP = PgType(
    Oid.TIMESTAMP,
    "timestamp without time zone",
    8,
    _timestamp_text_out_iso,
    _timestamp_text_in,
    _timestamp_binary_out,
    _timestamp_binary_in_with(_PG_EPOCH, "timestamp"),
)
TIMESTAMPTZ = PgType(
    Oid.TIMESTAMPTZ,
    "timestamp with time zone",
    8,
    _timestamptz_text_out,
    _timestamptz_text_in,
    _timestamptz_binary_out,
    _timestamp_binary_in_with(_PG_EPOCH_UTC, "timestamp with time zone"),
)


# --------------------------------------------------------------------------- interval

_INTERVAL = struct.Struct("!qii")


@dataclass(frozen=True)
class Interval:
    """An interval with its months kept (PostgreSQL's (months, days, microseconds)); backends
    hand it out where a timedelta would lose the months. It encodes exactly; decoding still
    gives timedelta."""

    months: int = 0
    days: int = 0
    microseconds: int = 0


def _interval_parts(td: dt.timedelta) -> tuple[int, int]:
    """(days, microseconds) with the same sign, days truncated toward zero."""
    total = td // _ONE_US
    days = abs(total) // _US_PER_DAY * (1 if total >= 0 else -1)
    return days, total - days * _US_PER_DAY


def _interval_fields(v: object) -> tuple[int, int, int]:
    """(months, days, microseconds) of a timedelta or Interval."""
    if isinstance(v, Interval):
        return v.months, v.days, v.microseconds
    if isinstance(v, dt.timedelta):
        days, us = _interval_parts(v)
        return 0, days, us
    raise _wrong_value(v, "interval")


def _interval_text_out(v: object) -> str:
    """IntervalStyle postgres: `1 year 2 mons -3 days +04:05:06` (a field after a negative
    one gets an explicit `+`, as PostgreSQL prints it)."""
    months, days, us = _interval_fields(v)
    parts: list[str] = []
    before_negative = False

    def add(value: int, unit: str) -> None:
        nonlocal before_negative
        if value == 0:
            return
        sign = "+" if before_negative and value > 0 else ""
        parts.append(f"{sign}{value} {unit}{'' if value == 1 else 's'}")
        before_negative = value < 0

    years = abs(months) // 12 * (1 if months >= 0 else -1)
    add(years, "year")
    add(months - years * 12, "mon")
    add(days, "day")
    if us or not parts:
        sign = "-" if us < 0 else ("+" if before_negative else "")
        us = abs(us)
        seconds, micro = divmod(us, 1_000_000)
        minutes, sec = divmod(seconds, 60)
        hours, minute = divmod(minutes, 60)
        parts.append(f"{sign}{hours:02d}:{minute:02d}:{sec:02d}{_frac(micro)}")
    return " ".join(parts)


def _interval_binary_out(v: object) -> bytes:
    months, days, us = _interval_fields(v)
    if not -(2**31) <= days < 2**31 or not -(2**31) <= months < 2**31:
        raise _datetime_range("interval")
    return _INTERVAL.pack(us, days, months)


def _interval_from(months: Decimal | int, days: Decimal | int, us: Decimal | int) -> dt.timedelta:
    total = (Decimal(months) * 30 + Decimal(days)) * _US_PER_DAY + Decimal(us)
    try:
        return dt.timedelta(microseconds=int(total.to_integral_value()))
    except OverflowError:
        raise _datetime_range("interval") from None


def _interval_binary_in(data: bytes) -> dt.timedelta:
    if len(data) != 16:
        raise _bad_binary("interval", f"{len(data)} bytes")
    us, days, months = _INTERVAL.unpack(data)
    return _interval_from(months, days, us)


# unit → (months, days, microseconds) of one unit
_INTERVAL_UNITS: dict[str, tuple[int, int, int]] = {}
for _names, _value in (
    (("microsecond", "microseconds", "us", "usec", "usecs", "useconds"), (0, 0, 1)),
    (("millisecond", "milliseconds", "ms", "msec", "msecs", "mseconds"), (0, 0, 1000)),
    (("second", "seconds", "s", "sec", "secs"), (0, 0, 1_000_000)),
    (("minute", "minutes", "m", "min", "mins"), (0, 0, 60_000_000)),
    (("hour", "hours", "h", "hr", "hrs"), (0, 0, 3_600_000_000)),
    (("day", "days", "d"), (0, 1, 0)),
    (("week", "weeks", "w"), (0, 7, 0)),
    (("month", "months", "mon", "mons"), (1, 0, 0)),
    (("year", "years", "y", "yr", "yrs"), (12, 0, 0)),
    (("decade", "decades"), (120, 0, 0)),
    (("century", "centuries"), (1200, 0, 0)),
    (("millennium", "millennia", "millenniums"), (12000, 0, 0)),
):
    for _name in _names:
        _INTERVAL_UNITS[_name] = _value

_INTERVAL_TOKEN = re.compile(
    r"\s*(?:(?P<time>[+-]?\d+:\d{1,2}(?::\d{1,2}(?:\.\d*)?)?)"
    r"|(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[a-z]+)?"
    r"|(?P<word>[a-z]+))"
)
_ISO_INTERVAL = re.compile(
    r"^p(?:(?P<y>[+-]?[\d.]+)y)?(?:(?P<mo>[+-]?[\d.]+)m)?(?:(?P<w>[+-]?[\d.]+)w)?"
    r"(?:(?P<d>[+-]?[\d.]+)d)?(?:t(?:(?P<h>[+-]?[\d.]+)h)?(?:(?P<mi>[+-]?[\d.]+)m)?"
    r"(?:(?P<s>[+-]?[\d.]+)s)?)?$"
)


def _interval_text_in(text: str) -> dt.timedelta:
    s = text.strip().lower()
    if s.startswith("@"):
        s = s[1:]
    months = Decimal(0)
    days = Decimal(0)
    us = Decimal(0)
    try:
        iso = _ISO_INTERVAL.match(s) if s.startswith("p") else None
        if iso is not None:
            g = {k: Decimal(v) for k, v in iso.groupdict().items() if v is not None}
            if not g:
                raise _bad_text("interval", text)
            months = g.get("y", Decimal(0)) * 12 + g.get("mo", Decimal(0))
            days = g.get("w", Decimal(0)) * 7 + g.get("d", Decimal(0))
            us = (
                g.get("h", Decimal(0)) * 3_600_000_000
                + g.get("mi", Decimal(0)) * 60_000_000
                + g.get("s", Decimal(0)) * 1_000_000
            )
            return _interval_from(months, days, us)
        pos = 0
        seen = False
        negate = False
        while pos < len(s):
            match = _INTERVAL_TOKEN.match(s, pos)
            if match is None or match.end() == pos:
                if s[pos:].strip() == "":
                    break
                raise _bad_text("interval", text)
            pos = match.end()
            if match["time"]:
                t = match["time"]
                sign = -1 if t.startswith("-") else 1
                fields = t.lstrip("+-").split(":")
                hours, minutes = Decimal(fields[0]), Decimal(fields[1])
                seconds = Decimal(fields[2]) if len(fields) > 2 else Decimal(0)
                us += sign * (hours * 3_600_000_000 + minutes * 60_000_000 + seconds * 1_000_000)
                seen = True
            elif match["num"]:
                n = Decimal(match["num"])
                unit = match["unit"] or "second"
                if unit == "ago":
                    unit = "second"
                    negate = True
                if unit not in _INTERVAL_UNITS:
                    raise _bad_text("interval", text)
                mo, d, u = _INTERVAL_UNITS[unit]
                months += n * mo
                days += n * d
                us += n * u
                seen = True
            elif match["word"] == "ago" and seen:
                negate = True
            else:
                raise _bad_text("interval", text)
        if not seen:
            raise _bad_text("interval", text)
    except InvalidOperation:
        raise _bad_text("interval", text) from None
    if negate:
        months, days, us = -months, -days, -us
    return _interval_from(months, days, us)


INTERVAL = PgType(
    Oid.INTERVAL,
    "interval",
    16,
    _interval_text_out,
    _interval_text_in,
    _interval_binary_out,
    _interval_binary_in,
)


# --------------------------------------------------------------------------- uuid


def _as_uuid(v: object) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, str):
        return _uuid_text_in(v)
    raise _wrong_value(v, "uuid")


def _uuid_text_in(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise _bad_text("uuid", text) from None


def _uuid_binary_in(data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise _bad_binary("uuid", f"{len(data)} bytes")
    return uuid.UUID(bytes=data)


UUID = PgType(
    Oid.UUID,
    "uuid",
    16,
    lambda v: str(_as_uuid(v)),
    _uuid_text_in,
    lambda v: _as_uuid(v).bytes,
    _uuid_binary_in,
)


# --------------------------------------------------------------------------- json


def _json_text_out(v: object) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise _wrong_value(v, "json") from None


def _json_text_in_named(name: str) -> Callable[[str], Any]:
    def text_in(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise _bad_text(name, text) from None

    return text_in


def _jsonb_binary_in(data: bytes) -> Any:
    if not data or data[0] != 1:
        raise _bad_binary("jsonb", "unsupported jsonb version number")
    return _json_text_in_named("jsonb")(_utf8(data[1:]))


JSON = PgType(
    Oid.JSON,
    "json",
    -1,
    _json_text_out,
    _json_text_in_named("json"),
    lambda v: _encode_utf8(_json_text_out(v)),
    lambda data: _json_text_in_named("json")(_utf8(data)),
)
JSONB = PgType(
    Oid.JSONB,
    "jsonb",
    -1,
    _json_text_out,
    _json_text_in_named("jsonb"),
    lambda v: b"\x01" + _encode_utf8(_json_text_out(v)),
    _jsonb_binary_in,
)


# --------------------------------------------------------------------------- registry

TYPES: dict[int, PgType] = {
    t.oid: t
    for t in (
        BOOL,
        BYTEA,
        CHAR,
        NAME,
        INT8,
        INT2,
        INT4,
        TEXT,
        OID,
        JSON,
        FLOAT4,
        FLOAT8,
        UNKNOWN,
        BPCHAR,
        VARCHAR,
        DATE,
        TIMESTAMP,
        TIMESTAMPTZ,
        INTERVAL,
        NUMERIC,
        UUID,
        JSONB,
    )
}


def type_name(oid: int) -> str:
    t = TYPES.get(oid)
    return t.name if t is not None else f"oid {oid}"


def type_size(oid: int) -> int:
    """pg_type.typlen of a known type; -1 (variable length) otherwise."""
    t = TYPES.get(oid)
    return t.size if t is not None else -1


def infer_oid(value: object) -> int:
    """The natural PostgreSQL type of a Python value (None → text)."""
    if isinstance(value, bool):
        return Oid.BOOL
    if isinstance(value, int):
        return Oid.INT8
    if isinstance(value, float):
        return Oid.FLOAT8
    if isinstance(value, Decimal):
        return Oid.NUMERIC
    if isinstance(value, bytes | bytearray | memoryview):
        return Oid.BYTEA
    if isinstance(value, dt.datetime):
        return Oid.TIMESTAMP if value.tzinfo is None else Oid.TIMESTAMPTZ
    if isinstance(value, dt.date):
        return Oid.DATE
    if isinstance(value, dt.timedelta | Interval):
        return Oid.INTERVAL
    if isinstance(value, uuid.UUID):
        return Oid.UUID
    if isinstance(value, dict | list):
        return Oid.JSONB
    return Oid.TEXT


def _type_for_value(oid: int, value: object) -> PgType:
    t = TYPES.get(oid)
    return t if t is not None else TYPES[infer_oid(value)]


def encode_text(oid: int, value: object) -> str:
    """The text form of a (non-NULL) value; an unknown OID uses the value's natural type."""
    return _type_for_value(oid, value).text_out(value)


def encode_binary(oid: int, value: object) -> bytes:
    """The binary form of a (non-NULL) value. Unknown OIDs accept only bytes (sent as is)."""
    t = TYPES.get(oid)
    if t is None:
        if isinstance(value, bytes):
            return value
        raise PgError(
            SqlState.FEATURE_NOT_SUPPORTED, f"binary format of type oid {oid} is not supported"
        )
    return t.binary_out(value)


def encode(oid: int, value: object, fmt: int) -> bytes | None:
    """A value as column bytes in format `fmt` (0 text, 1 binary); None stays None (NULL)."""
    if value is None:
        return None
    if fmt == 1:
        return encode_binary(oid, value)
    return _encode_utf8(encode_text(oid, value))


def encoder(oid: int, fmt: int) -> Callable[[object], bytes | None]:
    """`encode` specialised for one column: NULL → None."""
    t = TYPES.get(oid)
    if t is None:
        return lambda v: encode(oid, v, fmt)
    if fmt == 1:
        bin_out = t.binary_out
        return lambda v: None if v is None else bin_out(v)
    text_out = t.text_out
    if t.oid in (Oid.TEXT, Oid.VARCHAR, Oid.NAME, Oid.BPCHAR, Oid.UNKNOWN):
        return lambda v: (
            None if v is None else (v.encode() if type(v) is str else _encode_utf8(text_out(v)))
        )
    return lambda v: None if v is None else text_out(v).encode()


def decode_text(oid: int, text: str) -> object:
    """The Python value of a text-format value; unknown OIDs give the string."""
    t = TYPES.get(oid)
    return text if t is None else t.text_in(text)


def decode_binary(oid: int, data: bytes) -> object:
    """The Python value of a binary-format value; unknown OIDs give the bytes."""
    t = TYPES.get(oid)
    return data if t is None else t.binary_in(data)


def decode(oid: int, data: bytes | None, fmt: int) -> object:
    """Column or parameter bytes in format `fmt` → Python value (None for NULL)."""
    if data is None:
        return None
    if fmt == 1:
        return decode_binary(oid, data)
    return decode_text(oid, _utf8(data))


def decoder(oid: int, fmt: int) -> Callable[[bytes | None], object]:
    return lambda data: decode(oid, data, fmt)


# Array types (`{1,2}`) are built over the scalar types above.
from twinstream.pgwire.arrays import array_types  # noqa: E402

TYPES.update(array_types(TYPES))
