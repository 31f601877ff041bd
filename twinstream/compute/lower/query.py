"""Queries -> plans: SELECT, set operations, VALUES, CTEs, FROM clauses and joins.

A SELECT lowers in PostgreSQL's logical order: FROM (a join tree, see `_build`), WHERE
(conjuncts without subqueries are pushed into the join tree: single-input conjuncts filter
that input, equalities between the two sides of an inner join become its key), conjuncts with
subqueries (semi-joins, or columns appended to the plan), GROUP BY/aggregates (`Reduce`),
HAVING (`Filter`), the SELECT list (`Map`/`Project`), DISTINCT, ORDER BY + LIMIT/OFFSET
(`TopK`; ORDER BY alone does not change a collection and is dropped).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from sqlglot import exp

from twinstream.compute.dataflow.expr import Call, Col, Expr, Lit, columns, substitute
from twinstream.compute.dataflow.plan import (
    Constant,
    Distinct,
    Filter,
    Get,
    Join,
    JoinKind,
    Map,
    Plan,
    Project,
    Reduce,
    SetOp,
    SetOpKind,
    SortKey,
    TopK,
    Union,
    children,
)
from twinstream.compute.lower.errors import (
    AMBIGUOUS_COLUMN,
    DUPLICATE_ALIAS,
    GROUPING_ERROR,
    INVALID_COLUMN_REFERENCE,
    INVALID_LIMIT,
    INVALID_OFFSET,
    SYNTAX_ERROR,
    UNDEFINED_COLUMN,
    UNDEFINED_TABLE,
    LoweringError,
    Unsupported,
    unsupported,
)
from twinstream.compute.lower.model import Query, Relation, View
from twinstream.compute.lower.scalar import (
    ExprLowerer,
    Grouping,
    Typed,
    conjuncts,
    find_aggregates,
    func_name,
    has_subquery,
    semi_join_operands,
)
from twinstream.compute.lower.scope import (
    Env,
    PlanBox,
    Scope,
    ScopeColumn,
    ScopeItem,
    column_parts,
    ident,
    missing,
)
from twinstream.compute.lower.types import (
    INT_TYPES,
    UNKNOWN,
    base,
    coerce,
    common_type,
    datatype_name,
    result_name,
)

#: A collection with one empty row: the FROM clause of `SELECT 1`.
ONE_ROW = Constant((((), 1),), 0)

MAX_VIEW_DEPTH = 32
MAX_SERIES = 1_000_000


def lower_query(node: exp.Expr, env: Env, keep_unknown: bool = False) -> Query:
    """Lower a query expression. Output columns of unresolved literal type become text unless
    `keep_unknown` (the leaves of a set operation resolve them against the other side)."""
    env = _with_ctes(node, env)
    if isinstance(node, exp.Select):
        q = _select(node, env)
    elif isinstance(node, exp.Union | exp.Except | exp.Intersect):
        q = _set_operation(node, env)
    elif isinstance(node, exp.Subquery):
        _check_args(node, _SUBQUERY_ARGS, "parenthesized query")
        q = lower_query(node.this, env, keep_unknown)
        q = _order_limit_outputs(node, q)
    elif isinstance(node, exp.Values):
        q = _values(node, env)
    else:
        raise unsupported(f"{type(node).__name__.upper()} statements in queries")
    if not keep_unknown:
        q.types = ["text" if t == UNKNOWN else t for t in q.types]
    return q


# ---------------------------------------------------------------- clauses we refuse

_SELECT_ARGS = frozenset(
    {"with_", "expressions", "distinct", "from_", "joins", "where", "group", "having", "order",
     "limit", "offset"}
)  # fmt: skip
_SETOP_ARGS = frozenset({"with_", "this", "expression", "distinct", "order", "limit", "offset"})
_SUBQUERY_ARGS = frozenset({"this", "alias", "with_", "order", "limit", "offset"})
_FEATURES = {
    "into": "SELECT INTO",
    "locks": "FOR UPDATE/FOR SHARE",
    "windows": "WINDOW clauses",
    "qualify": "QUALIFY",
    "laterals": "LATERAL VIEW",
    "sample": "TABLESAMPLE",
    "pivots": "PIVOT",
    "connect": "CONNECT BY",
    "by_name": "UNION BY NAME",
    "side": "outer set operations",
    "kind": "this kind of query",
    "for_": "FOR clauses",
}


def _check_args(node: exp.Expr, allowed: frozenset[str], what: str) -> None:
    for key, value in node.args.items():
        if key not in allowed and value not in (None, False, []):
            raise unsupported(_FEATURES.get(key, f"{key.upper()} in a {what}"))


# ---------------------------------------------------------------- CTEs


def _with_ctes(node: exp.Expr, env: Env) -> Env:
    w = node.args.get("with_")
    if w is None:
        return env
    if w.args.get("recursive"):
        raise unsupported("WITH RECURSIVE")
    if w.args.get("search") or w.args.get("cycle"):
        raise unsupported("WITH ... SEARCH/CYCLE")
    level: dict[str, Query] = {}
    inner = env.with_ctes(level)  # each CTE sees the ones before it (filled as we go)
    for cte in w.expressions:
        alias = cte.args.get("alias")
        name = ident(alias.this) if alias is not None else ""
        if name in level:
            raise LoweringError(
                DUPLICATE_ALIAS, f'WITH query name "{name}" specified more than once'
            )
        body = cte.this
        if not isinstance(body, exp.Query | exp.Values):
            raise unsupported("data-modifying statements in WITH")
        q = lower_query(body, inner)
        cols = (alias.args.get("columns") or []) if alias is not None else []
        names = _rename(q.columns, [ident(c) for c in cols], f'WITH query "{name}"')
        level[name] = Query(q.plan, names, q.types)
    return inner


def _rename(names: Sequence[str], new: Sequence[str], what: str) -> list[str]:
    if len(new) > len(names):
        raise LoweringError(
            INVALID_COLUMN_REFERENCE,
            f"{what} has {len(names)} columns available but {len(new)} columns specified",
        )
    return [*new, *names[len(new) :]]


# ---------------------------------------------------------------- set operations and VALUES

_SETOP_WORDS: dict[type[exp.Expr], str] = {
    exp.Union: "UNION",
    exp.Except: "EXCEPT",
    exp.Intersect: "INTERSECT",
}


def _set_operation(node: exp.Expr, env: Env) -> Query:
    _check_args(node, _SETOP_ARGS, "set operation")
    word = _SETOP_WORDS[type(node)]
    left = lower_query(node.this, env, keep_unknown=True)
    right = lower_query(node.expression, env, keep_unknown=True)
    if len(left.columns) != len(right.columns):
        raise LoweringError(SYNTAX_ERROR, f"each {word} query must have the same number of columns")
    types = [common_type([a, b], word) for a, b in zip(left.types, right.types, strict=True)]
    lp, rp = _conform(left, types), _conform(right, types)
    distinct = node.args.get("distinct") is not False
    plan: Plan
    if isinstance(node, exp.Union):
        plan = Union((lp, rp))
        if distinct:
            plan = Distinct(plan)
    else:
        op: SetOpKind = "except" if isinstance(node, exp.Except) else "intersect"
        plan = SetOp(op, not distinct, lp, rp)
    return _order_limit_outputs(node, Query(plan, list(left.columns), types))


def _conform(q: Query, types: Sequence[str]) -> Plan:
    exprs = [coerce(Col(i), t, to) for i, (t, to) in enumerate(zip(q.types, types, strict=True))]
    return project(q.plan, len(q.types), exprs)


def _values(node: exp.Expr, env: Env) -> Query:
    _check_args(node, frozenset({"expressions", "alias"}), "VALUES list")
    low = ExprLowerer(env, Scope(), None, "VALUES")
    rows: list[list[Typed]] = []
    for row in node.expressions:
        items = row.expressions if isinstance(row, exp.Tuple) else [row]
        rows.append([low.lower(e) for e in items])
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise LoweringError(SYNTAX_ERROR, "VALUES lists must all be the same length")
    types = [common_type([r[i].type for r in rows], "VALUES") for i in range(width)]
    exprs = [[coerce(r[i].expr, r[i].type, types[i]) for i in range(width)] for r in rows]
    names = [f"column{i + 1}" for i in range(width)]
    plan: Plan
    if all(isinstance(e, Lit) for r in exprs for e in r):
        counts = Counter(tuple(e.value for e in r if isinstance(e, Lit)) for r in exprs)
        plan = Constant(tuple(counts.items()), width)
    else:
        parts = [Map(ONE_ROW, tuple(r)) for r in exprs]
        plan = parts[0] if len(parts) == 1 else Union(tuple(parts))
    return Query(plan, names, types)


# ---------------------------------------------------------------- ORDER BY / LIMIT / OFFSET


def _limit_offset(node: exp.Expr) -> tuple[int | None, int]:
    limit: int | None = None
    lim = node.args.get("limit")
    if isinstance(lim, exp.Fetch):
        opts = lim.args.get("limit_options")
        if opts is not None and (opts.args.get("percent") or opts.args.get("with_ties")):
            raise unsupported("FETCH ... PERCENT/WITH TIES")
        count = lim.args.get("count")
        limit = 1 if count is None else _constant_int(count, "LIMIT")
    elif isinstance(lim, exp.Limit):
        if lim.args.get("offset") is not None or lim.expressions:
            raise unsupported("this form of LIMIT")
        limit = _constant_int(lim.expression, "LIMIT")
    elif lim is not None:
        raise unsupported("this form of LIMIT")
    if limit is not None and limit < 0:
        raise LoweringError(INVALID_LIMIT, "LIMIT must not be negative")
    off = node.args.get("offset")
    offset = 0
    if off is not None:
        o = _constant_int(off.expression, "OFFSET")
        offset = 0 if o is None else o
        if offset < 0:
            raise LoweringError(INVALID_OFFSET, "OFFSET must not be negative")
    return limit, offset


def _constant_int(node: exp.Expr | None, what: str) -> int | None:
    """A LIMIT/OFFSET value: an integer constant; None for ALL/NULL."""
    if node is None or isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Var) and str(node.this).upper() == "ALL":
        return None
    neg = False
    while isinstance(node, exp.Paren | exp.Neg):
        if isinstance(node, exp.Neg):
            neg = not neg
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string and str(node.this).isdigit():
        v = int(node.this)
        return -v if neg else v
    raise unsupported(f"{what} with a non-constant value")


def _sort_key(o: exp.Expr, pos: int) -> SortKey:
    nulls_first = o.args.get("nulls_first")
    first = None if nulls_first is None else bool(nulls_first)
    return SortKey(pos, bool(o.args.get("desc")), first)


def _output_position(node: exp.Expr, names: Sequence[str], outs: Sequence[Expr]) -> int | None:
    """ORDER BY `node` as a reference to an output column: a position or an output name."""
    if isinstance(node, exp.Literal) and not node.is_string:
        text = str(node.this)
        if not text.isdigit():
            raise unsupported("ORDER BY a non-integer constant")
        k = int(text)
        if not 1 <= k <= len(names):
            raise LoweringError(
                INVALID_COLUMN_REFERENCE, f"ORDER BY position {k} is not in select list"
            )
        return k - 1
    if (
        isinstance(node, exp.Column)
        and not isinstance(node.this, exp.Star)
        and node.args.get("table") is None
    ):
        name = ident(node.this)
        found = [i for i, n in enumerate(names) if n == name]
        if len({outs[i] for i in found}) > 1:
            raise LoweringError(AMBIGUOUS_COLUMN, f'ORDER BY "{name}" is ambiguous')
        if found:
            return found[0]
    return None


def _order_limit_outputs(node: exp.Expr, q: Query) -> Query:
    """ORDER BY/LIMIT/OFFSET over a query's output columns (set operations, `(query) ...`)."""
    limit, offset = _limit_offset(node)
    order = node.args.get("order")
    keys: list[SortKey] = []
    outs: list[Expr] = [Col(i) for i in range(len(q.columns))]
    for o in order.expressions if order is not None else []:
        pos = _output_position(o.this, q.columns, outs)
        if pos is None:
            raise Unsupported(
                "ORDER BY on a UNION/INTERSECT/EXCEPT or parenthesized query must name one of "
                "its result columns"
            )
        keys.append(_sort_key(o, pos))
    if limit is None and not offset:
        return q
    return Query(TopK(q.plan, (), tuple(keys), limit, offset), q.columns, q.types)


