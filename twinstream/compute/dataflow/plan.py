"""Relational plans: what a dataflow is built from (the SQL lowering's target).

A plan is a tree (or, through structural sharing, a DAG) of frozen dataclasses. Structurally
equal sub-plans are built once per dataflow (common sub-expressions share operators and
arrangements). Columns are positional; `arity(plan)` gives a node's width.

- `Get(name, arity)`: an input collection, fed through `Dataflow.step`.
- `Import(name, arity)`: a shared `Arrangement` bound at construction (an index).
- `Constant(rows, arity)`: a fixed collection (`VALUES`), `((row, diff), ...)`.
- `Map(input, exprs)`: appends one column per expression (later ones may use earlier ones).
- `Filter(input, predicates)`: keeps rows for which every predicate is TRUE.
- `Project(input, columns)`: picks/reorders/duplicates columns.
- `Union(inputs)`: UNION ALL (multiset sum); `Distinct(Union(...))` is UNION.
- `Negate(input)`: flips every diff.
- `Distinct(input)`: each row with a positive count, once.
- `Join(left, right, left_key, right_key, kind, on)`: equi-join on key columns; `kind` is
  inner/left/right/full; `on` is a residual predicate over the concatenated row (left columns
  then right columns) that is part of the join condition, so it decides which rows of an
  outer join are padded with NULLs; empty keys make a cross join. NULL keys never match.
- `Reduce(input, group_key, aggregates)`: GROUP BY; output = key values, then one column per
  `Agg`; an empty `group_key` is a global aggregate (exactly one row, even over empty input).
- `TopK(input, group_key, order_by, limit, offset)`: per group (global when `group_key` is
  empty), rows ordered by `order_by` with ties broken by the whole row; `offset` rows skipped,
  at most `limit` kept (None: no limit).
- `SetOp(op, all, left, right)`: `except` / `intersect`, set (`all=False`) or ALL.
- `Consolidate(input)`: sums the diffs of equal rows per time.
- `ArrangeBy(input, key)`: the collection, arranged by `key` columns; exported as an index
  with `Dataflow(exports=...)`.

HAVING is a `Filter` over a `Reduce`; cross join is `Join` with empty keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from twinstream.compute.dataflow.expr import Col, Expr, PlanError, validate
from twinstream.persist.types import Row

AggFunc = Literal["count", "sum", "avg", "min", "max", "bool_and", "bool_or"]
AGG_FUNCS: tuple[str, ...] = ("count", "sum", "avg", "min", "max", "bool_and", "bool_or")


@dataclass(frozen=True, slots=True)
class Agg:
    """An aggregate. `expr=None` only for `count` (count(*)). NULL inputs are ignored.

    Results: count -> int (0 for no rows); sum -> same kind as the inputs (int, Decimal,
    float), NULL when there is no non-NULL input; avg -> Decimal for int/Decimal inputs, float
    for float inputs; min/max -> the extreme non-NULL value; bool_and/bool_or -> bool.
    `distinct=True` aggregates the distinct non-NULL values (count(DISTINCT x) ...).
    """

    func: AggFunc
    expr: Expr | None = None
    distinct: bool = False


def count_star() -> Agg:
    return Agg("count")


@dataclass(frozen=True, slots=True)
class SortKey:
    """ORDER BY column `col`. `nulls_first=None` is PostgreSQL's default (NULLs sort as larger
    than every value: last for ASC, first for DESC)."""

    col: int
    desc: bool = False
    nulls_first: bool | None = None


@dataclass(frozen=True, slots=True)
class Get:
    name: str
    arity: int


@dataclass(frozen=True, slots=True)
class Import:
    name: str
    arity: int


@dataclass(frozen=True, slots=True)
class Constant:
    rows: tuple[tuple[Row, int], ...]
    arity: int


@dataclass(frozen=True, slots=True)
class Map:
    input: Plan
    exprs: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Filter:
    input: Plan
    predicates: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Project:
    input: Plan
    columns: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Union:
    inputs: tuple[Plan, ...]


@dataclass(frozen=True, slots=True)
class Negate:
    input: Plan


@dataclass(frozen=True, slots=True)
class Distinct:
    input: Plan


JoinKind = Literal["inner", "left", "right", "full"]


@dataclass(frozen=True, slots=True)
class Join:
    left: Plan
    right: Plan
    left_key: tuple[int, ...] = ()
    right_key: tuple[int, ...] = ()
    kind: JoinKind = "inner"
    on: Expr | None = None


@dataclass(frozen=True, slots=True)
class Reduce:
    input: Plan
    group_key: tuple[Expr, ...]
    aggregates: tuple[Agg, ...]


@dataclass(frozen=True, slots=True)
class TopK:
    input: Plan
    group_key: tuple[int, ...]
    order_by: tuple[SortKey, ...]
    limit: int | None = None
    offset: int = 0


SetOpKind = Literal["except", "intersect"]


@dataclass(frozen=True, slots=True)
class SetOp:
    op: SetOpKind
    all: bool
    left: Plan
    right: Plan


@dataclass(frozen=True, slots=True)
class Consolidate:
    input: Plan


@dataclass(frozen=True, slots=True)
class ArrangeBy:
    input: Plan
    key: tuple[int, ...]


Plan: TypeAlias = (
    Get
    | Import
    | Constant
    | Map
    | Filter
    | Project
    | Union
    | Negate
    | Distinct
    | Join
    | Reduce
    | TopK
    | SetOp
    | Consolidate
    | ArrangeBy
)


def cols(*indices: int) -> tuple[Col, ...]:
    return tuple(Col(i) for i in indices)


def children(p: Plan) -> tuple[Plan, ...]:
    if isinstance(p, Get | Import | Constant):
        return ()
    if isinstance(p, Union):
        return p.inputs
    if isinstance(p, Join | SetOp):
        return (p.left, p.right)
    return (p.input,)


def arity(p: Plan, _memo: dict[int, int] | None = None) -> int:
    """The number of columns of `p` (validating the plan's column references on the way)."""
    memo = {} if _memo is None else _memo
    got = memo.get(id(p))
    if got is not None:
        return got
    n = _arity(p, memo)
    memo[id(p)] = n
    return n


def _arity(p: Plan, memo: dict[int, int]) -> int:
    if isinstance(p, Get | Import | Constant):
        if isinstance(p, Constant):
            for row, _d in p.rows:
                if len(row) != p.arity:
                    raise PlanError(f"constant row {row!r} does not have {p.arity} columns")
        return p.arity
    if isinstance(p, Map):
        n = arity(p.input, memo)
        for i, e in enumerate(p.exprs):
            validate(e, n + i)
        return n + len(p.exprs)
    if isinstance(p, Filter):
        n = arity(p.input, memo)
        for e in p.predicates:
            validate(e, n)
        return n
    if isinstance(p, Project):
        n = arity(p.input, memo)
        for c in p.columns:
            if not 0 <= c < n:
                raise PlanError(f"project: column {c} out of range (arity {n})")
        return len(p.columns)
    if isinstance(p, Union):
        if not p.inputs:
            raise PlanError("union of nothing")
        ns = {arity(i, memo) for i in p.inputs}
        if len(ns) != 1:
            raise PlanError(f"union inputs have different arities {sorted(ns)}")
        return ns.pop()
    if isinstance(p, Negate | Distinct | Consolidate):
        return arity(p.input, memo)
    if isinstance(p, Join):
        nl, nr = arity(p.left, memo), arity(p.right, memo)
        if len(p.left_key) != len(p.right_key):
            raise PlanError("join keys have different lengths")
        for c in p.left_key:
            if not 0 <= c < nl:
                raise PlanError(f"join: left key column {c} out of range")
        for c in p.right_key:
            if not 0 <= c < nr:
                raise PlanError(f"join: right key column {c} out of range")
        if p.kind not in ("inner", "left", "right", "full"):
            raise PlanError(f"unknown join kind {p.kind!r}")
        if p.on is not None:
            validate(p.on, nl + nr)
        return nl + nr
    if isinstance(p, Reduce):
        n = arity(p.input, memo)
        for e in p.group_key:
            validate(e, n)
        for a in p.aggregates:
            if a.func not in AGG_FUNCS:
                raise PlanError(f"unknown aggregate {a.func!r}")
            if a.expr is None:
                if a.func != "count":
                    raise PlanError(f"{a.func}(*) is not an aggregate")
            else:
                validate(a.expr, n)
        return len(p.group_key) + len(p.aggregates)
    if isinstance(p, TopK):
        n = arity(p.input, memo)
        for c in p.group_key:
            if not 0 <= c < n:
                raise PlanError(f"topk: group column {c} out of range")
        for k in p.order_by:
            if not 0 <= k.col < n:
                raise PlanError(f"topk: order column {k.col} out of range")
        if (p.limit is not None and p.limit < 0) or p.offset < 0:
            raise PlanError("topk: negative limit or offset")
        return n
    if isinstance(p, SetOp):
        nl, nr = arity(p.left, memo), arity(p.right, memo)
        if nl != nr:
            raise PlanError(f"{p.op}: inputs have different arities {nl} and {nr}")
        if p.op not in ("except", "intersect"):
            raise PlanError(f"unknown set operation {p.op!r}")
        return nl
    if isinstance(p, ArrangeBy):
        n = arity(p.input, memo)
        for c in p.key:
            if not 0 <= c < n:
                raise PlanError(f"arrange: key column {c} out of range")
        return n
    raise PlanError(f"not a plan node: {p!r}")
