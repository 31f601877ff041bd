"""Scalar expressions: sqlglot expressions -> typed dataflow IR (`Col`/`Lit`/`Call`/...).

An `ExprLowerer` lowers expressions over one FROM scope. Where a subquery may appear it also
holds a `PlanBox` (the plan the expression is evaluated over); an uncorrelated subquery
appends its result to that plan as extra columns (a cross join with a one-row collection, or
a left join for `IN`), so existing column references stay valid. In a grouped query the
lowerer maps grouping-key expressions and aggregate calls to the `Reduce`'s output columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlglot import exp

from twinstream.compute.dataflow.expr import (
    NULL,
    Call,
    Case,
    Cast,
    Col,
    Expr,
    Lit,
    columns,
)
from twinstream.compute.dataflow.plan import Agg, AggFunc, Distinct, Map, Plan, Project, Reduce
from twinstream.compute.lower.errors import (
    AMBIGUOUS_FUNCTION,
    DATATYPE_MISMATCH,
    GROUPING_ERROR,
    SYNTAX_ERROR,
    UNDEFINED_FUNCTION,
    LoweringError,
    Unsupported,
    unsupported,
)
from twinstream.compute.lower.model import Query
from twinstream.compute.lower.scope import Env, PlanBox, Scope, column_parts, missing
from twinstream.compute.lower.types import (
    FLOAT_TYPES,
    INT_TYPES,
    NUMERIC_RANK,
    TEMPORAL_TYPES,
    UNKNOWN,
    base,
    coerce,
    common_type,
    datatype_name,
    display,
    explicit_cast,
    is_numeric,
    is_string,
    numeric_literal,
    operator_type,
)

#: The error a scalar subquery with more than one row becomes (the IR has no raise: it is a
#: failing cast, so the error update is 22P02 with this text in its message).
TOO_MANY_ROWS = "more than one row returned by a subquery used as an expression"


@dataclass(frozen=True)
class Typed:
    expr: Expr
    type: str


# ---------------------------------------------------------------- aggregates

_AGGS: dict[type[exp.Expr], AggFunc] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.LogicalAnd: "bool_and",
    exp.LogicalOr: "bool_or",
}


@dataclass(frozen=True)
class AggCall:
    func: AggFunc
    arg: exp.Expr | None  # None: count(*)
    distinct: bool
    filter: exp.Expr | None


def func_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.LogicalAnd):
        return "bool_and"
    if isinstance(node, exp.LogicalOr):
        return "bool_or"
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return type(node).__name__.lower()


def is_aggregate(node: exp.Expr) -> bool:
    if isinstance(node, exp.Filter | exp.AggFunc):
        return True
    return isinstance(node, exp.Anonymous) and func_name(node) == "every"


def agg_call(node: exp.Expr) -> AggCall:
    """The aggregate call `node` is (`is_aggregate(node)` must hold)."""
    filt: exp.Expr | None = None
    inner = node
    if isinstance(node, exp.Filter):
        inner = node.this
        where = node.expression
        filt = where.this if isinstance(where, exp.Where) else where
        if not is_aggregate(inner) or isinstance(inner, exp.Filter):
            raise LoweringError(SYNTAX_ERROR, "FILTER specified, but it is not an aggregate")
    if isinstance(inner, exp.Anonymous) and func_name(inner) == "every":
        if len(inner.expressions) != 1:
            raise LoweringError(UNDEFINED_FUNCTION, "function every() takes one argument")
        return AggCall("bool_and", inner.expressions[0], False, filt)
    func = _AGGS.get(type(inner))
    if func is None:
        raise unsupported(f"the aggregate function {func_name(inner)}()")
    arg = inner.this
    distinct = False
    if isinstance(arg, exp.Distinct):
        if len(arg.expressions) != 1:
            raise LoweringError(
                UNDEFINED_FUNCTION,
                f"function {func}() with {len(arg.expressions)} arguments does not exist",
            )
        arg = arg.expressions[0]
        distinct = True
    if inner.expressions or arg is None:
        raise LoweringError(UNDEFINED_FUNCTION, f"function {func}() takes exactly one argument")
    if isinstance(arg, exp.Star):
        if func != "count" or distinct:
            raise LoweringError(SYNTAX_ERROR, f"{func}(*) is not an aggregate")
        return AggCall("count", None, False, filt)
    return AggCall(func, arg, distinct and func not in ("min", "max"), filt)


def _children(node: exp.Expr) -> Iterator[exp.Expr]:
    for child in node.iter_expressions():
        if isinstance(child, exp.Expr):
            yield child


def find_aggregates(node: exp.Expr, out: list[exp.Expr]) -> None:
    """Append the aggregate calls in `node` (not looking into subqueries) to `out`."""
    if isinstance(node, exp.Query | exp.Exists):
        return
    if isinstance(node, exp.Window):
        raise unsupported("window functions")
    if is_aggregate(node):
        out.append(node)
        return
    for child in _children(node):
        find_aggregates(child, out)


def has_subquery(node: exp.Expr) -> bool:
    return any(isinstance(n, exp.Query | exp.Exists) for n in node.walk())


def _has_aggregate(node: exp.Expr) -> bool:
    found: list[exp.Expr] = []
    find_aggregates(node, found)
    return bool(found)


# ---------------------------------------------------------------- helpers


def require_bool(t: Typed, what: str) -> Expr:
    """`t` as a condition (a boolean); quoted literals are read as booleans."""
    if base(t.type) == "bool":
        return t.expr
    if t.type == UNKNOWN:
        return coerce(t.expr, UNKNOWN, "bool")
    raise LoweringError(
        DATATYPE_MISMATCH, f"argument of {what} must be type boolean, not type {display(t.type)}"
    )


def conjuncts(e: Expr) -> list[Expr]:
    if isinstance(e, Call) and e.op == "and":
        return [c for a in e.args for c in conjuncts(a)]
    if e == Lit(True):
        return []
    return [e]


def _describe(node: exp.Expr) -> str:
    names: dict[type[exp.Expr], str] = {
        exp.Interval: "interval literals",
        exp.Array: "arrays",
        exp.Tuple: "row constructors",
        exp.Bracket: "subscripts",
        exp.Parameter: "parameters ($n)",
        exp.Placeholder: "parameters ($n)",
        exp.RegexpLike: "regular expression matches",
        exp.SimilarTo: "SIMILAR TO",
        exp.Pow: "the ^ operator",
        exp.CurrentTimestamp: "current_timestamp/now()",
        exp.CurrentDate: "current_date",
        exp.TryCast: "TRY_CAST",
        exp.Window: "window functions",
        exp.Collate: "COLLATE",
    }
    for cls, name in names.items():
        if isinstance(node, cls):
            return name
    if isinstance(node, exp.Func):
        return f"the function {func_name(node)}()"
    sql = node.sql(dialect="postgres")
    if len(sql) > 60:
        sql = sql[:57] + "..."
    return f"the expression `{sql}`"


# ---------------------------------------------------------------- grouping


class Grouping:
    """The keys and aggregates of a grouped query (the `Reduce` it lowers to).

    `input` lowers expressions over the query's FROM clause (no subqueries, no aggregates).
    """

    def __init__(self, input: ExprLowerer, keys: list[Typed]) -> None:
        self.input = input
        self.keys = keys
        self.aggs: list[Agg] = []
        self.agg_types: list[str] = []

    def register(self, node: exp.Expr) -> None:
        agg, t = self.input.aggregate(node)
        if agg not in self.aggs:
            self.aggs.append(agg)
            self.agg_types.append(t)

    def column(self, node: exp.Expr) -> Typed:
        agg, t = self.input.aggregate(node)
        j = self.aggs.index(agg)
        return Typed(Col(len(self.keys) + j), t)

    def key(self, e: Expr) -> Typed | None:
        for k, key in enumerate(self.keys):
            if key.expr == e:
                return Typed(Col(k), key.type)
        return None


# ---------------------------------------------------------------- the lowerer


class ExprLowerer:
    """Lowers scalar expressions over `scope` (columns) into IR over `box`'s plan.

    `clause` names where the expressions are (for error messages). Without a `box`,
    subqueries are not supported there. With a `grouping`, column references must be grouping
    keys and aggregates are the `Reduce`'s output columns (`box` is the reduce's output).
    """

    def __init__(
        self,
        env: Env,
        scope: Scope | None,
        box: PlanBox | None,
        clause: str,
        grouping: Grouping | None = None,
        agg_error: str | None = None,
    ) -> None:
        self.env = env
        self.scope = scope
        self.box = box
        self.clause = clause
        self.grouping = grouping
        self.agg_error = agg_error or f"aggregate functions are not allowed in {clause}"

    def nested(self, clause: str, agg_error: str | None = None) -> ExprLowerer:
        """The same context, for a different clause and without a grouping."""
        return ExprLowerer(self.env, self.scope, self.box, clause, None, agg_error)

    # ------------------------------------------------------------ entry points

    def lower(self, node: exp.Expr) -> Typed:
        if self.grouping is not None:
            return self._grouped(node)
        return self._lower(node)

    def predicate(self, node: exp.Expr, what: str) -> Expr:
        return require_bool(self.lower(node), what)

    def aggregate(self, node: exp.Expr) -> tuple[Agg, str]:
        """The `Agg` for an aggregate call (its argument lowered over this scope)."""
        call = agg_call(node)
        inner = ExprLowerer(
            self.env, self.scope, None, "aggregate arguments",
            agg_error="aggregate function calls cannot be nested",
        )  # fmt: skip
        filt = inner.predicate(call.filter, "FILTER") if call.filter is not None else None
        if call.arg is None:
            star: Expr | None = None if filt is None else Case(((filt, Lit(1)),), NULL)
            return Agg("count", star), "int8"
        a = inner.lower(call.arg)
        e, t = _agg_type(call.func, a)
        if filt is not None:
            e = Case(((filt, e),), NULL)
        return Agg(call.func, e, call.distinct), t

    # ------------------------------------------------------------ grouped context

    def _grouped(self, node: exp.Expr) -> Typed:
        g = self.grouping
        assert g is not None
        if is_aggregate(node):
            return g.column(node)
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            t = g.input.lower(node)
            k = g.key(t.expr)
            if k is None:
                name = ".".join(column_parts(node))
                raise LoweringError(
                    GROUPING_ERROR,
                    f'column "{name}" must appear in the GROUP BY clause or be used in an '
                    "aggregate function",
                )
            return k
        if not has_subquery(node) and not _has_aggregate(node):
            try:
                t = g.input.lower(node)
            except LoweringError:
                pass
            else:
                k = g.key(t.expr)
                if k is not None:
                    return k
                if not columns(t.expr):
                    return t
        return self._lower(node)

    # ------------------------------------------------------------ dispatch

    def _lower(self, node: exp.Expr) -> Typed:
        handler = _HANDLERS.get(type(node))
        if handler is not None:
            return handler(self, node)
        if is_aggregate(node):
            raise LoweringError(GROUPING_ERROR, self.agg_error)
        raise unsupported(_describe(node))

    def _paren(self, node: exp.Expr) -> Typed:
        return self.lower(node.this)

    def _column(self, node: exp.Expr) -> Typed:
        assert isinstance(node, exp.Column)
        if isinstance(node.this, exp.Star):
            raise unsupported("t.* inside an expression")
        parts = column_parts(node)
        c = self.scope.lookup(parts) if self.scope is not None else None
        if c is None:
            if self.env.is_outer_reference(parts):
                raise Unsupported(
                    "correlated subqueries are not supported in dataflows (column "
                    f'"{".".join(parts)}" refers to an outer query)'
                )
            raise missing(parts)
        return Typed(Col(c.index), c.type)

    def _literal(self, node: exp.Expr) -> Typed:
        assert isinstance(node, exp.Literal)
        if node.is_string:
            return Typed(Lit(str(node.this)), UNKNOWN)
        v, t = numeric_literal(str(node.this))
        return Typed(Lit(v), t)

    def _null(self, node: exp.Expr) -> Typed:
        return Typed(NULL, UNKNOWN)

    def _boolean(self, node: exp.Expr) -> Typed:
        return Typed(Lit(bool(node.this)), "bool")

    def _neg(self, node: exp.Expr) -> Typed:
        a = self.lower(node.this)
        if not is_numeric(a.type):
            if a.type == UNKNOWN:
                raise LoweringError(AMBIGUOUS_FUNCTION, "operator is not unique: - unknown")
            if base(a.type) in TEMPORAL_TYPES:
                raise unsupported(f"the operator - on {display(a.type)}")
            raise LoweringError(UNDEFINED_FUNCTION, f"operator does not exist: - {display(a.type)}")
        if isinstance(a.expr, Lit) and a.expr.value is not None:
            return Typed(Lit(-a.expr.value), a.type)  # type: ignore[operator]
        return Typed(Call("neg", (a.expr,)), base(a.type))

    def _arith(self, node: exp.Expr) -> Typed:
        op = _ARITH[type(node)]
        return self.arith(op, self.lower(node.this), self.lower(node.expression))

    def arith(self, op: str, left: Typed, right: Typed) -> Typed:
        lt, rt = left.type, right.type
        if lt == UNKNOWN and rt == UNKNOWN:
            raise LoweringError(AMBIGUOUS_FUNCTION, f"operator is not unique: unknown {op} unknown")
        lt2 = rt if lt == UNKNOWN else lt
        rt2 = lt if rt == UNKNOWN else rt
        if not (is_numeric(lt2) and is_numeric(rt2)):
            if base(lt2) in TEMPORAL_TYPES or base(rt2) in TEMPORAL_TYPES:
                raise unsupported(f"the operator {op} on {display(lt2)} and {display(rt2)}")
            raise LoweringError(
                UNDEFINED_FUNCTION,
                f"operator does not exist: {display(lt2)} {op} {display(rt2)}",
            )
        t = max(base(lt2), base(rt2), key=NUMERIC_RANK.__getitem__)
        if op == "%" and t in FLOAT_TYPES:
            raise LoweringError(
                UNDEFINED_FUNCTION, f"operator does not exist: {display(t)} % {display(t)}"
            )
        return Typed(
            Call(op, (coerce(left.expr, lt, t), coerce(right.expr, rt, t))),
            t,
        )

    def _compare(self, node: exp.Expr) -> Typed:
        op = _COMPARE[type(node)]
        right_node = node.expression
        if isinstance(right_node, exp.Any | exp.All):
            return self._quantified(op, node.this, right_node)
        return self.compare(op, self.lower(node.this), self.lower(right_node))

    def compare(self, op: str, left: Typed, right: Typed) -> Typed:
        bl, br = base(left.type), base(right.type)
        if bl != br and bl in TEMPORAL_TYPES and br in TEMPORAL_TYPES:
            raise unsupported(f"comparing {display(bl)} with {display(br)}")
        t = operator_type(op, left.type, right.type)
        return Typed(
            Call(op, (coerce(left.expr, left.type, t), coerce(right.expr, right.type, t))),
            "bool",
        )

    def _null_safe(self, node: exp.Expr) -> Typed:
        op = "is_not_distinct_from" if isinstance(node, exp.NullSafeEQ) else "is_distinct_from"
        left, right = self.lower(node.this), self.lower(node.expression)
        text = "IS NOT DISTINCT FROM" if op == "is_not_distinct_from" else "IS DISTINCT FROM"
        t = operator_type(text, left.type, right.type)
        return Typed(
            Call(op, (coerce(left.expr, left.type, t), coerce(right.expr, right.type, t))),
            "bool",
        )

    def _logic(self, node: exp.Expr) -> Typed:
        kind = type(node)
        what = "AND" if kind is exp.And else "OR"
        operands: list[exp.Expr] = []

        def flatten(n: exp.Expr) -> None:
            while isinstance(n, exp.Paren):
                n = n.this
            if type(n) is kind:
                flatten(n.this)
                flatten(n.expression)
            else:
                operands.append(n)

        flatten(node)
        args = tuple(self.predicate(o, what) for o in operands)
        return Typed(Call(what.lower(), args), "bool")

    def _not(self, node: exp.Expr) -> Typed:
        return Typed(Call("not", (self.predicate(node.this, "NOT"),)), "bool")

    def _is(self, node: exp.Expr) -> Typed:
        target = node.expression
        negate = bool(node.args.get("negate"))
        if isinstance(target, exp.Null):
            a = self.lower(node.this)
            return Typed(Call("is_not_null" if negate else "is_null", (a.expr,)), "bool")
        if isinstance(target, exp.Boolean):
            x = self.predicate(node.this, "IS TRUE/IS FALSE")
            op = "is_distinct_from" if negate else "is_not_distinct_from"
            return Typed(Call(op, (x, Lit(bool(target.this)))), "bool")
        raise unsupported(f"IS {target.sql(dialect='postgres')}")

    def _in(self, node: exp.Expr) -> Typed:
        if node.args.get("unnest") or node.args.get("field"):
            raise unsupported("IN UNNEST(...)")
        query = node.args.get("query")
        if query is not None:
            return self.in_subquery(self.lower(node.this), query, negate=False)
        x = self.lower(node.this)
        items = [self.lower(e) for e in node.expressions]
        t = common_type([x.type, *(i.type for i in items)], "IN")
        args = (coerce(x.expr, x.type, t), *(coerce(i.expr, i.type, t) for i in items))
        return Typed(Call("in", args), "bool")

    def _between(self, node: exp.Expr) -> Typed:
        if node.args.get("symmetric"):
            raise unsupported("BETWEEN SYMMETRIC")
        x = self.lower(node.this)
        lo = self.compare(">=", x, self.lower(node.args["low"]))
        hi = self.compare("<=", x, self.lower(node.args["high"]))
        return Typed(Call("and", (lo.expr, hi.expr)), "bool")

    def _like(self, node: exp.Expr) -> Typed:
        s, p = self.lower(node.this), self.lower(node.expression)
        op = "~~*" if isinstance(node, exp.ILike) else "~~"
        for t in (s, p):
            if not (is_string(t.type) or t.type == UNKNOWN):
                raise LoweringError(
                    UNDEFINED_FUNCTION,
                    f"operator does not exist: {display(s.type)} {op} {display(p.type)}",
                )
        se, pe = coerce(s.expr, s.type, "text"), coerce(p.expr, p.type, "text")
        if isinstance(node, exp.ILike):
            se, pe = Call("lower", (se,)), Call("lower", (pe,))
        e: Expr = Call("like", (se, pe))
        if node.args.get("negate"):
            e = Call("not", (e,))
        return Typed(e, "bool")

    def _escape(self, node: exp.Expr) -> Typed:
        esc = node.expression
        if (
            isinstance(node.this, exp.Like | exp.ILike)
            and isinstance(esc, exp.Literal)
            and esc.is_string
            and esc.this == "\\"
        ):
            return self.lower(node.this)
        raise unsupported("LIKE ... ESCAPE with an escape character other than backslash")

    def _concat(self, node: exp.Expr) -> Typed:
        left, right = self.lower(node.this), self.lower(node.expression)
        ok = [is_string(t.type) or t.type == UNKNOWN for t in (left, right)]
        if not any(ok):
            raise LoweringError(
                UNDEFINED_FUNCTION,
                f"operator does not exist: {display(left.type)} || {display(right.type)}",
            )
        for t in (left, right):
            if base(t.type) in TEMPORAL_TYPES:
                raise unsupported(f"|| with {display(t.type)}")
        return Typed(Call("||", (left.expr, right.expr)), "text")

    def _case(self, node: exp.Expr) -> Typed:
        operand = node.this
        subject = self.lower(operand) if operand is not None else None
        conds: list[Expr] = []
        values: list[Typed] = []
        for when in node.args.get("ifs") or []:
            if subject is not None:
                conds.append(self.compare("=", subject, self.lower(when.this)).expr)
            else:
                conds.append(self.predicate(when.this, "CASE/WHEN"))
            values.append(self.lower(when.args["true"]))
        default = node.args.get("default")
        else_ = self.lower(default) if default is not None else Typed(NULL, UNKNOWN)
        t = common_type([v.type for v in values] + [else_.type], "CASE")
        whens = tuple((c, coerce(v.expr, v.type, t)) for c, v in zip(conds, values, strict=True))
        return Typed(Case(whens, coerce(else_.expr, else_.type, t)), t)

    def _variadic(self, node: exp.Expr) -> Typed:
        name = _VARIADIC[type(node)]
        args = [self.lower(node.this)] + [self.lower(e) for e in node.expressions]
        t = common_type([a.type for a in args], name.upper())
        return Typed(Call(name, tuple(coerce(a.expr, a.type, t) for a in args)), t)

    def _nullif(self, node: exp.Expr) -> Typed:
        left, right = self.lower(node.this), self.lower(node.expression)
        t = operator_type("=", left.type, right.type)
        if t == left.type or (left.type != UNKNOWN and base(t) == base(left.type)):
            return Typed(Call("nullif", (left.expr, coerce(right.expr, right.type, t))), left.type)
        eq = self.compare("=", left, right).expr
        lt = "text" if left.type == UNKNOWN else left.type
        return Typed(Case(((eq, NULL),), left.expr), lt)

    def _text_func(self, node: exp.Expr) -> Typed:
        name = _TEXT_FUNCS[type(node)]
        if isinstance(node, exp.Length) and (node.args.get("binary") or node.args.get("encoding")):
            raise unsupported("length(bytea)")
        a = self._text_arg(name, node.this)
        return Typed(Call(name, (a,)), "int4" if name == "length" else "text")

    def _text_arg(self, func: str, node: exp.Expr) -> Expr:
        a = self.lower(node)
        if not (is_string(a.type) or a.type == UNKNOWN):
            raise LoweringError(
                UNDEFINED_FUNCTION, f"function {func}({display(a.type)}) does not exist"
            )
        return coerce(a.expr, a.type, "text")

    def _int_arg(self, func: str, node: exp.Expr) -> Expr:
        a = self.lower(node)
        if not (base(a.type) in INT_TYPES or a.type == UNKNOWN):
            raise LoweringError(
                UNDEFINED_FUNCTION, f"function {func}(..., {display(a.type)}) does not exist"
            )
        return coerce(a.expr, a.type, "int4")

    def _substring(self, node: exp.Expr) -> Typed:
        if node.args.get("zero_start"):
            raise unsupported("zero-based substring")
        s = self._text_arg("substring", node.this)
        start_node = node.args.get("start")
        start = self._int_arg("substring", start_node) if start_node is not None else Lit(1)
        length = node.args.get("length")
        args: tuple[Expr, ...] = (s, start)
        if length is not None:
            args = (*args, self._int_arg("substring", length))
        return Typed(Call("substr", args), "text")

    def _trim(self, node: exp.Expr) -> Typed:
        position = node.args.get("position")
        if (
            node.args.get("expression") is not None
            or node.args.get("collation") is not None
            or (position is not None and str(position).upper() != "BOTH")
        ):
            raise unsupported("trim with LEADING/TRAILING or explicit characters (ltrim, rtrim)")
        return Typed(Call("trim", (self._text_arg("btrim", node.this),)), "text")

    def _numeric_arg(self, func: str, node: exp.Expr) -> Typed:
        a = self.lower(node)
        if not is_numeric(a.type):
            raise LoweringError(
                UNDEFINED_FUNCTION, f"function {func}({display(a.type)}) does not exist"
            )
        return a

    def _abs(self, node: exp.Expr) -> Typed:
        a = self._numeric_arg("abs", node.this)
        return Typed(Call("abs", (a.expr,)), base(a.type))

    def _round(self, node: exp.Expr) -> Typed:
        if node.args.get("truncate") or node.args.get("casts_non_integer_decimals"):
            raise unsupported("this form of round()")
        a = self._numeric_arg("round", node.this)
        decimals = node.args.get("decimals")
        if decimals is None:
            return self._float_or_numeric("round", a)
        b = base(a.type)
        if b in FLOAT_TYPES:
            raise LoweringError(
                UNDEFINED_FUNCTION, "function round(double precision, integer) does not exist"
            )
        n = self._int_arg("round", decimals)
        return Typed(Call("round", (coerce(a.expr, a.type, "numeric"), n)), "numeric")

    def _floor_ceil(self, node: exp.Expr) -> Typed:
        name = "floor" if isinstance(node, exp.Floor) else "ceil"
        if node.args.get("decimals") is not None or node.args.get("to") is not None:
            raise unsupported(f"{name}() with a second argument")
        return self._float_or_numeric(name, self._numeric_arg(name, node.this))

    def _float_or_numeric(self, name: str, a: Typed) -> Typed:
        # PostgreSQL has f(numeric) and f(double precision); integers resolve to the latter.
        if base(a.type) == "numeric":
            return Typed(Call(name, (a.expr,)), "numeric")
        return Typed(Call(name, (coerce(a.expr, a.type, "float8"),)), "float8")

    def _cast(self, node: exp.Expr) -> Typed:
        if node.args.get("format") is not None or node.args.get("default") is not None:
            raise unsupported("CAST ... FORMAT")
        to = datatype_name(node.args["to"])
        a = self.lower(node.this)
        return Typed(explicit_cast(a.expr, a.type, to), to)

    # ------------------------------------------------------------ subqueries

    def _query(self, node: exp.Expr) -> Query:
        if self.box is None:
            raise unsupported(f"subqueries in {self.clause}")
        return self.env.lower_query(node, self.env.enclosed_by(self.scope), False)

    def _scalar_subquery(self, node: exp.Expr) -> Typed:
        q = self._query(node)
        if len(q.columns) != 1:
            raise LoweringError(SYNTAX_ERROR, "subquery must return only one column")
        # One row always: the count and the (only) value; more than one row is an error.
        red = Reduce(q.plan, (), (Agg("count"), Agg("min", Col(0))))
        value = Case(((Call(">", (Col(0), Lit(1))), Cast(Lit(TOO_MANY_ROWS), "int")),), Col(1))
        one = Project(Map(red, (value,)), (2,))
        assert self.box is not None
        return Typed(Col(self.box.join(one, 1)), q.types[0])

    def _exists(self, node: exp.Expr) -> Typed:
        q = self._query(node.this)
        red = Reduce(q.plan, (), (Agg("count"),))
        one = Project(Map(red, (Call(">", (Col(0), Lit(0))),)), (1,))
        assert self.box is not None
        return Typed(Col(self.box.join(one, 1)), "bool")

    def _subquery_side(self, x: Typed, sub: exp.Expr) -> tuple[Expr, Plan]:
        """`x` and the subquery's single column, converted to their common type."""
        q = self._query(sub)
        if len(q.columns) != 1:
            raise LoweringError(SYNTAX_ERROR, "subquery has too many columns")
        t = operator_type("=", x.type, q.types[0])
        ys = coerce(Col(0), q.types[0], t)
        s = q.plan if ys == Col(0) else Project(Map(q.plan, (ys,)), (1,))
        return coerce(x.expr, x.type, t), s

    def in_subquery(self, x: Typed, sub: exp.Expr, negate: bool) -> Typed:
        """`x [NOT] IN (subquery)` with SQL's NULL semantics, as a column of the box's plan:
        a left join with the subquery's distinct values plus its row and non-NULL counts."""
        xs, s = self._subquery_side(x, sub)
        box = self.box
        assert box is not None
        kx = box.append(xs)
        m = box.join(Distinct(s), 1, (kx,), (0,), "left")
        n = box.join(Reduce(s, (), (Agg("count"), Agg("count", Col(0)))), 2)
        value: Expr = Case(
            (
                (Call("is_not_null", (Col(m),)), Lit(True)),
                (Call("=", (Col(n), Lit(0))), Lit(False)),
                (
                    Call("or", (Call("is_null", (Col(kx),)), Call("<", (Col(n + 1), Col(n))))),
                    NULL,
                ),
            ),
            Lit(False),
        )
        if negate:
            value = Call("not", (value,))
        return Typed(value, "bool")

    def semi_join(self, x_node: exp.Expr, sub: exp.Expr) -> None:
        """Keep only the box's rows for which `x IN (subquery)` is TRUE (an inner join with the
        subquery's distinct values)."""
        xs, s = self._subquery_side(self.lower(x_node), sub)
        box = self.box
        assert box is not None
        kx = box.append(xs)
        box.join(Distinct(s), 1, (kx,), (0,))

    def _quantified(self, op: str, left: exp.Expr, q: exp.Expr) -> Typed:
        inner = q.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if not isinstance(inner, exp.Query):
            raise unsupported(f"{op} ANY/ALL over an array")
        if op == "=" and isinstance(q, exp.Any):
            return self.in_subquery(self.lower(left), inner, negate=False)
        if op == "<>" and isinstance(q, exp.All):
            return self.in_subquery(self.lower(left), inner, negate=True)
        kind = "ANY" if isinstance(q, exp.Any) else "ALL"
        raise unsupported(f"{op} {kind} (subquery)")


