"""Scalar expressions: a small IR with SQL three-valued NULL semantics, compiled to Python.

The IR (what SQL lowering targets) has five node kinds:

- `Col(i)`: column `i` of the input row (0-based). NULL is Python `None`.
- `Lit(v)`: a constant; `Lit(None)` is NULL. Equality of `Lit`s includes the Python type, so
  `Lit(1)`, `Lit(1.0)` and `Lit(True)` are different expressions.
- `Call(op, args)`: an operator or function, see `OPS` for the names and arities.
- `Case(whens, else_)`: `CASE WHEN c1 THEN v1 ... ELSE e END` (a WHEN fires only if its
  condition is TRUE; the simple form `CASE x WHEN a ...` lowers to `=` comparisons).
- `Cast(expr, to)`: `to` is one of `CAST_TYPES`.

Semantics (PostgreSQL's, for the values twinstream rows hold: int, float, Decimal, str, bool,
bytes, dates...):
- Every operator and function is strict (NULL in -> NULL out) except `and`, `or`, `not` (three-
  valued logic), `is_null`, `is_not_null`, `is_distinct_from`, `is_not_distinct_from`, `coalesce`,
  `nullif`, `greatest`, `least` (NULL arguments are ignored), `in` and `Case`.
- `/` on two ints is integer division truncating toward zero; `%` takes the sign of the dividend;
  division or modulo by zero raises `EvalError('22012')`.
- `||` concatenates text; non-text operands are rendered as PostgreSQL prints them.
- A filter keeps a row only if its predicate is TRUE (not FALSE, not NULL).

Evaluation errors (division by zero, a bad cast...) raise inside generated code; operators turn
them into updates of the dataflow's error collection (see `error_row`).

Compilation generates Python source (one function per operator, expressions inlined, predicates
translated to plain Python boolean tests where three-valued logic allows it), which is several
times faster than walking an expression tree per row.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias


class EvalError(Exception):
    """A SQL evaluation error: `sqlstate` is the PostgreSQL error code."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


class PlanError(ValueError):
    """A malformed expression or plan (unknown operator, wrong arity, bad column)."""


@dataclass(frozen=True, slots=True)
class Col:
    index: int


@dataclass(frozen=True, slots=True, eq=False)
class Lit:
    value: Hashable

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Lit)
            and type(self.value) is type(other.value)
            and self.value == other.value
        )

    def __hash__(self) -> int:
        return hash((Lit, type(self.value).__name__, self.value))


@dataclass(frozen=True, slots=True)
class Call:
    op: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Case:
    whens: tuple[tuple[Expr, Expr], ...]
    else_: Expr


@dataclass(frozen=True, slots=True)
class Cast:
    expr: Expr
    to: str


Expr: TypeAlias = Col | Lit | Call | Case | Cast

NULL = Lit(None)

#: op name -> (min args, max args or -1 for variadic)
OPS: dict[str, tuple[int, int]] = {
    # arithmetic
    "+": (2, 2), "-": (2, 2), "*": (2, 2), "/": (2, 2), "%": (2, 2), "neg": (1, 1),
    # comparison
    "=": (2, 2), "<>": (2, 2), "<": (2, 2), "<=": (2, 2), ">": (2, 2), ">=": (2, 2),
    "is_distinct_from": (2, 2), "is_not_distinct_from": (2, 2),
    # logic
    "and": (1, -1), "or": (1, -1), "not": (1, 1), "is_null": (1, 1), "is_not_null": (1, 1),
    # x IN (a, b, ...): first arg is x
    "in": (2, -1),
    # conditional
    "coalesce": (1, -1), "nullif": (2, 2), "greatest": (1, -1), "least": (1, -1),
    # text
    "||": (2, 2), "lower": (1, 1), "upper": (1, 1), "length": (1, 1), "substr": (2, 3),
    "trim": (1, 1), "like": (2, 2),
    # numeric
    "abs": (1, 1), "round": (1, 2), "floor": (1, 1), "ceil": (1, 1),
}  # fmt: skip