# ---------------------------------------------------------------- FROM: the join tree


@dataclass(frozen=True)
class Leaf:
    plan: Plan
    arity: int


@dataclass(frozen=True)
class JoinTree:
    kind: JoinKind
    left: FromTree
    right: FromTree
    on: tuple[Expr, ...]  # conjuncts over left columns then right columns
    arity: int


@dataclass(frozen=True)
class MapTree:
    input: FromTree
    exprs: tuple[Expr, ...]
    arity: int


FromTree: TypeAlias = Leaf | JoinTree | MapTree


def _from_clause(first: exp.Expr, joins: Sequence[exp.Expr], env: Env) -> tuple[FromTree, Scope]:
    tree, scope = _from_item(first, env)
    for j in joins:
        tree, scope = _join(tree, scope, j, env)
    return tree, scope


_TABLE_FEATURES = {
    "laterals": "LATERAL VIEW",
    "pivots": "PIVOT",
    "hints": "table hints",
    "system_time": "FOR SYSTEM_TIME",
    "version": "time travel",
    "format": "table formats",
    "pattern": "table patterns",
    "ordinality": "WITH ORDINALITY",
    "when": "time travel",
    "only": "FROM ONLY",
    "partition": "PARTITION",
    "changes": "CHANGES",
    "rows_from": "ROWS FROM",
    "sample": "TABLESAMPLE",
    "indexed": "INDEXED BY",
}