def semi_join_operands(node: exp.Expr) -> tuple[exp.Expr, exp.Expr] | None:
    """`(x, subquery)` if `node` is `x IN (subquery)` or `x = ANY (subquery)`."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.In) and node.args.get("query") is not None:
        if node.args.get("unnest") or node.args.get("field"):
            return None
        return node.this, node.args["query"]
    if isinstance(node, exp.EQ) and isinstance(node.expression, exp.Any):
        inner = node.expression.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Query):
            return node.this, inner
    return None


def _agg_type(func: AggFunc, a: Typed) -> tuple[Expr, str]:
    """The aggregate's argument (converted) and result type, as PostgreSQL types them."""
    b = base(a.type)
    if func == "count":
        return a.expr, "int8"
    if func in ("bool_and", "bool_or"):
        return require_bool(a, func), "bool"
    if a.type == UNKNOWN:
        if func in ("min", "max"):
            return coerce(a.expr, UNKNOWN, "text"), "text"
        raise LoweringError(AMBIGUOUS_FUNCTION, f"function {func}(unknown) is not unique")
    if func in ("min", "max"):
        if b == "bool":
            raise LoweringError(UNDEFINED_FUNCTION, f"function {func}(boolean) does not exist")
        return a.expr, b
    if b not in NUMERIC_RANK:
        raise LoweringError(UNDEFINED_FUNCTION, f"function {func}({display(b)}) does not exist")
    if func == "sum":
        if b in ("int2", "int4"):
            return a.expr, "int8"
        if b == "int8":
            return coerce(a.expr, b, "numeric"), "numeric"
        return a.expr, b
    # avg
    if b in FLOAT_TYPES:
        return a.expr, "float8"
    return a.expr, "numeric"


