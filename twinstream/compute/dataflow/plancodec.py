"""Plans and values as msgpack-able data, so a dataflow can be sent to a replica process.

    wire = encode_plan(plan)            # plain lists/ints/strs/bytes + msgpack ExtTypes
    data = pack(wire)                   # bytes (msgpack)
    plan2 = decode_plan(unpack(data))   # == plan, validated (`arity`)

A plan is a DAG of frozen dataclasses (`plan.py`, `expr.py`). It is sent as a node table
`[PLAN_CODEC_VERSION, [[tag, field, ...], ...]]` in dependency order, the root last; a field
that is a node is a reference (ExtType `EXT_REF`) to an earlier row, so a shared sub-plan (a
CTE) is sent once and stays shared. Other fields are values: None, bool, int, float, str,
bytes, tuples of values, and the extension types below (same codes as persist's row codec).

Strict both ways: an unknown class, an unknown tag, a wrong field count or an unknown
extension code raises `PlanCodecError` — a replica never guesses at a plan.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import msgpack

from twinstream.compute.dataflow import expr as E
from twinstream.compute.dataflow import plan as P

PLAN_CODEC_VERSION = 1

EXT_DECIMAL = 1
EXT_DATE = 2
EXT_DATETIME = 3
EXT_TIMEDELTA = 4
EXT_UUID = 5
EXT_TIME = 6
EXT_BIGINT = 7
EXT_REF = 8

#: msgpack's integer range; larger ints travel as text (EXT_BIGINT).
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_NODE_CLASSES: tuple[type, ...] = (
    P.Get,
    P.Import,
    P.Constant,
    P.Map,
    P.Filter,
    P.Project,
    P.Union,
    P.Negate,
    P.Distinct,
    P.Join,
    P.Reduce,
    P.TopK,
    P.SetOp,
    P.Consolidate,
    P.ArrangeBy,
    P.Agg,
    P.SortKey,
    E.Col,
    E.Lit,
    E.Call,
    E.Case,
    E.Cast,
)
_BY_TYPE: dict[type, tuple[str, tuple[str, ...]]] = {
    c: (c.__name__, tuple(f.name for f in dataclasses.fields(c))) for c in _NODE_CLASSES
}
_BY_TAG: dict[str, tuple[type, int]] = {
    name: (c, len(fields)) for c, (name, fields) in _BY_TYPE.items()
}


class PlanCodecError(ValueError):
    """A plan or value that cannot be encoded, or data that is not an encoded plan/value."""


class _Ref:
    """A decoded node reference (resolved against the node table by `decode_plan`)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"_Ref({self.index})"


# ---------------------------------------------------------------- values


def encode_value(v: object) -> Any:
    """A row value (or a tuple of them, nested) as msgpack-able data."""
    t = type(v)
    if v is None or t is bool or t is str or t is float or t is bytes:
        return v
    if t is int:
        assert isinstance(v, int)
        if _INT_MIN <= v <= _INT_MAX:
            return v
        return msgpack.ExtType(EXT_BIGINT, str(v).encode())
    if t is tuple:
        assert isinstance(v, tuple)
        return [encode_value(x) for x in v]
    if t is Decimal:
        return msgpack.ExtType(EXT_DECIMAL, str(v).encode())
    if t is dt.datetime:
        assert isinstance(v, dt.datetime)
        return msgpack.ExtType(EXT_DATETIME, v.isoformat().encode())
    if t is dt.date:
        assert isinstance(v, dt.date)
        return msgpack.ExtType(EXT_DATE, v.isoformat().encode())
    if t is dt.time:
        assert isinstance(v, dt.time)
        return msgpack.ExtType(EXT_TIME, v.isoformat().encode())
    if t is dt.timedelta:
        assert isinstance(v, dt.timedelta)
        packed = msgpack.packb([v.days, v.seconds, v.microseconds])
        return msgpack.ExtType(EXT_TIMEDELTA, packed)
    if t is uuid.UUID:
        assert isinstance(v, uuid.UUID)
        return msgpack.ExtType(EXT_UUID, v.bytes)
    raise PlanCodecError(f"cannot encode a value of type {t.__name__}: {v!r}")


def ext_hook(code: int, data: bytes) -> object:
    """msgpack `ext_hook` for `unpack`: extension types back to Python values."""
    try:
        if code == EXT_DECIMAL:
            return Decimal(data.decode())
        if code == EXT_DATETIME:
            return dt.datetime.fromisoformat(data.decode())
        if code == EXT_DATE:
            return dt.date.fromisoformat(data.decode())
        if code == EXT_TIME:
            return dt.time.fromisoformat(data.decode())
        if code == EXT_TIMEDELTA:
            days, seconds, micros = msgpack.unpackb(data)
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == EXT_BIGINT:
            return int(data.decode())
        if code == EXT_REF:
            index = msgpack.unpackb(data)
            if type(index) is not int or index < 0:
                raise PlanCodecError(f"bad node reference {index!r}")
            return _Ref(index)
    except PlanCodecError:
        raise
    except Exception as e:  # any malformed payload is a codec error
        raise PlanCodecError(f"malformed extension value (type {code}): {e}") from e
    raise PlanCodecError(f"unknown extension type {code}")


def value_default(v: object) -> Any:
    """msgpack `default` hook: packs the extension value types in place (so rows need no
    `encode_value` walk); anything else is refused. msgpack hands over ints beyond 64 bits
    too (or raises OverflowError: `pack_data` then widens them itself)."""
    t = type(v)
    if t is int or t is Decimal or t is dt.datetime or t is dt.date or t is dt.time:
        return encode_value(v)
    if t is dt.timedelta or t is uuid.UUID:
        return encode_value(v)
    raise PlanCodecError(f"cannot encode a value of type {t.__name__}: {v!r}")


