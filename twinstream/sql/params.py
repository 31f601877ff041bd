"""`$n` parameters of a statement and a best-effort guess of their types.

Clients such as asyncpg send Parse with no parameter types, so the server must choose them.
`infer_param_types` looks, in this order of precedence, at:

1. `PREPARE p (int, text) AS ...`: the declared types of the prepared statement's parameters;
2. casts: `$1::int`, `CAST($1 AS text)`;
3. write targets: `INSERT INTO t [(cols)] VALUES ($1, ...)` or `INSERT ... SELECT $1, ...`
   (the type of the column at that position) and `UPDATE t SET col = $1`;
4. context: comparisons and arithmetic with an expression of known type (`col = $1`,
   `$1 < 10`, `col IN ($1, $2)`, `col BETWEEN $1 AND $2`, `col = ANY($1)` -> array),
   pattern matching (`LIKE`) -> text, boolean operands (`WHERE $1`, `AND`, `NOT`) -> bool,
   `LIMIT`/`OFFSET` -> int8;
5. otherwise `text`.

Column types come from the caller's `resolve_column_type(table, column)`: `table` is the
relation's `QualifiedName` as written (already identifier-normalized), `column` a column
name, or an `int` 0-based position (for `INSERT INTO t VALUES` without a column list). It
returns a type name (any spelling `parse_type_name` accepts) or None when unknown.

Types are returned as canonical PostgreSQL names without modifiers, arrays suffixed `[]`:
`int4`, `int8`, `text`, `numeric`, `timestamptz`, `int4[]`, ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from sqlglot import exp

from twinstream.sql import ast
from twinstream.sql.errors import SqlError
from twinstream.sql.lexer import fold_identifier, is_ascii_digits
from twinstream.sql.parser import parse_type_name

ColumnTypeResolver = Callable[[ast.QualifiedName, str | int], str | None]

__all__ = ["ColumnTypeResolver", "find_params", "infer_param_types"]

_COMPARISONS = (
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.Coalesce,
)
_PATTERNS = (exp.Like, exp.ILike, exp.SimilarTo, exp.RegexpLike, exp.RegexpILike)
_BOOLEAN_CONTEXTS = (exp.And, exp.Or, exp.Not, exp.Where, exp.Having)


def param_number(node: exp.Expr) -> int | None:
    """n for a `$n` parameter node, else None."""
    if isinstance(node, exp.Parameter):
        inner = node.this
        if isinstance(inner, exp.Literal) and not inner.is_string and is_ascii_digits(inner.name):
            return int(inner.name)
    return None


def find_params(stmt: ast.Statement) -> list[int]:
    """The distinct parameter numbers used in `stmt`, ascending. For a `Prepare`, those of the
    prepared statement."""
    found: set[int] = set()
    for root in ast.iter_expressions(stmt):
        for node in root.walk():
            n = param_number(node)
            if n is not None:
                found.add(n)
    return sorted(found)


def infer_param_types(
    stmt: ast.Statement, resolve_column_type: ColumnTypeResolver | None = None
) -> dict[int, str]:
    """A type for every parameter 1..max used in `stmt` (see the module docstring)."""
    params = find_params(stmt)
    if not params:
        return {}
    inference = _Inference(resolve_column_type)
    for s in ast.iter_statements(stmt):
        if isinstance(s, ast.Prepare):
            for k, type_name in enumerate(s.param_types, start=1):
                inference.assign(k, type_name.base)
    for root in ast.iter_expressions(stmt):
        inference.casts(root)
    for s in ast.iter_statements(stmt):
        inference.write_targets(s)
    for s in ast.iter_statements(stmt):
        scope = _statement_scope(s)
        for root in _direct_expressions(s):
            inference.context(root, scope)
    return {n: inference.types.get(n, "text") for n in range(1, params[-1] + 1)}


def _direct_expressions(stmt: ast.Statement) -> Iterator[exp.Expr]:
    """The expressions of `stmt` itself, not of statements nested in it."""
    for f in dataclasses.fields(stmt):
        value = getattr(stmt, f.name)
        if not isinstance(value, ast.Statement):
            yield from ast.iter_expressions(value)


def _statement_scope(stmt: ast.Statement) -> list[tuple[str, ast.QualifiedName]]:
    """(alias, relation) pairs the statement shell puts in scope of its expressions."""
    if isinstance(stmt, ast.Update | ast.Delete):
        return [(stmt.alias or stmt.table.name, stmt.table)]
    if isinstance(stmt, ast.Insert):
        return [(stmt.table.name, stmt.table)]
    if isinstance(stmt, ast.ShowColumns):
        return [(stmt.table.name, stmt.table)]
    return []


def _ident(node: object) -> str | None:
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else fold_identifier(node.this)
    if isinstance(node, str):
        return fold_identifier(node)
    return None


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _normalized(type_name: str) -> str:
    try:
        return parse_type_name(type_name).base
    except SqlError:
        return type_name.strip().lower()


class _Inference:
    def __init__(self, resolver: ColumnTypeResolver | None) -> None:
        self.resolver = resolver
        self.types: dict[int, str] = {}

    def assign(self, n: int | None, type_name: str | None) -> None:
        if n is not None and type_name and n not in self.types:
            self.types[n] = type_name

    def resolve(self, table: ast.QualifiedName, column: str | int) -> str | None:
        if self.resolver is None:
            return None
        result = self.resolver(table, column)
        return _normalized(result) if result else None

    # 2. casts

    def casts(self, root: exp.Expr) -> None:
        for node in root.walk():
            if isinstance(node, exp.Cast):
                n = param_number(_unparen(node.this))
                to = node.args.get("to")
                if n is not None and isinstance(to, exp.Expr):
                    self.assign(n, _normalized(to.sql(dialect="postgres")))

    # 3. write targets

    def write_targets(self, stmt: ast.Statement) -> None:
        if isinstance(stmt, ast.Insert):
            rows: list[list[exp.Expr]] = []
            if isinstance(stmt.source, ast.ValuesRows):
                rows = [list(row) for row in stmt.source.rows]
            elif isinstance(stmt.source, ast.QuerySource):
                query = _unparen(stmt.source.query)
                if isinstance(query, exp.Select):
                    rows = [list(query.expressions)]
                elif isinstance(query, exp.Values):
                    rows = [
                        list(row.expressions)
                        for row in query.expressions
                        if isinstance(row, exp.Tuple)
                    ]
            for row in rows:
                for k, value in enumerate(row):
                    n = param_number(_unparen(value))
                    if n is None or n in self.types:
                        continue
                    if stmt.columns:
                        if k < len(stmt.columns):
                            self.assign(n, self.resolve(stmt.table, stmt.columns[k]))
                    else:
                        self.assign(n, self.resolve(stmt.table, k))
        elif isinstance(stmt, ast.Update):
            for assignment in stmt.assignments:
                n = param_number(_unparen(assignment.value))
                if n is not None and n not in self.types:
                    self.assign(n, self.resolve(stmt.table, assignment.column))

    # 4. context

    def context(self, root: exp.Expr, base_scope: list[tuple[str, ast.QualifiedName]]) -> None:
        for node in root.walk():
            n = param_number(node)
            if n is None or n in self.types:
                continue
            self.assign(n, self.from_parent(node, base_scope))

    def from_parent(
        self, param: exp.Expr, base_scope: list[tuple[str, ast.QualifiedName]]
    ) -> str | None:
        child: exp.Expr = param
        parent = child.parent
        while isinstance(parent, exp.Paren):
            child, parent = parent, parent.parent
        if parent is None:
            return None
        if isinstance(parent, exp.Limit | exp.Offset | exp.Fetch):
            return "int8"
        if isinstance(parent, _PATTERNS):
            return "text"
        if isinstance(parent, _BOOLEAN_CONTEXTS):
            return "bool"
        if isinstance(parent, exp.Any | exp.All) or (
            isinstance(parent, exp.Anonymous) and parent.name.upper() in ("ANY", "ALL", "SOME")
        ):
            comparison = parent.parent
            while isinstance(comparison, exp.Paren):
                comparison = comparison.parent
            if isinstance(comparison, exp.Binary) and comparison.expression is not None:
                element = self.type_of(comparison.this, base_scope)
                return f"{element}[]" if element and not element.endswith("]") else None
            return None
        if isinstance(parent, exp.In) and child is not parent.this:
            return self.type_of(parent.this, base_scope)
        if isinstance(parent, exp.Between):
            if child is parent.this:
                others = [parent.args.get("low"), parent.args.get("high")]
            else:
                others = [parent.this]
            for other in others:
                if isinstance(other, exp.Expr):
                    found = self.type_of(other, base_scope)
                    if found:
                        return found
            return None
        if isinstance(parent, exp.Coalesce):
            for other in [parent.this, *parent.expressions]:
                if isinstance(other, exp.Expr) and other is not child:
                    found = self.type_of(other, base_scope)
                    if found:
                        return found
            return None
        if isinstance(parent, _COMPARISONS) and isinstance(parent, exp.Binary):
            other = parent.expression if child is parent.this else parent.this
            if isinstance(other, exp.Expr):
                return self.type_of(other, base_scope)
        return None

    def type_of(
        self, node: exp.Expr, base_scope: list[tuple[str, ast.QualifiedName]]
    ) -> str | None:
        node = _unparen(node)
        if isinstance(node, exp.Cast):
            to = node.args.get("to")
            return _normalized(to.sql(dialect="postgres")) if isinstance(to, exp.Expr) else None
        if isinstance(node, exp.Column):
            return self.column_type(node, base_scope)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return None
            text = node.name
            if is_ascii_digits(text):
                return "int4" if int(text) <= 2**31 - 1 else "int8"
            return "numeric"
        if isinstance(node, exp.Boolean):
            return "bool"
        n = param_number(node)
        if n is not None:
            return self.types.get(n)
        if isinstance(node, exp.Neg):
            return self.type_of(node.this, base_scope)
        return None

    def column_type(
        self, column: exp.Column, base_scope: list[tuple[str, ast.QualifiedName]]
    ) -> str | None:
        if self.resolver is None or isinstance(column.this, exp.Star):
            return None
        name = _ident(column.args.get("this"))
        if name is None:
            return None
        qualifier = _ident(column.args.get("table"))
        for scope in [*_query_scopes(column), base_scope]:
            for alias, relation in scope:
                if qualifier is not None and alias != qualifier:
                    continue
                found = self.resolve(relation, name)
                if found:
                    return found
        return None


def _query_scopes(node: exp.Expr) -> Iterator[list[tuple[str, ast.QualifiedName]]]:
    """For each SELECT enclosing `node`, innermost first, its FROM/JOIN base tables."""
    ctes: set[str] = set()
    ancestor = node.parent
    selects: list[exp.Select] = []
    while ancestor is not None:
        if isinstance(ancestor, exp.Select):
            selects.append(ancestor)
        with_ = ancestor.args.get("with_") if isinstance(ancestor, exp.Expr) else None
        if isinstance(with_, exp.With):
            for cte in with_.expressions:
                alias = _ident(cte.args.get("alias").this) if cte.args.get("alias") else None
                if alias:
                    ctes.add(alias)
        ancestor = ancestor.parent
    for select in selects:
        scope: list[tuple[str, ast.QualifiedName]] = []
        sources: list[object] = []
        from_ = select.args.get("from_")
        if isinstance(from_, exp.From):
            sources.append(from_.this)
        for join in select.args.get("joins") or []:
            if isinstance(join, exp.Join):
                sources.append(join.this)
        for source in sources:
            if not isinstance(source, exp.Table):
                continue
            parts = [
                _ident(source.args.get(key))
                for key in ("catalog", "db", "this")
                if source.args.get(key) is not None
            ]
            names = [p for p in parts if p]
            if not names or (len(names) == 1 and names[0] in ctes):
                continue
            alias_node = source.args.get("alias")
            alias = _ident(alias_node.this) if isinstance(alias_node, exp.TableAlias) else None
            scope.append((alias or names[-1], ast.QualifiedName(tuple(names))))
        yield scope