def _from_item(node: exp.Expr, env: Env) -> tuple[FromTree, Scope]:
    if isinstance(node, exp.Table):
        for key, what in _TABLE_FEATURES.items():
            if node.args.get(key):
                raise unsupported(what)
        if isinstance(node.this, exp.Identifier):
            tree, scope = _named_relation(node, env)
        else:
            tree, scope = _table_function(node, env)
        for j in node.args.get("joins") or []:  # a parenthesized join: (a JOIN b ON ...)
            tree, scope = _join(tree, scope, j, env)
        return tree, scope
    if isinstance(node, exp.Subquery):
        alias = node.args.get("alias")
        inner = node.this
        if isinstance(inner, exp.Table):
            _check_args(node, frozenset({"this", "alias"}), "parenthesized join")
            tree, scope = _from_item(inner, env)
            return tree, _alias_scope(scope, alias) if alias is not None else scope
        q = lower_query(node, env)
        return _leaf(q.plan, q.columns, q.types, (), alias)
    if isinstance(node, exp.Values):
        q = lower_query(node, env)
        return _leaf(q.plan, q.columns, q.types, (), node.args.get("alias"))
    if isinstance(node, exp.Lateral):
        raise unsupported("LATERAL")
    if isinstance(node, exp.Unnest):
        raise unsupported("UNNEST")
    raise unsupported(f"{type(node).__name__} in FROM")


