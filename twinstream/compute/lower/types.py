"""PostgreSQL's type rules, as far as lowering needs them (see doc/design/compute.md).

Types are canonical PostgreSQL names as the catalog stores them (`int4`, `numeric(10,2)`,
`varchar(20)`, `text`, `bool`, ...); `unknown` is the type of a quoted literal or NULL that
its context has not resolved yet. The dataflow IR is untyped (values are Python ints,
Decimals, floats, strs, bools, dates...), so lowering inserts a `Cast` wherever PostgreSQL
converts a value: an int meeting a numeric becomes a Decimal, an int or numeric meeting a
float becomes a float, and a quoted literal becomes a value of the type its context wants
(converted here, at lowering time, raising PostgreSQL's error for bad input).
"""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Hashable, Sequence

from sqlglot import exp

from twinstream.compute.dataflow.expr import (
    Call,
    Cast,
    EvalError,
    Expr,
    Lit,
    columns,
    compile_scalar,
)
from twinstream.compute.lower.errors import (
    CANNOT_COERCE,
    DATATYPE_MISMATCH,
    INVALID_DATETIME,
    INVALID_TEXT,
    OUT_OF_RANGE,
    LoweringError,
    Unsupported,
    unsupported,
)

UNKNOWN = "unknown"

INT_TYPES = frozenset({"int2", "int4", "int8"})
FLOAT_TYPES = frozenset({"float4", "float8"})
#: The numeric category, ordered by implicit-cast direction (int2 -> ... -> float8).
NUMERIC_RANK = {"int2": 0, "int4": 1, "int8": 2, "numeric": 3, "float4": 4, "float8": 5}
STRING_TYPES = frozenset({"text", "varchar", "bpchar"})
TEMPORAL_TYPES = frozenset({"date", "timestamp", "timestamptz"})

_INT_BOUNDS = {"int2": 2**15, "int4": 2**31, "int8": 2**63}

_DISPLAY = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "numeric": "numeric",
    "text": "text",
    "varchar": "character varying",
    "bpchar": "character",
    "bool": "boolean",
    "date": "date",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "interval": "interval",
    UNKNOWN: "unknown",
}


def base(t: str) -> str:
    """The type without modifiers: `numeric(10,2)` -> `numeric`."""
    return t.split("(", 1)[0].strip()


def display(t: str) -> str:
    """The type as PostgreSQL names it in messages (`integer`, `character varying`)."""
    return _DISPLAY.get(base(t), base(t))


def is_numeric(t: str) -> bool:
    return base(t) in NUMERIC_RANK


def is_string(t: str) -> bool:
    return base(t) in STRING_TYPES


def is_unknown(t: str) -> bool:
    return t == UNKNOWN


def ir_cast_name(t: str) -> str | None:
    """The dataflow IR's cast target for values of type `t` (None: no IR cast exists)."""
    b = base(t)
    if b in INT_TYPES:
        return "int"
    if b in FLOAT_TYPES:
        return "float"
    if b == "numeric":
        return "numeric"
    if b in STRING_TYPES:
        return "text"
    if b == "bool":
        return "bool"
    return None


# ---------------------------------------------------------------- common types


def common_type(types: Sequence[str], what: str) -> str:
    """PostgreSQL's `select_common_type` for UNION/CASE/COALESCE/IN/VALUES...: raises 42804
    `<what> types X and Y cannot be matched`.

    Unknowns are ignored (all unknown: text); identical types are kept with their modifiers;
    within the numeric category the type every other converts to implicitly wins
    (int2 < int4 < int8 < numeric < float4 < float8); strings of mixed kinds become text.
    """
    known = [t for t in types if t != UNKNOWN]
    if not known:
        return "text"
    first = known[0]
    if all(t == first for t in known):
        return first
    bases = [base(t) for t in known]
    if all(b == bases[0] for b in bases):
        return bases[0]
    if all(b in NUMERIC_RANK for b in bases):
        return max(bases, key=NUMERIC_RANK.__getitem__)
    if all(b in STRING_TYPES for b in bases):
        return "text"
    a = bases[0]
    other = next(b for b in bases if not _same_category(a, b))
    raise LoweringError(
        DATATYPE_MISMATCH, f"{what} types {display(a)} and {display(other)} cannot be matched"
    )


def _same_category(a: str, b: str) -> bool:
    if a == b:
        return True
    if a in NUMERIC_RANK and b in NUMERIC_RANK:
        return True
    return a in STRING_TYPES and b in STRING_TYPES


def operator_type(op: str, left: str, right: str) -> str:
    """The common type both operands of a binary operator are converted to (42883 if none)."""
    try:
        return common_type([left, right], op)
    except LoweringError:
        raise LoweringError(
            "42883", f"operator does not exist: {display(left)} {op} {display(right)}"
        ) from None


# ---------------------------------------------------------------- coercion