CAST_TYPES = ("int", "float", "numeric", "text", "bool")

_CMP = {"=": "==", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ARITH = {"+": "+", "-": "-", "*": "*"}


# ---------------------------------------------------------------- convenience constructors


def col(i: int) -> Col:
    return Col(i)


def lit(v: Hashable) -> Lit:
    return Lit(v)


def call(op: str, *args: Expr) -> Call:
    return Call(op, tuple(args))


def and_(*args: Expr) -> Call:
    return Call("and", tuple(args))


def or_(*args: Expr) -> Call:
    return Call("or", tuple(args))


def not_(a: Expr) -> Call:
    return Call("not", (a,))


def eq(a: Expr, b: Expr) -> Call:
    return Call("=", (a, b))


def case(whens: Iterable[tuple[Expr, Expr]], else_: Expr = NULL) -> Case:
    return Case(tuple(whens), else_)


# ---------------------------------------------------------------- runtime helpers


def _div(a: Any, b: Any) -> Any:
    if b == 0:
        raise EvalError("22012", "division by zero")
    if type(a) is int and type(b) is int:
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return a / b


def _mod(a: Any, b: Any) -> Any:
    if b == 0:
        raise EvalError("22012", "division by zero")
    if type(a) is int and type(b) is int:
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    if isinstance(a, float) or isinstance(b, float):
        return math.fmod(a, b)
    return a % b  # Decimal: sign of the dividend, like PostgreSQL


def to_text(v: Any) -> str:
    """A value as PostgreSQL renders it as text."""
    if type(v) is str:
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v).removesuffix(".0") if v.is_integer() and abs(v) < 1e16 else repr(v)
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, datetime.datetime):
        return v.isoformat(sep=" ")
    return str(v)


def _cast_int(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float | decimal.Decimal):
        if isinstance(v, float) and not math.isfinite(v):
            raise EvalError("22003", "integer out of range")
        # PostgreSQL rounds half away from zero when casting to an integer.
        return int(decimal.Decimal(v).to_integral_value(rounding=decimal.ROUND_HALF_UP))
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            raise EvalError("22P02", f'invalid input syntax for type integer: "{v}"') from None
    raise EvalError("42846", f"cannot cast {type(v).__name__} to integer")


def _cast_float(v: Any) -> float:
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            raise EvalError(
                "22P02", f'invalid input syntax for type double precision: "{v}"'
            ) from None
    return float(v)


def _cast_numeric(v: Any) -> decimal.Decimal:
    if isinstance(v, decimal.Decimal):
        return v
    if isinstance(v, float):
        return decimal.Decimal(repr(v))
    if isinstance(v, str):
        try:
            return decimal.Decimal(v.strip())
        except decimal.InvalidOperation:
            raise EvalError("22P02", f'invalid input syntax for type numeric: "{v}"') from None
    return decimal.Decimal(v)


_TRUE_TEXT = {"t", "true", "y", "yes", "on", "1"}
_FALSE_TEXT = {"f", "false", "n", "no", "off", "0"}


def _cast_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE_TEXT:
            return True
        if s in _FALSE_TEXT:
            return False
        raise EvalError("22P02", f'invalid input syntax for type boolean: "{v}"')
    raise EvalError("42846", f"cannot cast {type(v).__name__} to boolean")


def _substr(s: str, start: int, length: int | None = None) -> str:
    # PostgreSQL: characters from position `start` (1-based, may be <= 0) for `length` chars.
    if length is None:
        return s[max(start - 1, 0) :]
    if length < 0:
        raise EvalError("22011", "negative substring length not allowed")
    end = start + length - 1
    return s[max(start - 1, 0) : max(end, 0)]