def _leaf(
    plan: Plan,
    names: Sequence[str],
    types: Sequence[str],
    qualifiers: tuple[tuple[str, ...], ...],
    alias: exp.Expr | None,
) -> tuple[FromTree, Scope]:
    out = list(names)
    if alias is not None:
        label = ident(alias.this) if alias.this is not None else ""
        out = _rename(out, [ident(c) for c in alias.args.get("columns") or []], f'table "{label}"')
        if label:
            qualifiers = ((label,),)
    cols = tuple(ScopeColumn(n, i, t) for i, (n, t) in enumerate(zip(out, types, strict=True)))
    return Leaf(plan, len(cols)), Scope((ScopeItem(qualifiers, cols),), cols)


def _alias_scope(scope: Scope, alias: exp.Expr) -> Scope:
    """`(a JOIN b ...) AS j (x, y)`: one item named j, hiding a and b."""
    label = ident(alias.this)
    names = _rename(
        [c.name for c in scope.visible],
        [ident(c) for c in alias.args.get("columns") or []],
        f'table "{label}"',
    )
    cols = tuple(ScopeColumn(n, c.index, c.type) for n, c in zip(names, scope.visible, strict=True))
    return Scope((ScopeItem(((label,),), cols),), cols)


def _named_relation(table: exp.Expr, env: Env) -> tuple[FromTree, Scope]:
    parts = tuple(
        ident(p)
        for p in (table.args.get("catalog"), table.args.get("db"), table.this)
        if p is not None
    )
    alias = table.args.get("alias")
    if len(parts) == 1:
        cte = env.cte(parts[0])
        if cte is not None:
            return _leaf(cte.plan, cte.columns, cte.types, (parts,), alias)
    rel = env.resolve(parts)
    if rel is None and env.resolve_view is not None:
        rel = env.resolve_view(parts)
    if rel is None:
        raise LoweringError(UNDEFINED_TABLE, f'relation "{".".join(parts)}" does not exist')
    qualifiers = tuple(parts[i:] for i in range(len(parts) - 1, -1, -1))
    if isinstance(rel, Relation):
        plan: Plan = Get(rel.id, len(rel.columns))
        return _leaf(plan, rel.columns, rel.types, qualifiers, alias)
    if isinstance(rel, View):
        if env.depth >= MAX_VIEW_DEPTH:
            raise LoweringError("54001", f'views nested too deeply at "{".".join(parts)}"')
        q = lower_query(rel.query, env.for_view(rel.resolve or env.resolve))
        env.views[rel.id] = None
        names = _rename(q.columns, rel.columns, f'view "{".".join(parts)}"')
        return _leaf(q.plan, names, q.types, qualifiers, alias)
    raise TypeError(f"resolver returned {rel!r}")


def _table_function(table: exp.Expr, env: Env) -> tuple[FromTree, Scope]:
    func = table.this
    if not isinstance(func, exp.GenerateSeries):
        raise unsupported(f"the table function {func_name(func)}()")
    low = ExprLowerer(env, Scope(), None, "FROM")
    args: list[Typed] = []
    for key in ("start", "end", "step"):
        node = func.args.get(key)
        if node is not None:
            args.append(low.lower(node))
    for a in args:
        if not isinstance(a.expr, Lit) or not (base(a.type) in INT_TYPES or a.expr.value is None):
            raise unsupported("generate_series() over anything but integer constants")
    values = [a.expr.value if isinstance(a.expr, Lit) else None for a in args]
    ints = [v for v in values if isinstance(v, int)]
    t = "int8" if any(base(a.type) == "int8" for a in args) else "int4"
    rows: tuple[tuple[tuple[int], int], ...] = ()
    if len(ints) == len(values):
        start, end = ints[0], ints[1]
        step = ints[2] if len(ints) > 2 else 1
        if step == 0:
            raise LoweringError("22023", "step size cannot equal zero")
        series = range(start, end + (1 if step > 0 else -1), step)
        if len(series) > MAX_SERIES:
            raise unsupported(f"generate_series() with more than {MAX_SERIES} rows")
        rows = tuple(((v,), 1) for v in series)
    alias = table.args.get("alias")
    name = "generate_series"
    if alias is not None and alias.this is not None and not alias.args.get("columns"):
        name = ident(alias.this)  # PostgreSQL names a scalar function's column after the alias
    return _leaf(Constant(rows, 1), [name], [t], (("generate_series",),), alias)