def _widen(obj: Any) -> Any:
    """`obj` with every int beyond msgpack's range as EXT_BIGINT (the slow path)."""
    t = type(obj)
    if t is int:
        return encode_value(obj)
    if t is tuple or t is list:
        return [_widen(x) for x in obj]
    if t is dict:
        return {k: _widen(x) for k, x in obj.items()}
    return obj


def pack_data(obj: Any) -> bytes:
    """msgpack bytes of `obj`: plain data whose values may be raw row values (see
    `value_default`) or already encoded (`encode_plan`, `encode_value`)."""
    try:
        data = msgpack.packb(obj, use_bin_type=True, default=value_default)
    except OverflowError:
        data = msgpack.packb(_widen(obj), use_bin_type=True, default=value_default)
    assert isinstance(data, bytes)
    return data


#: Types a decoded row value may have (sequences aside).
_SCALAR_TYPES = frozenset(
    {type(None), bool, int, float, str, bytes, Decimal, dt.date, dt.datetime, dt.time}
    | {dt.timedelta, uuid.UUID}
)


def decode_value(v: object) -> Any:
    """The inverse of `encode_value` on unpacked data (sequences are already tuples)."""
    if type(v) is tuple and all(type(x) in _SCALAR_TYPES for x in v):
        return v  # a row of scalars: nothing to check or convert
    if isinstance(v, _Ref):
        raise PlanCodecError("a node reference where a value was expected")
    if type(v) is tuple:
        assert isinstance(v, tuple)
        return tuple(decode_value(x) for x in v)
    if type(v) in (list, dict):
        raise PlanCodecError(f"not a value: {v!r}")
    return v


def pack(obj: Any) -> bytes:
    """msgpack bytes of already-encoded data (`encode_plan`, `encode_value`)."""
    data = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def unpack(data: bytes) -> Any:
    """Decode `pack`'s bytes: arrays become tuples, extension types values (or references)."""
    try:
        return msgpack.unpackb(
            data, ext_hook=ext_hook, raw=False, use_list=False, strict_map_key=False
        )
    except PlanCodecError:
        raise
    except Exception as e:  # garbage in: one clear error type out
        raise PlanCodecError(f"not msgpack: {e}") from e


# ---------------------------------------------------------------- plans


def encode_plan(plan: object) -> list[Any]:
    """`plan` (any node: a plan, an expression, an aggregate) as a node table."""
    nodes: list[list[Any]] = []
    memo: dict[int, int] = {}
    keep: list[object] = []  # ids stay valid while we hold the objects

    def node(obj: object) -> int:
        got = memo.get(id(obj))
        if got is not None:
            return got
        spec = _BY_TYPE.get(type(obj))
        if spec is None:
            raise PlanCodecError(f"cannot encode a plan node of type {type(obj).__name__}")
        tag, names = spec
        row: list[Any] = [tag]
        row.extend(field(getattr(obj, n)) for n in names)
        index = len(nodes)
        nodes.append(row)
        memo[id(obj)] = index
        keep.append(obj)
        return index

    def field(v: object) -> Any:
        if type(v) in _BY_TYPE:
            return msgpack.ExtType(EXT_REF, msgpack.packb(node(v)))
        if type(v) is tuple:
            assert isinstance(v, tuple)
            return [field(x) for x in v]
        return encode_value(v)

    node(plan)
    return [PLAN_CODEC_VERSION, nodes]


def decode_plan(data: object, *, validate: bool = True) -> Any:
    """The node `encode_plan` encoded (after `unpack`). With `validate`, a plan root is checked
    with `plan.arity` (column references, key widths), raising `PlanCodecError`."""
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise PlanCodecError("an encoded plan is [version, nodes]")
    version, rows = data
    if version != PLAN_CODEC_VERSION:
        raise PlanCodecError(f"plan codec version {version!r}, expected {PLAN_CODEC_VERSION}")
    if not isinstance(rows, tuple | list) or not rows:
        raise PlanCodecError("an encoded plan has no nodes")
    built: list[object] = []

    def field(v: object) -> Any:
        if isinstance(v, _Ref):
            if v.index >= len(built):
                raise PlanCodecError(f"node reference {v.index} is not to an earlier node")
            return built[v.index]
        if type(v) is tuple:
            assert isinstance(v, tuple)
            return tuple(field(x) for x in v)
        return decode_value(v)

    for row in rows:
        if not isinstance(row, tuple | list) or not row or type(row[0]) is not str:
            raise PlanCodecError(f"malformed plan node {row!r}")
        spec = _BY_TAG.get(row[0])
        if spec is None:
            raise PlanCodecError(f"unknown plan node {row[0]!r}")
        cls, n = spec
        if len(row) != n + 1:
            raise PlanCodecError(f"plan node {row[0]} has {len(row) - 1} fields, expected {n}")
        try:
            built.append(cls(*(field(v) for v in row[1:])))
        except PlanCodecError:
            raise
        except Exception as e:  # e.g. an unhashable literal
            raise PlanCodecError(f"bad plan node {row[0]}: {e}") from e
    root = built[-1]
    if validate and not isinstance(
        root, P.Agg | P.SortKey | E.Col | E.Lit | E.Call | E.Case | E.Cast
    ):
        try:
            P.arity(root)  # type: ignore[arg-type]
        except E.PlanError as e:
            raise PlanCodecError(f"invalid plan: {e}") from e
    return root