def _round(v: Any, n: int = 0) -> Any:
    if isinstance(v, float):
        # PostgreSQL rounds double precision half to even (rint) only for 1-arg round.
        return float(round(v, n)) if n else float(round(v))
    if isinstance(v, decimal.Decimal):
        q = decimal.Decimal(1).scaleb(-n)
        return v.quantize(q, rounding=decimal.ROUND_HALF_UP)
    if isinstance(v, int):
        if n >= 0:
            return v
        return int(
            decimal.Decimal(v).quantize(decimal.Decimal(1).scaleb(-n), decimal.ROUND_HALF_UP)
        )
    raise EvalError("42883", f"function round({type(v).__name__}) does not exist")


def _floor(v: Any) -> Any:
    if isinstance(v, float):
        return float(math.floor(v))
    if isinstance(v, decimal.Decimal):
        return v.to_integral_value(rounding=decimal.ROUND_FLOOR)
    return v


def _ceil(v: Any) -> Any:
    if isinstance(v, float):
        return float(math.ceil(v))
    if isinstance(v, decimal.Decimal):
        return v.to_integral_value(rounding=decimal.ROUND_CEILING)
    return v


_LIKE_CACHE: dict[str, re.Pattern[str]] = {}


def like_regex(pattern: str) -> re.Pattern[str]:
    rx = _LIKE_CACHE.get(pattern)
    if rx is None:
        out = []
        i = 0
        while i < len(pattern):
            ch = pattern[i]
            if ch == "\\" and i + 1 < len(pattern):
                out.append(re.escape(pattern[i + 1]))
                i += 2
                continue
            out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
            i += 1
        rx = re.compile("".join(out), re.DOTALL)
        if len(_LIKE_CACHE) < 1000:
            _LIKE_CACHE[pattern] = rx
    return rx


def _like(s: str, pattern: str) -> bool:
    return like_regex(pattern).fullmatch(s) is not None


def _greatest(*vs: Any) -> Any:
    xs = [v for v in vs if v is not None]
    return max(xs) if xs else None


def _least(*vs: Any) -> Any:
    xs = [v for v in vs if v is not None]
    return min(xs) if xs else None


def _in(x: Any, *items: Any) -> bool | None:
    if x is None:
        return None
    saw_null = False
    for it in items:
        if it is None:
            saw_null = True
        elif x == it:
            return True
    return None if saw_null else False


def _length(s: Any) -> int:
    return len(s)


def error_row(e: BaseException) -> tuple[str, str]:
    """The row an evaluation error becomes in the error collection: (sqlstate, message)."""
    if isinstance(e, EvalError):
        return (e.sqlstate, e.message)
    if isinstance(e, ZeroDivisionError | decimal.DivisionByZero):
        return ("22012", "division by zero")
    if isinstance(e, OverflowError | decimal.Overflow):
        return ("22003", "value out of range")
    if isinstance(e, ValueError | decimal.InvalidOperation):
        return ("22023", f"invalid value: {e}")
    if isinstance(e, TypeError):
        return ("42804", f"datatype mismatch: {e}")
    return ("XX000", f"internal error: {type(e).__name__}: {e}")


#: Names every generated function can use.
HELPERS: dict[str, Any] = {
    "_div": _div,
    "_mod": _mod,
    "_text": to_text,
    "_cast_int": _cast_int,
    "_cast_float": _cast_float,
    "_cast_numeric": _cast_numeric,
    "_cast_bool": _cast_bool,
    "_substr": _substr,
    "_round": _round,
    "_floor": _floor,
    "_ceil": _ceil,
    "_like": _like,
    "_greatest": _greatest,
    "_least": _least,
    "_in": _in,
    "_length": _length,
    "_error_row": error_row,
    "EvalError": EvalError,
}

_FUNCS = {
    "lower": "{0}.lower()",
    "upper": "{0}.upper()",
    "length": "len({0})",
    "trim": "{0}.strip(' ')",
    "abs": "abs({0})",
    "floor": "_floor({0})",
    "ceil": "_ceil({0})",
    "like": "_like({0}, {1})",
}


# ---------------------------------------------------------------- analysis


