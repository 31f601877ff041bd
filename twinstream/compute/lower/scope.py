"""Name resolution (FROM-clause scopes), the lowering environment and the growing plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sqlglot import exp

from twinstream.compute.dataflow.expr import Col, Expr
from twinstream.compute.dataflow.plan import Join, JoinKind, Map, Plan
from twinstream.compute.lower.errors import (
    AMBIGUOUS_COLUMN,
    UNDEFINED_COLUMN,
    UNDEFINED_TABLE,
    LoweringError,
)
from twinstream.compute.lower.model import Query, Resolver, ViewResolver
from twinstream.sql.lexer import fold_identifier


def ident(i: exp.Expr | str | None) -> str:
    """An identifier's name: unquoted ones folded to lower case, as PostgreSQL does."""
    if i is None:
        return ""
    if isinstance(i, str):
        return fold_identifier(i)
    if isinstance(i, exp.Identifier):
        return str(i.this) if i.quoted else fold_identifier(str(i.this))
    return fold_identifier(i.name)


def column_parts(c: exp.Column) -> tuple[str, ...]:
    """`a`, `t.a`, `s.t.a`, `d.s.t.a` as a tuple of folded names (the column last)."""
    parts = [c.args.get("catalog"), c.args.get("db"), c.args.get("table")]
    out = tuple(ident(p) for p in parts if p is not None)
    return (*out, ident(c.this))


@dataclass(frozen=True)
class ScopeColumn:
    name: str
    index: int  # the column of the FROM clause's plan
    type: str


@dataclass(frozen=True)
class ScopeItem:
    """A FROM-clause entry: a table, view, CTE or subquery, named by its qualifiers."""

    qualifiers: tuple[tuple[str, ...], ...]  # alias -> (("x",),); table t -> (("t",), ("s","t"))
    columns: tuple[ScopeColumn, ...]
    aliased: bool = True

    @property
    def label(self) -> str:
        return ".".join(self.qualifiers[0]) if self.qualifiers else ""


@dataclass(frozen=True)
class Scope:
    """The columns a FROM clause makes visible.

    `visible` answers unqualified names and `*` (USING/NATURAL joins merge their common
    columns there); `items` answer qualified names (`t.a`) and `t.*`.
    """

    items: tuple[ScopeItem, ...] = ()
    visible: tuple[ScopeColumn, ...] = ()

    def shifted(self, by: int) -> Scope:
        def sh(c: ScopeColumn) -> ScopeColumn:
            return replace(c, index=c.index + by)

        return Scope(
            tuple(replace(i, columns=tuple(sh(c) for c in i.columns)) for i in self.items),
            tuple(sh(c) for c in self.visible),
        )

    def item(self, qual: tuple[str, ...]) -> ScopeItem | None:
        found = [i for i in self.items if qual in i.qualifiers]
        if len(found) > 1:
            raise LoweringError(
                AMBIGUOUS_COLUMN, f'table reference "{".".join(qual)}" is ambiguous'
            )
        return found[0] if found else None

    def lookup(self, parts: tuple[str, ...]) -> ScopeColumn | None:
        """The column `parts` names; None if this scope has no such name (or qualifier)."""
        name = parts[-1]
        if len(parts) == 1:
            found = [c for c in self.visible if c.name == name]
            if len(found) > 1:
                raise LoweringError(AMBIGUOUS_COLUMN, f'column reference "{name}" is ambiguous')
            return found[0] if found else None
        it = self.item(parts[:-1])
        if it is None:
            return None
        cols = [c for c in it.columns if c.name == name]
        if len(cols) > 1:
            raise LoweringError(
                AMBIGUOUS_COLUMN, f'column reference "{".".join(parts)}" is ambiguous'
            )
        if not cols:
            raise LoweringError(UNDEFINED_COLUMN, f"column {'.'.join(parts)} does not exist")
        return cols[0]

    def has_qualifier(self, qual: tuple[str, ...]) -> bool:
        return any(qual in i.qualifiers for i in self.items)


def missing(parts: tuple[str, ...]) -> LoweringError:
    if len(parts) > 1:
        return LoweringError(
            UNDEFINED_TABLE, f'missing FROM-clause entry for table "{".".join(parts[:-1])}"'
        )
    return LoweringError(UNDEFINED_COLUMN, f'column "{parts[0]}" does not exist')


LowerQuery = Callable[[exp.Expr, "Env", bool], Query]


@dataclass
class Env:
    """What a (sub)query is lowered in: resolvers, visible CTEs, enclosing scopes."""

    resolve: Resolver
    resolve_view: ViewResolver | None
    lower_query: LowerQuery
    ctes: tuple[dict[str, Query], ...] = ()
    #: scopes of enclosing queries (only to report correlated references as unsupported)
    outer: tuple[Scope, ...] = ()
    views: dict[str, None] = field(default_factory=dict)
    depth: int = 0

    def cte(self, name: str) -> Query | None:
        for level in self.ctes:
            q = level.get(name)
            if q is not None:
                return q
        return None

    def with_ctes(self, level: dict[str, Query]) -> Env:
        return replace(self, ctes=(level, *self.ctes))

    def enclosed_by(self, scope: Scope | None) -> Env:
        """The environment of a subquery inside an expression over `scope`."""
        return replace(self, outer=(scope, *self.outer) if scope is not None else self.outer)

    def for_view(self, resolve: Resolver) -> Env:
        return replace(self, resolve=resolve, ctes=(), outer=(), depth=self.depth + 1)

    def is_outer_reference(self, parts: tuple[str, ...]) -> bool:
        for s in self.outer:
            try:
                if s.lookup(parts) is not None:
                    return True
            except LoweringError as e:
                if e.sqlstate != UNDEFINED_COLUMN:  # ambiguous there: still an outer reference
                    return True
                raise
        return False


class PlanBox:
    """A plan that grows by appending columns (subquery results, join keys).

    Appending never moves existing columns, so expressions already lowered stay valid.
    """

    def __init__(self, plan: Plan, arity: int) -> None:
        self.plan = plan
        self.arity = arity

    def append(self, e: Expr) -> int:
        """A column holding `e` (`e` itself when it is a column)."""
        if isinstance(e, Col):
            return e.index
        self.plan = Map(self.plan, (e,))
        self.arity += 1
        return self.arity - 1

    def join(
        self,
        right: Plan,
        width: int,
        left_key: tuple[int, ...] = (),
        right_key: tuple[int, ...] = (),
        kind: JoinKind = "inner",
    ) -> int:
        """Join `right` (of `width` columns) on; returns the index of its first column."""
        first = self.arity
        self.plan = Join(self.plan, right, left_key, right_key, kind)
        self.arity += width
        return first

    def snapshot(self) -> tuple[Plan, int]:
        return self.plan, self.arity

    def restore(self, state: tuple[Plan, int]) -> None:
        self.plan, self.arity = state