def fold(e: Expr) -> Expr:
    """Evaluate an expression without column references now (a cast of a literal...)."""
    if isinstance(e, Lit) or columns(e):
        return e
    try:
        v = compile_scalar(e)(())
    except EvalError as err:
        raise LoweringError(err.sqlstate, err.message) from None
    return Lit(v)


def coerce(e: Expr, frm: str, to: str) -> Expr:
    """`e` (of type `frm`) converted implicitly to type `to` (modifiers are not applied)."""
    bf, bt = base(frm), base(to)
    if bf == bt:
        return e
    if bf == UNKNOWN:
        if isinstance(e, Lit):
            if e.value is None:
                return e
            return Lit(parse_literal(str(e.value), bt))
        # A column of an unresolved literal (a set operation's leaf): convert at run time.
        name = ir_cast_name(bt)
        if name is None:
            raise unsupported(f"converting an unknown-typed column to {display(bt)}")
        return e if name == "text" else fold(Cast(e, name))
    if bf in INT_TYPES and bt in INT_TYPES:
        return e
    if bf in STRING_TYPES and bt in STRING_TYPES:
        return e
    if bf in NUMERIC_RANK and bt in NUMERIC_RANK and NUMERIC_RANK[bf] < NUMERIC_RANK[bt]:
        if bt == "numeric":
            return fold(Cast(e, "numeric"))
        if bf in FLOAT_TYPES:
            return e  # float4 -> float8: both are Python floats
        return fold(Cast(e, "float"))
    raise LoweringError(
        DATATYPE_MISMATCH, f"cannot convert {display(frm)} to {display(to)} implicitly"
    )


def explicit_cast(e: Expr, frm: str, to: str) -> Expr:
    """`CAST(e AS to)`: `to` is canonical, possibly with modifiers (`numeric(10,2)`)."""
    bf, bt = base(frm), base(to)
    if bt == "bpchar" or bt not in NUMERIC_RANK.keys() | STRING_TYPES | TEMPORAL_TYPES | {"bool"}:
        raise unsupported(f"casting to {display(to)}")
    if bf == UNKNOWN and isinstance(e, Lit):
        out: Expr = e if e.value is None else Lit(parse_literal(str(e.value), bt))
        return fold(_typmod(out, to))
    if bf == UNKNOWN:
        bf = "text"
    out = _cast_value(e, bf, bt, frm, to)
    return fold(_typmod(out, to))


def _cast_value(e: Expr, bf: str, bt: str, frm: str, to: str) -> Expr:
    if bf == bt:
        return e
    if bt in TEMPORAL_TYPES or bf in TEMPORAL_TYPES:
        if bt in STRING_TYPES:
            return Cast(e, "text")
        raise unsupported(f"casting {display(frm)} to {display(to)}")
    name = ir_cast_name(bt)
    if bt in INT_TYPES and bf in INT_TYPES:
        return e
    if bt in STRING_TYPES and bf in STRING_TYPES:
        return e
    if bt in FLOAT_TYPES and bf in FLOAT_TYPES:
        return e
    ok = (
        (bt in NUMERIC_RANK and (bf in NUMERIC_RANK or bf in STRING_TYPES))
        or (bt in STRING_TYPES and (bf in NUMERIC_RANK or bf == "bool"))
        or (bt == "bool" and (bf in INT_TYPES or bf in STRING_TYPES))
        or (bt in INT_TYPES and bf == "bool")
    )
    if not ok or name is None:
        raise LoweringError(CANNOT_COERCE, f"cannot cast type {display(frm)} to {display(to)}")
    return Cast(e, name)


def _typmod(e: Expr, to: str) -> Expr:
    """Apply `numeric(p,s)` (round to scale s) and `varchar(n)` (truncate) modifiers."""
    mods = type_modifiers(to)
    if not mods:
        return e
    b = base(to)
    if b == "numeric":
        scale = mods[1] if len(mods) > 1 else 0
        return Call("round", (e, Lit(scale)))
    if b == "varchar":
        return Call("substr", (e, Lit(1), Lit(mods[0])))
    return e


def type_modifiers(t: str) -> tuple[int, ...]:
    if "(" not in t:
        return ()
    inner = t[t.index("(") + 1 : t.rindex(")")]
    return tuple(int(x) for x in inner.split(",") if x.strip())


# ---------------------------------------------------------------- literals

_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
_NUM_RE = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_FLOAT_SPECIAL = {
    "nan": float("nan"),
    "infinity": float("inf"),
    "+infinity": float("inf"),
    "-infinity": float("-inf"),
    "inf": float("inf"),
    "+inf": float("inf"),
    "-inf": float("-inf"),
}


def numeric_literal(text: str) -> tuple[Hashable, str]:
    """An unquoted number: int4 if it fits, else int8, else numeric (as PostgreSQL)."""
    if text.isdigit():
        v = int(text)
        if v < _INT_BOUNDS["int4"]:
            return v, "int4"
        if v < _INT_BOUNDS["int8"]:
            return v, "int8"
        return decimal.Decimal(v), "numeric"
    d = decimal.Decimal(text)
    if d.as_tuple().exponent > 0:  # type: ignore[operator]
        d = d.quantize(decimal.Decimal(1))  # 1e3 is 1000, not 1E+3
    return d, "numeric"