def _check_duplicates(left: Scope, right: Scope) -> None:
    for ri in right.items:
        for li in left.items:
            if ri.qualifiers and ri.qualifiers == li.qualifiers:
                raise LoweringError(
                    DUPLICATE_ALIAS, f'table name "{ri.label}" specified more than once'
                )


def _join(left_tree: FromTree, left: Scope, j: exp.Expr, env: Env) -> tuple[FromTree, Scope]:
    for key in ("global_", "hint", "match_condition", "nearest", "directed", "expressions",
                "pivots"):  # fmt: skip
        if j.args.get(key):
            raise unsupported(f"{key.upper()} in joins")
    kind_word = str(j.args.get("kind") or "").upper()
    side = str(j.args.get("side") or "").upper()
    method = str(j.args.get("method") or "").upper()
    if kind_word not in ("", "INNER", "OUTER", "CROSS"):
        raise unsupported(f"{kind_word} JOIN")
    if method not in ("", "NATURAL"):
        raise unsupported(f"{method} JOIN")
    kind: JoinKind = {"LEFT": "left", "RIGHT": "right", "FULL": "full"}.get(side, "inner")  # type: ignore[assignment]
    right_tree, right0 = _from_item(j.this, env)
    nl = left_tree.arity
    right = right0.shifted(nl)
    _check_duplicates(left, right)
    on = j.args.get("on")
    using = j.args.get("using")
    if kind_word == "CROSS" and (on is not None or using):
        raise LoweringError(SYNTAX_ERROR, "CROSS JOIN cannot have an ON or USING clause")
    arity = nl + right_tree.arity
    if method == "NATURAL" or using:
        if method == "NATURAL":
            names: list[str] = []
            for c in left.visible:
                if c.name not in names and any(r.name == c.name for r in right.visible):
                    names.append(c.name)
        else:
            names = [ident(u.this if isinstance(u, exp.Column) else u) for u in using or []]
        return _using_join(kind, left_tree, right_tree, left, right, names, arity)
    scope = Scope(left.items + right.items, left.visible + right.visible)
    conds: tuple[Expr, ...] = ()
    if on is not None:
        low = ExprLowerer(env, scope, None, "JOIN conditions")
        conds = tuple(conjuncts(low.predicate(on, "JOIN/ON")))
    elif kind != "inner":
        raise LoweringError(SYNTAX_ERROR, f"{side} JOIN requires an ON or USING clause")
    return JoinTree(kind, left_tree, right_tree, conds, arity), scope


def _using_join(
    kind: JoinKind,
    left_tree: FromTree,
    right_tree: FromTree,
    left: Scope,
    right: Scope,
    names: Sequence[str],
    arity: int,
) -> tuple[FromTree, Scope]:
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise LoweringError("42701", f'column name "{dup}" appears more than once in USING clause')
    eqs: list[Expr] = []
    merged: list[tuple[str, Expr, str]] = []
    for name in names:
        cols = []
        for side, scope in (("left", left), ("right", right)):
            found = [c for c in scope.visible if c.name == name]
            if not found:
                raise LoweringError(
                    UNDEFINED_COLUMN,
                    f'column "{name}" specified in USING clause does not exist in {side} table',
                )
            if len(found) > 1:
                raise LoweringError(
                    AMBIGUOUS_COLUMN,
                    f'common column name "{name}" appears more than once in {side} table',
                )
            cols.append(found[0])
        lc, rc = cols
        t = common_type([lc.type, rc.type], "JOIN/USING")
        le, re_ = coerce(Col(lc.index), lc.type, t), coerce(Col(rc.index), rc.type, t)
        eqs.append(Call("=", (le, re_)))
        m: Expr = (
            le if kind in ("inner", "left") else re_ if kind == "right"
            else Call("coalesce", (le, re_))
        )  # fmt: skip
        merged.append((name, m, t))
    tree: FromTree = JoinTree(kind, left_tree, right_tree, tuple(eqs), arity)
    extra = tuple(m for _n, m, _t in merged if not isinstance(m, Col))
    if extra:
        tree = MapTree(tree, extra, arity + len(extra))
    merged_cols: list[ScopeColumn] = []
    k = 0
    for name, m, t in merged:
        if isinstance(m, Col):
            merged_cols.append(ScopeColumn(name, m.index, t))
        else:
            merged_cols.append(ScopeColumn(name, arity + k, t))
            k += 1
    visible = (
        tuple(merged_cols)
        + tuple(c for c in left.visible if c.name not in names)
        + tuple(c for c in right.visible if c.name not in names)
    )
    return tree, Scope(left.items + right.items, visible)


