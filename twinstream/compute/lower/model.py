"""What lowering takes (`Relation`, `View`, resolvers) and gives (`Lowered`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlglot import exp

from twinstream.compute.dataflow.plan import Plan


@dataclass(frozen=True)
class Relation:
    """A persist-backed input (table, source, materialized view): read as `Get(id, arity)`.

    `types` are canonical PostgreSQL type names as the catalog stores them (`int4`,
    `numeric(10,2)`, `text`, ...).
    """

    id: str
    columns: tuple[str, ...]
    types: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.types):
            raise ValueError(
                f"relation {self.id}: {len(self.columns)} names, {len(self.types)} types"
            )

    @classmethod
    def from_columns(cls, id: str, columns: Iterable[Mapping[str, Any]]) -> Relation:
        """From catalog-style columns `[{"name": ..., "type": ...}, ...]`."""
        cols = list(columns)
        return cls(id, tuple(str(c["name"]) for c in cols), tuple(str(c["type"]) for c in cols))


@dataclass(frozen=True, eq=False)
class View:
    """A plain (non-materialized) view: its query is inlined where it is named.

    `columns` renames its output columns (`CREATE VIEW v (a, b) AS ...`); `resolve` resolves
    the names inside `query` (the view's own database and search path), defaulting to the
    resolver of the query that names the view.
    """

    id: str
    query: exp.Expr
    columns: tuple[str, ...] = ()
    resolve: Resolver | None = None


#: Looks up a (folded) relation name: `("t",)`, `("schema", "t")` or `("db", "schema", "t")`.
Resolver: TypeAlias = Callable[[tuple[str, ...]], "Relation | View | None"]
ViewResolver: TypeAlias = Callable[[tuple[str, ...]], "View | None"]


@dataclass(frozen=True)
class Lowered:
    """A lowered query: `plan` computes rows of `len(columns)` values.

    `inputs` are the ids of the relations the plan reads (its `Get` names) in first-use
    order; `views` the ids of the plain views inlined into it.
    """

    plan: Plan
    columns: tuple[str, ...]
    types: tuple[str, ...]
    inputs: tuple[str, ...]
    views: tuple[str, ...] = ()


@dataclass
class Query:
    """A lowered (sub)query, internal to lowering."""

    plan: Plan
    columns: list[str]
    types: list[str]
