"""twinstream.sql: parsing every statement twinstream accepts.

- `split_statements(sql)`: a query string's statements (quote-, comment- and dollar-aware).
- `parse_statement(sql)` / `parse_statements(sql)`: text -> `ast.Statement` dataclasses, with
  embedded queries and expressions as stock sqlglot expressions (postgres dialect).
- `infer_param_types(stmt, resolve_column_type)`: types for `$n` parameters (for Parse
  messages without parameter types), `find_params(stmt)`.
- `SqlError(sqlstate, message, position)`: 42601 syntax_error / 0A000 feature_not_supported.

Planning (name resolution, types, dataflows) lives elsewhere; this package only parses.
"""

from twinstream.sql import ast
from twinstream.sql.errors import FEATURE_NOT_SUPPORTED, SYNTAX_ERROR, SqlError
from twinstream.sql.params import ColumnTypeResolver, find_params, infer_param_types
from twinstream.sql.parser import parse_statement, parse_statements, parse_type_name
from twinstream.sql.split import split_statements, split_statements_with_offsets

__all__ = [
    "FEATURE_NOT_SUPPORTED",
    "SYNTAX_ERROR",
    "ColumnTypeResolver",
    "SqlError",
    "ast",
    "find_params",
    "infer_param_types",
    "parse_statement",
    "parse_statements",
    "parse_type_name",
    "split_statements",
    "split_statements_with_offsets",
]