# ---------------------------------------------------------------- building the join tree


def _filter(plan: Plan, preds: Sequence[Expr]) -> Plan:
    preds = [p for p in preds if p != Lit(True)]
    return Filter(plan, tuple(preds)) if preds else plan


def _shift(e: Expr, by: int, width: int) -> Expr:
    return substitute(e, [Col(i + by) if i + by >= 0 else Col(i) for i in range(width)])


def _build(tree: FromTree, preds: Sequence[Expr]) -> Plan:
    """The plan of a join tree with `preds` (conjuncts over its output) applied, pushing each
    conjunct as far down as the join kinds allow and turning equalities into join keys."""
    if isinstance(tree, Leaf):
        return _filter(tree.plan, preds)
    if isinstance(tree, MapTree):
        n = tree.input.arity
        down = [p for p in preds if all(c < n for c in columns(p))]
        up = [p for p in preds if not all(c < n for c in columns(p))]
        return _filter(Map(_build(tree.input, down), tree.exprs), up)
    nl, nr = tree.left.arity, tree.right.arity
    width = nl + nr

    def side(e: Expr) -> str:
        cs = columns(e)
        if not cs:
            return "none"
        if max(cs) < nl:
            return "left"
        if min(cs) >= nl:
            return "right"
        return "both"

    kind = tree.kind
    lp: list[Expr] = []
    rp: list[Expr] = []
    cond: list[Expr] = []
    above: list[Expr] = []
    for p in tree.on:  # ON: may filter the side whose unmatched rows are not preserved
        s = side(p)
        if s == "left" and kind in ("inner", "right"):
            lp.append(p)
        elif s == "right" and kind in ("inner", "left"):
            rp.append(_shift(p, -nl, width))
        else:
            cond.append(p)
    for p in preds:  # WHERE: may filter a preserved side; joins inner conditions
        s = side(p)
        if s == "left" and kind in ("inner", "left"):
            lp.append(p)
        elif s == "right" and kind in ("inner", "right"):
            rp.append(_shift(p, -nl, width))
        elif s == "both" and kind == "inner":
            cond.append(p)
        else:
            above.append(p)
    left_key: list[int] = []
    right_key: list[int] = []
    left_ext: list[Expr] = []
    right_ext: list[Expr] = []
    residual: list[Expr] = []
    for p in cond:
        pair: tuple[Expr, Expr] | None = None
        if isinstance(p, Call) and p.op == "=":
            a, b = p.args
            if side(a) == "left" and side(b) == "right":
                pair = (a, _shift(b, -nl, width))
            elif side(a) == "right" and side(b) == "left":
                pair = (b, _shift(a, -nl, width))
        if pair is None:
            residual.append(p)
            continue
        la, rb = pair
        if isinstance(la, Col):
            left_key.append(la.index)
        else:
            left_key.append(nl + len(left_ext))
            left_ext.append(la)
        if isinstance(rb, Col):
            right_key.append(rb.index)
        else:
            right_key.append(nr + len(right_ext))
            right_ext.append(rb)
    lplan, rplan = _build(tree.left, lp), _build(tree.right, rp)
    if left_ext:
        lplan = Map(lplan, tuple(left_ext))
    if right_ext:
        rplan = Map(rplan, tuple(right_ext))
    kl = len(left_ext)
    residual = [p for p in residual if p != Lit(True)]
    on: Expr | None = None
    if residual:
        by = [Col(i) if i < nl else Col(i + kl) for i in range(width)]
        shifted = [substitute(p, by) for p in residual]
        on = shifted[0] if len(shifted) == 1 else Call("and", tuple(shifted))
    plan: Plan = Join(lplan, rplan, tuple(left_key), tuple(right_key), kind, on)
    if left_ext or right_ext:
        plan = Project(plan, tuple(range(nl)) + tuple(range(nl + kl, nl + kl + nr)))
    return _filter(plan, above)


def project(plan: Plan, arity: int, exprs: Sequence[Expr]) -> Plan:
    """`plan`'s rows as `exprs` (a Map of the computed ones, then a Project)."""
    new: list[Expr] = []
    cols: list[int] = []
    for e in exprs:
        if isinstance(e, Col):
            cols.append(e.index)
        else:
            cols.append(arity + len(new))
            new.append(e)
    if not new and isinstance(plan, Project):  # a projection of a projection: compose
        return Project(plan.input, tuple(plan.columns[c] for c in cols))
    out = Map(plan, tuple(new)) if new else plan
    if cols == list(range(arity + len(new))):
        return out
    return Project(out, tuple(cols))


# ---------------------------------------------------------------- SELECT


