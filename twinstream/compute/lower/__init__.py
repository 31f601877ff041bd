"""SQL lowering: a query (a sqlglot expression, postgres dialect) -> a dataflow `Plan`.

    from twinstream.compute.lower import Relation, lower

    def resolve(parts: tuple[str, ...]) -> Relation | View | None:   # ("t",), ("s", "t"), ...
        ...  # catalog lookup (database, search path); None if nothing by that name
    lowered = lower(stmt.query, resolve)
    lowered.plan       # Plan reading Get(relation.id, arity) for each input
    lowered.columns    # output column names (PostgreSQL's, e.g. "count", "?column?")
    lowered.types      # canonical PostgreSQL types ("int8", "numeric", "text", ...)
    lowered.inputs     # ids of the relations the plan reads (feed them to Dataflow.step)
    lowered.views      # ids of the plain views inlined

Base relations (tables, sources, materialized views) are `Relation`s; plain views are `View`s
whose query is inlined (from `resolve`, or from the optional second resolver). Unsupported SQL
raises `Unsupported` (SQLSTATE 0A000, the message names the construct); invalid SQL raises
`LoweringError` with PostgreSQL's SQLSTATE (42703 undefined column, 42P01 undefined table,
42803 grouping error, 42804 datatype mismatch, 42883 undefined function/operator, ...).
Nothing is half-built: either a complete plan is returned or an error raised.

The supported grammar and the type rules are described in doc/design/compute.md ("Lowering").
"""

from __future__ import annotations

from sqlglot import exp

from twinstream.compute.dataflow.plan import arity
from twinstream.compute.lower.errors import LoweringError, Unsupported
from twinstream.compute.lower.model import Lowered, Relation, Resolver, View, ViewResolver
from twinstream.compute.lower.query import lower_query, plan_inputs
from twinstream.compute.lower.scope import Env


def lower(query: exp.Expr, resolve: Resolver, resolve_view: ViewResolver | None = None) -> Lowered:
    """Lower a query to a dataflow plan (see the module docstring).

    `resolve(parts)` returns the `Relation` (or `View`) a name denotes, `parts` being the
    name's identifiers, folded as PostgreSQL folds them. `resolve_view`, if given, is asked
    for names `resolve` does not know.
    """
    if not isinstance(query, exp.Query | exp.Values):
        raise Unsupported(f"lowering {type(query).__name__} statements is not supported")
    env = Env(resolve, resolve_view, lower_query)
    q = lower_query(query, env)
    n = arity(q.plan)
    if n != len(q.columns):  # pragma: no cover - a lowering bug
        raise AssertionError(f"plan has {n} columns, query {len(q.columns)}")
    return Lowered(
        plan=q.plan,
        columns=tuple(q.columns),
        types=tuple(q.types),
        inputs=tuple(plan_inputs(q.plan)),
        views=tuple(env.views),
    )


__all__ = [
    "Lowered",
    "LoweringError",
    "Relation",
    "Resolver",
    "Unsupported",
    "View",
    "ViewResolver",
    "lower",
]
