"""Just enough lexing of SQL text to track session state: which statements of a simple Query
set a variable, prepare or deallocate a statement, declare or close a cursor, or are DDL.

Only the leading words are looked at (comments and whitespace skipped); everything else about
a statement is the backend's business. Statements are split with the server's own splitter so
that CommandComplete messages line up with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from twinstream.pgwire.sqlsplit import split_statements

__all__ = ["Stmt", "classify", "classify_query", "is_ddl_text"]

#: First words of statements the `ddl_policy="error"` option refuses during a cutover.
DDL_VERBS = frozenset({"create", "drop", "alter", "comment", "grant", "revoke"})


@dataclass(frozen=True, slots=True)
class Stmt:
    """What the balancer needs to know about one statement.

    kind: set | reset | discard_all | prepare | deallocate | declare | close_cursor | ddl |
    begin | commit | rollback | other. `name` is the variable, statement or cursor name (None
    for ALL); `hold` is DECLARE ... WITH HOLD; `sql` the statement text (replayed for SET and
    PREPARE)."""

    kind: str
    name: str | None = None
    sql: str = ""
    hold: bool = False


def _words(sql: str, limit: int = 8) -> list[str]:
    """The first `limit` words: identifiers (unquoted ones lower-cased, quoted ones exact),
    and single punctuation characters, with comments and whitespace skipped."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n and len(out) < limit:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == '"':
            j = i + 1
            parts = []
            while j < n:
                if sql[j] == '"':
                    if sql.startswith('""', j):
                        parts.append('"')
                        j += 2
                        continue
                    break
                parts.append(sql[j])
                j += 1
            out.append("".join(parts))
            i = j + 1
        elif c.isalnum() or c == "_" or ord(c) >= 0x80:
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "_$" or ord(sql[j]) >= 0x80):
                j += 1
            out.append(sql[i:j].lower())
            i = j
        else:
            out.append(c)
            i += 1
    return out


def _dotted(words: list[str], i: int) -> tuple[str | None, int]:
    """A possibly qualified name (a.b) starting at words[i]."""
    if i >= len(words) or not words[i] or not (words[i][0].isalnum() or words[i][0] == "_"):
        return None, i
    name = words[i]
    i += 1
    while i + 1 < len(words) and words[i] == ".":
        name += "." + words[i + 1]
        i += 2
    return name, i


def classify(sql: str) -> Stmt:
    """Classify one statement (already split)."""
    w = _words(sql)
    if not w:
        return Stmt("other", sql=sql)
    first = w[0]
    if first == "set":
        return _classify_set(w, sql)
    if first == "reset":
        rest = w[1:]
        if rest[:1] == ["all"]:
            return Stmt("reset", None, sql)
        if rest[:2] == ["time", "zone"]:
            return Stmt("reset", "timezone", sql)
        if rest[:2] in (["session", "authorization"],):
            return Stmt("reset", "session_authorization", sql)
        if rest[:3] == ["transaction", "isolation", "level"]:
            return Stmt("reset", "transaction_isolation", sql)
        name, _ = _dotted(w, 1)
        return Stmt("reset", name, sql) if name else Stmt("other", sql=sql)
    if first == "discard":
        if w[1:2] == ["all"]:
            return Stmt("discard_all", sql=sql)
        return Stmt("other", sql=sql)
    if first == "prepare" and len(w) > 1 and w[1] != "transaction":
        return Stmt("prepare", w[1], sql)
    if first == "deallocate":
        rest = w[1:]
        if rest[:1] == ["prepare"]:
            rest = rest[1:]
        if not rest or rest[0] == "all":
            return Stmt("deallocate", None, sql)
        return Stmt("deallocate", rest[0], sql)
    if first == "declare" and len(w) > 1:
        lowered = " ".join(sql.lower().split())
        return Stmt("declare", w[1], sql, hold=" with hold " in f" {lowered} ")
    if first == "close":
        if w[1:2] == ["all"] or len(w) < 2:
            return Stmt("close_cursor", None, sql)
        return Stmt("close_cursor", w[1], sql)
    if first in ("begin", "start"):
        return Stmt("begin", sql=sql)
    if first in ("commit", "end"):
        return Stmt("commit", sql=sql)
    if first in ("rollback", "abort"):
        return Stmt("rollback", sql=sql)
    if first in DDL_VERBS:
        return Stmt("ddl", sql=sql)
    return Stmt("other", sql=sql)


def _classify_set(w: list[str], sql: str) -> Stmt:
    i = 1
    if w[i : i + 1] == ["local"]:
        return Stmt("other", sql=sql)  # lasts until the end of the transaction only
    if w[i : i + 1] == ["session"]:
        if w[i + 1 : i + 2] == ["characteristics"]:
            return Stmt("set", "session_characteristics", sql)
        if w[i + 1 : i + 2] == ["authorization"]:
            return Stmt("set", "session_authorization", sql)
        if w[i + 1 : i + 2] not in (["="], ["to"]):
            i += 1
    rest = w[i:]
    if rest[:1] == ["transaction"]:
        return Stmt("other", sql=sql)  # this transaction only
    if rest[:2] == ["time", "zone"]:
        return Stmt("set", "timezone", sql)
    if rest[:1] == ["names"] and rest[1:2] not in (["="], ["to"]):
        return Stmt("set", "client_encoding", sql)
    if rest[:1] == ["schema"] and rest[1:2] not in (["="], ["to"]):
        return Stmt("set", "search_path", sql)
    if rest[:1] == ["role"] and rest[1:2] not in (["="], ["to"]):
        return Stmt("set", "role", sql)
    name, _ = _dotted(w, i)
    if name is None:
        return Stmt("other", sql=sql)
    return Stmt("set", name, sql)


def classify_query(sql: str) -> list[Stmt]:
    """The statements of a simple Query, in order (one CommandComplete each)."""
    return [classify(s) for s in split_statements(sql)]


def is_ddl_text(sql: str) -> bool:
    """Whether the (first) statement of `sql` is DDL."""
    w = _words(sql, 1)
    return bool(w) and w[0] in DDL_VERBS
