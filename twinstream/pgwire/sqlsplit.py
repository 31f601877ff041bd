"""Splitting a simple-Query string into statements, the way PostgreSQL's lexer sees them.

A `;` ends a statement unless it is inside a string ('...', E'...' with backslash escapes),
a quoted identifier ("..."), a dollar-quoted string ($$...$$, $tag$...$tag$), a comment
(-- to end of line, nested /* ... */) or parentheses. Statements that are only whitespace
and comments are dropped (an all-empty Query gets EmptyQueryResponse). This is lexical only:
it never needs to understand the SQL, so the server can do it for every backend.
"""

from __future__ import annotations

import re

__all__ = ["split_statements"]

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


def _ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" or ord(c) >= 0x80


def split_statements(sql: str) -> list[str]:
    """The statements of `sql`, each stripped of surrounding whitespace, without the `;`."""
    out: list[str] = []
    n = len(sql)
    start = 0
    i = 0
    depth = 0
    has_code = False
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            level = 1
            i += 2
            while i < n and level:
                if sql.startswith("/*", i):
                    level += 1
                    i += 2
                elif sql.startswith("*/", i):
                    level -= 1
                    i += 2
                else:
                    i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if c == ";" and depth == 0:
            if has_code:
                out.append(sql[start:i].strip())
            start = i + 1
            has_code = False
            i += 1
            continue
        has_code = True
        if c == "'":
            backslash = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _ident_char(sql[i - 2]))
            i += 1
            while i < n:
                ch = sql[i]
                if backslash and ch == "\\":
                    i += 2
                elif ch == "'":
                    if sql.startswith("''", i):
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
            continue
        if c == '"':
            i += 1
            while i < n:
                if sql[i] == '"':
                    if sql.startswith('""', i):
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
            continue
        if c == "$" and (i == 0 or not _ident_char(sql[i - 1])):
            match = _DOLLAR_TAG.match(sql, i)
            if match is not None:
                tag = match.group()
                end = sql.find(tag, match.end())
                i = n if end < 0 else end + len(tag)
                continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        i += 1
    if has_code:
        out.append(sql[start:].strip())
    return out