def validate(e: Expr, arity: int) -> None:
    """Raise PlanError unless `e` is well formed over rows of `arity` columns."""
    if isinstance(e, Col):
        if not 0 <= e.index < arity:
            raise PlanError(f"column {e.index} out of range (arity {arity})")
    elif isinstance(e, Lit):
        pass
    elif isinstance(e, Call):
        spec = OPS.get(e.op)
        if spec is None:
            raise PlanError(f"unknown operator {e.op!r}")
        lo, hi = spec
        if len(e.args) < lo or (hi >= 0 and len(e.args) > hi):
            raise PlanError(f"operator {e.op!r} takes {lo}..{hi} arguments, got {len(e.args)}")
        for a in e.args:
            validate(a, arity)
    elif isinstance(e, Case):
        for c, v in e.whens:
            validate(c, arity)
            validate(v, arity)
        validate(e.else_, arity)
    elif isinstance(e, Cast):
        if e.to not in CAST_TYPES:
            raise PlanError(f"unknown cast type {e.to!r}")
        validate(e.expr, arity)
    else:
        raise PlanError(f"not an expression: {e!r}")


def columns(e: Expr) -> set[int]:
    """The input columns `e` reads."""
    if isinstance(e, Col):
        return {e.index}
    if isinstance(e, Call):
        return set().union(*(columns(a) for a in e.args)) if e.args else set()
    if isinstance(e, Case):
        out = columns(e.else_)
        for c, v in e.whens:
            out |= columns(c) | columns(v)
        return out
    if isinstance(e, Cast):
        return columns(e.expr)
    return set()


def substitute(e: Expr, by: Sequence[Expr]) -> Expr:
    """`e` with every `Col(i)` replaced by `by[i]` (composes projections and maps)."""
    if isinstance(e, Col):
        return by[e.index]
    if isinstance(e, Lit):
        return e
    if isinstance(e, Call):
        return Call(e.op, tuple(substitute(a, by) for a in e.args))
    if isinstance(e, Case):
        return Case(
            tuple((substitute(c, by), substitute(v, by)) for c, v in e.whens),
            substitute(e.else_, by),
        )
    return Cast(substitute(e.expr, by), e.to)


def never_null(e: Expr) -> bool:
    if isinstance(e, Lit):
        return e.value is not None
    if isinstance(e, Call):
        return e.op in ("is_null", "is_not_null", "is_distinct_from", "is_not_distinct_from")
    return False


# ---------------------------------------------------------------- code generation