def _bad(t: str, s: str) -> LoweringError:
    return LoweringError(INVALID_TEXT, f'invalid input syntax for type {display(t)}: "{s}"')


def parse_literal(s: str, t: str) -> Hashable:
    """A quoted literal as a value of type `t` (PostgreSQL's input function)."""
    b = base(t)
    if b in INT_TYPES:
        if not _INT_RE.fullmatch(s):
            raise _bad(b, s)
        v = int(s)
        if not -_INT_BOUNDS[b] <= v < _INT_BOUNDS[b]:
            raise LoweringError(OUT_OF_RANGE, f'value "{s}" is out of range for type {display(b)}')
        return v
    if b == "numeric":
        if s.strip().lower() == "nan":
            return decimal.Decimal("NaN")
        if not _NUM_RE.fullmatch(s):
            raise _bad(b, s)
        return _plain_decimal(s.strip())
    if b in FLOAT_TYPES:
        special = _FLOAT_SPECIAL.get(s.strip().lower())
        if special is not None:
            return special
        if not _NUM_RE.fullmatch(s):
            raise _bad(b, s)
        return float(s)
    if b in STRING_TYPES:
        return s
    if b == "bool":
        return _parse_bool(s)
    if b == "date":
        try:
            return datetime.date.fromisoformat(s.strip())
        except ValueError:
            raise LoweringError(
                INVALID_DATETIME, f'invalid input syntax for type date: "{s}"'
            ) from None
    if b in ("timestamp", "timestamptz"):
        try:
            ts = datetime.datetime.fromisoformat(s.strip())
        except ValueError:
            raise LoweringError(
                INVALID_DATETIME, f'invalid input syntax for type {display(b)}: "{s}"'
            ) from None
        if b == "timestamp":
            return ts.replace(tzinfo=None)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=datetime.UTC)  # the session time zone of a dataflow: UTC
        return ts.astimezone(datetime.UTC)
    raise Unsupported(f"literals of type {display(t)} are not supported in dataflows")


def _plain_decimal(s: str) -> decimal.Decimal:
    d = decimal.Decimal(s)
    if d.as_tuple().exponent > 0:  # type: ignore[operator]
        d = d.quantize(decimal.Decimal(1))
    return d


def _parse_bool(s: str) -> bool:
    v = s.strip().lower()
    if v:
        for word, value in (("true", True), ("false", False), ("yes", True), ("no", False)):
            if word.startswith(v):
                return value
        if v in ("on", "1"):
            return True
        if v in ("off", "of", "0"):
            return False
    raise _bad("bool", s)


# ---------------------------------------------------------------- type names

_DTYPES: dict[object, str] = {
    exp.DataType.Type.SMALLINT: "int2",
    exp.DataType.Type.INT: "int4",
    exp.DataType.Type.BIGINT: "int8",
    exp.DataType.Type.FLOAT: "float4",
    exp.DataType.Type.DOUBLE: "float8",
    exp.DataType.Type.DECIMAL: "numeric",
    exp.DataType.Type.TEXT: "text",
    exp.DataType.Type.VARCHAR: "varchar",
    exp.DataType.Type.CHAR: "bpchar",
    exp.DataType.Type.BOOLEAN: "bool",
    exp.DataType.Type.DATE: "date",
    exp.DataType.Type.TIMESTAMP: "timestamp",
    exp.DataType.Type.TIMESTAMPTZ: "timestamptz",
}


def datatype_name(dt: exp.Expr) -> str:
    """The canonical name of a sqlglot `DataType` (`numeric(10,2)`, `varchar(3)`, `int4`)."""
    if not isinstance(dt, exp.DataType):
        raise unsupported(f"the type {dt.sql(dialect='postgres')}")
    name = _DTYPES.get(dt.this)
    if name is None:
        raise unsupported(f"the type {dt.sql(dialect='postgres').lower()}")
    params: list[int] = []
    for p in dt.expressions:
        lit = p.this if isinstance(p, exp.DataTypeParam) else p
        if not isinstance(lit, exp.Literal) or lit.is_string or not str(lit.this).isdigit():
            raise unsupported(f"the type {dt.sql(dialect='postgres').lower()}")
        params.append(int(lit.this))
    if not params:
        return name
    if name == "numeric":
        precision = params[0]
        scale = params[1] if len(params) > 1 else 0
        return f"numeric({precision},{scale})"
    if name in ("varchar", "bpchar") and len(params) == 1:
        return f"{name}({params[0]})"
    raise unsupported(f"the type {dt.sql(dialect='postgres').lower()}")


def result_name(t: str) -> str:
    """The column name PostgreSQL gives `CAST(<literal> AS t)`: the type's internal name."""
    return base(t)