@dataclass(frozen=True)
class _Item:
    name: str
    src: exp.Expr | ScopeColumn
    label: str  # the qualified name, for a `*` column


def _expand(nodes: Sequence[exp.Expr], scope: Scope, env: Env) -> list[_Item]:
    items: list[_Item] = []
    for e in nodes:
        if isinstance(e, exp.Star):
            if any(e.args.get(k) for k in ("except_", "replace", "rename", "ilike")):
                raise unsupported("SELECT * EXCLUDE/REPLACE")
            if not scope.items:
                raise LoweringError(SYNTAX_ERROR, "SELECT * with no tables specified is not valid")
            items.extend(_Item(c.name, c, _label(scope, c)) for c in scope.visible)
        elif isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
            qual = column_parts(e)[:-1]
            it = scope.item(qual)
            if it is None:
                if env.is_outer_reference((*qual, "*")):
                    raise unsupported("correlated subqueries")
                raise missing((*qual, "*"))
            items.extend(_Item(c.name, c, f"{it.label}.{c.name}") for c in it.columns)
        elif isinstance(e, exp.Alias):
            items.append(_Item(ident(e.args["alias"]), e.this, ""))
        else:
            items.append(_Item(figure_colname(e), e, ""))
    return items


def _label(scope: Scope, c: ScopeColumn) -> str:
    for it in scope.items:
        if c in it.columns and it.qualifiers:
            return f"{it.label}.{c.name}"
    return c.name