class Codegen:
    """Generates Python source for expressions over one or more row variables.

    `colref(i)` gives the source of column `i` (e.g. `r[3]`, or `l[0]` / `r[1]` for a join's
    two sides). Temporaries are walrus-assigned locals `_tN`, so the generated source must be
    placed inside a function body. Constants that have no literal form go to `self.consts`.
    """

    def __init__(self, colref: Callable[[int], str]) -> None:
        self.colref = colref
        self.consts: dict[str, Any] = {}
        self._n = 0

    def namespace(self) -> dict[str, Any]:
        ns = dict(HELPERS)
        ns.update(self.consts)
        return ns

    def _tmp(self) -> str:
        self._n += 1
        return f"_t{self._n}"

    def const(self, v: Any) -> str:
        if v is None or type(v) in (bool, int, str):
            return repr(v)
        if type(v) is float and math.isfinite(v):
            return repr(v)
        name = f"_c{len(self.consts)}"
        self.consts[name] = v
        return name

    def _simple(self, e: Expr) -> str | None:
        if isinstance(e, Col):
            return self.colref(e.index)
        if isinstance(e, Lit):
            return self.const(e.value)
        return None

    def _strict(self, args: Sequence[Expr], body: Callable[[list[str]], str]) -> str:
        """`body(refs)` if no argument is NULL, else None."""
        refs: list[str] = []
        checks: list[str] = []
        for a in args:
            s = self._simple(a)
            if s is not None:
                refs.append(s)
                if not never_null(a):
                    if isinstance(a, Lit):  # a NULL literal: the whole thing is NULL
                        return "None"
                    checks.append(f"{s} is None")
            else:
                # For a never-NULL argument the check is always false but still binds `t`.
                t = self._tmp()
                refs.append(t)
                checks.append(f"({t} := {self.expr(a)}) is None")
        if not checks:
            return f"({body(refs)})"
        return f"(None if {' or '.join(checks)} else {body(refs)})"

    def expr(self, e: Expr) -> str:
        """Source of an expression whose value is the SQL value (None for NULL)."""
        s = self._simple(e)
        if s is not None:
            return s
        if isinstance(e, Case):
            out = self.expr(e.else_)
            for c, v in reversed(e.whens):
                out = f"({self.expr(v)} if {self.pred(c)} else {out})"
            return out
        if isinstance(e, Cast):
            if e.to == "text":
                return self._strict([e.expr], lambda r: f"_text({r[0]})")
            return self._strict([e.expr], lambda r: f"_cast_{e.to}({r[0]})")
        assert isinstance(e, Call)
        op, args = e.op, e.args
        if op in _ARITH:
            return self._strict(args, lambda r: f"{r[0]} {_ARITH[op]} {r[1]}")
        if op == "/":
            return self._strict(args, lambda r: f"_div({r[0]}, {r[1]})")
        if op == "%":
            return self._strict(args, lambda r: f"_mod({r[0]}, {r[1]})")
        if op == "neg":
            return self._strict(args, lambda r: f"-{r[0]}")
        if op in _CMP:
            return self._strict(args, lambda r: f"{r[0]} {_CMP[op]} {r[1]}")
        if op in ("is_null", "is_not_null"):
            neg = "not " if op == "is_not_null" else ""
            return f"({self.expr(args[0])} is {neg}None)"
        if op in ("is_distinct_from", "is_not_distinct_from"):
            a, b = self._tmp(), self._tmp()
            # The condition of `x if c else y` is evaluated first, so `a` is bound in time.
            same = (
                f"((({b} := {self.expr(args[1])}) is None) if ({a} := {self.expr(args[0])}) is None"
                f" else (({b} := {self.expr(args[1])}) is not None and {a} == {b}))"
            )
            return same if op == "is_not_distinct_from" else f"(not {same})"
        if op == "and":
            return self._logic(args, is_and=True)
        if op == "or":
            return self._logic(args, is_and=False)
        if op == "not":
            return self._strict(args, lambda r: f"not {r[0]}")
        if op == "coalesce":
            out = self.expr(args[-1])
            for arg in reversed(args[:-1]):
                s = self._simple(arg)
                if s is not None:
                    out = f"({s} if {s} is not None else {out})"
                else:
                    t = self._tmp()
                    out = f"({t} if ({t} := {self.expr(arg)}) is not None else {out})"
            return out
        if op == "nullif":
            a, b = self._tmp(), self._tmp()
            return (
                f"(None if ({a} := {self.expr(args[0])}) is not None and "
                f"({b} := {self.expr(args[1])}) is not None and {a} == {b} else {a})"
            )
        if op in ("greatest", "least"):
            return f"_{op}({', '.join(self.expr(a) for a in args)})"
        if op == "in":
            return f"_in({', '.join(self.expr(a) for a in args)})"
        if op == "||":

            def cat(r: list[str]) -> str:
                parts = [
                    x if isinstance(a, Lit) and isinstance(a.value, str) else f"_text({x})"
                    for a, x in zip(args, r, strict=True)
                ]
                return " + ".join(parts)

            return self._strict(args, cat)
        if op == "substr":
            return self._strict(args, lambda r: f"_substr({', '.join(r)})")
        if op == "round":
            return self._strict(args, lambda r: f"_round({', '.join(r)})")
        tmpl = _FUNCS.get(op)
        if tmpl is None:
            raise PlanError(f"unknown operator {op!r}")
        return self._strict(args, lambda r: tmpl.format(*r))

    def _logic(self, args: Sequence[Expr], *, is_and: bool) -> str:
        # AND: FALSE if any is FALSE, else NULL if any is NULL, else TRUE (OR dually).
        stop, other = ("False", "True") if is_and else ("True", "False")
        temps = [self._tmp() for _ in args]
        out = f"(None if {' or '.join(f'{t} is None' for t in temps)} else {other})"
        for t, a in zip(reversed(temps), reversed(args), strict=True):
            out = f"({stop} if ({t} := {self.expr(a)}) is {stop} else {out})"
        return out

    def pred(self, e: Expr) -> str:
        """Source that is truthy iff `e` is TRUE (FALSE and NULL are both falsy)."""
        if isinstance(e, Lit):
            return "True" if e.value is True else "False"
        if isinstance(e, Call):
            op, args = e.op, e.args
            if op == "and":
                return "(" + " and ".join(self.pred(a) for a in args) + ")"
            if op == "or":
                return "(" + " or ".join(self.pred(a) for a in args) + ")"
            if op == "not":
                return self.pred_false(args[0])
            if op in ("is_null", "is_not_null", "is_distinct_from", "is_not_distinct_from"):
                return self.expr(e)
            if op in _CMP:
                return self._cmp_pred(args[0], args[1], _CMP[op])
        return f"({self.expr(e)} is True)"

    def pred_false(self, e: Expr) -> str:
        """Source that is truthy iff `e` is FALSE."""
        if isinstance(e, Lit):
            return "True" if e.value is False else "False"
        if isinstance(e, Call):
            op, args = e.op, e.args
            if op == "and":
                return "(" + " or ".join(self.pred_false(a) for a in args) + ")"
            if op == "or":
                return "(" + " and ".join(self.pred_false(a) for a in args) + ")"
            if op == "not":
                return self.pred(args[0])
            if op in ("is_null", "is_not_null", "is_distinct_from", "is_not_distinct_from"):
                return f"(not {self.expr(e)})"
            if op in _CMP:
                neg = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
                return self._cmp_pred(args[0], args[1], neg[_CMP[op]])
        return f"({self.expr(e)} is False)"

    def _cmp_pred(self, a: Expr, b: Expr, pyop: str) -> str:
        checks: list[str] = []
        refs: list[str] = []
        for x in (a, b):
            s = self._simple(x)
            if s is None:
                t = self._tmp()
                checks.append(f"({t} := {self.expr(x)}) is not None")
                refs.append(t)
            else:
                if isinstance(x, Lit) and x.value is None:
                    return "False"
                if not never_null(x):
                    checks.append(f"{s} is not None")
                refs.append(s)
        checks.append(f"{refs[0]} {pyop} {refs[1]}")
        return "(" + " and ".join(checks) + ")"


