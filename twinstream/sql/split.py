"""Splitting a query string into statements at top-level semicolons.

A semicolon inside a string (`'...'`, `E'...'` with backslash escapes, `$$...$$`,
`$tag$...$tag$`), a quoted identifier or a comment (`-- ...`, nested `/* ... */`) does not end
a statement. Statements holding only whitespace and comments are dropped. Unterminated quotes
or comments run to the end of the input (the parser reports them when it parses that
statement).

Splitting is stable: `split_statements("\\n;\\n".join(split_statements(s)))` equals
`split_statements(s)` for every string `s`. (Joining with a bare ";" is not: a statement may
end in a `--` comment.)
"""

from __future__ import annotations

from twinstream.sql.lexer import WHITESPACE, TokenKind, tokenize


def split_statements_with_offsets(sql: str) -> list[tuple[int, str]]:
    """The statements of `sql` with the offset of each statement's first character in `sql`.

    Each statement is stripped of surrounding whitespace and has no terminating semicolon.
    """
    out: list[tuple[int, str]] = []
    segment_start = 0
    has_tokens = False
    for token in tokenize(sql, strict=False):
        if token.kind is TokenKind.EOF or (token.kind is TokenKind.OP and token.value == ";"):
            if has_tokens:
                out.append(_stripped(sql, segment_start, token.start))
            segment_start = token.end
            has_tokens = False
        else:
            has_tokens = True
    return out


def split_statements(sql: str) -> list[str]:
    """The non-empty statements of `sql`, stripped, without their terminating semicolons."""
    return [text for _, text in split_statements_with_offsets(sql)]


def _stripped(sql: str, start: int, end: int) -> tuple[int, str]:
    while start < end and sql[start] in WHITESPACE:
        start += 1
    while end > start and sql[end - 1] in WHITESPACE:
        end -= 1
    return start, sql[start:end]