def _split_and(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _split_and(node.this) + _split_and(node.expression)
    return [node]


def _select(sel: exp.Expr, env: Env) -> Query:
    _check_args(sel, _SELECT_ARGS, "SELECT")
    distinct = sel.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise unsupported("SELECT DISTINCT ON")
    # FROM
    from_ = sel.args.get("from_")
    joins = sel.args.get("joins") or []
    tree: FromTree
    if from_ is None:
        tree, scope = Leaf(ONE_ROW, 0), Scope()
    else:
        tree, scope = _from_clause(from_.this, joins, env)
    # WHERE: conjuncts without subqueries go into the join tree, the others after it
    where = sel.args.get("where")
    plain: list[Expr] = []
    deferred: list[exp.Expr] = []
    if where is not None:
        low = ExprLowerer(env, scope, None, "WHERE")
        for c in _split_and(where.this):
            if has_subquery(c):
                deferred.append(c)
            else:
                plain.extend(conjuncts(low.predicate(c, "WHERE")))
    box = PlanBox(_build(tree, plain), tree.arity)
    low = ExprLowerer(env, scope, box, "WHERE")
    for c in deferred:
        operands = semi_join_operands(c)
        if operands is not None:
            low.semi_join(*operands)
        else:
            pred = low.predicate(c, "WHERE")  # may extend the box: before reading box.plan
            box.plan = _filter(box.plan, conjuncts(pred))
    # the SELECT list, aggregates, GROUP BY, HAVING
    items = _expand(sel.expressions, scope, env)
    group = sel.args.get("group")
    having = sel.args.get("having")
    order = sel.args.get("order")
    found: list[exp.Expr] = []
    for it in items:
        if isinstance(it.src, exp.Expr):
            find_aggregates(it.src, found)
    if having is not None:
        find_aggregates(having.this, found)
    for o in order.expressions if order is not None else []:
        find_aggregates(o.this, found)
    grouping: Grouping | None = None
    if group is not None or found or having is not None:
        keys = _group_keys(group, items, scope, ExprLowerer(env, scope, None, "GROUP BY"))
        grouping = Grouping(ExprLowerer(env, scope, None, "SELECT"), keys)
        for node in found:
            grouping.register(node)
        red = Reduce(box.plan, tuple(k.expr for k in keys), tuple(grouping.aggs))
        box = PlanBox(red, len(keys) + len(grouping.aggs))
        if having is not None:
            hl = ExprLowerer(env, scope, box, "HAVING", grouping)
            pred = hl.predicate(having.this, "HAVING")
            box.plan = _filter(box.plan, conjuncts(pred))
    out_low = ExprLowerer(env, scope, box, "SELECT", grouping)
    outs: list[Typed] = []
    for it in items:
        if isinstance(it.src, ScopeColumn):
            t = Typed(Col(it.src.index), it.src.type)
            if grouping is not None:
                k = grouping.key(t.expr)
                if k is None:
                    raise LoweringError(
                        GROUPING_ERROR,
                        f'column "{it.label}" must appear in the GROUP BY clause or be used in '
                        "an aggregate function",
                    )
                t = k
            outs.append(t)
        else:
            outs.append(out_low.lower(it.src))
    names = [it.name for it in items]
    # ORDER BY / LIMIT / OFFSET
    limit, offset = _limit_offset(sel)
    keys_: list[SortKey] = []
    hidden: list[Expr] = []
    if order is not None:
        saved = box.snapshot()
        order_low = ExprLowerer(env, scope, box, "ORDER BY", grouping)
        out_exprs = [t.expr for t in outs]
        for o in order.expressions:
            pos = _output_position(o.this, names, out_exprs)
            if pos is None:
                e = order_low.lower(o.this).expr
                if e in out_exprs:
                    pos = out_exprs.index(e)
                elif e in hidden:
                    pos = len(outs) + hidden.index(e)
                else:
                    if distinct is not None:
                        raise LoweringError(
                            INVALID_COLUMN_REFERENCE,
                            "for SELECT DISTINCT, ORDER BY expressions must appear in select list",
                        )
                    hidden.append(e)
                    pos = len(outs) + len(hidden) - 1
            keys_.append(_sort_key(o, pos))
        if limit is None and not offset:  # ORDER BY alone does not change a collection
            box.restore(saved)
            keys_, hidden = [], []
    plan = project(box.plan, box.arity, [t.expr for t in outs] + hidden)
    if distinct is not None:
        plan = Distinct(plan)
    if limit is not None or offset:
        plan = TopK(plan, (), tuple(keys_), limit, offset)
        if hidden:
            plan = Project(plan, tuple(range(len(outs))))
    return Query(plan, names, [t.type for t in outs])


def _group_keys(
    group: exp.Expr | None, items: Sequence[_Item], scope: Scope, low: ExprLowerer
) -> list[Typed]:
    if group is None:
        return []
    for key in ("grouping_sets", "cube", "rollup", "totals", "all"):
        if group.args.get(key):
            raise unsupported("GROUPING SETS/ROLLUP/CUBE")
    keys: list[Typed] = []
    for e in group.expressions:
        if isinstance(e, exp.Rollup | exp.Cube | exp.GroupingSets):
            raise unsupported("GROUPING SETS/ROLLUP/CUBE")
        src: exp.Expr | ScopeColumn = e
        if isinstance(e, exp.Literal) and not e.is_string:
            text = str(e.this)
            if not text.isdigit():
                raise unsupported("GROUP BY a non-integer constant")
            k = int(text)
            if not 1 <= k <= len(items):
                raise LoweringError(
                    INVALID_COLUMN_REFERENCE, f"GROUP BY position {k} is not in select list"
                )
            src = items[k - 1].src
        elif (
            isinstance(e, exp.Column)
            and not isinstance(e.this, exp.Star)
            and e.args.get("table") is None
            and scope.lookup((ident(e.this),)) is None
        ):
            # not an input column: an output column's name
            matches = [it for it in items if it.name == ident(e.this)]
            if len(matches) > 1:
                raise LoweringError(AMBIGUOUS_COLUMN, f'GROUP BY "{ident(e.this)}" is ambiguous')
            if matches:
                src = matches[0].src
        if isinstance(src, ScopeColumn):
            keys.append(Typed(Col(src.index), src.type))
            continue
        found: list[exp.Expr] = []
        find_aggregates(src, found)
        if found:
            raise LoweringError(GROUPING_ERROR, "aggregate functions are not allowed in GROUP BY")
        keys.append(low.lower(src))
    return keys


# ---------------------------------------------------------------- output column names


def figure_colname(e: exp.Expr) -> str:
    """The name PostgreSQL gives an unaliased SELECT-list expression (FigureColname)."""
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.Column):
        return ident(e.this)
    if isinstance(e, exp.Cast):
        inner = figure_colname(e.this)
        if inner != "?column?":
            return inner
        try:
            return result_name(datatype_name(e.args["to"]))
        except LoweringError:
            return "?column?"
    if isinstance(e, exp.Case):
        return "case"
    if isinstance(e, exp.Exists):
        return "exists"
    if isinstance(e, exp.Subquery):
        inner_q = e.this
        while isinstance(inner_q, exp.Subquery | exp.SetOperation):
            inner_q = inner_q.this
        if isinstance(inner_q, exp.Select) and inner_q.expressions:
            first = inner_q.expressions[0]
            if isinstance(first, exp.Alias):
                return ident(first.args["alias"])
            return figure_colname(first)
        return "?column?"
    if isinstance(e, exp.Filter):
        return figure_colname(e.this)
    if isinstance(e, exp.Trim):
        return "btrim"
    if isinstance(e, exp.Func):
        return func_name(e)
    if isinstance(e, exp.Boolean):
        return "bool"
    return "?column?"


# ---------------------------------------------------------------- plan inputs


def plan_inputs(plan: Plan) -> list[str]:
    """The names of the `Get`s in `plan`, in first-use (depth-first) order."""
    out: dict[str, None] = {}
    seen: set[int] = set()
    stack = [plan]
    while stack:
        p = stack.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        if isinstance(p, Get):
            out[p.name] = None
        stack.extend(reversed(children(p)))
    return list(out)


__all__ = ["figure_colname", "lower_query", "plan_inputs", "project"]