def row_ref(var: str) -> Callable[[int], str]:
    return lambda i: f"{var}[{i}]"


def tuple_src(items: Sequence[str]) -> str:
    if len(items) == 1:
        return f"({items[0]},)"
    return "(" + ", ".join(items) + ")"


def build(src: str, ns: dict[str, Any], name: str) -> Any:
    """Exec generated `src` in namespace `ns` and return the function `name`."""
    code = compile(src, f"<dataflow:{name}>", "exec")
    exec(code, ns)
    return ns[name]


def compile_scalar(e: Expr) -> Callable[[tuple[Any, ...]], Any]:
    """A function row -> value of `e` (for tests and one-off use; operators inline instead)."""
    g = Codegen(row_ref("r"))
    body = g.expr(e)
    src = f"def _scalar(r):\n    return {body}\n"
    fn: Callable[[tuple[Any, ...]], Any] = build(src, g.namespace(), "_scalar")
    return fn


def compile_predicate(e: Expr) -> Callable[[tuple[Any, ...]], bool]:
    """A function row -> bool that is True iff `e` is TRUE."""
    g = Codegen(row_ref("r"))
    body = g.pred(e)
    src = f"def _pred(r):\n    return bool({body})\n"
    fn: Callable[[tuple[Any, ...]], bool] = build(src, g.namespace(), "_pred")
    return fn