_ARITH: dict[type[exp.Expr], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
}
_COMPARE: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}

_VARIADIC: dict[type[exp.Expr], str] = {
    exp.Coalesce: "coalesce",
    exp.Greatest: "greatest",
    exp.Least: "least",
}
_TEXT_FUNCS: dict[type[exp.Expr], str] = {
    exp.Lower: "lower",
    exp.Upper: "upper",
    exp.Length: "length",
}

Handler = Callable[[ExprLowerer, exp.Expr], Typed]

_HANDLERS: dict[type[exp.Expr], Handler] = {
    exp.Paren: ExprLowerer._paren,
    exp.Column: ExprLowerer._column,
    exp.Literal: ExprLowerer._literal,
    exp.Null: ExprLowerer._null,
    exp.Boolean: ExprLowerer._boolean,
    exp.Neg: ExprLowerer._neg,
    **{k: ExprLowerer._arith for k in _ARITH},
    **{k: ExprLowerer._compare for k in _COMPARE},
    exp.NullSafeEQ: ExprLowerer._null_safe,
    exp.NullSafeNEQ: ExprLowerer._null_safe,
    exp.And: ExprLowerer._logic,
    exp.Or: ExprLowerer._logic,
    exp.Not: ExprLowerer._not,
    exp.Is: ExprLowerer._is,
    exp.In: ExprLowerer._in,
    exp.Between: ExprLowerer._between,
    exp.Like: ExprLowerer._like,
    exp.ILike: ExprLowerer._like,
    exp.Escape: ExprLowerer._escape,
    exp.DPipe: ExprLowerer._concat,
    exp.Case: ExprLowerer._case,
    exp.Coalesce: ExprLowerer._variadic,
    exp.Greatest: ExprLowerer._variadic,
    exp.Least: ExprLowerer._variadic,
    exp.Nullif: ExprLowerer._nullif,
    exp.Lower: ExprLowerer._text_func,
    exp.Upper: ExprLowerer._text_func,
    exp.Length: ExprLowerer._text_func,
    exp.Substring: ExprLowerer._substring,
    exp.Trim: ExprLowerer._trim,
    exp.Abs: ExprLowerer._abs,
    exp.Round: ExprLowerer._round,
    exp.Floor: ExprLowerer._floor_ceil,
    exp.Ceil: ExprLowerer._floor_ceil,
    exp.Cast: ExprLowerer._cast,
    exp.Subquery: ExprLowerer._scalar_subquery,
    exp.Exists: ExprLowerer._exists,
}


__all__ = [
    "TOO_MANY_ROWS",
    "AggCall",
    "ExprLowerer",
    "Grouping",
    "Typed",
    "agg_call",
    "conjuncts",
    "find_aggregates",
    "has_subquery",
    "is_aggregate",
    "require_bool",
    "semi_join_operands",
]
